"""The intake of a run: its sources, each with a buffer (its backpressure policy) and a reader thread.

``open`` makes and opens every source at start-up (a source that cannot be opened is a one-line error before
anything runs), sizes the buffers by policy and tunes OpenCV's threads for the number of sources; ``start``
starts the readers; ``stop`` ends reading (buffered frames are still batched); ``close`` releases them.

While it runs, ``add`` opens one more source exactly as a ``--source`` is opened (same factory, policy, buffer
sizing and unique names) and ``remove`` stops one (its buffered frames are still batched; its end-of-stream
reason is ``removed``). Names are unique within a run: a name stays taken after its source ended, so topics
never restart a stream that subscribers saw end.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from streamer.config import Settings
from streamer.errors import ConfigError, SourceError, StreamerError
from streamer.preprocess import NativeThreads
from streamer.sources import FrameBuffer, FrameSource, Policy, SourceReader, make_source, unique_names
from streamer.sources.base import StateListener
from streamer.sources.factory import slug, split_policy, unique_name
from streamer.sources.live import LiveOptions

log = logging.getLogger(__name__)

READERS_JOIN_S = 1.0  # in all: a reader stuck in a native read is left behind (its thread is a daemon)


class StopRequested(StreamerError):
    """A stop (SIGINT/SIGTERM) arrived before the pipeline started streaming: nothing to drain."""

    exit_code = 0


class SourceNameTaken(StreamerError):
    """``add``: the name is already used in this run (HTTP 409)."""


class UnknownSource(StreamerError):
    """``remove``: no source of that name in this run (HTTP 404)."""


class SourceAlreadyEnded(StreamerError):
    """``remove``: the source has already ended (HTTP 409)."""


class IntakeClosed(StreamerError):
    """``add``/``remove`` outside a run: it has not started streaming yet, or it is ending (HTTP 503)."""


# attach(source, buffer) before a source added while running is read: the pipeline registers its buffer
# with the batcher (raises IntakeClosed when the run is ending)
Attach = Callable[[FrameSource, FrameBuffer], None]


class Intake:
    def __init__(self, settings: Settings, sources: list[FrameSource] | None = None) -> None:
        """``sources``: None = made from ``settings.sources``; else these FrameSources, not yet open."""
        self.settings = settings
        self._given = sources
        self.sources: list[FrameSource] = []
        self.buffers: list[FrameBuffer] = []
        self.readers: list[SourceReader] = []
        self.cond = threading.Condition()  # shared by every buffer: the batcher waits on "any frame"
        self._native: NativeThreads | None = None
        self._lock = threading.Lock()  # sources/buffers/readers and names, against add/remove while running
        self._reserved: set[str] = set()  # names of sources being opened by ``add``
        self._running = False  # between start() and stop(): add/remove allowed
        self._stop_event: threading.Event | None = None
        self._on_state: StateListener | None = None
        self._attach: Attach | None = None
        self._on_decode: Callable[[float], None] | None = None
        self._gpu_rows: tuple[tuple[int, int] | None, int, bool] | None = None  # configure_gpu's arguments

    def make(self, spec: str, policy: Policy | None = None) -> FrameSource:
        """The source for one ``--source`` value, not yet opened (``policy``: instead of ``--policy``); a
        scale-out worker makes its sources here too, to name and resume them before its pipeline opens
        them."""
        s = self.settings
        live = LiveOptions(s.live_timeout_s, s.reconnect_attempts, s.reconnect_backoff_s,
                           s.reconnect_backoff_max_s)
        if policy is None and s.policy != "auto":
            policy = Policy(s.policy)
        return make_source(spec, realtime=s.realtime, live=live, policy=policy, decode=s.decode)

    def _buffer_for(self, source: FrameSource) -> FrameBuffer:
        s = self.settings
        capacity = {Policy.LATEST: 1, Policy.DROP_OLDEST: s.live_queue}.get(source.policy, s.file_queue)
        source.buffer_capacity = capacity  # an NVDEC source sizes its GPU frame ring by it
        return FrameBuffer(source.name, source.policy, capacity, self.cond)

    def open(self, stop: threading.Event) -> None:
        """Make and open every source (``stop`` set meanwhile: StopRequested); SourceError when one fails."""
        s = self.settings
        self._stop_event = stop
        if self._given is not None:
            self.sources = list(self._given)
        else:
            self.sources = [self.make(spec) for spec in s.sources]
        if not self.sources and not s.keep_running:
            raise ConfigError("no source given", "pass --source SRC (webcam0, a video file, a folder, a URL, "
                                                 "or demo)")
        unique_names(self.sources)
        self._native = NativeThreads(len(self.sources)).apply()
        if self._native.decoder_threads:
            log.info("%d sources: %d FFmpeg decoder thread%s each (%d cores)", len(self.sources),
                     self._native.decoder_threads, "s" if self._native.decoder_threads > 1 else "",
                     self._native.cores)
        for source in self.sources:
            if stop.is_set():
                raise StopRequested("stopped while opening the sources")
            source.cancel = stop
            try:
                source.open()
            except SourceError:
                if stop.is_set():
                    raise StopRequested("stopped while opening the sources") from None
                raise
            _log_opened(source)
            self.buffers.append(self._buffer_for(source))

    def truth(self) -> tuple[str, Path] | None:
        """(source, ground-truth file) of the first source that has one (the demo clip), else None."""
        for source in self.sources:
            truth = getattr(source, "truth_path", None)
            if truth is not None:
                return source.name, Path(truth)
        return None

    def configure_gpu(self, row_shape: tuple[int, int] | None, batch: int, keep_pictures: bool) -> None:
        """Before ``start``: GPU-decoded sources make the model's (H, W) input rows (None: whole pictures),
        for batches of up to ``batch``; ``keep_pictures``: viewers want whole pictures too."""
        self._gpu_rows = (row_shape, batch, keep_pictures)

    def _configure(self, sources: list[FrameSource]) -> None:
        """Tell each NVDEC source the rows to make and how many decoder sessions a file of it may use."""
        if self._gpu_rows is None:
            return
        gpu = [src for src in sources if src.decoder == "nvdec"]
        if not gpu:
            return
        files = [src for src in self.sources if src.decoder == "nvdec" and not src.is_live]
        decoders = self.settings.nvdec_decoders
        if not decoders:
            from streamer.sources.nvdec import decoder_engines
            from streamer.sources.nvdec_file import decoders_per_file

            decoders = decoders_per_file(len(files), decoder_engines())
        for src in gpu:
            src.configure_gpu(*self._gpu_rows, decoders)

    def start(self, on_state: StateListener, attach: Attach | None = None,
              on_decode: Callable[[float], None] | None = None) -> None:
        """Start reading. ``attach``: how ``add`` hands a new source's buffer to the pipeline (None: sources
        cannot be added); ``on_decode(seconds)``: each file read's decode time."""
        s = self.settings
        with self._lock:
            self._on_state, self._attach, self._on_decode = on_state, attach, on_decode
            self._configure(self.sources)
            self.readers = [SourceReader(src, buf, s.max_frames, on_decode)
                            for src, buf in zip(self.sources, self.buffers, strict=True)]
            for src in self.sources:
                src.add_listener(on_state)
            for reader in self.readers:
                reader.start()
            self._running = True

    def add(self, spec: str, name: str | None = None, policy: str | None = None) -> FrameSource:
        """Open one more source while running, as ``--source spec`` would be, and start reading it.

        ``name``: its id (default: derived from ``spec``, made unique); ``policy``: its backpressure policy,
        like a ``#policy=`` suffix. Raises SourceError (bad spec or name, does not open: the CLI's message),
        SourceNameTaken, or IntakeClosed."""
        _, own = split_policy(spec)
        auto = policy is None or policy.strip().lower() == "auto"
        chosen = None if auto else Policy.parse(policy or "", '"policy"')
        if own is not None and chosen is not None and own is not chosen:
            raise SourceError(f'"policy": {chosen.value!r} contradicts the #policy={own.value} suffix of '
                              f"the source", "give the policy once")
        if name is not None and (not name or slug(name, "") != name):
            raise SourceError(f"bad source name {name!r}",
                              "use up to 64 letters, digits, '_' and '-' (it becomes the topic pred.<name>)")
        if not self._running or self._attach is None:
            raise IntakeClosed("the pipeline is not streaming: no source can be added now",
                               "add sources once it runs; it takes none while starting or ending")
        source = self.make(spec, chosen)
        with self._lock:
            taken = {src.name for src in self.sources} | self._reserved
            if name is not None:
                if name in taken:
                    raise SourceNameTaken(f"a source named {name!r} is already in this run",
                                          "choose another name (GET /sources lists the names in use)")
                source.name = name
            else:
                source.name = unique_name(source.name, taken)
            self._reserved.add(source.name)
        try:
            source.cancel = self._stop_event
            try:
                source.open()  # outside the lock: a stream may take up to its timeout to open
            except SourceError:
                if self._stop_event is not None and self._stop_event.is_set():
                    raise IntakeClosed("the run is stopping: no source can be added now") from None
                raise
            _log_opened(source)
            buffer = self._buffer_for(source)
            with self._lock:
                if not self._running:
                    raise IntakeClosed("the run is ending: no source can be added now")
                self._configure([source])
                assert self._attach is not None and self._on_state is not None
                self._attach(source, buffer)
                reader = SourceReader(source, buffer, self.settings.max_frames, self._on_decode)
                source.add_listener(self._on_state)
                self.sources.append(source)
                self.buffers.append(buffer)
                self.readers.append(reader)
                reader.start()
        except BaseException:
            source.close()
            raise
        finally:
            with self._lock:
                self._reserved.discard(source.name)
        log.info("source %s added while running", source.name)
        return source

    def remove(self, name: str) -> FrameSource:
        """Stop source ``name``: no new frames; what it buffered is still batched, then its end-of-stream
        (reason ``removed``) is published. Raises UnknownSource, SourceAlreadyEnded or IntakeClosed."""
        with self._lock:
            if not self._running:
                raise IntakeClosed("the pipeline is not streaming: no source can be removed now")
            found = next((r for r in self.readers if r.source.name == name), None)
            if found is None:
                raise UnknownSource(f"no source named {name!r} in this run",
                                    "GET /sources lists the names in use")
            if found.buffer.closed:
                raise SourceAlreadyEnded(f"source {name!r} has already ended ({found.buffer.reason})")
            found.stop("removed")
        log.info("source %s removed: its buffered frames are still published", name)
        return found.source

    def entries(self) -> list[tuple[FrameSource, FrameBuffer]]:
        """(source, buffer) of every opened source of the run, in the order they were added (any thread;
        while ``open`` runs, the sources opened so far)."""
        with self._lock:
            return list(zip(self.sources[:len(self.buffers)], self.buffers, strict=True))

    def stop(self) -> None:
        """No new frames: every reader stops (what is buffered is still batched); no source can be added."""
        with self._lock:
            self._running = False
            readers = list(self.readers)
        for reader in readers:
            reader.stop()

    def total_frames(self) -> int | None:
        """Frames the run will read in all, when every source is a file of known length (a progress bar)."""
        if self.settings.keep_running or not self.sources or any(src.is_live for src in self.sources):
            return None  # a service may get more sources (or has none yet)
        totals = [src.total_frames for src in self.sources]
        if any(t is None for t in totals):
            return None
        cap = self.settings.max_frames
        return sum(min(t, cap) if cap else t for t in totals if t is not None)

    def close(self) -> None:
        self.stop()
        deadline = time.monotonic() + READERS_JOIN_S
        with self._lock:
            readers = list(self.readers)
        for reader in readers:
            if not reader.join(max(0.0, deadline - time.monotonic())):
                log.debug("reader %s still blocked in a read; leaving it", reader.source.name)
        if not self.readers:  # never started: the readers would have closed their sources
            for source in self.sources:
                source.close()
        if self._native is not None:
            self._native.restore()
            self._native = None


def _log_opened(source: FrameSource) -> None:
    log.info("source %s: %s (%s%s, policy %s)", source.name, source.description,
             f"{source.fps:.3g} fps" if source.fps else "fps unknown",
             f", {source.total_frames} frames" if source.total_frames else "", source.policy.value)
