"""Which runs get a fast start's bridge, decided without importing the slow backend; which ONNX it opens; and
the reasons logged when there is none."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from streamer.backends import fast_start, ort, torch_cuda
from streamer.backends import tensorrt as trt_adapter
from streamer.paths import DEFAULT_MODEL

GPU_REASON = "no CUDA driver (test)"


@pytest.fixture
def torch_would_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a GPU host with torch and pycuda, without TensorRT: the cheap checks pass."""
    monkeypatch.setattr(torch_cuda, "quick_probe", lambda name="torch": None)
    monkeypatch.setattr(trt_adapter, "probe", lambda name: f"{name} not installed (test)")


def test_torch_is_the_slow_backend_explicitly_and_under_auto(torch_would_run: None,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def no_torch_import(name: str = "torch") -> str:
        raise AssertionError("the full probe (import torch) must not run to decide on a bridge")

    monkeypatch.setattr(torch_cuda, "probe", no_torch_import)
    assert fast_start.slow_backend("torch") == "torch"
    assert fast_start.slow_backend("auto") == "torch"
    assert fast_start.slow_backend("auto", "fp16", "cuda:0") == "torch"


def test_quick_backends_and_impossible_choices_get_no_bridge(torch_would_run: None,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    assert fast_start.slow_backend("onnxruntime") is None
    assert fast_start.slow_backend("auto", device="cpu") is None  # ONNX Runtime itself
    assert fast_start.slow_backend("torch", precision="int8") is None  # the selection refuses it at once
    assert fast_start.slow_backend("torch", device="cpu") is None
    monkeypatch.setattr(trt_adapter, "probe", lambda name: None)
    assert fast_start.slow_backend("auto") is None  # TensorRT: a plan deserialises in well under a second
    assert fast_start.slow_backend("tensorrt-rtx") is None


def test_without_a_gpu_torch_is_not_bridged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch_cuda, "no_gpu_reason", lambda: GPU_REASON)
    assert torch_cuda.quick_probe() == GPU_REASON
    assert fast_start.slow_backend("torch") is None  # the selection then fails as it always did
    assert fast_start.slow_backend("auto") is None


@pytest.mark.parametrize(("given", "opened"), [
    ("m.onnx", "m.onnx"), ("m.fp16.onnx", "m.fp16.onnx"), ("m.json", "m.onnx"), ("m.pt2", "m.onnx"),
    ("m.pth", "m.onnx"), ("m.fp16.pt2", "m.onnx"),
])
def test_the_onnx_model_beside_what_was_given(given: str, opened: str) -> None:
    assert fast_start.onnx_model(Path("d") / given) == Path("d") / opened


def test_the_bridge_opens_the_model_on_onnx_runtime_with_half_the_cores(torch_would_run: None) -> None:
    bridge = fast_start.open_bridge(DEFAULT_MODEL.with_suffix(".pth"), "torch", max_batch=4)
    assert bridge is not None
    try:
        assert bridge.stands_in_for == "torch"
        assert bridge.backend.name == "onnxruntime" and bridge.backend.engine_id.endswith("/onnxruntime")
        assert bridge.backend.workers == 1 and bridge.backend.threads == fast_start.bridge_threads(0) >= 1
    finally:
        bridge.backend.close()


def test_no_bridge_is_logged_with_why(torch_would_run: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                      caplog: pytest.LogCaptureFixture) -> None:
    bare = tmp_path / "m.pth"
    bare.write_bytes(b"")
    with caplog.at_level(logging.INFO, logger="streamer.backends.fast_start"):
        assert fast_start.open_bridge(bare, "torch", max_batch=4) is None
        assert "fast start: no bridge for torch (no m.onnx beside m.pth)" in caplog.text
        monkeypatch.setattr(ort, "probe", lambda name="onnxruntime": "onnxruntime is not installed (test)")
        assert fast_start.open_bridge(DEFAULT_MODEL, "torch", max_batch=4) is None
        assert "onnxruntime is not installed (test)" in caplog.text
        assert fast_start.open_bridge(DEFAULT_MODEL, "onnxruntime", max_batch=4) is None  # nothing to bridge


def test_a_bridge_is_expected_only_where_one_will_open(torch_would_run: None, monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    """Decided before the sources open (the slow backend's imports then wait for the bridge's first batch)."""
    bare = tmp_path / "m.pth"
    bare.write_bytes(b"")
    assert fast_start.bridge_expected(DEFAULT_MODEL.with_suffix(".pth"), "torch")
    assert not fast_start.bridge_expected(bare, "torch")  # no ONNX beside it
    assert not fast_start.bridge_expected(DEFAULT_MODEL, "onnxruntime")  # nothing to bridge
    monkeypatch.setattr(torch_cuda, "quick_probe", lambda name="torch": GPU_REASON)
    assert not fast_start.bridge_expected(DEFAULT_MODEL.with_suffix(".pth"), "torch")
