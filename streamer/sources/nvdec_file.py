"""Video files decoded by NVDEC, several decoders per file, straight into model-input rows on the GPU.

Each decoder is a PyNvVideoCodec ``ThreadedDecoder``: demuxing and decoding run on its own native thread, so
Python only collects finished pictures, a batch at a time (a per-packet ``Decode`` call from Python cost ~10×
more interpreter time per frame, and the interpreter lock, not the GPU, capped several sources). Each batch of
pictures becomes model-input rows in one kernel launch (:mod:`streamer.gpu.rows`).

One file, several decoders: one NVDEC session decodes a 1080p H.264 stream at a few hundred frames/s, while
a GPU has several decoder engines (7 on an H200). A file read to its end (not ``--realtime``) is split at its
key frames into segments of at least ``MIN_SEGMENT`` frames; ``decoders`` sessions take segments in turn (each
starts its segment with an exact seek: ``start_frame``), and frames are placed by their presentation
timestamp into the row of their index, so the source still delivers every frame once, in order. How many
decoders a file gets is the intake's choice (``--nvdec-decoders``; auto: the GPU's decoder engines shared out
among the NVDEC file sources, at most ``MAX_DECODERS_PER_FILE`` each). ``--realtime`` files, files whose
timestamps are not usable (missing or repeated) and runs with viewers (which keep whole pictures) use one.

Damaged input: a frame a decoder does not deliver is skipped and counted; when the demuxer stops before the
container's announced length, the CPU decoder reads on from there (logged), so the rest is not lost.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from streamer.errors import SourceError
from streamer.sources.base import Frame, FrameSource
from streamer.sources.nvdec import (
    DelayStats,
    NvdecUnsupported,
    codec_checks,
    first_line,
    matrix_for,
    nvc_module,
    planes_of,
)
from streamer.sources.video import VideoFileSource

log = logging.getLogger(__name__)

MAX_DECODERS_PER_FILE = 4
MIN_SEGMENT = 120  # frames: shorter segments spend more of their decoder's time seeking than decoding
PICTURES_PER_FETCH = 16  # decoded pictures collected (and converted by one kernel launch) at a time
# pictures a ThreadedDecoder decodes ahead of us: slack for the moments its thread waits for the interpreter
DECODER_BUFFER = 4 * PICTURES_PER_FETCH
_WAIT_S = 0.25  # how often a waiting reader re-checks for a stop


def decoders_per_file(files: int, engines: int, requested: int = 0) -> int:
    """NVDEC sessions each of ``files`` NVDEC file sources gets: ``requested`` when set, else the GPU's
    decoder ``engines`` shared out, at least 1 and at most MAX_DECODERS_PER_FILE. More sessions than engines
    do not pay: opening, scanning and seeking the extra ones costs more start-up than they add
    (``--nvdec-decoders`` overrides it for long files)."""
    if requested > 0:
        return requested
    return max(1, min(MAX_DECODERS_PER_FILE, engines // max(1, files)))


@dataclass
class Segment:
    """Frames ``start`` .. ``stop - 1`` (``stop`` None: to the end of the file), decoded by one session."""

    start: int
    stop: int | None
    done: bool = False
    delivered: int = 0  # pictures of this segment placed into rows

    def __post_init__(self) -> None:
        if self.start < 0 or (self.stop is not None and self.stop <= self.start):
            raise ValueError(f"bad segment {self.start}..{self.stop}")


def plan_segments(keys: list[int], total: int, first: int, decoders: int) -> list[Segment]:
    """Segments of frames ``first`` .. ``total - 1`` from key frames (display indices ``keys``, sorted),
    each at least MIN_SEGMENT long; one segment when there is one decoder or too few frames to share."""
    if decoders <= 1 or total - first < 2 * MIN_SEGMENT:
        return [Segment(first, total)] if total > first else []
    starts = [first]
    for k in keys:
        if k - starts[-1] >= MIN_SEGMENT and total - k >= MIN_SEGMENT // 2:
            starts.append(k)
    return [Segment(a, b) for a, b in zip(starts, [*starts[1:], total], strict=True)]


@dataclass(frozen=True)
class FileIndex:
    """What a scan of a file's packets tells: each frame's presentation timestamp in display order."""

    pts: tuple[int, ...]  # display order
    keys: tuple[int, ...]  # display indices of key frames

    @property
    def frames(self) -> int:
        return len(self.pts)

    def index_of(self) -> dict[int, int]:
        return {p: i for i, p in enumerate(self.pts)}


def scan(demuxer: Any) -> FileIndex | None:
    """Every packet's timestamp (None when they cannot place frames: missing or repeated timestamps)."""
    pts: list[int] = []
    key_pts: list[int] = []
    try:
        for packet in demuxer:
            if not packet.bsl:  # the demuxer's closing empty packet
                continue
            p = int(packet.pts)
            pts.append(p)
            if packet.key:
                key_pts.append(p)
    except Exception as exc:  # a damaged container: what was read so far is the file
        log.debug("NVDEC scan stopped: %s", first_line(exc))
    ordered = sorted(pts)
    if not ordered or ordered[0] < 0 or len(set(ordered)) != len(ordered):
        log.info("NVDEC: the file's timestamps cannot place frames (%d packets, %d distinct, first %s): "
                 "one decoder session", len(ordered), len(set(ordered)), ordered[:1])
        return None
    where = {p: i for i, p in enumerate(ordered)}
    return FileIndex(tuple(ordered), tuple(sorted(where[p] for p in key_pts)))


