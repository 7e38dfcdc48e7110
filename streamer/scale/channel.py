"""The lossless channel from the workers to the driver, and the driver's record of what it has written.

Each worker connects a ZeroMQ PUSH socket to the driver's PULL socket. PUSH/PULL between live peers loses
nothing: a full queue blocks the sender (the worker's results thread, so a slow driver slows the workers, as
a slow disk slows one pipeline), it never drops. Every message names its worker and the worker's
*incarnation* (the how-many-th run of that worker the driver started), so after a restart the driver can
refuse what a dead incarnation still had in flight.

What a process that dies had in flight is lost with it; that is what resuming is for. The collector writes
each source's predictions in frame order and keeps the last frame written per source. When a worker is
restarted the driver asks :meth:`Collector.begin` for the resume points of its sources: under the same lock
that writing takes, it makes the new incarnation the only one accepted from that worker and returns, per
source, the last frame in the file. The new run skips frames up to there (files) or numbers on from there
(live sources), and the collector drops any frame at or below a source's last: each (source, frame) is in
``--output`` exactly once.

Messages (multipart, every part bytes; ``who`` = ``b"<worker>.<incarnation>"``)::

    p who [[source, frame, latency_ms, bytes], ...] lines
                                           a batch's predictions: their JSONL lines (as a pipeline writes
                                           them) one after the other, each ``bytes`` long
    e who source {frames, reason, skipped} a source ended (after its last prediction)
    h who source state detail              a source's health changed (up / down / reconnecting)
    s who {stats}                          the worker pipeline's periodic stats
    r who                                  the worker's pipeline is about to read its first frame
    d who {summary} | {error}              the worker's run is over: nothing of that incarnation follows
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq

from streamer.metrics import LatencyRecorder
from streamer.protocol import Prediction, prediction_json
from streamer.publish import JsonlWriter
from streamer.sinks import Sink

log = logging.getLogger(__name__)

PREDS, END, HEALTH, STATS, READY, DONE = b"p", b"e", b"h", b"s", b"r", b"d"
SEND_HWM = 20_000  # messages a worker queues before its sends block (backpressure, never a drop)
RECV_HWM = 50_000
DRAIN_MAX = 500  # messages handled (and their lines written in one write) per round
BATCH_MAX = 4_096  # predictions a worker holds before sending them, should no flush come
POLL_MS = 50
CLOSE_LINGER_S = 60.0  # a worker's last messages get this long to reach the driver


def who(worker: int, incarnation: int) -> bytes:
    return f"{worker}.{incarnation}".encode()


def parse_who(raw: bytes) -> tuple[int, int]:
    worker, _, incarnation = raw.decode().partition(".")
    return int(worker), int(incarnation)


# -- the worker's end -------------------------------------------------------------------------------------
class WorkerChannel:
    """A worker's PUSH socket to the driver (any thread may send; one lock serialises them). Predictions
    are held until ``flush`` (the end of their batch: one message per batch, ~6× the predictions/s of one
    message each at the driver) or any other message, which always comes after them."""

    def __init__(self, endpoint: str, worker: int, incarnation: int) -> None:
        self.endpoint = endpoint
        self.who = who(worker, incarnation)
        self._ctx = zmq.Context(io_threads=1)
        self._sock = self._ctx.socket(zmq.PUSH)
        self._sock.setsockopt(zmq.SNDHWM, SEND_HWM)
        self._sock.setsockopt(zmq.LINGER, int(CLOSE_LINGER_S * 1e3))
        self._sock.connect(endpoint)
        self._lock = threading.Lock()
        self._closed = False
        self._held: list[list[Any]] = []  # [source, frame, latency_ms, bytes] of the predictions held
        self._lines: list[bytes] = []
        self.sent = 0

    def send(self, *parts: bytes) -> None:
        with self._lock:
            self._send_held()
            self._send(parts)

    def _send(self, parts: tuple[bytes, ...]) -> None:
        if self._closed:
            raise RuntimeError("the channel to the driver is closed")
        self._sock.send_multipart([parts[0], self.who, *parts[1:]])
        self.sent += 1

    def _send_held(self) -> None:
        if self._held:
            held, lines, self._held, self._lines = self._held, self._lines, [], []
            self._send((PREDS, _json(held), b"".join(lines)))

    def prediction(self, pred: Prediction) -> None:
        now = time.time()
        line = prediction_json(pred, pred.publish_time or now) + b"\n"
        with self._lock:
            self._held.append([pred.source, pred.frame_index, round((now - pred.capture_time) * 1e3, 3),
                               len(line)])
            self._lines.append(line)
            if len(self._held) >= BATCH_MAX:
                self._send_held()

    def flush(self) -> None:
        with self._lock:
            self._send_held()

    def end(self, source: str, frames: int, reason: str, skipped: int) -> None:
        self.send(END, source.encode(), _json({"frames": frames, "reason": reason, "skipped": skipped}))

    def health(self, source: str, state: str, detail: str) -> None:
        self.send(HEALTH, source.encode(), state.encode(), detail.encode())

    def stats(self, stats: dict[str, Any]) -> None:
        self.send(STATS, _json(stats))

    def ready(self) -> None:
        self.send(READY)

    def done(self, result: dict[str, Any]) -> None:
        self.send(DONE, _json(result))

    def close(self) -> None:
        """Deliver what is held and queued (up to CLOSE_LINGER_S), then close."""
        with self._lock:
            if self._closed:
                return
            self._send_held()
            self._closed = True
        self._sock.close()
        self._ctx.term()


class ChannelSink(Sink):
    """A worker pipeline's sink: every prediction, end, health change and stats to the driver. Closing the
    pipeline does not close the channel: the worker sends ``done`` after it. ``written``: frames of each
    source the driver had written before this run (an end counts the frames of every run of its source)."""

    name = "driver"

    def __init__(self, channel: WorkerChannel, written: dict[str, int] | None = None) -> None:
        self.channel = channel
        self.written = written or {}

    def prediction(self, pred: Prediction) -> None:
        self.channel.prediction(pred)

    def flush(self) -> None:
        self.channel.flush()

    def end(self, source: str, frames: int, reason: str, skipped: int = 0) -> None:
        self.channel.end(source, frames + self.written.get(source, 0), reason, skipped)

    def health(self, source: str, state: str, detail: str) -> None:
        self.channel.health(source, state, detail)

    def stats(self, stats: dict[str, Any]) -> None:
        self.channel.stats(stats)

    def ready(self, stop: threading.Event | None = None) -> None:
        self.channel.ready()  # put after the publisher: its wait for subscriptions comes first


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=str).encode()


# -- the driver's end -------------------------------------------------------------------------------------
@dataclass
class SourceRecord:
    """What the driver knows of one source: its worker, the last frame written, frames written once each,
    its end (eos fields) once its worker reported it, its health."""

    worker: int
    last_frame: int = -1
    frames: int = 0
    end: dict[str, Any] | None = None
    health: str = ""  # up / down / reconnecting, as its worker (or the driver) last said; "" before that
    detail: str = ""

    @property
    def ended(self) -> bool:
        return self.end is not None


@dataclass
class WorkerRecord:
    incarnation: int = 0
    stats: dict[str, Any] = field(default_factory=dict)
    done: dict[int, dict[str, Any]] = field(default_factory=dict)  # incarnation → its done message
    ready: set[int] = field(default_factory=set)  # incarnations whose pipeline reads frames


@dataclass(frozen=True)
class Counters:
    """received: messages in; written: predictions written; duplicates: predictions of a frame already
    written (dropped); stale: predictions (and other messages) of a worker's earlier run (dropped)."""

    received: int
    written: int
    duplicates: int
    stale: int


