"""Exported PyTorch models as the export tool leaves them (manifest, .pth, .pt2) for the model-loading tests.

Import as ``from torch_helpers import ...`` (tests/ is on sys.path), only from tests that need torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from streamer.model.checkpoint import Checkpoint, save_checkpoint
from streamer.model.manifest import ModelManifest, sha256_file
from streamer.model.nets import build_net
from streamer.model.wrap import PipelineModel

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
LABELS = tuple("abcdefghij")


def write_model(folder: Path, name: str = "m", *, pt2: str | None = "pipeline", seed: int = 0) -> Path:
    """Files as the export tool leaves them — ``name.json`` (manifest), ``name.pth`` and optionally
    ``name.pt2`` — for a small_cnn; returns the manifest's path (the runtime accepts it like the .onnx)."""
    torch.manual_seed(seed)
    net = build_net("small_cnn", len(LABELS)).eval()
    pth = save_checkpoint(Checkpoint(arch="small_cnn", labels=LABELS, state_dict=net.state_dict(), mean=MEAN,
                                     std=STD), folder / f"{name}.pth")
    manifest = ModelManifest(name=name, labels=LABELS, input_hw=(32, 32), mean=MEAN, std=STD,
                             arch="small_cnn", checkpoint_sha256=sha256_file(pth),
                             extra={"checkpoint": pth.name})
    (folder / f"{name}.json").write_text(manifest.to_json())
    example = torch.zeros((2, 32, 32, 3), dtype=torch.uint8)
    batch = torch.export.Dim("N", min=1, max=4096)
    if pt2 == "pipeline":  # what tools/export_onnx.py writes: the whole uint8 → softmax model
        program = torch.export.export(PipelineModel(net, MEAN, STD).eval(), (example,),
                                      dynamic_shapes={"images": {0: batch}})
        torch.export.save(program, str(folder / f"{name}.pt2"))
    elif pt2 == "net":  # a bare net program (float NCHW → logits)
        program = torch.export.export(net, (torch.zeros(2, 3, 32, 32),), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(folder / f"{name}.pt2"))
    elif pt2 == "garbage":
        (folder / f"{name}.pt2").write_bytes(b"not a torch.export archive")
    return folder / f"{name}.json"


def reference(seed: int = 0) -> PipelineModel:
    torch.manual_seed(seed)
    return PipelineModel(build_net("small_cnn", len(LABELS)).eval(), MEAN, STD).eval()


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))


def run_model(model: torch.nn.Module, x: torch.Tensor, autocast: bool = False) -> np.ndarray:
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.float16, enabled=autocast):
        return model(x).float().numpy()
