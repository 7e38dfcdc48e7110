"""HandoverExecutor's logic with small gated CPU engines (real CpuExecutors): slots route to the executor that
owns them, results come back in submission order across both, a failed load is reported (the bridge keeps
serving until the caller stops), and close() while loading closes what the load returns afterwards."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from streamer.backends.base import CpuBackend
from streamer.errors import ModelError
from streamer.executors.contract import Slot
from streamer.executors.cpu import CpuExecutor
from streamer.executors.handover import Engaged, HandoverExecutor
from streamer.model.manifest import ModelManifest

WAIT_S = 10.0
MANIFEST = ModelManifest(name="gate", labels=("a", "b"), input_hw=(4, 4), mean=(0, 0, 0), std=(1, 1, 1))


class GatedEngine(CpuBackend):
    """Batch k runs once the test opens gate k; writes which engine ran a row into its scores."""

    def __init__(self, name: str, mark: float, manifest: ModelManifest = MANIFEST, open_gates: bool = False):
        super().__init__(manifest, max_batch=4)
        self.name = name  # type: ignore[misc]
        self.mark = mark
        self.gates = [threading.Event() for _ in range(32)]
        if open_gates:
            for g in self.gates:
                g.set()
        self.calls = 0
        self.closed = False

    def infer(self, images: np.ndarray, out: np.ndarray) -> None:
        call = self.calls
        self.calls += 1
        assert self.gates[call].wait(WAIT_S), f"{self.name}: the test never opened gate {call}"
        out[:, 0] = self.mark
        out[:, 1] = images[:, 0, 0, 0]

    def close(self) -> None:
        self.closed = True


def engaged(engine: GatedEngine, slots: int = 2) -> Engaged:
    return Engaged(CpuExecutor(engine, max_batch=4, num_slots=slots), engine, engine.close)


class Loader:
    """The load function: waits (with a timeout) until the test lets it return ``make()`` or raise."""

    def __init__(self, make: Callable[[], Engaged]) -> None:
        self.make = make
        self.go = threading.Event()
        self.started = threading.Event()
        self.fail: BaseException | None = None

    def __call__(self) -> Engaged:
        self.started.set()
        assert self.go.wait(WAIT_S), "the test never let the load finish"
        if self.fail is not None:
            raise self.fail
        return self.make()


def submit(ex: HandoverExecutor, value: int, rows: int = 1) -> Slot:
    slot = ex.acquire(timeout=WAIT_S)
    assert slot is not None
    for i in range(rows):
        slot.host_input[i] = value
        slot.tags.append(value)
    slot.count = rows
    ex.submit(slot)
    return slot


def collect(ex: HandoverExecutor) -> tuple[int, float, str]:
    done = ex.collect(timeout=WAIT_S)
    assert done is not None
    result = int(done.host_output[0, 1]), float(done.host_output[0, 0]), ex.engine_id_of(done)
    ex.release(done)
    return result


def test_results_come_back_in_submission_order_across_the_hand_over() -> None:
    bridge, target = GatedEngine("bridge", 1.0), GatedEngine("target", 2.0, open_gates=True)
    loader = Loader(lambda: engaged(target, slots=3))
    ex = HandoverExecutor(engaged(bridge), loader)
    ex.start()
    try:
        first, second = submit(ex, 10), submit(ex, 11)  # both on the bridge, held at its gates
        assert loader.started.wait(WAIT_S)
        loader.go.set()
        assert ex.ready.wait(WAIT_S) and ex.settled.is_set() and ex.error is None
        later = [submit(ex, v) for v in (12, 13, 14)]  # on the target, which finishes them at once
        assert all(s not in ex.bridge.executor.slots for s in later)
        assert {first, second} <= set(ex.bridge.executor.slots)
        assert ex.in_flight == 5
        bridge.gates[1].set()  # the bridge's second batch finishes before its first
        bridge.gates[0].set()
        got = [collect(ex) for _ in range(5)]
        assert [v for v, _, _ in got] == [10, 11, 12, 13, 14]
        assert [m for _, m, _ in got] == [1.0, 1.0, 2.0, 2.0, 2.0]
        assert [e for _, _, e in got] == [bridge.engine_id] * 2 + [target.engine_id] * 3
        assert (ex.bridge_batches, ex.bridge_frames) == (2, 2)
        assert ex.handover_mono is not None and ex.num_slots == 2 + 3
    finally:
        ex.close()
    assert bridge.closed and target.closed


def test_an_acquire_waiting_for_a_bridge_slot_takes_the_loaded_executors_at_the_hand_over() -> None:
    bridge, target = GatedEngine("bridge", 1.0), GatedEngine("target", 2.0, open_gates=True)
    loader = Loader(lambda: engaged(target))
    ex = HandoverExecutor(engaged(bridge, slots=1), loader)
    ex.start()
    try:
        held = submit(ex, 1)  # the bridge's only slot, in flight until gate 0 opens
        got: list[Slot | None] = []
        waiter = threading.Thread(target=lambda: got.append(ex.acquire(timeout=WAIT_S)))
        waiter.start()
        loader.go.set()
        waiter.join(WAIT_S)
        assert not waiter.is_alive() and got and got[0] is not None
        assert got[0] is not held and got[0] in ex.target.executor.slots  # type: ignore[union-attr]
        ex.release(got[0])
        bridge.gates[0].set()
        assert collect(ex) == (1, 1.0, bridge.engine_id)
    finally:
        ex.close()


def test_a_failed_load_is_reported_and_the_bridge_keeps_serving() -> None:
    bridge = GatedEngine("bridge", 1.0, open_gates=True)
    loader = Loader(lambda: pytest.fail("not called"))
    loader.fail = ModelError("m.pt2: does not load")
    failures: list[BaseException] = []
    ex = HandoverExecutor(engaged(bridge), loader, on_failed=failures.append)
    ex.start()
    try:
        loader.go.set()
        assert ex.wait_settled(WAIT_S)
        assert not ex.ready.is_set() and ex.target is None
        assert isinstance(ex.error, ModelError) and failures == [ex.error]
        submit(ex, 7)
        assert collect(ex) == (7, 1.0, bridge.engine_id)
    finally:
        ex.close()
    assert bridge.closed


def test_a_loaded_executor_that_does_not_fit_the_bridges_rows_fails_the_load() -> None:
    other = ModelManifest(name="gate", labels=("a", "b", "c"), input_hw=(4, 4), mean=(0, 0, 0), std=(1, 1, 1))
    bridge, target = GatedEngine("bridge", 1.0), GatedEngine("target", 2.0, other)
    loader = Loader(lambda: engaged(target))
    loader.go.set()
    failures: list[BaseException] = []
    ex = HandoverExecutor(engaged(bridge), loader, on_failed=failures.append)
    ex.start()
    try:
        assert ex.wait_settled(WAIT_S)
        assert isinstance(ex.error, ModelError) and "rows" in str(ex.error) and failures
        assert ex.target is None and target.closed  # what was loaded is freed
    finally:
        ex.close()


def test_close_while_loading_returns_at_once_and_what_loads_later_is_closed() -> None:
    bridge, target = GatedEngine("bridge", 1.0), GatedEngine("target", 2.0)
    made: list[Engaged] = []

    def make() -> Engaged:
        made.append(engaged(target))
        return made[-1]

    loader = Loader(make)
    ready: list[Engaged] = []
    ex = HandoverExecutor(engaged(bridge), loader, on_ready=ready.append)
    ex.start()
    assert loader.started.wait(WAIT_S)
    t0 = time.monotonic()
    ex.close()
    assert time.monotonic() - t0 < WAIT_S / 2  # did not wait for the load
    assert bridge.closed and ex.acquire(timeout=0.01) is None
    loader.go.set()
    assert ex.wait_settled(WAIT_S)
    assert made and target.closed and ex.target is None and not ex.ready.is_set() and not ready


def held(hold_s: float) -> tuple[HandoverExecutor, Loader]:
    """A hand-over started with its load held back for ``hold_s`` (or until the bridge's first batch)."""
    loader = Loader(lambda: engaged(GatedEngine("target", 2.0, open_gates=True)))
    ex = HandoverExecutor(engaged(GatedEngine("bridge", 1.0, open_gates=True)), loader)
    ex.start(hold_s=hold_s)
    return ex, loader


def test_the_load_is_held_back_until_the_bridge_completed_its_first_batch() -> None:
    ex, loader = held(WAIT_S)
    try:
        slot = submit(ex, 3)
        assert not loader.started.wait(0.2)  # the bridge's batch ran, but nobody collected it yet
        assert ex.collect(timeout=WAIT_S) is slot
        ex.release(slot)
        assert loader.started.wait(WAIT_S), "the load did not start after the bridge's first batch"
        loader.go.set()
        assert ex.ready.wait(WAIT_S)
    finally:
        ex.close()


def test_a_held_load_starts_after_its_hold_without_any_batch() -> None:
    t0 = time.monotonic()
    ex, loader = held(0.3)
    try:
        assert loader.started.wait(WAIT_S)
        assert time.monotonic() - t0 >= 0.3 - 0.05
        loader.go.set()
        assert ex.ready.wait(WAIT_S)
    finally:
        ex.close()


def test_close_during_the_hold_never_loads() -> None:
    ex, loader = held(WAIT_S)
    ex.close()
    assert ex.wait_settled(WAIT_S)
    assert not loader.started.is_set() and ex.target is None