class Collector:
    """The driver's PULL socket and one thread: predictions to ``writer`` (each (source, frame) once),
    ends, health and stats recorded per source and worker. ``on_event(kind, worker, source, fields)`` is
    called (outside the lock) for ends and health changes: the driver logs them."""

    def __init__(self, host: str, writer: JsonlWriter | None = None,
                 on_event: Callable[[str, int, str, dict[str, Any]], None] | None = None) -> None:
        self.writer = writer
        self.on_event = on_event
        self.sources: dict[str, SourceRecord] = {}
        self.workers: dict[int, WorkerRecord] = {}
        self.latency = LatencyRecorder()
        self.error: BaseException | None = None  # the writer failed (a full disk): the run must stop
        self._ctx = zmq.Context(io_threads=1)
        self._sock = self._ctx.socket(zmq.PULL)
        self._sock.setsockopt(zmq.RCVHWM, RECV_HWM)
        self._sock.setsockopt(zmq.LINGER, 0)
        port = self._sock.bind_to_random_port(f"tcp://{_bracket(host)}")
        self.endpoint = f"tcp://{_bracket(host)}:{port}"
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._received = self._written = self._duplicates = self._stale = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="collector", daemon=True)

    # -- the driver's side --------------------------------------------------------------------------------
    def start(self) -> Collector:
        self._thread.start()
        return self

    def track(self, name: str, worker: int) -> None:
        """Source ``name`` runs on ``worker`` from now on (start-up, an added source)."""
        with self._lock:
            record = self.sources.get(name)
            if record is None:
                self.sources[name] = SourceRecord(worker)
            else:
                record.worker = worker

    def begin(self, worker: int, incarnation: int) -> dict[str, int]:
        """Accept only ``incarnation`` from ``worker`` from now on; the last frame written of each of its
        sources that has not ended (-1: none yet), which the new run resumes after."""
        with self._lock:
            self.workers.setdefault(worker, WorkerRecord()).incarnation = incarnation
            return {name: r.last_frame for name, r in self.sources.items()
                    if r.worker == worker and not r.ended}

    def record_end(self, name: str, end: dict[str, Any]) -> None:
        """The driver ends source ``name`` itself (its worker never did: stopped early, or given up)."""
        with self._changed:
            self.sources.setdefault(name, SourceRecord(-1)).end = dict(end)
            self._changed.notify_all()

    def forget(self, name: str) -> None:
        """Source ``name`` was never started (adding it failed)."""
        with self._lock:
            record = self.sources.get(name)
            if record is not None and record.frames == 0:
                del self.sources[name]

    def wait_done(self, worker: int, incarnation: int, timeout: float) -> dict[str, Any] | None:
        """The ``done`` message of that run (everything it sent came before it), or None after ``timeout``."""
        with self._changed:
            self._changed.wait_for(lambda: incarnation in self.workers.get(worker, WorkerRecord()).done,
                                   timeout)
            return self.workers.get(worker, WorkerRecord()).done.get(incarnation)

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait (up to ``timeout``) until ``predicate()`` holds; it is evaluated under the collector's lock
        after each round of messages."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    def is_ready(self, worker: int, incarnation: int) -> bool:
        """Whether that run's pipeline has started reading frames."""
        with self._lock:
            record = self.workers.get(worker)
            return record is not None and incarnation in record.ready

    def snapshot(self) -> tuple[dict[str, SourceRecord], dict[int, dict[str, Any]]]:
        """Copies of the source records and of each worker's latest stats."""
        with self._lock:
            sources = {name: SourceRecord(r.worker, r.last_frame, r.frames, dict(r.end) if r.end else None,
                                          r.health, r.detail) for name, r in self.sources.items()}
            return sources, {w: dict(r.stats) for w, r in self.workers.items()}

    def counters(self) -> Counters:
        with self._lock:
            return Counters(self._received, self._written, self._duplicates, self._stale)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
        self._sock.close()
        self._ctx.term()

    # -- the collector thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        """Receive until closed. After a failure (a full disk: StreamerError) it goes on receiving, writing
        nothing more, so that workers blocked on a full channel can drain: the driver stops the run."""
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(POLL_MS):
                continue
            try:
                self._round()
            except Exception as exc:
                log.debug("collector failed", exc_info=True)
                with self._changed:
                    if self.error is None:
                        self.error = exc
                    self._changed.notify_all()

    def _round(self) -> None:
        events: list[tuple[str, int, str, dict[str, Any]]] = []
        with self._changed:
            lines: list[bytes] = []
            for _ in range(DRAIN_MAX):
                try:
                    parts = self._sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._received += 1
                self._handle(parts, lines, events)
            if lines and self.writer is not None and self.error is None:
                self.writer.write_lines(b"".join(lines), len(lines))
            if self.error is None:
                self._written += len(lines)
            self._changed.notify_all()
        if self.on_event is not None:
            for event in events:
                try:
                    self.on_event(*event)
                except Exception:
                    log.exception("handling a %s event of source %s failed", event[0], event[2])

    def _handle(self, parts: list[bytes], lines: list[bytes],
                events: list[tuple[str, int, str, dict[str, Any]]]) -> None:
        kind = parts[0]
        worker, incarnation = parse_who(parts[1])
        record = self.workers.setdefault(worker, WorkerRecord())
        if incarnation != record.incarnation:
            self._stale += len(json.loads(parts[2])) if kind == PREDS else 1
            return
        if kind == PREDS:
            blob, at = parts[3], 0
            for source, frame, latency_ms, size in json.loads(parts[2]):
                line, at = blob[at:at + size], at + size
                src = self.sources.get(source) or self.sources.setdefault(source, SourceRecord(worker))
                if frame <= src.last_frame:
                    self._duplicates += 1
                    continue
                src.last_frame = frame
                src.frames += 1
                self.latency.add(latency_ms)
                lines.append(line)
        elif kind == END:
            source = parts[2].decode()
            src = self.sources.setdefault(source, SourceRecord(worker))
            src.end = json.loads(parts[3])
            events.append(("end", worker, source, dict(src.end)))
        elif kind == HEALTH:
            source, state, detail = parts[2].decode(), parts[3].decode(), parts[4].decode()
            src = self.sources.setdefault(source, SourceRecord(worker))
            if (state, detail) != (src.health, src.detail):
                src.health, src.detail = state, detail
                events.append(("health", worker, source, {"state": state, "detail": detail}))
        elif kind == STATS:
            record.stats = json.loads(parts[2])
        elif kind == READY:
            record.ready.add(incarnation)
        elif kind == DONE:
            record.done[incarnation] = json.loads(parts[2])
        else:
            log.debug("unknown message %r from worker %d", kind, worker)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
