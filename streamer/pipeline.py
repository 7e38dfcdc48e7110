"""The running product, wired: intake (sources → buffers) → batcher → executor → results → sinks.

Threads: one reader per source, the batcher, the executor's worker(s), the results thread, and the caller's
thread, which supervises (progress, periodic stats, stop requests). ``open()`` does everything that can fail
at start-up (sources, model, endpoint, output file) and raises StreamerError before any frame is read;
``run()`` streams until every source has ended (with ``keep_running``: only until ``request_stop()``) or
``request_stop()`` is called, then drains what is in flight and returns a Summary. While it streams, other
threads may call ``add_source`` and ``remove_source`` (the HTTP control plane, streamer.control, does).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from streamer.backends.base import Backend
from streamer.backends.select import prefetch_imports
from streamer.batching import Batcher, BatchEvent, SealedError, SourceEnd
from streamer.config import Settings
from streamer.devices import parse_device, use_device
from streamer.errors import ModelError, StreamerError
from streamer.executors.base import Executor
from streamer.executors.handover import Engaged, HandoverExecutor
from streamer.host import process_start_mono
from streamer.intake import Intake, IntakeClosed, StopRequested
from streamer.metrics import AccuracyCheck, Metrics, SourceSummary, Summary
from streamer.outputs import JSONL, SUMMARY, check_outputs
from streamer.results import Labelling, ResultsStage
from streamer.sinks import JsonlSink, PublisherSink, Sink, Sinks
from streamer.sources import FrameBuffer, FrameSource, SourceState
from streamer.view.viewers import Viewers

if TYPE_CHECKING:
    from streamer.backends.fast_start import Bridge

log = logging.getLogger(__name__)

__all__ = ["Pipeline", "StopRequested"]

PHASES = ("created", "opening", "running", "draining", "ended")

JOIN_TIMEOUT_S = 5.0
# --fast-start: the requested backend starts loading once the bridge completed its first batch, or after this
BRIDGE_FIRST_BATCH_S = 2.0
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
        self.handover: HandoverExecutor | None = None  # --fast-start: the bridge, then the requested backend
        self._bridge: Bridge | None = None
        self.batcher: Batcher | None = None
        self.results: ResultsStage | None = None
        self.metrics: Metrics | None = None
        self.accuracy: AccuracyCheck | None = None
        self.error: BaseException | None = None  # a failure of a pipeline thread itself
        self._stop = threading.Event()
        self._stopping = False
        self._opened = False
        self._closed = False
        self.phase = "created"  # one of PHASES: what the control plane's probes report
        self._startup: dict[str, float] = {}  # time.monotonic() when each start-up step was done
        self._ends = threading.Condition()  # notified after each end-of-stream is published
        self.viewers = Viewers.create(settings, self.intake)  # --annotate, --preview (None: neither)

    @property
    def sources(self) -> list[FrameSource]:
        return self.intake.sources

    @property
    def buffers(self) -> list[FrameBuffer]:
        return self.intake.buffers

    # -- start-up ---------------------------------------------------------------------------------------
    def open(self) -> Pipeline:
        """Bind the publisher, open sources, check the output paths, load the model, open the outputs.
        Raises StreamerError (and releases what was opened) on failure, StopRequested when a stop was asked
        for meanwhile.

        The publisher binds first, so that subscribers already trying to connect are in well before the
        first message (docs/protocol.md, slow joiners); output paths are checked before the model loads and
        before anything is opened for writing."""
        self.phase = "opening"
        if chosen := use_device(parse_device(self.settings.device)):  # before anything starts CUDA
            log.info("device %s", chosen)
        if not self._bridging():  # a bridge serves first: the backend's imports wait for its first batch
            prefetch_imports(self.settings.backend)
        try:
            self._open_publisher()
            self.intake.open(self._stop)
            self._startup["sources_open"] = time.monotonic()
            truth = self.intake.truth()
            if truth is not None:
                self.accuracy = AccuracyCheck(*truth)
            self._check_outputs()
            self._stop_point("opening the sources")
            self._open_model()
            self._stop_point("loading the model")
            self._open_sinks()
        except BaseException:
            self.close()
            raise
        self._opened = True
        return self

    def _bridging(self) -> bool:
        from streamer.backends.fast_start import bridge_expected

        s = self.settings
        return s.fast_start == "auto" and bridge_expected(s.model_path(), s.backend, s.precision, s.device)

    def _open_model(self) -> None:
        """The requested backend; with --fast-start auto and a backend slow to start, ONNX Runtime at once and
        the requested backend loading in the background (:mod:`streamer.backends.fast_start`)."""
        from streamer.backends.fast_start import open_bridge

        s = self.settings
        bridge = None
        if s.fast_start == "auto":
            bridge = open_bridge(s.model_path(), s.backend, max_batch=s.batch, precision=s.precision,
                                 device=s.device, threads=s.threads)
        if bridge is None:
            self.backend = self._load_backend()
            self.executor = self.backend.make_executor(s.batch, s.slots)
            self._startup["model_ready"] = time.monotonic()
        else:
            self.backend, self._bridge = bridge.backend, bridge
            engaged = Engaged(bridge.backend.make_executor(s.batch, s.slots), bridge.backend,
                              bridge.backend.close)
            self._startup["bridge_ready"] = time.monotonic()
            self.handover = HandoverExecutor(engaged, self._load_requested, on_ready=self._on_backend_ready,
                                             on_failed=self._on_backend_failed)
            self.executor = self.handover
            self.handover.start(hold_s=BRIDGE_FIRST_BATCH_S)
        if s.topk > self.backend.manifest.num_classes:
            log.info("--topk %d > %d classes: publishing all of them", s.topk,
                     self.backend.manifest.num_classes)

    def _load_backend(self) -> Backend:
        from streamer.backends.select import open_backend

        s = self.settings
        return open_backend(s.model_path(), s.backend, max_batch=s.batch, threads=s.threads,
                            precision=s.precision, device=s.device)

    def _load_requested(self) -> Engaged:
        """On the hand-over's loading thread: the requested backend and its executor, checked against the
        bridge (one model: the same labels and rows)."""
        assert self._bridge is not None
        bridge = self._bridge.backend
        backend = self._load_backend()
        try:
            if backend.manifest.labels != bridge.manifest.labels or backend.batch_spec != bridge.batch_spec:
                ours, theirs = bridge.manifest, backend.manifest
                raise ModelError(f"the {backend.name} backend's model ({theirs.num_classes} classes, input "
                                 f"{theirs.input_hw}) is not the ONNX model that ran while it loaded "
                                 f"({ours.num_classes} classes, input {ours.input_hw})",
                                 "export both from one checkpoint (tools/export_onnx.py), or use "
                                 "--fast-start off")
            executor = backend.make_executor(self.settings.batch, self.settings.slots)
        except BaseException:
            backend.close()
            raise
        return Engaged(executor, backend, backend.close)

    def _on_backend_ready(self, engaged: Engaged) -> None:
        self.backend = cast(Backend, engaged.engine)
        self._startup["model_ready"] = time.monotonic()

    def _on_backend_failed(self, exc: BaseException) -> None:
        bridge = self._bridge.backend.name if self._bridge else "the bridge"
        log.error("the %s backend failed to load (%s); %s served the frames so far; stopping",
                  self.settings.backend, exc, bridge)
        self.request_stop()

    def _backend_failure(self) -> BaseException | None:
        """Why the backend loading behind a fast start failed (raised as it would be without the bridge)."""
        return self.handover.error if self.handover is not None else None

    def _await_backend(self) -> None:
        """A run that ended on the bridge still waits for the requested backend (unless it was stopped), so
        that one that cannot load fails the run as it would without the bridge."""
        handover = self.handover
        if handover is None or handover.settled.is_set():
            return
        log.info("the run ended before the %s backend finished loading: waiting for it",
                 self.settings.backend)
        while not handover.wait_settled(SUPERVISE_S):
            if self._stop.is_set():
                log.info("stopped before the %s backend finished loading", self.settings.backend)
                return

    def _open_publisher(self) -> None:
        s = self.settings
        if self._default_sinks and s.publish:
            publisher = PublisherSink.create(s.bind, hwm=s.hwm, encoding=s.encoding,
                                             wait_subscribers=s.wait_subscribers,
                                             wait_timeout_s=s.wait_timeout_s)
            self.sinks.sinks.append(publisher)
            publisher.start()

    def _check_outputs(self) -> None:
        s = self.settings
        outputs = {"--summary-json": (s.summary_json, SUMMARY)}
        if self._default_sinks:
            outputs = {"--output": (s.output, JSONL), **outputs}
        if self.viewers is not None:
            outputs.update(self.viewers.outputs())
        check_outputs(outputs, [p for src in self.sources for p in src.input_files()])

    def _stop_point(self, phase: str) -> None:
        if self._stop.is_set():
            raise StopRequested(f"stopped while {phase}")

    def _open_sinks(self) -> None:
        s = self.settings
        if self._default_sinks and s.output:
            self.sinks.sinks.insert(0, JsonlSink.create(s.output))  # written before anything is published
        if self.viewers is not None:
            self.sinks.sinks.append(self.viewers)
        for sink in self.sinks.sinks:
            sink.start()  # the publisher's second start is a no-op

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
        for sink in self.sinks.sinks:
            sink.ready(self._stop)  # e.g. --wait-subscribers; a stop request ends the wait
        if (failure := self._backend_failure()) is not None:
            raise failure
        if self._stop.is_set():  # nothing was read: every source ends with no frame
            for src in self.sources:
                self.sinks.end(src.name, 0, "stopped")
            raise StopRequested("stopped before the first frame")
        self.metrics = Metrics([src.name for src in self.sources])
        outbox: queue.Queue[BatchEvent] = queue.Queue()
        self.batcher = Batcher(self.buffers, self.executor, s.batch, s.batch_timeout_ms / 1e3, outbox,
                               cond=self.intake.cond, keep_open=s.keep_running, timings=self.metrics.timings,
                               tap=self.viewers.tap if self.viewers is not None else None)
        labelling = Labelling(manifest.labels, min(s.topk, manifest.num_classes), self.backend.engine_id)
        self.results = ResultsStage(self.executor, self.sinks, self.metrics, labelling, self.accuracy,
                                    on_batch_error=self.request_stop, on_end=self._on_end,
                                    on_picture=self.viewers.show if self.viewers is not None else None,
                                    model_id_of=self.handover.engine_id_of if self.handover else None)
        for src in self.sources:
            self.sinks.health(src.name, "up", src.description)
        self.metrics.start = time.monotonic()
        self.results.start(outbox, self._unreported_ends)
        self.batcher.start()
        spec = self.backend.batch_spec
        self.intake.configure_gpu(tuple(spec.sample_shape[:2]), s.batch, self.viewers is not None)
        self.intake.start(self._on_state, self._attach, self.metrics.timings.stages["decode"].observe)
        self.phase = "running"
        try:
            self._supervise(progress)
        finally:
            self.phase = "ended"
        self.metrics.finish()
        self._await_backend()
        self.error = self.error or self.results.error or self.batcher.error
        self._publish_stats()
        summary = self.summary()
        if (failure := self._backend_failure()) is not None:
            raise failure  # the requested backend could not load: as without the bridge
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
                    self.phase = "draining"
                    log.info("stopping: no new frames; draining what is in flight")
                    self.intake.stop()
                    if self.batcher is not None:
                        self.batcher.seal()
                now = time.monotonic()
                self.metrics.sample_rates(now)
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
        return [SourceEnd(buf.source, buf.taken, buf.reason or "stopped", buf.failed, buf.skipped)
                for _, buf in self.intake.entries()]

    # -- sources added and removed while running -------------------------------------------------------
    def add_source(self, spec: str, name: str | None = None, policy: str | None = None) -> FrameSource:
        """Open ``spec`` as a ``--source`` would be and stream it from now on (any thread, while running).
        Raises SourceError (the CLI's one-line message), intake.SourceNameTaken or intake.IntakeClosed."""
        return self.intake.add(spec, name, policy)

    def remove_source(self, name: str, wait_s: float = 0.0) -> bool:
        """Stop source ``name`` (any thread, while running): its buffered frames are still published, then
        its eos with reason ``removed``. Waits up to ``wait_s`` for that eos; True once it is out. Raises
        intake.UnknownSource, intake.SourceAlreadyEnded or intake.IntakeClosed."""
        self.intake.remove(name)
        with self._ends:
            return self._ends.wait_for(lambda: self.results is not None and name in self.results.ends, wait_s)

    def _attach(self, source: FrameSource, buffer: FrameBuffer) -> None:
        """A source added while running: known to the metrics, then batched (the intake starts its reader
        after this returns)."""
        assert self.metrics is not None and self.batcher is not None
        self.metrics.add_source(source.name)
        try:
            self.batcher.add(buffer)
        except SealedError:
            raise IntakeClosed("the run is ending: no source can be added now",
                               "start with --keep-running to keep a service up after its last source ends"
                               ) from None
        self.sinks.health(source.name, "up", source.description)

    def _on_end(self, end: SourceEnd) -> None:
        with self._ends:
            self._ends.notify_all()

    def _on_state(self, source: FrameSource, state: SourceState, detail: str) -> None:
        health = HEALTH.get(state)
        if health is not None:
            self.sinks.health(source.name, health, detail)

    # -- stats and summary ------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        assert self.metrics is not None
        d = self.metrics.window()
        for src, buf in self.intake.entries():
            d["sources"].setdefault(src.name, {"frames": 0}).update(
                dropped=buf.dropped, queued=len(buf), policy=buf.policy.value, state=src.state.value,
                reconnects=src.reconnects, skipped=src.skipped)
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
                             ends[src.name].reason if src.name in ends else "", src.skipped)
               for src, buf in self.intake.entries()]
        extra: dict[str, Any] = {}
        for sink in self.sinks.sinks:
            if isinstance(sink, PublisherSink):
                extra["publisher"] = sink.counters()
        if results is not None:
            extra["stages"] = results.stage_times(m.frames, batcher.resize_s if batcher else 0.0)
        extra["startup"] = self._startup_times()
        extra["decode"] = {src.name: src.decode_info() for src, _ in self.intake.entries()}
        if self.viewers is not None:
            extra.update(self.viewers.summary())
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

    def _startup_times(self) -> dict[str, Any]:
        """Seconds from the process start to: sources open, model ready (the requested backend), first
        prediction published; ``bridge``: what a fast start's bridge did (None: there was none)."""
        start = process_start_mono()

        def since_start(t: float | None) -> float | None:
            return round(t - start, 3) if start is not None and t is not None else None

        marks = dict(self._startup)
        if self.metrics is not None and self.metrics.first_record is not None:
            marks["first_prediction"] = self.metrics.first_record
        bridge_ready = marks.pop("bridge_ready", None)
        out: dict[str, Any] = {f"{name}_s": since_start(t) for name, t in marks.items()}
        h = self.handover
        out["bridge"] = None if h is None or self._bridge is None else {
            "backend": self._bridge.backend.name, "engine": h.bridge.engine_id,
            "for": self._bridge.stands_in_for, "ready_s": since_start(bridge_ready),
            "handover_s": since_start(h.handover_mono), "frames": h.bridge_frames,
            "batches": h.bridge_batches}
        return out

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
            self.executor.close()  # a hand-over closes both its engines
        if self.backend is not None and self.handover is None:
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
