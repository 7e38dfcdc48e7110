"""NV12 → BGR + resize: the reference transcription against the CPU path the model was validated with (CI:
clips the tests make with ffmpeg, decoded by OpenCV and by ffmpeg into NV12), and the CUDA kernel against the
reference (GPU host, marker ``gpu``). Both must be exact: every byte equal."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from nv12_reference import bgr_image, nv12_resize, resize_bgr, to_nv12

from media import make_h264_clip, require_ffmpeg
from streamer.gpu.nv12 import (
    BT601_LIMITED,
    BT709_LIMITED,
    MAX_BATCH_FRAMES,
    ColorMatrix,
    Nv12Planes,
    batch_launch_args,
    copy_launch_args,
)
from streamer.preprocess import resize_into

SIZES = [(32, 32), (224, 224), (600, 800), (270, 480), (1080, 1920), (1200, 2000)]
FRAMES = 3


def scene(h: int = 1080, w: int = 1920, seed: int = 3) -> np.ndarray:
    """Shapes over gradients with fine texture: edges, flat areas and detail at every scale."""
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


# -- the reference against OpenCV's decode + resize_into (CI) ---------------------------------------------

def decoded(path: Path, frames: int = FRAMES) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(Y, UV, OpenCV's BGR frame) per frame: the decoder's NV12 as ffmpeg writes it, and what OpenCV's FFmpeg
    backend (swscale) makes of the same frame."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    cmd = [require_ffmpeg(), "-v", "error", "-i", str(path), "-frames:v", str(frames), "-f", "rawvideo",
           "-pix_fmt", "nv12", "-"]
    raw = subprocess.run(cmd, capture_output=True, check=True, timeout=120).stdout
    size = w * h + w * h // 2
    assert len(raw) == frames * size, f"ffmpeg gave {len(raw)} bytes of NV12, not {frames} frames of {w}x{h}"
    try:
        for i in range(frames):
            ok, frame = cap.read()
            assert ok, f"OpenCV decoded fewer than {frames} frames of {path}"
            pic = np.frombuffer(raw, np.uint8, size, i * size)
            yield pic[:w * h].reshape(h, w), pic[w * h:].reshape(h // 2, w), frame
    finally:
        cap.release()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """H.264 clips (testsrc2 under moving noise) at 1080p, at a size that is no multiple of 8 or 16 (chroma
    planes 501 wide), at the demo's 256x256, and one tagged BT.709."""
    d = tmp_path_factory.mktemp("nv12")
    seconds = FRAMES / 10
    out = {f"{w}x{h}": make_h264_clip(d / f"{w}x{h}.mp4", seconds=seconds, fps=10, size=(w, h))
           for w, h in ((1920, 1080), (1002, 566), (256, 256))}
    out["bt709"] = make_h264_clip(d / "bt709.mp4", seconds=seconds, fps=10, size=(640, 360),
                                  container_args=("-colorspace", "bt709", "-color_primaries", "bt709",
                                                  "-color_trc", "bt709"))
    return out


def assert_same(got: np.ndarray, want: np.ndarray, what: str) -> None:
    diff = np.abs(got.astype(int) - want)
    assert got.shape == want.shape and not diff.any(), (
        f"{what}: {100 * (diff == 0).mean():.4f}% of bytes equal, max difference {diff.max()}")


@pytest.mark.parametrize(("clip", "out_sizes"), [
    ("1920x1080", [(32, 32), (64, 64), (224, 224), (60, 100), (600, 800), (1080, 1920), (1350, 2400)]),
    ("1002x566", [(32, 32), (100, 60), (566, 1002), (708, 1252)]),
    ("256x256", [(32, 32), (64, 64), (100, 60), (320, 320)]),
])
def test_reference_is_exactly_opencv_decode_then_resize_into(clips: dict[str, Path], clip: str,
                                                             out_sizes: list[tuple[int, int]]) -> None:
    """Colour (swscale's fixed point) and every resize path of resize_into: bilinear to 4x then area by 4
    (32x32 is the model's input), INTER_AREA's integer and general paths, a copy, and upscales."""
    for n, (y, uv, frame) in enumerate(decoded(clips[clip])):
        bgr = bgr_image(y, uv)
        assert_same(bgr, frame, f"{clip} frame {n} colour")
        for out_h, out_w in out_sizes:
            want = np.empty((out_h, out_w, 3), np.uint8)
            resize_into(frame, want)
            assert_same(resize_bgr(bgr, out_h, out_w), want, f"{clip} frame {n} → {out_w}x{out_h}")


