"""Which worker runs which source, and the names sources have over the whole run.

The rule (docs/scale-out.md): the ``--source`` list is dealt out in order, source ``i`` to worker ``i mod N``,
so worker loads differ by at most one source and a command line always shards the same way. A source added
while running (``POST /sources`` on the driver) goes to the worker with the fewest sources still running
(the lowest-numbered one on a tie). Names are made unique over the whole run, as one pipeline makes them
(``clip``, ``clip-2`` ...): topics ``pred.<name>`` must not collide between workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from streamer.errors import SourceError
from streamer.sources import make_source
from streamer.sources.factory import slug, split_options, unique_name

__all__ = ["Assigned", "Described", "deal", "default_name", "describe", "least_loaded", "name_sources",
           "run_names", "unique_name"]


@dataclass(frozen=True)
class Assigned:
    """One source of a scale-out run: what ``--source`` (or ``POST /sources``) said, its name in the run,
    the policy it was added with (None: the spec's suffix or ``--policy``), the worker running it, and the
    kind of source the spec makes here (None: not looked at)."""

    spec: str
    name: str
    worker: int
    policy: str | None = None
    kind: str | None = None

    def __post_init__(self) -> None:
        if not self.spec.strip() or not self.name:
            raise ValueError("a source needs a spec and a name")
        if self.worker < 0:
            raise ValueError(f"worker {self.worker} < 0")


def deal(count: int, workers: int) -> list[int]:
    """The worker of each of ``count`` sources: source i → worker i mod ``workers``."""
    if workers < 1:
        raise ValueError("at least one worker")
    return [i % workers for i in range(count)]


def least_loaded(loads: Sequence[int]) -> int:
    """The worker with the fewest running sources (the lowest index on a tie)."""
    if not loads:
        raise ValueError("no workers")
    return min(range(len(loads)), key=lambda i: (loads[i], i))


@dataclass(frozen=True)
class Described:
    """What a pipeline would make of one ``--source`` value, found here by building its source once (not
    opened): its default name, its kind and the files it reads on this machine."""

    name: str
    kind: str = "source"  # a path missing here: not known until its worker opens it
    input_files: tuple[Path, ...] = ()


def describe(spec: str, local_files: bool = True) -> Described:
    """``spec``'s name as a pipeline would give it (``clip`` for ``videos/clip.mp4``, ``cam1-live`` for a
    URL), its kind and its input files.

    ``local_files``: paths must exist here (a one-line SourceError otherwise, before any worker starts);
    False (the workers run on other machines, which may hold files this one lacks): a path missing here is
    named from its text (kind ``source``, no input files)."""
    bare = split_options(spec)[0]  # #policy= / #decode= are the worker's business (it may have NVDEC)
    try:
        source = make_source(bare, decode="cpu")
    except SourceError:
        if local_files or "://" in bare:
            raise
        path = Path(bare)
        return Described(slug(path.stem if path.suffix else path.name))
    return Described(source.name, source.kind, tuple(source.input_files()))


def default_name(spec: str, local_files: bool = True) -> str:
    """The name a pipeline would give ``spec`` (:func:`describe`)."""
    return describe(spec, local_files).name


def run_names(bases: Sequence[str]) -> list[str]:
    """``bases`` (default names) made unique over the whole run, in order (``clip``, ``clip-2`` ...), as one
    pipeline names its sources."""
    names: list[str] = []
    for base in bases:
        names.append(unique_name(base, set(names)))
    return names


def name_sources(specs: Sequence[str], local_files: bool = True) -> list[str]:
    """Unique names for ``specs`` over the whole run, in order (``clip``, ``clip-2`` ...)."""
    return run_names([default_name(spec, local_files) for spec in specs])
