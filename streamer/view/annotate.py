"""``--annotate PATH``: each classified frame, with its overlay (streamer.view.draw), into a video file.

One source: PATH is the file (``.mp4``, ``.m4v``, ``.mov``, ``.avi`` or ``.mkv``). Several sources, or a
service (``--keep-running``), or a PATH without a video suffix: PATH is a directory (made if missing; its
parent must exist) holding ``<source>.mp4`` per source, sources added while running included.

Each source's video has its own thread and a bounded queue of (prediction, image) pairs. A file source
(policy ``block``) is lossless: one video frame per prediction, in order, so the results thread waits for a
full queue, and the run goes no faster than the encoder. A live source (``latest``, ``drop-oldest``) never
waits: a frame that finds its queue full is dropped and counted (the log and the summary's ``annotate``).

Codec: H.264 where this OpenCV build has an encoder for it, else MPEG-4 Part 2 (``mp4v``; ``.avi``/``.mkv``:
Motion JPEG), probed once at start-up and logged. The frame rate is the source's own (25 when it has none).

Nothing is overwritten that the streamer did not write: the checks of streamer.outputs apply (an input, or
an existing file that is not an annotated video, is refused at start-up; a source added later whose file is
taken is not annotated, with an error in the log). A video is written under a temporary name beside its
target and renamed over it when its source ends (or the run stops), with :data:`ANNOTATION_MARK` appended in
a padding box of its container, which players skip: that is how a later run knows the file is one to
replace.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import queue
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from streamer.errors import ConfigError, StreamerError
from streamer.outputs import ANNOTATION, ANNOTATION_MARK, check_outputs
from streamer.protocol import Prediction
from streamer.sources import ffmpeg_log
from streamer.view import draw

log = logging.getLogger(__name__)

FLAG = "--annotate"
QUEUE_FRAMES = 16  # per source: what the encoder may lag behind (full frames, by reference)
DEFAULT_FPS = 25.0  # for a source that has no frame rate of its own (images, some cameras)
FINISH_TIMEOUT_S = 120.0  # a video's last queued frames are encoded within this at the end
FPS_WINDOW_S = 1.0  # the fps drawn on a frame: predictions of its source over the last second
DIRECTORY_SUFFIX = ".mp4"
MP4_LIKE = (".mp4", ".m4v", ".mov")
# container → fourccs to try, best first
CODECS: dict[str, tuple[str, ...]] = {**{s: ("avc1", "mp4v") for s in MP4_LIKE},
                                      ".avi": ("H264", "MJPG"), ".mkv": ("H264", "MJPG")}
CODEC_NAMES = {"avc1": "H.264", "H264": "H.264", "mp4v": "MPEG-4 Part 2", "MJPG": "Motion JPEG"}
_SUFFIXES = ", ".join(CODECS)
_DIRECTORY_HINT = f"give a directory: {FLAG} annotated/ writes one <source>{DIRECTORY_SUFFIX} per source"


def trailer(suffix: str) -> bytes:
    """What is appended to a finished video: :data:`ANNOTATION_MARK` inside its container's padding box (an
    ISO-BMFF ``free`` box, a RIFF ``JUNK`` chunk, an EBML ``Void`` element), so the file stays valid."""
    payload = ANNOTATION_MARK
    if suffix in MP4_LIKE:
        return struct.pack(">I4s", 8 + len(payload), b"free") + payload
    if suffix == ".avi":
        if len(payload) % 2:  # RIFF chunks are padded to even sizes: pad in front, the mark stays last
            payload = b" " + payload
        return b"JUNK" + struct.pack("<I", len(payload)) + payload
    if suffix == ".mkv":
        return b"\xec\x01" + len(payload).to_bytes(7, "big") + payload  # Void, 8-byte size
    raise ValueError(f"no trailer for {suffix}")


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """OpenCV prints an error for each codec it cannot open; a probe expects some to fail."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        with ffmpeg_log.claimed("--annotate encoder"):  # FFmpeg's complaints are not a source's
            yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def open_writer(path: Path, fourccs: tuple[str, ...], fps: float, size: tuple[int, int]
                ) -> tuple[cv2.VideoWriter, str] | None:
    """The first of ``fourccs`` OpenCV opens for ``path`` (its suffix picks the container), or None."""
    with _quiet_opencv():
        for fourcc in fourccs:
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
            if writer.isOpened():
                return writer, fourcc
            writer.release()
    return None


