"""The batcher: frames from all sources, round-robin, resized straight into executor slots, closed on size or
on a short deadline after the batch's first frame (like DeepStream's ``batched-push-timeout``).

When every open source is live and has already put its newest frame in the batch, the batch closes at
once: the next frame of any of them is a frame period away, far beyond the deadline.

A frame decoded on the GPU (NVDEC: its image is a ``streamer.gpu.rows.DeviceRow``, already the model's input
row on the device) is not resized here: the first such frame of a batch gives a :class:`RowWriter` for the
slot (``image.row_writer(slot)``), which takes every GPU frame of the batch (``add``), writes their rows into
the slot's device input when the batch closes, uploading the host rows of a mixed batch too (``finish``),
and is told when the slot was submitted (``submitted``: the rows may be reused after the batch's event).

Its output is one ordered stream (``outbox``): each submitted Slot, a ``SourceEnd`` once a source's last frame
is in a submitted slot, and a final ``None``. The results side consumes it in order, so an end-of-stream is
published after that source's last prediction.

Buffers can be added while it runs (``add``); a finished buffer leaves the batcher once its end is reported.
It ends when every buffer has finished — unless ``keep_open``, when it ends only after ``seal()`` (no more
buffers will come) and every buffer has finished, so a service can run with no source for a while.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from streamer.executors.base import Executor
from streamer.executors.contract import Slot
from streamer.metrics import Timings
from streamer.preprocess import resize_into
from streamer.sources.base import Frame, Policy
from streamer.sources.buffer import FrameBuffer
from streamer.view.tap import FrameTap, picture_of

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.25  # how often an idle batcher re-checks for stop/ends while no frame arrives


class RowWriter(Protocol):
    """Writes the GPU-decoded frames of one batch into its slot (``streamer.gpu.rows.RowBatch``)."""

    def add(self, image: Any, row: int) -> None: ...

    def finish(self, host_rows: list[int]) -> None:
        """The batch is complete: write the frames' rows; ``host_rows`` were resized on the host."""

    def submitted(self) -> None:
        """The slot was submitted (its event recorded)."""


@dataclass(frozen=True, slots=True)
class FrameTag:
    """What the results side needs to know about row i of a slot."""

    source: str
    frame_index: int
    capture_time: float  # UNIX epoch seconds (what goes on the wire)
    capture_mono: float  # time.monotonic() at capture (what in-process latencies are measured from)
    dropped: int  # frames this source dropped since its previous batched frame
    file: str = ""  # an image source's file (Frame.file)
    # the frame as a host BGR image when a viewer (--annotate, --preview) took it (streamer.view.tap)
    picture: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class SourceEnd:
    source: str
    frames: int  # frames of this source that went into batches
    reason: str
    failed: bool = False
    skipped: int = 0  # frames the source could not decode (eos ``skipped``)


BatchEvent = Slot | SourceEnd | None


class SealedError(RuntimeError):
    """A buffer was added after the batcher stopped taking new ones (the run is ending)."""


