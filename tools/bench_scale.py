"""What the scale-out driver costs (issue 15), side by side in one run on this machine:

  forward    messages/s a subscriber receives straight from publishers (each binds, the subscriber connects
             to every one) vs through the driver's forwarder (publishers connect to its XSUB, the subscriber
             to its XPUB), with --senders publisher processes, the forwarder in a process of its own (the
             driver), real prediction payloads, pre-encoded so that the senders are not the limit
  latency    send → receive time of each message at a steady --rate (messages/s, all senders together),
             direct vs through the forwarder: p50/p99, and the p99 the forwarder adds
  channel    predictions/s the driver's collector takes from --senders worker processes (each sending
             through the lossless channel as a worker's sink does, in batches of 16) and writes, each once,
             to a JSONL file
  pipeline   the real CLI on a clip: ``streamer`` alone vs ``streamer --workers 1`` (Ray local; start-up
             excluded: frames/s over the run's own elapsed time) — what a driver costs a real run

    python tools/bench.py scale --json-out out/scale.json
    python tools/bench.py scale --sections forward,latency --messages 400000 --senders 4

Messages are ZeroMQ multipart [topic, payload] as the streamer sends them. Timestamps are
``time.perf_counter_ns`` (CLOCK_MONOTONIC: one clock for every process of the machine).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from bench_common import Machine, Record, Target, fmt, pick, ratio

HELP = "the scale-out driver: forwarding msgs/s and added latency vs direct; streamer vs --workers 1"
SECTIONS = ("forward", "latency", "channel", "pipeline")
TARGETS = {"forward_vs_direct": 0.5, "added_p99_ms": 5.0}
CHANNEL_BATCH = 16  # predictions per batch in the channel section (streamer --batch's default)
STAMP = 20  # bytes of the ascii send time at the head of a latency message's payload
END = b"end"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of: {', '.join(SECTIONS)}")
    p.add_argument("--messages", type=int, default=200_000, help="messages per throughput run, all senders")
    p.add_argument("--senders", type=int, default=4, help="publisher processes (workers)")
    p.add_argument("--rate", type=float, default=4_000.0, help="latency runs: messages/s, all senders")
    p.add_argument("--latency-seconds", type=float, default=10.0, help="latency runs: seconds each")
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs of each way (median reported)")
    p.add_argument("--clip", type=Path, default=None, help="pipeline clip (default: media/vtest.avi)")
    p.add_argument("--run-timeout", type=float, default=300.0, help="seconds allowed per streamer run")


# -- records -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Throughput(Record):
    way: str  # direct | forwarded
    messages: int  # sent, all senders
    received: int
    seconds: float  # first to last message received

    DERIVED: ClassVar[tuple[str, ...]] = ("per_s",)

    def __post_init__(self) -> None:
        if self.way not in ("direct", "forwarded") or self.received > self.messages or self.seconds < 0:
            raise ValueError(f"bad throughput record {self}")

    @property
    def per_s(self) -> float:
        return self.received / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class Latency(Record):
    way: str
    rate: float
    received: int
    sent: int
    p50_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True)
class ChannelRun(Record):
    senders: int
    predictions: int  # sent, all senders
    written: int  # lines in the output file
    seconds: float  # the collector's first to last line

    DERIVED: ClassVar[tuple[str, ...]] = ("per_s",)

    @property
    def per_s(self) -> float:
        return self.written / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class PipelineRun(Record):
    way: str  # streamer | workers=1
    frames: int
    fps: float
    wall_s: float  # the whole command, start-up included
    lat_p99_ms: float | None


@dataclass(frozen=True)
class ScaleReport(Record):
    machine: Machine
    senders: int
    throughput: tuple[Throughput, ...] = ()
    latency: tuple[Latency, ...] = ()
    channel: tuple[ChannelRun, ...] = ()
    pipeline: tuple[PipelineRun, ...] = ()
    targets: tuple[Target, ...] = ()


# -- processes ---------------------------------------------------------------------------------------------
def _payload(i: int) -> bytes:
    from streamer.protocol import Prediction, TopK, prediction_json

    pred = Prediction(f"cam{i}", 1234, time.time(), (TopK(3, "heart", 0.968), TopK(1, "square", 0.021),
                                                     TopK(7, "star", 0.006)), "shapes_cnn@3f9a0c1b2d4e/torch")
    return prediction_json(pred, time.time(), seq=41)


def _sender(endpoint: str, connect: bool, index: int, count: int, rate: float, bound: Any, ready: Any,
            go: Any) -> None:
    """A worker's publisher: XPUB (as streamer.publish) connected to ``endpoint`` (or bound to a free port of
    it, said on ``bound``), waits for a subscription, then sends ``count`` messages (``rate`` 0: as fast as
    it can, blocking at the high-water mark: nothing dropped)."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.XPUB)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.XPUB_NODROP, 1)
    if connect:
        sock.connect(endpoint)
    else:
        sock.bind(endpoint)
        bound.put(sock.getsockopt_string(zmq.LAST_ENDPOINT))
    sock.recv()  # a subscription: the subscriber (or the forwarder on its behalf) is connected
    ready.put(index)
    go.wait()
    topic, payload = f"pred.cam{index}".encode(), _payload(index)
    start = time.perf_counter()
    for i in range(count):
        if rate:
            due = start + i / rate
            while (now := time.perf_counter()) < due:
                time.sleep(min(0.0005, due - now))
            sock.send_multipart([topic, b"%020d" % time.perf_counter_ns() + payload])
        else:
            sock.send_multipart([topic, payload])
    sock.send_multipart([topic, END])
    sock.close(linger=10_000)
    ctx.term()


