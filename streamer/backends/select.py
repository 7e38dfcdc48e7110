"""Backend selection: ``auto`` tries TensorRT → TensorRT-RTX → PyTorch CUDA → ONNX Runtime CPU.

Each backend module exposes two functions:

- ``probe(name) -> str | None``: None when the backend can run on this machine, else the reason it cannot
  (missing package — naming the extra to install —, no GPU, unsupported compute capability).
- ``load(model_path, max_batch, backend_name=name, **options) -> Backend``.

Modules are imported lazily so that a missing heavy dependency costs nothing until it is asked for.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamer.backends.base import Backend
from streamer.cuda_env import no_gpu_reason
from streamer.devices import parse_device
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
GPU_BACKENDS = ("tensorrt", "tensorrt-rtx", "torch")  # what --device cuda[:N] may run (auto: in this order)
# what each backend runs: the torch backend rebuilds the net from the .pth/.pt2 in fp32 or fp16; int8 is a QDQ
# graph (tools/quantize.py) that ONNX Runtime runs with int8 CPU kernels and TensorRT builds INT8 plans from
RUNS_PRECISIONS: dict[str, tuple[str, ...]] = {
    "tensorrt": ("fp32", "fp16", "int8"),
    "tensorrt-rtx": ("fp32", "fp16", "int8"),
    "torch": ("fp32", "fp16"),
    "onnxruntime": ("fp32", "fp16", "int8"),
}


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


def precision_reason(name: str, precision: str) -> str | None:
    """None if backend ``name`` runs ``precision`` models (``auto``: each its own), else why not."""
    runs = RUNS_PRECISIONS[name]
    if precision == "auto" or precision in runs:
        return None
    return f"it runs {' and '.join(runs)} models, not {precision}"


def choose(requested: str = "auto", precision: str = "auto", device: str = "auto", *,
           probe_with: Callable[[str], str | None] | None = None) -> Selection:
    """Resolve ``auto`` (or check an explicit choice) without loading a model. ``device`` (``--device``,
    streamer.devices): ``cpu`` runs ONNX Runtime, ``cuda[:N]`` only the GPU backends. ``probe_with`` checks
    whether a backend can run here in place of :func:`probe` (fast start's cheaper guess)."""
    check = probe if probe_with is None else probe_with
    requested, order = for_device(requested, device)
    if requested != "auto":
        if requested in RUNS_PRECISIONS and (why := precision_reason(requested, precision)):
            able = " / ".join(n for n in AUTO_ORDER if precision in RUNS_PRECISIONS[n])
            raise ConfigError(f"--backend {requested} cannot run --precision {precision}: {why}",
                              f"use --backend {able} for {precision} (onnxruntime on a CPU), or --precision "
                              f"{' / '.join(RUNS_PRECISIONS[requested])}")
        reason = check(requested)
        if reason is not None:
            raise BackendUnavailableError(f"backend {requested!r} cannot run here: {reason}",
                                          "use --backend auto to fall back to what this machine has")
        return Selection(requested, ())
    skipped: list[tuple[str, str]] = []
    for name in order:
        reason = precision_reason(name, precision) or check(name)
        if reason is None:
            return Selection(name, tuple(skipped))
        skipped.append((name, reason))
    details = "; ".join(f"{n}: {r}" for n, r in skipped)
    if order != AUTO_ORDER:
        raise BackendUnavailableError(f"--device {device}: no GPU backend can run here ({details})",
                                      "pip install 'streamer[torch,cuda]', or use --device auto")
    raise BackendUnavailableError(f"no backend can run here ({details})", "pip install onnxruntime")


def for_device(requested: str, device: str) -> tuple[str, tuple[str, ...]]:
    """(backend to use, ``auto`` order) for ``--device`` as given (``CUDA:0`` is ``cuda:0``); ConfigError when
    the two contradict each other, or for a device that is none of auto, cpu, cuda[:N]."""
    kind = parse_device(device).kind
    if kind == "cpu":
        if requested not in ("auto", "onnxruntime"):
            raise ConfigError(f"--backend {requested} runs on a GPU, not on --device cpu",
                              "use --backend onnxruntime (or auto) with --device cpu")
        return "onnxruntime", AUTO_ORDER
    if kind == "cuda":
        if requested == "onnxruntime":
            raise ConfigError(f"--backend onnxruntime runs on the CPU, not on --device {device}",
                              "use --backend auto, tensorrt, tensorrt-rtx or torch with a GPU device")
        return requested, GPU_BACKENDS
    return requested, AUTO_ORDER


def open_backend(model_path: str | Path, requested: str = "auto", max_batch: int = 64,
                 precision: str = "auto", device: str = "auto", **options: Any) -> Backend:
    """Pick a backend (logging the choice and why others were skipped) and load the model into it.

    ``precision`` (fp32 | fp16 | int8) picks the model's sibling of that precision; ``auto`` lets each
    backend choose (TensorRT: the fp16 plan when there is an fp16 ONNX; PyTorch: fp16; ONNX Runtime: the
    model as given)."""
    selection = choose(requested, precision, device)
    if precision != "auto":
        options["precision"] = precision
    for name, reason in selection.skipped:
        log.info("backend %s skipped: %s", name, reason)
    module = importlib.import_module(BACKENDS[selection.name])
    backend: Backend = module.load(Path(model_path), max_batch, backend_name=selection.name, **options)
    log.info("backend %s selected (%s)", selection.name,
             "requested" if requested != "auto" else "first usable in " + " → ".join(AUTO_ORDER))
    return backend


def prefetch_imports(backend: str) -> None:
    """Import torch on a background thread while the publisher binds and the sources open, when the backend
    may be PyTorch on a GPU: the import alone takes seconds (seconds on a GPU host), and is otherwise the
    first thing model loading waits for. Python's import lock makes the loader wait for this import."""
    if backend not in ("auto", "torch") or importlib.util.find_spec("torch") is None or no_gpu_reason():
        return

    def run() -> None:
        try:
            import torch  # noqa: F401
        except Exception:  # the backend's own probe reports it
            log.debug("importing torch in the background failed", exc_info=True)

    threading.Thread(target=run, name="import-torch", daemon=True).start()
