"""The records of ``tools/bench.py pipeline``: what each run measured, shared by the tables, the targets, the
chart, the JSON and the tests.

One :class:`PipelineResult` per benchmark: the engine alone (:class:`EngineOnly`), one :class:`OfflineRow` per
input configuration (decode-only, the naive loop, the streamer CLI), :class:`Variant` runs with environment
overrides, and the paced :class:`LiveRun`. A streamer run (:class:`StreamerRun`) keeps what its own summary
said, what the subscriber process counted (:class:`Delivery`) and what sampling the process showed (RSS, CPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from bench_common import Machine, Record, Target
from bench_loop import LoopStats

HIST_EDGES_MS = tuple(round(x, 3) for x in np.geomspace(0.1, 2000, 61).tolist())


def _non_negative(record: Record, *names: str) -> None:
    for name in names:
        value = getattr(record, name)
        if value is not None and value < 0:
            raise ValueError(f"{type(record).__name__}.{name} is negative ({value})")


@dataclass(frozen=True)
class Percentiles(Record):
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        present = [v for v in (self.p50, self.p95, self.p99, self.max) if v is not None]
        if present != sorted(present):
            raise ValueError(f"percentiles out of order: {self}")

    @classmethod
    def of(cls, values: Sequence[float] | np.ndarray) -> Percentiles:
        """p50/p95/p99/max of the finite ``values`` (all None when there are none)."""
        a = np.asarray(values, np.float64)
        a = a[np.isfinite(a)]
        if not a.size:
            return cls()
        p50, p95, p99 = np.percentile(a, (50, 95, 99))
        return cls(round(float(p50), 3), round(float(p95), 3), round(float(p99), 3), round(float(a.max()), 3))


@dataclass(frozen=True)
class Histogram(Record):
    """Counts of latencies (ms) between log-spaced edges."""

    edges_ms: tuple[float, ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.counts) != len(self.edges_ms) - 1:
            raise ValueError(f"{len(self.counts)} counts for {len(self.edges_ms)} edges")

    @classmethod
    def of(cls, values_ms: Sequence[float] | np.ndarray) -> Histogram:
        edges = np.asarray(HIST_EDGES_MS)
        counts, _ = np.histogram(np.clip(np.asarray(values_ms, np.float64), edges[0], edges[-1]), bins=edges)
        return cls(HIST_EDGES_MS, tuple(int(c) for c in counts))

    @property
    def total(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True)
class Window(Record):
    """Capture→publish latency of the frames captured in one time window of a run."""

    window: int
    from_s: float
    frames: int
    latency_ms: Percentiles


@dataclass(frozen=True)
class DecodeRun(Record):
    """Every source on its own thread reading every frame, as the pipeline runs them, and nothing else."""

    frames: int
    seconds: float
    threading: Literal["pipeline", "opencv-default"]
    decoder_threads: int | None  # the pipeline's OpenCV decoder threads (None: OpenCV's defaults)
    per_source_fps: tuple[float, ...]
    cpu_ms_per_frame: float
    ms_per_frame_per_source: float  # one source thread's wall time per frame

    DERIVED: ClassVar[tuple[str, ...]] = ("fps",)

    def __post_init__(self) -> None:
        if self.seconds <= 0:
            raise ValueError(f"decode run of {self.seconds} s")
        _non_negative(self, "frames", "cpu_ms_per_frame", "ms_per_frame_per_source")

    @property
    def fps(self) -> float:
        return self.frames / self.seconds


@dataclass(frozen=True)
class EngineOnly(Record):
    """The backend through the executor the pipeline makes for it, on pre-staged batches."""

    backend: str
    engine_id: str
    workers: int | None  # CPU engines: batches run at once
    threads: int | None  # ONNX Runtime: intra-op threads per run
    loop: LoopStats

    DERIVED: ClassVar[tuple[str, ...]] = ("batch", "slots", "images_per_s", "ms_per_batch",
                                          "cpu_ms_per_image")

    @property
    def batch(self) -> int:
        return self.loop.batch

    @property
    def slots(self) -> int:
        return self.loop.slots

    @property
    def images_per_s(self) -> float:
        return self.loop.images_per_s

    @property
    def ms_per_batch(self) -> float:
        return self.loop.ms_per_batch

    @property
    def cpu_ms_per_image(self) -> float:
        return self.loop.cpu_ms_per_image


@dataclass(frozen=True)
class NaiveRun(Record):
    """The seed notebook's loop, one frame at a time, publishing to the same subscriber process."""

    frames: int
    seconds: float
    device: Literal["cpu", "cuda"]
    received: int | None = None  # what the subscriber counted (None: it wrote nothing)
    missed: int | None = None
    latency_ms: Percentiles | None = None

    DERIVED: ClassVar[tuple[str, ...]] = ("fps",)

    def __post_init__(self) -> None:
        _non_negative(self, "frames", "seconds", "received", "missed")

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class CliSummary(Record):
    """The part of the streamer's ``--summary-json`` the benchmark keeps."""

    frames: int
    elapsed_s: float
    fps: float
    latency_ms: dict[str, float | None]
    dropped: int
    batches: int
    mean_batch: float
    backend: str
    model: str
    failed_batches: int = 0