def _channel_sender(endpoint: str, index: int, count: int, built: Any, go: Any) -> None:
    """A worker's lossless channel: ``count`` predictions of source ``cam<index>`` (encoded as it encodes)."""
    from streamer.protocol import Prediction, TopK
    from streamer.scale.channel import WorkerChannel

    channel = WorkerChannel(endpoint, index, 1)
    topk = (TopK(3, "heart", 0.968), TopK(1, "square", 0.021), TopK(7, "star", 0.006))
    preds = [Prediction(f"cam{index}", i, time.time(), topk, "shapes_cnn@3f9a0c1b2d4e/torch")
             for i in range(count)]
    built.put(index)
    go.wait()
    for i, pred in enumerate(preds, 1):
        channel.prediction(pred)
        if i % CHANNEL_BATCH == 0:  # the end of a batch: its predictions go as one message
            channel.flush()
    channel.done({})
    channel.close()


def _forwarder(queue: Any, stop: Any) -> None:
    """The driver's forwarder in a process of its own."""
    from streamer.scale.forward import Forwarder

    fw = Forwarder("tcp://127.0.0.1:*", "127.0.0.1", hwm=200_000).start()
    queue.put((fw.endpoint, fw.upstream))
    stop.wait()
    queue.put(fw.counters())
    fw.close()


@contextlib.contextmanager
def _ways(way: str, senders: int) -> Any:
    """(where senders publish, connect?, where the subscriber connects) for ``way``."""
    ctx = mp.get_context("spawn")
    if way == "direct":  # each sender binds a free port and says which; the subscriber connects to each
        yield ["tcp://127.0.0.1:*"] * senders, False, []
        return
    queue, stop = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=_forwarder, args=(queue, stop), daemon=True)
    proc.start()
    endpoint, upstream = queue.get(timeout=30)
    try:
        yield [upstream] * senders, True, [endpoint]
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            queue.get(timeout=10)
        proc.join(10)


