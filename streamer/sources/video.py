"""Video files read through ``cv2.VideoCapture`` (cameras and network streams: ``live.py``).

A file is read to its real end: a corrupt stretch makes OpenCV's reads fail (one failed read per packet the
decoder rejects) and the frames after it are still decoded. OpenCV cannot tell a failed read at the end of
the file from one inside a corrupt stretch, so a file is taken to be over only after more failed reads in a
row than it has frames left by its header's count, plus ``END_READS`` (a read past the end costs ~10 µs).
Failed reads followed by a frame are undecodable frames: counted in ``skipped``, logged once, summed up at
the end (with FFmpeg's own error count when :mod:`streamer.sources.ffmpeg_log` is installed).
"""

from __future__ import annotations

import logging
import os
import stat
import time
from pathlib import Path

import cv2

from streamer.errors import SourceError
from streamer.preprocess import to_bgr8
from streamer.sources.base import Frame, FrameSource
from streamer.sources.ffmpeg_log import claim, claimed, count_for, unclaim

log = logging.getLogger(__name__)

# failed reads in a row past the frames a file's header still announces before the file is taken to be over
END_READS = 256
# a cap on one run of failed reads (a damaged header can announce any length): ~10 s of corrupt packets
MAX_FAILED_READS = 100_000
STOP_CHECK_READS = 64  # a long run of failed reads looks at stop requests this often


class VideoCaptureSource(FrameSource):
    """Common part: an OpenCV capture, read frame by frame, converted to BGR uint8."""

    def __init__(self, name: str, spec: str, *, is_live: bool, realtime: bool = False) -> None:
        super().__init__(name, spec, is_live=is_live, realtime=realtime)
        self._cap: cv2.VideoCapture | None = None
        self._next_index = 0
        self._claimed = False

    def _capture(self) -> cv2.VideoCapture:
        raise NotImplementedError

    def _open(self) -> None:
        with claimed(self.name):
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
        if not self._claimed:  # FFmpeg's messages from this (the reader's) thread belong to this source
            claim(self.name)
            self._claimed = True
        failures = 0
        while True:
            ok, image = self._cap.read()
            if ok and image is not None:
                break
            failures += 1
            if failures >= self._failure_budget():
                return self._on_end()
            if failures % STOP_CHECK_READS == 0 and self.state.is_final:
                return None  # stop() was called
        if failures:
            self._skip(failures)
        frame = Frame(to_bgr8(image), self._next_index, time.time(), time.monotonic())
        self._next_index += 1
        return frame

    def _failure_budget(self) -> int:
        """Failed reads in a row after which the input is taken to be over."""
        return 1

    def _skip(self, n: int) -> None:
        """``n`` undecodable frames (failed reads) came before the frame about to be returned."""
        self.skipped += n
        level = logging.WARNING if self.skipped == n else logging.DEBUG  # the end sums them up
        log.log(level, "source %s: %d undecodable frame(s) skipped before frame %d (%d in all)", self.name, n,
                self._next_index, self.skipped)

    def _on_end(self) -> Frame | None:
        """The input is over: set ``detail``; return None (ended) or raise SourceError."""
        self.detail = "end of input"
        return None

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()  # explicitly, without the GIL: see streamer.sources.ffmpeg_log
            self._cap = None
        if self._claimed:
            unclaim()
            self._claimed = False


class VideoFileSource(VideoCaptureSource):
    """A video file: every frame, in order. With ``realtime`` it is paced at its native FPS as if live."""

    kind = "file"

    def __init__(self, path: str | Path, name: str, *, realtime: bool = False) -> None:
        self.path = Path(path)
        super().__init__(name, str(path), is_live=realtime, realtime=realtime)

    def input_files(self) -> list[Path]:
        return [self.path]

    def _capture(self) -> cv2.VideoCapture:
        check_readable_file(self.path, "video file")
        return cv2.VideoCapture(str(self.path), cv2.CAP_ANY)

    def open_at(self, index: int, total: int | None) -> None:
        """Open the file at frame ``index`` (seeked, not decoded up to it) for a reader that takes over there:
        NVDEC's hand-over when its demuxer gave up on damaged data (streamer.sources.nvdec)."""
        self._open()
        assert self._cap is not None
        if index:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        self._next_index = index
        self.total_frames = total

    def _open_error(self) -> SourceError:
        return SourceError(f"cannot decode video file {self.path}",
                           "is it a video? OpenCV/FFmpeg could not open it; try `ffprobe` on it")

    def _failure_budget(self) -> int:
        left = 0 if self.total_frames is None else self.total_frames - self._next_index - self.skipped
        return min(MAX_FAILED_READS, END_READS + max(0, left))

    def _on_end(self) -> Frame | None:
        decoded, skipped = self._next_index, self.skipped
        self.detail = "end of file" + (f" ({skipped} undecodable frames skipped)" if skipped else "")
        if skipped:
            errors = count_for(self.name)
            log.warning("source %s: end of file after %d frames; %d undecodable frame(s) skipped%s",
                        self.name, decoded, skipped, f" (FFmpeg reported {errors} decoding errors; "
                                                     "--log-level debug shows them)" if errors else "")
        if self.total_frames is not None and decoded + skipped < self.total_frames:
            # not a warning: a header's count is also larger when an edit list hides frames (a stream-copied
            # cut); a truncated file shows here too
            log.info("source %s: its header announces %d frames; the file held %d decodable%s (a truncated "
                     "file, or an edit list)", self.name, self.total_frames, decoded,
                     f" and {skipped} undecodable" if skipped else "")
        return None


def check_readable_file(path: Path, what: str) -> None:
    """SourceError unless ``path`` is a regular file this process may read (a device or a pipe is not)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SourceError(f"{what} not found: {path}", "check the path passed to --source") from None
    except OSError as exc:
        raise SourceError(f"cannot read {what} {path}: {exc.strerror}", "check the path and its permissions"
                          ) from None
    if not stat.S_ISREG(mode):
        raise SourceError(f"{what} {path} is {describe_mode(mode)}, not a regular file",
                          "give a video file, an image folder, a camera (webcam<N>) or a URL to --source")
    if not os.access(path, os.R_OK):
        raise SourceError(f"{what} not readable: {path}", "check its permissions")


def describe_mode(mode: int) -> str:
    """What a non-regular file is, in words: ``a character device``, ``a named pipe (FIFO)`` ..."""
    for test, words in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                        (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                        (stat.S_ISDIR, "a directory")):
        if test(mode):
            return words
    return "not a regular file"
