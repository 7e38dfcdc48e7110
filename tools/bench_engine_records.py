"""The records of ``tools/bench.py engine``: measured points, copy rates, the models, and the whole result,
shared by its tables, its targets, the JSON and the tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from bench_common import Machine, Record, Target
from bench_loop import LoopStats


@dataclass(frozen=True)
class Point(Record):
    """One measured throughput: ``engine`` (the engine alone) or ``executor`` (through the loop, ``loop``)."""

    section: Literal["engine", "executor"]
    model: str
    variant: str
    batch: int
    images_per_s: float
    ms_per_batch: float
    latency_ms_median: float | None = None  # engine section: one batch, enqueue → synchronised
    loop: LoopStats | None = None  # executor section

    DERIVED: ClassVar[tuple[str, ...]] = ("label",)

    def __post_init__(self) -> None:
        if self.batch < 1 or not self.images_per_s > 0 or not self.ms_per_batch > 0:
            raise ValueError(f"bad point {self}")
        if (self.section == "executor") != (self.loop is not None):
            raise ValueError(f"{self.section} point {self.variant!r}: loop figures belong to executor points")

    @classmethod
    def of_loop(cls, model: str, variant: str, loop: LoopStats) -> Point:
        return cls("executor", model, variant, loop.batch, loop.images_per_s, loop.ms_per_batch, loop=loop)

    @property
    def slots(self) -> int | None:
        return self.loop.slots if self.loop else None

    @property
    def label(self) -> str:
        return self.variant if self.loop is None else (
            f"{self.variant}, {self.loop.slots} slot{'s' if self.loop.slots > 1 else ''}")


@dataclass(frozen=True)
class CopyRate(Record):
    """Best and median GB/s of one kind of copy of ``bytes`` bytes."""

    size: str
    bytes: int
    direction: Literal["H2D", "D2H"]
    memory: Literal["pinned", "pageable"]
    mode: Literal["async", "sync"]
    gbps_best: float
    gbps_median: float

    DERIVED: ClassVar[tuple[str, ...]] = ("kind",)

    def __post_init__(self) -> None:
        if self.bytes < 1 or not self.gbps_best >= self.gbps_median > 0:
            raise ValueError(f"bad copy rate {self}")

    @property
    def kind(self) -> str:
        return f"{self.direction} {self.memory}, {self.mode}"


@dataclass(frozen=True)
class ModelInfo(Record):
    key: str
    onnx: str
    source: str
    input_hw: tuple[int, int]
    classes: int
    torch_source: str | None = None  # where the torch backend loaded it from (.pt2, .pth + arch, a module)

    @property
    def image_bytes(self) -> int:
        return self.input_hw[0] * self.input_hw[1] * 3


@dataclass(frozen=True)
class EngineResult(Record):
    machine: Machine
    exec_batch: int
    models: tuple[ModelInfo, ...]
    points: tuple[Point, ...]
    h2d: tuple[CopyRate, ...] = ()
    targets: tuple[Target, ...] = ()
    skipped: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()

    def find(self, section: str, model: str, variant: str, batch: int,
             slots: int | None = None) -> Point | None:
        return find(self.points, section, model, variant, batch, slots)


def find(points: Sequence[Point], section: str, model: str, variant: str, batch: int,
         slots: int | None = None) -> Point | None:
    for p in points:
        if (p.section, p.model, p.variant, p.batch, p.slots) == (section, model, variant, batch, slots):
            return p
    return None
