"""The TensorRT / TensorRT-RTX adapter: its probe and, on a GPU TensorRT-RTX supports, running a plan on the
CUDA executor (deserialising needs such a GPU: TensorRT-RTX refuses Hopper). Plan decisions: tests/engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamer_helpers import make_color_model

from streamer.backends import tensorrt as trt_adapter
from streamer.engine import flavour
from streamer.errors import BackendUnavailableError

pytestmark = pytest.mark.skipif(not flavour.installed("tensorrt-rtx"), reason="tensorrt_rtx is not installed")
RTX = "tensorrt-rtx"


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return make_color_model(tmp_path / "color.onnx")


@pytest.mark.skipif(trt_adapter.probe(RTX) is None, reason="this machine can run TensorRT-RTX")
def test_load_without_a_supported_gpu_is_one_line(model: Path) -> None:
    with pytest.raises(BackendUnavailableError) as info:
        trt_adapter.load(model, 8, backend_name=RTX)
    assert "\n" not in str(info.value)


@pytest.mark.gpu
@pytest.mark.skipif(trt_adapter.probe(RTX) is not None, reason=f"cannot run TensorRT-RTX here: "
                    f"{trt_adapter.probe(RTX)}")
def test_engine_runs_on_the_cuda_executor_like_onnxruntime(model: Path) -> None:
    from streamer.backends import ort

    backend = trt_adapter.load(model, 8, backend_name=RTX)
    reference = ort.load(model, 8)
    rng = np.random.default_rng(0)
    with backend.make_executor(8, 2) as ex:
        for n in (8, 3, 1, 8):
            images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
            slot = ex.acquire(timeout=30)
            assert slot is not None
            slot.host_input[:n] = images
            slot.count = n
            ex.submit(slot)
            done = ex.collect(timeout=30)
            assert done is slot and done.error is None
            want = np.empty((n, 3), np.float32)
            reference.infer(images, want)
            np.testing.assert_allclose(done.host_output[:n], want, atol=1e-3)
            ex.release(done)
