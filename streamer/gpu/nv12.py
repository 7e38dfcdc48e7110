"""NV12 → BGR + resize on the device, straight into a batch row: the GPU twin of ``preprocess.resize_into``.

The kernel (``nv12_resize.cu``; its PTX beside it is committed and loaded with
``pycuda.driver.module_from_buffer``, so the driver compiles it for the GPU at run time and no CUDA compiler
is needed) converts and resizes in one pass, bit-exact with the CPU path the model was validated with
(OpenCV's FFmpeg decode, swscale's fixed-point yuv2rgb, then ``resize_into``'s cv2.resize calls; the .cu
header says what is reproduced). ``launch`` converts one picture; ``launch_batch`` up to 64 pictures of one
size per launch. Rebuild the PTX after editing the source: ``nvcc -ptx -arch=compute_75 -O3 -o
streamer/gpu/nv12_resize.ptx streamer/gpu/nv12_resize.cu`` (compute_75: any GPU from Turing on).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PTX_PATH = Path(__file__).with_name("nv12_resize.ptx")
KERNEL = "nv12_to_bgr_resize"
BATCH_KERNEL = "nv12_to_bgr_resize_batch"
COPY_KERNEL = "copy_rows"
COPY_BLOCK = (256, 1, 1)
BLOCK = (16, 8, 1)
MAX_BATCH_FRAMES = 64  # the kernel's FrameBatch holds this many pictures
COEFFICIENTS_FORMAT = "iiiiii"  # the kernels' scalar tail: ColorMatrix.kernel_args()


def _round_to_int16(f: int) -> int:
    """swscale's roundToInt16: a 16.16 fixed-point value rounded (half up, floor shift) and saturated."""
    r = (f + (1 << 15)) >> 16
    return -0x8000 if r < -0x7FFF else min(r, 0x7FFF)


