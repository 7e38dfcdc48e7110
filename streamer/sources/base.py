"""The frame-source interface: one object per input (camera, file, image folder, URL), read by one thread.

A source is opened once (``open`` raises SourceError with a one-line message when it cannot be), then
``read`` returns frames in order until it returns None (ENDED) or raises SourceError (FAILED). State changes
go to listeners (the pipeline turns them into ``health.<source>`` messages). Live sources that retry after a
loss (network streams, cameras: ``live.LiveCaptureSource``) go DOWN, then RECONNECTING for each attempt, and
back to RUNNING inside ``read``; they FAIL only when they give up.

Adding a kind of source: subclass FrameSource (or video.VideoCaptureSource for anything OpenCV opens),
implement ``_open``/``_read`` (and ``_close``), pass ``is_live`` (the buffer policy follows from it), and
recognise its spec in ``factory.make_source``. ``_read`` blocks until a frame is there; a long wait inside it
(a retry loop) should return None once ``self.state.is_final`` (``stop()`` was called). Raise SourceError
only when giving up; the pipeline then ends that source alone (eos + health "down").
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamer.errors import SourceError

log = logging.getLogger(__name__)


class SourceState(str, enum.Enum):
    CREATED = "created"
    CONNECTING = "connecting"
    RUNNING = "running"
    DOWN = "down"  # lost (no frame within the stall timeout, or the connection ended); will retry
    RECONNECTING = "reconnecting"  # a reconnect attempt is under way
    ENDED = "ended"  # clean end (end of file, or stopped on request)
    FAILED = "failed"  # gave up after an error

    @property
    def is_final(self) -> bool:
        return self in (SourceState.ENDED, SourceState.FAILED)


class Policy(str, enum.Enum):
    """What a source's buffer does when the pipeline is behind (``--policy``, ``SRC#policy=NAME``)."""

    BLOCK = "block"  # the reader waits: nothing is lost (the default for files)
    LATEST = "latest"  # only the newest frame is kept; older ones are dropped and counted (default for live)
    DROP_OLDEST = "drop-oldest"  # a bounded queue (``live_queue`` frames); when full the oldest is dropped

    @classmethod
    def parse(cls, text: str, what: str = "--policy") -> Policy:
        try:
            return cls(text.strip().lower())
        except ValueError:
            raise SourceError(f"{what}: unknown backpressure policy {text!r}",
                              f"choose one of {', '.join(p.value for p in cls)}") from None


StateListener = Callable[["FrameSource", SourceState, str], None]


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame: BGR uint8 HxWx3, its per-source index and capture time, as UNIX epoch seconds (for
    the wire) and on the monotonic clock (for latencies measured in this process: a clock step cannot skew
    them). ``file``: an image source's file, relative to its folder ("" for video)."""

    image: np.ndarray
    index: int
    capture_time: float
    capture_mono: float = field(default_factory=time.monotonic)
    file: str = ""

    def __post_init__(self) -> None:
        if self.image.dtype != np.uint8 or self.image.ndim != 3 or self.image.shape[2] != 3:
            raise ValueError(f"frame must be HxWx3 uint8, got {self.image.shape} {self.image.dtype}")
        if self.index < 0:
            raise ValueError(f"frame index {self.index} < 0")


