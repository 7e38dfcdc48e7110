"""The driver's HTTP control plane (``--http`` with ``--workers``): the same endpoints as one streamer's
(:mod:`streamer.control.api`, docs/control.md), over every worker.

- ``GET /metrics``: every worker's own exposition, each sample labelled ``worker="N"`` (asked over Ray at
  scrape time; a worker that is restarting is left out for that scrape), plus the driver's: workers and their
  restarts, what the driver wrote and dropped, the forwarder's counters, its process (``worker="driver"``).
- ``GET /healthz``, ``GET /readyz``: the driver's phase and its workers' states.
- ``GET /sources``, ``GET /sources/<name>``: every worker's entries, each with its ``worker``; a source whose
  worker is restarting is listed from the driver's records (state ``down``).
- ``POST /sources``: to the worker with the fewest running sources; ``DELETE /sources/<name>``: on its worker.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from streamer.config import Settings
from streamer.control.api import Endpoints, serve_endpoints
from streamer.control.redact import public_uri
from streamer.control.server import HttpServer, Request, Response
from streamer.errors import ConfigError

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from streamer.scale.driver import Driver

DRIVER = "driver"  # the ``worker`` label of the driver's own process metrics


class DriverControl(Endpoints):
    """The endpoints, bound to one driver. ``add_to(server)`` puts them in its route table."""

    def __init__(self, driver: Driver) -> None:
        from prometheus_client.registry import CollectorRegistry

        self.driver = driver
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(DriverCollector(driver))

    # -- probes ------------------------------------------------------------------------------------------
    def healthz(self, request: Request) -> Response:
        """200 while the driver runs (a worker being restarted included); 503 once the run has ended or
        failed, or a worker was given up."""
        d = self.driver
        workers = {str(slot.index): slot.state for slot in d.slots}
        problems = [slot.gave_up for slot in d.slots if slot.gave_up]
        if d.phase == "ended":
            problems.append("the run has ended")
        if d.error is not None or (d.collector is not None and d.collector.error is not None):
            problems.append(f"the run failed: {d.error or (d.collector.error if d.collector else '')}")
        body: dict[str, Any] = {"status": "failing" if problems else "ok", "phase": d.phase,
                                "workers": workers}
        if problems:
            body["reason"] = "; ".join(problems)
        return Response.json(body, 503 if problems else 200)

    def readyz(self, request: Request) -> Response:
        """200 when the run streams, every worker runs and at least one source is up; else 503 and why."""
        d = self.driver
        records = d.collector.snapshot()[0] if d.collector is not None else {}
        up = [name for name, r in records.items() if r.health == "up" and not r.ended]
        waiting = [f"worker {slot.index} is {slot.state}" for slot in d.slots
                   if slot.state in ("starting", "restarting")]
        checks = {"phase": d.phase, "workers": {str(slot.index): slot.state for slot in d.slots},
                  "sources_up": len(up)}
        if d.phase != "running":
            reason = {"created": "not started", "opening": "starting Ray and the workers",
                      "draining": "stopping: the workers drain the frames in flight",
                      "ended": "the run has ended"}.get(d.phase, d.phase)
        elif waiting:
            reason = "; ".join(waiting)
        elif not up:
            reason = "no source is up" + (" (add one: POST /sources)" if d.settings.keep_running else "")
        else:
            return Response.json({"status": "ready", **checks})
        return Response.json({"status": "not ready", "reason": reason, **checks}, 503)

    # -- sources -----------------------------------------------------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        """Every source of the run, in the order they came: its worker's entry, or the driver's record while
        that worker does not answer (restarting)."""
        d = self.driver
        answers = d.worker_sources()
        by_name = {entry["name"]: {**entry, "worker": worker}
                   for worker, entries in answers.items() for entry in entries}
        records = d.collector.snapshot()[0] if d.collector is not None else {}
        out = []
        for a in list(d.sources):
            record = records.get(a.name)
            entry = by_name.get(a.name)
            if entry is None:
                entry = {"name": a.name, "uri": public_uri(a.spec), "worker": a.worker,
                         "state": (record.health if record and not record.ended else "ended"),
                         "detail": record.detail if record else ""}
            if record is not None:  # every run of the source counts, not only its worker's current one
                entry["frames"] = record.frames
                entry["end"] = (record.end or {}).get("reason", entry.get("end", ""))
            out.append(entry)
        return out

    def add(self, spec: str, name: str | None, policy: str | None) -> str:
        return self.driver.add_source(spec, name, policy).name

    def remove(self, name: str, wait_s: float) -> bool:
        return self.driver.remove_source(name, wait_s)


class DriverCollector:
    """Prometheus collector: every worker's metrics with a ``worker`` label, and the driver's own."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    def describe(self) -> list[Metric]:
        return []  # unchecked: registering does not scrape the workers

    def collect(self) -> Iterator[Metric]:
        from prometheus_client import ProcessCollector

        families: dict[str, Metric] = {}
        for worker, text in sorted(self.driver.worker_metrics().items()):
            _merge(families, _parse(text.decode()), str(worker))
        _merge(families, list(ProcessCollector(registry=None).collect()), DRIVER)
        yield from families.values()
        yield from self._driver()

    def _driver(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

        d = self.driver
        state = GaugeMetricFamily("streamer_worker_state", "1 for each worker's current state: starting (its "
                                  "run opens sources and model), running, restarting (Ray brings it back), "
                                  "finished, failed (given up)",
                                  labels=["worker", "state"])
        restarts = CounterMetricFamily("streamer_worker_restarts", "times a worker died and was restarted "
                                       "by Ray (its sources resumed there)", labels=["worker"])
        info = InfoMetricFamily("streamer_worker", "where each worker runs now", labels=["worker"])
        for slot in d.slots:
            state.add_metric([str(slot.index), slot.state], 1.0)
            restarts.add_metric([str(slot.index)], float(slot.restarts))
            where = slot.where
            info.add_metric([str(slot.index)], {"pid": str(where.get("pid", "")),
                                                "host": where.get("host", ""), "node": where.get("node", ""),
                                                "gpus": where.get("gpus", "")})
        yield from (state, restarts, info)
        if d.collector is not None:
            c = d.collector.counters()
            written = CounterMetricFamily("streamer_output_predictions", "predictions the driver received "
                                          "from the workers: written (to --output, once each), duplicate "
                                          "(of a frame already written: dropped), stale (from a worker's "
                                          "earlier run: dropped)", labels=["result"])
            written.add_metric(["written"], float(c.written))
            written.add_metric(["duplicate"], float(c.duplicates))
            written.add_metric(["stale"], float(c.stale))
            per_source = CounterMetricFamily("streamer_output_frames", "frames of each source in the merged "
                                             "output (every run of the source counted)", labels=["source"])
            for name, record in d.collector.snapshot()[0].items():
                per_source.add_metric([name], float(record.frames))
            yield from (written, per_source)
        if d.forwarder is not None:
            f = d.forwarder.counters()
            fwd = CounterMetricFamily("streamer_forwarder_messages", "messages on the subscribers' endpoint: "
                                      "forwarded (from the workers), own (the driver's stats, health, eos)",
                                      labels=["from"])
            fwd.add_metric(["workers"], float(f["forwarded"]))
            fwd.add_metric(["own"], float(f["sent"]))
            overflow = CounterMetricFamily("streamer_forwarder_hwm_overflows", "times a subscriber's queue "
                                           "was full on the driver's endpoint (it missed that message)")
            overflow.add_metric([], float(f["hwm_overflows"]))
            subs = GaugeMetricFamily("streamer_forwarder_subscriptions",
                                     "active subscriptions on the driver's endpoint")
            subs.add_metric([], float(f["subscriptions"]))
            yield from (fwd, overflow, subs)


def _parse(text: str) -> list[Metric]:
    from prometheus_client.parser import text_string_to_metric_families

    return list(text_string_to_metric_families(text))


def _merge(families: dict[str, Metric], metrics: list[Metric], worker: str) -> None:
    """Add ``metrics``' samples, labelled ``worker``, to the family of the same name (one family per name:
    the exposition format allows no repeats)."""
    from prometheus_client.core import Metric

    for metric in metrics:
        family = families.get(metric.name)
        if family is None:
            family = families[metric.name] = Metric(metric.name, metric.documentation, metric.type)
        for sample in metric.samples:
            family.add_sample(sample.name, {"worker": worker, **sample.labels}, sample.value)


def serve_driver(settings: Settings, driver: Driver) -> HttpServer | None:
    """Start the driver's control plane on ``settings.http`` (None when it is off); bound before the driver
    opens, so that the probes answer while Ray and the workers start."""
    if settings.preview:
        raise ConfigError("--preview shows one pipeline's frames; with --workers each worker runs its own",
                          "leave --preview out with --workers, or preview one streamer without them")
    return serve_endpoints(settings, lambda: DriverControl(driver),
                           listing="/metrics /healthz /readyz /sources of every worker")