@dataclass(frozen=True)
class ColorMatrix:
    """Y'CbCr → R'G'B': ``y' = (Y - y_offset) * y_scale``, then the chroma terms (U, V centred on 128).

    The kernel computes in swscale's fixed point (:meth:`sws_coefficients`), derived from these as swscale
    derives its own from its coefficient table, so each matrix converts exactly as OpenCV's decoder does."""

    name: str
    y_scale: float
    y_offset: float
    r_v: float
    g_u: float
    g_v: float
    b_u: float

    # the kernels' scalar tail, computed once: a live NVDEC source launches a kernel per frame
    _kernel_args: tuple[np.int32, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (self.y_scale > 0 and 0 <= self.y_offset < 128):
            raise ValueError(f"bad colour matrix {self}")
        object.__setattr__(self, "_kernel_args", tuple(np.int32(v) for v in self.sws_coefficients()))

    @property
    def full_range(self) -> bool:
        return self.y_offset == 0

    def sws_coefficients(self) -> tuple[int, int, int, int, int, int]:
        """(y_coeff, y_offset, v2r, u2g, v2g, u2b): swscale's int16 yuv2rgb constants for this matrix (its
        ``ff_yuv2rgb_c_init_tables`` at neutral brightness/contrast/saturation): the chroma table is
        round(2^16 x the limited-range coefficient) (``ff_yuv2rgb_coeffs``), scaled by 224/255 (truncated) for
        full range; luma 2^16 x 255/219 (truncated) or 2^16; each then rounded to 2^13 (luma offset: 2^3)."""
        chroma_scale = 1.0 if not self.full_range else 255 / 224  # back to the limited-range table entry
        table = [round(65536 * c * chroma_scale) for c in (self.r_v, self.b_u, -self.g_u, -self.g_v)]
        if self.full_range:
            table = [v * 224 // 255 for v in table]  # (all positive: C's division toward zero)
            cy, oy = 1 << 16, 0
        else:
            cy, oy = (1 << 16) * 255 // 219, 16 << 16
        crv, cbu, cgu, cgv = table[0], table[1], -table[2], -table[3]
        y_coeff, v2r, u2g, v2g, u2b = (_round_to_int16(c * (1 << 13)) for c in (cy, crv, cgu, cgv, cbu))
        return y_coeff, _round_to_int16(oy * (1 << 3)), v2r, u2g, v2g, u2b

    def kernel_args(self) -> tuple[np.int32, ...]:
        """:meth:`sws_coefficients` as the kernels take them (COEFFICIENTS_FORMAT)."""
        return self._kernel_args


def _matrix(name: str, kr: float, kb: float, full_range: bool) -> ColorMatrix:
    kg = 1.0 - kr - kb
    y_scale, y_offset, c_scale = (1.0, 0.0, 1.0) if full_range else (255 / 219, 16.0, 255 / 224)
    return ColorMatrix(name, y_scale, y_offset, r_v=2 * (1 - kr) * c_scale,
                       g_u=-2 * (1 - kb) * kb / kg * c_scale, g_v=-2 * (1 - kr) * kr / kg * c_scale,
                       b_u=2 * (1 - kb) * c_scale)


BT601_LIMITED = _matrix("bt601", 0.299, 0.114, False)  # swscale's default: what OpenCV's decoder gives
BT709_LIMITED = _matrix("bt709", 0.2126, 0.0722, False)
MATRICES = {m.name: m for m in (BT601_LIMITED, BT709_LIMITED)}


@dataclass(frozen=True)
class Nv12Planes:
    """Where one NV12 picture lies in device memory: luma plane, then chroma (U, V interleaved, half size)."""

    y_ptr: int
    y_pitch: int
    uv_ptr: int
    uv_pitch: int
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.width < 2 or self.height < 2 or self.y_pitch < self.width or self.uv_pitch < self.width:
            raise ValueError(f"bad NV12 layout {self}")


class Nv12Resizer:
    """The compiled kernels in one CUDA context: ``launch`` queues one frame → one output row on a stream,
    ``launch_batch`` many frames of one size → their rows, up to 64 per launch; ``copy_rows`` gathers rows
    made elsewhere into a batch, up to 64 per launch."""

    _instances: dict[int, Nv12Resizer] = {}  # noqa: RUF012 - one module per context
    _lock = threading.Lock()

    def __init__(self) -> None:
        import pycuda.driver as cuda

        self._module = cuda.module_from_buffer(PTX_PATH.read_bytes())
        self._fn = self._module.get_function(KERNEL)
        # y, y_pitch, uv, uv_pitch, src_w, src_h, out, out_w, out_h, then the colour coefficients
        self._fn.prepare("PiPiiiPii" + COEFFICIENTS_FORMAT)
        self._batch_fn = self._module.get_function(BATCH_KERNEL)
        # FrameBatch (64 luma, 64 chroma, 64 output pointers), y_pitch, uv_pitch, src_w, src_h, out_w, out_h
        n = MAX_BATCH_FRAMES
        self._batch_fn.prepare(f"{n}P{n}P{n}Piiiiii" + COEFFICIENTS_FORMAT)
        self._copy_fn = self._module.get_function(COPY_KERNEL)
        self._copy_fn.prepare(f"{n}P{n}Pi")  # RowCopies (64 source, 64 destination pointers), row bytes

    @classmethod
    def get(cls, context_handle: int) -> Nv12Resizer:
        """The kernel loaded into the context ``context_handle`` (which the calling thread has current)."""
        with cls._lock:
            if context_handle not in cls._instances:
                cls._instances[context_handle] = cls()
            return cls._instances[context_handle]

    def launch(self, src: Nv12Planes, out_ptr: int, out_h: int, out_w: int, stream: Any,
               matrix: ColorMatrix = BT601_LIMITED) -> None:
        grid = ((out_w + BLOCK[0] - 1) // BLOCK[0], (out_h + BLOCK[1] - 1) // BLOCK[1])
        self._fn.prepared_async_call(grid, BLOCK, stream, src.y_ptr, src.y_pitch, src.uv_ptr, src.uv_pitch,
                                     src.width, src.height, out_ptr, out_w, out_h, *matrix.kernel_args())

    def launch_batch(self, frames: Sequence[Nv12Planes], outs: Sequence[int], out_h: int, out_w: int,
                     stream: Any, matrix: ColorMatrix = BT601_LIMITED) -> None:
        """Queue ``frames[i]`` → the (out_h, out_w, 3) row at ``outs[i]``, 64 frames per launch."""
        for args in batch_launch_args(frames, outs, out_h, out_w, matrix):
            grid, params = args
            self._batch_fn.prepared_async_call(grid, BLOCK, stream, *params)


    def copy_rows(self, srcs: Sequence[int], dsts: Sequence[int], row_bytes: int, stream: Any) -> None:
        """Queue the copy of ``row_bytes`` from each ``srcs[i]`` to ``dsts[i]`` (device addresses), 64 rows
        per launch: one launch where a copy call per row would cost a driver call and an interpreter-lock
        hand-over each."""
        for grid, params in copy_launch_args(srcs, dsts, row_bytes):
            self._copy_fn.prepared_async_call(grid, COPY_BLOCK, stream, *params)


def copy_launch_args(srcs: Sequence[int], dsts: Sequence[int], row_bytes: int
                     ) -> list[tuple[tuple[int, int, int], tuple[int, ...]]]:
    """(grid, kernel parameters) of each ``copy_rows`` launch: at most 64 rows each, pointers padded
    with 0."""
    if len(srcs) != len(dsts):
        raise ValueError(f"copy_rows: {len(srcs)} sources but {len(dsts)} destinations")
    if row_bytes < 1:
        raise ValueError(f"copy_rows: bad row size {row_bytes}")
    steps = (row_bytes + 15) // 16  # a thread copies 16 bytes per step
    grid_x = max(1, min(32, (steps + COPY_BLOCK[0] - 1) // COPY_BLOCK[0]))
    pad = [0] * MAX_BATCH_FRAMES
    launches = []
    for start in range(0, len(srcs), MAX_BATCH_FRAMES):
        n = len(srcs[start:start + MAX_BATCH_FRAMES])
        params = (*[int(p) for p in srcs[start:start + n]], *pad[n:],
                  *[int(p) for p in dsts[start:start + n]], *pad[n:], row_bytes)
        launches.append(((grid_x, n, 1), params))
    return launches


def batch_launch_args(frames: Sequence[Nv12Planes], outs: Sequence[int], out_h: int, out_w: int,
                      matrix: ColorMatrix) -> list[tuple[tuple[int, int, int], tuple[Any, ...]]]:
    """(grid, kernel parameters) of each ``nv12_to_bgr_resize_batch`` launch for these frames: at most 64
    frames each, the pointer arrays padded with 0. The frames must share size and pitches."""
    if len(frames) != len(outs):
        raise ValueError(f"launch_batch: {len(frames)} frames but {len(outs)} outputs; "
                         "pass one output pointer per frame")
    if not frames:
        return []
    first = frames[0]
    layout = (first.width, first.height, first.y_pitch, first.uv_pitch)
    for f in frames[1:]:
        if (f.width, f.height, f.y_pitch, f.uv_pitch) != layout:
            raise ValueError(f"launch_batch: frames differ in size or pitch ({f} vs {first}); "
                             "launch each layout separately")
    if out_h < 1 or out_w < 1:
        raise ValueError(f"launch_batch: bad output size {out_w}x{out_h}")
    grid_xy = ((out_w + BLOCK[0] - 1) // BLOCK[0], (out_h + BLOCK[1] - 1) // BLOCK[1])
    pad = [0] * MAX_BATCH_FRAMES
    launches = []
    for start in range(0, len(frames), MAX_BATCH_FRAMES):
        chunk = frames[start:start + MAX_BATCH_FRAMES]
        n = len(chunk)
        ys = [f.y_ptr for f in chunk] + pad[n:]
        uvs = [f.uv_ptr for f in chunk] + pad[n:]
        dsts = [int(o) for o in outs[start:start + n]] + pad[n:]
        params = (*ys, *uvs, *dsts, first.y_pitch, first.uv_pitch, first.width, first.height, out_w, out_h,
                  *matrix.kernel_args())
        launches.append(((grid_xy[0], grid_xy[1], n), params))
    return launches
