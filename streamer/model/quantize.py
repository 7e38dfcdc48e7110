"""fp32 ONNX → ``<stem>.int8.onnx``: calibrate, quantize, and refuse a model that lost accuracy.

ONNX Runtime's static quantization in QDQ format (explicit quantization): int8 weights per output channel and
int8 activations, both symmetric, MinMax ranges over the calibration samples — the form TensorRT and
TensorRT-RTX build INT8 plans from (:mod:`streamer.model.qdq` says which tensors carry Q/DQ and why). Kept in
float: the uint8→float prologue (Cast, Transpose, BGR→RGB, normalise: the first conv's input is quantized
after it), biases (TensorRT takes no int32 bias), the classifier head and the softmax (the published scores).

The accuracy gate: top-1 of the fp32 model and of the int8 model (as ONNX Runtime runs it on a CPU) on a
labelled held-out set; more than ``max_drop`` points lost raises :class:`AccuracyGateError` and nothing is
written. Both figures go into the int8 model's manifest (its metadata and ``<stem>.int8.json``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamer.errors import ModelError
from streamer.files import write_atomic
from streamer.model.calibration import Samples, load_samples
from streamer.model.manifest import METADATA_KEY, ModelManifest, manifest_path_for, sha256_file
from streamer.model.qdq import INT8_KERNELS, is_qdq, onnxruntime_form, onnxruntime_kernels
from streamer.model.variants import precision_from_name, variant_path

log = logging.getLogger(__name__)

CALIB_SAMPLES = 512
MAX_DROP_POINTS = 1.0
SCHEME = "QDQ int8, symmetric, per-channel weights, MinMax calibration (ONNX Runtime static quantization)"
_BATCH = 64
_WEIGHTED = ("Conv", "Gemm", "MatMul")


class AccuracyGateError(ModelError):
    """The int8 model lost more top-1 accuracy than allowed; nothing was written."""


@dataclass(frozen=True)
class GateResult:
    """Top-1 of the fp32 and the int8 model on the same held-out images."""

    eval_source: str
    samples: int
    fp32_top1: float
    int8_top1: float
    agreement: float  # fraction of images where both models pick the same class
    max_drop_points: float

    def __post_init__(self) -> None:
        for name in ("fp32_top1", "int8_top1", "agreement"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} {getattr(self, name)} is not a fraction")
        if self.samples < 1 or self.max_drop_points < 0:
            raise ValueError(f"bad gate: {self.samples} samples, max drop {self.max_drop_points}")

    @property
    def drop_points(self) -> float:
        return round(100.0 * (self.fp32_top1 - self.int8_top1), 4)

    @property
    def passed(self) -> bool:
        return self.drop_points <= self.max_drop_points

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drop_points": self.drop_points, "passed": self.passed}


@dataclass(frozen=True)
class QuantizeResult:
    onnx: Path
    manifest_json: Path
    source_onnx: Path
    calibration: str
    calibration_samples: int
    gate: GateResult
    kernels: dict[str, int]  # ONNX Runtime's int8 CPU kernels in the optimised graph, by op
    seconds: float

    @property
    def onnx_bytes(self) -> int:
        return self.onnx.stat().st_size


def fp32_source(path: str | Path) -> tuple[Path, ModelManifest]:
    """The fp32 ONNX to quantize: ``path``, or its fp32 sibling when given the fp16/int8 one."""
    path = Path(path)
    source = variant_path(path, "fp32") if precision_from_name(path) != "fp32" else path
    if not source.is_file():
        raise ModelError(f"{source}: the fp32 model to quantize is not there",
                         "export it with tools/export_onnx.py and pass that .onnx")
    manifest = ModelManifest.from_onnx(source)
    if manifest.precision != "fp32":
        raise ModelError(f"{source}: is a {manifest.precision} model; int8 is calibrated from the fp32 one",
                         "pass the fp32 .onnx written by tools/export_onnx.py")
    return source, manifest


def default_eval(manifest: ModelManifest) -> str:
    if manifest.dataset == "shapes":
        return "shapes:val"
    raise ModelError(f"{manifest.name}: no held-out set known for dataset {manifest.dataset or '?'!r}",
                     "pass --eval with a labelled folder (one subfolder per class) or a video with truth")


def _excluded_nodes(model: Any) -> list[str]:
    """Nodes kept in float: the prologue before the first conv, the softmax and the layer that feeds it."""
    nodes = list(model.graph.node)
    first = next((i for i, n in enumerate(nodes) if n.op_type in _WEIGHTED), None)
    if first is None:
        raise ModelError(f"{model.graph.name or 'model'}: no Conv, Gemm or MatMul to quantize",
                         "int8 pays off for conv/linear nets only")
    keep = [n.name for n in nodes[:first]]
    producers = {out: n for n in nodes for out in n.output}
    for n in nodes:
        if n.op_type == "Softmax":
            keep.append(n.name)
            head = producers.get(n.input[0])
            if head is not None and head.op_type in _WEIGHTED:
                keep.append(head.name)
    return keep


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """The quantizer logs 'consider pre-processing' on the root logger: not for us (the graph is folded)."""

    class Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "pre-process" not in record.getMessage()

    root = logging.getLogger()
    drop = Drop()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _calibration_reader(samples: Samples, input_name: str) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(range(0, len(samples), _BATCH))

        def get_next(self) -> dict[str, np.ndarray] | None:
            start = next(self._batches, None)
            return None if start is None else {input_name: samples.images[start:start + _BATCH]}

    return Reader()


def quantize_qdq(source: Path, out: Path, samples: Samples, input_name: str) -> None:
    """Write the QDQ int8 model of ``source`` to ``out``, calibrated on ``samples`` (no gate here)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = onnx.load(str(source))
    for i, node in enumerate(model.graph.node):  # nodes are excluded by name
        node.name = node.name or f"{node.op_type}_{i}"
    with _quiet_quantizer():
        quantize_static(
            model, out, _calibration_reader(samples, input_name), quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=_excluded_nodes(model),
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                           # Q/DQ on conv inputs only (after the ReLU), as TensorRT expects them
                           "OpTypesToExcludeOutputQuantization": list(_WEIGHTED)})


