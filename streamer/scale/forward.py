"""One endpoint for subscribers: the driver's XSUB ← workers' publishers, forwarded to an XPUB on ``--bind``.

Each worker's :class:`~streamer.publish.Publisher` *connects* its XPUB socket to the forwarder's XSUB socket;
subscribers connect to the forwarder's XPUB on ``--bind`` exactly as to a single streamer: the protocol is
unchanged and every message still names its source. Subscriptions travel the other way: the forwarder hands
each subscribe/unsubscribe to the XSUB socket, which passes it to every worker (and replays the current set
to a worker that connects later, e.g. after a restart), so workers filter at the source as before.

One thread owns both sockets (and no message is decoded on the way through). It also sends the driver's own
messages (:meth:`publish_stats`, :meth:`publish_health`, :meth:`publish_eos`: the stats of the whole run, a
dead worker's sources going down), numbered per topic like a publisher's. The forwarder never blocks a worker:
like one streamer's publisher, a subscriber whose queue (``hwm``) is full misses messages (counted; it sees
``seq`` gaps), every other subscriber still gets them.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import zmq

from streamer.errors import PublishError
from streamer.protocol import TOPIC_STATS, encoder, eos_payload, health_payload, stats_payload, topic_for
from streamer.publish import SubscriptionCount, bind_error, check_bind, open_xpub, send_lossy

log = logging.getLogger(__name__)

DRAIN_MAX = 1_000  # messages moved per socket per turn, so that neither direction starves the other
POLL_MS = 50
START_TIMEOUT_S = 10.0
_INJECT = "inproc://streamer-driver-messages"


class Forwarder:
    """Binds ``bind`` (XPUB, for subscribers) and an XSUB on ``tcp://host:*`` (for the workers' publishers,
    :attr:`upstream`); ``start`` raises PublishError when ``bind`` cannot be bound."""

    def __init__(self, bind: str, host: str, *, hwm: int = 10000, encoding: str = "json") -> None:
        self.bind = bind
        self.host = host
        self.hwm = hwm
        self._encode = encoder(encoding)
        self.endpoint = ""  # --bind, with a wildcard port resolved
        self.upstream = ""  # where workers connect their publishers
        self._ctx = zmq.Context(io_threads=1)
        self._inject = self._ctx.socket(zmq.PUSH)  # the driver's own messages, into the forwarder thread
        self._inject_lock = threading.Lock()
        self._ready = threading.Event()
        self._start_error: PublishError | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="forwarder", daemon=True)
        self._lock = threading.Lock()
        self._subscriptions = SubscriptionCount()
        self._forwarded = 0
        self._sent = 0  # the driver's own messages
        self._hwm_overflows = 0
        self._seq: dict[str, int] = {}
        self._warned = False

    # -- life cycle -----------------------------------------------------------------------------------------
    def start(self) -> Forwarder:
        check_bind(self.bind)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise PublishError(f"the forwarder on {self.bind} did not start within {START_TIMEOUT_S:.0f} s",
                               "check the machine's load and network configuration, then retry")
        if self._start_error is not None:
            self._inject.close(linger=0)
            self._ctx.term()
            raise self._start_error
        self._inject.connect(_INJECT)
        log.info("subscribers: %s (forwarding every worker's messages; workers publish to %s)", self.endpoint,
                 self.upstream)
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Forward what has arrived (up to ``timeout``), then close."""
        self._stop.set()
        self._subscriptions.wake()
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._inject_lock:
            self._inject.close(linger=0)
        self._ctx.term()

    # -- the driver's side ----------------------------------------------------------------------------------
    @property
    def subscriptions(self) -> int:
        return self._subscriptions.value

    def wait_for_subscribers(self, n: int, timeout: float, stop: threading.Event | None = None) -> bool:
        """As :meth:`streamer.publish.Publisher.wait_for_subscribers`, on the driver's endpoint."""
        return self._subscriptions.wait(n, timeout, stop, self._stop.is_set)

    def publish_stats(self, stats: dict[str, Any]) -> None:
        snapshot = dict(stats)
        snapshot.setdefault("publisher", self.counters())
        self._send_own(topic_for(TOPIC_STATS), lambda now: stats_payload(snapshot, now))

    def publish_health(self, source: str, state: str, detail: str = "") -> None:
        self._send_own(topic_for("health", source), lambda now: health_payload(source, state, detail, now))

    def publish_eos(self, source: str, frames: int, reason: str, skipped: int = 0) -> None:
        self._send_own(topic_for("eos", source),
                       lambda now: eos_payload(source, frames, reason, now, skipped))

    def counters(self) -> dict[str, int]:
        """forwarded: worker messages passed on; sent: the driver's own; hwm_overflows: times a subscriber's
        queue was full (it misses that message); subscriptions: active now."""
        with self._lock:
            return {"forwarded": self._forwarded, "sent": self._sent, "hwm_overflows": self._hwm_overflows,
                    "subscriptions": self._subscriptions.value}

    def _send_own(self, topic: str, build: Any) -> None:
        with self._inject_lock:  # any driver thread; also orders seq with the sends
            seq = self._seq.get(topic, 0)
            self._seq[topic] = seq + 1
            payload = build(time.time())
            payload["seq"] = seq
            if not self._stop.is_set():
                self._inject.send_multipart([topic.encode(), self._encode(payload)])

    # -- the forwarder thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        xpub = self._ctx.socket(zmq.XPUB)
        xsub = self._ctx.socket(zmq.XSUB)
        own = self._ctx.socket(zmq.PULL)
        sockets = (xpub, xsub, own)
        try:
            self.endpoint = open_xpub(xpub, self.bind, self.hwm)  # every (un)subscribe: counted, passed on
            xsub.setsockopt(zmq.RCVHWM, self.hwm)  # a forwarder behind: the workers' publishers drop, counted
            if ":" in self.host:
                xsub.setsockopt(zmq.IPV6, 1)
            host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
            port = xsub.bind_to_random_port(f"tcp://{host}")
            self.upstream = f"tcp://{host}:{port}"
            own.bind(_INJECT)
        except zmq.ZMQError as e:
            for sock in sockets:
                sock.close(linger=0)
            self._start_error = bind_error(self.bind, e)
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop(xpub, xsub, own)
        finally:
            xpub.close(linger=500)
            xsub.close(linger=0)
            own.close(linger=0)

    def _loop(self, xpub: zmq.Socket[bytes], xsub: zmq.Socket[bytes], own: zmq.Socket[bytes]) -> None:
        poller = zmq.Poller()
        for sock in (xpub, xsub, own):
            poller.register(sock, zmq.POLLIN)
        while True:
            ready = dict(poller.poll(POLL_MS))
            if xpub in ready:
                self._subscriptions_in(xpub, xsub)
            moved = self._move(xsub, xpub, forwarded=True) if xsub in ready else 0
            if own in ready:
                self._move(own, xpub, forwarded=False)
            if self._stop.is_set() and not moved:
                self._move(own, xpub, forwarded=False)
                return

    def _subscriptions_in(self, xpub: zmq.Socket[bytes], xsub: zmq.Socket[bytes]) -> None:
        for _ in range(DRAIN_MAX):
            try:
                msg = xpub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._subscriptions.read(msg)
            xsub.send(msg)

    def _move(self, src: zmq.Socket[bytes], xpub: zmq.Socket[bytes], *, forwarded: bool) -> int:
        n = 0
        for _ in range(DRAIN_MAX):
            try:
                frames = src.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            send_lossy(xpub, frames, self._overflow)  # lossy for a full subscriber, the others still get it
            n += 1
        with self._lock:
            if forwarded:
                self._forwarded += n
            else:
                self._sent += n
        return n

    def _overflow(self) -> None:
        with self._lock:
            self._hwm_overflows += 1
        if not self._warned:
            self._warned = True
            log.warning("a subscriber of %s is not keeping up (its queue of %d messages is full): it misses "
                        "messages (counted as hwm_overflows; it sees them as seq gaps); the workers are not "
                        "slowed", self.endpoint, self.hwm)
