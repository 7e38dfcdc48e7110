"""The model contract between the export tool and the runtime.

An exported model is an ONNX graph with
- one input ``images``: uint8, shape ``[N, H, W, 3]``, **BGR** channel order (OpenCV's native), dynamic N;
  the graph itself does Cast → Transpose → BGR→RGB → ÷255 → (x - mean) / std;
- one output ``scores``: float32 ``[N, num_classes]``, softmax probabilities;
- metadata props (``streamer.*`` keys below) carrying the manifest, so a lone ``.onnx`` is self-describing;
- a JSON manifest beside it: ``<stem>.json`` (same fields), for tools and humans.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from streamer.errors import ModelError
from streamer.model.variants import PRECISIONS

INPUT_NAME = "images"
OUTPUT_NAME = "scores"
CHANNEL_ORDER = "BGR"
METADATA_KEY = "streamer.manifest"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class ModelManifest:
    """What the runtime needs to know about a model, validated on construction."""

    name: str
    labels: tuple[str, ...]
    input_hw: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    precision: str = "fp32"  # of the ONNX graph's math: fp32 | fp16 | int8 (QDQ: tools/quantize.py)
    arch: str = ""
    checkpoint_sha256: str = ""
    val_accuracy: float | None = None
    dataset: str = ""
    channel_order: str = CHANNEL_ORDER
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = MANIFEST_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        object.__setattr__(self, "input_hw", tuple(int(x) for x in self.input_hw))
        object.__setattr__(self, "mean", tuple(float(x) for x in self.mean))
        object.__setattr__(self, "std", tuple(float(x) for x in self.std))
        if not self.labels:
            raise ModelError(f"model {self.name!r} has no class labels",
                             "re-export it with tools/export_onnx.py")
        if len(self.input_hw) != 2 or min(self.input_hw) <= 0:
            raise ModelError(f"model {self.name!r} has a bad input size {self.input_hw}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ModelError(f"model {self.name!r} has a bad mean/std {self.mean}/{self.std}")
        if self.precision not in PRECISIONS:
            raise ModelError(f"model {self.name!r} has unknown precision {self.precision!r}")
        if self.channel_order != CHANNEL_ORDER:
            raise ModelError(f"model {self.name!r} expects {self.channel_order} input, not BGR",
                             "re-export it with tools/export_onnx.py (BGR input)")

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def model_id(self) -> str:
        """Short, stable id published with every prediction: name + first 12 hex of the checkpoint hash."""
        return f"{self.name}@{self.checkpoint_sha256[:12]}" if self.checkpoint_sha256 else self.name

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "<manifest>") -> ModelManifest:
        try:
            known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
            return cls(**known)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{origin}: malformed model manifest ({exc})", "re-export the model") from exc

    @classmethod
    def from_json(cls, text: str, origin: str = "<manifest>") -> ModelManifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"{origin}: manifest is not JSON ({exc})", "re-export the model") from exc
        return cls.from_dict(data, origin)

    @classmethod
    def from_onnx(cls, path: str | Path) -> ModelManifest:
        """Read the manifest from an ONNX file's metadata (falls back to ``<stem>.json`` beside it)."""
        import onnx

        path = Path(path)
        if not path.is_file():
            raise ModelError(f"model file not found: {path}", "pass --model PATH to an exported .onnx")
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # protobuf raises several unrelated types on truncated/garbage files
            raise ModelError(
                f"{path}: not a readable ONNX model ({type(exc).__name__})",
                "re-export it with tools/export_onnx.py",
            ) from exc
        props = {p.key: p.value for p in model.metadata_props}
        if METADATA_KEY in props:
            return cls.from_json(props[METADATA_KEY], str(path))
        side = manifest_path_for(path)
        if side.is_file():
            return cls.from_json(side.read_text(), str(side))
        raise ModelError(
            f"{path}: no streamer manifest in its metadata and no {side.name} beside it",
            "export the model with tools/export_onnx.py",
        )


def manifest_path_for(onnx_path: str | Path) -> Path:
    """``engines/shapes_cnn.onnx`` → ``engines/shapes_cnn.json`` (the fp16 variant shares the fp32 stem; the
    int8 one has its own, ``shapes_cnn.int8.json``, with its calibration and accuracy gate)."""
    p = Path(onnx_path)
    stem = p.name.removesuffix(".onnx").removesuffix(".fp16")
    return p.with_name(stem + ".json")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
