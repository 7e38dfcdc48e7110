"""NVDEC decoding through PyNvVideoCodec (``pip install 'streamer[nvdec]'``): frames that stay on the GPU.

Files go through PyNvVideoCodec's own demuxer (FFmpeg) and one NVDEC decoder per source; live streams
(rtsp://, http(s)://, ...) are demuxed by OpenCV's FFmpeg backend in *raw* mode — packets, not pictures, with
its open/read timeouts, on the live sources' watchdog thread (PyNvVideoCodec's own network reads hold the
Python interpreter lock while they wait, which would stall every thread of the process) — and each packet is
handed to the NVDEC decoder in low-latency mode (``DisplayDecodeLatencyType.LOW`` + end-of-picture flag: a
picture comes out of the packet that completes it, none is held back). The existing policies, reconnects and
health events apply unchanged (:class:`NvdecStreamSource` is a :class:`~.live.StreamSource`).

Every decoded picture is copied into the source's :class:`~streamer.gpu.frames.Nv12Ring` and travels as a
:class:`~streamer.gpu.frames.DeviceFrame`; the batcher converts and resizes it on the device into a slot row.
A frame's capture time is when its packet was read (a paced file: when the packet was due), so time a picture
spends inside the decoder counts in capture→publish; that decode delay is also measured on its own
(``decode_delay_ms``).

Sharing decoders: one NVDEC session per source, always. The driver time-slices sessions over the GPU's decoder
engines (7 on an H200), so sources beyond the engine count share them and the aggregate stays at the engines'
limit; a session cannot be shared by two bitstreams. ``auto`` and ``nvdec`` fall back to CPU decoding for a
source NVDEC cannot take (its codec, bit depth, chroma format or size), logging why.

Damaged input: a packet the decoder rejects is skipped and counted; a file whose demuxer gives up before its
announced length is read on from there by the CPU decoder (logged), so the rest of the file is not lost.
"""

from __future__ import annotations

import collections
import functools
import importlib.util
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from streamer.cuda_env import no_gpu_reason, pycuda_reason
from streamer.errors import BackendUnavailableError, SourceError
from streamer.sources.base import Frame, FrameSource
from streamer.sources.live import LiveOptions, StreamSource
from streamer.sources.video import VideoFileSource

log = logging.getLogger(__name__)

NVDEC_EXTRA = "pip install 'streamer[nvdec]'"
DECODE_CHOICES = ("auto", "cpu", "nvdec")
MAX_CONSECUTIVE_ERRORS = 30  # packets in a row the decoder rejects before the input counts as unreadable
STAMPS_KEPT = 256  # packet read times waiting for their picture
DELAYS_KEPT = 50_000  # decode delays kept for the percentiles (a bounded sample)
# OpenCV FOURCC (raw mode) → PyNvVideoCodec codec name
FOURCC_CODECS = {"h264": "H264", "avc1": "H264", "x264": "H264", "hevc": "HEVC", "h265": "HEVC",
                 "hev1": "HEVC", "hvc1": "HEVC", "av01": "AV1", "vp09": "VP9", "vp80": "VP8",
                 "mpg2": "MPEG2", "mp4v": "MPEG4"}


class NvdecUnsupported(SourceError):
    """NVDEC cannot decode this input (codec, bit depth, chroma format, size): the CPU decoder takes it."""


def nvc_module() -> Any:
    """``PyNvVideoCodec``, imported quietly: its import logs INFO lines through the root logger (and sets its
    own logger's level to INFO), so its logger is disabled for the import and left at WARNING."""
    own = logging.getLogger("PyNvVideoCodec")
    was_disabled, own.disabled = own.disabled, True
    try:
        import PyNvVideoCodec
    finally:
        own.disabled = was_disabled
        own.setLevel(logging.WARNING)
    return PyNvVideoCodec


