"""Publishing results: a ZeroMQ publisher whose socket one background thread owns, and a lossless JSONL sink.

The publisher never slows the pipeline. ``publish()`` only appends to a bounded in-process queue (full:
the message is dropped and counted as ``dropped_queue``). The thread sends with ``NOBLOCK`` to an XPUB socket
whose per-subscriber queue is bounded by ``hwm``; a subscriber that does not keep up loses the messages that
do not fit in its queue while every other subscriber still gets them.

XPUB rather than PUB, because it tells the publisher about subscriptions: ``wait_for_subscribers`` lets an
offline run wait until its subscribers are connected before the first frame (the slow-joiner problem), and the
``XPUB_NODROP`` option makes a subscriber queue that overflows visible, so overflows can be counted.

What ZeroMQ cannot tell a publisher is how many messages each subscriber missed: after an overflow it stops
offering that subscriber messages until the subscriber has read enough to have room again. So every message
carries ``seq``, a per-topic sequence number, and each subscriber counts its own losses from the gaps
(``Subscriber.missed``). See docs/protocol.md.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import socket
import stat
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import zmq

from streamer.errors import ConfigError, PublishError, StreamerError
from streamer.protocol import (
    HEALTH_STATES,
    Prediction,
    check_endpoint,
    encoder,
    eos_payload,
    health_payload,
    prediction_json,
    stats_payload,
    topic_for,
)

log = logging.getLogger(__name__)

_STOP = object()
# eos/health must not be lost to a momentarily full queue; they wait at most this long for room.
_CONTROL_PUT_TIMEOUT_S = 1.0
_IDLE_POLL_S = 0.02  # how often the idle publisher thread looks for new subscriptions
_START_TIMEOUT_S = 10.0

_Builder = Callable[[float], dict[str, Any]]  # publish time -> payload (control messages)
# Queue items: a list of predictions (a batch's, or one), a (topic, _Builder) pair, or _STOP.


class Publisher:
    """Publishes predictions and control messages on ``bind`` (e.g. ``tcp://127.0.0.1:5555``; ``tcp://HOST:*``
    picks a free port, read it back from ``endpoint``).

    Use ``start()``/``close()`` or ``with Publisher(...) as pub:``. ``publish*`` may be called from any
    thread; only the publisher's own thread touches the socket.
    """

    def __init__(self, bind: str, *, hwm: int = 10000, encoding: str = "json", linger_ms: int = 500,
                 queue_size: int = 10000, connect: bool = False) -> None:
        """``queue_size``: items waiting for the publisher thread (a message, or a batch's predictions);
        ``connect``: connect to ``bind`` instead of binding it, e.g. to a forwarder's XSUB socket (a
        scale-out worker publishing through its driver, :mod:`streamer.scale`)."""
        if hwm < 1:
            # ZeroMQ reads 0 as "unbounded": a stuck subscriber would then grow memory without limit.
            raise ConfigError(f"publisher high-water mark {hwm} must be >= 1", "use e.g. 10000 messages")
        if queue_size < 1:
            raise ConfigError(f"publisher queue size {queue_size} must be >= 1", "use e.g. 10000 messages")
        if linger_ms < 0:
            raise ConfigError(f"publisher linger {linger_ms} ms must be >= 0",
                              "use a finite linger such as 500 ms")
        self._encode = encoder(encoding)  # ConfigError for an unknown encoding or a missing msgpack
        # (prediction, publish time, seq) -> payload: JSON written straight from the fields (the hot path)
        self._encode_prediction: Callable[[Prediction, float, int], bytes] = (
            prediction_json if encoding == "json" else self._encode_prediction_dict)
        self.bind = bind
        self.connect = connect
        self.hwm = hwm
        self.encoding = encoding
        self.linger_ms = linger_ms
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: PublishError | None = None
        self._endpoint: str | None = None
        self.bound_at: float | None = None  # time.monotonic() when the endpoint was bound
        self._closed = False
        self._lock = threading.Lock()  # guards the counters callers update
        self._subscriptions = SubscriptionCount()
        self._sent = 0
        self._dropped_queue = 0
        self._hwm_overflows = 0
        self._seq: dict[str, int] = {}  # per-topic message sequence numbers (publisher thread only)
        self._errors = 0
        self._warned: set[str] = set()

    # ---- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> Publisher:
        """Bind the socket (in the publisher thread). Raises PublishError if the endpoint is in use or bad."""
        if self._thread is not None:
            raise RuntimeError("Publisher.start() called twice")
        check_bind(self.bind, connect=self.connect)
        self._thread = threading.Thread(target=self._run, name=f"publisher {self.bind}", daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT_S):
            self._closed = True
            self._queue.put_nowait(_STOP)  # the thread closes its socket and ends once its bind returns
            raise PublishError(f"ZeroMQ publisher on {self.bind} did not start within "
                               f"{_START_TIMEOUT_S:.0f} s",
                               "check the machine's load and network configuration, then retry")
        if self._start_error is not None:
            self._thread.join(_START_TIMEOUT_S)
            self._closed = True
            raise self._start_error
        self.bound_at = time.monotonic()
        log.info("publishing on %s (hwm %d, %s)", self._endpoint, self.hwm, self.encoding)
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Send everything still queued, then close the socket, giving unsent messages ``linger_ms`` to leave.
        Idempotent."""
        if self._closed or self._thread is None:
            self._closed = True
            return
        self._closed = True
        self._subscriptions.wake()  # wake wait_for_subscribers
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.warning("publisher queue still full after %.1f s; closing without draining it", timeout)
        self._thread.join(timeout + self.linger_ms / 1e3)
        if self._thread.is_alive():
            log.warning("publisher thread for %s did not stop within %.1f s", self.bind, timeout)

    def __enter__(self) -> Publisher:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def endpoint(self) -> str:
        """The bound endpoint, with a wildcard port resolved (``tcp://127.0.0.1:*`` -> ``tcp://127.0.0.1:41903``)."""
        if self._endpoint is None:
            raise RuntimeError("Publisher.endpoint is known only after start()")
        return self._endpoint

    # ---- publishing (any thread; never touches the socket) ----------------------------------------------

    def publish(self, pred: Prediction) -> bool:
        """Queue one prediction; never blocks. False if it was dropped (queue full or publisher closed)."""
        return self._enqueue_item([pred], 0.0, 1)

    def publish_many(self, preds: Sequence[Prediction]) -> bool:
        """Queue a batch's predictions as one item (one hand-over to the publisher thread, not one each);
        never blocks. False if they were dropped (queue full or publisher closed: each counts as dropped)."""
        if not preds:
            return True
        return self._enqueue_item(list(preds), 0.0, len(preds))

    def publish_eos(self, source: str, frames: int, reason: str = "end", skipped: int = 0) -> bool:
        """A source ended: ``frames`` of its frames were classified, ``skipped`` could not be decoded;
        ``reason`` is end / error / stopped."""
        eos_payload(source, frames, reason, 0.0, skipped)  # validate in the caller's thread
        build = functools.partial(eos_payload, source, frames, reason, skipped=skipped)  # build(publish time)
        return self._enqueue(topic_for("eos", source), build, _CONTROL_PUT_TIMEOUT_S)

    def publish_health(self, source: str, state: str, detail: str = "") -> bool:
        """A source changed state: ``state`` is one of up / down / reconnecting."""
        if state not in HEALTH_STATES:
            raise ValueError(f"health state {state!r} not one of {HEALTH_STATES}")
        build = functools.partial(health_payload, source, state, detail)
        return self._enqueue(topic_for("health", source), build, _CONTROL_PUT_TIMEOUT_S)

    def publish_stats(self, stats: dict[str, Any]) -> bool:
        """Periodic metrics. The publisher's own counters are added under ``"publisher"`` at send time."""
        snapshot = dict(stats)

        def build(now: float) -> dict[str, Any]:
            snapshot.setdefault("publisher", self.counters())
            return stats_payload(snapshot, now)

        return self._enqueue(topic_for("stats"), build, 0.0)

    def counters(self) -> dict[str, int]:
        """sent: messages handed to ZeroMQ; dropped_queue: lost before that (queue full or closed), for every
        subscriber; hwm_overflows: times a subscriber's queue (``hwm`` messages) was found full — that
        subscriber misses the message, and the following ones until it has room again (it sees how many in
        ``seq`` gaps); errors: messages that could not be encoded; queued: waiting now; subscriptions: active
        subscriptions."""
        with self._lock:
            return {"sent": self._sent, "dropped_queue": self._dropped_queue,
                    "hwm_overflows": self._hwm_overflows, "errors": self._errors,
                    "queued": self._queue.qsize(), "subscriptions": self._subscriptions.value}

    def wait_for_subscribers(self, n: int = 1, timeout: float = 10.0,
                             stop: threading.Event | None = None) -> bool:
        """Wait until at least ``n`` subscriptions are active; True if they are, False on timeout, when
        ``stop`` is set (e.g. the pipeline's stop request) or when the publisher is closed.

        Every SUB socket sends one subscription per topic prefix it subscribes to, and ZeroMQ applies it
        before this returns, so a subscriber counted here receives every message published afterwards
        (up to its high-water mark). For subscribers with one prefix each, ``n`` is the number of subscribers.
        """
        if self._thread is None:
            raise RuntimeError("Publisher.wait_for_subscribers() before start()")
        return self._subscriptions.wait(n, timeout, stop, lambda: self._closed)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far was handed to ZeroMQ; False on timeout."""
        deadline = time.monotonic() + timeout
        q = self._queue
        with q.all_tasks_done:
            while q.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                q.all_tasks_done.wait(remaining)
        return True

    def _enqueue(self, topic: str, build: _Builder, block_s: float) -> bool:
        return self._enqueue_item((topic, build), block_s, 1)

    def _enqueue_item(self, item: Any, block_s: float, messages: int) -> bool:
        """Queue ``item``: a (topic, builder) pair, or a list of predictions (``messages`` in all)."""
        if self._thread is None:
            raise RuntimeError("Publisher.publish*() before start()")
        if not self._closed:
            try:
                if block_s > 0:
                    self._queue.put(item, timeout=block_s)
                else:
                    self._queue.put_nowait(item)
                return True
            except queue.Full:
                self._warn_once("queue", "publisher queue full (%d): dropping messages (counted as "
                                "dropped_queue)", self._queue.maxsize)
        with self._lock:
            self._dropped_queue += messages
        return False

    def _warn_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg, *args)

    # ---- the publisher thread (the only code that touches the socket) -----------------------------------

    def _run(self) -> None:
        ctx = zmq.Context(io_threads=1)
        sock = ctx.socket(zmq.XPUB)
        try:
            self._endpoint = open_xpub(sock, self.bind, self.hwm, connect=self.connect)
        except zmq.ZMQError as e:
            sock.close(linger=0)
            ctx.term()
            self._start_error = bind_error(self.bind, e)
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop(sock)
        finally:
            sock.close(linger=self.linger_ms)
            ctx.term()

    def _loop(self, sock: zmq.Socket[bytes]) -> None:
        q = self._queue
        next_read = 0.0
        while True:
            now = time.monotonic()
            if now >= next_read:  # busy or idle, subscriptions are read at least every _IDLE_POLL_S
                self._read_subscriptions(sock)
                next_read = now + _IDLE_POLL_S
            try:
                item = q.get(timeout=_IDLE_POLL_S)
            except queue.Empty:
                continue
            try:
                if item is _STOP:
                    return
                if isinstance(item, list):  # a batch's predictions
                    encode_prediction = self._encode_prediction
                    for pred in item:
                        self._send(sock, pred.topic, encode_prediction, pred)
                else:
                    topic, build = item
                    self._send(sock, topic, self._encode_built, build)
            finally:
                q.task_done()

    def _read_subscriptions(self, sock: zmq.Socket[bytes]) -> None:
        while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            self._subscriptions.read(sock.recv(zmq.NOBLOCK))

    def _encode_built(self, build: _Builder, now: float, seq: int) -> bytes:
        d = build(now)
        d["seq"] = seq
        return self._encode(d)

    def _encode_prediction_dict(self, pred: Prediction, now: float, seq: int) -> bytes:
        return self._encode_built(pred.to_dict, now, seq)

    def _send(self, sock: zmq.Socket[bytes], topic: str, encode: Callable[[Any, float, int], bytes],
              subject: Any) -> None:
        """Encode ``subject`` (a prediction or a builder) as ``topic``'s next message and send it."""
        seq = self._seq.get(topic, 0)
        try:
            payload = encode(subject, time.time(), seq)
        except Exception as e:  # whatever the encoder raises: skip this message, keep publishing
            with self._lock:
                self._errors += 1
            self._warn_once("encode", "cannot encode a %s message (%s); skipped and counted as errors",
                            topic, e)
            return
        send_lossy(sock, [topic.encode(), payload], self._overflow)
        self._seq[topic] = seq + 1
        with self._lock:
            self._sent += 1

    def _overflow(self) -> None:
        with self._lock:
            self._hwm_overflows += 1
        self._warn_once("hwm", "a subscriber of %s is not keeping up (its queue of %d messages is full): "
                        "it misses messages (counted as hwm_overflows; it sees them as seq gaps); "
                        "the pipeline is not slowed", self._endpoint, self.hwm)


