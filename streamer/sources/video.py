"""Video files read through ``cv2.VideoCapture`` (cameras and network streams: ``live.py``)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import cv2

from streamer.errors import SourceError
from streamer.preprocess import to_bgr8
from streamer.sources.base import Frame, FrameSource

log = logging.getLogger(__name__)

# consecutive failed reads tolerated before a file is taken to be over (corrupt packets are skipped)
MAX_READ_FAILURES = 5


class VideoCaptureSource(FrameSource):
    """Common part: an OpenCV capture, read frame by frame, converted to BGR uint8."""

    def __init__(self, name: str, spec: str, *, is_live: bool, realtime: bool = False) -> None:
        super().__init__(name, spec, is_live=is_live, realtime=realtime)
        self._cap: cv2.VideoCapture | None = None
        self._next_index = 0

    def _capture(self) -> cv2.VideoCapture:
        raise NotImplementedError

    def _open(self) -> None:
        cap = self._capture()
        if not cap.isOpened():
            cap.release()
            raise self._open_error()
        self._cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and 0 < fps < 1000 else None
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if not self.is_live or self.realtime:
            self.total_frames = count if count > 0 else None

    def _open_error(self) -> SourceError:
        raise NotImplementedError

    def _read(self) -> Frame | None:
        assert self._cap is not None, "read before open"
        failures = 0
        while True:
            ok, image = self._cap.read()
            if ok and image is not None:
                break
            failures += 1
            if self._at_end() or failures >= MAX_READ_FAILURES:
                return self._on_read_failure(failures)
        if failures:  # a corrupt packet in the middle: skipped, counted, logged
            self.skipped += failures
            log.warning("source %s: skipped %d unreadable frame(s) before frame %d (%d in all)", self.name,
                        failures, self._next_index, self.skipped)
        frame = Frame(to_bgr8(image), self._next_index, time.time(), time.monotonic())
        self._next_index += 1
        return frame

    def _at_end(self) -> bool:
        """True when a failed read means the input is over (no point retrying)."""
        return False

    def _on_read_failure(self, failures: int) -> Frame | None:
        """Called after ``failures`` consecutive failed reads: return None (ended) or raise SourceError."""
        return None

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class VideoFileSource(VideoCaptureSource):
    """A video file: every frame, in order. With ``realtime`` it is paced at its native FPS as if live."""

    kind = "file"

    def __init__(self, path: str | Path, name: str, *, realtime: bool = False) -> None:
        self.path = Path(path)
        super().__init__(name, str(path), is_live=realtime, realtime=realtime)

    def _capture(self) -> cv2.VideoCapture:
        if not self.path.is_file():
            raise SourceError(f"video file not found: {self.path}", "check the path passed to --source")
        if not os.access(self.path, os.R_OK):
            raise SourceError(f"video file not readable: {self.path}", "check its permissions")
        return cv2.VideoCapture(str(self.path), cv2.CAP_ANY)

    def _open_error(self) -> SourceError:
        return SourceError(f"cannot decode video file {self.path}",
                           "is it a video? OpenCV/FFmpeg could not open it; try `ffprobe` on it")

    def _at_end(self) -> bool:
        # without a known length, the first failed read is the end; with one, a failure before it is a
        # corrupt packet worth skipping
        return self.total_frames is None or self._next_index >= self.total_frames

    def _on_read_failure(self, failures: int) -> Frame | None:
        if self.total_frames is not None and self._next_index < self.total_frames:
            self.detail = (f"end of input after {self._next_index} of {self.total_frames} frames "
                           f"({failures} unreadable)")
            log.warning("source %s: %s", self.name, self.detail)
        else:
            self.detail = "end of file"
        return None
