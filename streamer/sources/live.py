"""Live sources that never stall the pipeline: network streams (rtsp://, http(s)://, ...) and local cameras.

Every OpenCV call of a live source runs in a *connection* thread of its own, which opens one capture, reads
it, and hands frames over through a one-frame queue. The source's ``read`` (on the reader thread) waits for
that queue with a deadline, so a read stuck inside FFmpeg or a camera driver — a server that stops sending
without closing, a DNS lookup that never returns — holds nothing: after ``timeout_s`` without a frame the
source is DOWN, the connection is abandoned (its thread releases the capture whenever the native call
returns) and a new one is opened. FFmpeg's own open/read timeouts (``CAP_PROP_OPEN_TIMEOUT_MSEC``,
``CAP_PROP_READ_TIMEOUT_MSEC``) are set to the same value, so in practice the stuck call does return.

Reconnects back off exponentially (``backoff_s`` doubling up to ``backoff_max_s``) and give up after
``reconnect_attempts`` failed attempts in a row (0: never), which raises SourceError: the pipeline then
ends that source alone (health ``down``, eos ``error``). State changes — DOWN (with the reason), RECONNECTING
(each attempt), RUNNING (back up) — become ``health.<source>`` messages. Frame indices keep increasing across
reconnects, and a new connection may deliver another resolution: frames carry their own size and the batcher
resizes every frame, so nothing downstream holds on to the old one.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import math
import queue
import threading
import time
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from streamer.errors import ConfigError, SourceError
from streamer.preprocess import to_bgr8
from streamer.sources.base import Frame, FrameSource, SourceState

log = logging.getLogger(__name__)

_POLL_S = 0.1  # how often a waiting read looks at stop requests
# consecutive failed reads that end a connection; fewer, then a good frame, were corrupt frames (skipped)
MAX_READ_FAILURES = 3
_OPEN_GRACE_S = 1.0  # the watchdog allows FFmpeg's own open timeout this much extra before abandoning it


@dataclass(frozen=True)
class LiveOptions:
    """Timeouts and reconnect policy of live sources (``[live]`` in the config)."""

    timeout_s: float = 5.0  # open timeout, and stall timeout: no frame for this long = down
    reconnect_attempts: int = 0  # failed reconnect attempts in a row before giving up (0 = never give up)
    backoff_s: float = 0.5  # wait before the first reconnect attempt; doubles after each failed one
    backoff_max_s: float = 10.0  # ... up to this

    def __post_init__(self) -> None:
        for name in ("timeout_s", "backoff_s", "backoff_max_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"[live] {name} = {value} must be a positive number of seconds")
        if self.reconnect_attempts < 0:
            raise ConfigError(f"[live] reconnect_attempts = {self.reconnect_attempts} must be >= 0",
                              "0 retries for ever")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before reconnect attempt ``attempt`` (1, 2, ...)."""
        return min(self.backoff_s * 2.0 ** min(attempt - 1, 30), self.backoff_max_s)


_LIVE: set[threading.Thread] = set()  # connection threads not finished yet (maybe stuck in a native call)
_LIVE_LOCK = threading.Lock()
_CLOSE_WAIT_S = 1.0  # close() waits this long for the capture to be released
_exit_wait_s = 0.0  # the longest FFmpeg timeout of any live source so far, plus grace (see _wait_at_exit)


def busy_captures(timeout: float = 0.0) -> int:
    """How many capture threads are still inside OpenCV after waiting up to ``timeout`` s for them to end.

    A process must not run its normal exit while one is (C++ destructors under a running native thread
    abort it): the CLI ends with ``os._exit`` then."""
    deadline = time.monotonic() + timeout
    with _LIVE_LOCK:
        threads = list(_LIVE)
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return sum(t.is_alive() for t in threads)


@atexit.register
def _wait_at_exit() -> None:
    """Let abandoned capture threads leave OpenCV before the interpreter finalises: a daemon thread that
    comes back from a native call during finalisation is ended by a forced unwind through C++ frames, which
    aborts the process ("terminate called without an active exception"). FFmpeg's timeouts bound the wait."""
    if busy_captures(_exit_wait_s):
        log.warning("a capture thread is still inside OpenCV at exit")


