"""The running product, wired: intake (sources → buffers) → batcher → executor → results → sinks.

Threads: one reader per source, the batcher, the executor's worker(s), the results thread, and the caller's
thread, which supervises (progress, periodic stats, stop requests). ``open()`` does everything that can fail
at start-up (sources, model, endpoint, output file) and raises StreamerError before any frame is read;
``run()`` streams until every source has ended or ``request_stop()`` is called, then drains what is in flight
and returns a Summary.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from streamer.backends.base import Backend
from streamer.batching import Batcher, BatchEvent, SourceEnd
from streamer.config import Settings
from streamer.errors import ModelError, StreamerError
from streamer.executors.base import Executor
from streamer.intake import Intake, StopRequested
from streamer.metrics import AccuracyCheck, Metrics, SourceSummary, Summary
from streamer.results import Labelling, ResultsStage
from streamer.sinks import JsonlSink, PublisherSink, Sink, Sinks
from streamer.sources import FrameBuffer, FrameSource, SourceState

log = logging.getLogger(__name__)

__all__ = ["Pipeline", "StopRequested"]

JOIN_TIMEOUT_S = 5.0
SUPERVISE_S = 0.1  # how often the caller's thread updates the progress bar and looks at stop requests
# source state → health message state (protocol.HEALTH_STATES); ENDED is announced by eos instead
HEALTH = {SourceState.RUNNING: "up", SourceState.FAILED: "down", SourceState.DOWN: "down",
          SourceState.RECONNECTING: "reconnecting"}

# total frames (None: unknown) -> None or an object with update(n) and close() (a tqdm bar)
ProgressFactory = Callable[[int | None], Any]


class Pipeline:
    def __init__(self, settings: Settings, sinks: list[Sink] | None = None,
                 sources: list[FrameSource] | None = None) -> None:
        """``sinks``: None = from the settings (JSONL ``output``, publisher on ``bind``). ``sources``: None =
        made from ``settings.sources``; else these (not yet opened) FrameSource objects."""
        self.settings = settings
        self.intake = Intake(settings, sources)
        self.sinks = Sinks(list(sinks) if sinks is not None else [])
        self._default_sinks = sinks is None
        self.backend: Backend | None = None
        self.executor: Executor[Any] | None = None
        self.batcher: Batcher | None = None
        self.results: ResultsStage | None = None
        self.metrics: Metrics | None = None
        self.accuracy: AccuracyCheck | None = None
        self.error: BaseException | None = None  # a failure of a pipeline thread itself
        self._stop = threading.Event()
        self._stopping = False
        self._opened = False
        self._closed = False

    @property
    def sources(self) -> list[FrameSource]:
        return self.intake.sources

    @property
    def buffers(self) -> list[FrameBuffer]:
        return self.intake.buffers

    # -- start-up ---------------------------------------------------------------------------------------
    def open(self) -> Pipeline:
        """Open sources, model, outputs. Raises StreamerError (and releases what was opened) on failure."""
        try:
            self.intake.open(self._stop)
            truth = self.intake.truth()
            if truth is not None:
                self.accuracy = AccuracyCheck(*truth)
            self._open_model()
            self._open_sinks()
        except BaseException:
            self.close()
            raise
        self._opened = True
        return self

    def _open_model(self) -> None:
        from streamer.backends.select import open_backend

        s = self.settings
        self.backend = open_backend(s.model_path(), s.backend, max_batch=s.batch, threads=s.threads)
        if s.topk > self.backend.manifest.num_classes:
            log.info("--topk %d > %d classes: publishing all of them", s.topk,
                     self.backend.manifest.num_classes)
        self.executor = self.backend.make_executor(s.batch, s.slots)

    def _open_sinks(self) -> None:
        s = self.settings
        if self._default_sinks:
            if s.output:
                self.sinks.sinks.append(JsonlSink.create(s.output))
            if s.publish:
                self.sinks.sinks.append(PublisherSink.create(s.bind, hwm=s.hwm, encoding=s.encoding,
                                                             wait_subscribers=s.wait_subscribers,
                                                             wait_timeout_s=s.wait_timeout_s))
        for sink in self.sinks.sinks:
            sink.start()

    # -- running ----------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Stop reading (safe from a signal handler: only sets a flag); what was read is still published."""
        self._stop.set()

    def run(self, progress: ProgressFactory | None = None) -> Summary:
        """Stream until all sources end (or a stop is requested), drain, and return the summary."""
        if not self._opened:
            self.open()
        assert self.executor is not None and self.backend is not None
        s = self.settings
        manifest = self.backend.manifest
        self.metrics = Metrics([src.name for src in self.sources])
        outbox: queue.Queue[BatchEvent] = queue.Queue()
        self.batcher = Batcher(self.buffers, self.executor, s.batch, s.batch_timeout_ms / 1e3, outbox)
        labelling = Labelling(manifest.labels, min(s.topk, manifest.num_classes), self.backend.engine_id)
        self.results = ResultsStage(self.executor, self.sinks, self.metrics, labelling, self.accuracy,
                                    on_batch_error=self.request_stop)
        for sink in self.sinks.sinks:
            sink.ready(self._stop)
        for src in self.sources:
            self.sinks.health(src.name, "up", src.description)
        self.metrics.start = time.monotonic()
        self.results.start(outbox, self._unreported_ends)
        self.batcher.start()
        self.intake.start(self._on_state)
        self._supervise(progress)
        self.metrics.finish()
        self.error = self.error or self.results.error or self.batcher.error
        self._publish_stats()
        summary = self.summary()
        if self.error is not None:
            raise self.error  # a StreamerError (e.g. the output disk is full) or a bug in a pipeline thread
        if self.results.batch_error is not None:
            err = self.results.batch_error
            raise ModelError(f"inference failed on a batch: {type(err).__name__}: {err}",
                             f"the {self.backend.name} backend could not run the model; try another --backend"
                             ) from err
        return summary

    def _supervise(self, progress: ProgressFactory | None) -> None:
        """The caller's thread until the results are all out: progress bar, periodic stats, stop requests."""
        assert self.results is not None and self.metrics is not None
        interval = self.settings.stats_interval_s
        bar = progress(self.intake.total_frames()) if progress else None
        shown = 0
        next_stats = time.monotonic() + interval if interval else float("inf")
        try:
            while not self.results.done.wait(SUPERVISE_S):
                if self._stop.is_set() and not self._stopping:
                    self._stopping = True
                    log.info("stopping: no new frames; draining what is in flight")
                    self.intake.stop()
                now = time.monotonic()
                if now >= next_stats:
                    next_stats = now + interval
                    self._publish_stats()
                if bar is not None and self.metrics.frames > shown:
                    bar.update(self.metrics.frames - shown)
                    shown = self.metrics.frames
        finally:
            if bar is not None:
                bar.update(self.metrics.frames - shown)
                bar.close()

    def _unreported_ends(self) -> list[SourceEnd]:
        """Sources the batcher never reported (it was aborted) still get their end-of-stream."""
        return [SourceEnd(buf.source, buf.taken, buf.reason or "stopped", buf.failed) for buf in self.buffers]

    def _on_state(self, source: FrameSource, state: SourceState, detail: str) -> None:
        health = HEALTH.get(state)
        if health is not None:
            self.sinks.health(source.name, health, detail)

    # -- stats and summary ------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        assert self.metrics is not None
        d = self.metrics.window()
        for src, buf in zip(self.sources, self.buffers, strict=True):
            d["sources"][src.name].update(dropped=buf.dropped, queued=len(buf), policy=buf.policy.value,
                                          state=src.state.value, reconnects=src.reconnects,
                                          skipped=src.skipped)
        if self.batcher is not None:
            d["batches"] = self.batcher.batches
            d["mean_batch"] = round(self.batcher.mean_batch, 2)
        d["model"] = self.backend.engine_id if self.backend else ""
        return d

    def _publish_stats(self) -> None:
        if self.metrics is not None:
            self.sinks.stats(self.stats())

    def summary(self) -> Summary:
        assert self.metrics is not None and self.backend is not None
        m, batcher, results = self.metrics, self.batcher, self.results
        ends = results.ends if results else {}
        per = [SourceSummary(src.name, src.kind, m.per_source[src.name].frames, buf.dropped,
                             ends[src.name].reason if src.name in ends else "")
               for src, buf in zip(self.sources, self.buffers, strict=True)]
        extra: dict[str, Any] = {}
        for sink in self.sinks.sinks:
            if isinstance(sink, PublisherSink):
                extra["publisher"] = sink.counters()
        if results is not None:
            extra["stages"] = results.stage_times(m.frames, batcher.resize_s if batcher else 0.0)
        elapsed = m.elapsed
        return Summary(
            frames=m.frames, elapsed_s=round(elapsed, 4),
            fps=round(m.frames / elapsed, 2) if elapsed else 0.0,
            latency_ms=m.latency.percentiles(), dropped=sum(p.dropped for p in per),
            batches=batcher.batches if batcher else 0,
            mean_batch=round(batcher.mean_batch, 2) if batcher else 0.0,
            backend=self.backend.name, model=self.backend.engine_id, sources=tuple(per),
            failed_batches=m.failed_batches, accuracy=self.accuracy.result() if self.accuracy else None,
            stopped_by_signal=self._stopping, extra=extra,
        )

    @property
    def failed_sources(self) -> list[str]:
        ends = self.results.ends if self.results else {}
        return [name for name, end in ends.items() if end.failed]

    # -- shutdown ---------------------------------------------------------------------------------------
    def close(self) -> None:
        """Release everything (idempotent). Sinks are closed last so queued messages still go out."""
        if self._closed:
            return
        self._closed = True
        self.intake.stop()
        if self.batcher is not None:
            self.batcher.abort()
            self.batcher.join(JOIN_TIMEOUT_S)
        if self.results is not None:
            self.results.join(JOIN_TIMEOUT_S)
        self.intake.close()
        if self.executor is not None:
            self.executor.close()
        if self.backend is not None:
            self.backend.close()
        errors: list[BaseException] = []
        for sink in self.sinks.sinks:
            try:
                sink.close()
            except Exception as exc:
                errors.append(exc)
                log.error("closing %s failed: %s", sink.name, exc)
        if errors and isinstance(errors[0], StreamerError):
            raise errors[0]

    def __enter__(self) -> Pipeline:
        return self.open() if not self._opened else self

    def __exit__(self, *exc: object) -> None:
        self.close()