@functools.lru_cache(maxsize=1)
def nvdec_reason() -> str | None:
    """None when NVDEC decoding can run here; else why not (cheap checks first, cached)."""
    if importlib.util.find_spec("PyNvVideoCodec") is None:
        return f"PyNvVideoCodec is not installed ({NVDEC_EXTRA})"
    reason = no_gpu_reason() or pycuda_reason()
    if reason:
        return reason
    try:
        nvc_module()
    except Exception as exc:  # no libnvcuvid/libnvidia-encode, a driver too old: it raises RuntimeError
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        return f"PyNvVideoCodec does not load ({type(exc).__name__}: {first})"
    return None


def require_nvdec(what: str) -> None:
    """A one-line error when ``--decode nvdec`` cannot run here at all."""
    reason = nvdec_reason()
    if reason is not None:
        raise BackendUnavailableError(f"{what}: NVDEC decoding is not available: {reason}",
                                      "NVDEC needs an NVIDIA GPU and that extra; or --decode auto|cpu")


class DelayStats:
    """Decode delays (packet read → picture out of the decoder), thread-safe, bounded."""

    def __init__(self) -> None:
        self._ms: collections.deque[float] = collections.deque(maxlen=DELAYS_KEPT)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self._ms.append(seconds * 1e3)

    def percentiles(self) -> dict[str, float | None]:
        with self._lock:
            values = np.asarray(self._ms, np.float64)
        if not values.size:
            return {"p50": None, "p99": None, "max": None, "frames": 0}
        p50, p99 = np.percentile(values, (50, 99))
        return {"p50": round(float(p50), 3), "p99": round(float(p99), 3),
                "max": round(float(values.max()), 3), "frames": int(values.size)}


class NvdecDecoder:
    """One NVDEC session writing into a ring: ``decode(packet)`` → [(DeviceFrame, pts)], in display order."""

    _ready_method: str | None = None  # how decoded pictures are waited for (found once per process)

    def __init__(self, nvc: Any, codec: Any, ring: Any, *, low_latency: bool, device_index: int = 0) -> None:
        self._nvc = nvc
        self.ring = ring
        latency = nvc.DisplayDecodeLatencyType.LOW if low_latency else nvc.DisplayDecodeLatencyType.NATIVE
        self._end_of_picture = nvc.VideoPacketFlag.ENDOFPICTURE if low_latency else None
        with ring.context.active():
            self._dec = nvc.CreateDecoder(gpuid=device_index, codec=codec,
                                          cudacontext=ring.context.handle, cudastream=ring.stream_handle,
                                          usedevicememory=True, latency=latency)

    def decode(self, packet: Any) -> list[tuple[Any, int]]:
        if self._end_of_picture is not None and packet.bsl:
            packet.decode_flag = self._end_of_picture
        pictures = self._dec.Decode(packet)
        if not pictures:
            return []
        self._wait_ready()
        return [(self.ring.store(_planes(p)), int(p.getPTS())) for p in pictures]

    def flush(self) -> list[tuple[Any, int]]:
        """Pictures still inside the decoder at the end of the input."""
        try:
            return self.decode(self._nvc.PacketData())
        except Exception as exc:
            log.debug("NVDEC flush: %s: %s", type(exc).__name__, exc)
            return []

    def _wait_ready(self) -> None:
        """Make the ring's stream wait for the decoder's own post-processing copy of the pictures."""
        method = NvdecDecoder._ready_method
        if method in (None, "wait"):
            try:
                self._dec.WaitOnCUStream(self.ring.stream_handle)
                NvdecDecoder._ready_method = "wait"
                return
            except (TypeError, AttributeError, RuntimeError) as exc:
                if method == "wait":
                    raise
                log.debug("NVDEC WaitOnCUStream(stream) unavailable (%s); synchronising instead", exc)
        if method in (None, "sync"):
            try:
                self._dec.SyncOnCUStream()
                NvdecDecoder._ready_method = "sync"
                return
            except (TypeError, AttributeError, RuntimeError) as exc:
                if method == "sync":
                    raise
                log.debug("NVDEC SyncOnCUStream() unavailable (%s); synchronising the context", exc)
        NvdecDecoder._ready_method = "context"
        with self.ring.context.active():
            import pycuda.driver as cuda

            cuda.Context.synchronize()


