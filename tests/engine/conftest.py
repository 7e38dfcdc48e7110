from __future__ import annotations

import pytest
import torch

from streamer.model import shapes
from streamer.model.checkpoint import Checkpoint, save_checkpoint
from streamer.model.export import export_model
from streamer.model.nets import build_net


@pytest.fixture(scope="session")
def small_model(tmp_path_factory):
    """A randomly initialised small_cnn exported as small.onnx + small.fp16.onnx + small.json + small.pth."""
    d = tmp_path_factory.mktemp("small_model")
    torch.manual_seed(0)
    net = build_net("small_cnn", len(shapes.LABELS))
    ckpt = Checkpoint(arch="small_cnn", labels=shapes.LABELS, state_dict=net.state_dict(), mean=shapes.MEAN,
                      std=shapes.STD, dataset="shapes")
    save_checkpoint(ckpt, d / "ckpt.pth")
    export_model(d / "ckpt.pth", d, "small", pt2=False, check=False)
    return d
