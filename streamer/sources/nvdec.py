"""NVDEC decoding through PyNvVideoCodec (``pip install 'streamer[nvdec]'``): frames that stay on the GPU.

This module holds what every NVDEC source shares (whether NVDEC can run, codec checks, decode delays) and the
live streams; video files are :mod:`.nvdec_file` (ThreadedDecoders, several per file).

Live streams (rtsp://, http(s)://, ...) are demuxed by OpenCV's FFmpeg backend in *raw* mode — packets, not
pictures, with its open/read timeouts, on the live sources' watchdog thread (PyNvVideoCodec's own network
reads hold the Python interpreter lock while they wait, which would stall every thread of the process) — and
each packet is handed to the NVDEC decoder in low-latency mode (``DisplayDecodeLatencyType.LOW`` +
end-of-picture flag: a picture comes out of the packet that completes it, none is held back). The existing
policies, reconnects and health events apply unchanged (:class:`NvdecStreamSource` is a
:class:`~.live.StreamSource`).

Each decoded picture is converted at once into the model's input row on the GPU (:mod:`streamer.gpu.rows`)
and travels as a :class:`~streamer.gpu.rows.DeviceRow`; the batcher copies the row into a slot. A frame's
capture time is when its packet was read, so time a picture spends inside the decoder counts in
capture→publish; that decode delay is also measured on its own (``decode_delay_ms``).

Sharing decoders: one NVDEC session per live stream; files get several (:mod:`.nvdec_file`). The driver
time-slices sessions over the GPU's decoder engines (7 on an H200), so sessions beyond the engine count share
them; a session cannot be shared by two bitstreams. ``auto`` and ``nvdec`` fall back to CPU decoding for a
source NVDEC cannot take (its codec, bit depth, chroma format or size), logging why.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import importlib.util
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from streamer.cuda_env import no_gpu_reason, pycuda_reason
from streamer.errors import BackendUnavailableError, SourceError, first_line
from streamer.sources.live import LiveOptions, StreamSource

log = logging.getLogger(__name__)

NVDEC_EXTRA = "pip install 'streamer[nvdec]'"
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


class LiveRows:
    """What a live source's decoded pictures become, across its connections: model-input rows in a RowStore
    once the pipeline has said the model's input (``configure``), and whole pictures in an Nv12Ring when
    viewers want them (or before the rows are configured). One stream: pictures converted as they come out."""

    def __init__(self, context: Any) -> None:
        import pycuda.driver as cuda

        from streamer.gpu.nv12 import BT601_LIMITED, Nv12Resizer

        self.context = context
        self.matrix = BT601_LIMITED
        with context.active():
            self.stream = cuda.Stream()
            self.resizer = Nv12Resizer.get(context.handle)
        self.rows: Any = None
        self.ring: Any = None
        self.keep_pictures = True
        self._pictures_depth = 16
        self._next = 0
        self._lock = threading.Lock()  # an abandoned connection may still convert a late picture

    def close(self) -> None:
        """No more pictures: writers waiting for rows give up; the stream is freed with the context current
        (the rows and pictures go with the last frame that uses them)."""
        with self._lock:
            if self.rows is not None:
                self.rows.close()
            stream, self.stream = self.stream, None
            if stream is not None:
                with contextlib.suppress(Exception), self.context.active():
                    stream.synchronize()
                    del stream

    def configure(self, row_shape: tuple[int, int] | None, depth: int, keep_pictures: bool) -> None:
        from streamer.gpu.rows import RowStore

        with self._lock:
            if row_shape is not None:
                self.rows = RowStore(self.context, row_shape, depth)
            self.keep_pictures = keep_pictures or row_shape is None
            self._pictures_depth = depth + 8

    def convert(self, planes: list[Any], stopped: Callable[[], bool]) -> list[Any]:
        """DeviceRows of ``planes`` (pictures ready on ``stream``); the decoder may reuse them afterwards."""
        from streamer.gpu.frames import Nv12Ring
        from streamer.gpu.rows import DeviceRow

        with self._lock, self.context.active():
            if self.stream is None:  # closed: a late picture of an abandoned connection
                return []
            rows = self.rows
            pictures: list[Any] = [None] * len(planes)
            if self.keep_pictures:
                if self.ring is None or self.ring.depth < self._pictures_depth:
                    self.ring = Nv12Ring(self.context, self._pictures_depth)
                pictures = [self.ring.store(p) for p in planes]
            if rows is None:
                return [DeviceRow(None, 0, (p.height, p.width, 3), pic) for p, pic in zip(planes, pictures,
                                                                                          strict=True)]
            indices = list(range(self._next, self._next + len(planes)))
            self._next += len(planes)
            if not rows.claim_many(indices, stopped):
                return []
            self.resizer.launch_batch(planes, [rows.ptr(i) for i in indices], *rows.shape, self.stream,
                                      self.matrix)
            self.stream.synchronize()
            return [DeviceRow(rows, i, (p.height, p.width, 3), pic)
                    for i, p, pic in zip(indices, planes, pictures, strict=True)]


class NvdecDecoder:
    """One NVDEC session of a live stream: ``decode(packet)`` → [(DeviceRow, pts)], in display order."""

    _ready_method: str | None = None  # how decoded pictures are waited for (found once per process)

    def __init__(self, nvc: Any, codec: Any, rows: LiveRows, *, low_latency: bool, device_index: int = 0,
                 stopped: Callable[[], bool] = lambda: False) -> None:
        self._nvc = nvc
        self.rows = rows
        self._stopped = stopped
        latency = nvc.DisplayDecodeLatencyType.LOW if low_latency else nvc.DisplayDecodeLatencyType.NATIVE
        self._end_of_picture = nvc.VideoPacketFlag.ENDOFPICTURE if low_latency else None
        with rows.context.active():
            self._dec = nvc.CreateDecoder(gpuid=device_index, codec=codec,
                                          cudacontext=rows.context.handle, cudastream=int(rows.stream.handle),
                                          usedevicememory=True, latency=latency)

    def decode(self, packet: Any) -> list[tuple[Any, int]]:
        if self._end_of_picture is not None and packet.bsl:
            packet.decode_flag = self._end_of_picture
        pictures = self._dec.Decode(packet)
        if not pictures:
            return []
        self._wait_ready()
        images = self.rows.convert([planes_of(p) for p in pictures], self._stopped)
        return [(image, int(p.getPTS())) for image, p in zip(images, pictures, strict=False)]

    def flush(self) -> list[tuple[Any, int]]:
        """Pictures still inside the decoder at the end of the input."""
        try:
            return self.decode(self._nvc.PacketData())
        except Exception as exc:
            log.debug("NVDEC flush: %s: %s", type(exc).__name__, exc)
            return []

    def _wait_ready(self) -> None:
        """Make the rows' stream wait for the decoder's own post-processing copy of the pictures."""
        method = NvdecDecoder._ready_method
        stream_handle = int(self.rows.stream.handle)
        if method in (None, "wait"):
            try:
                self._dec.WaitOnCUStream(stream_handle)
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
        with self.rows.context.active():
            import pycuda.driver as cuda

            cuda.Context.synchronize()


def planes_of(picture: Any) -> Any:
    """Where a decoded NV12 picture lies (its two planes' ``__cuda_array_interface__``)."""
    from streamer.gpu.nv12 import Nv12Planes

    luma, chroma = (plane.__cuda_array_interface__ for plane in picture.cuda())
    height, width = int(luma["shape"][0]), int(luma["shape"][1])
    y_pitch = int(luma["strides"][0]) if luma.get("strides") else width
    uv_pitch = int(chroma["strides"][0]) if chroma.get("strides") else width
    return Nv12Planes(int(luma["data"][0]), y_pitch, int(chroma["data"][0]), uv_pitch, width, height)


@functools.lru_cache(maxsize=32)
def decoder_caps(nvc: Any, codec: Any, device_index: int) -> Any:
    """NVDEC's capabilities for 8-bit 4:2:0 ``codec`` (a dict), asked once per codec and GPU: the query takes
    a noticeable part of a second, holding the interpreter lock."""
    try:
        fmt420 = nvc.cudaVideoChromaFormat.__members__["420"]
        return nvc.GetDecoderCaps(gpuid=device_index, codec=codec, chromaformat=fmt420, bitdepth=8)
    except Exception as exc:
        log.debug("GetDecoderCaps failed: %s", exc)
        return None


def decoder_engines(device_index: int = 0) -> int:
    """How many NVDEC engines the GPU has (H.264 caps' ``num_decoder_engines``; 1 when not reported)."""
    try:
        nvc = nvc_module()
        caps = decoder_caps(nvc, nvc.cudaVideoCodec.H264, device_index)
    except Exception:
        return 1
    if isinstance(caps, dict) and caps.get("num_decoder_engines"):
        return max(1, int(caps["num_decoder_engines"]))
    return 1


def codec_checks(nvc: Any, codec: Any, bit_depth: int, chroma: Any, size: tuple[int, int],
                  device_index: int) -> str | None:
    """Why NVDEC (and this package's NV12 kernel) cannot take the stream, or None."""
    if bit_depth != 8:
        return f"{bit_depth}-bit video (the NVDEC path takes 8-bit 4:2:0)"
    if "420" not in str(chroma):
        return f"chroma format {chroma} (the NVDEC path takes 8-bit 4:2:0)"
    caps = decoder_caps(nvc, codec, device_index)
    if caps is None:  # caps are advisory; creating the decoder is the real test
        return None
    if isinstance(caps, dict):
        if not caps.get("supported", caps.get("is_supported", 1)):
            return f"this GPU's NVDEC does not decode {codec}"
        w_max, h_max = int(caps.get("width_max", 0) or 0), int(caps.get("height_max", 0) or 0)
        if w_max and h_max and (size[0] > w_max or size[1] > h_max):
            return f"{size[0]}x{size[1]} exceeds NVDEC's {w_max}x{h_max} for {codec}"
    return None


def matrix_for(color_space: Any) -> Any:
    """The colour matrix OpenCV's decoder converts a stream tagged ``color_space`` with: BT.709 for streams
    tagged BT.709, else BT.601 (swscale's default, untagged streams included)."""
    from streamer.gpu.nv12 import BT601_LIMITED, BT709_LIMITED

    return BT709_LIMITED if "709" in str(color_space) else BT601_LIMITED


# -- live streams --------------------------------------------------------------------------------------------
class NvdecCapture:
    """What a live connection thread reads instead of a ``cv2.VideoCapture``: OpenCV demuxes (raw mode: one
    encoded picture per read, with FFmpeg's timeouts, outside the interpreter lock) and NVDEC decodes each
    packet at once. ``read()`` → (ok, DeviceRow); ``stamp`` is the last frame's packet read time."""

    def __init__(self, url: str, timeout_s: float, rows: LiveRows, device_index: int = 0,
                 delays: DelayStats | None = None,
                 on_unusable: Callable[[str], None] | None = None,
                 stopped: Callable[[], bool] = lambda: False) -> None:
        """``rows``: the source's LiveRows (one per source, kept across reconnects: frames of an earlier
        connection may still be queued); ``on_unusable(reason)``: NVDEC failed on the stream's first packet
        (the caller decodes it on the CPU from the next connection on)."""
        ms = int(timeout_s * 1e3)
        self._cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms,
                                                            cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms,
                                                            cv2.CAP_PROP_FORMAT, -1])
        self._decoder: NvdecDecoder | None = None
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
        reason = codec_checks(nvc, codec, 8, "420", size, device_index)
        if reason:
            self._cap.release()
            raise NvdecUnsupported(reason)
        self._nvc = nvc
        try:
            self._decoder = NvdecDecoder(nvc, codec, rows, low_latency=True, device_index=device_index,
                                         stopped=stopped)
        except Exception as exc:
            self._cap.release()
            raise NvdecUnsupported(f"NVDEC cannot decode this stream ({first_line(exc)})") from exc
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
                    self._on_unusable(first_line(exc))
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
        """Close the stream; the rows go with the last frame that uses them (frames may still be queued)."""
        self._cap.release()
        self._decoder = None


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
        super().__init__(url, name, redacted, options)
        self.device_index = device_index
        self.delays = DelayStats()
        self._cpu_reason = ""
        self._rows: LiveRows | None = None  # one for all connections (made by the first: connection threads)
        self._rows_lock = threading.Lock()
        self._row_config: tuple[tuple[int, int] | None, int, bool] | None = None

    def decode_info(self) -> dict[str, Any]:
        return {"decoder": self.decoder, "decode_delay_ms": self.delays.percentiles()}

    def configure_gpu(self, row_shape: tuple[int, int] | None, batch: int, keep_pictures: bool,
                      decoders: int) -> None:
        """Before reading: the model's input rows (see NvdecFileSource.configure_gpu); one session always."""
        from streamer.gpu.rows import ROW_SPARE

        with self._rows_lock:
            self._row_config = (row_shape, self.buffer_capacity + max(1, batch) + ROW_SPARE, keep_pictures)
            if self._rows is not None:
                self._rows.configure(*self._row_config)

    def _live_rows(self) -> LiveRows:
        from streamer.gpu.context import PrimaryContext

        with self._rows_lock:
            if self._rows is None:
                self._rows = LiveRows(PrimaryContext.get(self.device_index))
                if self._row_config is not None:
                    self._rows.configure(*self._row_config)
            return self._rows

    def _capture(self) -> Any:
        if not self._cpu_reason:
            rows = self._live_rows()
            try:
                return NvdecCapture(self._url, self.options.timeout_s, rows, self.device_index,
                                    self.delays, self._unusable, lambda: self.state.is_final)
            except NvdecUnsupported as exc:
                self._unusable(str(exc))
        return super()._capture()

    def _close(self) -> None:
        super()._close()
        rows, self._rows = self._rows, None  # freed with the last frame decoded into them
        if rows is not None:
            rows.close()

    def _unusable(self, reason: str) -> None:
        self._cpu_reason = reason
        self.decoder = "cpu"
        log.warning("source %s: NVDEC cannot take %s (%s): decoding it on the CPU", self.name, self.spec,
                    reason)
