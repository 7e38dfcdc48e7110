"""The CPU executor: plain numpy host slots and one worker thread running ``backend.infer`` on each batch.

With 2+ slots the batcher fills the next slot while the worker runs the previous one (ONNX Runtime releases
the GIL inside ``run``), which is the CPU form of the double-buffering the CUDA executor does with streams.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import TYPE_CHECKING

import numpy as np

from streamer.executors.base import Executor, Slot

if TYPE_CHECKING:
    from streamer.backends.base import Backend

log = logging.getLogger(__name__)


class CpuSlot(Slot):
    """A host slot plus an event the worker sets when the batch is done."""

    def __init__(self, index: int, host_input: np.ndarray, host_output: np.ndarray) -> None:
        super().__init__(index, host_input, host_output)
        self.done = threading.Event()

    def reset(self) -> None:
        super().reset()
        self.done.clear()


class CpuExecutor(Executor):
    """Runs a CPU backend (``backend.infer``) on submitted slots in submission order, on one worker thread."""

    def __init__(self, backend: Backend, max_batch: int, num_slots: int = 2) -> None:
        super().__init__(backend, max_batch, num_slots)
        h, w = backend.manifest.input_hw
        classes = backend.manifest.num_classes
        self._add_slots([
            CpuSlot(i, np.zeros((max_batch, h, w, 3), np.uint8), np.zeros((max_batch, classes), np.float32))
            for i in range(num_slots)
        ])
        self._work: queue.SimpleQueue[CpuSlot | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._run, name="cpu-executor", daemon=True)
        self._worker.start()

    def _launch(self, slot: Slot) -> None:
        assert isinstance(slot, CpuSlot), f"{slot!r} is not one of this executor's slots"
        slot.done.clear()
        slot.submit_time = time.perf_counter()
        self._work.put(slot)

    def _wait_done(self, slot: Slot, timeout: float | None) -> bool:
        assert isinstance(slot, CpuSlot)
        return slot.done.wait(timeout)

    def _run(self) -> None:
        while True:
            slot = self._work.get()
            if slot is None:
                return
            n = slot.count
            try:
                self.backend.infer(slot.host_input[:n], slot.host_output[:n])
            except Exception as exc:  # reported through the slot; the executor keeps going
                slot.error = exc
                log.debug("batch %d failed", slot.seq, exc_info=True)
            slot.done_time = time.perf_counter()
            slot.done.set()

    def _shutdown(self) -> None:
        self._work.put(None)
        self._worker.join(timeout=5.0)
