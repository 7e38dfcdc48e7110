"""The CUDA executor: N slots of pinned host + device buffers, each with its own stream and event (pycuda).

``submit`` queues, on the slot's stream, H2D of ``count`` rows → ``backend.enqueue(slot, count)`` → D2H of
``count`` rows → event record, and returns at once; ``collect`` (base class) hands slots back in submission
order once their event has fired. With 2+ slots the batcher fills one slot while another is on the GPU.

Contexts: pycuda runs on the device's *primary* context — the one the CUDA runtime (PyTorch, TensorRT)
uses — so a backend's kernels can run on these streams over these buffers. CUDA keeps the current context
per thread; every entry point here pushes the primary context for the calling thread (the batcher thread
submits, a results thread collects) and pops it afterwards, so no thread is left holding it.
The primary context is retained once per process and never released: CUDA objects freed late (pinned
arrays the garbage collector reaches after ``close``) then never meet a dead context.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from streamer.errors import BackendUnavailableError, ConfigError
from streamer.executors.base import Executor, Slot

if TYPE_CHECKING:
    from streamer.backends.base import Backend

_STREAM_NON_BLOCKING = 1  # CU_STREAM_NON_BLOCKING: no implicit sync with the legacy default stream
_POLL_MAX_S = 100e-6  # longest nap between event queries when collect() has a timeout


def _driver() -> Any:
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
        cuda = _driver()
        cuda.init()
        if device_index >= cuda.Device.count():
            raise ConfigError(f"CUDA device {device_index} does not exist ({cuda.Device.count()} present)",
                              "pick a device index below the count nvidia-smi shows")
        self._cuda = cuda
        self.device = cuda.Device(device_index)
        self.context = self.device.retain_primary_context()
        self._local = threading.local()

    @classmethod
    def get(cls, device_index: int = 0) -> PrimaryContext:
        with cls._lock:
            if device_index not in cls._instances:
                cls._instances[device_index] = cls(device_index)
            return cls._instances[device_index]

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


class CudaSlot(Slot):
    """A slot plus device input/output (``pycuda.gpuarray.GPUArray``: they expose
    ``__cuda_array_interface__``, so PyTorch can wrap them without a copy), a stream and an event."""

    def __init__(self, index: int, max_batch: int, input_shape: tuple[int, ...], input_dtype: np.dtype,
                 num_classes: int) -> None:
        cuda = _driver()
        import pycuda.gpuarray as gpuarray

        host_input = cuda.pagelocked_empty((max_batch, *input_shape), input_dtype)
        host_output = cuda.pagelocked_empty((max_batch, num_classes), np.float32)
        super().__init__(index, host_input, host_output)
        self.device_input = gpuarray.empty((max_batch, *input_shape), input_dtype)
        self.device_output = gpuarray.empty((max_batch, num_classes), np.float32)
        # zeroed (a memset: gpuarray.zeros would compile a fill kernel with nvcc): rows past a partial batch
        # that a backend computes anyway (padded CUDA-graph buckets) then never hold NaN garbage
        cuda.memset_d8(self.device_input.gpudata, 0, self.device_input.nbytes)
        cuda.memset_d8(self.device_output.gpudata, 0, self.device_output.nbytes)
        self.stream = cuda.Stream(_STREAM_NON_BLOCKING)
        self.event = cuda.Event(cuda.event_flags.DISABLE_TIMING)
        self.launched = threading.Event()  # set once _launch has recorded (or failed) this batch
        self.backend_state: Any = None  # per-slot state a backend keeps (TensorRT context, CUDA graphs)

    @property
    def input_ptr(self) -> int:
        return int(self.device_input.gpudata)

    @property
    def output_ptr(self) -> int:
        return int(self.device_output.gpudata)

    def reset(self) -> None:
        super().reset()
        self.launched.clear()

    def free_device(self) -> None:
        self.backend_state = None
        self.device_input.gpudata.free()
        self.device_output.gpudata.free()


class CudaExecutor(Executor):
    """Runs a CUDA backend (``backend.device == "cuda"``) over ``num_slots`` double-buffered slots.

    Backends may define ``prepare_slots(slots)`` (called once here, under the primary context: bind
    tensor addresses, capture CUDA graphs) and ``release_slots(slots)`` (called on close), and may set
    ``input_dtype`` / ``input_shape`` (default uint8, (H, W, 3)) for the slots' input buffers.
    """

    def __init__(self, backend: Backend, max_batch: int, num_slots: int = 2, device_index: int = 0) -> None:
        if backend.device != "cuda":
            raise ConfigError(f"backend {backend.name} runs on {backend.device}, not on the CUDA executor",
                              "use the CPU executor for CPU backends")
        if max_batch > backend.max_batch:
            raise ConfigError(f"executor batch {max_batch} exceeds the backend's max batch "
                              f"{backend.max_batch}", "load the backend with a larger max_batch")
        super().__init__(backend, max_batch, num_slots)
        self._ctx = PrimaryContext.get(device_index)
        h, w = backend.manifest.input_hw
        input_shape = tuple(getattr(backend, "input_shape", (h, w, 3)))
        input_dtype = np.dtype(getattr(backend, "input_dtype", np.uint8))
        with self._ctx.active():
            slots = [CudaSlot(i, max_batch, input_shape, input_dtype, backend.manifest.num_classes)
                     for i in range(num_slots)]
            prepare = getattr(backend, "prepare_slots", None)
            if prepare is not None:
                prepare(slots)
        self._add_slots(list(slots))
        self._cuda = _driver()

    @property
    def context(self) -> PrimaryContext:
        return self._ctx

    def _launch(self, slot: Slot) -> None:
        assert isinstance(slot, CudaSlot)
        cuda = self._cuda
        n = slot.count
        slot.submit_time = time.perf_counter()
        try:
            with self._ctx.active():
                cuda.memcpy_htod_async(slot.device_input.gpudata, slot.host_input[:n], slot.stream)
                self.backend.enqueue(slot, n)
                cuda.memcpy_dtoh_async(slot.host_output[:n], slot.device_output.gpudata, slot.stream)
                slot.event.record(slot.stream)
        except Exception as exc:  # reported through collect(); the executor keeps running
            slot.error = exc
            with contextlib.suppress(Exception), self._ctx.active():
                slot.stream.synchronize()  # nothing of this batch may still read the host buffer
        finally:
            slot.launched.set()

    def _wait_done(self, slot: Slot, timeout: float | None) -> bool:
        assert isinstance(slot, CudaSlot)
        deadline = None if timeout is None else time.monotonic() + timeout
        if not slot.launched.wait(timeout):
            return False
        if slot.error is None:
            with self._ctx.active():
                if deadline is None:
                    slot.event.synchronize()
                else:
                    nap = 10e-6
                    while not slot.event.query():
                        if time.monotonic() >= deadline:
                            return False
                        time.sleep(nap)
                        nap = min(nap * 2, _POLL_MAX_S)
        slot.done_time = time.perf_counter()
        return True

    def _shutdown(self) -> None:
        slots = [s for s in self.slots if isinstance(s, CudaSlot)]
        with self._ctx.active():
            for slot in slots:
                with contextlib.suppress(Exception):
                    slot.stream.synchronize()
            release = getattr(self.backend, "release_slots", None)
            if release is not None:
                release(slots)
            for slot in slots:
                with contextlib.suppress(Exception):
                    slot.free_device()