def test_a_bt709_stream_converts_exactly_with_the_bt709_matrix(clips: dict[str, Path]) -> None:
    """OpenCV's decoder follows the stream's colour tag; the kernel's BT.709 coefficients (derived from the
    ColorMatrix as swscale derives its own) give the same bytes."""
    for n, (y, uv, frame) in enumerate(decoded(clips["bt709"])):
        assert_same(bgr_image(y, uv, BT709_LIMITED), frame, f"bt709 frame {n} colour")
        want = np.empty((32, 32, 3), np.uint8)
        resize_into(frame, want)
        assert_same(nv12_resize(y, uv, 32, 32, BT709_LIMITED), want, f"bt709 frame {n} → 32x32")
        assert not np.array_equal(bgr_image(y, uv, BT601_LIMITED), frame)  # the matrix matters on this clip


def test_the_resize_steps_match_resize_into_at_many_sizes() -> None:
    """resize_into's cv2.resize calls on random images, source and target sizes drawn at random (every path:
    the 4x prescale, integer and fractional INTER_AREA, 2x2, mixed up/down scaling, a copy)."""
    rng = np.random.default_rng(11)
    for _ in range(60):
        sh, sw = (int(v) for v in rng.integers(2, 300, 2))
        oh, ow = (int(v) for v in rng.integers(1, 150, 2))
        if rng.random() < 0.3:
            k = int(rng.integers(1, 6))
            oh, ow = max(1, sh // k), max(1, sw // k)
        src = rng.integers(0, 256, (sh, sw, 3), dtype=np.uint8)
        want = np.empty((oh, ow, 3), np.uint8)
        resize_into(src, want)
        assert_same(resize_bgr(src.astype(np.int64), oh, ow), want, f"{sw}x{sh} → {ow}x{oh}")


def test_colour_coefficients_are_swscales() -> None:
    """swscale's int16 constants for its BT.601 and BT.709 tables (ff_yuv2rgb_coeffs, limited range)."""
    assert BT601_LIMITED.sws_coefficients() == (9539, 128, 13075, -3209, -6660, 16525)
    assert BT709_LIMITED.sws_coefficients() == (9539, 128, 14686, -1747, -4366, 17305)


def test_the_kernel_arguments_are_the_coefficients_computed_once() -> None:
    for matrix in (BT601_LIMITED, BT709_LIMITED):
        args = matrix.kernel_args()
        assert args == matrix.sws_coefficients() and all(type(a) is np.int32 for a in args)
        assert matrix.kernel_args() is args  # not recomputed per launch


# -- launch_batch's launches (CI: no GPU needed) ----------------------------------------------------------

def planes(i: int, w: int = 320, h: int = 240, pitch: int = 512) -> Nv12Planes:
    return Nv12Planes(0x10000 * (i + 1), pitch, 0x10000 * (i + 1) + pitch * h, pitch, w, h)


def test_a_batch_is_split_into_launches_of_at_most_64_frames() -> None:
    n = 2 * MAX_BATCH_FRAMES + 3
    frames = [planes(i) for i in range(n)]
    outs = [0x9000_0000 + 3072 * i for i in range(n)]
    launches = batch_launch_args(frames, outs, 32, 32, BT709_LIMITED)
    assert [grid for grid, _ in launches] == [(2, 4, 64), (2, 4, 64), (2, 4, 3)]
    seen_y, seen_out = [], []
    for (_, _, count), params in launches:
        ys, uvs, dsts = (params[k * 64:(k + 1) * 64] for k in range(3))
        assert list(ys[count:]) == list(uvs[count:]) == list(dsts[count:]) == [0] * (64 - count)
        assert [u - y for y, u in zip(ys[:count], uvs[:count], strict=True)] == [512 * 240] * count
        seen_y += ys[:count]
        seen_out += dsts[:count]
        assert params[192:] == (512, 512, 320, 240, 32, 32, *BT709_LIMITED.kernel_args())
    assert seen_y == [f.y_ptr for f in frames] and seen_out == outs  # every frame once, in order


def test_a_batch_of_mixed_layouts_or_missing_outputs_is_refused() -> None:
    with pytest.raises(ValueError, match="differ in size or pitch"):
        batch_launch_args([planes(0), planes(1, pitch=640)], [1, 2], 32, 32, BT601_LIMITED)
    with pytest.raises(ValueError, match="differ in size or pitch"):
        batch_launch_args([planes(0), planes(1, w=318)], [1, 2], 32, 32, BT601_LIMITED)
    with pytest.raises(ValueError, match="one output pointer per frame"):
        batch_launch_args([planes(0), planes(1)], [1], 32, 32, BT601_LIMITED)
    assert batch_launch_args([], [], 32, 32, BT601_LIMITED) == []


def test_rows_are_gathered_in_launches_of_at_most_64_rows() -> None:
    n = MAX_BATCH_FRAMES + 5
    srcs = [0x7000_0000 + 3072 * i for i in range(n)]
    dsts = [0x9000_0000 + 3072 * (n - i) for i in range(n)]
    launches = copy_launch_args(srcs, dsts, 3072)
    assert [grid for grid, _ in launches] == [(1, 64, 1), (1, 5, 1)]  # 3,072 bytes: 192 16-byte steps
    seen_src, seen_dst = [], []
    for (_, count, _), params in launches:
        assert len(params) == 129 and params[-1] == 3072
        assert list(params[count:64]) == list(params[64 + count:128]) == [0] * (64 - count)
        seen_src += params[:count]
        seen_dst += params[64:64 + count]
    assert seen_src == srcs and seen_dst == dsts  # every row once, in order
    assert copy_launch_args([], [], 3072) == []
    assert copy_launch_args([1], [2], 150528)[0][0] == (32, 1, 1)  # 224×224×3: capped at 32 blocks a row
    with pytest.raises(ValueError, match="1 sources but 2 destinations"):
        copy_launch_args([1], [2, 3], 3072)
    with pytest.raises(ValueError, match="bad row size"):
        copy_launch_args([1], [2], 0)


# -- the kernel against the reference (GPU host) ----------------------------------------------------------

@pytest.fixture(scope="module")
def gpu() -> Iterator[tuple[object, object]]:
    from streamer.cuda_env import no_gpu_reason, pycuda_reason

    reason = no_gpu_reason() or pycuda_reason()
    if reason:
        pytest.skip(reason)
    from streamer.gpu.context import PrimaryContext
    from streamer.gpu.nv12 import Nv12Resizer

    ctx = PrimaryContext.get(0)
    with ctx.active():
        yield ctx, Nv12Resizer.get(ctx.handle)


def upload_pitched(cuda: object, y: np.ndarray, uv: np.ndarray, pad: int = 96) -> tuple[list, Nv12Planes]:
    """The planes in device memory with rows longer than the picture (as NVDEC lays them out)."""
    h, w = y.shape
    pitch = w + pad
    buf = np.full((h + uv.shape[0], pitch), 0xEE, np.uint8)
    buf[:h, :w], buf[h:, :w] = y, uv
    dev = cuda.to_device(buf)  # type: ignore[attr-defined]
    return [dev], Nv12Planes(int(dev), pitch, int(dev) + pitch * h, pitch, w, h)


@pytest.mark.gpu
@pytest.mark.parametrize("out_hw", SIZES)
@pytest.mark.parametrize("matrix", [BT601_LIMITED, BT709_LIMITED], ids=lambda m: m.name)
def test_kernel_matches_the_reference(gpu: tuple, out_hw: tuple[int, int], matrix: ColorMatrix) -> None:
    import pycuda.driver as cuda

    _, resizer = gpu
    y, uv = to_nv12(scene())
    keep, src = upload_pitched(cuda, y, uv)
    stream = cuda.Stream()
    out = cuda.mem_alloc(out_hw[0] * out_hw[1] * 3)
    resizer.launch(src, int(out), *out_hw, stream, matrix)
    stream.synchronize()
    got = np.empty((*out_hw, 3), np.uint8)
    cuda.memcpy_dtoh(got, out)
    for a in (*keep, out):
        a.free()
    assert_same(got, nv12_resize(y, uv, *out_hw, matrix), f"kernel {out_hw[1]}x{out_hw[0]} {matrix.name}")


@pytest.mark.gpu
def test_launch_batch_converts_every_frame_into_its_own_row(gpu: tuple) -> None:
    """70 different frames (two launches: 64 + 6) into rows scattered over one buffer with guard bytes between
    them: each row is exactly the reference's, and nothing outside the rows is written."""
    import pycuda.driver as cuda

    _, resizer = gpu
    n, (h, w), (out_h, out_w) = 70, (240, 320), (32, 32)
    pictures = [to_nv12(scene(h, w, seed=i)) for i in range(n)]
    row, gap = out_h * out_w * 3, 40
    keep, frames = [], []
    for y, uv in pictures:
        k, p = upload_pitched(cuda, y, uv)
        keep += k
        frames.append(p)
    order = np.random.default_rng(1).permutation(n)  # rows in a different order from the frames
    host = np.full(n * (row + gap), 0xA5, np.uint8)
    dev = cuda.to_device(host)
    outs = [int(dev) + int(slot) * (row + gap) for slot in order]
    stream = cuda.Stream()
    resizer.launch_batch(frames, outs, out_h, out_w, stream, BT601_LIMITED)
    stream.synchronize()
    cuda.memcpy_dtoh(host, dev)
    for a in (*keep, dev):
        a.free()
    for i, slot in enumerate(order):
        at = int(slot) * (row + gap)
        got = host[at:at + row].reshape(out_h, out_w, 3)
        assert_same(got, nv12_resize(*pictures[i], out_h, out_w), f"batch frame {i}")
        assert (host[at + row:at + row + gap] == 0xA5).all(), f"bytes after row {slot} were written"
    with pytest.raises(ValueError, match="differ in size or pitch"):
        resizer.launch_batch([frames[0], planes(1)], outs[:2], out_h, out_w, stream)


@pytest.mark.gpu
@pytest.mark.parametrize("row_bytes", [3072, 18000, 150531])  # 16-byte steps; and a length that needs bytes
def test_copy_rows_gathers_each_row_and_writes_nothing_else(gpu: tuple, row_bytes: int) -> None:
    import pycuda.driver as cuda

    _, resizer = gpu
    n, gap = 70, 48
    rng = np.random.default_rng(row_bytes)
    src_host = rng.integers(0, 256, n * row_bytes, dtype=np.uint8)
    src = cuda.to_device(src_host)
    dst_host = np.full(n * (row_bytes + gap) + 1, 0xA5, np.uint8)
    dst = cuda.to_device(dst_host)
    order = rng.permutation(n)
    # an odd row size also puts every other destination off 16-byte alignment: the byte path
    srcs = [int(src) + i * row_bytes for i in range(n)]
    dsts = [int(dst) + int(k) * (row_bytes + gap) + (1 if row_bytes % 2 else 0) for k in order]
    stream = cuda.Stream()
    resizer.copy_rows(srcs, dsts, row_bytes, stream)
    stream.synchronize()
    cuda.memcpy_dtoh(dst_host, dst)
    src.free()
    dst.free()
    shift = 1 if row_bytes % 2 else 0
    written = np.zeros(dst_host.size, bool)
    for i, k in enumerate(order):
        at = int(k) * (row_bytes + gap) + shift
        assert np.array_equal(dst_host[at:at + row_bytes], src_host[i * row_bytes:(i + 1) * row_bytes]), \
            f"row {i} → {k}"
        written[at:at + row_bytes] = True
    assert (dst_host[~written] == 0xA5).all(), "bytes outside the rows were written"
