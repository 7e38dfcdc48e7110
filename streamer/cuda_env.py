"""GPU detection without torch or pycuda: the CUDA driver library through ctypes.

Backend probes call this before importing anything heavy, so ``--backend auto`` on a CPU-only machine costs
a failed ``dlopen`` and nothing more. The answer is cached for the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from dataclasses import dataclass

_DEVICE_ATTRIBUTE_CC_MAJOR = 75  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
_DEVICE_ATTRIBUTE_CC_MINOR = 76


@dataclass(frozen=True)
class GpuInfo:
    """One CUDA device as the driver reports it."""

    index: int
    name: str
    compute_capability: tuple[int, int]
    total_memory: int  # bytes
    driver_version: int  # e.g. 13000 for CUDA 13.0

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"bad device index {self.index}")
        if len(self.compute_capability) != 2 or self.compute_capability[0] <= 0:
            raise ValueError(f"bad compute capability {self.compute_capability}")

    @property
    def cc_string(self) -> str:
        """``"9.0"`` for an H100."""
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"


@dataclass(frozen=True)
class CudaProbe:
    """The result of looking for a GPU: ``gpus`` empty and ``reason`` set when there is none."""

    gpus: tuple[GpuInfo, ...]
    reason: str | None = None

    def __post_init__(self) -> None:
        if not self.gpus and not self.reason:
            raise ValueError("a probe without GPUs must say why")


def _load_driver() -> ctypes.CDLL | None:
    names = ["libcuda.so.1", "libcuda.so", ctypes.util.find_library("cuda")]
    for name in names:
        if not name:
            continue
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


@functools.lru_cache(maxsize=1)
def probe_cuda() -> CudaProbe:
    """Ask the driver for its devices (cached). Honors ``CUDA_VISIBLE_DEVICES`` like every CUDA program."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return CudaProbe((), "CUDA_VISIBLE_DEVICES hides every GPU")
    lib = _load_driver()
    if lib is None:
        return CudaProbe((), "no CUDA driver (libcuda.so.1 not found): no NVIDIA GPU on this machine")
    rc = lib.cuInit(0)
    if rc != 0:
        return CudaProbe((), f"CUDA driver present but cuInit failed (CUresult {rc}): no usable GPU")
    count = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return CudaProbe((), "CUDA driver reports no devices")
    version = ctypes.c_int(0)
    lib.cuDriverGetVersion(ctypes.byref(version))
    gpus = []
    for i in range(count.value):
        dev = ctypes.c_int(0)
        if lib.cuDeviceGet(ctypes.byref(dev), i) != 0:
            continue
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        lib.cuDeviceGetAttribute(ctypes.byref(major), _DEVICE_ATTRIBUTE_CC_MAJOR, dev)
        lib.cuDeviceGetAttribute(ctypes.byref(minor), _DEVICE_ATTRIBUTE_CC_MINOR, dev)
        name = ctypes.create_string_buffer(256)
        lib.cuDeviceGetName(name, 256, dev)
        total = ctypes.c_size_t(0)
        lib.cuDeviceTotalMem_v2(ctypes.byref(total), dev)
        gpus.append(GpuInfo(i, name.value.decode(errors="replace"), (major.value, minor.value),
                            total.value, version.value))
    if not gpus:
        return CudaProbe((), "CUDA driver lists devices but none could be opened")
    return CudaProbe(tuple(gpus))


def gpu_info(index: int = 0) -> GpuInfo | None:
    """The device at ``index``, or None without one."""
    gpus = probe_cuda().gpus
    return gpus[index] if index < len(gpus) else None


def no_gpu_reason() -> str | None:
    """None when a CUDA GPU is present, else why not (for backend probes)."""
    return probe_cuda().reason


def pycuda_reason() -> str | None:
    """None when pycuda imports, else why not (the CUDA executor needs it)."""
    try:
        import pycuda.driver  # noqa: F401
    except ImportError as exc:
        return f"pycuda is not installed ({exc}); pip install 'streamer[cuda]'"
    except Exception as exc:  # pycuda raises its own errors when the driver is missing or too old
        return f"pycuda does not load ({type(exc).__name__}: {exc})"
    return None


def memory_info(index: int = 0) -> tuple[int, int] | None:
    """(free, total) bytes of device ``index`` as the driver sees it (every process's use counted), or None
    without a GPU. Goes through the device's primary context (retained for the call: the one the backends
    use), so it is cheap while a backend runs and safe from any thread."""
    if probe_cuda().reason is not None:
        return None
    lib = _load_driver()
    if lib is None:
        return None
    dev, ctx, popped = ctypes.c_int(0), ctypes.c_void_p(), ctypes.c_void_p()
    free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
    if lib.cuDeviceGet(ctypes.byref(dev), index) != 0:
        return None
    if lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev) != 0:
        return None
    try:
        if lib.cuCtxPushCurrent_v2(ctx) != 0:
            return None
        try:
            ok = lib.cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total)) == 0
        finally:
            lib.cuCtxPopCurrent_v2(ctypes.byref(popped))
    finally:
        lib.cuDevicePrimaryCtxRelease_v2(dev)
    return (free.value, total.value) if ok else None
