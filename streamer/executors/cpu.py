"""The CPU executor: plain numpy host slots and worker threads running ``engine.infer`` on the batches.

With 2+ slots the batcher fills the next slot while a worker runs the previous one (ONNX Runtime releases
the GIL inside ``run``), which is the CPU form of the double-buffering the CUDA executor does with streams.

``engine.workers`` > 1 runs that many batches at once (one ONNX Runtime session serves concurrent ``run``
calls). On a small machine two single-threaded runs side by side beat one run on two intra-op threads, and a
run that loses a core to the decoder for a moment only slows itself, where an intra-op barrier would stall
both threads. Results still come back in submission order (``collect`` waits for the oldest slot).
"""

from __future__ import annotations

import logging
import queue
import threading
import time

import numpy as np

from streamer.executors.base import Executor
from streamer.executors.contract import CpuEngine, Slot

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 5.0


class _CpuSlot(Slot):
    """A host slot plus the event its worker sets when the batch is done (private to this executor)."""

    def __init__(self, index: int, host_input: np.ndarray, host_output: np.ndarray) -> None:
        super().__init__(index, host_input, host_output)
        self.done = threading.Event()

    def reset(self) -> None:
        super().reset()
        self.done.clear()


class CpuExecutor(Executor[_CpuSlot]):
    """Runs a CPU engine on submitted slots, on ``engine.workers`` threads."""

    def __init__(self, engine: CpuEngine, max_batch: int, num_slots: int = 2) -> None:
        workers = max(1, engine.workers)
        spec = engine.batch_spec
        super().__init__(max_batch, [
            _CpuSlot(i, np.zeros((max_batch, *spec.sample_shape), spec.input_dtype),
                     np.zeros((max_batch, spec.num_classes), np.float32))
            for i in range(num_slots)
        ])
        self.engine = engine
        self._work: queue.SimpleQueue[_CpuSlot | None] = queue.SimpleQueue()
        self.workers = [threading.Thread(target=self._run, name=f"cpu-executor-{i}", daemon=True)
                        for i in range(workers)]
        for worker in self.workers:
            worker.start()

    def _launch(self, slot: _CpuSlot) -> None:
        self._work.put(slot)

    def _wait_done(self, slot: _CpuSlot, timeout: float | None) -> bool:
        return slot.done.wait(timeout)

    def _run(self) -> None:
        while (slot := self._work.get()) is not None:
            n = slot.count
            start = time.perf_counter()
            try:
                self.engine.infer(slot.host_input[:n], slot.host_output[:n])
            except Exception as exc:  # reported through the slot; the executor keeps going
                slot.error = exc
                log.debug("batch %d failed", slot.seq, exc_info=True)
            slot.engine_s = time.perf_counter() - start
            slot.done.set()

    def _shutdown(self) -> None:
        for _ in self.workers:
            self._work.put(None)
        for worker in self.workers:
            worker.join(timeout=JOIN_TIMEOUT_S)
            if worker.is_alive():
                log.warning("%s still running a batch after %.0f s; leaving it", worker.name, JOIN_TIMEOUT_S)
