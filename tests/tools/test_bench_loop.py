"""The benchmarks' executor-driving loop (tools/bench_loop.py) on the real CPU executor (what a CPU backend's
``make_executor`` gives): every batch it submits is collected, copied out and released, a failed batch
raises, and nothing is left in flight."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from bench_loop import LoopStats, drive

from streamer.backends.base import CpuBackend
from streamer.model.manifest import ModelManifest

MANIFEST = ModelManifest(name="argmax", labels=("a", "b", "c"), input_hw=(2, 2), mean=(0, 0, 0),
                         std=(1, 1, 1))


class RowBackend(CpuBackend):
    """Scores one-hot on (the first pixel's blue value mod 3); remembers every batch's first pixels."""

    name = "rows"

    def __init__(self, fail_on: int | None = None, delay_s: float = 0.0) -> None:
        super().__init__(MANIFEST, max_batch=8)
        self.calls = 0
        self.fail_on = fail_on
        self.delay_s = delay_s
        self.seen: list[int] = []
        self._lock = threading.Lock()

    def infer(self, images: np.ndarray, out: np.ndarray) -> None:
        with self._lock:
            call = self.calls
            self.calls += 1
            self.seen.append(int(images[0, 0, 0, 0]))
        if call == self.fail_on:
            raise RuntimeError(f"boom {call}")
        if self.delay_s:
            threading.Event().wait(self.delay_s)
        out[:] = 0.0
        out[np.arange(len(images)), images[:, 0, 0, 0] % 3] = 1.0


def _fill(dst: np.ndarray, i: int) -> None:
    dst[:] = i


def test_a_counted_run_collects_every_batch_in_order() -> None:
    backend = RowBackend()
    with backend.make_executor(4, 2) as ex:
        stats = drive(ex, 4, fill=_fill, warmup=3, batches=10)
        assert ex.in_flight == 0
    assert isinstance(stats, LoopStats)
    assert (stats.batch, stats.batches, stats.slots) == (4, 10, 2)
    assert backend.seen == list(range(13))  # warm-up + measured, each filled once, in order
    # every row's top-1 came out of the slot: batch i's rows are all class i % 3
    assert stats.checksum == sum(4 * (i % 3) for i in range(13))
    assert stats.images_per_s == pytest.approx(40 / stats.seconds)
    assert stats.engine_s > 0 and stats.cpu_s >= 0


def test_a_timed_run_drains_what_is_in_flight() -> None:
    backend = RowBackend(delay_s=0.002)
    with backend.make_executor(4, 3) as ex:
        stats = drive(ex, 2, fill=_fill, warmup=2, seconds=0.05, min_batches=4)
        assert ex.in_flight == 0
        assert ex.acquire(timeout=0.5) is not None  # every slot went back to the free list
    assert stats.batches >= 4 and stats.seconds >= 0.05
    assert backend.calls >= 2 + stats.batches


def test_staged_inputs_run_as_they_are() -> None:
    backend = RowBackend()
    with backend.make_executor(4, 2) as ex:
        for slot in ex.slots:
            slot.host_input[:] = 7
        stats = drive(ex, 4, warmup=0, batches=5)
    assert set(backend.seen) == {7} and stats.checksum == 5 * 4 * (7 % 3)


def test_a_failed_batch_raises_and_leaves_nothing_in_flight() -> None:
    backend = RowBackend(fail_on=4)
    with backend.make_executor(4, 2) as ex:
        with pytest.raises(RuntimeError, match="failed in the engine") as info:
            drive(ex, 4, fill=_fill, warmup=1, batches=10)
        assert "boom 4" in str(info.value.__cause__)
        assert ex.in_flight == 0


def test_a_failing_fill_raises() -> None:
    def fill(dst: np.ndarray, i: int) -> None:
        if i == 2:
            raise ValueError("bad frame")
        dst[:] = i

    with RowBackend().make_executor(4, 2) as ex:
        with pytest.raises(RuntimeError, match="producer failed") as info:
            drive(ex, 4, fill=fill, warmup=1, batches=10)
        assert isinstance(info.value.__cause__, ValueError)
        assert ex.in_flight == 0


def test_bad_arguments_and_figures_are_refused() -> None:
    with RowBackend().make_executor(4, 2) as ex:
        with pytest.raises(ValueError, match="exceeds"):
            drive(ex, 5, batches=1)
        with pytest.raises(ValueError, match="number of batches or a time"):
            drive(ex, 4)
    with pytest.raises(ValueError):
        LoopStats(batch=4, slots=2, batches=0, seconds=1.0, cpu_s=0.0, engine_s=0.0, checksum=0.0)
    with pytest.raises(ValueError):
        LoopStats(batch=4, slots=2, batches=3, seconds=0.0, cpu_s=0.0, engine_s=0.0, checksum=0.0)
