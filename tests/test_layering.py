"""The package's import graph: no cycle, and nothing lower imports anything higher.

Every ``import`` in ``streamer/`` counts — at module level, inside functions, and under ``TYPE_CHECKING``.
A new module must be placed in ``LAYERS`` (the test fails until it is), which is where its place in the
data flow is decided.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "streamer"

# lowest first; a module may import modules of its own layer or below (its own layer: without a cycle)
LAYERS: tuple[tuple[str, ...], ...] = (
    ("streamer", "streamer.errors", "streamer.files", "streamer.host", "streamer.cuda_env", "streamer.paths",
     "streamer.devices"),
    ("streamer.protocol", "streamer.preprocess"),
    ("streamer.gpu",),
    ("streamer.model",),
    ("streamer.engine",),
    ("streamer.sources",),
    ("streamer.executors", "streamer.executors.handover"),  # handover: a fast start's two executors as one
    ("streamer.backends", "streamer.backends.fast_start"),  # fast_start: which backend is bridged, the bridge
    ("streamer.batching", "streamer.metrics", "streamer.publish", "streamer.subscribe", "streamer.config",
     "streamer.view.tap", "streamer.view.draw"),  # what the batcher hands viewers; the annotation overlay
    ("streamer.sinks", "streamer.outputs"),
    ("streamer.results", "streamer.intake", "streamer.view"),  # view: --annotate, --preview (a sink)
    ("streamer.pipeline",),
    ("streamer.control",),
    ("streamer.scale",),  # a driver over Ray workers, each running a pipeline; its own control plane
    ("streamer.cli", "streamer.__main__", "streamer.ctl"),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str) -> set[str]:
    """Every streamer module ``path`` imports (``from streamer.x import y`` counts y when it is a module)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m == "streamer" or m.startswith("streamer.")}


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path, name) if m in modules and m != name}
            for name, path in modules.items()}


def layer_of(module: str) -> int:
    best = -1, -1  # (layer, length of the matching prefix): the most specific entry wins
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best[1]:
                best = i, len(prefix)
    if best[0] < 0:
        pytest.fail(f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}")
    return best[0]


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_nothing_lower_imports_anything_higher() -> None:
    upward = sorted(f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
                    for a, targets in graph().items() for b in targets
                    if layer_of(b) > layer_of(a) and not a.startswith(b + "."))
    assert not upward, "\n".join(upward)


def test_the_checks_catch_what_they_look_for() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer_of("streamer.executors.contract") < layer_of("streamer.backends.tensorrt")
    assert layer_of("streamer.engine.plans") < layer_of("streamer.backends.tensorrt")