def _planes(picture: Any) -> Any:
    """Where a decoded NV12 picture lies (its two planes' ``__cuda_array_interface__``)."""
    from streamer.gpu.nv12 import Nv12Planes

    luma, chroma = (plane.__cuda_array_interface__ for plane in picture.cuda())
    height, width = int(luma["shape"][0]), int(luma["shape"][1])
    y_pitch = int(luma["strides"][0]) if luma.get("strides") else width
    uv_pitch = int(chroma["strides"][0]) if chroma.get("strides") else width
    return Nv12Planes(int(luma["data"][0]), y_pitch, int(chroma["data"][0]), uv_pitch, width, height)


def _codec_checks(nvc: Any, codec: Any, bit_depth: int, chroma: Any, size: tuple[int, int],
                  device_index: int) -> str | None:
    """Why NVDEC (and this package's NV12 kernel) cannot take the stream, or None."""
    if bit_depth != 8:
        return f"{bit_depth}-bit video (the NVDEC path takes 8-bit 4:2:0)"
    if "420" not in str(chroma):
        return f"chroma format {chroma} (the NVDEC path takes 8-bit 4:2:0)"
    try:
        fmt420 = nvc.cudaVideoChromaFormat.__members__["420"]
        caps = nvc.GetDecoderCaps(gpuid=device_index, codec=codec, chromaformat=fmt420, bitdepth=8)
    except Exception as exc:  # caps are advisory; creating the decoder is the real test
        log.debug("GetDecoderCaps failed: %s", exc)
        return None
    if isinstance(caps, dict):
        if not caps.get("supported", caps.get("is_supported", 1)):
            return f"this GPU's NVDEC does not decode {codec}"
        w_max, h_max = int(caps.get("width_max", 0) or 0), int(caps.get("height_max", 0) or 0)
        if w_max and h_max and (size[0] > w_max or size[1] > h_max):
            return f"{size[0]}x{size[1]} exceeds NVDEC's {w_max}x{h_max} for {codec}"
    return None


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}"


class _PacketStamps:
    """Packet read times, matched to pictures by pts (display order), else oldest first."""

    def __init__(self) -> None:
        self._by_pts: collections.OrderedDict[int, tuple[float, float]] = collections.OrderedDict()

    def add(self, pts: int, wall: float, mono: float) -> None:
        self._by_pts[pts] = (wall, mono)
        while len(self._by_pts) > STAMPS_KEPT:
            self._by_pts.popitem(last=False)

    def take(self, pts: int) -> tuple[float, float] | None:
        stamp = self._by_pts.pop(pts, None)
        if stamp is None and self._by_pts:
            stamp = self._by_pts.popitem(last=False)[1]
        return stamp


