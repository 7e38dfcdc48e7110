"""CpuExecutor: slots in flight are never handed out, completion is in submission order, errors stay local."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from streamer_helpers import COLORS

from streamer.backends.base import CpuBackend
from streamer.backends.ort import load
from streamer.executors.cpu import CpuExecutor
from streamer.model.manifest import ModelManifest

MANIFEST = ModelManifest(name="gate", labels=("a", "b"), input_hw=(4, 4), mean=(0, 0, 0), std=(1, 1, 1))


class GatedBackend(CpuBackend):
    """Each infer waits for the test to open its gate, so slots stay in flight as long as the test wants."""

    name = "gated"

    def __init__(self) -> None:
        super().__init__(MANIFEST, max_batch=4)
        self.gates: list[threading.Event] = [threading.Event() for _ in range(16)]
        self.calls = 0
        self.fail_on: set[int] = set()

    def infer(self, images: np.ndarray, out: np.ndarray) -> None:
        call = self.calls
        self.calls += 1
        assert self.gates[call].wait(10.0), "test never opened the gate"
        if call in self.fail_on:
            raise RuntimeError(f"boom {call}")
        out[:, 0] = images[:, 0, 0, 0] / 255.0  # the first pixel's blue value: which rows were run
        out[:, 1] = 1.0 - out[:, 0]


def fill(slot, values: list[int]) -> None:
    for i, v in enumerate(values):
        slot.host_input[i] = v
        slot.tags.append(v)
    slot.count = len(values)


def test_a_slot_in_flight_is_never_handed_out() -> None:
    backend = GatedBackend()
    with CpuExecutor(backend, max_batch=4, num_slots=2) as ex:
        a = ex.acquire(timeout=1.0)
        b = ex.acquire(timeout=1.0)
        assert a is not None and b is not None and a is not b
        fill(a, [10, 20])
        fill(b, [30])
        ex.submit(a)
        ex.submit(b)
        assert ex.in_flight == 2
        assert ex.acquire(timeout=0.05) is None  # both in flight: nothing free
        backend.gates[0].set()
        done = ex.collect(timeout=5.0)
        assert done is a
        assert ex.acquire(timeout=0.05) is None  # collected but not released: still not free
        np.testing.assert_allclose(done.host_output[:2, 0], [10 / 255, 20 / 255], rtol=1e-6)
        ex.release(done)
        again = ex.acquire(timeout=1.0)
        assert again is a and again.count == 0 and again.tags == []  # reset on acquire
        backend.gates[1].set()
        assert ex.collect(timeout=5.0) is b


def test_results_come_back_in_submission_order_and_errors_stay_in_their_slot() -> None:
    backend = GatedBackend()
    backend.fail_on = {1}
    with CpuExecutor(backend, max_batch=4, num_slots=3) as ex:
        slots = [ex.acquire(timeout=1.0) for _ in range(3)]
        for i, slot in enumerate(slots):
            fill(slot, [i + 1])
            ex.submit(slot)
        assert ex.collect(timeout=0.05) is None  # nothing finished yet
        for gate in backend.gates[:3]:
            gate.set()
        got = [ex.collect(timeout=5.0) for _ in range(3)]
        assert [s.seq for s in got] == sorted(s.seq for s in got)
        assert got == slots
        assert got[0].error is None and got[2].error is None
        assert isinstance(got[1].error, RuntimeError)


def test_submit_rejects_empty_or_oversized_batches() -> None:
    with CpuExecutor(GatedBackend(), max_batch=4, num_slots=1) as ex:
        slot = ex.acquire(timeout=1.0)
        with pytest.raises(ValueError):
            ex.submit(slot)
        slot.count = 5
        with pytest.raises(ValueError):
            ex.submit(slot)


def test_close_unblocks_acquire() -> None:
    ex = CpuExecutor(GatedBackend(), max_batch=4, num_slots=1)
    assert ex.acquire(timeout=1.0) is not None
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(ex.acquire(timeout=10.0)), daemon=True)
    t.start()
    ex.close()
    t.join(5.0)
    assert result == [None]


def test_double_buffering_with_onnx_runtime(color_model: Path) -> None:
    backend = load(color_model, max_batch=8)
    with CpuExecutor(backend, max_batch=8, num_slots=2) as ex:
        expected: list[list[int]] = []
        for batch in range(6):
            slot = ex.acquire(timeout=5.0)
            if slot is None or ex.in_flight == 2:
                raise AssertionError("a free slot while two are in flight")
            names = [("blue", "green", "red")[(batch + i) % 3] for i in range(batch % 4 + 1)]
            for i, name in enumerate(names):
                slot.host_input[i] = COLORS[name]
            slot.count = len(names)
            expected.append([("blue", "green", "red").index(n) for n in names])
            ex.submit(slot)
            if ex.in_flight == 2:  # keep at most two in flight: collect the oldest
                done = ex.collect(timeout=5.0)
                assert done.host_output[:done.count].argmax(1).tolist() == expected.pop(0)
                ex.release(done)
        while ex.in_flight:
            done = ex.collect(timeout=5.0)
            assert done.host_output[:done.count].argmax(1).tolist() == expected.pop(0)
            ex.release(done)
        assert expected == []


class ValueGatedBackend(CpuBackend):
    """Each batch waits for the gate of its first pixel's value; ``started`` tells that a run has begun."""

    name = "value-gated"

    def __init__(self, values: set[int], workers: int = 1) -> None:
        super().__init__(MANIFEST, max_batch=4)
        self.workers = workers
        self.gates = {v: threading.Event() for v in values}
        self.started = {v: threading.Event() for v in values}

    def infer(self, images: np.ndarray, out: np.ndarray) -> None:
        v = int(images[0, 0, 0, 0])
        self.started[v].set()
        assert self.gates[v].wait(10.0), "test never opened the gate"
        out[:, 0] = images[:, 0, 0, 0] / 255.0
        out[:, 1] = 1.0 - out[:, 0]


def test_two_workers_run_batches_at_once_and_results_stay_in_order() -> None:
    backend = ValueGatedBackend({10, 30}, workers=2)
    with CpuExecutor(backend, max_batch=4, num_slots=3) as ex:
        a, b = ex.acquire(timeout=1.0), ex.acquire(timeout=1.0)
        assert a is not None and b is not None
        fill(a, [10])
        fill(b, [30])
        ex.submit(a)
        ex.submit(b)
        assert backend.started[10].wait(5.0) and backend.started[30].wait(5.0)  # both running at once
        backend.gates[30].set()  # the later batch finishes first ...
        assert ex.collect(timeout=0.1) is None  # ... but nothing overtakes the earlier one
        backend.gates[10].set()
        assert ex.collect(timeout=5.0) is a
        assert ex.collect(timeout=5.0) is b
        assert b.host_output[0, 0] == pytest.approx(30 / 255.0)
        assert a.engine_s > 0 and b.engine_s > 0


def test_a_cpu_backend_gets_one_slot_more_than_its_workers() -> None:
    backend = ValueGatedBackend(set(), workers=2)
    ex = backend.make_executor(4, slots=2)
    try:
        assert isinstance(ex, CpuExecutor)
        assert len(ex.workers) == 2 and len(ex.slots) == 3
    finally:
        ex.close()
