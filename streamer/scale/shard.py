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
from streamer.sources.factory import slug, split_options

__all__ = ["Assigned", "deal", "default_name", "least_loaded", "name_sources", "unique_name"]


@dataclass(frozen=True)
class Assigned:
    """One source of a scale-out run: what ``--source`` (or ``POST /sources``) said, its name in the run,
    the policy it was added with (None: the spec's suffix or ``--policy``), and the worker running it."""

    spec: str
    name: str
    worker: int
    policy: str | None = None

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


def default_name(spec: str, local_files: bool = True) -> str:
    """The name a pipeline would give ``spec`` (``clip`` for ``videos/clip.mp4``, ``cam1-live`` for a URL).

    ``local_files``: paths must exist here (a one-line SourceError otherwise, before any worker starts);
    False (the workers run on other machines, which may hold files this one lacks): a path missing here is
    named from its text."""
    bare = split_options(spec)[0]  # #policy= / #decode= are the worker's business (it may have NVDEC)
    try:
        return make_source(bare, decode="cpu").name
    except SourceError:
        if local_files or "://" in bare:
            raise
        path = Path(bare)
        return slug(path.stem if path.suffix else path.name)


def unique_name(base: str, taken: set[str]) -> str:
    """``base``, or ``base-2``, ``base-3`` ... : the first not in ``taken`` (as one pipeline names them)."""
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def name_sources(specs: Sequence[str], local_files: bool = True) -> list[str]:
    """Unique names for ``specs`` over the whole run, in order (``clip``, ``clip-2`` ...)."""
    names: list[str] = []
    for spec in specs:
        names.append(unique_name(default_name(spec, local_files), set(names)))
    return names
