"""Rebuilding an exported model in PyTorch without its class (.pt2 program, else .pth + arch), on the CPU with
real files written by the model side's own checkpoint code and ``torch.export``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_helpers import images, reference, run_model, write_model

from streamer.errors import ModelError
from streamer.model.torch_load import load_torch_model


@pytest.mark.parametrize("pt2", ["pipeline", "net"])
def test_pt2_is_preferred_and_computes_the_exported_model(tmp_path: Path, pt2: str) -> None:
    path = write_model(tmp_path, pt2=pt2)
    loaded = load_torch_model(path, precision="fp32", device="cpu")
    assert loaded.origin == "m.pt2" and not loaded.autocast
    x = images(16)
    np.testing.assert_allclose(run_model(loaded.model, x), run_model(reference(), x), atol=1e-5)


def test_pipeline_pt2_in_fp16_separates_the_net_and_casts_its_weights(tmp_path: Path) -> None:
    loaded = load_torch_model(write_model(tmp_path), precision="fp16", device="cpu")
    assert loaded.origin == "m.pt2" and not loaded.autocast
    assert {p.dtype for p in loaded.model.net.parameters()} == {torch.float16}
    x = images(64, seed=3)
    got, want = run_model(loaded.model, x), run_model(reference(), x)
    assert got.dtype == np.float32
    assert np.abs(got - want).max() < 2e-2
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.95


def test_without_pt2_the_net_is_rebuilt_from_pth_and_arch(tmp_path: Path) -> None:
    path = write_model(tmp_path, pt2=None)
    loaded = load_torch_model(path, precision="fp32", device="cpu")
    assert loaded.origin == "m.pth + arch 'small_cnn'"
    x = images(8, seed=1)
    np.testing.assert_allclose(run_model(loaded.model, x), run_model(reference(), x), atol=1e-6)


def test_a_broken_pt2_falls_back_to_the_pth_with_a_warning(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    path = write_model(tmp_path, pt2="garbage")
    loaded = load_torch_model(path, precision="fp32", device="cpu")
    assert loaded.origin.startswith("m.pth")
    assert "m.pt2 does not load or run here" in caplog.text
    with pytest.raises(ModelError, match=r"m\.pt2: does not load"):
        load_torch_model(path, precision="fp32", source="pt2", device="cpu")


def test_missing_files_are_named(tmp_path: Path) -> None:
    path = write_model(tmp_path, pt2=None)
    (tmp_path / "m.pth").unlink()
    with pytest.raises(ModelError, match=r"needs m\.pt2 or m\.pth"):
        load_torch_model(path, device="cpu")
    with pytest.raises(ModelError, match="model file not found"):
        load_torch_model(tmp_path / "nothing.onnx", device="cpu")
    other = tmp_path / "other"
    other.mkdir()
    write_model(other, "x", pt2="pipeline").unlink()  # a .pt2 without its manifest
    with pytest.raises(ModelError, match=r"no manifest x\.json"):
        load_torch_model(other / "x.pt2", device="cpu")


def test_a_pth_that_does_not_match_the_arch_is_refused(tmp_path: Path) -> None:
    path = write_model(tmp_path, pt2=None)
    manifest = json.loads((tmp_path / "m.json").read_text())
    manifest["arch"] = "seed_cnn"
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="seed_cnn"):
        load_torch_model(path, device="cpu")


def test_a_model_name_with_dots_finds_its_own_siblings(tmp_path: Path) -> None:
    """``cam.v2.pt2`` goes with ``cam.v2.json`` and ``cam.v2.pth``, not ``cam.json`` / ``cam.pth``."""
    write_model(tmp_path, name="cam.v2")
    loaded = load_torch_model(tmp_path / "cam.v2.pt2", precision="fp32", device="cpu")
    assert loaded.origin == "cam.v2.pt2"
    loaded = load_torch_model(tmp_path / "cam.v2.json", precision="fp32", device="cpu", source="pth")
    assert loaded.origin == "cam.v2.pth + arch 'small_cnn'"
