"""Fast start (``--fast-start auto``): ONNX Runtime on the CPU bridges the seconds a slow backend takes.

Which backends are slow to start: PyTorch — ``import torch`` alone takes 3.3 s on the H200 host, then CUDA
start-up, the model load and CUDA-graph capture (5.3 s to the first prediction, against 1.3 s with ONNX
Runtime). TensorRT and TensorRT-RTX deserialise a plan in well under a second and are not bridged (a plan
that must be built first is slow, but that is a one-off per machine, not start-up). ONNX Runtime is the
bridge itself.

Whether the backend ``--backend`` resolves to is slow to start is decided here without importing it: the
cheap checks each backend's probe starts with (installed, a GPU, pycuda), in the selection's order. The real
selection, import and load run on a background thread (:mod:`streamer.executors.handover`).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

from streamer.backends import ort
from streamer.backends.base import CpuBackend
from streamer.backends.select import BACKENDS, choose, probe
from streamer.errors import StreamerError
from streamer.host import usable_cores
from streamer.model.variants import sibling

log = logging.getLogger(__name__)

# backend → what makes it slow to start
SLOW_TO_START: dict[str, str] = {
    "torch": "importing torch, starting CUDA, loading the model and capturing CUDA graphs take seconds",
}


@dataclass(frozen=True)
class Bridge:
    """ONNX Runtime opened on the model, standing in for ``stands_in_for`` while that loads."""

    backend: CpuBackend
    stands_in_for: str

    def __post_init__(self) -> None:
        if self.stands_in_for not in SLOW_TO_START:
            raise ValueError(f"{self.stands_in_for!r} is not a slow-starting backend")


def quick_probe(name: str) -> str | None:
    """None when backend ``name`` will most likely run here, else why not — without importing its heavy
    package where the backend module offers ``quick_probe`` (PyTorch)."""
    module = importlib.import_module(BACKENDS[name])
    cheap = getattr(module, "quick_probe", None)
    return cheap(name) if cheap is not None else probe(name)


def slow_backend(requested: str, precision: str = "auto", device: str = "auto") -> str | None:
    """The backend ``open_backend(requested, precision, device)`` will most likely pick, when it is slow to
    start; None when it is quick, or when the selection will fail anyway (then it fails as without one)."""
    try:
        name = choose(requested, precision, device, probe_with=quick_probe).name
    except StreamerError:
        return None
    return name if name in SLOW_TO_START else None


def onnx_model(model_path: Path) -> Path:
    """The ONNX model ONNX Runtime opens for ``model_path``: itself when it is one, else ``<stem>.onnx``
    beside the ``.pt2`` / ``.pth`` / ``.json`` (``--precision`` picks its sibling, as ONNX Runtime does)."""
    if model_path.suffix == ".onnx":
        return model_path
    return sibling(model_path, ".onnx")


def bridge_threads(threads: int) -> int:
    """ONNX Runtime's threads while it bridges: ``--threads`` when set, else half the cores (one batch at a
    time), so the backend loading beside it and the decoders keep the other half."""
    return threads if threads > 0 else max(1, usable_cores() // 2)


def bridge_expected(model_path: Path, requested: str, precision: str = "auto", device: str = "auto") -> bool:
    """Whether ``open_bridge`` will most likely open a bridge (a slow backend, the model's ONNX beside it,
    ONNX Runtime installed): decided before the sources open, so that the slow backend's imports can wait
    for the bridge's first batch instead of competing with it."""
    return (slow_backend(requested, precision, device) is not None and onnx_model(model_path).is_file()
            and importlib.util.find_spec("onnxruntime") is not None)


def open_bridge(model_path: Path, requested: str, *, max_batch: int, precision: str = "auto",
                device: str = "auto", threads: int = 0) -> Bridge | None:
    """ONNX Runtime on ``model_path``'s ONNX when ``requested`` resolves to a slow-starting backend; None (and
    the reason logged) when there is nothing to bridge or ONNX Runtime cannot serve this model."""
    slow = slow_backend(requested, precision, device)
    if slow is None:
        log.debug("fast start: backend %s starts quickly (or will not start): no bridge", requested)
        return None
    onnx = onnx_model(model_path)
    why_not = ort.probe()
    if why_not is None and not onnx.is_file():
        why_not = f"no {onnx.name} beside {model_path.name}"
    if why_not is None:
        try:
            backend = ort.load(onnx, max_batch, threads=bridge_threads(threads),
                               precision=None if precision == "auto" else precision)
        except StreamerError as exc:
            why_not = str(exc)
        else:
            log.info("fast start: %s serves the first batches while %s loads (%s)", backend.engine_id, slow,
                     SLOW_TO_START[slow])
            return Bridge(backend, slow)
    log.info("fast start: no bridge for %s (%s); waiting for it to load", slow, why_not)
    return None
