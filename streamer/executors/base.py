"""The executor interface: N slots, each filled by the batcher, submitted, completed in order, released.

Life of a slot (one producer thread fills/submits, one consumer thread collects/releases)::

    slot = ex.acquire()              # a free slot (blocks while all N are filled or in flight)
    resize_into(frame, slot.host_input[i]); slot.tags.append(tag)   # fill rows 0..n-1
    ex.submit(slot)                  # queue inference on slot.count rows; returns at once
    ...
    done = ex.collect()              # the oldest submitted slot, once finished (submission order)
    use(done.host_output[:done.count], done.tags)   # copy results out
    ex.release(done)                 # back to the free list; its buffers may now be overwritten

With 2+ slots the producer fills slot B while slot A runs: that is the double-buffering. A backend error
on one batch does not kill the executor: the slot comes back from ``collect`` with ``error`` set.
"""

from __future__ import annotations

import collections
import threading
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from streamer.backends.base import Backend


class Slot:
    """One batch's worth of buffers. Subclasses (the CUDA slot) add device buffers, a stream and an event."""

    def __init__(self, index: int, host_input: np.ndarray, host_output: np.ndarray) -> None:
        self.index = index
        self.host_input = host_input  # (max_batch, H, W, 3) uint8, BGR
        self.host_output = host_output  # (max_batch, num_classes) float32
        self.count = 0
        self.tags: list[Any] = []
        self.seq = -1  # submission sequence number
        self.error: BaseException | None = None
        self.submit_time = 0.0
        self.done_time = 0.0

    @property
    def capacity(self) -> int:
        return self.host_input.shape[0]

    def reset(self) -> None:
        self.count = 0
        self.tags.clear()
        self.error = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.index} seq={self.seq} count={self.count}>"


class Executor(ABC):
    """Owns the slots and the in-order completion queue; subclasses launch and await the work."""

    def __init__(self, backend: Backend, max_batch: int, num_slots: int = 2) -> None:
        if num_slots < 1:
            raise ValueError("num_slots must be >= 1")
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.backend = backend
        self.max_batch = max_batch
        self.num_slots = num_slots
        self._cond = threading.Condition()
        self._free: collections.deque[Slot] = collections.deque()
        self._pending: collections.deque[Slot] = collections.deque()
        self._seq = 0
        self._closed = False
        self.slots: list[Slot] = []

    def _add_slots(self, slots: list[Slot]) -> None:
        self.slots = slots
        self._free.extend(slots)

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.backend.manifest.input_hw

    @property
    def in_flight(self) -> int:
        with self._cond:
            return len(self._pending)

    def acquire(self, timeout: float | None = None) -> Slot | None:
        """A free, reset slot; None on timeout or once closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._free or self._closed, timeout):
                return None
            if self._closed:
                return None
            slot = self._free.popleft()
        slot.reset()
        return slot

    def submit(self, slot: Slot) -> None:
        """Queue inference on ``slot.count`` rows. Returns without waiting for the result."""
        if not 0 < slot.count <= slot.capacity:
            raise ValueError(f"slot count {slot.count} outside 1..{slot.capacity}")
        with self._cond:
            slot.seq = self._seq
            self._seq += 1
            self._pending.append(slot)
            self._cond.notify_all()
        self._launch(slot)

    def collect(self, timeout: float | None = None) -> Slot | None:
        """The oldest submitted slot once its results are in host_output; None if none completes in time."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._pending or self._closed, timeout):
                return None
            if not self._pending:
                return None
            slot = self._pending[0]
        if not self._wait_done(slot, timeout):
            return None
        with self._cond:
            self._pending.popleft()
        return slot

    def release(self, slot: Slot) -> None:
        with self._cond:
            self._free.append(slot)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._shutdown()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def _launch(self, slot: Slot) -> None:
        """Start the work for ``slot`` (asynchronously)."""

    @abstractmethod
    def _wait_done(self, slot: Slot, timeout: float | None) -> bool:
        """Block until ``slot``'s work is finished (True) or ``timeout`` passes (False)."""

    def _shutdown(self) -> None:  # noqa: B027 - optional hook
        """Release threads/streams/buffers."""
