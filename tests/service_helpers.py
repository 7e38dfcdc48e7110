"""The ``streamer`` command run as a service for the control-plane tests: synthetic camera frames for the
MJPEG test servers, the process with its stderr followed line by line, and a ZeroMQ subscriber thread that
records every message with its arrival time.

Import as ``from service_helpers import ...``. Everything listens on 127.0.0.1 only, and every wait has a
deadline.
"""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from streamer_helpers import COLORS, REPO

from streamer.subscribe import Subscriber

WAIT_S = 60.0


def colour_jpegs(names: list[str], size: tuple[int, int] = (64, 48)) -> list[bytes]:
    """JPEG frames of solid colours (the colour test model's classes), each with its number drawn in."""
    frames = []
    for i, name in enumerate(names):
        image = np.empty((size[1], size[0], 3), np.uint8)
        image[:] = COLORS[name]
        cv2.putText(image, str(i), (2, size[1] - 4), cv2.FONT_HERSHEY_PLAIN, 0.8, (128, 128, 128), 1)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        assert ok
        frames.append(data.tobytes())
    return frames


class CliProcess:
    """``python -m streamer.cli ARGS`` with its stderr read line by line on a thread."""

    wait_s = WAIT_S  # wait_line's default deadline

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "streamer.cli", *args], cwd=REPO,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     stdin=subprocess.DEVNULL)
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            self.lines.put(line)

    def wait_line(self, pattern: str, timeout_s: float | None = None) -> re.Match[str]:
        deadline = time.monotonic() + (self.wait_s if timeout_s is None else timeout_s)
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                err = "".join(self.stderr)
                raise AssertionError(f"no line matching {pattern!r}; stderr: {err}") from None
            if m := re.search(pattern, line):
                return m


class StreamerProcess(CliProcess):
    """The command as a service; ``url`` is its control plane's, read from its start-up log."""

    def __init__(self, *args: str) -> None:
        super().__init__(*args)
        self.stdout = ""
        self.url = self.wait_line(r"control plane on (http://\S+)").group(1)

    def interrupt(self, timeout_s: float = 30.0) -> int:
        """SIGINT (drain and exit), then the exit status."""
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=timeout_s)
        self.stdout = out or ""
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic() when it arrived
    topic: str
    payload: dict[str, Any]


class Collector:
    """Every message of ``endpoint`` (all topics), on a thread, with arrival times."""

    def __init__(self, endpoint: str) -> None:
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._endpoint = endpoint
        self._thread = threading.Thread(target=self._run, name="collector", daemon=True)
        self._thread.start()
        assert self._ready.wait(WAIT_S), "the subscriber did not start"

    def _run(self) -> None:
        with Subscriber(self._endpoint, topics=("",), timeout_ms=100) as sub:
            self._ready.set()
            while not self._stop.is_set():
                msg = sub.recv()
                if msg is None:
                    continue
                with self._cond:
                    self.messages.append(Received(time.monotonic(), msg.topic, msg.payload))
                    self._cond.notify_all()

    def select(self, kind: str, source: str | None = None) -> list[Received]:
        with self._cond:
            return [m for m in self.messages if m.payload.get("type") == kind
                    and (source is None or m.payload.get("source") == source)]

    def preds(self, source: str) -> list[Received]:
        return self.select("pred", source)

    def wait(self, what: str, condition: Any, timeout_s: float = WAIT_S) -> float:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not condition():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    tail = [(m.topic, m.payload.get("frame")) for m in self.messages[-10:]]
                    raise AssertionError(f"{what}: not within {timeout_s} s; last messages {tail}")
                self._cond.wait(min(remaining, 0.25))
        return time.monotonic()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)


def published_rate(preds: list[Received]) -> float:
    """Frames/s of a run of predictions, from their capture times: (n - 1) / (last - first)."""
    assert len(preds) >= 2, "a rate needs two predictions"
    span = preds[-1].payload["capture_ts"] - preds[0].payload["capture_ts"]
    assert span > 0
    return (len(preds) - 1) / span