BAD_ENDPOINT_HINT = ("give --bind as tcp://HOST:PORT (e.g. tcp://127.0.0.1:5555, or tcp://*:5555 for all "
                      "interfaces) or ipc:///path/to/socket")


def check_bind(bind: str, *, connect: bool = False) -> None:
    """PublishError unless ``bind`` is a ZeroMQ endpoint to bind (or, with ``connect``, to connect to) that
    is free to use (:func:`check_ipc_free`)."""
    try:
        check_endpoint(bind, bind=not connect)
    except ValueError as e:
        raise PublishError(f"cannot bind ZeroMQ endpoint {bind!r}: {e}", BAD_ENDPOINT_HINT) from None
    if not connect:
        check_ipc_free(bind)


def open_xpub(sock: zmq.Socket[bytes], endpoint: str, hwm: int, *, connect: bool = False) -> str:
    """Set up an XPUB socket for lossy, counted publishing and bind it to ``endpoint`` (or connect it there);
    returns the endpoint, with a wildcard port resolved. Raises zmq.ZMQError (see :func:`bind_error`)."""
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.XPUB_VERBOSER, 1)  # every subscribe and unsubscribe reaches us: exact counts
    sock.setsockopt(zmq.XPUB_NODROP, 1)  # a full subscriber queue -> EAGAIN, so it can be counted
    if "[" in endpoint:
        sock.setsockopt(zmq.IPV6, 1)
    if connect:
        sock.connect(endpoint)
        return endpoint
    sock.bind(endpoint)
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def send_lossy(sock: zmq.Socket[bytes], frames: Sequence[Any], on_full: Callable[[], None]) -> None:
    """Send ``frames`` on an XPUB socket set up by :func:`open_xpub`, never blocking.

    When some subscriber's queue is full (EAGAIN), ``on_full()`` is called and the message sent again lossily
    so the others still get it: ZeroMQ drops it for the full one and stops offering it messages until it has
    room again (so no further EAGAIN)."""
    try:
        sock.send_multipart(frames, zmq.NOBLOCK)
    except zmq.Again:
        on_full()
        sock.setsockopt(zmq.XPUB_NODROP, 0)
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)
        finally:
            sock.setsockopt(zmq.XPUB_NODROP, 1)


