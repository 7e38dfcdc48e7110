"""``--device``: which processor a streamer process runs its engine on.

``auto`` lets the backend choose (the first visible GPU for GPU backends); ``cpu`` keeps the engine on the CPU
(ONNX Runtime); ``cuda`` / ``cuda:N`` use GPU N of the visible ones (``CUDA_VISIBLE_DEVICES`` counts: with
``CUDA_VISIBLE_DEVICES=2,3``, ``cuda:1`` is physical GPU 3).

A process uses one GPU. Choosing it narrows ``CUDA_VISIBLE_DEVICES`` to that one device before CUDA starts in
the process, so PyTorch, TensorRT, NVDEC and pycuda all see it as device 0 and agree without each being told
(the way Ray gives each GPU actor its GPU); the executor and backends then run on ``device_index`` 0.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from streamer.errors import ConfigError

VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"
NVIDIA_PROC = Path("/proc/driver/nvidia/gpus")  # one entry per GPU the driver has, readable without CUDA
DEVICE_HINT = "give auto, cpu, cuda or cuda:N (N: a GPU index, as nvidia-smi numbers them)"
DECODE_CHOICES = ("auto", "cpu", "nvdec")  # --decode: where a source's video is decoded (streamer.sources)
_CUDA = re.compile(r"cuda(?::(\d+))?")


@dataclass(frozen=True)
class Device:
    """A parsed ``--device``: ``kind`` auto | cpu | cuda; ``index`` the GPU among the visible ones."""

    kind: str
    index: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device kind {self.kind!r}")
        if self.index < 0:
            raise ValueError(f"device index {self.index} < 0")

    @property
    def is_gpu(self) -> bool:
        return self.kind == "cuda"

    def __str__(self) -> str:
        return f"cuda:{self.index}" if self.is_gpu else self.kind


def parse_device(text: str, where: str = "--device") -> Device:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` → Device; anything else is a one-line ConfigError."""
    value = text.strip().lower()
    if value in ("auto", "cpu"):
        return Device(value)
    m = _CUDA.fullmatch(value)
    if m is None:
        raise ConfigError(f"{where}: unknown device {text!r}", DEVICE_HINT)
    return Device("cuda", int(m.group(1) or 0))


def visible_gpus() -> list[str] | None:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` names them (indices or UUIDs); else the
    driver's (``/proc/driver/nvidia/gpus``, or NVML: neither starts CUDA); None when neither can be read (no
    NVIDIA driver here, or a container that hides both: then ``cuda:N`` is taken as given and the backend
    reports a GPU that is not there)."""
    env = os.environ.get(VISIBLE_ENV)
    if env is not None:
        names = [part.strip() for part in env.split(",")]
        if "" in names or "-1" in names:  # CUDA stops at the first invalid entry
            names = names[:min(i for i, n in enumerate(names) if n in ("", "-1"))]
        return names
    try:
        count: int | None = len([p for p in NVIDIA_PROC.iterdir() if p.is_dir()])
    except OSError:
        count = _nvml_count()
    return None if count is None else [str(i) for i in range(count)]


def _nvml_count() -> int | None:
    """GPUs NVML sees (the driver's management library: it starts no CUDA context), or None without it."""
    import ctypes

    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    count = ctypes.c_uint(0)
    if nvml.nvmlInit_v2() != 0:
        return None
    try:
        return int(count.value) if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) == 0 else None
    finally:
        nvml.nvmlShutdown()


def cuda_started() -> bool:
    """Whether CUDA has started in this process (a later CUDA_VISIBLE_DEVICES change would be ignored). The
    driver probe is cached once it ran, and every pycuda context (streamer.gpu.context) runs it first."""
    from streamer.cuda_env import probe_cuda

    if probe_cuda.cache_info().currsize:
        return True
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return True
    return "pycuda.autoinit" in sys.modules


def use_device(device: Device, where: str = "--device") -> str | None:
    """Make ``device`` the only GPU this process sees (for ``cuda:N``); returns what it chose, for the log
    (``"cuda:1 = GPU 3 (CUDA_VISIBLE_DEVICES=3)"``), or None for auto/cpu. ConfigError when GPU N is not
    there, or when CUDA already runs in this process on another set of GPUs."""
    if not device.is_gpu:
        return None
    visible = visible_gpus()
    if visible is not None and device.index >= len(visible):
        seen = f"{len(visible)} visible" + (f" ({VISIBLE_ENV}={os.environ[VISIBLE_ENV]})"
                                             if VISIBLE_ENV in os.environ else "")
        raise ConfigError(f"{where} {device}: no such GPU ({seen})",
                          "pick an index below the count, or --device auto / cpu")
    chosen = visible[device.index] if visible is not None else str(device.index)
    if os.environ.get(VISIBLE_ENV) == chosen:
        return f"{device} = GPU {chosen} ({VISIBLE_ENV}={chosen})"
    if cuda_started():
        raise ConfigError(f"{where} {device}: CUDA has already started in this process on "
                          f"{VISIBLE_ENV}={os.environ.get(VISIBLE_ENV, '(all)')}",
                          f"choose the device before anything uses the GPU, or set {VISIBLE_ENV}={chosen}")
    os.environ[VISIBLE_ENV] = chosen
    return f"{device} = GPU {chosen} ({VISIBLE_ENV}={chosen})"
