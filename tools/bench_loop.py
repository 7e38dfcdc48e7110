"""The one loop that drives an executor in the benchmarks, the way the pipeline does.

A producer thread acquires a free slot, fills ``batch`` rows of its host input and submits it; the calling
thread collects the oldest batch, copies its results out of the slot (the top-1 of every row, into a
checksum) and releases it. With 2+ slots the producer fills one while another runs: the double-buffering
the figures are about.

``collect`` is called without a timeout, only once the producer has submitted the batch it returns: it then
waits on the batch's completion (a CUDA event, a worker's condition) instead of polling, as the pipeline's
results thread does. A wedged GPU therefore hangs the loop: the GPU scripts bound every step with
``timeout``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from bench_common import Record, cpu_seconds

from streamer.executors.base import Executor

Fill = Callable[[np.ndarray, int], None]  # (the slot's host input rows 0..batch-1, batch number) → fill them

ACQUIRE_WAIT_S = 0.5  # the producer looks at the stop flag this often while every slot is busy
SUBMIT_WAIT_S = 60.0  # the longest a producer may take to fill and submit one batch


@dataclass(frozen=True)
class LoopStats(Record):
    """What :func:`drive` measured, after the warm-up batches."""

    batch: int
    slots: int
    batches: int
    seconds: float
    cpu_s: float  # this process, every thread (the engine's own threads on a CPU)
    engine_s: float  # the sum of the batches' time in the engine (CUDA: submit → completion)
    checksum: float  # sum of every row's top-1 index: the results were read out of the slots

    DERIVED: ClassVar[tuple[str, ...]] = ("images_per_s", "ms_per_batch", "engine_ms_per_batch",
                                          "cpu_ms_per_image")

    def __post_init__(self) -> None:
        if self.batch < 1 or self.slots < 1 or self.batches < 1:
            raise ValueError(f"bad loop: batch {self.batch}, slots {self.slots}, batches {self.batches}")
        if self.seconds <= 0 or self.cpu_s < 0 or self.engine_s < 0:
            raise ValueError(f"bad loop times: {self.seconds} s, CPU {self.cpu_s}, engine {self.engine_s}")

    @property
    def images(self) -> int:
        return self.batches * self.batch

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds

    @property
    def ms_per_batch(self) -> float:
        return 1e3 * self.seconds / self.batches

    @property
    def engine_ms_per_batch(self) -> float:
        return 1e3 * self.engine_s / self.batches

    @property
    def cpu_ms_per_image(self) -> float:
        return 1e3 * self.cpu_s / self.images


class _Producer(threading.Thread):
    """Acquires, fills and submits batches until ``total`` (None: until stopped)."""

    def __init__(self, ex: Executor[Any], batch: int, fill: Fill | None, total: int | None) -> None:
        super().__init__(name="bench-producer", daemon=True)
        self.ex, self.batch, self.fill, self.total = ex, batch, fill, total
        self.stop = threading.Event()
        self.submitted = 0
        self.error: BaseException | None = None
        self.finished = False
        self._cond = threading.Condition()

    def run(self) -> None:
        try:
            while not self.stop.is_set() and (self.total is None or self.submitted < self.total):
                slot = self.ex.acquire(timeout=ACQUIRE_WAIT_S)
                if slot is None:
                    continue
                if self.stop.is_set():
                    self.ex.release(slot)
                    break
                if self.fill is not None:
                    self.fill(slot.host_input[:self.batch], self.submitted)
                slot.count = self.batch
                self.ex.submit(slot)
                with self._cond:
                    self.submitted += 1
                    self._cond.notify_all()
        except BaseException as exc:  # handed to the consumer, which raises it
            self.error = exc
        finally:
            with self._cond:
                self.finished = True
                self._cond.notify_all()

    def wait_submitted(self, n: int) -> None:
        """Block until ``n`` batches were submitted; raise if the producer failed or stopped short."""
        with self._cond:
            self._cond.wait_for(lambda: self.submitted >= n or self.finished, SUBMIT_WAIT_S)
            if self.submitted >= n:
                return
        if self.error is not None:
            raise RuntimeError(f"the producer failed before batch {n - 1}") from self.error
        raise TimeoutError(f"batch {n - 1} was not submitted within {SUBMIT_WAIT_S:.0f} s")


def drive(ex: Executor[Any], batch: int, *, fill: Fill | None = None, warmup: int = 3, batches: int = 0,
          seconds: float = 0.0, min_batches: int = 5) -> LoopStats:
    """Run ``warmup`` batches of ``batch`` rows, then measure ``batches`` batches (or, with ``batches`` 0, as
    many as fill ``seconds``, at least ``min_batches``). ``fill`` None: the slots' inputs were staged before
    (every slot of ``ex.slots``) and are run as they are. Raises on a failed batch."""
    if batch > ex.max_batch:
        raise ValueError(f"batch {batch} exceeds the executor's {ex.max_batch}")
    if batches <= 0 and seconds <= 0:
        raise ValueError("give a number of batches or a time to measure for")
    producer = _Producer(ex, batch, fill, warmup + batches if batches > 0 else None)
    producer.start()
    collected = measured = 0
    engine_s = checksum = 0.0
    t0 = c0 = 0.0
    try:
        while True:
            if collected == warmup and measured == 0:
                t0, c0 = time.perf_counter(), cpu_seconds()
            if collected >= warmup and (measured >= batches if batches > 0 else
                                        measured >= min_batches and time.perf_counter() - t0 >= seconds):
                break
            producer.wait_submitted(collected + 1)
            done = ex.collect()
            if done is None:
                raise RuntimeError("the executor closed while batches were in flight")
            collected += 1
            try:
                if done.error is not None:
                    raise RuntimeError(f"batch {done.seq} failed in the engine") from done.error
                checksum += float(done.host_output[:done.count].argmax(axis=1).sum())
                if collected > warmup:
                    measured += 1
                    engine_s += done.engine_s
            finally:
                ex.release(done)
        elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    finally:
        producer.stop.set()
        producer.join(SUBMIT_WAIT_S)
        while collected < producer.submitted:  # what is still in flight, so that the executor closes clean
            done = ex.collect()
            if done is None:
                break
            collected += 1
            ex.release(done)
    return LoopStats(batch, ex.num_slots, measured, elapsed, cpu, engine_s, checksum)