class SubscriptionCount:
    """The active subscriptions of an XPUB socket (with ``XPUB_VERBOSER`` every subscribe and unsubscribe
    reaches it), read by the socket's thread, waited for by any other."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.value = 0

    def read(self, msg: bytes) -> None:
        """Count ``msg`` when it is a subscription message: ``\x01`` subscribe, ``\x00`` unsubscribe (an XSUB
        peer may send anything else)."""
        delta = {b"\x01": 1, b"\x00": -1}.get(msg[:1], 0)
        if delta:
            with self._changed:
                self.value = max(0, self.value + delta)
                self._changed.notify_all()

    def wake(self) -> None:
        """Wake every ``wait`` to look at its ``ended`` again (e.g. the socket is closing)."""
        with self._changed:
            self._changed.notify_all()

    def wait(self, n: int, timeout: float, stop: threading.Event | None, ended: Callable[[], bool]) -> bool:
        """Wait until at least ``n`` subscriptions are active; False on timeout, when ``stop`` is set or when
        ``ended()`` (checked after each ``wake``)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.value < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or ended() or (stop is not None and stop.is_set()):
                    return False
                # Sliced so that a ``stop`` set from a signal handler is noticed within 50 ms.
                self._changed.wait(min(remaining, 0.05) if stop is not None else remaining)
        return True