@dataclass(frozen=True)
class Stages(Record):
    """Where a frame's time goes inside the streamer (its summary's ``extra.stages``)."""

    resize_ms_per_frame: float | None = None
    engine_ms_per_frame: float | None = None
    engine_ms_per_batch: float | None = None
    results_ms_per_frame: float | None = None


@dataclass(frozen=True)
class Delivery(Record):
    """What the subscriber process received from one run."""

    received: int
    unique: int
    missed: int  # gaps in the per-topic sequence numbers: sent, never arrived
    complete: bool  # eos arrived from every source
    duplicates: int
    out_of_order: int
    eos_frames: int  # frames the sources' eos messages announce
    dropped_by_policy: int  # stale frames a live source's policy dropped (counted in the predictions)
    latency_ms: Percentiles  # capture → publish, as the streamer stamped it
    recv_latency_ms: Percentiles  # capture → arrival at the subscriber
    latency_hist: Histogram
    fps: float | None  # first capture → last arrival
    windows: tuple[Window, ...] = ()

    def __post_init__(self) -> None:
        _non_negative(self, "received", "unique", "missed", "duplicates", "out_of_order", "eos_frames",
                      "dropped_by_policy", "fps")
        if self.unique > self.received:
            raise ValueError(f"{self.unique} unique frames out of {self.received} received")


@dataclass(frozen=True)
class RssWindow(Record):
    """The process's resident memory: peak over the run, and from the 1,000th prediction to the last."""

    samples: int
    peak_mb: float
    at_checkpoint_mb: float | None = None
    peak_after_mb: float | None = None
    ratio: float | None = None
    window_s: float | None = None
    note: str = ""


@dataclass(frozen=True)
class ThreadCpu(Record):
    """CPU seconds of the process's busiest threads at the last snapshot."""

    count: int
    top_cpu_s: tuple[tuple[str, float], ...]
    busy_over_0_5s: int