def cpu_session(model: Any, threads: int = 0) -> Any:
    """An ONNX Runtime CPU session of ``model`` (a path; a ModelProto, put in :func:`onnxruntime_form` when it
    is int8; or the bytes of a model already in that form), as the onnxruntime backend opens it."""
    import onnx
    import onnxruntime as ort

    if not isinstance(model, (str, Path, bytes)):
        model = onnx.ModelProto.FromString(model.SerializeToString())
        if is_qdq(model):
            onnxruntime_form(model)
        model = model.SerializeToString()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                providers=["CPUExecutionProvider"])


def predict(session: Any, images: np.ndarray, input_name: str = "images") -> np.ndarray:
    """Top-1 class of every image, in batches."""
    out = [np.asarray(session.run(None, {input_name: images[i:i + 256]})[0]).argmax(1)
           for i in range(0, len(images), 256)]
    return np.concatenate(out)


def run_gate(fp32: Any, int8: Any, samples: Samples, max_drop: float,
             input_name: str = "images") -> GateResult:
    """Top-1 of both models on ``samples`` (labelled)."""
    if samples.labels is None:
        raise ModelError(f"evaluation source {samples.source} has no labels",
                         "give --eval a labelled folder (one subfolder per class), shapes or demo")
    p32 = predict(cpu_session(fp32), samples.images, input_name)
    p8 = predict(cpu_session(int8), samples.images, input_name)
    return GateResult(samples.source, len(samples), float((p32 == samples.labels).mean()),
                      float((p8 == samples.labels).mean()), float((p32 == p8).mean()), max_drop)


def _check_target(out: Path) -> None:
    """Replace only an int8 model this tool wrote; never someone else's file."""
    if not out.exists():
        return
    try:
        ours = ModelManifest.from_onnx(out).precision == "int8"
    except ModelError:
        ours = False
    if not ours:
        raise ModelError(f"{out} exists and is not an int8 model written by tools/quantize.py; "
                         "not replacing it",
                         "move it away, or write elsewhere with --out")


