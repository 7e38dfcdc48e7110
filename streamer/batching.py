"""The batcher: frames from all sources, round-robin, resized straight into executor slots, closed on size or
on a short deadline after the batch's first frame (like DeepStream's ``batched-push-timeout``).

When every open source is live and has already put its newest frame in the batch, the batch closes at
once: the next frame of any of them is a frame period away, far beyond the deadline.

Its output is one ordered stream (``outbox``): each submitted Slot, a ``SourceEnd`` once a source's last frame
is in a submitted slot, and a final ``None``. The results side consumes it in order, so an end-of-stream is
published after that source's last prediction.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from streamer.executors.base import Executor
from streamer.executors.contract import Slot
from streamer.preprocess import resize_into
from streamer.sources.base import Frame, Policy
from streamer.sources.buffer import FrameBuffer

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.25  # how often an idle batcher re-checks for stop/ends while no frame arrives


@dataclass(frozen=True, slots=True)
class FrameTag:
    """What the results side needs to know about row i of a slot."""

    source: str
    frame_index: int
    capture_time: float  # UNIX epoch seconds (what goes on the wire)
    capture_mono: float  # time.monotonic() at capture (what in-process latencies are measured from)
    dropped: int  # frames this source dropped since its previous batched frame


@dataclass(frozen=True)
class SourceEnd:
    source: str
    frames: int  # frames of this source that went into batches
    reason: str
    failed: bool = False


BatchEvent = Slot | SourceEnd | None


class Batcher:
    """One thread: acquire a free slot, fill it round-robin from the buffers, submit it, repeat."""

    def __init__(self, buffers: Sequence[FrameBuffer], executor: Executor[Any], batch_size: int,
                 timeout_s: float = 0.005, outbox: queue.Queue[BatchEvent] | None = None) -> None:
        if not buffers:
            raise ValueError("no buffers to batch")
        conds = {id(b.cond) for b in buffers}
        if len(conds) != 1:
            raise ValueError("all buffers must share one condition variable")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.buffers = list(buffers)
        self.cond = buffers[0].cond
        self.executor = executor
        self.batch_size = min(batch_size, executor.max_batch)
        self.timeout_s = max(0.0, timeout_s)
        self.outbox: queue.Queue[BatchEvent] = outbox if outbox is not None else queue.Queue()
        self.batches = 0
        self.frames = 0
        self.resize_s = 0.0  # time spent resizing frames into slots
        self.error: BaseException | None = None
        self._rr = 0
        self._reported: set[int] = set()
        self._abort = threading.Event()
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)

    # -- control -----------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def abort(self) -> None:
        """Stop at once: the batch being filled is submitted, buffered frames are left."""
        self._abort.set()
        with self.cond:
            self.cond.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def mean_batch(self) -> float:
        return self.frames / self.batches if self.batches else 0.0

    # -- the loop ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._abort.is_set():
                slot = self._acquire()
                if slot is None:
                    break
                n = self._fill(slot)
                if n:
                    slot.count = n
                    self.executor.submit(slot)
                    self.outbox.put(slot)
                    self.batches += 1
                    self.frames += n
                else:
                    self.executor.release(slot)
                self._report_ends()
                if self._all_finished():
                    break
        except BaseException as exc:
            self.error = exc
            log.exception("batcher failed")
        finally:
            self.outbox.put(None)

    def _acquire(self) -> Slot | None:
        while not self._abort.is_set():
            slot = self.executor.acquire(timeout=IDLE_WAIT_S)
            if slot is not None:
                return slot
        return None

    def _fill(self, slot: Slot) -> int:
        """Fill ``slot`` with up to batch_size frames; returns how many."""
        n = 0
        deadline = 0.0
        rows = slot.host_input
        contributed: set[int] = set()
        while n < self.batch_size and not self._abort.is_set():
            with self.cond:
                got = self._take()
                if got is None:
                    if n == 0:
                        if self._all_finished() or self._unreported_end():
                            break
                        self.cond.wait(IDLE_WAIT_S)
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._all_finished() or self._live_round_done(contributed):
                        break
                    self.cond.wait(remaining)
                    continue
            buffer, frame, dropped = got
            contributed.add(id(buffer))
            t0 = time.perf_counter()
            resize_into(frame.image, rows[n])
            self.resize_s += time.perf_counter() - t0
            slot.tags.append(FrameTag(buffer.source, frame.index, frame.capture_time, frame.capture_mono,
                                      dropped))
            n += 1
            if n == 1:
                deadline = time.monotonic() + self.timeout_s
        return n

    def _take(self) -> tuple[FrameBuffer, Frame, int] | None:
        """One frame from the next non-empty buffer after the previous one (caller holds the lock)."""
        k = len(self.buffers)
        for i in range(k):
            j = (self._rr + i) % k
            got = self.buffers[j].take_locked()
            if got is not None:
                self._rr = (j + 1) % k
                return self.buffers[j], got[0], got[1]
        return None

    def _live_round_done(self, contributed: set[int]) -> bool:
        """Every open source is live and already has its newest frame in this batch: the next frame of any
        of them is a frame period away, so waiting out the deadline would only add latency. A source that is
        down (reconnecting) has no frame coming: it is not waited for."""
        return all(b.policy is not Policy.BLOCK and id(b) in contributed
                   for b in self.buffers if not b.finished and not b.down)

    def _all_finished(self) -> bool:
        return all(b.finished for b in self.buffers)

    def _unreported_end(self) -> bool:
        return any(b.finished and i not in self._reported for i, b in enumerate(self.buffers))

    def _report_ends(self) -> None:
        with self.cond:
            ends = [(i, b) for i, b in enumerate(self.buffers) if b.finished and i not in self._reported]
        for i, b in ends:
            self._reported.add(i)
            self.outbox.put(SourceEnd(b.source, b.taken, b.reason, b.failed))
