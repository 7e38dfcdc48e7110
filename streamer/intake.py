"""The intake of a run: its sources, each with a buffer (its backpressure policy) and a reader thread.

``open`` makes and opens every source at start-up (a source that cannot be opened is a one-line error before
anything runs), sizes the buffers by policy and tunes OpenCV's threads for the number of sources; ``start``
starts the readers; ``stop`` ends reading (buffered frames are still batched); ``close`` releases them.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from streamer.config import Settings
from streamer.errors import ConfigError, SourceError, StreamerError
from streamer.preprocess import NativeThreads
from streamer.sources import FrameBuffer, FrameSource, Policy, SourceReader, make_source, unique_names
from streamer.sources.base import StateListener
from streamer.sources.live import LiveOptions

log = logging.getLogger(__name__)

READERS_JOIN_S = 1.0  # in all: a reader stuck in a native read is left behind (its thread is a daemon)


class StopRequested(StreamerError):
    """A stop (SIGINT/SIGTERM) arrived before the pipeline started streaming: nothing to drain."""

    exit_code = 0


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

    def open(self, stop: threading.Event) -> None:
        """Make and open every source (``stop`` set meanwhile: StopRequested); SourceError when one fails."""
        s = self.settings
        if self._given is not None:
            self.sources = list(self._given)
        else:
            live = LiveOptions(s.live_timeout_s, s.reconnect_attempts, s.reconnect_backoff_s,
                               s.reconnect_backoff_max_s)
            policy = None if s.policy == "auto" else Policy(s.policy)
            self.sources = [make_source(spec, realtime=s.realtime, live=live, policy=policy)
                            for spec in s.sources]
        if not self.sources:
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
            log.info("source %s: %s (%s%s, policy %s)", source.name, source.description,
                     f"{source.fps:.3g} fps" if source.fps else "fps unknown",
                     f", {source.total_frames} frames" if source.total_frames else "", source.policy.value)
            capacity = {Policy.LATEST: 1, Policy.DROP_OLDEST: s.live_queue}.get(source.policy, s.file_queue)
            self.buffers.append(FrameBuffer(source.name, source.policy, capacity, self.cond))

    def truth(self) -> tuple[str, Path] | None:
        """(source, ground-truth file) of the first source that has one (the demo clip), else None."""
        for source in self.sources:
            truth = getattr(source, "truth_path", None)
            if truth is not None:
                return source.name, Path(truth)
        return None

    def start(self, on_state: StateListener) -> None:
        s = self.settings
        self.readers = [SourceReader(src, buf, s.max_frames) for src, buf in zip(self.sources, self.buffers,
                                                                                strict=True)]
        for src in self.sources:
            src.add_listener(on_state)
        for reader in self.readers:
            reader.start()

    def stop(self) -> None:
        """No new frames: every reader stops (what is buffered is still batched)."""
        for reader in self.readers:
            reader.stop()

    def total_frames(self) -> int | None:
        """Frames the run will read in all, when every source is a file of known length (a progress bar)."""
        if any(src.is_live for src in self.sources):
            return None
        totals = [src.total_frames for src in self.sources]
        if any(t is None for t in totals):
            return None
        cap = self.settings.max_frames
        return sum(min(t, cap) if cap else t for t in totals if t is not None)

    def close(self) -> None:
        self.stop()
        deadline = time.monotonic() + READERS_JOIN_S
        for reader in self.readers:
            if not reader.join(max(0.0, deadline - time.monotonic())):
                log.debug("reader %s still blocked in a read; leaving it", reader.source.name)
        if not self.readers:  # never started: the readers would have closed their sources
            for source in self.sources:
                source.close()
        if self._native is not None:
            self._native.restore()
            self._native = None