def quantize_model(onnx_path: str | Path, calib: str, *, eval_source: str | None = None,
                   calib_samples: int = CALIB_SAMPLES, eval_samples: int | None = None,
                   max_drop: float = MAX_DROP_POINTS, out: str | Path | None = None) -> QuantizeResult:
    """Calibrate on ``calib``, quantize, gate on ``eval_source``; write ``<stem>.int8.onnx`` + ``.json``.

    Raises :class:`AccuracyGateError` (nothing written) when int8 loses more than ``max_drop`` points.
    """
    import onnx
    import onnxruntime

    t0 = time.monotonic()
    if calib_samples < 1 or (eval_samples is not None and eval_samples < 1):
        raise ModelError(f"--calib-samples {calib_samples} / --eval-samples {eval_samples}: need at least "
                         "one sample each", f"use e.g. --calib-samples {CALIB_SAMPLES}")
    if not max_drop >= 0:
        raise ModelError(f"--max-drop {max_drop}: top-1 points lost must be >= 0", "use e.g. 1.0")
    source, manifest = fp32_source(onnx_path)
    target = Path(out) if out else variant_path(source, "int8")
    if not target.name.endswith(".int8.onnx"):
        raise ModelError(f"--out {target}: an int8 model is named <stem>.int8.onnx",
                         "--precision int8 looks for it beside <stem>.onnx (manifest: <stem>.int8.json)")
    _check_target(target)
    evaluation = eval_source or default_eval(manifest)
    calibration = load_samples(calib, manifest.input_hw, manifest.labels, limit=calib_samples,
                               default_split="train", purpose="calibration")
    held_out = load_samples(evaluation, manifest.input_hw, manifest.labels, limit=eval_samples,
                            default_split="val", purpose="evaluation")
    scratch = target.with_name(f".{target.stem}.{os.getpid()}.quantized.tmp")  # the quantizer's output
    json_path = manifest_path_for(target)
    try:
        quantize_qdq(source, scratch, calibration, manifest.input_name)
        model = onnx.load(str(scratch))
        cpu = onnx.ModelProto.FromString(model.SerializeToString())  # as ONNX Runtime's backend runs it
        onnxruntime_form(cpu)
        cpu_bytes = cpu.SerializeToString()  # once: the gate's session and the kernel count
        gate = run_gate(source, cpu_bytes, held_out, max_drop, manifest.input_name)
        if not gate.passed:
            raise AccuracyGateError(
                f"{target.name} not written: int8 top-1 {gate.int8_top1:.2%} vs fp32 {gate.fp32_top1:.2%} "
                f"on {gate.samples} images of {gate.eval_source} ({gate.drop_points:.2f} points lost > "
                f"--max-drop {max_drop:g}; calibrated on {calibration.source})",
                "calibrate on images like the ones the model will see (--calib), "
                "or allow more with --max-drop")
        kernels = {op: n for op, n in sorted(onnxruntime_kernels(cpu_bytes).items()) if op in INT8_KERNELS}
        if not kernels:
            log.warning("%s: ONNX Runtime fuses no int8 kernel for this graph; it will not run faster",
                        target.name)
        extra = {**manifest.extra, "int8": {
            "scheme": SCHEME, "quantizer": f"onnxruntime {onnxruntime.__version__}",
            "source_onnx": source.name, "source_sha256": sha256_file(source),
            "calibration": {"source": calibration.source, "samples": len(calibration)},
            "gate": gate.to_dict(), "onnxruntime_kernels": kernels}}
        manifest8 = ModelManifest.from_dict({**asdict(manifest), "precision": "int8", "extra": extra})
        _set_manifest(model, manifest8)
        onnx.checker.check_model(model)
        write_atomic(target, model.SerializeToString())
        write_atomic(json_path, (manifest8.to_json() + "\n").encode())
    finally:
        scratch.unlink(missing_ok=True)
    return QuantizeResult(target, json_path, source, calibration.source, len(calibration), gate, kernels,
                          round(time.monotonic() - t0, 2))


def _set_manifest(model: Any, manifest: ModelManifest) -> None:
    props = {p.key: p.value for p in model.metadata_props if p.key != "onnx.infer"}
    props[METADATA_KEY] = manifest.to_json()
    del model.metadata_props[:]
    for key, value in props.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    model.producer_name = "streamer.model.quantize"
    model.doc_string = f"{manifest.name}: uint8 NHWC BGR 'images' -> softmax 'scores' (int8 QDQ)"

