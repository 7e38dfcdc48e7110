"""Run metrics: frames, throughput, capture→publish latency percentiles, drops, per-source counts.

Written by the results thread only; read (snapshots) by the main thread for the progress bar and the periodic
``stats`` message. Latencies are kept exactly up to ``MAX_SAMPLES`` and reservoir-sampled beyond, so a live
run of days keeps bounded memory while short runs get exact percentiles.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import itertools
import json
import math
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
    failed: int = 0  # frames of batches the engine failed on (no prediction)
    end_reason: str = ""
    last_frame: int = -1


@dataclass(frozen=True)
class SourceSummary:
    name: str
    kind: str
    frames: int
    dropped: int
    end: str
    skipped: int = 0  # frames it could not decode (corrupt packets, unreadable images)

    def __post_init__(self) -> None:
        if self.frames < 0 or self.dropped < 0 or self.skipped < 0:
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

        def fmt_s(v: float | None) -> str:
            return "-" if v is None else f"{v:.2f}"

        startup = self.extra.get("startup") or {}
        engines = self.backend
        if bridge := startup.get("bridge"):  # a fast start: say which engine made which frames
            engines = (f"{bridge['backend']} for the first {bridge['frames']} frames, then {self.backend}"
                       if bridge["frames"] < self.frames else
                       f"{bridge['backend']}: {bridge['for']} was not ready before the last frame")
        out = [
            f"{self.frames} frames in {self.elapsed_s:.2f} s = {self.fps:.1f} frames/s "
            f"({engines}, {self.batches} batches, mean batch {self.mean_batch:.1f})",
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
        if startup.get("first_prediction_s") is not None:
            ready = startup.get("model_ready_s")
            out.append(f"first prediction {startup['first_prediction_s']:.2f} s after the process started "
                       f"(model ready at {fmt_s(ready)} s)")
        if bridge:
            then = (f"until {bridge['for']} took over at {bridge['handover_s']:.2f} s"
                    if bridge.get("handover_s") is not None else f"({bridge['for']} never took over)")
            out.append(f"fast start: {bridge['engine']} served {bridge['frames']} frames "
                       f"({bridge['batches']} batches) {then}")
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


# Histogram bucket bounds (upper, inclusive: Prometheus' ``le``), in seconds or frames
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGE_BUCKETS_S = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
# decode: a file or image reader's read (live reads wait for the camera and are left out); resize: one frame
# into its slot; queue: a frame's wait in its source's buffer; engine and publish: one batch each
STAGES = ("decode", "resize", "queue", "engine", "publish")


@dataclass(frozen=True)
class HistogramSnapshot:
    """Cumulative counts per upper bound (the last is +Inf), their sum and count."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    sum: float
    count: int

    def __post_init__(self) -> None:
        if len(self.cumulative) != len(self.bounds) + 1 or self.count != (self.cumulative or (0,))[-1]:
            raise ValueError("a histogram needs one count per bound plus +Inf, the last equal to count")


_BISECT_MAX = 32  # observe_many: up to this many values, bisect each (cheaper than numpy for few)


class Histogram:
    """A fixed-bucket histogram that threads add to in bulk: one lock per ``observe_many`` call, so the hot
    path pays per batch, not per frame. Exposed by the control plane as a Prometheus histogram."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("histogram bounds must increase")
        self.bounds = tuple(float(b) for b in bounds)
        self._edges = np.asarray(self.bounds)
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.bounds, value)
        with self._lock:
            self._counts[i] += 1
            self._sum += value

    def observe_many(self, values: list[float]) -> None:
        if len(values) <= _BISECT_MAX:  # a small batch: bisect beats numpy's per-call overhead
            where = [bisect.bisect_left(self.bounds, v) for v in values]
        else:
            where = np.searchsorted(self._edges, values, side="left").tolist()
        total = math.fsum(values)
        with self._lock:
            for i in where:
                self._counts[i] += 1
            self._sum += total

    def snapshot(self) -> HistogramSnapshot:
        with self._lock:
            counts, total = list(self._counts), self._sum
        return HistogramSnapshot(self.bounds, tuple(itertools.accumulate(counts)), total, sum(counts))


class Timings:
    """Where frames spend their time (histograms the control plane exports): capture→publish per frame, each
    stage of :data:`STAGES`, and batch sizes. Every method is thread-safe."""

    def __init__(self) -> None:
        self.capture_to_publish = Histogram(LATENCY_BUCKETS_S)
        self.stages = {stage: Histogram(STAGE_BUCKETS_S) for stage in STAGES}
        self.batch_size = Histogram(BATCH_BUCKETS)


class Metrics:
    """Counters for one run. ``record`` is called from the results thread for every published frame."""

    RATE_WINDOW_S = 5.0  # per-source frames/s are measured over about this long
    RATE_SAMPLE_S = 1.0

    def __init__(self, sources: list[str]) -> None:
        self.start = time.monotonic()
        self.end: float | None = None
        self.latency = LatencyRecorder()
        self.first_record: float | None = None  # time.monotonic() of the first published prediction
        self.timings = Timings()
        self.per_source: dict[str, SourceCounts] = {s: SourceCounts() for s in sources}
        self.frames = 0
        self.failed_batches = 0
        self._lock = threading.Lock()
        self._window_frames = 0
        self._window_start = self.start
        self._window_lat: list[float] = []
        # (time, {source: frames}) samples for per-source frames/s (sample_rates, rates)
        self._rate_samples: collections.deque[tuple[float, dict[str, int]]] = collections.deque(
            maxlen=int(self.RATE_WINDOW_S / self.RATE_SAMPLE_S) + 1)

    def add_source(self, name: str) -> None:
        """A source added while running (its name is new to this run)."""
        with self._lock:
            self.per_source.setdefault(name, SourceCounts())

    def counts(self) -> dict[str, SourceCounts]:
        """A consistent copy of the per-source counts (any thread)."""
        with self._lock:
            return {name: dataclasses.replace(c) for name, c in self.per_source.items()}

    def sample_rates(self, now: float | None = None) -> None:
        """Remember each source's frame count now (the supervising thread calls this about every second)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._rate_samples and now - self._rate_samples[-1][0] < self.RATE_SAMPLE_S:
                return
            self._rate_samples.append((now, {name: c.frames for name, c in self.per_source.items()}))

    def rates(self, now: float | None = None) -> dict[str, float]:
        """Published frames/s per source over the last ~``RATE_WINDOW_S`` seconds (0 before any sample)."""
        now = time.monotonic() if now is None else now
        rates: dict[str, float] = {}
        with self._lock:
            for name, c in self.per_source.items():
                # the oldest sample that knew the source (one added later is measured from its first sample)
                first = next(((t, s[name]) for t, s in self._rate_samples if name in s), None)
                dt = now - first[0] if first is not None else 0.0
                rates[name] = round((c.frames - first[1]) / dt, 2) if first is not None and dt > 0 else 0.0
        return rates

    def record(self, source: str, latency_s: float, dropped: int, frame_index: int) -> None:
        ms = latency_s * 1e3
        if self.first_record is None:
            self.first_record = time.monotonic()
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

    def record_failed(self, sources: list[str]) -> None:
        """The frames of a batch the engine failed on (one source name per frame)."""
        with self._lock:
            for source in sources:
                self.per_source[source].failed += 1

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
