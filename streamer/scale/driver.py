"""``streamer --workers N [--ray ADDRESS]``: this process becomes a driver over N Ray workers.

The driver shards the ``--source`` list (:mod:`.shard`), binds the one endpoint subscribers use
(:mod:`.forward`) and the lossless channel (:mod:`.channel`, which writes ``--output``), starts one Ray actor
per worker (:mod:`.worker`: one GPU each for a GPU backend, else ``[scale] worker_cpus`` CPUs) and runs one
:class:`~.worker.Plan` on each. It has the interface the CLI drives a :class:`~streamer.pipeline.Pipeline`
by (``open``, ``run``, ``request_stop``, ``close``, ``failed_sources``), so signals, the summary and the exit
status behave the same.

A worker that dies (its process killed, its node lost) fails its ``run`` call with a RayActorError; Ray
restarts the actor (up to ``[scale] max_restarts`` times) and the driver sends it its next plan: the sources
that had not ended, each resuming after the last frame the driver has written (:meth:`Collector.begin`).
Its sources go ``health`` down when it dies and up when the new run starts.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streamer.config import Settings
from streamer.devices import parse_device
from streamer.errors import ConfigError, SourceError, StreamerError
from streamer.intake import StopRequested
from streamer.metrics import SourceSummary, Summary
from streamer.outputs import JSONL, SUMMARY, check_outputs
from streamer.publish import JsonlWriter, wait_for_subscribers_logged
from streamer.scale.channel import CLOSE_LINGER_S, Collector
from streamer.scale.forward import Forwarder
from streamer.scale.ray_env import connect, first_line, ray_module
from streamer.scale.shard import Assigned, deal, default_name, describe, least_loaded, run_names, unique_name
from streamer.scale.worker import Plan, Worker

log = logging.getLogger("streamer.scale")

SUPERVISE_S = 0.1
PLACE_TIMEOUT_S = 120.0  # a worker Ray cannot place by then (no GPU free, no node fits): a one-line error
RESTART_POLL_S = 0.2
CALL_TIMEOUT_S = 10.0  # a worker's answer to add/remove (beyond the time the call itself may take)
ASK_TIMEOUT_S = 2.0  # a worker's /sources and /metrics answers (a scrape should not hang)
GPU_BACKENDS = ("tensorrt", "tensorrt-rtx", "torch")
ACTOR_CONCURRENCY = 8  # run + stop + add/remove + metrics at once
LIVE = ("running", "starting")  # worker states in which it takes calls (a starting one waits a moment)

ProgressFactory = Callable[[int | None], Any]


@dataclass
class WorkerSlot:
    """The driver's view of one worker: its actor, the run in flight and its history."""

    index: int
    actor: Any
    ready: Callable[[int, int], bool] = field(default=lambda worker, incarnation: True, repr=False)
    incarnation: int = 0
    run_ref: Any = None  # the ObjectRef of the run in flight
    restarts: int = 0
    finished: bool = False
    gave_up: str = ""  # why its sources were given up (restarts exhausted)
    restarting: bool = False  # its process died; waiting for Ray to bring it back
    where: dict[str, Any] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)  # each finished run's result

    @property
    def state(self) -> str:
        if self.gave_up:
            return "failed"
        if self.restarting:
            return "restarting"
        if self.run_ref is None:
            return "finished"
        return "running" if self.ready(self.index, self.incarnation) else "starting"