class _Connection:
    """One capture, opened and read in a daemon thread; frames reach the source through ``frames``."""

    _ids = itertools.count(1)

    def __init__(self, open_capture: Callable[[], Any], label: str,
                 on_skip: Callable[[int], None]) -> None:
        # (image, capture time, capture time on the monotonic clock); the image may be a GPU frame
        self.frames: queue.Queue[tuple[Any, float, float]] = queue.Queue(maxsize=1)
        self.opened = threading.Event()  # set once the open finished, successfully or not
        self.ended = threading.Event()  # set when the thread stops delivering (after its last frame)
        self.ok = False
        self.error = "did not open"
        self.size = (0, 0)  # width, height
        self.fps: float | None = None
        self.frame_count = 0  # announced length (a stream of a finite file), 0 when unknown
        self.delivered = 0
        self._open_capture = open_capture
        self._on_skip = on_skip
        self._abandoned = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"capture-{label}-{next(self._ids)}",
                                       daemon=True)
        with _LIVE_LOCK:
            _LIVE.add(self.thread)
        self.thread.start()

    def abandon(self) -> None:
        """Stop reading; the thread releases the capture as soon as its current call returns."""
        self._abandoned.set()

    def _run(self) -> None:
        cap: Any = None
        try:
            cap = self._open_capture()
            if not cap.isOpened():
                return
            fps = cap.get(cv2.CAP_PROP_FPS)
            self.fps = fps if fps and 0 < fps < 1000 else None
            self.frame_count = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
            self.size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
            self.ok = True
            self.error = ""
            self.opened.set()
            failures = 0
            while not self._abandoned.is_set():
                ok, image = cap.read()
                if not ok or image is None:
                    failures += 1
                    if failures >= MAX_READ_FAILURES:
                        self.error = "the stream ended or timed out"
                        return
                    continue
                if failures:
                    self._on_skip(failures)
                    failures = 0
                # a capture that decodes on the GPU (sources.nvdec) hands a device frame and the time its
                # packet was read; OpenCV's captures hand a host image, captured now
                wall, mono = getattr(cap, "stamp", None) or (time.time(), time.monotonic())
                item = (to_bgr8(image) if isinstance(image, np.ndarray) else image, wall, mono)
                self.size = (item[0].shape[1], item[0].shape[0])
                while not self._abandoned.is_set():
                    try:
                        self.frames.put(item, timeout=_POLL_S)
                        self.delivered += 1
                        break
                    except queue.Full:
                        continue
        except Exception as exc:  # cv2.error, or a bug: this connection is over, the source reconnects
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            try:
                if cap is not None:
                    cap.release()
            finally:
                self.opened.set()
                self.ended.set()
                with _LIVE_LOCK:
                    _LIVE.discard(self.thread)


