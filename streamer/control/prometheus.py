"""The pipeline's counters in Prometheus' text format, read when scraped.

Nothing here runs on the hot path: the collector reads counters the pipeline keeps anyway (per-source frames
and drops, source states, publisher counters) and histograms the batcher and results thread fill once per
batch (:class:`streamer.metrics.Timings`), each under its own short lock. prometheus-client writes the
exposition. Source names are the pipeline's ids (no credentials); URIs appear only redacted.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from streamer import __version__
from streamer.backends.base import CudaBackend
from streamer.control.redact import public_uri
from streamer.cuda_env import memory_info
from streamer.metrics import STAGES, HistogramSnapshot
from streamer.pipeline import PHASES, Pipeline
from streamer.protocol import PROTOCOL_VERSION
from streamer.sinks import PublisherSink
from streamer.sources import SourceState

HELP = {
    "gpu": "GPU memory of the device the engine runs on, every process counted",
    "dropped": "frames lost before a prediction: backpressure = the source's policy dropped a stale frame "
               "(latest, drop-oldest); engine_error = its batch failed",
    "stages": "time in each stage: decode, resize and queue per frame (queue: waiting in the source's "
              "buffer); engine and publish per batch",
    "zmq_dropped": "messages lost: queue_full = before ZeroMQ (the publisher's queue was full), "
                   "subscriber_hwm = a subscriber's queue was full (it misses that message), encode_error = "
                   "not encodable",
}


def _histogram(family: HistogramMetricFamily, labels: list[str], snap: HistogramSnapshot) -> None:
    buckets = [(floatToGoString(b), float(c)) for b, c in zip(snap.bounds, snap.cumulative, strict=False)]
    buckets.append(("+Inf", float(snap.count)))
    family.add_metric(labels, buckets, snap.sum)


class PipelineCollector(Collector):
    """Every ``streamer_*`` metric of one pipeline (docs/control.md lists them)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def describe(self) -> list[Metric]:
        return []  # an unchecked collector: registering it does not call collect()

    def collect(self) -> Iterator[Metric]:
        p = self.pipeline
        backend = p.backend
        yield InfoMetricFamily("streamer", "the running streamer: backend, model id, protocol version",
                               value={"version": __version__, "protocol_version": str(PROTOCOL_VERSION),
                                      "backend": backend.name if backend else "",
                                      "model": backend.engine_id if backend else ""})
        phase = GaugeMetricFamily("streamer_phase", "1 for the pipeline's current phase, 0 for the others",
                                  labels=["phase"])
        for name in PHASES:
            phase.add_metric([name], 1.0 if p.phase == name else 0.0)
        yield phase
        yield from self._sources()
        yield from self._timings()
        yield from self._publisher()
        if isinstance(backend, CudaBackend):
            mem = memory_info(backend.device_index)
            if mem is not None:
                free, total = mem
                gpu = GaugeMetricFamily("streamer_gpu_memory_bytes", HELP["gpu"], labels=["gpu", "kind"])
                gpu.add_metric([str(backend.device_index), "used"], float(total - free))
                gpu.add_metric([str(backend.device_index), "total"], float(total))
                yield gpu

    def _sources(self) -> Iterator[Metric]:
        p = self.pipeline
        metrics = p.metrics
        counts = metrics.counts() if metrics is not None else {}
        frames = CounterMetricFamily("streamer_frames", "frames published (one prediction each), per source",
                                     labels=["source"])
        dropped = CounterMetricFamily("streamer_frames_dropped", HELP["dropped"], labels=["source", "reason"])
        skipped = CounterMetricFamily("streamer_frames_skipped", "unreadable frames skipped",
                                      labels=["source"])
        reconnects = CounterMetricFamily("streamer_reconnects", "times a live source came back after a loss",
                                         labels=["source"])
        up = GaugeMetricFamily("streamer_source_up", "1 while the source delivers frames (state running)",
                               labels=["source"])
        queued = GaugeMetricFamily("streamer_source_queued_frames", "frames waiting in the source's buffer",
                                   labels=["source"])
        info = InfoMetricFamily("streamer_source", "each source of the run", labels=["source"])
        for src, buf in p.intake.entries():
            name = src.name
            c = counts.get(name)
            frames.add_metric([name], float(c.frames if c else 0))
            dropped.add_metric([name, "backpressure"], float(buf.dropped))
            dropped.add_metric([name, "engine_error"], float(c.failed if c else 0))
            skipped.add_metric([name], float(src.skipped))
            reconnects.add_metric([name], float(src.reconnects))
            up.add_metric([name], 1.0 if src.state is SourceState.RUNNING else 0.0)
            queued.add_metric([name], float(len(buf)))
            info.add_metric([name], {"kind": src.kind, "policy": buf.policy.value,
                                     "uri": public_uri(src.spec)})
        yield from (frames, dropped, skipped, reconnects, up, queued, info)

    def _timings(self) -> Iterator[Metric]:
        p = self.pipeline
        if p.metrics is None:
            return
        t = p.metrics.timings
        latency = HistogramMetricFamily("streamer_capture_to_publish_seconds",
                                        "capture (or decode) of a frame to its prediction handed to the "
                                        "publisher", labels=[])
        _histogram(latency, [], t.capture_to_publish.snapshot())
        stages = HistogramMetricFamily("streamer_stage_seconds", HELP["stages"], labels=["stage"])
        for stage in STAGES:
            _histogram(stages, [stage], t.stages[stage].snapshot())
        batch = HistogramMetricFamily("streamer_batch_size", "frames per batch run by the engine", labels=[])
        _histogram(batch, [], t.batch_size.snapshot())
        batches = CounterMetricFamily("streamer_batches", "batches run by the engine", labels=["result"])
        failed = p.metrics.failed_batches
        batches.add_metric(["ok"], float(p.results.batches if p.results is not None else 0))
        batches.add_metric(["failed"], float(failed))
        yield from (latency, stages, batch, batches)

    def _publisher(self) -> Iterator[Metric]:
        publishers = [s for s in self.pipeline.sinks.sinks if isinstance(s, PublisherSink)]
        if not publishers:
            return
        totals: dict[str, int] = {}
        for sink in publishers:
            try:
                for key, value in sink.counters().items():
                    totals[key] = totals.get(key, 0) + value
            except RuntimeError:  # not started yet
                continue
        sent = CounterMetricFamily("streamer_zmq_messages_sent", "messages handed to ZeroMQ")
        sent.add_metric([], float(totals.get("sent", 0)))
        dropped = CounterMetricFamily("streamer_zmq_messages_dropped", HELP["zmq_dropped"], labels=["reason"])
        dropped.add_metric(["queue_full"], float(totals.get("dropped_queue", 0)))
        dropped.add_metric(["subscriber_hwm"], float(totals.get("hwm_overflows", 0)))
        dropped.add_metric(["encode_error"], float(totals.get("errors", 0)))
        subs = GaugeMetricFamily("streamer_zmq_subscriptions", "active ZeroMQ subscriptions (one per topic "
                                 "prefix a subscriber asked for)")
        subs.add_metric([], float(totals.get("subscriptions", 0)))
        yield from (sent, dropped, subs)


def make_registry(pipeline: Pipeline) -> CollectorRegistry:
    """A registry of the pipeline's metrics and the process' own (memory, CPU, open files)."""
    from prometheus_client import ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(pipeline))
    ProcessCollector(registry=registry)
    return registry
