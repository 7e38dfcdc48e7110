"""ONNX Runtime on the CPU: the backend every machine has (and what CI runs).

``precision`` picks the model's fp32 / fp16 / int8 sibling (:mod:`streamer.model.variants`). An int8 (QDQ)
model is opened in :func:`streamer.model.qdq.onnxruntime_form`, in which every conv runs as an int8
QLinearConv kernel.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from streamer.backends.base import CpuBackend
from streamer.errors import ModelError
from streamer.host import usable_cores
from streamer.model.manifest import ModelManifest
from streamer.model.variants import precision_from_name, quantize_command, sibling_hint, variant_path

log = logging.getLogger(__name__)

NAME = "onnxruntime"


def probe(name: str = NAME) -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return "onnxruntime is not installed (pip install onnxruntime)"
    if "CPUExecutionProvider" not in onnxruntime.get_available_providers():
        return "this onnxruntime build has no CPUExecutionProvider"
    return None


def default_layout(cores: int | None = None) -> tuple[int, int]:
    """(workers, intra-op threads per run) for ``--threads 0``: two runs side by side sharing the cores.

    The pipeline's engine is the CPU's bottleneck (the seed CNN costs ~3 ms of CPU per image, decoding a
    768×576 frame ~0.5 ms), so ONNX Runtime gets every core and the decoder and batcher squeeze in between:
    measured on 2 cores end to end, this gives 1.8× the frames/s of one run on ``cores - 1`` threads.
    """
    cores = cores or usable_cores()
    workers = 2 if cores >= 2 else 1
    return workers, max(1, cores // workers)


class OrtBackend(CpuBackend):
    name = NAME

    def __init__(self, manifest: ModelManifest, max_batch: int, session: Any, path: Path,
                 threads: int, workers: int = 1) -> None:
        super().__init__(manifest, max_batch)
        self.session = session
        self.path = path
        self.threads = threads
        self.workers = workers  # batches the executor should run at once (the session is thread-safe)
        self.precision = manifest.precision
        self._input = manifest.input_name
        self._outputs = [manifest.output_name]

    @property
    def engine_id(self) -> str:
        """``<model id>/onnxruntime`` for the fp32 model, ``.../onnxruntime-int8`` for another precision."""
        suffix = "" if self.precision == "fp32" else f"-{self.precision}"
        return f"{self.manifest.model_id}/{self.name}{suffix}"

    def infer(self, images: np.ndarray, out: np.ndarray) -> None:
        (scores,) = self.session.run(self._outputs, {self._input: images})
        out[...] = scores

    def close(self) -> None:
        self.session = None


def _dims(shape: list[Any]) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) else "N" if i == 0 else "?"
                           for i, d in enumerate(shape)) + "]"


def validate(session: Any, manifest: ModelManifest, max_batch: int, path: Path) -> None:
    """The model must take ``images`` uint8 [N,H,W,3] and give ``scores`` float [N, len(labels)]."""
    h, w = manifest.input_hw
    hint = "export it with tools/export_onnx.py (input uint8 [N,H,W,3] BGR, output float32 [N,classes])"
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != manifest.input_name:
        names = ", ".join(i.name for i in inputs)
        raise ModelError(f"{path.name}: model inputs are ({names}), expected one named "
                         f"{manifest.input_name!r}", hint)
    inp = inputs[0]
    shape = list(inp.shape)
    if inp.type != "tensor(uint8)":
        raise ModelError(f"{path.name}: input {inp.name!r} is {inp.type}, expected tensor(uint8)", hint)
    expected = [None, h, w, 3]
    if len(shape) != 4 or any(isinstance(d, int) and e is not None and d != e
                              for d, e in zip(shape, expected, strict=False)):
        raise ModelError(f"{path.name}: input {inp.name!r} has shape {_dims(shape)}, "
                         f"expected [N, {h}, {w}, 3]", hint)
    if isinstance(shape[0], int) and not (shape[0] == max_batch == 1):
        raise ModelError(f"{path.name}: input batch size is fixed at {shape[0]}",
                         "re-export it with a dynamic batch axis (tools/export_onnx.py)")
    outputs = {o.name: o for o in session.get_outputs()}
    out = outputs.get(manifest.output_name)
    if out is None:
        raise ModelError(f"{path.name}: no output named {manifest.output_name!r} "
                         f"(it has {', '.join(outputs) or 'none'})", hint)
    if out.type not in ("tensor(float)", "tensor(float16)"):
        raise ModelError(f"{path.name}: output {out.name!r} is {out.type}, expected tensor(float)", hint)
    oshape = list(out.shape)
    classes = manifest.num_classes
    if len(oshape) != 2 or (isinstance(oshape[1], int) and oshape[1] != classes):
        raise ModelError(f"{path.name}: output {out.name!r} has shape {_dims(oshape)} but the manifest lists "
                         f"{classes} labels", hint)


def _test_run(backend: OrtBackend, path: Path) -> None:
    """Run a batch of 1 and of max_batch: catches shapes only known at run time and broken graphs."""
    h, w = backend.manifest.input_hw
    classes = backend.manifest.num_classes
    for n in sorted({1, backend.max_batch}):
        images = np.zeros((n, h, w, 3), np.uint8)
        try:
            (scores,) = backend.session.run(backend._outputs, {backend._input: images})
        except Exception as exc:  # onnxruntime's own exception types
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelError(f"{path.name}: a test batch of {n} failed in ONNX Runtime ({first[:200]})",
                             "check that the model takes uint8 [N,H,W,3] and re-export it") from exc
        if scores.shape != (n, classes):
            raise ModelError(f"{path.name}: a batch of {n} gave scores of shape {tuple(scores.shape)}, "
                             f"expected ({n}, {classes}) for its {classes} labels", "re-export the model")
        if not np.isfinite(scores).all():
            raise ModelError(f"{path.name}: the model returns non-finite scores", "re-export the model")
        if scores.min() < -1e-4 or np.abs(scores.sum(axis=1) - 1.0).max() > 1e-2:
            raise ModelError(f"{path.name}: output {backend.manifest.output_name!r} is not softmax "
                             "probabilities (rows must be >= 0 and sum to 1)",
                             "export the model with the softmax inside (tools/export_onnx.py)")


def model_for(path: Path, precision: str | None) -> Path:
    """The file to open: ``path``, or its ``precision`` sibling (``x.onnx`` + int8 → ``x.int8.onnx``)."""
    if precision in (None, "auto") or precision == precision_from_name(path):
        return path
    sibling = variant_path(path, precision)
    if not sibling.is_file():
        dataset = ModelManifest.from_onnx(path).dataset if precision == "int8" else "shapes"
        raise ModelError(f"--precision {precision}: {sibling.name} is not beside {path.name}",
                         f"{sibling_hint(path, precision, dataset)}, or drop --precision")
    return sibling


def _session_input(path: Path, manifest: ModelManifest) -> str | bytes:
    """What the session opens: the file, or for an int8 (QDQ) model its int8-kernel form (in memory)."""
    import onnx

    from streamer.model.qdq import is_qdq, onnxruntime_form

    if manifest.precision != "int8":
        return str(path)
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf's several error types
        raise ModelError(f"{path.name}: not a readable ONNX model ({type(exc).__name__})",
                         f"quantize it again: {quantize_command(path, manifest.dataset)}") from exc
    if not is_qdq(model):
        raise ModelError(f"{path.name}: its manifest says int8 but the graph has no QuantizeLinear/"
                         "DequantizeLinear", f"quantize it again: {quantize_command(path, manifest.dataset)}")
    changed = onnxruntime_form(model)
    log.debug("%s: %d activation Q/DQ pairs re-typed to uint8 for ONNX Runtime's int8 kernels", path.name,
              changed)
    return model.SerializeToString()


def load(model_path: str | Path, max_batch: int, backend_name: str = NAME, threads: int = 0,
         precision: str | None = None, **options: Any) -> OrtBackend:
    """Open ``model_path`` (or its ``precision`` sibling) in an ONNX Runtime CPU session after checking it
    against the model contract."""
    import onnxruntime as ort

    path = Path(model_path)
    if path.suffix in (".plan", ".engine"):
        raise ModelError(f"{path}: a TensorRT plan cannot run on ONNX Runtime",
                         f"pass the ONNX it was built from (--model {path.name.split('.')[0]}.onnx), "
                         "or use --backend tensorrt / tensorrt-rtx on a supported GPU")
    path = model_for(path, precision)
    manifest = ModelManifest.from_onnx(path)
    if precision not in (None, "auto") and manifest.precision != precision:
        raise ModelError(f"{path.name}: --precision {precision} wanted, but it is a {manifest.precision} "
                         "model (its manifest says so)",
                         "name the variants <stem>.onnx / .fp16.onnx / .int8.onnx")
    # --threads N: one run at a time on N threads; 0: the cores shared by default_layout()'s parallel runs
    workers, threads = (1, threads) if threads and threads > 0 else default_layout()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # spinning threads would steal the cores that decode and resize frames between batches
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    model = _session_input(path, manifest)
    try:
        session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path.name}: ONNX Runtime cannot load it ({first[:200]})",
                         "re-export it with tools/export_onnx.py") from exc
    validate(session, manifest, max_batch, path)
    backend = OrtBackend(manifest, max_batch, session, path, threads, workers)
    _test_run(backend, path)
    log.info("onnxruntime %s: %s (%s, %d classes, input %dx%d, %d run%s at once × %d thread%s)",
             ort.__version__, path.name, manifest.precision, manifest.num_classes, *manifest.input_hw,
             workers, "s" if workers > 1 else "", threads, "s" if threads > 1 else "")
    return backend