class NvdecFileSource(FrameSource):
    """A video file decoded by NVDEC: every frame, in order, as DeviceFrames (``--realtime``: paced at the
    packets, as a camera would deliver them)."""

    kind = "file"
    decoder = "nvdec"

    def __init__(self, path: str | Path, name: str, *, realtime: bool = False, device_index: int = 0) -> None:
        self.path = Path(path)
        super().__init__(name, str(path), is_live=realtime, realtime=realtime)
        self.self_paced = realtime  # the reader must not pace or re-stamp: the packets are paced here
        self.device_index = device_index
        self.delays = DelayStats()
        self.decode_errors = 0
        self._errors_in_row = 0
        self._nvc: Any = None
        self._demuxer: Any = None
        self._decoder: NvdecDecoder | None = None
        self._ring: Any = None
        self._packets: Any = None
        self._ready: collections.deque[Frame] = collections.deque()
        self._stamps = _PacketStamps()
        self._next_index = 0
        self._packets_read = 0
        self._pace_start = 0.0
        self._demux_done = False
        self._cpu: VideoFileSource | None = None  # reads on after the demuxer gave up on damaged data

    def decode_info(self) -> dict[str, Any]:
        return {"decoder": self.decoder, "decode_delay_ms": self.delays.percentiles(),
                "decode_errors": self.decode_errors}

    # -- opening -----------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Open the demuxer and the decoder. NvdecUnsupported when NVDEC cannot take the file (the caller
        decodes it on the CPU), SourceError when the file cannot be read at all."""
        if self._decoder is not None:
            return
        if not self.path.is_file():
            raise SourceError(f"video file not found: {self.path}", "check the path passed to --source")
        from streamer.gpu.context import PrimaryContext
        from streamer.gpu.frames import RING_SPARE, Nv12Ring

        nvc = nvc_module()
        try:
            demuxer = nvc.CreateDemuxer(str(self.path))
            codec = demuxer.GetNvCodecId()
            size = (int(demuxer.Width()), int(demuxer.Height()))
            reason = _codec_checks(nvc, codec, int(demuxer.BitDepth()), demuxer.ChromaFormat(), size,
                                   self.device_index)
        except Exception as exc:
            raise NvdecUnsupported(f"NVDEC's demuxer cannot read {self.path} ({_first_line(exc)})") from exc
        if reason:
            raise NvdecUnsupported(f"{self.path}: {reason}")
        context = PrimaryContext.get(self.device_index)
        ring = Nv12Ring(context, self.buffer_capacity + RING_SPARE)
        try:
            decoder = NvdecDecoder(nvc, codec, ring, low_latency=self.realtime,
                                   device_index=self.device_index)
        except Exception as exc:  # e.g. cuvidCreateVideoParser error 300: a codec NVDEC does not have
            raise NvdecUnsupported(f"NVDEC cannot decode {self.path} ({_first_line(exc)})") from exc
        self._nvc, self._demuxer, self._ring, self._decoder = nvc, demuxer, ring, decoder
        self.size = size
        self.codec = str(codec).rsplit(".", 1)[-1]

    def _open(self) -> None:
        try:
            self.prepare()
        except NvdecUnsupported as exc:
            raise SourceError(str(exc), "decode it on the CPU: --decode cpu (or #decode=cpu)") from exc
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
        self._packets = iter(self._demuxer)
        self._stamps = _PacketStamps()

    # -- reading -----------------------------------------------------------------------------------------
    def _read(self) -> Frame | None:
        while True:
            if self._ready:
                return self._ready.popleft()
            if self._cpu is not None:
                return self._read_cpu()
            if self._demux_done:
                return None
            self._step()

    def _step(self) -> None:
        """Read one packet and decode it (or finish the input): new frames land in ``_ready``."""
        assert self._decoder is not None
        if self._ring.size == (0, 0):  # before the first picture: the buffer's capacity is known by now
            from streamer.gpu.frames import RING_SPARE

            self._ring.depth = max(2, self.buffer_capacity + RING_SPARE)
        try:
            packet = next(self._packets, None)
        except Exception as exc:  # the demuxer gave up (damaged container)
            log.warning("source %s: NVDEC demuxer failed after %d frames: %s", self.name, self._next_index,
                        _first_line(exc))
            packet = None
        if packet is None:
            self._finish()
            return
        wall, mono = self._arrival()
        self._stamps.add(int(packet.pts), wall, mono)
        try:
            out = self._decoder.decode(packet)
        except Exception as exc:
            self._decode_failed(exc)
            return
        self._errors_in_row = 0
        self._emit(out)

    def _arrival(self) -> tuple[float, float]:
        """When the packet just read counts as captured: now, or (paced) when it is due."""
        self._packets_read += 1
        if self.self_paced and self.fps:
            period = 1.0 / self.fps
            now = time.monotonic()
            if not self._pace_start:
                self._pace_start = now
            due = self._pace_start + (self._packets_read - 1) * period
            if due > now:
                self._wait(due - now)
        return time.time(), time.monotonic()

    def _wait(self, seconds: float) -> bool:
        """Sleep until a paced packet is due (the reader thread; stop() ends the source first)."""
        deadline = time.monotonic() + seconds
        while not self.state.is_final:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, 0.05))
        return True

    def _emit(self, out: list[tuple[Any, int]]) -> None:
        now = time.monotonic()
        for image, pts in out:
            stamp = self._stamps.take(pts) or (time.time(), now)
            self.delays.add(max(0.0, now - stamp[1]))
            self._ready.append(Frame(image, self._next_index, stamp[0], stamp[1]))
            self._next_index += 1

    def _decode_failed(self, exc: BaseException) -> None:
        self.decode_errors += 1
        self.skipped += 1
        self._errors_in_row += 1
        if self.decode_errors == 1 or self.decode_errors % 100 == 0:
            log.warning("source %s: NVDEC skipped a packet it could not decode (%s; %d in all)", self.name,
                        _first_line(exc), self.decode_errors)
        if self._errors_in_row >= MAX_CONSECUTIVE_ERRORS:
            log.warning("source %s: %d packets in a row failed to decode", self.name, self._errors_in_row)
            self._finish()

    def _finish(self) -> None:
        """End of the demuxer's packets: flush the decoder; if frames are missing, read on with the CPU."""
        assert self._decoder is not None
        self._emit(self._decoder.flush())
        self._demux_done = True
        total = self.total_frames
        if total is not None and self._next_index < total and not self.state.is_final:
            self._hand_over(total)
        else:
            self.detail = "end of file"

    def _hand_over(self, total: int) -> None:
        """The demuxer stopped early (damaged data): the CPU decoder reads on from the next frame."""
        at = self._next_index
        cpu = VideoFileSource(self.path, self.name)
        try:
            cpu.open_at(at, total)
        except Exception as exc:
            self.detail = f"end of input after {at} of {total} frames (NVDEC stopped; the CPU could not " \
                          f"read on: {_first_line(exc)})"
            log.warning("source %s: %s", self.name, self.detail)
            cpu.close()
            return
        log.warning("source %s: NVDEC's demuxer stopped at frame %d of %d (damaged data); the CPU decoder "
                    "reads on from there", self.name, at, total)
        self._cpu = cpu

    def _read_cpu(self) -> Frame | None:
        assert self._cpu is not None
        frame = self._cpu._read()
        if frame is None:
            self.skipped += self._cpu.skipped
            self._cpu.skipped = 0
            self.detail = self._cpu.detail or "end of file"
            return None
        self._next_index = frame.index + 1
        return frame

    def _close(self) -> None:
        if self._cpu is not None:
            self._cpu.close()
            self._cpu = None
        # the ring is not freed here: frames of this file may still wait in its buffer; it is freed with the
        # last of them
        self._packets = None
        self._decoder = None
        self._demuxer = None
        self._ring = None