class FrameSource(ABC):
    """Base of every source. Subclasses implement ``_open``, ``_read`` and ``_close``."""

    kind: str = "source"
    decoder: str = "cpu"  # where its frames are decoded: cpu, or nvdec (streamer.sources.nvdec*)

    def __init__(self, name: str, spec: str, *, is_live: bool, fps: float | None = None,
                 realtime: bool = False) -> None:
        self.name = name  # source id used in topics; the pipeline makes it unique
        self.spec = spec  # what the user typed, redacted (safe to log)
        self.is_live = is_live
        self.fps = fps  # native frames per second, None when unknown
        self.realtime = realtime  # pace reads at ``fps`` (files replayed as if live)
        self.total_frames: int | None = None  # known length (files), for progress bars
        self.frames_read = 0
        self.skipped = 0  # unreadable frames (or images) skipped: counted, logged, never fatal
        self.detail = ""  # why it ended/failed
        self.policy_override: Policy | None = None  # set from ``SRC#policy=NAME`` or ``--policy``
        self.buffer_capacity = 8  # frames its buffer holds (set by the intake; sizes an NVDEC GPU ring)
        self.self_paced = False  # realtime, and it paces and stamps its own frames (the reader must not)
        self.cancel: threading.Event | None = None  # set by the owner to abort a slow open (a stop request)
        self.first_index = 0  # resume_after: frames with a smaller index are read past, not delivered
        self._state = SourceState.CREATED
        self._listeners: list[StateListener] = []
        self._lock = threading.Lock()

    # -- state -------------------------------------------------------------------------------------------
    @property
    def state(self) -> SourceState:
        return self._state

    @property
    def description(self) -> str:
        """``file clip.mp4``, ``camera webcam0``, ``stream rtsp://***@cam/live``, ``demo`` (safe to log)."""
        return self.spec if self.spec == self.kind else f"{self.kind} {self.spec}"

    @property
    def policy(self) -> Policy:
        if self.policy_override is not None:
            return self.policy_override
        return Policy.LATEST if self.is_live else Policy.BLOCK

    @property
    def reconnects(self) -> int:
        """Times the source came back after a loss (live sources that retry)."""
        return 0

    def add_listener(self, listener: StateListener) -> None:
        self._listeners.append(listener)

    def _set_state(self, state: SourceState, detail: str = "") -> None:
        with self._lock:
            if state == self._state or self._state.is_final:
                return
            self._state = state
            self.detail = detail
        log.debug("source %s: %s %s", self.name, state.value, detail)
        for listener in self._listeners:
            try:
                listener(self, state, detail)
            except Exception:  # a listener bug must not kill the reader thread
                log.exception("state listener failed for source %s", self.name)

    def decode_info(self) -> dict[str, Any]:
        """Where this source's frames are decoded (for the summary); NVDEC sources add their decode delay."""
        return {"decoder": self.decoder}

    def configure_gpu(self, row_shape: tuple[int, int] | None, batch: int, keep_pictures: bool,  # noqa: B027
                      decoders: int) -> None:
        """Before reading, for a source that decodes on the GPU: the model's input (H, W) its frames become
        rows of (None: whole pictures only), the largest batch, whether viewers want whole pictures, and how
        many decoder sessions a file may use. Sources decoded on the CPU ignore it."""

    # -- life cycle --------------------------------------------------------------------------------------
    def open(self) -> None:
        """Open the input; raises SourceError (state FAILED) when it cannot be opened."""
        self._set_state(SourceState.CONNECTING)
        try:
            self._open()
        except SourceError as exc:
            self._set_state(SourceState.FAILED, str(exc))
            raise
        self._set_state(SourceState.RUNNING)

    def read(self) -> Frame | None:
        """The next frame, or None at the end. Raises SourceError when the input fails for good."""
        if self._state.is_final:
            return None
        try:
            frame = self._read()
            while frame is not None and frame.index < self.first_index:  # resumed: delivered elsewhere
                self.frames_read += 1
                frame = self._read()
        except SourceError as exc:
            self._set_state(SourceState.FAILED, str(exc))
            raise
        if frame is None:
            self._set_state(SourceState.ENDED, self.detail or "end of input")
            return None
        self.frames_read += 1
        return frame

    def resume_after(self, index: int) -> None:
        """Continue a stream that another run of this source delivered up to frame ``index`` (a restarted
        scale-out worker, :mod:`streamer.scale`): the first frame delivered has a larger index. A file or an
        image list reads past frames 0..index (decoded, not delivered, not counted as drops); a camera or
        stream (:class:`~.live.LiveCaptureSource`) numbers its frames from ``index + 1``. Before ``open``."""
        self.first_index = index + 1

    def input_files(self) -> list[Path]:
        """The files this source reads (none for cameras and streams): outputs must never overwrite them."""
        return []

    def stop(self, detail: str = "stopped") -> None:
        """Mark the source ENDED (on request); the reader thread stops at its next read."""
        self._set_state(SourceState.ENDED, detail)

    def close(self) -> None:
        try:
            self._close()
        except Exception:  # closing is best effort
            log.debug("closing source %s failed", self.name, exc_info=True)

    @abstractmethod
    def _open(self) -> None: ...

    @abstractmethod
    def _read(self) -> Frame | None: ...

    def _close(self) -> None:  # noqa: B027 - optional hook
        pass

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self._state.value}>"
