"""The running product: sources → batcher → executor → results → sinks (ZeroMQ publisher, JSONL).

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

import numpy as np

from streamer.backends.base import Backend
from streamer.batching import Batcher, BatchEvent, SourceEnd
from streamer.config import Settings
from streamer.errors import ConfigError, ModelError, SourceError, StreamerError
from streamer.executors.base import Executor, Slot
from streamer.executors.cpu import CpuSlot
from streamer.metrics import AccuracyCheck, Metrics, SourceSummary, Summary
from streamer.preprocess import NativeThreads
from streamer.protocol import Prediction, TopK
from streamer.sinks import JsonlSink, PublisherSink, Sink
from streamer.sources import (
    FrameBuffer,
    FrameSource,
    Policy,
    SourceReader,
    SourceState,
    make_source,
    unique_names,
)
from streamer.sources.live import LiveOptions

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 5.0
READERS_JOIN_S = 1.0  # in all: a reader stuck in a native read is left behind (its thread is a daemon)
COLLECT_POLL_S = 0.25
# source state → health message state (protocol.HEALTH_STATES); ENDED is announced by eos instead
HEALTH = {SourceState.RUNNING: "up", SourceState.FAILED: "down", SourceState.DOWN: "down",
          SourceState.RECONNECTING: "reconnecting"}

# total frames (None: unknown) -> None or an object with update(n) and close() (a tqdm bar)
ProgressFactory = Callable[[int | None], Any]


class StopRequested(StreamerError):
    """A stop (SIGINT/SIGTERM) arrived before the pipeline started streaming: nothing to drain."""

    exit_code = 0


def eos_reason(end: SourceEnd) -> str:
    """Buffer close reason → protocol eos reason: end | error | stopped."""
    if end.failed:
        return "error"
    if end.reason in ("stopped", "max frames reached"):
        return "stopped"
    return "end"


def make_executor(backend: Backend, batch: int, slots: int) -> Executor:
    """The executor that drives ``backend``: CUDA backends get the CUDA executor, CPU ones the CPU executor
    with as many workers as the backend runs batches at once (``workers``), and a slot more than that, so
    the batcher fills one while every worker is busy."""
    if backend.device == "cuda":
        from streamer.executors.cuda import CudaExecutor

        return CudaExecutor(backend, batch, slots)
    from streamer.executors.cpu import CpuExecutor

    workers = max(1, int(getattr(backend, "workers", 1)))
    if slots < workers + 1:
        log.info("slots %d → %d: %d batches run at once on the CPU, and one more is being filled", slots,
                 workers + 1, workers)
        slots = workers + 1
    return CpuExecutor(backend, batch, slots, workers=workers)


class StageTimes:
    """Where a frame's time goes inside the pipeline (sums in seconds; written by one thread each)."""

    def __init__(self) -> None:
        self.engine_s = 0.0  # in the executor: the backend's run (CPU) or submit → done (CUDA, in flight)
        self.results_s = 0.0  # the results thread: top-k, predictions, handing them to the sinks
        self.batches = 0

    def as_dict(self, frames: int, resize_s: float) -> dict[str, float]:
        per = 1e3 / frames if frames else 0.0
        return {"resize_ms_per_frame": round(resize_s * per, 4),
                "engine_ms_per_frame": round(self.engine_s * per, 4),
                "engine_ms_per_batch": round(1e3 * self.engine_s / self.batches, 4) if self.batches else 0.0,
                "results_ms_per_frame": round(self.results_s * per, 4)}


