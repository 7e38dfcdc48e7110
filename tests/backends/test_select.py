"""``--backend auto``: the choice, the order, and the reasons logged for every backend skipped."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from streamer import cuda_env
from streamer.backends import select, torch_cuda
from streamer.backends import tensorrt as trt_adapter
from streamer.cuda_env import CudaProbe, GpuInfo
from streamer.engine import flavour
from streamer.errors import BackendUnavailableError, ConfigError

NO_GPU = cuda_env.no_gpu_reason() is not None
RTX = "tensorrt-rtx"


def _fake_gpu(monkeypatch: pytest.MonkeyPatch, cc: tuple[int, int], name: str = "Fake GPU") -> None:
    probe = CudaProbe((GpuInfo(0, name, cc, 80 << 30, 13000),))
    monkeypatch.setattr(cuda_env, "probe_cuda", lambda: probe)


@pytest.mark.skipif(not NO_GPU, reason="checks the CPU-only machine's choice")
def test_auto_picks_onnxruntime_here_and_says_why_not_the_others() -> None:
    sel = select.choose("auto")
    assert sel.name == "onnxruntime"
    skipped = dict(sel.skipped)
    assert list(skipped) == ["tensorrt", "tensorrt-rtx", "torch"]
    assert all(reason.strip() for reason in skipped.values())
    for name in ("tensorrt-rtx", "torch"):
        assert "GPU" in skipped[name] or "CUDA" in skipped[name], skipped[name]


@pytest.mark.skipif(not NO_GPU, reason="checks the CPU-only machine's choice")
def test_open_backend_logs_the_choice_and_each_skip(color_model: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="streamer.backends.select"):
        backend = select.open_backend(color_model, "auto", max_batch=4)
    try:
        assert backend.name == "onnxruntime"
    finally:
        backend.close()
    text = caplog.text
    for name in ("tensorrt", "tensorrt-rtx", "torch"):
        assert f"backend {name} skipped:" in text
    assert "backend onnxruntime selected" in text


@pytest.mark.skipif(not NO_GPU, reason="checks the CPU-only machine's refusal")
@pytest.mark.parametrize("name", ["tensorrt-rtx", "torch"])
def test_explicit_gpu_backend_without_gpu_is_a_one_line_error(name: str) -> None:
    with pytest.raises(BackendUnavailableError) as info:
        select.choose(name)
    message = str(info.value)
    assert name in message and "\n" not in message and "--backend auto" in message


def test_unknown_backend_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="onnxruntime"):
        select.choose("tensorflow")


def test_tensorrt_missing_package_is_named_with_its_install_route() -> None:
    if flavour.installed("tensorrt"):
        pytest.skip("tensorrt is installed here")
    reason = trt_adapter.probe("tensorrt")
    assert reason is not None and "tensorrt" in reason and "not installed" in reason


@pytest.mark.skipif(not flavour.installed("tensorrt-rtx"), reason="tensorrt_rtx not installed")
def test_rtx_refuses_hopper_by_compute_capability(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_gpu(monkeypatch, (9, 0), "NVIDIA H100 80GB HBM3")
    reason = trt_adapter.probe("tensorrt-rtx")
    assert reason is not None
    assert "9.0" in reason and "compute capability" in reason
    assert "8.9" in reason  # the message lists what is supported


@pytest.mark.skipif(not flavour.installed("tensorrt-rtx"), reason="tensorrt_rtx not installed")
@pytest.mark.parametrize("cc", [(8, 0), (8, 6), (8, 9), (12, 0)])
def test_rtx_accepts_supported_compute_capabilities(monkeypatch: pytest.MonkeyPatch,
                                                    cc: tuple[int, int]) -> None:
    _fake_gpu(monkeypatch, cc)
    assert flavour.runs_on(RTX, f"{cc[0]}.{cc[1]}")
    reason = trt_adapter.probe("tensorrt-rtx")
    # the compute capability passes; what may remain is the CUDA plumbing (pycuda) on this machine
    assert reason is None or "compute capability" not in reason


def test_auto_order_with_fake_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Preference order: TensorRT → TensorRT-RTX → PyTorch CUDA → ONNX Runtime, skipping what cannot run."""
    available = {"tensorrt": False, "tensorrt-rtx": False, "torch": True, "onnxruntime": True}
    monkeypatch.setattr(select, "probe", lambda name: None if available[name] else f"{name} not here")
    assert select.choose("auto").name == "torch"
    assert select.choose("auto").skipped == (("tensorrt", "tensorrt not here"),
                                             ("tensorrt-rtx", "tensorrt-rtx not here"))
    available["tensorrt-rtx"] = True
    assert select.choose("auto").name == "tensorrt-rtx"
    available.update({"tensorrt": True})
    assert select.choose("auto") == select.Selection("tensorrt", ())
    available.update(dict.fromkeys(available, False))
    with pytest.raises(BackendUnavailableError, match="no backend can run here"):
        select.choose("auto")


def test_hopper_auto_skips_rtx_and_reaches_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """On an H100 with tensorrt_rtx installed, auto must pass over RTX (CC 9.0) and take PyTorch CUDA."""
    if not flavour.installed("tensorrt-rtx"):
        pytest.skip("tensorrt_rtx not installed")
    _fake_gpu(monkeypatch, (9, 0), "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch_cuda, "probe", lambda name="torch": None)
    sel = select.choose("auto")
    assert sel.name == "torch"
    skipped = dict(sel.skipped)
    assert "9.0" in skipped["tensorrt-rtx"]
