"""A pipeline sink that records everything with arrival times and lets a test wait for what it expects.

Import as ``from recording_sink import RecordingSink``. Every wait has a timeout and fails the test with what
was seen so far.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamer.protocol import Prediction
from streamer.sinks import Sink

WAIT_S = 30.0


@dataclass(frozen=True)
class Event:
    at: float  # time.monotonic() when the sink got it
    kind: str  # pred | health | end
    source: str
    frame: int = -1
    latency_ms: float = 0.0
    dropped: int = 0
    state: str = ""  # health state or eos reason
    detail: str = ""
    skipped: int = 0  # end: frames the source could not decode


class RecordingSink(Sink):
    name = "recording"

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.stats_msgs: list[dict[str, Any]] = []
        self._cond = threading.Condition()

    # -- Sink ---------------------------------------------------------------------------------------------
    def prediction(self, pred: Prediction) -> None:
        now = time.time()
        self._add(Event(time.monotonic(), "pred", pred.source, pred.frame_index,
                        (now - pred.capture_time) * 1e3, pred.dropped))

    def health(self, source: str, state: str, detail: str) -> None:
        self._add(Event(time.monotonic(), "health", source, state=state, detail=detail))

    def end(self, source: str, frames: int, reason: str, skipped: int = 0) -> None:
        self._add(Event(time.monotonic(), "end", source, frame=frames, state=reason, skipped=skipped))

    def stats(self, stats: dict[str, Any]) -> None:
        with self._cond:
            self.stats_msgs.append(stats)

    def _add(self, event: Event) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    # -- queries --------------------------------------------------------------------------------------------
    def select(self, kind: str, source: str | None = None, since: float = 0.0) -> list[Event]:
        with self._cond:
            return [e for e in self.events
                    if e.kind == kind and (source is None or e.source == source) and e.at >= since]

    def preds(self, source: str, since: float = 0.0) -> list[Event]:
        return self.select("pred", source, since)

    def health_states(self, source: str) -> list[str]:
        return [e.state for e in self.select("health", source)]

    def wait(self, what: str, condition: Callable[[], bool], timeout_s: float = WAIT_S) -> float:
        """Wait until ``condition()`` holds (re-checked on every event); returns the monotonic time then."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not condition():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(e.kind, e.source, e.frame if e.kind == "pred" else e.state)
                            for e in self.events[-12:]]
                    raise AssertionError(f"{what}: not within {timeout_s} s; last events {seen}")
                self._cond.wait(min(remaining, 0.25))
        return time.monotonic()

    def wait_preds(self, source: str, n: int, since: float = 0.0, timeout_s: float = WAIT_S) -> float:
        return self.wait(f"{n} predictions of {source}", lambda: len(self.preds(source, since)) >= n,
                         timeout_s)

    def wait_health(self, source: str, state: str, since: float = 0.0, timeout_s: float = WAIT_S) -> Event:
        def found() -> bool:
            return any(e.state == state for e in self.select("health", source, since))

        self.wait(f"health {state} of {source}", found, timeout_s)
        return next(e for e in self.select("health", source, since) if e.state == state)


def p95(values: list[float]) -> float:
    assert values, "no samples"
    return float(np.percentile(np.asarray(values), 95))