def _run(way: str, senders: int, per_sender: int, rate_each: float) -> tuple[list[float], int, float]:
    """One run: (latencies in ms when rate_each, received, seconds from first to last)."""
    import zmq

    ctx_mp = mp.get_context("spawn")
    with _ways(way, senders) as (targets, connect, sub_endpoints):
        bound, ready, go = ctx_mp.Queue(), ctx_mp.Queue(), ctx_mp.Event()
        procs = [ctx_mp.Process(target=_sender, daemon=True,
                                args=(targets[i], connect, i, per_sender, rate_each, bound, ready, go))
                 for i in range(senders)]
        for proc in procs:
            proc.start()
        zctx = zmq.Context()
        sub = zctx.socket(zmq.SUB)
        sub.setsockopt(zmq.RCVHWM, 0)
        if not connect:
            sub_endpoints = [bound.get(timeout=60) for _ in procs]
        for endpoint in sub_endpoints:
            sub.connect(endpoint)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        for _ in procs:
            ready.get(timeout=60)
        go.set()
        latencies: list[float] = []
        received, ended, first, last = 0, 0, 0.0, 0.0
        deadline = time.monotonic() + 300
        while ended < senders and time.monotonic() < deadline:
            if not sub.poll(1000):
                continue
            _, payload = sub.recv_multipart()
            now = time.perf_counter_ns()
            if payload == END:
                ended += 1
                continue
            received += 1
            if not first:
                first = now / 1e9
            last = now / 1e9
            if rate_each:
                latencies.append((now - int(payload[:STAMP])) / 1e6)
        sub.close(linger=0)
        zctx.term()
        for proc in procs:
            proc.join(30)
    return latencies, received, last - first


# -- sections ----------------------------------------------------------------------------------------------
def forward(args: argparse.Namespace) -> list[Throughput]:
    per_sender = args.messages // args.senders
    out = []
    for r in range(args.repeats):
        for way in ("direct", "forwarded"):
            _, received, seconds = _run(way, args.senders, per_sender, 0.0)
            rec = Throughput(way, per_sender * args.senders, received, round(seconds, 4))
            print(f"  forward {r + 1}/{args.repeats} {way:9s} {rec.per_s:>10,.0f} msg/s "
                  f"({received:,} of {rec.messages:,})", flush=True)
            out.append(rec)
    return out


def latency(args: argparse.Namespace) -> list[Latency]:
    rate_each = args.rate / args.senders
    per_sender = int(rate_each * args.latency_seconds)
    out = []
    for r in range(args.repeats):
        for way in ("direct", "forwarded"):
            lat, received, _ = _run(way, args.senders, per_sender, rate_each)
            a = np.asarray(lat)
            rec = Latency(way, args.rate, received, per_sender * args.senders,
                          round(float(np.percentile(a, 50)), 3), round(float(np.percentile(a, 99)), 3),
                          round(float(a.max()), 3))
            print(f"  latency {r + 1}/{args.repeats} {way:9s} p50 {rec.p50_ms:.3f} p99 {rec.p99_ms:.3f} "
                  f"max {rec.max_ms:.3f} ms ({received:,} of {rec.sent:,})", flush=True)
            out.append(rec)
    return out


def channel(args: argparse.Namespace) -> list[ChannelRun]:
    per_sender = args.messages // args.senders
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            rec = _channel_run(Path(tmp) / f"merged{r}.jsonl", args.senders, per_sender)
            print(f"  channel {r + 1}/{args.repeats} {rec.per_s:>10,.0f} predictions/s written "
                  f"({rec.written:,} of {rec.predictions:,})", flush=True)
            out.append(rec)
    return out


def _channel_run(path: Path, senders: int, per_sender: int) -> ChannelRun:
    """Time from the senders' go to the last one's ``done`` at the collector (every line before it)."""
    from streamer.publish import JsonlWriter
    from streamer.scale.channel import Collector

    ctx = mp.get_context("spawn")
    writer = JsonlWriter(path)
    collector = Collector("127.0.0.1", writer).start()
    built, go = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_channel_sender, args=(collector.endpoint, i, per_sender, built, go),
                         daemon=True) for i in range(senders)]
    for i, proc in enumerate(procs):
        collector.begin(i, 1)
        proc.start()
    for _ in procs:  # the senders build their predictions first (not timed)
        built.get(timeout=120)
    t0 = time.perf_counter()
    go.set()
    for i in range(senders):
        collector.wait_done(i, 1, 300)
    seconds = time.perf_counter() - t0
    for proc in procs:
        proc.join(30)
    collector.close()
    writer.close()
    return ChannelRun(senders, per_sender * senders, writer.lines, round(seconds, 4))


