"""NV12 → BGR + resize on the device, straight into a batch row: the GPU twin of ``preprocess.resize_into``.

The kernel (``nv12_resize.cu``; its PTX beside it is committed and loaded with
``pycuda.driver.module_from_buffer``, so the driver compiles it for the GPU at run time and no CUDA compiler
is needed) converts and resizes in one pass, matching the CPU path the model was validated with: a bilinear
step to 4× the target then a 4×4 box mean when the frame is more than 4× the target, else INTER_AREA. Rebuild
the PTX after editing the source: ``nvcc -ptx -arch=compute_75 -O3 -o streamer/gpu/nv12_resize.ptx
streamer/gpu/nv12_resize.cu`` (compute_75: any GPU from Turing on).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PTX_PATH = Path(__file__).with_name("nv12_resize.ptx")
KERNEL = "nv12_to_bgr_resize"
BLOCK = (16, 8, 1)


@dataclass(frozen=True)
class ColorMatrix:
    """Y'CbCr → R'G'B': ``y' = (Y - y_offset) * y_scale``, then the chroma terms (U, V centred on 128)."""

    name: str
    y_scale: float
    y_offset: float
    r_v: float
    g_u: float
    g_v: float
    b_u: float

    def __post_init__(self) -> None:
        if not (self.y_scale > 0 and 0 <= self.y_offset < 128):
            raise ValueError(f"bad colour matrix {self}")

    def args(self) -> tuple[np.float32, ...]:
        return tuple(np.float32(v) for v in (self.y_scale, self.y_offset, self.r_v, self.g_u, self.g_v,
                                             self.b_u))


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
    """The compiled kernel in one CUDA context; ``launch`` queues one frame → one output row on a stream."""

    _instances: dict[int, Nv12Resizer] = {}  # noqa: RUF012 - one module per context
    _lock = threading.Lock()

    def __init__(self) -> None:
        import pycuda.driver as cuda

        self._module = cuda.module_from_buffer(PTX_PATH.read_bytes())
        self._fn = self._module.get_function(KERNEL)
        # pointer, int, pointer, int, int, int, pointer, int, int, 6 floats
        self._fn.prepare("PiPiiiPiiffffff")

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
                                     src.width, src.height, out_ptr, out_w, out_h, *matrix.args())
