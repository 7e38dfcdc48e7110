"""``.pth`` → ``<name>.onnx`` + ``<name>.fp16.onnx`` + ``<name>.json`` (+ ``<name>.pth``, ``<name>.pt2``).

The ONNX graphs follow the contract in :mod:`streamer.model.manifest`: input ``images`` uint8 [N,H,W,3] BGR
with a dynamic N, output ``scores`` float32 [N,C] softmax, the manifest in metadata key ``streamer.manifest``.
The fp16 graph does its math in half precision (TensorRT-RTX is strongly typed, so this is what an fp16
plan is built from) but still takes uint8 and returns float32.

Beside them: the checkpoint as ``<name>.pth`` (the manifest's ``arch`` rebuilds it with
:func:`streamer.model.checkpoint.load_pipeline_model`, any torch version) and, when ``torch.export``
manages, a ``<name>.pt2`` program (tied to the torch version that wrote it).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from streamer.errors import ModelError
from streamer.model.checkpoint import load_checkpoint
from streamer.model.manifest import INPUT_NAME, METADATA_KEY, OUTPUT_NAME, ModelManifest, sha256_file
from streamer.model.wrap import PipelineModel

log = logging.getLogger(__name__)
OPSET = 18
BATCH_DIM = "N"


@dataclass(frozen=True)
class ExportResult:
    onnx: Path
    onnx_fp16: Path | None
    manifest_json: Path
    checkpoint: Path
    pt2: Path | None
    fp32_max_abs_err: float | None  # ONNX Runtime vs PyTorch, random uint8 inputs
    fp16_max_abs_err: float | None  # fp16 ONNX vs PyTorch fp32
    fp16_top1_agreement: float | None


def _atomic_target(path: Path) -> Path:
    """``x.fp16.onnx`` → ``x.fp16.tmp.onnx``: same directory (so os.replace is atomic), same suffix."""
    return path.with_name(f"{path.stem}.tmp{path.suffix}")


def _export_onnx(model: PipelineModel, h: int, w: int, path: Path, manifest: ModelManifest,
                 verbose: bool) -> None:
    import onnx

    example = torch.randint(0, 256, (2, h, w, 3), dtype=torch.uint8)
    batch = torch.export.Dim(BATCH_DIM, min=1, max=4096)
    tmp = _atomic_target(path)
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink, warnings.catch_warnings(), _quiet_torch_logs(not verbose):
        if not verbose:
            warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (example,), str(tmp), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], dynamic_shapes={"images": {0: batch}},
                              opset_version=OPSET, dynamo=True, external_data=False, verbose=verbose)
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            first = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise ModelError(f"{manifest.name}: ONNX export failed ({first})",
                             "the net must be traceable by torch.export") from exc
    proto = onnx.load(str(tmp))
    for value in (*proto.graph.input, *proto.graph.output):
        dim0 = value.type.tensor_type.shape.dim[0]
        dim0.Clear()
        dim0.dim_param = BATCH_DIM
    del proto.metadata_props[:]
    for key, value in ((METADATA_KEY, manifest.to_json()), ("streamer.labels", ",".join(manifest.labels))):
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    proto.producer_name = "streamer.model.export"
    proto.doc_string = f"{manifest.name}: uint8 NHWC BGR 'images' -> softmax 'scores' ({manifest.precision})"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)


@contextlib.contextmanager
def _quiet_torch_logs(quiet: bool):  # -> Iterator[None]
    """Hide the exporters' chatter (e.g. 'torchvision is not installed') unless --verbose."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._export")]
    levels = [lg.level for lg in loggers]
    if quiet:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _export_pt2(model: PipelineModel, h: int, w: int, path: Path) -> Path | None:
    """torch.export program of the fp32 pipeline model; None (logged) when export or save fails."""
    try:
        example = torch.randint(0, 256, (2, h, w, 3), dtype=torch.uint8)
        batch = torch.export.Dim(BATCH_DIM, min=1, max=4096)
        with _quiet_torch_logs(True):
            program = torch.export.export(model, (example,), dynamic_shapes={"images": {0: batch}})
        tmp = _atomic_target(path)
        torch.export.save(program, str(tmp))
        os.replace(tmp, path)
        return path
    except Exception as exc:  # optional artifact: the .pth + arch path always works
        log.warning("torch.export program not written (%s: %s); the .pth + arch path still works",
                    type(exc).__name__, exc)
        return None