class LiveCaptureSource(FrameSource):
    """A live capture with a watchdog and reconnects. Subclasses say how to open it and how to word errors."""

    def __init__(self, name: str, spec: str, options: LiveOptions | None = None) -> None:
        super().__init__(name, spec, is_live=True)
        self.options = options or LiveOptions()
        global _exit_wait_s
        _exit_wait_s = max(_exit_wait_s, self.options.timeout_s + _OPEN_GRACE_S)
        self.size: tuple[int, int] | None = None  # of the current connection (width, height)
        self.losses = 0  # times the source went down
        self._reconnects = 0
        self._conn: _Connection | None = None
        self._next_index = 0
        self._wake = threading.Event()  # set by stop(): every wait ends at once

    def resume_after(self, index: int) -> None:
        """Number frames from ``index + 1``: a live source cannot go back for what it missed meanwhile."""
        self._next_index = max(self._next_index, index + 1)

    @abstractmethod
    def _capture(self) -> cv2.VideoCapture:
        """Open the capture (runs on a connection thread)."""

    @abstractmethod
    def _open_error(self, reason: str) -> SourceError: ...

    @property
    def reconnects(self) -> int:
        return self._reconnects

    # -- life cycle ------------------------------------------------------------------------------------
    def _open(self) -> None:
        conn = self._connect()
        if conn is None or not conn.ok:
            if conn is not None:
                conn.abandon()
            raise self._open_error(conn.error if conn is not None else "stopped while opening")
        self._use(conn)

    def stop(self, detail: str = "stopped") -> None:
        super().stop(detail)
        self._wake.set()
        conn = self._conn
        if conn is not None:
            conn.abandon()

    def _close(self) -> None:
        """Release the capture (waiting up to 1 s for a read in progress to return; one stuck for longer is
        left to its thread, which releases it when the read returns)."""
        self._wake.set()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abandon()
            conn.thread.join(_CLOSE_WAIT_S)

    # -- reading ---------------------------------------------------------------------------------------
    def _read(self) -> Frame | None:
        while not self.state.is_final:
            conn = self._conn
            if conn is None:
                if not self._reconnect():
                    return None
                continue
            got = self._next_from(conn)
            if got is not None:
                image, wall, mono = got
                frame = Frame(image, self._next_index, wall, mono)
                self._next_index += 1
                return frame
        return None

    def _next_from(self, conn: _Connection) -> tuple[Any, float, float] | None:
        """The connection's next frame; None when it was lost (ended, or silent for ``timeout_s``) or the
        source was stopped."""
        deadline = time.monotonic() + self.options.timeout_s
        while True:
            try:
                return conn.frames.get(timeout=_POLL_S)
            except queue.Empty:
                pass
            if self.state.is_final:
                return None
            if conn.ended.is_set() and conn.frames.empty():
                if conn.frame_count and conn.delivered >= conn.frame_count - 1:
                    # a stream of a finite recording that reached its announced length: the end, not a loss
                    self.detail = f"end of stream ({conn.delivered} frames)"
                    self._conn = None
                    self.stop(self.detail)
                    return None
                reason = conn.error or "the stream ended"
            elif time.monotonic() >= deadline:
                reason = f"no frame for {self.options.timeout_s:g} s"
            else:
                continue
            self._lose(conn, reason)
            return None

    def _lose(self, conn: _Connection, reason: str) -> None:
        conn.abandon()
        self._conn = None
        self.losses += 1
        log.warning("source %s (%s) is down: %s", self.name, self.description, reason)
        self._set_state(SourceState.DOWN, reason)

    def _reconnect(self) -> bool:
        """Back off and reconnect until it works (True), the source is stopped (False), or the attempts run
        out (SourceError)."""
        o = self.options
        of = f"/{o.reconnect_attempts}" if o.reconnect_attempts else ""
        reason = self.detail or "lost"
        attempt = 0
        while not self.state.is_final:
            attempt += 1
            if o.reconnect_attempts and attempt > o.reconnect_attempts:
                raise SourceError(f"{self.description} is down: gave up after {o.reconnect_attempts} "
                                  f"reconnect attempts (last: {reason})",
                                  "check the camera or server; raise [live] reconnect_attempts (0 = never "
                                  "give up)")
            delay = o.delay(attempt)
            self._set_state(SourceState.RECONNECTING, f"attempt {attempt}{of} in {delay:.1f} s")
            if self._wake.wait(delay):
                return False
            conn = self._connect()
            if conn is None:
                return False
            if conn.ok:
                self._use(conn)
                self._reconnects += 1
                w, h = conn.size
                detail = f"reconnected after {attempt} attempt(s), {w}x{h}"
                log.info("source %s (%s): %s", self.name, self.description, detail)
                self._set_state(SourceState.RUNNING, detail)
                return True
            conn.abandon()
            reason = conn.error
            self._set_state(SourceState.DOWN, f"attempt {attempt}{of} failed: {reason}")
        return False

    def _connect(self) -> _Connection | None:
        """A new connection once its open finished (``ok`` tells how), or None if the source was stopped
        meanwhile. An open that outlasts the timeout is abandoned and reported as failed."""
        conn = _Connection(self._capture, self.name, self._skip)
        deadline = time.monotonic() + self.options.timeout_s + _OPEN_GRACE_S
        while not conn.opened.wait(_POLL_S):
            if self._wake.is_set() or (self.cancel is not None and self.cancel.is_set()):
                conn.abandon()
                return None
            if time.monotonic() >= deadline:
                conn.abandon()
                conn.ok = False
                conn.error = f"did not open within {self.options.timeout_s:g} s"
                return conn
        return conn

    def _skip(self, n: int) -> None:
        """``n`` unreadable frames were skipped (a connection thread calls this)."""
        self.skipped += n
        if self.skipped == n or self.skipped // 100 > (self.skipped - n) // 100:
            log.warning("source %s: skipped %d unreadable frame(s) (%d in all)", self.name, n, self.skipped)

    def _use(self, conn: _Connection) -> None:
        old = self.size
        self._conn = conn
        self.fps = conn.fps or self.fps
        self.size = conn.size
        if old is not None and old != conn.size:
            log.info("source %s: resolution changed from %dx%d to %dx%d", self.name, *old, *conn.size)


class StreamSource(LiveCaptureSource):
    """A network stream (rtsp://, http(s):// MJPEG/HLS/progressive, ...) read through OpenCV's FFmpeg backend.
    ``spec`` is the redacted URL; the real one (credentials included) is never logged."""

    kind = "stream"

    def __init__(self, url: str, name: str, redacted: str, options: LiveOptions | None = None) -> None:
        self._url = url  # may hold credentials: never log it
        super().__init__(name, redacted, options)

    def _capture(self) -> cv2.VideoCapture:
        ms = int(self.options.timeout_s * 1e3)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        return cv2.VideoCapture(self._url, cv2.CAP_FFMPEG, params)

    def _open_error(self, reason: str) -> SourceError:
        return SourceError(f"cannot open stream {self.spec}: {reason}",
                           "check the URL, that the server is up and reachable, and the credentials")


class CameraSource(LiveCaptureSource):
    """A local camera by index (``webcam0`` → /dev/video0): newest frame wins; reopened if it drops out."""

    kind = "camera"

    def __init__(self, index: int, name: str, options: LiveOptions | None = None) -> None:
        self.index = index
        super().__init__(name, f"webcam{index}", options)

    def _capture(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(self.index, cv2.CAP_ANY)
        if cap.isOpened():
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # do not let the driver queue stale frames
        return cap

    def _open_error(self, reason: str) -> SourceError:
        return SourceError(f"camera webcam{self.index} (/dev/video{self.index}) did not open",
                           "check that it is connected and not in use by another program")