def wait_for_subscribers_logged(wait: Callable[[int, float, threading.Event | None], bool], endpoint: str,
                                n: int, timeout: float, stop: threading.Event | None) -> bool:
    """``wait`` (a publisher's or forwarder's ``wait_for_subscribers``) for ``n`` subscribers on ``endpoint``,
    saying so in the log; when they do not come in time that is a warning and the run starts anyway. False
    only when ``stop`` ended the wait."""
    log.info("waiting up to %.0f s for %d subscriber(s) on %s", timeout, n, endpoint)
    if wait(n, timeout, stop):
        return True
    if stop is not None and stop.is_set():
        return False
    log.warning("%d subscriber(s) did not connect within %.0f s; starting anyway", n, timeout)
    return True


def check_ipc_free(bind: str) -> None:
    """For ``ipc:///path``: PublishError when another program listens there, or the path is not a socket.

    ZeroMQ's ipc bind deletes whatever is at the path first: a second streamer on the same path would
    silently take the first one's subscribers, and a regular file there would be lost. A socket nobody
    listens on (left by a crashed run) is fine to replace. Abstract sockets (``ipc://@name``) need no check:
    their bind fails with "address already in use" by itself."""
    transport, _, address = bind.partition("://")
    if transport != "ipc" or address.startswith("@") or address == "*":
        return
    path = Path(address)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise PublishError(f"cannot bind ZeroMQ endpoint {bind}: {e.strerror}", BAD_ENDPOINT_HINT) from None
    if not stat.S_ISSOCK(mode):
        raise PublishError(f"cannot bind ZeroMQ endpoint {bind}: {address} exists and is not a socket "
                           "(binding would delete it)", "choose another path for --bind ipc://...")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(address)
    except OSError:
        return  # nobody listening: a stale socket file
    finally:
        probe.close()
    raise PublishError(f"cannot bind ZeroMQ endpoint {bind}: address already in use",
                       "another streamer or program is using it: stop it, or choose another --bind")