class Batcher:
    """One thread: acquire a free slot, fill it round-robin from the buffers, submit it, repeat."""

    def __init__(self, buffers: Sequence[FrameBuffer], executor: Executor[Any], batch_size: int,
                 timeout_s: float = 0.005, outbox: queue.Queue[BatchEvent] | None = None, *,
                 cond: threading.Condition | None = None, keep_open: bool = False,
                 timings: Timings | None = None, tap: FrameTap | None = None) -> None:
        """``cond``: the condition every buffer shares (needed when ``buffers`` is empty); ``keep_open``: do
        not end when the last buffer finishes, only after ``seal()``; ``timings``: resize and queue times
        are added to it once per batch; ``tap``: what the viewers take of each frame (its FrameTag's
        ``picture``)."""
        if not buffers and cond is None:
            raise ValueError("no buffers to batch (and no condition for buffers added later)")
        conds = {id(b.cond) for b in buffers} | ({id(cond)} if cond is not None else set())
        if len(conds) != 1:
            raise ValueError("all buffers must share one condition variable")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.buffers = list(buffers)
        self.cond = cond if cond is not None else buffers[0].cond
        self.keep_open = keep_open
        self.timings = timings
        self.tap = tap  # None: no viewer, and no cost per frame
        self.executor = executor
        self.batch_size = min(batch_size, executor.max_batch)
        self.timeout_s = max(0.0, timeout_s)
        self.outbox: queue.Queue[BatchEvent] = outbox if outbox is not None else queue.Queue()
        self.batches = 0
        self.frames = 0
        self.resize_s = 0.0  # time spent resizing frames into slots
        self.error: BaseException | None = None
        self._rr = 0
        self._writer: RowWriter | None = None  # the GPU frames of the slot being filled
        self._sealed = False
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
    def alive(self) -> bool:
        return self._thread.is_alive()

    def add(self, buffer: FrameBuffer) -> None:
        """Batch one more buffer from now on. SealedError when the batcher takes no more (it was sealed, or it
        is not ``keep_open`` and every buffer has finished: the run is ending)."""
        if buffer.cond is not self.cond:
            raise ValueError("all buffers must share one condition variable")
        with self.cond:
            if self._sealed or self._abort.is_set() or (not self.keep_open and self._all_finished()):
                raise SealedError("the run is ending: it takes no new sources")
            self.buffers.append(buffer)
            self.cond.notify_all()

    def seal(self) -> None:
        """No more buffers: end once the current ones have finished."""
        with self.cond:
            self._sealed = True
            self.cond.notify_all()

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
                    if self._writer is not None:
                        self._writer.submitted()
                        self._writer = None
                    self.outbox.put(slot)
                    self.batches += 1
                    self.frames += n
                else:
                    self.executor.release(slot)
                self._report_ends()
                if self._done():
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
        resize_s: list[float] = []  # per frame, for the timings (added once per batch)
        queued_s: list[float] = []
        host_rows: list[int] = []  # rows resized on the host (the executor uploads them, or the writer does)
        writer: RowWriter | None = None  # the batch's GPU frames
        while n < self.batch_size and not self._abort.is_set():
            with self.cond:
                got = self._take()
                if got is None:
                    if n == 0:
                        if self._done() or self._unreported_end():
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
            queued_s.append(time.monotonic() - frame.capture_mono)
            image = frame.image
            if isinstance(image, np.ndarray):
                resize_into(image, rows[n])
                host_rows.append(n)
            else:  # decoded on the GPU: its row is written into the slot there, with the batch's others
                if writer is None:
                    writer = image.row_writer(slot)
                writer.add(image, n)
            resize_s.append(time.perf_counter() - t0)
            picture = None if self.tap is None else self.tap.take(buffer.source, picture_of(image))
            slot.tags.append(FrameTag(buffer.source, frame.index, frame.capture_time, frame.capture_mono,
                                      dropped, frame.file, picture))
            n += 1
            if n == 1:
                deadline = time.monotonic() + self.timeout_s
        if writer is not None:
            t0 = time.perf_counter()
            writer.finish(host_rows)
            self._writer = writer
            share = (time.perf_counter() - t0) / n  # the writer's time, spread over the batch's frames
            resize_s = [r + share for r in resize_s]
        self.resize_s += sum(resize_s)
        if self.timings is not None and n:
            self.timings.stages["resize"].observe_many(resize_s)
            self.timings.stages["queue"].observe_many(queued_s)
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

    def _done(self) -> bool:
        """Nothing more will come: every buffer has finished, and no buffer can be added any more."""
        return (self._sealed or not self.keep_open) and self._all_finished()

    def _unreported_end(self) -> bool:
        return any(b.finished for b in self.buffers)

    def _report_ends(self) -> None:
        """A finished buffer's end goes out (after its last slot) and the buffer leaves the round-robin."""
        with self.cond:
            ends = [b for b in self.buffers if b.finished]
            if not ends:
                return
            self.buffers = [b for b in self.buffers if not b.finished]
            self._rr = self._rr % len(self.buffers) if self.buffers else 0
        for b in ends:
            self.outbox.put(SourceEnd(b.source, b.taken, b.reason, b.failed, b.skipped))