class Pipeline:
    def __init__(self, settings: Settings, sinks: list[Sink] | None = None,
                 sources: list[FrameSource] | None = None) -> None:
        """``sinks``: None = from the settings (JSONL ``output``, publisher on ``bind``). ``sources``: None =
        made from ``settings.sources``; else these (not yet opened) FrameSource objects."""
        self.settings = settings
        self._given_sources = sources
        self.sinks: list[Sink] = list(sinks) if sinks is not None else []
        self._default_sinks = sinks is None
        self.sources: list[FrameSource] = []
        self.buffers: list[FrameBuffer] = []
        self.readers: list[SourceReader] = []
        self.backend: Backend | None = None
        self.executor: Executor | None = None
        self.batcher: Batcher | None = None
        self.metrics: Metrics | None = None
        self.accuracy: AccuracyCheck | None = None
        self.labels: tuple[str, ...] = ()
        self.topk = settings.topk
        self.model_id = ""
        self.error: BaseException | None = None  # a failure of a pipeline thread itself
        self.batch_error: BaseException | None = None  # the first batch the backend failed on
        self._ends: dict[str, SourceEnd] = {}
        self._stop = threading.Event()
        self._stopping = False
        self._results_done = threading.Event()
        self.stages = StageTimes()
        self._results_thread: threading.Thread | None = None
        self._opened = False
        self._closed = False
        self._native: NativeThreads | None = None

    # -- start-up ---------------------------------------------------------------------------------------
    def open(self) -> Pipeline:
        """Open sources, model, outputs. Raises StreamerError (and releases what was opened) on failure."""
        try:
            self._open_sources()
            self._open_model()
            self._open_sinks()
        except BaseException:
            self.close()
            raise
        self._opened = True
        return self

    def _open_sources(self) -> None:
        s = self.settings
        if self._given_sources is not None:
            self.sources = list(self._given_sources)
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
            if self._stop.is_set():
                raise StopRequested("stopped while opening the sources")
            source.cancel = self._stop
            try:
                source.open()
            except SourceError:
                if self._stop.is_set():
                    raise StopRequested("stopped while opening the sources") from None
                raise
            log.info("source %s: %s (%s%s, policy %s)", source.name, source.description,
                     f"{source.fps:.3g} fps" if source.fps else "fps unknown",
                     f", {source.total_frames} frames" if source.total_frames else "", source.policy.value)
        cond = threading.Condition()
        for source in self.sources:
            capacity = {Policy.LATEST: 1, Policy.DROP_OLDEST: s.live_queue}.get(source.policy, s.file_queue)
            self.buffers.append(FrameBuffer(source.name, source.policy, capacity, cond))
        for source in self.sources:
            truth = getattr(source, "truth_path", None)
            if truth is not None and self.accuracy is None:
                self.accuracy = AccuracyCheck(source.name, truth)

    def _open_model(self) -> None:
        from streamer.backends.select import open_backend

        s = self.settings
        self.backend = open_backend(s.model_path(), s.backend, max_batch=s.batch, threads=s.threads)
        manifest = self.backend.manifest
        self.labels = manifest.labels
        self.model_id = self.backend.engine_id
        if s.topk > manifest.num_classes:
            log.info("--topk %d > %d classes: publishing all of them", s.topk, manifest.num_classes)
        self.topk = min(s.topk, manifest.num_classes)
        self.executor = make_executor(self.backend, s.batch, s.slots)

    def _open_sinks(self) -> None:
        s = self.settings
        if self._default_sinks:
            if s.output:
                self.sinks.append(JsonlSink.create(s.output))
            if s.publish:
                self.sinks.append(PublisherSink.create(s.bind, hwm=s.hwm, encoding=s.encoding,
                                                       wait_subscribers=s.wait_subscribers,
                                                       wait_timeout_s=s.wait_timeout_s))
        for sink in self.sinks:
            sink.start()

    # -- running ----------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Stop reading (safe from a signal handler: only sets a flag); what was read is still published."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def run(self, progress: ProgressFactory | None = None) -> Summary:
        """Stream until all sources end (or a stop is requested), drain, and return the summary."""
        if not self._opened:
            self.open()
        assert self.executor is not None and self.backend is not None
        s = self.settings
        self.metrics = Metrics([src.name for src in self.sources])
        outbox: queue.Queue[BatchEvent] = queue.Queue()
        self.batcher = Batcher(self.buffers, self.executor, s.batch, s.batch_timeout_ms / 1e3, outbox)
        self.readers = [SourceReader(src, buf, s.max_frames) for src, buf in zip(self.sources, self.buffers,
                                                                                strict=True)]
        for sink in self.sinks:
            sink.ready(self._stop)
        for src in self.sources:
            src.add_listener(self._on_state)
            self._health(src.name, "up", src.description)
        self._results_thread = threading.Thread(target=self._results, args=(outbox,), name="results",
                                                daemon=True)
        self.metrics.start = time.monotonic()
        self._results_thread.start()
        self.batcher.start()
        for reader in self.readers:
            reader.start()

        bar = progress(self._progress_total()) if progress else None
        shown = 0
        next_stats = time.monotonic() + s.stats_interval_s if s.stats_interval_s else float("inf")
        try:
            while not self._results_done.wait(0.1):
                if self._stop.is_set() and not self._stopping:
                    self._begin_stop()
                now = time.monotonic()
                if now >= next_stats:
                    next_stats = now + s.stats_interval_s
                    self._publish_stats()
                frames = self.metrics.frames
                if bar is not None and frames > shown:
                    bar.update(frames - shown)
                    shown = frames
        finally:
            if bar is not None:
                bar.update(self.metrics.frames - shown)
                bar.close()
        self.metrics.finish()
        if self.error is None and self.batcher.error is not None:
            self.error = self.batcher.error
        self._publish_stats()
        summary = self.summary()
        if self.error is not None:
            raise self.error  # a StreamerError (e.g. the output disk is full) or a bug in a pipeline thread
        if self.batch_error is not None:
            err = self.batch_error
            raise ModelError(f"inference failed on a batch: {type(err).__name__}: {err}",
                             f"the {self.backend.name} backend could not run the model; try another --backend"
                             ) from err
        return summary

    def _begin_stop(self) -> None:
        self._stopping = True
        log.info("stopping: no new frames; draining what is in flight")
        for reader in self.readers:
            reader.stop()

    def _progress_total(self) -> int | None:
        if any(src.is_live for src in self.sources):
            return None
        totals = [src.total_frames for src in self.sources]
        if any(t is None for t in totals):
            return None
        cap = self.settings.max_frames
        return sum(min(t, cap) if cap else t for t in totals if t is not None)

    # -- results thread ---------------------------------------------------------------------------------
    def _results(self, outbox: queue.Queue[BatchEvent]) -> None:
        try:
            while True:
                event = outbox.get()
                if event is None:
                    break
                if isinstance(event, SourceEnd):
                    self._end(event)
                else:
                    self._finish_batch(event)
        except BaseException as exc:
            self.error = exc
            log.exception("results thread failed")
            if self.batcher is not None:
                self.batcher.abort()
        finally:
            # sources the batcher never reported (it was aborted) still get their end-of-stream
            for buf in self.buffers:
                if buf.source not in self._ends:
                    self._end(SourceEnd(buf.source, buf.taken, buf.reason or "stopped", buf.failed))
            self._results_done.set()

    def _finish_batch(self, slot: Slot) -> None:
        assert self.executor is not None and self.metrics is not None
        done = None
        while done is None:
            done = self.executor.collect(timeout=COLLECT_POLL_S)
        if done is not slot:
            raise RuntimeError(f"executor returned {done!r}, expected {slot!r} (out of order)")
        try:
            if done.error is not None:
                self.metrics.failed_batches += 1
                log.error("batch of %d frames failed: %s", done.count, done.error)
                if self.batch_error is None:
                    self.batch_error = done.error
                self.request_stop()
                return
            stages = self.stages
            stages.engine_s += done.run_s if isinstance(done, CpuSlot) else done.done_time - done.submit_time
            stages.batches += 1
            t0 = time.perf_counter()
            self._emit(done)
            stages.results_s += time.perf_counter() - t0
        finally:
            self.executor.release(done)

    def _emit(self, slot: Slot) -> None:
        assert self.metrics is not None
        n, k = slot.count, self.topk
        scores = np.clip(slot.host_output[:n], 0.0, 1.0)
        idx = scores.argmax(axis=1)[:, None] if k == 1 else np.argsort(-scores, axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(scores, idx, axis=1)
        idx_l, top_l = idx.tolist(), top.tolist()  # copied out: the slot may be reused after release
        labels, model_id, acc = self.labels, self.model_id, self.accuracy
        now = time.time()
        for i, tag in enumerate(slot.tags):
            pred = Prediction(
                source=tag.source, frame_index=tag.frame_index, capture_time=tag.capture_time,
                topk=tuple(TopK(j, labels[j], sc) for j, sc in zip(idx_l[i], top_l[i], strict=True)),
                model_id=model_id, dropped=tag.dropped, publish_time=now,
            )
            for sink in self.sinks:
                sink.prediction(pred)
            self.metrics.record(tag.source, now - tag.capture_time, tag.dropped, tag.frame_index)
            if acc is not None and tag.source == acc.source:
                acc.add(tag.frame_index, labels[idx_l[i][0]])

    def _end(self, end: SourceEnd) -> None:
        self._ends[end.source] = end
        reason = eos_reason(end)
        if self.metrics is not None:
            self.metrics.ended(end.source, end.reason)
        log.info("source %s ended after %d frames: %s", end.source, end.frames, end.reason)
        for sink in self.sinks:
            try:
                sink.end(end.source, end.frames, reason)
            except Exception:
                log.exception("sink %s failed on end of %s", sink.name, end.source)

    # -- source health, stats ---------------------------------------------------------------------------
    def _on_state(self, source: FrameSource, state: SourceState, detail: str) -> None:
        health = HEALTH.get(state)
        if health is not None:
            self._health(source.name, health, detail)

    def _health(self, source: str, state: str, detail: str) -> None:
        for sink in self.sinks:
            try:
                sink.health(source, state, detail)
            except Exception:
                log.exception("sink %s failed on health of %s", sink.name, source)

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
        d["model"] = self.model_id
        return d

    def _publish_stats(self) -> None:
        if self.metrics is None:
            return
        stats = self.stats()
        for sink in self.sinks:
            try:
                sink.stats(stats)
            except Exception:
                log.exception("sink %s failed on stats", sink.name)

    def summary(self) -> Summary:
        assert self.metrics is not None and self.backend is not None
        m = self.metrics
        per = []
        for src, buf in zip(self.sources, self.buffers, strict=True):
            end = self._ends.get(src.name)
            per.append(SourceSummary(src.name, src.kind, m.per_source[src.name].frames, buf.dropped,
                                     end.reason if end else ""))
        elapsed = m.elapsed
        extra: dict[str, Any] = {}
        for sink in self.sinks:
            if isinstance(sink, PublisherSink):
                extra["publisher"] = sink.counters()
        extra["stages"] = self.stages.as_dict(m.frames, self.batcher.resize_s if self.batcher else 0.0)
        fps = round(m.frames / elapsed, 2) if elapsed else 0.0
        return Summary(
            frames=m.frames, elapsed_s=round(elapsed, 4), fps=fps,
            latency_ms=m.latency.percentiles(), dropped=sum(p.dropped for p in per),
            batches=self.batcher.batches if self.batcher else 0,
            mean_batch=round(self.batcher.mean_batch, 2) if self.batcher else 0.0,
            backend=self.backend.name, model=self.model_id, sources=tuple(per),
            failed_batches=m.failed_batches, accuracy=self.accuracy.result() if self.accuracy else None,
            stopped_by_signal=self._stopping, extra=extra,
        )

    @property
    def failed_sources(self) -> list[str]:
        return [name for name, end in self._ends.items() if end.failed]

    # -- shutdown ---------------------------------------------------------------------------------------
    def close(self) -> None:
        """Release everything (idempotent). Sinks are closed last so queued messages still go out."""
        if self._closed:
            return
        self._closed = True
        for reader in self.readers:
            reader.stop()
        if self.batcher is not None:
            self.batcher.abort()
            self.batcher.join(JOIN_TIMEOUT_S)
        if self._results_thread is not None:
            self._results_thread.join(JOIN_TIMEOUT_S)
        deadline = time.monotonic() + READERS_JOIN_S
        for reader in self.readers:
            if not reader.join(max(0.0, deadline - time.monotonic())):
                log.debug("reader %s still blocked in a read; leaving it", reader.source.name)
        if not self.readers:
            for source in self.sources:
                source.close()
        if self.executor is not None:
            self.executor.close()
        if self.backend is not None:
            self.backend.close()
        errors: list[BaseException] = []
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:
                errors.append(exc)
                log.error("closing %s failed: %s", sink.name, exc)
        if self._native is not None:
            self._native.restore()
        if errors and isinstance(errors[0], StreamerError):
            raise errors[0]

    def __enter__(self) -> Pipeline:
        return self.open() if not self._opened else self

    def __exit__(self, *exc: object) -> None:
        self.close()
