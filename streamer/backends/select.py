"""Backend selection: ``auto`` tries TensorRT → TensorRT-RTX → PyTorch CUDA → ONNX Runtime CPU.

Each backend module exposes two functions:

- ``probe(name) -> str | None``: None when the backend can run on this machine, else the reason it cannot
  (missing package — naming the extra to install —, no GPU, unsupported compute capability).
- ``load(model_path, max_batch, backend_name=name, **options) -> Backend``.

Modules are imported lazily so that a missing heavy dependency costs nothing until it is asked for.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamer.backends.base import Backend
from streamer.errors import BackendUnavailableError, ConfigError

log = logging.getLogger(__name__)

# command-line name → module; order is the ``auto`` preference order
BACKENDS: dict[str, str] = {
    "tensorrt": "streamer.backends.tensorrt",
    "tensorrt-rtx": "streamer.backends.tensorrt",
    "torch": "streamer.backends.torch_cuda",
    "onnxruntime": "streamer.backends.ort",
}
AUTO_ORDER = ("tensorrt", "tensorrt-rtx", "torch", "onnxruntime")


@dataclass(frozen=True)
class Selection:
    name: str
    skipped: tuple[tuple[str, str], ...]  # (backend, why it was skipped)


def probe(name: str) -> str | None:
    """None if backend ``name`` can run here, else why not."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}", f"choose one of: auto, {', '.join(BACKENDS)}")
    try:
        module = importlib.import_module(BACKENDS[name])
    except ImportError as exc:  # the adapter module itself missing
        return f"adapter not importable ({exc})"
    return module.probe(name)


def choose(requested: str = "auto") -> Selection:
    """Resolve ``auto`` (or check an explicit choice) without loading a model."""
    if requested != "auto":
        reason = probe(requested)
        if reason is not None:
            raise BackendUnavailableError(f"backend {requested!r} cannot run here: {reason}",
                                          "use --backend auto to fall back to what this machine has")
        return Selection(requested, ())
    skipped: list[tuple[str, str]] = []
    for name in AUTO_ORDER:
        reason = probe(name)
        if reason is None:
            return Selection(name, tuple(skipped))
        skipped.append((name, reason))
    details = "; ".join(f"{n}: {r}" for n, r in skipped)
    raise BackendUnavailableError(f"no backend can run here ({details})", "pip install onnxruntime")


def open_backend(model_path: str | Path, requested: str = "auto", max_batch: int = 64,
                 **options: Any) -> Backend:
    """Pick a backend (logging the choice and why others were skipped) and load the model into it."""
    selection = choose(requested)
    for name, reason in selection.skipped:
        log.info("backend %s skipped: %s", name, reason)
    module = importlib.import_module(BACKENDS[selection.name])
    backend: Backend = module.load(Path(model_path), max_batch, backend_name=selection.name, **options)
    log.info("backend %s selected (%s)", selection.name,
             "requested" if requested != "auto" else "first usable in " + " → ".join(AUTO_ORDER))
    return backend
