"""What the benchmarks share: the base of their typed result records (to JSON and back), targets, the machine,
and small helpers.

Result records are frozen dataclasses deriving from :class:`Record`; each checks its own fields in
``__post_init__``, so a bad figure fails where it is made, not in a table printed minutes later. ``to_dict``
gives the JSON form (the fields, then the ``DERIVED`` properties, such as a rate computed from a count and a
time, so the JSON reads on its own); ``from_dict`` rebuilds a record from it (``--chart-from``, the tests),
ignoring the derived keys and keys it does not know.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import logging
import os
import platform
import resource
import tempfile
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, TypeVar

import numpy as np

log = logging.getLogger("bench")

R = TypeVar("R", bound="Record")


class Report(Protocol):
    """What a ``tools/bench.py`` subcommand's ``run`` returns: its JSON body."""

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Record:
    """Base of the result records (subclasses are frozen dataclasses too)."""

    DERIVED: ClassVar[tuple[str, ...]] = ()  # properties written to JSON after the fields

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: to_jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}
        out.update({name: to_jsonable(getattr(self, name)) for name in self.DERIVED})
        return out

    def replace(self: R, **changes: Any) -> R:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
        hints = typing.get_type_hints(cls)
        kwargs = {f.name: _convert(hints[f.name], data[f.name], f"{cls.__name__}.{f.name}")
                  for f in dataclasses.fields(cls) if f.init and f.name in data}
        return cls(**kwargs)


def to_jsonable(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _convert(tp: Any, value: Any, where: str) -> Any:
    """``value`` (from JSON) as type ``tp``: records rebuilt, lists to tuples where a tuple is declared."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if value is None or tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]  # records only use ``X | None``
        return _convert(inner, value, where)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{where}: {value!r} is not one of {args}")
        return value
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, where) for v in value)
        if len(args) != len(value):
            raise ValueError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_convert(a, v, where) for a, v in zip(args, value, strict=True))
    if origin is list:
        return [_convert(args[0], v, where) for v in value]
    if origin is dict:
        return {k: _convert(args[1], v, where) for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, Record):
        return tp.from_dict(value)
    if tp is float:
        return float(value)
    if tp in (int, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ValueError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    return value


# -- targets -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target(Record):
    """A figure of this run (mostly a ratio of two figures measured side by side) against its goal."""

    name: str
    description: str
    value: float | None  # None: not measured in this run
    goal: float
    op: Literal[">=", "<="] = ">="
    note: str = ""
    applies: bool = True  # False: a goal for another kind of machine, shown for reference only

    DERIVED: ClassVar[tuple[str, ...]] = ("met",)

    def __post_init__(self) -> None:
        if self.op not in (">=", "<="):
            raise ValueError(f"target {self.name}: bad comparison {self.op!r}")
        if self.value is not None and not np.isfinite(self.value):
            raise ValueError(f"target {self.name}: value {self.value} is not finite")

    @property
    def met(self) -> bool | None:
        if self.value is None or not self.applies:
            return None
        return self.value >= self.goal if self.op == ">=" else self.value <= self.goal

    @property
    def verdict(self) -> str:
        return {True: "MET", False: "MISSED", None: "n/a" if self.applies else "info"}[self.met]


# -- the machine ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Gpu(Record):
    name: str
    compute_capability: str
    memory_gib: float
    driver: int | None = None


@dataclass(frozen=True)
class Machine(Record):
    """Where the figures were measured."""

    cpus: int
    platform: str
    cpu_model: str | None = None
    versions: dict[str, str] = dataclasses.field(default_factory=dict)  # module → version
    gpu: Gpu | None = None
    loadavg_start: tuple[float, float, float] | None = None
    loadavg_end: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.cpus < 1:
            raise ValueError(f"bad CPU count {self.cpus}")

    @classmethod
    def probe(cls, modules: Sequence[str] = ()) -> Machine:
        """This machine, with the versions of those of ``modules`` that are installed (they get imported)."""
        from streamer.cuda_env import gpu_info

        info = gpu_info()
        gpu = None if info is None else Gpu(info.name, info.cc_string, round(info.total_memory / 2**30, 1),
                                            info.driver_version)
        return cls(cpus=os.cpu_count() or 1, platform=platform.platform(), cpu_model=_cpu_model(),
                   versions={m: v for m in modules if (v := module_version(m))}, gpu=gpu,
                   loadavg_start=os.getloadavg())

    def finished(self) -> Machine:
        return dataclasses.replace(self, loadavg_end=os.getloadavg())

    @property
    def label(self) -> str:
        """The GPU's name, else the CPU's."""
        return self.gpu.name if self.gpu else self.cpu_model or "CPU"


def _cpu_model() -> str | None:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)


def module_version(name: str) -> str | None:
    """The version of module ``name``; None when it is not installed; ``"?"`` when it does not import."""
    if importlib.util.find_spec(name) is None:
        return None
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # a broken install is worth a line in the log, not a failed benchmark
        log.warning("%s is installed but does not import: %s: %s", name, type(exc).__name__, exc)
        return "?"
    return str(getattr(module, "VERSION_TEXT", None) or getattr(module, "__version__", "?"))


# -- small helpers -------------------------------------------------------------------------------------------
def ints(text: str) -> list[int]:
    """``"1,8,32"`` → [1, 8, 32]."""
    values = [int(x) for x in text.split(",") if x.strip()]
    if any(v < 1 for v in values):
        raise SystemExit(f"expected positive integers, got {text!r}")
    return values


def names(text: str) -> list[str]:
    """``"a, b,"`` → ["a", "b"]."""
    return [x.strip() for x in text.split(",") if x.strip()]


def pick(text: str, allowed: Sequence[str], what: str) -> list[str]:
    """``names(text)``, each one of ``allowed``; SystemExit naming the others (``what``: e.g. "sections")."""
    chosen = names(text)
    unknown = sorted(set(chosen) - set(allowed))
    if unknown:
        raise SystemExit(f"unknown {what} {', '.join(unknown)}: choose from {', '.join(allowed)}")
    return chosen


@contextlib.contextmanager
def work_dir(path: Path | None, prefix: str) -> Iterator[Path]:
    """A bench's folder for logs and outputs: ``path`` (made if missing, kept afterwards), else a temporary
    folder named ``prefix...``, removed on exit."""
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or not b else a / b


def cpu_seconds() -> float:
    """CPU time of this process so far, every thread included."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def fmt(value: float | None, spec: str = ".2f") -> str:
    """``format(value, spec)``, or ``-`` (right-aligned to the spec's width) for a figure not measured."""
    if value is None:
        width = spec.split(".")[0].lstrip(",")
        return "-".rjust(int(width)) if width.isdigit() else "-"
    return format(value, spec)
