"""Where results go: a tiny interface between the pipeline and its outputs (ZeroMQ publisher, JSONL file).

The results thread calls ``prediction`` for every frame in order; ``end`` after a source's last prediction;
source threads call ``health``; the main thread calls ``stats``. Implementations must not block the caller
for long (the publisher only queues).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from streamer.protocol import Prediction

if TYPE_CHECKING:
    from streamer.publish import JsonlWriter, Publisher

log = logging.getLogger(__name__)

# The first message goes out no sooner than this after the bind: a subscriber already running retries its
# connection every 100 ms (ZeroMQ's default reconnect interval) and is in by then (docs/protocol.md)
JOIN_WINDOW_S = 0.3


class Sink:
    """No-op base: override what a sink cares about."""

    name = "sink"

    def start(self) -> None:
        """Open/bind (at start-up: errors here are start-up errors)."""

    def ready(self, stop: threading.Event | None = None) -> None:
        """Called once just before the first frame is read (e.g. to wait for subscribers; a wait ends early
        when ``stop`` is set)."""

    def prediction(self, pred: Prediction) -> None:
        pass

    def end(self, source: str, frames: int, reason: str, skipped: int = 0) -> None:
        """``reason``: end | error | stopped (protocol.EOS_REASONS); ``frames`` classified, ``skipped``
        undecodable."""

    def health(self, source: str, state: str, detail: str) -> None:
        """``state``: up | down | reconnecting (protocol.HEALTH_STATES)."""

    def stats(self, stats: dict[str, Any]) -> None:
        pass

    def flush(self) -> None:
        """After each batch's predictions (results thread): a sink that groups them hands them on now."""

    def close(self) -> None:
        pass


class PublisherSink(Sink):
    """Everything goes out on the ZeroMQ PUB socket (lossy for slow subscribers, never blocking)."""

    name = "publisher"

    def __init__(self, publisher: Publisher, wait_subscribers: int = 0, wait_timeout_s: float = 10.0) -> None:
        self.publisher = publisher
        self.wait_subscribers = wait_subscribers
        self.wait_timeout_s = wait_timeout_s
        self._bound = False
        # a batch's predictions, handed to the publisher thread together on flush(): one hand-over per batch
        self._pending: list[Prediction] = []

    @classmethod
    def create(cls, bind: str, *, hwm: int, encoding: str, wait_subscribers: int = 0,
               wait_timeout_s: float = 10.0) -> PublisherSink:
        from streamer.publish import Publisher

        return cls(Publisher(bind, hwm=hwm, encoding=encoding), wait_subscribers, wait_timeout_s)

    def bind(self) -> str:
        """Start the publisher (binding its endpoint) unless already started; returns the bound endpoint."""
        if not self._bound:
            self.publisher.start()
            self._bound = True
        return self.publisher.endpoint

    def start(self) -> None:
        self.bind()

    def ready(self, stop: threading.Event | None = None) -> None:
        if not self.wait_subscribers:
            bound_at = self.publisher.bound_at
            remaining = JOIN_WINDOW_S - (time.monotonic() - bound_at) if bound_at is not None else 0.0
            if remaining > 0:  # usually 0: opening the sources and loading the model took longer
                if stop is not None:
                    stop.wait(remaining)
                else:
                    time.sleep(remaining)
            return
        from streamer.publish import wait_for_subscribers_logged

        wait_for_subscribers_logged(self.publisher.wait_for_subscribers, self.publisher.endpoint,
                                    self.wait_subscribers, self.wait_timeout_s, stop)

    def prediction(self, pred: Prediction) -> None:
        self._pending.append(pred)

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        self.publisher.publish_many(pending)

    def end(self, source: str, frames: int, reason: str, skipped: int = 0) -> None:
        self.flush()  # a source's eos goes out after its last prediction
        self.publisher.publish_eos(source, frames, reason, skipped)

    def health(self, source: str, state: str, detail: str) -> None:
        self.publisher.publish_health(source, state, detail)

    def stats(self, stats: dict[str, Any]) -> None:
        self.publisher.publish_stats(stats)

    def counters(self) -> dict[str, int]:
        return self.publisher.counters()

    def close(self) -> None:
        self.flush()
        self.publisher.close()


class JsonlSink(Sink):
    """Every prediction as one JSON line, lossless and in order per source. A batch's lines go to the file
    together on ``flush()`` (one system call per batch, not one per prediction); ``close()`` writes any
    still held first."""

    name = "jsonl"

    def __init__(self, writer: JsonlWriter) -> None:
        self.writer = writer
        self._line = writer.line
        self._pending: list[bytes] = []  # encoded lines not yet written

    @classmethod
    def create(cls, path: str) -> JsonlSink:
        from streamer.publish import JsonlWriter

        return cls(JsonlWriter(path))

    def prediction(self, pred: Prediction) -> None:
        self._pending.append(self._line(pred))

    def flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            self.writer.write_lines(b"".join(pending), len(pending))

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.writer.close()


class Sinks:
    """Fans each event out to every sink; a sink that fails on one is logged and does not stop the others
    (predictions excepted: a lossless sink that cannot write must stop the run, so those errors propagate)."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks

    def prediction(self, pred: Prediction) -> None:
        for sink in self.sinks:
            sink.prediction(pred)

    def flush(self) -> None:
        for sink in self.sinks:  # as predictions: a lossless sink's failure propagates
            sink.flush()

    def end(self, source: str, frames: int, reason: str, skipped: int = 0) -> None:
        self._each("end of " + source, lambda sink: sink.end(source, frames, reason, skipped))

    def health(self, source: str, state: str, detail: str) -> None:
        self._each("health of " + source, lambda sink: sink.health(source, state, detail))

    def stats(self, stats: dict[str, Any]) -> None:
        self._each("stats", lambda sink: sink.stats(stats))

    def _each(self, what: str, call: Callable[[Sink], None]) -> None:
        for sink in self.sinks:
            try:
                call(sink)
            except Exception:
                log.exception("sink %s failed on %s", sink.name, what)