def probe_codec(directory: Path, suffix: str) -> str:
    """The fourcc this OpenCV writes ``suffix`` videos with (a 64x64 frame into a file of our own, removed
    again); ConfigError when there is none."""
    fd, name = tempfile.mkstemp(prefix=".streamer-probe.", suffix=suffix, dir=directory)  # ours alone
    os.close(fd)
    probe = Path(name)
    opened = None
    try:
        opened = open_writer(probe, CODECS[suffix], DEFAULT_FPS, (64, 64))
        if opened is not None:
            opened[0].write(np.zeros((64, 64, 3), np.uint8))
            opened[0].release()
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    if opened is None:
        others = [s for s in CODECS if s != suffix]
        raise ConfigError(f"{FLAG}: this OpenCV build cannot write {suffix} video (tried "
                          f"{', '.join(CODECS[suffix])})", f"try another container: {', '.join(others)}")
    fourcc = opened[1]
    if fourcc != CODECS[suffix][0]:
        log.info("%s: no H.264 encoder in this OpenCV build: writing %s (%s) instead", FLAG,
                 CODEC_NAMES[fourcc], fourcc)
    return fourcc


# -- where the videos go ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class AnnotatePlan:
    """``--annotate PATH`` resolved: one ``file`` for the run's only source, or a ``directory``."""

    text: str
    file: Path | None = None
    directory: Path | None = None

    @classmethod
    def resolve(cls, text: str, sources: list[str], keep_running: bool) -> AnnotatePlan:
        path = Path(text).expanduser()
        as_dir = path.is_dir() or text.endswith(("/", os.sep)) or (not path.suffix and not path.exists())
        if as_dir:
            if path.exists() and not path.is_dir():
                raise ConfigError(f"{FLAG} {text!r} exists and is not a directory",
                                  f"give a directory for one video per source, or a file ({_SUFFIXES})")
            if not path.exists() and not path.parent.is_dir():
                raise ConfigError(f"{FLAG} {text!r}: directory {str(path.parent)!r} does not exist",
                                  "create it, or choose a directory in an existing one")
            return cls(text, directory=path)
        suffix = path.suffix.lower()
        if suffix not in CODECS:
            raise ConfigError(f"{FLAG} {text!r}: {suffix or 'no suffix'} is not a video container it writes",
                              f"end the file name in {_SUFFIXES}, or give a directory (one video per source)")
        if keep_running:
            raise ConfigError(f"{FLAG} {text!r} is one file, but a service's sources come and go",
                              _DIRECTORY_HINT)
        if len(sources) != 1:
            raise ConfigError(f"{FLAG} {text!r} is one file, but the run has {len(sources)} sources",
                              _DIRECTORY_HINT)
        if path.exists() and not path.is_file():
            raise ConfigError(f"{FLAG} {text!r} is not a regular file", "give a video file name")
        return cls(text, file=path)

    @property
    def suffix(self) -> str:
        return self.file.suffix.lower() if self.file is not None else DIRECTORY_SUFFIX

    @property
    def folder(self) -> Path:
        """Where the videos (and their temporary files) go."""
        return self.file.parent if self.file is not None else self.directory  # type: ignore[return-value]

    def path_for(self, source: str) -> Path:
        return self.file if self.file is not None else self.folder / f"{source}{DIRECTORY_SUFFIX}"

    def outputs(self, sources: list[str]) -> dict[str, tuple[str, str]]:
        """What streamer.outputs.check_outputs checks before the run (flag → (path, kind))."""
        if self.file is not None:
            return {FLAG: (str(self.file), ANNOTATION)}
        if self.directory is None or not self.directory.is_dir():
            return {}  # made at start-up: nothing in it to overwrite
        return {f"{FLAG} ({name})": (str(self.path_for(name)), ANNOTATION) for name in sources}

    def check_writable(self) -> None:
        folder = self.folder
        if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(f"cannot write {FLAG} {self.text!r}: directory {str(folder)!r} is not writable",
                              "choose a writable directory")
        if folder.is_dir() or self.directory is None:
            return
        if not os.access(folder.parent, os.W_OK | os.X_OK):
            raise ConfigError(f"cannot make {FLAG} directory {self.text!r}: {str(folder.parent)!r} is not "
                              "writable", "choose a writable directory")


# -- one source's video ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoReport:
    """What became of one source's video (the summary's ``annotate``)."""

    source: str
    path: str
    frames: int  # written
    dropped: int  # not written: its queue was full (live sources), or the encoder failed
    codec: str
    error: str = ""

    def __post_init__(self) -> None:
        if self.frames < 0 or self.dropped < 0:
            raise ValueError("negative counts")


