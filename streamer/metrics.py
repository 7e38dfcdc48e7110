"""Run metrics: frames, throughput, capture→publish latency percentiles, drops, per-source counts.

Written by the results thread only; read (snapshots) by the main thread for the progress bar and the periodic
``stats`` message. Latencies are kept exactly up to ``MAX_SAMPLES`` and reservoir-sampled beyond, so a live
run of days keeps bounded memory while short runs get exact percentiles.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MAX_SAMPLES = 200_000
PERCENTILES = (50, 95, 99)


class LatencyRecorder:
    """Latency samples in milliseconds: all of them up to ``cap``, a uniform reservoir after that."""

    def __init__(self, cap: int = MAX_SAMPLES, seed: int = 0) -> None:
        self.cap = cap
        self.count = 0
        self._samples: list[float] = []
        self._rng = random.Random(seed)

    def add(self, ms: float) -> None:
        self.count += 1
        if len(self._samples) < self.cap:
            self._samples.append(ms)
        else:
            j = self._rng.randrange(self.count)
            if j < self.cap:
                self._samples[j] = ms

    def percentiles(self, qs: tuple[int, ...] = PERCENTILES) -> dict[str, float | None]:
        if not self._samples:
            return {f"p{q}": None for q in qs}
        values = np.percentile(np.asarray(self._samples, np.float64), qs)
        return {f"p{q}": round(float(v), 3) for q, v in zip(qs, values, strict=True)}


@dataclass
class SourceCounts:
    frames: int = 0  # published predictions
    dropped: int = 0  # frames dropped before batching (live policy / realtime pacing)
    end_reason: str = ""
    last_frame: int = -1


@dataclass(frozen=True)
class SourceSummary:
    name: str
    kind: str
    frames: int
    dropped: int
    end: str

    def __post_init__(self) -> None:
        if self.frames < 0 or self.dropped < 0:
            raise ValueError("negative counts")


@dataclass(frozen=True)
class Summary:
    frames: int
    elapsed_s: float
    fps: float
    latency_ms: dict[str, float | None]
    dropped: int
    batches: int
    mean_batch: float
    backend: str
    model: str
    sources: tuple[SourceSummary, ...]
    failed_batches: int = 0
    accuracy: dict[str, Any] | None = None  # demo only: {"source", "correct", "total", "accuracy"}
    stopped_by_signal: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.frames < 0 or self.elapsed_s < 0:
            raise ValueError("negative frames or time")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        lat = self.latency_ms
        def fmt(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}"
        out = [
            f"{self.frames} frames in {self.elapsed_s:.2f} s = {self.fps:.1f} frames/s "
            f"({self.backend}, {self.batches} batches, mean batch {self.mean_batch:.1f})",
            f"latency capture→publish ms: p50 {fmt(lat.get('p50'))}  p95 {fmt(lat.get('p95'))}  "
            f"p99 {fmt(lat.get('p99'))};  dropped {self.dropped}",
        ]
        for s in self.sources:
            out.append(f"  {s.name} ({s.kind}): {s.frames} frames, {s.dropped} dropped, {s.end or 'running'}")
        if self.failed_batches:
            out.append(f"  {self.failed_batches} batches failed in the backend (see the log)")
        if self.accuracy:
            a = self.accuracy
            out.append(f"demo accuracy: {a['correct']}/{a['total']} = {100 * a['accuracy']:.1f}% top-1 "
                       f"against {a['truth']}")
        return out

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")


class Metrics:
    """Counters for one run. ``record`` is called from the results thread for every published frame."""

    def __init__(self, sources: list[str]) -> None:
        self.start = time.monotonic()
        self.end: float | None = None
        self.latency = LatencyRecorder()
        self.per_source: dict[str, SourceCounts] = {s: SourceCounts() for s in sources}
        self.frames = 0
        self.failed_batches = 0
        self._lock = threading.Lock()
        self._window_frames = 0
        self._window_start = self.start
        self._window_lat: list[float] = []

    def record(self, source: str, latency_s: float, dropped: int, frame_index: int) -> None:
        ms = latency_s * 1e3
        with self._lock:
            c = self.per_source[source]
            c.frames += 1
            c.dropped += dropped
            c.last_frame = frame_index
            self.frames += 1
            self.latency.add(ms)
            self._window_frames += 1
            if len(self._window_lat) < 10_000:
                self._window_lat.append(ms)

    def ended(self, source: str, reason: str) -> None:
        with self._lock:
            self.per_source[source].end_reason = reason

    def finish(self) -> None:
        self.end = time.monotonic()

    @property
    def elapsed(self) -> float:
        return (self.end or time.monotonic()) - self.start

    def window(self) -> dict[str, Any]:
        """Metrics since the previous call (for the periodic ``stats`` message) plus running totals."""
        now = time.monotonic()
        with self._lock:
            dt = max(now - self._window_start, 1e-9)
            lat = self._window_lat
            frames = self._window_frames
            self._window_lat, self._window_frames, self._window_start = [], 0, now
            totals = {name: {"frames": c.frames, "dropped": c.dropped} for name, c in self.per_source.items()}
            total = self.frames
        pct: dict[str, float | None] = {"p50": None, "p95": None, "p99": None}
        if lat:
            values = np.percentile(np.asarray(lat), PERCENTILES)
            pct = {f"p{q}": round(float(v), 3) for q, v in zip(PERCENTILES, values, strict=True)}
        return {"fps": round(frames / dt, 2), "frames": total, "latency_ms": pct,
                "uptime_s": round(now - self.start, 3), "sources": totals}


def load_truth(path: str | Path) -> dict[int, str]:
    """Per-frame ground-truth labels of the demo clip → {frame index: label}.

    Accepted shapes: a list of labels; ``{"labels": [...]}``; ``{"frames": [{"frame": i, "label": L}, ...]}``
    where L is a name, or an index into a top-level ``labels`` list of class names (then a ``name`` field
    wins) — the demo clip's truth file (streamer.model.demo) is the last kind.
    """
    data = json.loads(Path(path).read_text())
    rows: Any = data
    classes: list[Any] = []
    if isinstance(data, dict):
        if isinstance(data.get("frames"), list) and isinstance(data.get("labels"), list):
            classes = data["labels"]
        for key in ("frames", "labels", "truth"):
            if key in data and isinstance(data[key], list):
                rows = data[key]
                break
        else:
            raise ValueError(f"{path}: no per-frame labels (expected a 'frames' or 'labels' list)")
    truth: dict[int, str] = {}
    for i, row in enumerate(rows):
        if isinstance(row, str):
            truth[i] = row
        elif isinstance(row, dict):
            index = int(row.get("frame", row.get("index", i)))
            label = row.get("name", row.get("label", row.get("class")))
            if isinstance(label, int) and 0 <= label < len(classes):
                label = classes[label]
            if label is not None:
                truth[index] = str(label)
    return truth


class AccuracyCheck:
    """Counts top-1 hits of one source against per-frame ground truth."""

    def __init__(self, source: str, truth_path: str | Path) -> None:
        self.source = source
        self.truth_path = Path(truth_path)
        self.truth = load_truth(truth_path)
        self.correct = 0
        self.total = 0

    def add(self, frame_index: int, label: str) -> None:
        expected = self.truth.get(frame_index)
        if expected is None:
            return
        self.total += 1
        self.correct += int(expected == label)

    def result(self) -> dict[str, Any]:
        return {"source": self.source, "correct": self.correct, "total": self.total,
                "accuracy": self.correct / self.total if self.total else 0.0, "truth": self.truth_path.name}