@dataclass(frozen=True)
class StreamerRun(Record):
    """One run of the streamer CLI as a subprocess, with a subscriber process counting what it publishes."""

    label: str
    sources: int
    command: str
    env: dict[str, str]
    rc: int
    subscriber_rc: int | None
    wall_s: float
    expected: int | None  # frames that must arrive (None: a live run, where stale frames may be dropped)
    summary: CliSummary | None = None
    stages: Stages | None = None
    publisher: dict[str, Any] | None = None  # the publisher's counters, as the streamer reports them
    delivery: Delivery | None = None  # None: the subscriber wrote nothing
    rss: RssWindow | None = None
    threads: ThreadCpu | None = None
    cpu_s: float | None = None
    startup_cpu_s: float | None = None  # CPU spent before the first frame was captured
    cpu_ms_per_frame: float | None = None  # CPU while streaming, per frame delivered
    log_tail: str | None = None  # the streamer's log, when it failed
    sub_log_tail: str | None = None

    DERIVED: ClassVar[tuple[str, ...]] = ("fps", "lost")

    def __post_init__(self) -> None:
        _non_negative(self, "sources", "wall_s", "expected", "cpu_s", "startup_cpu_s", "cpu_ms_per_frame")

    @property
    def fps(self) -> float | None:
        return self.delivery.fps if self.delivery else None

    @property
    def lost(self) -> int | None:
        """Frames that should have arrived and did not (None: unknown, or a live run)."""
        if self.expected is None or self.delivery is None:
            return None
        return self.expected - self.delivery.unique

    @property
    def lost_or_missed(self) -> int | None:
        return None if self.lost is None or self.delivery is None else self.lost + self.delivery.missed

    @property
    def ok(self) -> bool:
        return self.rc == 0 and self.fps is not None

    def failure(self) -> str:
        return f"exit {self.rc}: {(self.log_tail or '')[-600:]}"


@dataclass(frozen=True)
class OfflineRow(Record):
    """One offline input configuration (``sources`` copies of ``clip``) through every section."""

    config: str
    clip: str
    sources: int
    frames_each: int
    decode: DecodeRun | None = None  # the faster of the two threadings: the limit must not be lowered
    decode_other: DecodeRun | None = None
    naive: NaiveRun | None = None
    streamer: StreamerRun | None = None

    DERIVED: ClassVar[tuple[str, ...]] = ("decode_fps", "naive_fps", "streamer_fps")

    def __post_init__(self) -> None:
        if self.sources < 1:
            raise ValueError(f"{self.config}: {self.sources} sources")

    @property
    def decode_fps(self) -> float | None:
        return self.decode.fps if self.decode else None

    @property
    def naive_fps(self) -> float | None:
        return self.naive.fps if self.naive else None

    @property
    def streamer_fps(self) -> float | None:
        return self.streamer.fps if self.streamer else None


@dataclass(frozen=True)
class Variant(Record):
    """Decode-only and the streamer again on one configuration, with environment overrides."""

    label: str
    config: str
    env: dict[str, str]
    decode: DecodeRun
    streamer: StreamerRun | None = None

    DERIVED: ClassVar[tuple[str, ...]] = ("decode_fps", "streamer_fps")

    @property
    def decode_fps(self) -> float:
        return self.decode.fps

    @property
    def streamer_fps(self) -> float | None:
        return self.streamer.fps if self.streamer else None


@dataclass(frozen=True)
class LiveRun(Record):
    """One source paced at its clip's frame rate for ``seconds``: latency per window, RSS."""

    source: str
    fps_paced: float
    seconds: float
    window_s: float
    run: StreamerRun

    DERIVED: ClassVar[tuple[str, ...]] = ("frames_total",)

    @property
    def frames_total(self) -> int | None:
        return self.run.delivery.received if self.run.delivery else None

    @property
    def windows(self) -> tuple[Window, ...]:
        return self.run.delivery.windows if self.run.delivery else ()


@dataclass(frozen=True)
class PipelineResult(Record):
    machine: Machine
    device: Literal["cpu", "cuda"]
    backend: str
    model: str
    batch: int
    slots: int
    threads: int
    sections: tuple[str, ...]
    media: dict[str, str]
    goals: dict[str, float]
    engine: EngineOnly | None = None
    offline: tuple[OfflineRow, ...] = ()
    variants: tuple[Variant, ...] = ()
    live: LiveRun | None = None
    targets: tuple[Target, ...] = ()
    skipped: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.batch < 1 or self.slots < 1:
            raise ValueError(f"batch {self.batch}, slots {self.slots}")

    @property
    def gpu(self) -> bool:
        return self.device == "cuda"

    def row(self, config: str) -> OfflineRow | None:
        return next((r for r in self.offline if r.config == config), None)
