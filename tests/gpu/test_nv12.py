"""NV12 → BGR + resize: the reference transcription against the CPU path the model was validated with (CI),
and the CUDA kernel against the reference (GPU host, marker ``gpu``)."""

from __future__ import annotations

import numpy as np
import pytest
from nv12_reference import nv12_resize, to_nv12

from streamer.preprocess import resize_into

SIZES = [(32, 32), (224, 224), (600, 800), (270, 480), (1080, 1920)]


def scene(h: int = 1080, w: int = 1920, seed: int = 3) -> np.ndarray:
    """Shapes over gradients with fine texture: edges, flat areas and detail at every scale."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = np.linspace(0, 255, w, dtype=np.uint8)[None, :, None]
    img[..., 1] = np.linspace(255, 0, h, dtype=np.uint8)[:, None]
    for _ in range(30):
        c = tuple(int(v) for v in rng.integers(0, 256, 3))
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(img, centre, int(rng.integers(10, h // 3)), c, -1)
    noise = rng.integers(-12, 13, (h, w, 3))
    return np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("out_hw", SIZES)
def test_reference_matches_opencv_decode_then_resize_into(out_hw: tuple[int, int]) -> None:
    import cv2

    y, uv = to_nv12(scene())
    cpu_frame = cv2.cvtColor(np.concatenate([y, uv]), cv2.COLOR_YUV2BGR_NV12)  # what OpenCV's decoder gives
    want = np.empty((*out_hw, 3), np.uint8)
    resize_into(cpu_frame, want)
    got = nv12_resize(y, uv, *out_hw)
    diff = np.abs(got.astype(int) - want)
    assert diff.mean() < 0.75, f"mean abs difference {diff.mean():.3f}"
    assert np.percentile(diff, 99.9) <= 3, f"99.9th percentile {np.percentile(diff, 99.9)}"


@pytest.mark.gpu
@pytest.mark.parametrize("out_hw", SIZES)
def test_kernel_matches_the_reference(out_hw: tuple[int, int]) -> None:
    from streamer.cuda_env import no_gpu_reason, pycuda_reason

    reason = no_gpu_reason() or pycuda_reason()
    if reason:
        pytest.skip(reason)
    import pycuda.driver as cuda

    from streamer.gpu.context import PrimaryContext
    from streamer.gpu.nv12 import Nv12Planes, Nv12Resizer

    y, uv = to_nv12(scene())
    h, w = y.shape
    ctx = PrimaryContext.get(0)
    with ctx.active():
        stream = cuda.Stream()
        dy, duv = cuda.to_device(y), cuda.to_device(uv)
        out = cuda.mem_alloc(out_hw[0] * out_hw[1] * 3)
        planes = Nv12Planes(int(dy), w, int(duv), w, w, h)
        Nv12Resizer.get(ctx.handle).launch(planes, int(out), *out_hw, stream)
        stream.synchronize()
        got = np.empty((*out_hw, 3), np.uint8)
        cuda.memcpy_dtoh(got, out)
        for a in (dy, duv, out):
            a.free()
    want = nv12_resize(y, uv, *out_hw)
    diff = np.abs(got.astype(int) - want)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01, f"max {diff.max()}, {(diff > 0).mean():.4f} differ"