class SourceVideo:
    """One source's annotated video, encoded on its own thread from a bounded queue."""

    def __init__(self, source: str, path: Path, fourccs: tuple[str, ...], fps: float | None, lossless: bool,
                 copy_frames: bool, queue_frames: int = QUEUE_FRAMES) -> None:
        """``lossless``: ``put`` waits for room instead of dropping; ``copy_frames``: draw on a copy (the
        preview shows the same images)."""
        self.source = source
        self.path = path
        self.fourccs = fourccs
        self.fps = fps if fps and fps > 0 else DEFAULT_FPS
        self.lossless = lossless
        self.copy_frames = copy_frames
        self.frames = 0
        self.dropped = 0
        self.fourcc = ""
        self.error = ""
        self.temp = _temporary(path)
        self._queue: queue.Queue[tuple[Prediction, np.ndarray] | None] = queue.Queue(queue_frames)
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] = (0, 0)
        self._published: collections.deque[float] = collections.deque()
        self._finished = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"annotate-{source}", daemon=True)
        self._thread.start()

    def put(self, pred: Prediction, image: np.ndarray) -> None:
        """Queue one frame (results thread). Lossless: wait while the queue is full (the encoder is behind),
        unless the encoder has failed; else a full queue drops the frame (counted)."""
        item = (pred, image)
        if not self.lossless:
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                self._drop()
            return
        while not self.error and self._thread.is_alive():
            try:
                self._queue.put(item, timeout=0.25)
                return
            except queue.Full:
                continue
        self._drop()

    def _drop(self) -> None:
        with self._lock:  # the results thread and the encoder's both count
            self.dropped += 1

    def finish(self, timeout: float = FINISH_TIMEOUT_S) -> VideoReport:
        """No more frames: encode what is queued, close the file, put it in place. Idempotent."""
        if not self._finished:
            self._finished = True
            deadline = time.monotonic() + timeout
            while self._thread.is_alive() and time.monotonic() < deadline:
                try:
                    self._queue.put(None, timeout=0.25)
                    break
                except queue.Full:
                    continue
            self._thread.join(max(0.0, deadline - time.monotonic()))
            if self._thread.is_alive():
                self.error = self.error or f"the encoder did not finish within {timeout:.0f} s"
                log.error("%s: %s: %s", FLAG, self.path, self.error)
        return self.report()

    def report(self) -> VideoReport:
        return VideoReport(self.source, str(self.path), self.frames, self.dropped,
                           CODEC_NAMES.get(self.fourcc, self.fourcc), self.error)

    def _run(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                if self.error:
                    self._drop()
                    continue
                try:
                    self._write(*item)
                except Exception as exc:  # the encoder failed: the rest of this source is dropped, counted
                    self.error = f"{type(exc).__name__}: {exc}"
                    self._drop()
                    log.error("%s: writing %s failed: %s; its later frames are dropped", FLAG, self.path,
                              self.error)
            self._close()
        except Exception as exc:
            self.error = self.error or f"{type(exc).__name__}: {exc}"
            log.exception("%s: the encoder of %s failed", FLAG, self.source)

    def _fps(self, publish_time: float) -> float | None:
        """Predictions of this source per second over the last FPS_WINDOW_S (by their publish times)."""
        times = self._published
        times.append(publish_time)
        while times and times[0] < publish_time - FPS_WINDOW_S:
            times.popleft()
        span = times[-1] - times[0]
        return (len(times) - 1) / span if len(times) > 1 and span > 0 else None

    def _write(self, pred: Prediction, image: np.ndarray) -> None:
        frame = draw.fit(image)
        if self._writer is None:
            self._open(frame.shape[1] + frame.shape[1] % 2, frame.shape[0] + frame.shape[0] % 2)
        if frame.shape[1] != self._size[0] or frame.shape[0] != self._size[1]:
            frame = _to_size(frame, self._size)  # odd sizes, images of another size than the first
        elif frame is image and self.copy_frames:
            frame = image.copy()
        fps = self._fps(pred.publish_time)
        draw.draw(frame, pred, fps, pred.latency_ms)
        assert self._writer is not None
        self._writer.write(frame)
        self.frames += 1

    def _open(self, width: int, height: int) -> None:
        opened = open_writer(self.temp, self.fourccs, self.fps, (width, height))
        if opened is None:
            raise StreamerError(f"OpenCV cannot open a {self.path.suffix} writer ({', '.join(self.fourccs)}) "
                                f"for {width}x{height}")
        self._writer, self.fourcc = opened
        self._size = (width, height)
        log.info("%s: %s → %s (%s, %dx%d, %.3g fps)", FLAG, self.source, self.path, CODEC_NAMES[self.fourcc],
                 width, height, self.fps)

    def _close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            with contextlib.suppress(OSError):
                self.temp.unlink()
            if not self.error:
                log.info("%s: %s had no frames: no video written", FLAG, self.source)
            return
        writer.release()
        try:
            if self.error or not self.temp.is_file() or self.temp.stat().st_size == 0:
                raise OSError(self.error or "the encoder wrote nothing")
            with open(self.temp, "ab") as f:
                f.write(trailer(self.path.suffix.lower()))
                f.flush()
                os.fsync(f.fileno())
            os.replace(self.temp, self.path)
        except OSError as exc:
            self.error = self.error or (exc.strerror or str(exc))
            log.error("%s: %s could not be written: %s", FLAG, self.path, self.error)
            with contextlib.suppress(OSError):
                self.temp.unlink()
            return
        log.info("%s: %s: %d frames written to %s%s", FLAG, self.source, self.frames, self.path,
                 f", {self.dropped} dropped (the encoder was behind)" if self.dropped else "")


def _temporary(path: Path) -> Path:
    """A new, empty file of our own beside ``path``, named ``.<stem>.<random>.partial<suffix>``."""
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(fd)
    return Path(name)


def _to_size(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``frame`` as ``size`` (width, height): padded by a pixel for an odd size, else resized."""
    w, h = size
    if 0 <= w - frame.shape[1] <= 1 and 0 <= h - frame.shape[0] <= 1:
        return cv2.copyMakeBorder(frame, 0, h - frame.shape[0], 0, w - frame.shape[1], cv2.BORDER_REPLICATE)
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


# -- every source ----------------------------------------------------------------------------------------
# source name → (its frame rate or None, lossless: its policy is block)
SourceInfo = Callable[[str], tuple[float | None, bool]]


class Annotator:
    """The videos of a run: one SourceVideo per annotated source, made at its first frame."""

    def __init__(self, plan: AnnotatePlan, info: SourceInfo, copy_frames: bool = False,
                 inputs: Callable[[], list[Path]] = list) -> None:
        """``info``: a source's frame rate and policy; ``inputs``: the run's input files (a source added
        later must not be written over either)."""
        self.plan = plan
        self.info = info
        self.copy_frames = copy_frames
        self.inputs = inputs
        self.fourcc = ""
        self._videos: dict[str, SourceVideo | None] = {}  # None: refused (its file is taken)
        self._reports: dict[str, VideoReport] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        """Make the directory, probe the codec (ConfigError when none works)."""
        self.plan.check_writable()
        if self.plan.directory is not None and not self.plan.directory.is_dir():
            try:
                self.plan.directory.mkdir()
            except OSError as exc:
                raise ConfigError(f"cannot make {FLAG} directory {self.plan.text!r}: {exc.strerror}",
                                  "choose a writable directory") from None
        self.fourcc = probe_codec(self.plan.folder, self.plan.suffix)

    def show(self, pred: Prediction, image: np.ndarray) -> None:
        video = self._videos.get(pred.source)
        if video is None:
            if pred.source in self._videos:
                return  # refused: logged once
            video = self._open(pred.source)
            if video is None:
                return
        video.put(pred, image)

    def _open(self, source: str) -> SourceVideo | None:
        path = self.plan.path_for(source)
        if self.plan.directory is not None:
            try:  # a source added while running: the same checks as at start-up
                check_outputs({f"{FLAG} ({source})": (str(path), ANNOTATION)}, self.inputs())
            except ConfigError as exc:
                log.error("source %s is not annotated: %s", source, exc)
                with self._lock:
                    self._videos[source] = None
                return None
        fps, lossless = self.info(source)
        fourccs = tuple(dict.fromkeys((self.fourcc, *CODECS[self.plan.suffix]))) if self.fourcc \
            else CODECS[self.plan.suffix]
        try:
            video = SourceVideo(source, path, fourccs, fps, lossless, self.copy_frames)
        except OSError as exc:  # its directory went away, or is no longer writable
            log.error("source %s is not annotated: cannot write beside %s: %s", source, path,
                      exc.strerror or exc)
            with self._lock:
                self._videos[source] = None
            return None
        with self._lock:
            self._videos[source] = video
        return video

    def end(self, source: str) -> None:
        """The source's last prediction is in: finish its video."""
        with self._lock:
            video = self._videos.get(source)
        if video is not None:
            self._reports[source] = video.finish()

    def close(self) -> None:
        with self._lock:
            videos = [v for v in self._videos.values() if v is not None]
        for video in videos:
            self._reports[video.source] = video.finish()

    def reports(self) -> list[VideoReport]:
        with self._lock:
            videos = [v for v in self._videos.values() if v is not None]
        return [self._reports.get(v.source) or v.report() for v in videos]

