"""What runs inside one Ray actor: the ordinary pipeline over the sources the driver gave this worker.

The driver wraps :class:`Worker` with ``ray.remote`` (a threaded actor: ``stop``, ``add_source`` and
``metrics_text`` run while ``run`` streams). Nothing here imports Ray. A run's :class:`Plan` says which
sources, where each resumes, and where the driver's channel and forwarder are; the pipeline's sinks are the
lossless channel (:class:`~.channel.ChannelSink`) and a publisher connected to the driver's forwarder.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from streamer.config import Settings
from streamer.errors import StreamerError
from streamer.intake import Intake, StopRequested
from streamer.pipeline import Pipeline
from streamer.publish import Publisher
from streamer.scale.channel import ChannelSink, WorkerChannel
from streamer.scale.shard import Assigned
from streamer.sinks import PublisherSink, Sink
from streamer.sources import FrameSource, Policy

log = logging.getLogger("streamer.scale.worker")

STARTING_WAIT_S = 5.0  # an add/remove that comes while the run starts waits this long for it to stream


@dataclass(frozen=True)
class Plan:
    """One run of one worker. ``settings``: the run's Settings fields (sources, outputs and --workers
    replaced: they are the driver's); ``resume``: per source, the last frame the driver has written (-1:
    none), and ``written``: how many it has written (the eos counts go on from there); ``forwarder``: the
    XSUB endpoint to publish to ('' = no publishing); ``wait_subscribers``: subscriptions to wait for."""

    worker: int
    incarnation: int
    settings: dict[str, Any]
    sources: tuple[Assigned, ...]
    collector: str
    forwarder: str = ""
    wait_subscribers: int = 0
    resume: dict[str, int] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)


class ForwardingPublisherSink(PublisherSink):
    """The worker's publisher, connected to the driver's forwarder. ``stats`` stay in the worker (the driver
    publishes the whole run's); an ``eos`` counts the frames of every run of the source, not only this one."""

    def __init__(self, publisher: Publisher, written: dict[str, int], wait_subscribers: int,
                 wait_timeout_s: float) -> None:
        super().__init__(publisher, wait_subscribers, wait_timeout_s)
        self.written = written

    def end(self, source: str, frames: int, reason: str, skipped: int = 0) -> None:
        super().end(source, frames + self.written.get(source, 0), reason, skipped)

    def stats(self, stats: dict[str, Any]) -> None:
        pass


class Worker:
    """One scale-out worker: runs :class:`Plan` after :class:`Plan` (the driver sends the next one after a
    restart), and answers the driver's calls while one runs."""

    def __init__(self, index: int, log_level: str = "info") -> None:
        self.index = index
        self.pipeline: Pipeline | None = None
        self._lock = threading.Lock()
        self._stop = False
        self._control_plane: Any = None
        self._control_of: Pipeline | None = None
        _log_to_stderr(index, log_level)
        _quiet_ffmpeg(log_level)

    def where(self) -> dict[str, Any]:
        """Where this worker runs: pid, host, Ray node, GPUs Ray gave it."""
        node = ""
        try:
            import ray

            node = ray.get_runtime_context().get_node_id()
        except Exception:  # not inside Ray (tests of this class alone)
            pass
        return {"worker": self.index, "pid": os.getpid(), "host": socket.gethostname(), "node": node,
                "gpus": os.environ.get("CUDA_VISIBLE_DEVICES", "")}

    def run(self, plan: Plan) -> dict[str, Any]:
        """Stream the plan's sources until they end or ``stop`` is called: ``{"summary": ...}``,
        ``{"stopped": True}`` when stopped before the first frame, or ``{"error": one line}`` for a
        StreamerError (a source that does not open, a model that does not load): the driver ends the run."""
        channel = WorkerChannel(plan.collector, plan.worker, plan.incarnation)
        result: dict[str, Any] = {}
        try:
            result = self._stream(plan, channel)
        except StopRequested:
            result = {"stopped": True}
        except StreamerError as exc:  # one line with its hint (an exception would cross Ray as a traceback)
            result = {"error": str(exc)}
        finally:
            channel.done(result)  # after every prediction of this run: the channel keeps order
            channel.close()
        return result

    def _stream(self, plan: Plan, channel: WorkerChannel) -> dict[str, Any]:
        settings = Settings(**{**plan.settings, "sources": ()})
        sinks: list[Sink] = []
        if plan.forwarder:
            publisher = Publisher(plan.forwarder, hwm=settings.hwm, encoding=settings.encoding, connect=True)
            sinks.append(ForwardingPublisherSink(publisher, plan.written, plan.wait_subscribers,
                                                 settings.wait_timeout_s))
        sinks.append(ChannelSink(channel, plan.written))  # last: its ready() says the run reads frames now
        pipeline = Pipeline(settings, sinks=sinks, sources=self._sources(settings, plan))
        with self._lock:
            self.pipeline = pipeline
            if self._stop:
                pipeline.request_stop()
        log.info("run %d: %s", plan.incarnation, _describe(plan))
        try:
            return {"summary": pipeline.run().to_dict()}
        finally:
            pipeline.close()

    def _sources(self, settings: Settings, plan: Plan) -> list[FrameSource]:
        intake = Intake(settings)
        sources = []
        for assigned in plan.sources:
            policy = None if assigned.policy in (None, "", "auto") else Policy.parse(assigned.policy or "")
            source = intake.make(assigned.spec, policy)
            source.name = assigned.name
            last = plan.resume.get(assigned.name, -1)
            if last >= 0:
                source.resume_after(last)
                log.info("source %s resumes after frame %d", assigned.name, last)
            sources.append(source)
        return sources

    def stop(self) -> None:
        """Drain and end the current run (and the next, should it start after this)."""
        with self._lock:
            self._stop = True
            if self.pipeline is not None:
                self.pipeline.request_stop()

    def add_source(self, spec: str, name: str, policy: str | None = None) -> dict[str, Any]:
        """Open ``spec`` as source ``name`` in the running pipeline: ``{"name": ...}``, or ``{"error":
        {kind, message, hint}}`` (the intake's errors, which the driver's HTTP layer maps to statuses)."""
        try:
            return {"name": self._running().add_source(spec, name, policy).name}
        except StreamerError as exc:
            return {"error": error_fields(exc)}

    def remove_source(self, name: str, wait_s: float) -> dict[str, Any]:
        """``{"published": bool}`` (its eos is out), or ``{"error": {...}}``."""
        try:
            return {"published": self._running().remove_source(name, wait_s)}
        except StreamerError as exc:
            return {"error": error_fields(exc)}

    def sources(self) -> list[dict[str, Any]]:
        """The running pipeline's sources as ``GET /sources`` shows them ([] between runs)."""
        control = self._control()
        return control.entries() if control is not None else []

    def metrics_text(self) -> bytes:
        """This worker's Prometheus exposition: its pipeline's metrics and its process' (b"" between runs)."""
        control = self._control()
        if control is None:
            return b""
        from prometheus_client import generate_latest

        return generate_latest(control.registry)

    def _control(self) -> Any:
        """The control plane's view of the running pipeline (made once per run: it holds a registry)."""
        from streamer.control.api import ControlPlane

        with self._lock:
            pipeline = self.pipeline
            if pipeline is None:
                return None
            if self._control_of is not pipeline:
                self._control_plane, self._control_of = ControlPlane(pipeline), pipeline
            return self._control_plane

    def _running(self, wait_s: float = STARTING_WAIT_S) -> Pipeline:
        """The pipeline, once it streams (a call that comes just as it starts waits up to ``wait_s``)."""
        deadline = time.monotonic() + wait_s
        while True:
            pipeline = self.pipeline
            if pipeline is not None and pipeline.phase == "running":
                return pipeline
            over = pipeline is not None and pipeline.phase in ("draining", "ended")
            if over or time.monotonic() >= deadline:
                from streamer.intake import IntakeClosed

                raise IntakeClosed(f"worker {self.index} is not streaming now", "retry in a moment")
            time.sleep(0.05)


def error_fields(exc: StreamerError) -> dict[str, str | None]:
    return {"kind": type(exc).__name__, "message": exc.message, "hint": exc.hint}


def _describe(plan: Plan) -> str:
    names = [a.name for a in plan.sources]
    resumed = sum(1 for n in names if plan.resume.get(n, -1) >= 0)
    return f"{len(names)} source(s) {', '.join(names) or '-'}" + (f"; {resumed} resumed" if resumed else "")


def _quiet_ffmpeg(level: str) -> None:
    """As the CLI does: FFmpeg's own messages (which may print stream URLs with their credentials) go to
    the log, redacted and counted per source, or stay quiet; OpenCV's own warnings too."""
    from streamer.sources import ffmpeg_log

    if level != "debug":
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    if "OPENCV_FFMPEG_LOGLEVEL" in os.environ or not ffmpeg_log.install():
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET: read at each capture's open


def _log_to_stderr(index: int, level: str) -> None:
    """Ray shows each worker's stderr in the driver's terminal (prefixed with the actor and its pid)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)-7s worker {index}: %(message)s",
                                           "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
