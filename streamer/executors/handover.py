"""Fast start: serve batches on a bridge executor at once while the requested one loads, then hand over.

A backend that is slow to start (PyTorch: seconds of ``import torch``, CUDA start-up, model load and
CUDA-graph capture) would keep every frame waiting. Instead the pipeline opens a quick one (ONNX Runtime on
the CPU, same model) as the *bridge* and gives this executor a ``load`` function that builds the requested
executor; ``start`` runs it on a background thread. Until it returns, ``acquire`` hands out the bridge's
slots; from then on the requested executor's. Slots already submitted to the bridge complete there.

The slots handed out are the two executors' own (a CUDA slot keeps its device input: frames decoded on the
GPU write straight into it; a bridge's host slot takes them through their host path). ``submit``, ``collect``
and ``release`` route each slot to the executor that owns it; ``collect`` returns slots in the order they
were submitted across both (the base class's in-order queue: each executor's own order is a subsequence of
it, so its oldest pending slot is always the one asked for). ``engine_id_of`` says which engine made a
slot's results.

If ``load`` fails, the bridge keeps serving and ``on_failed`` is told: the caller decides (the pipeline stops
the run and reports the error; it never silently stays on the bridge). ``close`` while ``load`` runs does not
wait for it: whatever it returns afterwards is closed on the loading thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streamer.errors import ModelError
from streamer.executors.base import Executor
from streamer.executors.contract import Engine, Slot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Engaged:
    """An executor, the engine it drives (its ``engine_id`` goes with the results) and how to free that."""

    executor: Executor[Any]
    engine: Engine
    close_engine: Callable[[], None]

    def __post_init__(self) -> None:
        if not self.engine.engine_id:
            raise ValueError("an engaged executor's engine needs an id")

    @property
    def engine_id(self) -> str:
        return self.engine.engine_id

    def close(self) -> None:
        """The executor (its threads and buffers), then the engine; each failure logged, not raised."""
        for what, step in (("executor", self.executor.close), ("engine", self.close_engine)):
            try:
                step()
            except Exception:
                log.exception("closing the %s of %s failed", what, self.engine_id)


class HandoverExecutor(Executor[Slot]):
    """Batches go to ``bridge`` until ``load()`` has built the requested executor, then to that one.

    ``ready`` is set once the hand-over happened (``handover_mono``: ``time.monotonic()`` then); ``settled``
    once ``load`` returned or failed (``error``). ``bridge_batches`` / ``bridge_frames``: what the bridge was
    given."""

    def __init__(self, bridge: Engaged, load: Callable[[], Engaged], *,
                 on_ready: Callable[[Engaged], None] | None = None,
                 on_failed: Callable[[BaseException], None] | None = None) -> None:
        """``on_ready`` runs on the loading thread before the first batch goes to the loaded executor (an
        exception from it fails the load); ``on_failed`` gets what ``load`` (or ``on_ready``) raised."""
        super().__init__(bridge.executor.max_batch, list(bridge.executor.slots))
        self._free.clear()  # acquire and release go to the executor that owns a slot, never to this list
        self.bridge = bridge
        self.target: Engaged | None = None
        self._load = load
        self._on_ready = on_ready
        self._on_failed = on_failed
        self._bridge_slots = {id(s) for s in bridge.executor.slots}
        self.ready = threading.Event()
        self.settled = threading.Event()
        self.error: BaseException | None = None
        self.handover_mono: float | None = None
        self.bridge_batches = 0
        self.bridge_frames = 0
        self._bridge_served = threading.Event()  # the bridge completed a batch (or this executor closed)
        self._hold_s = 0.0
        self._thread = threading.Thread(target=self._run_load, name="backend-load", daemon=True)

    def start(self, hold_s: float = 0.0) -> None:
        """Start loading the requested executor on its own thread: once the bridge has completed its first
        batch, or after ``hold_s`` at most (0: at once). A load that imports a large package (torch) holds
        the interpreter lock for seconds; started beside the bridge's first batch, it delays that batch."""
        self._hold_s = max(0.0, hold_s)
        self._thread.start()

    def wait_settled(self, timeout: float | None = None) -> bool:
        """True once the load returned or failed."""
        return self.settled.wait(timeout)

    def engine_id_of(self, slot: Slot) -> str:
        return self._owner(slot).engine_id

    # -- the slot life cycle ---------------------------------------------------------------------------------
    def acquire(self, timeout: float | None = None) -> Slot | None:
        """A free slot of the requested executor once it is ready, else of the bridge; None on timeout or once
        closed. A wait for a bridge slot ends as soon as the requested executor is ready."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    return None
                target = self.target
                if target is not None:
                    break
                slot = self.bridge.executor.acquire(timeout=0)
                if slot is not None:
                    return slot
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)  # woken by a bridge slot's release, the hand-over, or close
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        return target.executor.acquire(remaining)

    def release(self, slot: Slot) -> None:
        self._owner(slot).executor.release(slot)
        with self._cond:
            self._cond.notify_all()

    def _launch(self, slot: Slot) -> None:
        owner = self._owner(slot)
        if owner is self.bridge:
            self.bridge_batches += 1  # only the batcher's thread submits
            self.bridge_frames += slot.count
        owner.executor.submit(slot)

    def _wait_done(self, slot: Slot, timeout: float | None) -> bool:
        owner = self._owner(slot)
        done = owner.executor.collect(timeout)
        if done is None:
            return False
        if owner is self.bridge:
            self._bridge_served.set()
        if done is not slot:  # cannot happen while each executor keeps its own submission order
            raise RuntimeError(f"{self._owner(slot).engine_id} completed {done!r} before {slot!r}")
        return True

    def _owner(self, slot: Slot) -> Engaged:
        if id(slot) in self._bridge_slots:
            return self.bridge
        if self.target is None:
            raise ValueError(f"{slot!r} belongs to neither executor")
        return self.target

    # -- loading and closing ---------------------------------------------------------------------------------
    def _run_load(self) -> None:
        if self._hold_s:
            self._bridge_served.wait(self._hold_s)
            if self._closed:  # nothing loaded, nothing to report
                self.settled.set()
                return
        try:
            loaded = self._load()
        except BaseException as exc:
            self._failed(exc)
            return
        try:
            self._check(loaded.executor)
            if self._on_ready is not None and not self._closed:
                self._on_ready(loaded)
        except BaseException as exc:
            loaded.close()
            self._failed(exc)
            return
        with self._cond:
            cancelled = self._closed
            if not cancelled:
                self.target = loaded
                self.slots = [*self.bridge.executor.slots, *loaded.executor.slots]
                self.handover_mono = time.monotonic()
                self._cond.notify_all()
        if cancelled:
            log.debug("%s finished loading after the run was closed: closing it", loaded.engine_id)
            loaded.close()
        else:
            log.info("hand-over: new batches go to %s (%s has taken %d frames in %d batches so far)",
                     loaded.engine_id, self.bridge.engine_id, self.bridge_frames, self.bridge_batches)
            self.ready.set()
        self.settled.set()

    def _check(self, executor: Executor[Any]) -> None:
        """The loaded executor must take the batches the batcher fills for the bridge's."""
        if executor.max_batch < self.max_batch:
            raise ModelError(f"the loaded engine takes batches of up to {executor.max_batch}, the bridge "
                             f"{self.max_batch}", "use a smaller --batch")
        ours, theirs = self.bridge.executor.slots[0], executor.slots[0]
        if (ours.host_input.shape[1:] != theirs.host_input.shape[1:]
                or ours.host_input.dtype != theirs.host_input.dtype
                or ours.host_output.shape[1:] != theirs.host_output.shape[1:]):
            raise ModelError(f"the loaded engine takes rows {theirs.host_input.shape[1:]} → "
                             f"{theirs.host_output.shape[1:]}, the bridge {ours.host_input.shape[1:]} → "
                             f"{ours.host_output.shape[1:]}", "export both from one model")

    def _failed(self, exc: BaseException) -> None:
        with self._cond:
            self.error = exc
            closed = self._closed
            self._cond.notify_all()
        self.settled.set()
        if closed:
            log.debug("loading failed after the run was closed: %s", exc)
        elif self._on_failed is not None:
            self._on_failed(exc)

    def _shutdown(self) -> None:
        """Close the bridge and the requested executor (if it arrived); a load still running closes what it
        returns itself."""
        self._bridge_served.set()  # a load still held back starts (and stops at once)
        self.bridge.close()
        with self._cond:
            target = self.target
        if target is not None:
            target.close()