def _ort_run(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return np.asarray(session.run([OUTPUT_NAME], {INPUT_NAME: images})[0])


def check_parity(onnx_path: Path, reference: PipelineModel, images_bgr: np.ndarray) -> tuple[float, float]:
    """(max abs error, top-1 agreement) of ONNX Runtime on ``onnx_path`` vs ``reference`` (PyTorch)."""
    with torch.no_grad():
        expected = reference(torch.from_numpy(images_bgr)).numpy()
    got = _ort_run(onnx_path, images_bgr)
    if got.shape != expected.shape or got.dtype != np.float32:
        raise ModelError(f"{onnx_path}: output {got.dtype}{list(got.shape)}, expected float32"
                         f"{list(expected.shape)}", "re-export the model")
    err = float(np.abs(got - expected).max())
    agree = float((got.argmax(1) == expected.argmax(1)).mean())
    return err, agree


def check_images(manifest: ModelManifest, n: int = 256) -> np.ndarray:
    """Images for the self-check, uint8 NHWC BGR: random noise, plus real samples for ``shapes``."""
    h, w = manifest.input_hw
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (n // 4, h, w, 3), dtype=np.uint8)
    if manifest.dataset == "shapes" and (h, w) == (32, 32):
        from streamer.model.shapes import TEST_SEED, make_shapes

        real = make_shapes(n - len(noise), TEST_SEED)[0][..., ::-1]
        return np.ascontiguousarray(np.concatenate([noise, real]))
    return rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def export_model(checkpoint: str | Path, out_dir: str | Path, name: str | None = None, *, fp16: bool = True,
                 pt2: bool = True, check: bool = True, verbose: bool = False) -> ExportResult:
    """Export a checkpoint (see :mod:`streamer.model.checkpoint`) into ``out_dir`` under ``name``."""
    checkpoint = Path(checkpoint)
    out_dir = Path(out_dir)
    name = name or checkpoint.name.removesuffix(".pth")
    ckpt = load_checkpoint(checkpoint)
    net = ckpt.build(str(checkpoint))
    out_dir.mkdir(parents=True, exist_ok=True)
    pth = out_dir / f"{name}.pth"
    if pth.resolve() != checkpoint.resolve():
        tmp = _atomic_target(pth)
        shutil.copyfile(checkpoint, tmp)
        os.replace(tmp, pth)
    h, w = ckpt.input_hw
    paths = {"onnx": out_dir / f"{name}.onnx", "fp16": out_dir / f"{name}.fp16.onnx",
             "pt2": out_dir / f"{name}.pt2", "json": out_dir / f"{name}.json"}
    extra = {"checkpoint": pth.name, "torch": torch.__version__}
    if fp16:
        extra["onnx_fp16"] = paths["fp16"].name
    if pt2:
        extra["pt2"] = paths["pt2"].name
    manifest = ModelManifest(
        name=name, labels=ckpt.labels, input_hw=ckpt.input_hw, mean=ckpt.mean, std=ckpt.std,
        precision="fp32", arch=ckpt.arch, checkpoint_sha256=sha256_file(checkpoint),
        val_accuracy=ckpt.val_accuracy, dataset=ckpt.dataset, extra=extra,
    )
    model32 = PipelineModel(net, ckpt.mean, ckpt.std).eval()
    _export_onnx(model32, h, w, paths["onnx"], manifest, verbose)
    model16 = None
    if fp16:
        manifest16 = ModelManifest.from_dict({**_asdict(manifest), "precision": "fp16"})
        model16 = PipelineModel(copy.deepcopy(net).half(), ckpt.mean, ckpt.std, dtype=torch.float16).eval()
        _export_onnx(model16, h, w, paths["fp16"], manifest16, verbose)
    pt2_path = _export_pt2(model32, h, w, paths["pt2"]) if pt2 else None
    if pt2 and pt2_path is None:
        extra.pop("pt2")
        manifest = ModelManifest.from_dict({**_asdict(manifest), "extra": extra})
    tmp = _atomic_target(paths["json"])
    tmp.write_text(manifest.to_json() + "\n")
    os.replace(tmp, paths["json"])

    err32 = err16 = agree16 = None
    if check:
        images = check_images(manifest)
        err32, _ = check_parity(paths["onnx"], model32, images)
        if fp16:
            err16, agree16 = check_parity(paths["fp16"], model32, images)
    return ExportResult(onnx=paths["onnx"], onnx_fp16=paths["fp16"] if fp16 else None,
                        manifest_json=paths["json"], checkpoint=pth, pt2=pt2_path, fp32_max_abs_err=err32,
                        fp16_max_abs_err=err16, fp16_top1_agreement=agree16)


def _asdict(manifest: ModelManifest) -> dict:
    from dataclasses import asdict

    return asdict(manifest)
