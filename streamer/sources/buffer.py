"""Per-source frame buffers with a named backpressure policy, all sharing one condition variable.

The buffers of a pipeline share one ``threading.Condition`` so that the batcher can wait for "a frame from
any source, or the end of all of them" without polling; each reader thread waits on the same condition when
its BLOCK buffer is full.
"""

from __future__ import annotations

import collections
import threading

from streamer.sources.base import Frame, Policy


class FrameBuffer:
    """Bounded FIFO between one reader thread and the batcher.

    BLOCK: ``put`` waits while full (nothing is lost). LATEST and DROP_OLDEST: ``put`` drops the oldest
    buffered frame and counts it (they differ in capacity only: LATEST keeps 1 frame, DROP_OLDEST a queue).
    ``take`` returns the frame and how many frames of this source were dropped since the previous ``take`` —
    the ``dropped`` field of the published prediction. ``down``: the source is lost and reconnecting, so the
    batcher does not wait for it when it closes a batch of live frames.
    """

    def __init__(self, source: str, policy: Policy, capacity: int, cond: threading.Condition | None = None
                 ) -> None:
        if capacity < 1:
            raise ValueError("buffer capacity must be >= 1")
        self.source = source
        self.policy = Policy(policy)
        self.capacity = capacity
        self.cond = cond or threading.Condition()
        self._frames: collections.deque[Frame] = collections.deque()
        self._closed = False
        self.reason = ""  # why it was closed: "end of input", "failed: ...", "stopped"
        self.failed = False
        self.down = False
        self.dropped = 0  # total frames dropped by this buffer
        self.skipped = 0  # frames its source could not decode (the reader keeps it current)
        self._dropped_untaken = 0
        self.taken = 0

    def put(self, frame: Frame, timeout: float | None = None) -> bool:
        """Queue a frame. False when the buffer is closed (or, BLOCK only, when ``timeout`` passed)."""
        with self.cond:
            if self.policy is Policy.BLOCK:
                ok = self.cond.wait_for(lambda: self._closed or len(self._frames) < self.capacity, timeout)
                if not ok or self._closed:
                    return False
            elif self._closed:
                return False
            else:
                while len(self._frames) >= self.capacity:
                    self._frames.popleft()
                    self.dropped += 1
                    self._dropped_untaken += 1
            self._frames.append(frame)
            self.cond.notify_all()
            return True

    def count_drop(self, n: int = 1) -> None:
        """Frames the reader itself skipped (e.g. realtime pacing fell behind)."""
        with self.cond:
            self.dropped += n
            self._dropped_untaken += n

    def take_locked(self) -> tuple[Frame, int] | None:
        """(frame, dropped since the previous take) or None if empty. Caller holds ``cond``."""
        if not self._frames:
            return None
        frame = self._frames.popleft()
        dropped, self._dropped_untaken = self._dropped_untaken, 0
        self.taken += 1
        self.cond.notify_all()
        return frame, dropped

    def take(self) -> tuple[Frame, int] | None:
        with self.cond:
            return self.take_locked()

    def close(self, reason: str = "end of input", failed: bool = False) -> None:
        """No more frames will be put; buffered ones can still be taken. The first reason wins."""
        with self.cond:
            if not self._closed:
                self._closed = True
                self.reason = reason
                self.failed = failed
            self.cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def finished(self) -> bool:
        """Closed and drained: the batcher has taken the source's last frame."""
        return self._closed and not self._frames

    def __len__(self) -> int:
        return len(self._frames)