class _Decoding:
    """``decoders`` threads, each a ThreadedDecoder taking segments in turn, writing rows into ``rows``;
    ``next_ready(i)`` gives frame i's row (or says it was skipped, or that the file ended)."""

    def __init__(self, source: NvdecFileSource, segments: list[Segment], index: FileIndex | None,
                 decoders: int, first_decoder: tuple[Any, Any]) -> None:
        """``first_decoder``: (ThreadedDecoder, its stream), already decoding from ``segments[0].start``."""
        self.source = source
        self.segments = segments
        self._starts = [s.start for s in segments]
        self._index_of = index.index_of() if index is not None else None
        self._todo = list(segments)
        self._cond = threading.Condition()
        depth = source.rows.depth if source.rows is not None else 0
        self._ready: list[int] = [-1] * depth  # row r: the frame index whose row is ready there
        self._pictures: dict[int, Any] = {}  # frame index → whole picture (viewers only)
        self._stop = threading.Event()
        self.errors: list[str] = []
        self.unplaced = 0  # pictures with a timestamp the scan did not see (dropped, counted)
        first_segment = self._todo.pop(0)  # the session that started in _open is at its first frame
        self._first: tuple[Any, Any] | None = first_decoder  # taken by thread 0
        self._threads = [threading.Thread(target=self._work, args=(k, first_segment if k == 0 else None),
                                          name=f"nvdec-{source.name}-{k}", daemon=True)
                         for k in range(max(1, min(decoders, len(segments))))]
        for thread in self._threads:
            thread.start()

    # -- the reader's side -----------------------------------------------------------------------------------
    def wait(self, index: int, stopped: Any) -> str:
        """'ready' (frame ``index``'s row is written), 'skipped' (its decoder did not deliver it), 'end' (past
        the last frame decoded) or 'stopped'."""
        rows = self.source.rows
        assert rows is not None
        r = index % rows.depth
        with self._cond:
            while True:
                if self._ready[r] == index:
                    return "ready"
                seg = self._segment_of(index)
                if seg is None:
                    return "end"
                if seg.done:
                    if seg.stop is None:  # an open-ended segment: its last frame was before this one
                        return "end"
                    return "skipped"
                if stopped():
                    return "stopped"
                self._cond.wait(_WAIT_S)

    def picture(self, index: int) -> Any:
        with self._cond:
            return self._pictures.pop(index, None)

    def _segment_of(self, index: int) -> Segment | None:
        k = bisect.bisect_right(self._starts, index) - 1
        if k < 0:
            return None
        seg = self.segments[k]
        return seg if seg.stop is None or index < seg.stop else None

    def close(self) -> None:
        self._stop.set()
        if self.source.rows is not None:
            self.source.rows.close()
        for thread in self._threads:
            thread.join(5.0)

    # -- the decoders ------------------------------------------------------------------------------------
    def _work(self, k: int, seg: Segment | None) -> None:
        """Decoder thread ``k``: ``seg`` first (thread 0: with the session opened at its start), then the next
        ones. Sessions (and their streams) are dropped with the context current: pycuda cannot free a stream
        anywhere else."""
        src = self.source
        try:
            with src.context.active():
                decoder: tuple[Any, Any] | None = None
                if k == 0:
                    decoder, self._first = self._first, None
                try:
                    while not self._stop.is_set():
                        if seg is None:
                            with self._cond:
                                seg = self._todo.pop(0) if self._todo else None
                            if seg is None:
                                break
                        try:
                            decoder = self._decode(seg, decoder)
                        except Exception as exc:
                            msg = f"decoder {k} failed in frames {seg.start}..{seg.stop}: {first_line(exc)}"
                            log.warning("source %s: NVDEC %s", src.name, msg)
                            self.errors.append(msg)
                            decoder = None
                        finally:
                            with self._cond:
                                seg.done = True
                                self._cond.notify_all()
                        seg = None
                    if decoder is not None:
                        decoder[0].end()
                        decoder[1].synchronize()
                finally:
                    decoder = None
        except Exception as exc:  # a CUDA failure outside a segment: the reader sees the segments end
            log.exception("source %s: NVDEC decoder thread %d failed", src.name, k)
            self.errors.append(first_line(exc))
            with self._cond:
                for rest in self._todo:
                    rest.done = True
                self._todo.clear()
                self._cond.notify_all()

    def _decode(self, seg: Segment, session: tuple[Any, Any] | None) -> tuple[Any, Any]:
        """Frames of ``seg`` into rows; returns the (decoder, stream) session for the next segment. A session
        that fails is ended before the error goes on (its native decoding thread stops with it)."""
        src = self.source
        # a session made here, and the first segment's (opened at its first frame), start where they should
        seek = session is not None and seg is not self.segments[0]
        if session is None:
            session = src.make_session(seg.start)
        try:
            if seek:
                session[0].reconfigure_decoder(str(src.path), seg.start)
            return self._decode_with(seg, session)
        except BaseException:
            with contextlib.suppress(Exception):
                session[0].end()
            raise

    def _decode_with(self, seg: Segment, session: tuple[Any, Any]) -> tuple[Any, Any]:
        decoder, stream = session
        index_of = self._index_of
        next_index = seg.start
        stopped = self._stop.is_set
        while not stopped():
            pictures = decoder.get_batch_frames(PICTURES_PER_FETCH)
            if not pictures:
                return session
            placed: list[tuple[Any, int]] = []
            past_end = False
            for picture in pictures:
                if index_of is None:
                    index = next_index
                    next_index += 1
                else:
                    found = index_of.get(int(picture.getPTS()))
                    if found is None:
                        self.unplaced += 1
                        continue
                    index = found
                if index < seg.start:
                    continue
                if seg.stop is not None and index >= seg.stop:
                    past_end = True
                    break
                placed.append((picture, index))
            if placed and not self._convert(placed, stream):
                return session
            if past_end or (seg.stop is not None and seg.delivered >= seg.stop - seg.start):
                return session
        return session

    def _convert(self, placed: list[tuple[Any, int]], stream: Any) -> bool:
        """Rows (and, for viewers, whole pictures) of ``placed``, then mark them ready."""
        src = self.source
        rows = src.rows
        assert rows is not None
        planes = [planes_of(p) for p, _ in placed]
        if not rows.claim_many([index for _, index in placed], self._stop.is_set):
            return False
        # same size and pitch for every picture of a decoder's batch: one launch (split if the stream changes)
        groups: dict[tuple[int, int, int, int], list[int]] = {}
        for i, pl in enumerate(planes):
            groups.setdefault((pl.width, pl.height, pl.y_pitch, pl.uv_pitch), []).append(i)
        for members in groups.values():
            outs = [rows.ptr(placed[i][1]) for i in members]
            src.resizer.launch_batch([planes[i] for i in members], outs, *rows.shape, stream, src.matrix)
        pictures = None
        if src.keep_pictures and src.ring is not None:
            stream.synchronize()
            pictures = [src.ring.store(pl) for pl in planes]
        stream.synchronize()  # the rows are written, and the decoder may reuse its pictures
        with self._cond:
            for j, (_, index) in enumerate(placed):
                self._ready[index % rows.depth] = index
                if pictures is not None:
                    self._pictures[index] = pictures[j]
            seg = self._segment_of(placed[0][1])
            if seg is not None:
                seg.delivered += len(placed)
            self._cond.notify_all()
        return True


