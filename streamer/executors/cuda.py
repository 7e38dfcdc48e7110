"""The CUDA executor: N slots of pinned host + device buffers, each with its own stream and event (pycuda).

``submit`` queues, on the slot's stream, H2D of ``count`` rows (unless the producer already filled the device
input: ``input_on_device``) → ``engine.enqueue(slot, count)`` → D2H of ``count`` rows → event record, and
returns at once; ``collect`` hands slots back in submission order, waiting on each one's event (a
blocking-sync event: the waiting thread sleeps instead of spinning). With 2+ slots the batcher fills one slot
while another is on the GPU.

Contexts: pycuda runs on the device's *primary* context (:mod:`streamer.gpu.context`), the one the CUDA
runtime (PyTorch, TensorRT) and NVDEC use, so an engine's kernels can run on these streams over these buffers;
every entry point here pushes it for the calling thread (the batcher thread submits, a results thread
collects) and pops it afterwards.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from streamer.errors import ConfigError
from streamer.executors.base import Executor
from streamer.executors.contract import CudaEngine, CudaSlot
from streamer.gpu.context import STREAM_NON_BLOCKING, PrimaryContext, driver

log = logging.getLogger(__name__)

_POLL_MAX_S = 100e-6  # longest nap between event queries when collect() has a timeout


class _LaunchedSlot(CudaSlot):
    """A CUDA slot plus this executor's own bookkeeping (when it was submitted, whether it was launched)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.launched = threading.Event()  # set once _launch has recorded (or failed) this batch
        self.submitted_at = 0.0

    def reset(self) -> None:
        super().reset()
        self.launched.clear()


def _make_slot(cuda: Any, index: int, max_batch: int, sample_shape: tuple[int, ...], input_dtype: np.dtype,
               num_classes: int) -> _LaunchedSlot:
    import pycuda.gpuarray as gpuarray

    device_input = gpuarray.empty((max_batch, *sample_shape), input_dtype)
    device_output = gpuarray.empty((max_batch, num_classes), np.float32)
    # zeroed (a memset: gpuarray.zeros would compile a fill kernel with nvcc): rows past a partial batch that
    # an engine computes anyway (padded CUDA-graph buckets) then never hold NaN garbage
    cuda.memset_d8(device_input.gpudata, 0, device_input.nbytes)
    cuda.memset_d8(device_output.gpudata, 0, device_output.nbytes)
    return _LaunchedSlot(
        index,
        cuda.pagelocked_empty((max_batch, *sample_shape), input_dtype),
        cuda.pagelocked_empty((max_batch, num_classes), np.float32),
        device_input=device_input, device_output=device_output,
        stream=cuda.Stream(STREAM_NON_BLOCKING),
        event=cuda.Event(cuda.event_flags.DISABLE_TIMING | cuda.event_flags.BLOCKING_SYNC),
    )


class CudaExecutor(Executor[_LaunchedSlot]):
    """Runs a CUDA engine over ``num_slots`` double-buffered slots on GPU ``device_index``."""

    def __init__(self, engine: CudaEngine, max_batch: int, num_slots: int = 2, device_index: int = 0) -> None:
        if num_slots < 1:
            raise ValueError("num_slots must be >= 1")
        if max_batch > engine.max_batch:
            raise ConfigError(f"executor batch {max_batch} exceeds the engine's max batch {engine.max_batch}",
                              "load the engine with a larger max_batch")
        self._cuda = driver()
        self.context = PrimaryContext.get(device_index)
        self.engine = engine
        spec = engine.batch_spec
        with self.context.active():
            slots = [_make_slot(self._cuda, i, max_batch, spec.sample_shape, spec.input_dtype,
                                spec.num_classes) for i in range(num_slots)]
            engine.prepare(slots)
        super().__init__(max_batch, slots)

    def _launch(self, slot: _LaunchedSlot) -> None:
        cuda = self._cuda
        n = slot.count
        slot.submitted_at = time.perf_counter()
        try:
            with self.context.active():
                if not slot.input_on_device:
                    cuda.memcpy_htod_async(slot.device_input.gpudata, slot.host_input[:n], slot.stream)
                self.engine.enqueue(slot, n)
                cuda.memcpy_dtoh_async(slot.host_output[:n], slot.device_output.gpudata, slot.stream)
                slot.event.record(slot.stream)
        except Exception as exc:  # reported through collect(); the executor keeps running
            slot.error = exc
            self._drain(slot)  # nothing of this batch may still read the host buffer when it is reused
        finally:
            slot.launched.set()

    def _drain(self, slot: _LaunchedSlot) -> None:
        try:
            with self.context.active():
                slot.stream.synchronize()
        except Exception as exc:
            log.error("slot %d: its CUDA stream failed to synchronise (%s: %s)", slot.index,
                      type(exc).__name__, exc)

    def _wait_done(self, slot: _LaunchedSlot, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        if not slot.launched.wait(timeout):
            return False
        if slot.error is None:
            with self.context.active():
                if deadline is None:
                    slot.event.synchronize()
                else:  # a bounded wait: the driver has no timed event wait, so query with short naps
                    nap = 10e-6
                    while not slot.event.query():
                        if time.monotonic() >= deadline:
                            return False
                        time.sleep(nap)
                        nap = min(nap * 2, _POLL_MAX_S)
        slot.engine_s = time.perf_counter() - slot.submitted_at
        return True

    def _shutdown(self) -> None:
        with self.context.active():
            for slot in self.slots:
                self._drain(slot)
            self.engine.release(self.slots)
            for slot in self.slots:
                slot.engine_state = None
                slot.device_input.gpudata.free()
                slot.device_output.gpudata.free()
