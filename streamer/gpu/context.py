"""The device's primary context, shared by pycuda, the CUDA runtime (PyTorch, TensorRT) and NVDEC.

pycuda runs on the device's *primary* context — the one the CUDA runtime uses — so an engine's kernels can
run on pycuda's streams over pycuda's buffers, and decoded frames can be read by the executor's kernels.
CUDA keeps the current context per thread; ``active()`` pushes the primary context for the calling thread
(re-entrant) and pops it afterwards, so no thread is left holding it. The primary context is retained once
per process and never released: CUDA objects freed late (pinned arrays the garbage collector reaches after a
close) then never meet a dead context.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from streamer.cuda_env import probe_cuda
from streamer.errors import BackendUnavailableError, ConfigError

STREAM_NON_BLOCKING = 1  # CU_STREAM_NON_BLOCKING: a stream that does not synchronise with the legacy stream


def driver() -> Any:
    """``pycuda.driver``, or a one-line error naming the extra to install."""
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise BackendUnavailableError(f"the CUDA executor needs pycuda ({exc})",
                                      "pip install 'streamer[cuda]'") from exc
    return cuda


class PrimaryContext:
    """The device's primary context, pushed per thread on demand (re-entrant)."""

    _instances: dict[int, PrimaryContext] = {}  # noqa: RUF012 - per-process registry
    _lock = threading.Lock()

    def __init__(self, device_index: int) -> None:
        probe_cuda()  # before pycuda's cuInit: devices.cuda_started() then knows CUDA has started here
        cuda = driver()
        cuda.init()
        if device_index >= cuda.Device.count():
            raise ConfigError(f"CUDA device {device_index} does not exist ({cuda.Device.count()} present)",
                              "pick a device index below the count nvidia-smi shows")
        self._cuda = cuda
        self.device_index = device_index
        self.device = cuda.Device(device_index)
        self.context = self.device.retain_primary_context()
        self._local = threading.local()

    @classmethod
    def get(cls, device_index: int = 0) -> PrimaryContext:
        with cls._lock:
            if device_index not in cls._instances:
                cls._instances[device_index] = cls(device_index)
            return cls._instances[device_index]

    @property
    def handle(self) -> int:
        """The raw ``CUcontext`` (for libraries that take one, e.g. PyNvVideoCodec)."""
        return int(self.context.handle)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        depth = getattr(self._local, "depth", 0)
        if depth == 0:
            self.context.push()
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth -= 1
            if self._local.depth == 0:
                self._cuda.Context.pop()