class NvdecFileSource(FrameSource):
    """A video file decoded by NVDEC into model-input rows on the GPU: every frame, in order, as DeviceRows
    (``--realtime``: paced at the file's rate by the reader, like the CPU path)."""

    kind = "file"
    decoder = "nvdec"

    def __init__(self, path: str | Path, name: str, *, realtime: bool = False, device_index: int = 0) -> None:
        self.path = Path(path)
        super().__init__(name, str(path), is_live=realtime, realtime=realtime)
        self.device_index = device_index
        self.delays = DelayStats()  # fetch → delivery of each frame (files: no packet clock to start from)
        self.decoders = 1  # sessions for this file (the intake sets it: configure_gpu)
        self.batch = 64
        self.row_shape: tuple[int, int] | None = None  # the model's input (the pipeline sets it)
        self.keep_pictures = True  # viewers run (or no row shape): keep each whole picture too
        self.rows: Any = None
        self.ring: Any = None  # whole pictures (viewers, or no row shape)
        self.context: Any = None
        self.resizer: Any = None
        self.matrix: Any = None
        self._nvc: Any = None
        self._demuxer: Any = None
        self._codec: Any = None
        self._first_decoder: Any = None
        self._decoding: _Decoding | None = None
        self._next_index = 0
        self._cpu: VideoFileSource | None = None  # reads on after the demuxer gave up on damaged data
        self._ended_at: int | None = None
        self.decode_errors = 0

    def input_files(self) -> list[Path]:
        return [self.path]

    def decode_info(self) -> dict[str, Any]:
        return {"decoder": self.decoder, "decoders": self.decoders if self.decoder == "nvdec" else 0,
                "decode_delay_ms": self.delays.percentiles(), "decode_errors": self.decode_errors}

    def configure_gpu(self, row_shape: tuple[int, int] | None, batch: int, keep_pictures: bool,
                      decoders: int) -> None:
        """Before reading: the model's input (H, W) the rows are made for (None: whole pictures only), the
        largest batch, whether viewers want whole pictures, and how many NVDEC sessions this file may use."""
        self.row_shape = row_shape
        self.batch = max(1, batch)
        self.keep_pictures = keep_pictures or row_shape is None
        self.decoders = 1 if (self.keep_pictures or self.realtime) else max(1, decoders)

    # -- opening -----------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Check that NVDEC takes the file (NvdecUnsupported: the CPU decodes it; SourceError: unreadable)."""
        if self._demuxer is not None:
            return
        if not self.path.is_file():
            raise SourceError(f"video file not found: {self.path}", "check the path passed to --source")
        nvc = nvc_module()
        try:
            demuxer = nvc.CreateDemuxer(str(self.path))
            codec = demuxer.GetNvCodecId()
            size = (int(demuxer.Width()), int(demuxer.Height()))
            reason = codec_checks(nvc, codec, int(demuxer.BitDepth()), demuxer.ChromaFormat(), size,
                                  self.device_index)
        except Exception as exc:
            raise NvdecUnsupported(f"NVDEC's demuxer cannot read {self.path} ({first_line(exc)})") from exc
        if reason:
            raise NvdecUnsupported(f"{self.path}: {reason}")
        self._nvc, self._demuxer, self._codec = nvc, demuxer, codec
        self.size = size
        self.codec = str(codec).rsplit(".", 1)[-1]

    def _open(self) -> None:
        try:
            self.prepare()
        except NvdecUnsupported as exc:
            raise SourceError(str(exc), "decode it on the CPU: --decode cpu (or #decode=cpu)") from exc
        from streamer.gpu.context import PrimaryContext
        from streamer.gpu.nv12 import BT601_LIMITED, Nv12Resizer

        cap = cv2.VideoCapture(str(self.path), cv2.CAP_ANY)  # length and rate, as the CPU path reports them
        try:
            fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0.0
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cap.isOpened() else 0
        finally:
            cap.release()
        demux_fps = float(self._demuxer.FrameRate() or 0.0)
        rate = fps if fps and 0 < fps < 1000 else demux_fps
        self.fps = rate if rate and 0 < rate < 1000 else None
        self.total_frames = count if count > 0 else None
        self.context = PrimaryContext.get(self.device_index)
        try:
            self.matrix = matrix_for(self._demuxer.ColorSpace())
        except Exception:  # no colour tag to read: swscale's default
            self.matrix = BT601_LIMITED
        with self.context.active():
            self.resizer = Nv12Resizer.get(self.context.handle)
        # the first session starts decoding now, while the model loads
        self._first_decoder = self._try_session(self.first_index)

    def _try_session(self, start: int) -> tuple[Any, Any] | None:
        try:
            with self.context.active():
                return self.make_session(start)
        except Exception as exc:  # the reader hands the file to the CPU decoder
            log.warning("source %s: NVDEC cannot start on %s (%s)", self.name, self.path, first_line(exc))
            return None

    def make_session(self, start: int) -> tuple[Any, Any]:
        """(ThreadedDecoder on this file from frame ``start`` — an exact seek —, the stream its pictures are
        on); the caller has the context current."""
        import pycuda.driver as cuda

        stream = cuda.Stream()
        decoder = self._nvc.ThreadedDecoder(str(self.path), DECODER_BUFFER, gpu_id=self.device_index,
                                            cuda_context=self.context.handle, cuda_stream=int(stream.handle),
                                            use_device_memory=True, start_frame=start)
        return decoder, stream

    def _start(self) -> bool:
        """At the first read: rows, the segment plan and the decoder threads. False: NVDEC cannot start."""
        from streamer.gpu.frames import RING_SPARE, Nv12Ring
        from streamer.gpu.rows import ROW_SPARE, RowStore

        if self._first_decoder is None:
            return False
        first = self.first_index
        index = scan(self._demuxer) if self.decoders > 1 else None
        if index is not None:
            total = index.frames
            segments = plan_segments(list(index.keys), total, first, self.decoders)
        else:
            segments = [Segment(first, None)]
        if len(segments) == 1 and index is not None and segments[0].stop is not None:
            segments = [Segment(first, None)]  # one session: frames counted in order, no timestamps needed
            index = None
        if not segments:
            return False
        self.decoders = min(self.decoders, len(segments))
        longest = max((s.stop - s.start) for s in segments) if segments[0].stop is not None else 0
        shape = self.row_shape or (2, 2)  # no row shape: rows unused (whole pictures only)
        ahead = self.decoders * min(longest, 4 * MIN_SEGMENT) if self.decoders > 1 else 0
        depth = self.buffer_capacity + self.batch + ROW_SPARE + ahead  # frames between decoder and engine
        self.rows = RowStore(self.context, shape, depth)
        if self.keep_pictures:  # one session: it never runs more than the rows' depth ahead
            self.ring = Nv12Ring(self.context, depth + RING_SPARE)
        self._decoding = _Decoding(self, segments, index, self.decoders, self._first_decoder)
        self._first_decoder = None
        log.info("source %s: NVDEC with %d decoder%s (%d segment%s)", self.name, self.decoders,
                 "s" if self.decoders > 1 else "", len(segments), "s" if len(segments) > 1 else "")
        return True

    # -- reading -----------------------------------------------------------------------------------------
    def _read(self) -> Frame | None:
        from streamer.gpu.rows import DeviceRow

        if self._cpu is not None:
            return self._read_cpu()
        if self._decoding is None:
            if self._ended_at is not None:
                return None
            self._next_index = self.first_index
            if not self._start():
                self._hand_over(self.total_frames or 0, at=self.first_index)
                return self._read_cpu() if self._cpu is not None else None
        decoding = self._decoding
        assert decoding is not None
        while True:
            index = self._next_index
            t0 = time.monotonic()
            state = decoding.wait(index, lambda: self.state.is_final)
            if state == "ready":
                self._next_index += 1
                picture = decoding.picture(index)
                image = DeviceRow(self.rows if self.row_shape else None, index, (*self.size[::-1], 3),
                                  picture)
                if not self.row_shape:
                    self.rows.release(index)
                self.delays.add(time.monotonic() - t0)
                return Frame(image, index, time.time(), time.monotonic())
            if state == "skipped":
                self._next_index += 1
                self.rows.release(index)
                self.skipped += 1
                self.decode_errors += 1
                if self.decode_errors == 1 or self.decode_errors % 100 == 0:
                    log.warning("source %s: NVDEC did not deliver frame %d (%d skipped in all)", self.name,
                                index, self.decode_errors)
                continue
            if state == "stopped":
                return None
            return self._finish(index)

    def _finish(self, index: int) -> Frame | None:
        """Past the last frame NVDEC decoded: if the file holds more (damaged data), the CPU reads on."""
        self._ended_at = index
        decoding = self._decoding
        if decoding is not None:
            decoding.close()
            if decoding.unplaced:
                log.warning("source %s: %d NVDEC pictures had timestamps the file's index lacks", self.name,
                            decoding.unplaced)
        self._decoding = None
        total = self.total_frames
        if total is not None and index < total and not self.state.is_final:
            self._hand_over(total, at=index)
            if self._cpu is not None:
                return self._read_cpu()
        self.detail = self.detail or "end of file"
        return None

    def _hand_over(self, total: int, at: int) -> None:
        """The CPU decoder reads on from frame ``at`` (NVDEC stopped early, or could not start)."""
        cpu = VideoFileSource(self.path, self.name)
        try:
            cpu.open_at(at, total)
        except Exception as exc:
            self.detail = f"end of input after {at} of {total} frames (NVDEC stopped; the CPU could not " \
                          f"read on: {first_line(exc)})"
            log.warning("source %s: %s", self.name, self.detail)
            cpu.close()
            return
        log.warning("source %s: NVDEC stopped at frame %d of %d; the CPU decoder reads on from there",
                    self.name, at, total)
        self._cpu = cpu

    def _read_cpu(self) -> Frame | None:
        assert self._cpu is not None
        frame = self._cpu.read()
        if frame is None:
            self.skipped += self._cpu.skipped
            self._cpu.skipped = 0
            self.detail = self._cpu.detail or "end of file"
            return None
        self._next_index = frame.index + 1
        return frame

    def _close(self) -> None:
        if self._decoding is not None:
            self._decoding.close()
            self._decoding = None
        first, self._first_decoder = self._first_decoder, None
        if first is not None:
            with contextlib.suppress(Exception), self.context.active():
                try:
                    first[0].end()
                finally:
                    first = None  # its stream is freed here, with the context current
        if self._cpu is not None:
            self._cpu.close()
            self._cpu = None
        # rows and pictures are freed with the last frame that uses them (frames may still wait in a buffer)
        self._demuxer = None
        self.rows = None
        self.ring = None


class NvdecDemoSource(NvdecFileSource):
    """``--source demo`` decoded by NVDEC (the clip and its ground truth, as :class:`~.demo.DemoSource`)."""

    kind = "demo"

    def __init__(self, video: Path, truth: Path, name: str, *, realtime: bool = False) -> None:
        super().__init__(video, name, realtime=realtime)
        self.spec = "demo"
        self.truth_path = Path(truth)