def bind_error(bind: str, e: zmq.ZMQError) -> PublishError:
    reason = zmq.strerror(e.errno)
    if e.errno == zmq.EADDRINUSE:
        return PublishError(f"cannot bind ZeroMQ endpoint {bind}: address already in use",
                            "another streamer or program is using it: stop it, or choose another --bind, "
                            "e.g. tcp://127.0.0.1:5556")
    if e.errno == zmq.EADDRNOTAVAIL:
        return PublishError(f"cannot bind ZeroMQ endpoint {bind}: {reason}",
                            "that address is not on this machine: use tcp://127.0.0.1:PORT (this machine "
                            "only) or tcp://*:PORT (all interfaces) as --bind")
    return PublishError(f"cannot bind ZeroMQ endpoint {bind!r}: {reason}", BAD_ENDPOINT_HINT)


class JsonlWriter:
    """Lossless sink: one JSON line per prediction, the same object as the wire payload.

    ``publish_ts`` is the time the line was encoded when the prediction has none. Opened (and a bad path
    reported) on construction; closed by ``close()`` or the ``with`` block. Each ``write``/``write_lines``
    goes to the file in one write, unbuffered: lines written are in the file even if the process is killed
    next. A write that fails (a full disk) cuts the file back to its last complete line and raises
    StreamerError (one line, with how many predictions the file holds): the file always ends with a complete
    line.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lines = 0
        self._lock = threading.Lock()
        self._size = 0  # bytes of complete lines written
        try:
            self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                                           0o666)
        except OSError as e:
            raise ConfigError(f"cannot write --output {str(path)!r}: {e.strerror}",
                              "choose a file in an existing, writable directory") from None

    @staticmethod
    def line(pred: Prediction) -> bytes:
        """``pred``'s JSON line, newline included (what ``write`` writes)."""
        return prediction_json(pred, pred.publish_time or time.time()) + b"\n"

    def write(self, pred: Prediction) -> None:
        self.write_lines(self.line(pred))

    def write_lines(self, line: bytes, count: int = 1) -> None:
        """``count`` complete JSON lines (each ending in a newline) in one write. When the write fails part
        way, the complete lines that made it stay (and count), the partial one after them is cut off."""
        with self._lock:
            if self._fd is None:
                raise RuntimeError(f"JsonlWriter({self.path}) used after close()")
            view, done = memoryview(line), 0
            try:
                while done < len(line):
                    done += os.write(self._fd, view[done:])
            except OSError as e:
                kept = line.rfind(b"\n", 0, done) + 1  # bytes of the complete lines written
                if done > kept:  # part of a line made it: cut it off
                    with contextlib.suppress(OSError):
                        os.ftruncate(self._fd, self._size + kept)
                self._size += kept
                self.lines += line.count(b"\n", 0, kept)
                raise StreamerError(f"cannot write --output {str(self.path)!r}: {e.strerror}; it holds the "
                                    f"first {self.lines} predictions, each on a complete line",
                                    "free disk space or choose another --output") from None
            self._size += len(line)
            self.lines += count

    def close(self) -> None:
        with self._lock:
            if self._fd is None:
                return
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError as e:
                raise StreamerError(f"cannot write --output {str(self.path)!r}: {e.strerror}",
                                    "free disk space or choose another --output") from None

    @property
    def closed(self) -> bool:
        return self._fd is None

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