def pipeline(args: argparse.Namespace) -> list[PipelineRun]:
    import make_bench_media as mbm

    clip = args.clip or mbm.ensure_media(need=("vtest",))["vtest"]  # the real vtest.avi when it is at hand
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for way, extra in (("streamer", []), ("workers=1", ["--workers", "1"])):
                summary = Path(tmp) / f"{r}-{way}.json"
                cmd = [sys.executable, "-m", "streamer.cli", "--source", str(clip), "--bind", "none",
                       "--output", str(Path(tmp) / "out.jsonl"), "--summary-json", str(summary), "--quiet",
                       *extra]
                t0 = time.monotonic()
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.run_timeout)
                wall = time.monotonic() - t0
                if done.returncode != 0:
                    raise RuntimeError(f"{way} failed: {done.stderr.strip()[-500:]}")
                s = json.loads(summary.read_text())
                rec = PipelineRun(way, s["frames"], s["fps"], round(wall, 2), s["latency_ms"].get("p99"))
                print(f"  pipeline {r + 1}/{args.repeats} {way:10s} {rec.frames} frames {rec.fps:7.1f} fps "
                      f"(command {rec.wall_s:.1f} s)", flush=True)
                out.append(rec)
    return out


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def run(args: argparse.Namespace) -> ScaleReport:
    sections = pick(args.sections, SECTIONS, "sections")
    machine = Machine.probe(("zmq", "ray", "onnxruntime"))
    print(f"scale-out bench on {machine.label}: {args.senders} senders", flush=True)
    thr = forward(args) if "forward" in sections else []
    lat = latency(args) if "latency" in sections else []
    chan = channel(args) if "channel" in sections else []
    pipe = pipeline(args) if "pipeline" in sections else []

    def med(records: list[Any], way: str, field: str) -> float | None:
        return _median([getattr(r, field) for r in records if r.way == way])

    direct, forwarded = med(thr, "direct", "per_s"), med(thr, "forwarded", "per_s")
    p99_direct, p99_fwd = med(lat, "direct", "p99_ms"), med(lat, "forwarded", "p99_ms")
    added = None if p99_direct is None or p99_fwd is None else p99_fwd - p99_direct
    targets = (
        Target("forward_vs_direct", "messages/s through the forwarder / straight to the subscriber",
               ratio(forwarded, direct), TARGETS["forward_vs_direct"],
               note="the forwarder should not be what limits a cluster (a GPU worker: ~1-4k msg/s)"),
        Target("added_p99_ms", "p99 send → receive, forwarded minus direct (ms)", added,
               TARGETS["added_p99_ms"], op="<="),
    )
    print("\nway         msg/s      p50 ms   p99 ms")
    for way in ("direct", "forwarded"):
        print(f"{way:10s} {fmt(med(thr, way, 'per_s'), '>10,.0f')} {fmt(med(lat, way, 'p50_ms'), '8.3f')} "
              f"{fmt(med(lat, way, 'p99_ms'), '8.3f')}")
    if chan:
        print(f"\nchannel: {fmt(_median([c.per_s for c in chan]), ',.0f')} predictions/s written once each "
              f"(median of {len(chan)})")
    if pipe:
        print("\nrun          frames/s (median)")
        for way in ("streamer", "workers=1"):
            print(f"{way:12s} {fmt(med(pipe, way, 'fps'), '8.1f')}")
    print()
    for t in targets:
        print(f"{t.name:20s} {fmt(t.value, '.3f'):>8s}  goal {t.op} {t.goal}  {t.verdict}")
    return ScaleReport(machine.finished(), args.senders, tuple(thr), tuple(lat), tuple(chan), tuple(pipe),
                       targets)
