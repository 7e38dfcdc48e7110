"""Rebuild an exported model in PyTorch without the user's class: the PyTorch runtimes' loader.

``<stem>.pt2`` (a ``torch.export`` program of the bare net or of the whole pipeline model) when it loads and
runs, else the net rebuilt from ``<stem>.pth`` + the manifest's ``arch`` through :mod:`streamer.model.nets`.
Either way the result is wrapped in :class:`streamer.model.wrap.PipelineModel`, the very preprocessing the
ONNX export bakes in (uint8 NHWC BGR → float → CHW → RGB → normalise; softmax out).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from streamer.errors import ModelError
from streamer.model.checkpoint import checkpoint_for, load_checkpoint
from streamer.model.manifest import ModelManifest, manifest_path_for
from streamer.model.variants import module_stem, sibling
from streamer.model.wrap import PipelineModel

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "fp32")
SOURCES = ("auto", "pt2", "pth", "fast")


def dtype_for(precision: str) -> torch.dtype:
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r} for PyTorch", f"use {' or '.join(PRECISIONS)}")
    return torch.float16 if precision == "fp16" else torch.float32


def set_eval(model: nn.Module) -> None:
    """eval() without calling it: a ``torch.export`` module refuses train()/eval() (it is already eval)."""
    for m in model.modules():
        m.training = False


def read_manifest(path: Path) -> ModelManifest:
    """The manifest of an exported model, from the ``.onnx`` or the ``.json`` beside any of its files."""
    if path.suffix == ".onnx":
        return ModelManifest.from_onnx(path)
    side = path if path.suffix == ".json" else manifest_path_for(sibling(path, ".onnx"))
    if not side.is_file():
        raise ModelError(f"{path}: no manifest {side.name} beside it",
                         "export the model with tools/export_onnx.py")
    return ModelManifest.from_json(side.read_text(), str(side))


def _takes_uint8(module: nn.Module) -> bool:
    for node in module.graph.nodes:  # type: ignore[union-attr]
        if node.op == "placeholder" and "val" in node.meta:
            val = node.meta["val"]
            if getattr(val, "dtype", None) is not None and val.dim() == 4:
                return bool(val.dtype == torch.uint8)
    return False


def load_pt2(pt2: Path, manifest: ModelManifest, precision: str) -> tuple[nn.Module, bool]:
    """(pipeline model, needs autocast) from a torch.export program of the bare net or of the pipeline model
    (what tools/export_onnx.py writes). For the latter the bare net is taken back out (``unflatten(...).net``)
    so its weights can be cast to fp16; autocast over the whole program is the fallback."""
    program = torch.export.load(str(pt2))
    module = program.module()
    dtype = dtype_for(precision)
    if not _takes_uint8(module):
        return PipelineModel(module.to(dtype), manifest.mean, manifest.std, dtype=dtype), False
    try:
        net = torch.export.unflatten(program).net
        for m in net.modules():  # run the generated code, not torch.fx.Interpreter node by node (eager speed)
            if hasattr(m, "_run_with_interpreter"):
                m._run_with_interpreter = False
    except Exception as exc:  # an exported pipeline without a ``net`` submodule
        log.info("%s: no separable net (%s); running the whole program%s", pt2, exc,
                 " under fp16 autocast" if precision == "fp16" else "")
        return module, precision == "fp16"
    return PipelineModel(net.to(dtype), manifest.mean, manifest.std, dtype=dtype), False


def load_pth(model_path: Path, manifest: ModelManifest, precision: str) -> PipelineModel:
    """The net rebuilt from the ``.pth`` the manifest names (else ``<stem>.pth``) and its ``arch``."""
    stem = module_stem(model_path)
    try:
        pth = checkpoint_for(manifest, stem.parent)
    except ModelError:
        pth = sibling(model_path, ".pth")
    if not pth.is_file():
        raise ModelError(f"{model_path}: PyTorch needs {stem.name}.pt2 or {pth.name} beside it",
                         "re-export the model with tools/export_onnx.py (it writes both)")
    ckpt = load_checkpoint(pth, arch=manifest.arch or None, labels=manifest.labels)
    dtype = dtype_for(precision)
    return PipelineModel(ckpt.build(str(pth)).to(dtype), manifest.mean, manifest.std, dtype=dtype)


def _smoke(model: nn.Module, manifest: ModelManifest, autocast: bool, device: str) -> None:
    """One tiny forward, so a program that cannot run in this precision fails at load, not mid-stream."""
    set_eval(model)
    h, w = manifest.input_hw
    x = torch.zeros((2, h, w, 3), dtype=torch.uint8, device=device)
    amp = torch.autocast(device, dtype=torch.float16) if autocast else contextlib.nullcontext()
    with torch.inference_mode(), amp:
        y = model.to(device)(x)
    if tuple(y.shape) != (2, manifest.num_classes):
        raise ModelError(f"model {manifest.name!r} returns shape {tuple(y.shape)}, "
                         f"expected (2, {manifest.num_classes})", "re-export the model")


@dataclass(frozen=True)
class LoadedModel:
    """What :func:`load_torch_model` found: the pipeline model (uint8 BGR in, softmax out) and its origin."""

    model: nn.Module = field(repr=False)
    manifest: ModelManifest
    origin: str  # "x.pt2" or "x.pth + arch 'seed_cnn'"
    autocast: bool  # run under fp16 autocast (a whole-pipeline program whose net could not be separated)


def load_torch_model(model_path: str | Path, precision: str = "fp16", source: str = "auto",
                     device: str = "cuda") -> LoadedModel:
    """The exported model at ``model_path`` (the ``.onnx``, or its ``.json``, ``.pt2``, ``.pth``) in PyTorch
    on ``device``, from ``source``: ``pt2``, ``pth``, ``auto`` (the ``.pt2`` when it loads and runs, else
    the ``.pth``) or ``fast`` (the ``.pth`` when the net can be rebuilt from it, else as ``auto``: loading a
    ``.pt2`` program takes seconds, rebuilding a small net from its checkpoint a tenth of one)."""
    if source not in SOURCES:
        raise ModelError(f"unknown torch model source {source!r}", f"use {', '.join(SOURCES)}")
    dtype_for(precision)
    model_path = Path(model_path)
    if not model_path.exists():
        raise ModelError(f"model file not found: {model_path}", "pass --model PATH to an exported .onnx")
    manifest = read_manifest(model_path)
    pt2 = sibling(model_path, ".pt2")
    if source == "fast":
        if manifest.arch:
            try:
                return _from_pth(model_path, manifest, precision, device)
            except ModelError as exc:
                log.info("%s; trying the .pt2", exc)
        source = "auto"
    if source == "pt2" and not pt2.is_file():
        raise ModelError(f"{model_path}: no {pt2.name} beside it", "re-export it with tools/export_onnx.py")
    if source in ("auto", "pt2") and pt2.is_file():
        try:
            model, autocast = load_pt2(pt2, manifest, precision)
            _smoke(model, manifest, autocast, device)
            return LoadedModel(model, manifest, pt2.name, autocast)
        except Exception as exc:  # a program from another torch version, or one that cannot run in fp16
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            if source == "pt2":
                raise ModelError(f"{pt2}: does not load or run here ({type(exc).__name__}: {first})",
                                 "re-export it with this torch version, or use the .pth") from exc
            log.warning("%s does not load or run here (%s: %s); rebuilding the net from the .pth",
                        pt2, type(exc).__name__, first)
    return _from_pth(model_path, manifest, precision, device)


def _from_pth(model_path: Path, manifest: ModelManifest, precision: str, device: str) -> LoadedModel:
    """The net rebuilt from the ``.pth``, tried with one forward on ``device``."""
    model = load_pth(model_path, manifest, precision)
    _smoke(model, manifest, False, device)
    return LoadedModel(model, manifest, f"{module_stem(model_path).name}.pth + arch {manifest.arch!r}", False)


def wrap_net(net: nn.Module, manifest: ModelManifest, precision: str = "fp16") -> PipelineModel:
    """An in-memory bare net (float NCHW RGB normalised → logits) as a pipeline model, e.g. for benchmarks."""
    dtype = dtype_for(precision)
    set_eval(net)
    return PipelineModel(net.to(dtype), manifest.mean, manifest.std, dtype=dtype)