class Driver:
    def __init__(self, settings: Settings) -> None:
        if settings.workers < 1:
            raise ConfigError("the driver needs --workers N with N >= 1")
        self.settings = settings
        self.sources: list[Assigned] = []
        self.slots: list[WorkerSlot] = []
        self.forwarder: Forwarder | None = None
        self.collector: Collector | None = None
        self.writer: JsonlWriter | None = None
        self.gpu_workers = False
        self.phase = "created"
        self.error: StreamerError | None = None
        self._ray: Any = None
        self._stop = threading.Event()
        self._stopping = False
        self._lock = threading.Lock()  # sources and slots, against /sources calls
        self._opened = False
        self._closed = False
        self._start = 0.0
        self._elapsed = 0.0

    # -- start-up ---------------------------------------------------------------------------------------
    def open(self) -> Driver:
        """Everything that can fail at start-up, cheapest first: names and paths, outputs, the subscriber
        endpoint, then Ray and the workers. StreamerError (one line) on failure, after releasing it all."""
        self.phase = "opening"
        s = self.settings
        try:
            ray = self._ray = ray_module()
            if parse_device(s.device).is_gpu:
                raise ConfigError(f"--device {s.device} picks one GPU for one process",
                                  "leave it out with --workers: Ray gives each worker a GPU of its own")
            if not s.sources and not s.keep_running:
                raise ConfigError("no source given", "pass --source SRC (several: they are shared out "
                                                     "over the workers)")
            described = [describe(spec, local_files=not s.ray_address) for spec in s.sources]
            names = run_names([d.name for d in described])
            workers = deal(len(names), s.workers)
            self.sources = [Assigned(spec, name, w, kind=d.kind)
                            for spec, d, name, w in zip(s.sources, described, names, workers, strict=True)]
            check_outputs({"--output": (s.output, JSONL), "--summary-json": (s.summary_json, SUMMARY)},
                          [path for d in described for path in d.input_files])
            host = s.driver_host or (_node_ip(ray) if s.ray_address else "127.0.0.1")
            if s.publish:
                self.forwarder = Forwarder(s.bind, host, hwm=s.hwm, encoding=s.encoding).start()
            self._stop_point("binding the endpoint")
            if s.output:
                self.writer = JsonlWriter(s.output)
            self.collector = Collector(host, self.writer, self._on_event).start()
            for assigned in self.sources:
                self.collector.track(assigned.name, assigned.worker)
            connect(s.ray_address, s.workers, s.log_level)
            self._stop_point("starting Ray")
            self.gpu_workers = self._wants_gpus(ray)
            self._start_workers(ray)
        except BaseException:
            self.close()
            raise
        self._opened = True
        return self

    def _wants_gpus(self, ray: Any) -> bool:
        """A GPU backend takes a GPU per worker; ``auto`` does when the cluster has GPUs (and --device is not
        cpu), else the workers run ONNX Runtime on CPUs."""
        s = self.settings
        if s.backend in GPU_BACKENDS:
            return True
        if s.backend != "auto" or parse_device(s.device).kind == "cpu":
            return False
        return float(ray.cluster_resources().get("GPU", 0)) > 0

    def _start_workers(self, ray: Any) -> None:
        s = self.settings
        options: dict[str, Any] = {"num_cpus": s.worker_cpus, "num_gpus": 1 if self.gpu_workers else 0,
                                   "max_restarts": s.max_restarts, "max_task_retries": 0,
                                   "max_concurrency": ACTOR_CONCURRENCY,
                                   "scheduling_strategy": "SPREAD"}  # over the nodes: a lost node costs less
        remote = ray.remote(Worker).options(**options)
        actors = [remote.remote(i, s.log_level) for i in range(s.workers)]
        assert self.collector is not None
        self.slots = [WorkerSlot(i, actor, self.collector.is_ready) for i, actor in enumerate(actors)]
        per = f"1 GPU and {s.worker_cpus:g} CPU" if self.gpu_workers else f"{s.worker_cpus:g} CPU"
        log.info("starting %d workers (%s each); %d sources: source i → worker i mod %d", s.workers, per,
                 len(self.sources), s.workers)
        pending = {slot.actor.where.remote(): slot for slot in self.slots}
        deadline = time.monotonic() + PLACE_TIMEOUT_S
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=SUPERVISE_S)
            for ref in ready:
                slot = pending.pop(ref)
                try:
                    slot.where = ray.get(ref)
                except Exception as exc:  # its process could not start (streamer missing on that node ...)
                    raise ConfigError(f"worker {slot.index} did not start: {first_line(exc)}",
                                      "every node needs the same streamer installed (pip install "
                                      "'streamer[ray]', or an image that has it)") from None
                log.info("worker %d: pid %d on %s (node %s)%s", slot.index, slot.where["pid"],
                         slot.where["host"], slot.where["node"][:8],
                         f", GPU {slot.where['gpus']}" if self.gpu_workers else "")
            self._stop_point("starting the workers")
            if pending and time.monotonic() > deadline:
                missing = ", ".join(str(slot.index) for slot in pending.values())
                res = ray.cluster_resources()
                raise ConfigError(f"Ray could not place worker(s) {missing} within {PLACE_TIMEOUT_S:.0f} s: "
                                  f"{s.workers} workers need {per} each, the cluster has "
                                  f"{res.get('CPU', 0):g} CPUs and {res.get('GPU', 0):g} GPUs",
                                  "use fewer --workers, add nodes, or lower [scale] worker_cpus")

    def _stop_point(self, phase: str) -> None:
        if self._stop.is_set():
            raise StopRequested(f"stopped while {phase}")

    # -- running ----------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Drain every worker (safe from a signal handler: only sets a flag)."""
        self._stop.set()

    def run(self, progress: ProgressFactory | None = None) -> Summary:
        if not self._opened:
            self.open()
        assert self.collector is not None
        s = self.settings
        forwarder = self.forwarder
        if forwarder is not None and s.wait_subscribers and not wait_for_subscribers_logged(
                forwarder.wait_for_subscribers, forwarder.endpoint, s.wait_subscribers, s.wait_timeout_s,
                self._stop):
            raise StopRequested("stopped before the first frame")
        self._start = time.monotonic()
        self.phase = "running"
        with self._lock:
            for slot in self.slots:
                self._start_run(slot)
        try:
            self._supervise(progress)
        finally:
            self._elapsed = time.monotonic() - self._start
            self.phase = "ended"
        self._end_unfinished()
        self._publish_stats()
        if self.error is not None:
            raise self.error
        if self.collector.error is not None:
            raise self.collector.error
        return self.summary()

    def _start_run(self, slot: WorkerSlot) -> None:
        """Send ``slot`` its next plan: its sources that have not ended, each resuming after the last frame
        written (a first run: all of them, from the start). Call with ``self._lock`` held."""
        assert self.collector is not None
        s = self.settings
        slot.incarnation += 1
        resume = self.collector.begin(slot.index, slot.incarnation)
        mine = tuple(a for a in self.sources if a.worker == slot.index and a.name in resume)
        if not mine and not s.keep_running:
            slot.finished = True
            return
        records, _ = self.collector.snapshot()
        forwarder = self.forwarder
        plan = Plan(worker=slot.index, incarnation=slot.incarnation, settings=self._worker_settings(),
                    sources=mine, collector=self.collector.endpoint,
                    forwarder=forwarder.upstream if forwarder is not None else "",
                    wait_subscribers=1 if forwarder is not None and forwarder.subscriptions else 0,
                    resume={n: last for n, last in resume.items() if last >= 0},
                    written={a.name: records[a.name].frames for a in mine if records[a.name].frames})
        slot.run_ref = slot.actor.run.remote(plan)
        slot.finished = False

    def _worker_settings(self) -> dict[str, Any]:
        """The settings a worker's pipeline runs with: the run's, less what the driver does itself (outputs,
        the endpoint, HTTP, Ray) and with the device Ray gave it."""
        s = self.settings
        changes: dict[str, Any] = {"sources": (), "output": "", "summary_json": "", "bind": "none",
                                   "wait_subscribers": 0, "http": "none", "workers": 0, "ray_address": "",
                                   "progress": "off"}
        if self.gpu_workers:
            changes["device"] = "cuda:0"  # the one GPU Ray made visible to the worker
        elif s.threads == 0:
            changes["threads"] = max(1, int(s.worker_cpus))  # not every core of the machine per worker
        return dataclasses.asdict(s.replace(**changes))

    def _supervise(self, progress: ProgressFactory | None) -> None:
        assert self.collector is not None
        ray = self._ray
        bar = progress(None) if progress else None
        shown = 0
        interval = self.settings.stats_interval_s
        next_stats = time.monotonic() + interval if interval else float("inf")
        try:
            while True:
                with self._lock:
                    running = {slot.run_ref: slot for slot in self.slots if slot.run_ref is not None}
                    restarting = any(slot.restarting for slot in self.slots)
                if not running and not restarting and (self._stopping or not self.settings.keep_running):
                    return
                if running:
                    ready, _ = ray.wait(list(running), num_returns=len(running), timeout=SUPERVISE_S)
                    for ref in ready:
                        self._finished(running[ref], ref)
                else:
                    self._stop.wait(SUPERVISE_S)
                if (self._stop.is_set() or self.error is not None or self.collector.error is not None) \
                        and not self._stopping:
                    self._stop_workers()
                now = time.monotonic()
                if now >= next_stats:
                    next_stats = now + interval
                    self._publish_stats()
                if bar is not None:
                    written = self.collector.counters().written
                    bar.update(written - shown)
                    shown = written
        finally:
            if bar is not None:
                bar.close()

    def _stop_workers(self) -> None:
        self._stopping = True
        self.phase = "draining"
        log.info("stopping: every worker drains what it has in flight")
        with self._lock:
            for slot in self.slots:
                if slot.run_ref is not None:
                    slot.actor.stop.remote()

    def _finished(self, slot: WorkerSlot, ref: Any) -> None:
        """``slot``'s run call returned: done, failed with a one-line error, or its process died."""
        ray = self._ray
        assert self.collector is not None
        try:
            result = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            with self._lock:
                slot.run_ref = None
                self._died(slot, exc)
            return
        except Exception as exc:  # a bug in the worker: its sources are given up, the run goes on
            log.error("worker %d failed: %s", slot.index, first_line(exc))
            result = {"error": f"worker {slot.index} failed: {first_line(exc)}", "bug": True}
            slot.gave_up = result["error"]
        done = self.collector.wait_done(slot.index, slot.incarnation, CLOSE_LINGER_S)
        if done is None and self.collector.error is None:
            log.warning("worker %d: its run ended, but its last messages did not arrive", slot.index)
        with self._lock:
            slot.run_ref = None
            slot.finished = True
            slot.results.append(result)
        if "error" in result and not result.get("bug") and self.error is None:
            self.error = StreamerError(f"worker {slot.index}: {result['error']}")

    def _died(self, slot: WorkerSlot, exc: BaseException) -> None:
        """The worker's process is gone. Its sources go down; Ray restarts it and it gets its next plan,
        unless restarts are used up (or the run is stopping): then its sources end here."""
        assert self.collector is not None
        slot.restarts += 1
        limit = self.settings.max_restarts
        records, _ = self.collector.snapshot()
        open_sources = [a.name for a in self.sources if a.worker == slot.index and not records[a.name].ended]
        log.warning("worker %d (pid %s) died: %s", slot.index, slot.where.get("pid", "?"), first_line(exc))
        for name in open_sources:
            self._health(name, "down", f"worker {slot.index} lost; restarting it")
        if self._stopping:
            slot.finished = True
            return
        if limit >= 0 and slot.restarts > limit:
            slot.gave_up = f"worker {slot.index} died {slot.restarts} times ([scale] max_restarts = {limit})"
            slot.finished = True
            log.error("%s: giving its sources up (%s)", slot.gave_up, ", ".join(open_sources) or "none")
            return
        log.warning("worker %d: Ray restarts it (restart %d%s); %d source(s) resume there", slot.index,
                    slot.restarts, f" of {limit}" if limit >= 0 else "", len(open_sources))
        slot.restarting = True
        threading.Thread(target=self._await_restart, args=(slot,), daemon=True, name="restart").start()

    def _await_restart(self, slot: WorkerSlot) -> None:
        """Wait until Ray has the worker back (a call made while it restarts fails at once), then send it
        its next plan; a worker Ray gave up on (or one not back within PLACE_TIMEOUT_S) ends its sources."""
        ray = self._ray
        deadline = time.monotonic() + PLACE_TIMEOUT_S
        where: dict[str, Any] | None = None
        why = f"not back within {PLACE_TIMEOUT_S:.0f} s"
        while where is None and time.monotonic() < deadline and not self._stopping:
            try:
                where = ray.get(slot.actor.where.remote(), timeout=max(0.1, deadline - time.monotonic()))
            except ray.exceptions.ActorUnavailableError:
                self._stop.wait(RESTART_POLL_S)
            except Exception as exc:  # ActorDiedError: Ray will not restart it
                why = first_line(exc)
                break
        with self._lock:
            slot.restarting = False
            if self._stopping:
                slot.finished = True
                return
            if where is None:
                slot.gave_up = f"worker {slot.index} did not come back ({why})"
                slot.finished = True
                log.error("%s: giving its sources up", slot.gave_up)
                return
            slot.where = where
            log.info("worker %d restarted: pid %d on %s (node %s)", slot.index, where["pid"], where["host"],
                     where["node"][:8])
            self._start_run(slot)

    def _health(self, source: str, state: str, detail: str) -> None:
        if self.forwarder is not None:
            self.forwarder.publish_health(source, state, detail)

    def _on_event(self, kind: str, worker: int, source: str, fields: dict[str, Any]) -> None:
        if kind == "end":
            log.info("source %s (worker %d) ended: %s, %d frames", source, worker, fields.get("reason"),
                     fields.get("frames", 0))

    def _end_unfinished(self) -> None:
        """Sources that never reported an end (stopped before they opened, or their worker was given up)
        still get their eos, from the driver."""
        assert self.collector is not None
        records, _ = self.collector.snapshot()
        gave_up = {slot.index for slot in self.slots if slot.gave_up}
        for a in self.sources:
            record = records.get(a.name)
            if record is None or record.ended:
                continue
            reason = "error" if a.worker in gave_up else "stopped"
            self.collector.record_end(a.name, {"frames": record.frames, "reason": reason, "skipped": 0})
            if self.forwarder is not None:
                self.forwarder.publish_eos(a.name, record.frames, reason)

    # -- sources added and removed while running (the HTTP control plane calls these) ----------------------
    def add_source(self, spec: str, name: str | None = None, policy: str | None = None) -> Assigned:
        """Open ``spec`` on the worker running the fewest sources (:func:`.shard.least_loaded`). Raises what
        the pipeline's ``add_source`` raises (SourceError, SourceNameTaken, IntakeClosed)."""
        from streamer.intake import IntakeClosed, SourceNameTaken

        if self.collector is None or self.phase != "running" or self._stopping:
            raise IntakeClosed("the run is not streaming: no source can be added now",
                               "add sources once it runs; it takes none while starting or ending")
        with self._lock:
            taken = {a.name for a in self.sources}
            if name is not None and name in taken:
                raise SourceNameTaken(f"a source named {name!r} is already in this run",
                                      "choose another name (GET /sources lists the names in use)")
            chosen = name or unique_name(default_name(spec, local_files=False), taken)
            records, _ = self.collector.snapshot()
            loads = [sum(1 for a in self.sources if a.worker == slot.index and not records[a.name].ended)
                     if slot.state in LIVE else 1 << 30 for slot in self.slots]
            if min(loads) == 1 << 30:
                raise IntakeClosed("no worker is running now", "retry once the workers are back")
            worker = least_loaded(loads)
            assigned = Assigned(spec, chosen, worker, policy)
            self.sources.append(assigned)  # reserved now: a restart of that worker meanwhile includes it
            self.collector.track(chosen, worker)
        try:
            result = self._call(self.slots[worker].actor.add_source.remote(spec, chosen, policy),
                                self.settings.live_timeout_s + CALL_TIMEOUT_S)
            if "error" in result:
                raise worker_error(result["error"])
        except BaseException:
            with self._lock:
                self.sources.remove(assigned)
                self.collector.forget(chosen)
            raise
        log.info("source %s added on worker %d (the one with the fewest running)", chosen, worker)
        return assigned

    def remove_source(self, name: str, wait_s: float = 0.0) -> bool:
        """Stop source ``name`` on its worker; True once its eos is out. Raises UnknownSource,
        SourceAlreadyEnded, IntakeClosed."""
        from streamer.intake import IntakeClosed, UnknownSource

        assigned = next((a for a in self.sources if a.name == name), None)
        if assigned is None:
            raise UnknownSource(f"no source named {name!r} in this run",
                                "GET /sources lists the names in use")
        slot = self.slots[assigned.worker]
        if slot.state not in LIVE:
            raise IntakeClosed(f"worker {slot.index}, which runs {name}, is {slot.state}",
                               "retry in a moment")
        result = self._call(slot.actor.remove_source.remote(name, wait_s), wait_s + CALL_TIMEOUT_S)
        if "error" in result:
            raise worker_error(result["error"])
        return bool(result["published"])

    def worker_sources(self) -> dict[int, list[dict[str, Any]]]:
        """Each running worker's ``GET /sources`` entries (one that does not answer in time: left out)."""
        return self._ask_all("sources")

    def worker_metrics(self) -> dict[int, bytes]:
        """Each running worker's Prometheus exposition (a worker that does not answer in time: left out)."""
        return self._ask_all("metrics_text")

    def _ask_all(self, method: str) -> dict[int, Any]:
        with self._lock:
            slots = [slot for slot in self.slots if slot.state in LIVE]
        refs = {getattr(slot.actor, method).remote(): slot.index for slot in slots}
        if not refs:
            return {}
        ready, _ = self._ray.wait(list(refs), num_returns=len(refs), timeout=ASK_TIMEOUT_S)
        answers: dict[int, Any] = {}
        for ref in ready:
            try:
                answers[refs[ref]] = self._ray.get(ref)
            except Exception:  # it died meanwhile
                log.debug("worker %d did not answer %s", refs[ref], method, exc_info=True)
        return answers

    def _call(self, ref: Any, timeout: float) -> Any:
        from streamer.intake import IntakeClosed

        ray = self._ray
        try:
            return ray.get(ref, timeout=timeout)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
            raise IntakeClosed(f"the worker did not answer ({first_line(exc)})",
                               "retry in a moment") from None

    # -- stats and summary --------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """The whole run's ``stats``: totals, each source (its worker's figures, the frames the driver has
        written) and each worker."""
        assert self.collector is not None
        records, worker_stats = self.collector.snapshot()
        counters = self.collector.counters()
        sources: dict[str, Any] = {}
        for name, record in records.items():
            from_worker = dict(worker_stats.get(record.worker, {}).get("sources", {}).get(name, {}))
            from_worker.update(frames=record.frames, worker=record.worker, health=record.health)
            if record.end is not None:
                from_worker["end"] = record.end.get("reason")
            sources[name] = from_worker
        workers = {str(slot.index): {"state": slot.state, "restarts": slot.restarts,
                                     "pid": slot.where.get("pid"), "host": slot.where.get("host"),
                                     "fps": worker_stats.get(slot.index, {}).get("fps", 0.0)}
                   for slot in self.slots}
        return {"frames": counters.written, "fps": round(sum(w["fps"] or 0.0 for w in workers.values()), 2),
                "latency_ms": self.collector.latency.percentiles(),
                "uptime_s": round(time.monotonic() - self._start, 3) if self._start else 0.0,
                "sources": sources, "workers": workers,
                "restarts": sum(slot.restarts for slot in self.slots),
                "channel": dataclasses.asdict(counters)}

    def _publish_stats(self) -> None:
        if self.forwarder is not None and self.collector is not None:
            self.forwarder.publish_stats(self.stats())

    def summary(self) -> Summary:
        assert self.collector is not None
        records, _ = self.collector.snapshot()
        finished: list[dict[str, Any]] = [r["summary"] for slot in self.slots for r in slot.results
                                          if r.get("summary")]
        dropped: dict[str, int] = {}
        kinds: dict[str, str] = {}
        skipped: dict[str, int] = {}
        accuracy = None
        batches, batched, failed_batches = 0, 0.0, 0
        for summary in finished:
            for src in summary["sources"]:
                dropped[src["name"]] = dropped.get(src["name"], 0) + src["dropped"]
                skipped[src["name"]] = skipped.get(src["name"], 0) + src.get("skipped", 0)
                kinds[src["name"]] = src["kind"]
            batches += summary["batches"]
            batched += summary["batches"] * summary["mean_batch"]
            failed_batches += summary["failed_batches"]
            accuracy = accuracy or summary.get("accuracy")
        per = tuple(SourceSummary(a.name, kinds[a.name] if a.name in kinds else _kind(a),
                                  records[a.name].frames, dropped.get(a.name, 0),
                                  (records[a.name].end or {}).get("reason", ""), skipped.get(a.name, 0))
                    for a in self.sources if a.name in records)
        frames = sum(p.frames for p in per)
        elapsed = self._elapsed
        first: dict[str, Any] = finished[0] if finished else {}
        workers = [{"worker": slot.index, "restarts": slot.restarts, "state": slot.state, **slot.where}
                   for slot in self.slots]
        extra = {"workers": workers, "channel": dataclasses.asdict(self.collector.counters())}
        if self.forwarder is not None:
            extra["forwarder"] = self.forwarder.counters()
        return Summary(
            frames=frames, elapsed_s=round(elapsed, 4), fps=round(frames / elapsed, 2) if elapsed else 0.0,
            latency_ms=self.collector.latency.percentiles(), dropped=sum(p.dropped for p in per),
            batches=batches, mean_batch=round(batched / batches, 2) if batches else 0.0,
            backend=f"{first.get('backend', '?')} × {len(self.slots)} workers", model=first.get("model", ""),
            sources=per, failed_batches=failed_batches, accuracy=accuracy, stopped_by_signal=self._stopping,
            extra=extra)

    @property
    def failed_sources(self) -> list[str]:
        if self.collector is None:
            return []
        records, _ = self.collector.snapshot()
        return [name for name, r in records.items() if r.end is not None and r.end.get("reason") == "error"]

    # -- shutdown ---------------------------------------------------------------------------------------
    def close(self) -> None:
        """Release everything (idempotent): the workers, Ray (a local one stops, a cluster is left), the
        sockets, the output file (closed last: nothing more can arrive for it)."""
        if self._closed:
            return
        self._closed = True
        ray = self._ray
        for slot in self.slots:
            try:
                ray.kill(slot.actor, no_restart=True)
            except Exception:
                log.debug("killing worker %d failed", slot.index, exc_info=True)
        if ray is not None and ray.is_initialized():
            ray.shutdown()  # a local Ray stops; a cluster is only left (and its workers' logs stop here)
        if self.forwarder is not None:
            self.forwarder.close()
        if self.collector is not None:
            self.collector.close()
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> Driver:
        return self.open() if not self._opened else self

    def __exit__(self, *exc: object) -> None:
        self.close()


def worker_error(fields: dict[str, Any]) -> StreamerError:
    """A worker's intake error, as the exception the pipeline's ``add_source``/``remove_source`` raise."""
    from streamer.intake import IntakeClosed, SourceAlreadyEnded, SourceNameTaken, UnknownSource

    kinds: dict[str, type[StreamerError]] = {cls.__name__: cls for cls in (
        IntakeClosed, SourceAlreadyEnded, SourceNameTaken, UnknownSource, SourceError, ConfigError)}
    return kinds.get(fields.get("kind", ""), SourceError)(fields["message"], fields.get("hint"))


def _node_ip(ray: Any) -> str:
    return str(ray.util.get_node_ip_address())


def _kind(assigned: Assigned) -> str:
    """The kind of ``assigned``'s source, as found when it was named (a source added by name: from its spec
    now)."""
    if assigned.kind is not None:
        return assigned.kind
    try:
        return describe(assigned.spec, local_files=False).kind
    except SourceError:
        return "source"