class NvdecDemoSource(NvdecFileSource):
    """``--source demo`` decoded by NVDEC (the clip and its ground truth, as :class:`~.demo.DemoSource`)."""

    kind = "demo"

    def __init__(self, video: Path, truth: Path, name: str, *, realtime: bool = False) -> None:
        super().__init__(video, name, realtime=realtime)
        self.spec = "demo"
        self.truth_path = Path(truth)


# -- live streams --------------------------------------------------------------------------------------------
class NvdecCapture:
    """What a live connection thread reads instead of a ``cv2.VideoCapture``: OpenCV demuxes (raw mode: one
    encoded picture per read, with FFmpeg's timeouts, outside the interpreter lock) and NVDEC decodes each
    packet at once. ``read()`` → (ok, DeviceFrame); ``stamp`` is the last frame's packet read time."""

    def __init__(self, url: str, timeout_s: float, ring: Any, device_index: int = 0,
                 delays: DelayStats | None = None,
                 on_unusable: Callable[[str], None] | None = None) -> None:
        """``ring``: the source's Nv12Ring (one per source, kept across reconnects: frames of an earlier
        connection may still be queued); ``on_unusable(reason)``: NVDEC failed on the stream's first packet
        (the caller decodes it on the CPU from the next connection on)."""
        ms = int(timeout_s * 1e3)
        self._cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms,
                                                            cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms,
                                                            cv2.CAP_PROP_FORMAT, -1])
        self._decoder: NvdecDecoder | None = None
        self._ring: Any = None
        self._ready: collections.deque[tuple[Any, float, float]] = collections.deque()
        self._stamps: collections.deque[tuple[float, float]] = collections.deque(maxlen=STAMPS_KEPT)
        self._packet = 0
        self._delays = delays
        self._feed: _RawFeed | None = None
        self._on_unusable = on_unusable
        self._decoded = 0
        self.stamp = (0.0, 0.0)
        if not self._cap.isOpened():
            return
        fourcc = int(self._cap.get(cv2.CAP_PROP_FOURCC) or 0).to_bytes(4, "little").decode("latin-1").lower()
        codec_name = FOURCC_CODECS.get(fourcc.strip("\x00 "))
        if codec_name is None:
            self._cap.release()
            raise NvdecUnsupported(f"codec {fourcc!r} is not one NVDEC decodes here")
        nvc = nvc_module()
        codec = getattr(nvc.cudaVideoCodec, codec_name)
        size = (int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        reason = _codec_checks(nvc, codec, 8, "420", size, device_index)
        if reason:
            self._cap.release()
            raise NvdecUnsupported(reason)
        self._nvc = nvc
        self._ring = ring
        try:
            self._decoder = NvdecDecoder(nvc, codec, self._ring, low_latency=True, device_index=device_index)
        except Exception as exc:
            self._cap.release()
            raise NvdecUnsupported(f"NVDEC cannot decode this stream ({_first_line(exc)})") from exc
        index = int(self._cap.get(cv2.CAP_PROP_CODEC_EXTRADATA_INDEX) or 0)
        ok, extra = self._cap.retrieve(None, index) if index > 0 else (False, None)
        # parameter sets that live only in the container/SDP (Annex B already: it starts with a start code)
        self._extra = bytes(extra.ravel()) if ok and extra is not None and extra.size else b""
        if not self._extra.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01")):
            self._extra = b""

    def isOpened(self) -> bool:  # the cv2.VideoCapture interface the connection thread uses
        return self._decoder is not None and self._cap.isOpened()

    def get(self, prop: int) -> float:
        return float(self._cap.get(prop))

    def read(self) -> tuple[bool, Any]:
        """The next decoded picture (packets that give none are read past); (False, None) at the end."""
        assert self._decoder is not None
        while not self._ready:
            try:
                decoded = self._next_decoded()
            except Exception as exc:
                if not self._decoded and self._on_unusable is not None:
                    self._on_unusable(_first_line(exc))
                raise
            if decoded is None:  # the stream ended: what the decoder still holds, then the end
                decoded = self._decoder.flush()
                if not decoded:
                    return False, None
            self._decoded += len(decoded)
            for image, _ in decoded:
                wall, mono = self._stamps.popleft() if self._stamps else (time.time(), time.monotonic())
                self._ready.append((image, wall, mono))
        image, wall, mono = self._ready.popleft()
        if self._delays is not None:
            self._delays.add(max(0.0, time.monotonic() - mono))
        self.stamp = (wall, mono)
        return True, image

    def _pull(self) -> np.ndarray | None:
        """The next encoded picture from OpenCV (Annex B; the parameter sets before the first), stamped."""
        ok, raw = self._cap.read()
        if not ok or raw is None:
            return None
        self._stamps.append((time.time(), time.monotonic()))
        data = raw.reshape(-1)
        if self._packet == 0 and self._extra:
            data = np.concatenate([np.frombuffer(self._extra, np.uint8), data])
        self._packet += 1
        return data

    def _next_decoded(self) -> list[tuple[Any, int]] | None:
        """Decode one more packet: pictures (maybe none), or None at the end of the stream."""
        assert self._decoder is not None
        if self._feed is not None:
            packet = self._feed.next_packet()
            return None if packet is None else self._decoder.decode(packet)
        data = self._pull()
        if data is None:
            return None
        try:
            return self._decoder.decode(_packet(self._nvc, data, self._packet))
        except _NoPacketData:
            log.info("PyNvVideoCodec takes no packets from memory here: NVDEC reads the stream through its "
                     "byte-stream demuxer (about one picture of latency)")
            self._feed = _RawFeed(self._nvc, self._pull, first=data)
            return []

    def release(self) -> None:
        """Close the stream; the ring goes with the last frame that uses it (frames may still be queued)."""
        self._cap.release()
        self._decoder = None
        self._ring = None


class _NoPacketData(Exception):
    """PyNvVideoCodec's PacketData cannot point at host memory (an API difference)."""


def _packet(nvc: Any, data: np.ndarray, pts: int) -> Any:
    """A PacketData over ``data`` (one encoded picture, Annex B); ``data`` must outlive the Decode call."""
    packet = nvc.PacketData()
    try:
        packet.bsl_data = int(data.ctypes.data)
        packet.bsl = int(data.size)
        packet.pts = pts
    except (AttributeError, TypeError) as exc:
        raise _NoPacketData(str(exc)) from exc
    return packet


class _RawFeed:
    """The fallback when packets cannot be built from memory: PyNvVideoCodec's demuxer over the elementary
    stream, which pulls its bytes through a callback from the packets OpenCV reads (``pull``)."""

    def __init__(self, nvc: Any, pull: Callable[[], np.ndarray | None], first: np.ndarray) -> None:
        self._pull = pull
        self._pending = bytearray(first.tobytes())
        self._demuxer = nvc.CreateDemuxer(self._fill)
        self._packets = iter(self._demuxer)

    def _fill(self, buffer: Any) -> int:
        """The demuxer wants bytes: what is left of the last packet, else the next one (0: the end)."""
        if not self._pending:
            data = self._pull()
            if data is None:
                return 0
            self._pending += data.tobytes()
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        del self._pending[:n]
        return n

    def next_packet(self) -> Any:
        return next(self._packets, None)


class NvdecStreamSource(StreamSource):
    """A network stream decoded by NVDEC (see :class:`NvdecCapture`); a stream NVDEC cannot take is decoded on
    the CPU instead (logged once), connection by connection."""

    decoder = "nvdec"

    def __init__(self, url: str, name: str, redacted: str, options: LiveOptions | None = None,
                 device_index: int = 0) -> None:
        self._capacity = 8
        super().__init__(url, name, redacted, options)
        self.device_index = device_index
        self.delays = DelayStats()
        self._cpu_reason = ""
        self._ring: Any = None  # one for all connections (created by the first: connection threads)
        self._ring_lock = threading.Lock()

    def decode_info(self) -> dict[str, Any]:
        return {"decoder": self.decoder, "decode_delay_ms": self.delays.percentiles()}

    def _capture(self) -> Any:
        from streamer.gpu.frames import RING_SPARE

        if not self._cpu_reason:
            from streamer.gpu.context import PrimaryContext
            from streamer.gpu.frames import Nv12Ring

            with self._ring_lock:
                if self._ring is None:
                    self._ring = Nv12Ring(PrimaryContext.get(self.device_index),
                                          self.buffer_capacity + RING_SPARE)
            try:
                return NvdecCapture(self._url, self.options.timeout_s, self._ring, self.device_index,
                                    self.delays, self._unusable)
            except NvdecUnsupported as exc:
                self._unusable(str(exc))
        return super()._capture()

    @property
    def buffer_capacity(self) -> int:
        return self._capacity

    @buffer_capacity.setter
    def buffer_capacity(self, frames: int) -> None:  # the intake sets it after the first connection opened
        from streamer.gpu.frames import RING_SPARE

        self._capacity = frames
        ring = getattr(self, "_ring", None)
        if ring is not None:
            ring.depth = max(ring.depth, frames + RING_SPARE)  # the next picture stored resizes the ring

    def _close(self) -> None:
        super()._close()
        self._ring = None  # freed with the last frame decoded into it

    def _unusable(self, reason: str) -> None:
        self._cpu_reason = reason
        self.decoder = "cpu"
        log.warning("source %s: NVDEC cannot take %s (%s): decoding it on the CPU", self.name, self.spec,
                    reason)
