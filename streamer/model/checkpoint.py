"""Checkpoints (``.pth``) and rebuilding a runnable PyTorch model from one, without the training code.

A streamer checkpoint is a plain dict (loadable with ``torch.load(weights_only=True)``)::

    {"format": "streamer.checkpoint", "version": 1, "arch": "seed_cnn", "labels": [...],
     "input_hw": [32, 32], "mean": [...], "std": [...], "dataset": "shapes",
     "val_accuracy": 0.99, "state_dict": {...}}

A bare ``state_dict`` (what ``torch.save(net.state_dict())`` writes) is accepted too when ``arch`` and
``labels`` are given. :func:`load_pipeline_model` is what a PyTorch runtime uses: manifest → arch →
:func:`streamer.model.nets.build_net` → weights → :class:`streamer.model.wrap.PipelineModel`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from streamer.errors import ModelError
from streamer.model.manifest import ModelManifest, manifest_path_for, sha256_file
from streamer.model.nets import INPUT_HW, build_net
from streamer.model.wrap import PipelineModel

FORMAT = "streamer.checkpoint"
VERSION = 1


@dataclass(frozen=True)
class Checkpoint:
    arch: str
    labels: tuple[str, ...]
    state_dict: Mapping[str, torch.Tensor] = field(repr=False, compare=False)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    input_hw: tuple[int, int] = INPUT_HW
    dataset: str = ""
    val_accuracy: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        object.__setattr__(self, "mean", tuple(float(x) for x in self.mean))
        object.__setattr__(self, "std", tuple(float(x) for x in self.std))
        object.__setattr__(self, "input_hw", tuple(int(x) for x in self.input_hw))
        if len(self.labels) < 2:
            raise ModelError(f"checkpoint for {self.arch!r} has {len(self.labels)} labels; needs 2 or more")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ModelError(f"checkpoint for {self.arch!r} has a bad mean/std {self.mean}/{self.std}")

    def build(self, origin: str = "<checkpoint>") -> nn.Module:
        """The net with these weights, in eval mode, on the CPU."""
        net = build_net(self.arch, len(self.labels))
        expected = net.state_dict()
        missing = [k for k in expected if k not in self.state_dict]
        unexpected = [k for k in self.state_dict if k not in expected]
        wrong = [k for k in expected
                 if k in self.state_dict and tuple(self.state_dict[k].shape) != tuple(expected[k].shape)]
        if missing or unexpected or wrong:
            detail = ", ".join(f"{len(v)} {what} (e.g. {v[0]})" for what, v in
                               (("missing", missing), ("unexpected", unexpected), ("mis-shaped", wrong)) if v)
            raise ModelError(f"{origin}: weights do not fit arch {self.arch!r}: {detail}",
                             "pass the --arch (and labels) the checkpoint was trained with")
        net.load_state_dict(dict(self.state_dict))
        return net.eval()

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION, "arch": self.arch, "labels": list(self.labels),
            "input_hw": list(self.input_hw), "mean": list(self.mean), "std": list(self.std),
            "dataset": self.dataset, "val_accuracy": self.val_accuracy,
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict.items()},
        }


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> Path:
    """Write atomically (tmp + rename) so a crash never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt.to_dict(), tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, arch: str | None = None, labels: Sequence[str] | None = None,
                    **overrides: Any) -> Checkpoint:
    """Read a streamer checkpoint, or a bare state_dict given ``arch`` and ``labels``."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint not found: {path}", "train one with tools/train.py")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip/pickle errors come in many types
        raise ModelError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__})",
                         "pass the .pth written by tools/train.py") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path}: holds a {type(data).__name__}, not a state_dict",
                         "save net.state_dict(), or use tools/train.py")
    if data.get("format") == FORMAT:
        fields = {k: data[k] for k in ("arch", "labels", "mean", "std", "input_hw", "dataset", "val_accuracy")
                  if k in data}
        fields["state_dict"] = data["state_dict"]
        if arch is not None and arch != fields["arch"]:
            raise ModelError(f"{path}: trained as {fields['arch']!r}, not {arch!r}", "drop --arch")
    else:
        if arch is None or labels is None:
            raise ModelError(f"{path}: a bare state_dict without arch/labels",
                             "pass --arch and --labels (or --dataset) for it")
        fields = {"arch": arch, "labels": tuple(labels), "state_dict": data}
    if labels is not None:
        fields["labels"] = tuple(labels)
    fields.update(overrides)
    return Checkpoint(**fields)


def checkpoint_for(manifest: ModelManifest, manifest_dir: Path) -> Path:
    """Where the manifest says its ``.pth`` is (``extra.checkpoint``, relative to the manifest)."""
    name = manifest.extra.get("checkpoint")
    if not name:
        raise ModelError(f"model {manifest.name!r}: its manifest names no .pth checkpoint",
                         "re-export it with tools/export_onnx.py")
    return manifest_dir / str(name)


def load_pipeline_model(model_path: str | Path, dtype: torch.dtype = torch.float32,
                        device: str | torch.device = "cpu", verify: bool = True) -> PipelineModel:
    """uint8 BGR NHWC → softmax PyTorch module for an exported model (``.onnx`` or its ``.json``).

    Rebuilds the net from the manifest's ``arch`` and the ``.pth`` beside it (checked against the
    manifest's ``checkpoint_sha256`` when ``verify``); needs only this package and torch.
    """
    model_path = Path(model_path)
    if model_path.suffix == ".json":
        if not model_path.is_file():
            raise ModelError(f"manifest not found: {model_path}",
                             "export the model with tools/export_onnx.py")
        manifest = ModelManifest.from_json(model_path.read_text(), str(model_path))
        manifest_dir = model_path.parent
    else:
        manifest = ModelManifest.from_onnx(model_path)
        manifest_dir = manifest_path_for(model_path).parent
    pth = checkpoint_for(manifest, manifest_dir)
    if not pth.is_file():
        raise ModelError(f"model {manifest.name!r}: checkpoint {pth} is missing",
                         "keep the .pth beside the .onnx (tools/export_onnx.py puts it there)")
    if verify and manifest.checkpoint_sha256 and sha256_file(pth) != manifest.checkpoint_sha256:
        raise ModelError(f"{pth}: does not match the sha256 in {manifest.name}'s manifest",
                         "re-export the model from this checkpoint with tools/export_onnx.py")
    ckpt = load_checkpoint(pth, arch=manifest.arch or None, labels=manifest.labels)
    net = ckpt.build(str(pth)).to(dtype)
    model = PipelineModel(net, manifest.mean, manifest.std, dtype=dtype)
    return model.eval().to(device)
