"""Engine adapters: one module per backend (ort, torch_cuda, tensorrt), each implementing one engine protocol
of :mod:`streamer.executors.contract` and saying which executor drives it (``make_executor``).

Each backend module also exposes ``probe(name) -> str | None`` (None when it can run here, else why not) and
``load(model_path, max_batch, backend_name=name, **options) -> Backend``; :mod:`.select` picks one.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from streamer.executors.base import Executor
from streamer.executors.contract import BatchSpec, CudaSlot
from streamer.model.manifest import ModelManifest

log = logging.getLogger(__name__)


class Backend(ABC):
    name: ClassVar[str]  # as on the command line: onnxruntime | torch | tensorrt | tensorrt-rtx

    def __init__(self, manifest: ModelManifest, max_batch: int) -> None:
        self.manifest = manifest
        self.max_batch = max_batch

    @property
    def engine_id(self) -> str:
        """Published with every prediction: model id + backend (+ precision)."""
        return f"{self.manifest.model_id}/{self.name}"

    @property
    def batch_spec(self) -> BatchSpec:
        return BatchSpec.of(self.manifest)

    @abstractmethod
    def make_executor(self, batch: int, slots: int) -> Executor[Any]:
        """The executor that drives this engine, with ``slots`` batches of up to ``batch`` frames."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free sessions/engines."""


class CpuBackend(Backend):
    """A :class:`~streamer.executors.contract.CpuEngine`: synchronous ``infer`` on host arrays."""

    workers: int = 1

    @abstractmethod
    def infer(self, images: np.ndarray, out: np.ndarray) -> None:
        """``images`` (n, H, W, 3) uint8 BGR → write (n, C) float32 scores into ``out``."""

    def make_executor(self, batch: int, slots: int) -> Executor[Any]:
        """A CPU executor with a slot more than the batches that run at once, so that the batcher fills one
        while every worker is busy."""
        from streamer.executors.cpu import CpuExecutor

        if slots < self.workers + 1:
            log.info("slots %d → %d: %d batches run at once on the CPU, and one more is being filled", slots,
                     self.workers + 1, self.workers)
            slots = self.workers + 1
        return CpuExecutor(self, batch, slots)


class CudaBackend(Backend):
    """A :class:`~streamer.executors.contract.CudaEngine`: queues work on a slot's stream."""

    device_index: int = 0

    def prepare(self, slots: Sequence[CudaSlot]) -> None:
        for slot in slots:
            slot.engine_state = self.bind(slot)

    @abstractmethod
    def bind(self, slot: CudaSlot) -> object:
        """This engine's per-slot state (kept in ``slot.engine_state``)."""

    @abstractmethod
    def enqueue(self, slot: CudaSlot, n: int) -> None: ...

    def release(self, slots: Sequence[CudaSlot]) -> None:
        for slot in slots:
            slot.engine_state = None

    def make_executor(self, batch: int, slots: int) -> Executor[Any]:
        from streamer.executors.cuda import CudaExecutor

        return CudaExecutor(self, batch, slots, self.device_index)
