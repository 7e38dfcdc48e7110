"""What every executor shares: N slots, a free list, and in-order completion (see :mod:`.contract`).

With 2+ slots the producer fills slot B while slot A runs: that is the double-buffering. An engine error on
one batch does not stop the executor: the slot comes back from ``collect`` with ``error`` set.
"""

from __future__ import annotations

import collections
import threading
from abc import ABC, abstractmethod
from typing import Generic, TypeVar

from streamer.executors.contract import Slot

SlotT = TypeVar("SlotT", bound=Slot)


class Executor(ABC, Generic[SlotT]):
    """Owns the slots and the in-order completion queue; subclasses launch the work and wait for it."""

    def __init__(self, max_batch: int, slots: list[SlotT]) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if not slots:
            raise ValueError("an executor needs at least one slot")
        self.max_batch = max_batch
        self.slots = slots
        self._cond = threading.Condition()
        self._free: collections.deque[SlotT] = collections.deque(slots)
        self._pending: collections.deque[SlotT] = collections.deque()
        self._seq = 0
        self._closed = False

    @property
    def num_slots(self) -> int:
        return len(self.slots)

    @property
    def in_flight(self) -> int:
        with self._cond:
            return len(self._pending)

    def acquire(self, timeout: float | None = None) -> SlotT | None:
        """A free, reset slot; None on timeout or once closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._free or self._closed, timeout) or self._closed:
                return None
            slot = self._free.popleft()
        slot.reset()
        return slot

    def submit(self, slot: SlotT) -> None:
        """Start the engine on ``slot.count`` rows. Returns without waiting for the result."""
        if not 0 < slot.count <= slot.capacity:
            raise ValueError(f"slot count {slot.count} outside 1..{slot.capacity}")
        with self._cond:
            slot.seq = self._seq
            self._seq += 1
            self._pending.append(slot)
            self._cond.notify_all()
        self._launch(slot)

    def collect(self, timeout: float | None = None) -> SlotT | None:
        """The oldest submitted slot once its results are in ``host_output`` (waiting on its completion, not
        polling); None if nothing was submitted, or none completes within ``timeout``."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._pending or self._closed, timeout) or not self._pending:
                return None
            slot = self._pending[0]
        if not self._wait_done(slot, timeout):
            return None
        with self._cond:
            self._pending.popleft()
        return slot

    def release(self, slot: SlotT) -> None:
        with self._cond:
            self._free.append(slot)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._shutdown()

    def __enter__(self) -> Executor[SlotT]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def _launch(self, slot: SlotT) -> None:
        """Start the work for ``slot`` (asynchronously); a failure is reported through ``slot.error``."""

    @abstractmethod
    def _wait_done(self, slot: SlotT, timeout: float | None) -> bool:
        """Block until ``slot``'s work is finished (True) or ``timeout`` passes (False)."""

    @abstractmethod
    def _shutdown(self) -> None:
        """Release threads, streams and buffers."""
