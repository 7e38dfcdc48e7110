"""The backend interface: one engine adapter per module (ort, torch_cuda, tensorrt).

A backend loads a model and runs it. CPU backends implement ``infer`` (host arrays in and out, synchronous;
the CPU executor calls it from its worker thread). CUDA backends implement ``enqueue`` (queue the model on
the slot's stream over the slot's device buffers; must not synchronise); the CUDA executor does the copies.
"""

from __future__ import annotations

from abc import ABC
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:
    from streamer.executors.base import Slot
    from streamer.model.manifest import ModelManifest


class Backend(ABC):
    name: ClassVar[str]  # as on the command line: onnxruntime | torch | tensorrt | tensorrt-rtx
    device: ClassVar[str]  # "cpu" or "cuda": which executor drives it

    def __init__(self, manifest: ModelManifest, max_batch: int) -> None:
        self.manifest = manifest
        self.max_batch = max_batch

    @property
    def engine_id(self) -> str:
        """Published with every prediction: model id + backend (+ precision)."""
        return f"{self.manifest.model_id}/{self.name}"

    def infer(self, images: np.ndarray, out: np.ndarray) -> None:
        """CPU backends: ``images`` (n,H,W,3) uint8 BGR → write (n,C) float32 scores into ``out``."""
        raise NotImplementedError(f"{type(self).__name__} runs on {self.device}; it has no host infer()")

    def enqueue(self, slot: Slot, n: int) -> None:
        """CUDA backends: queue inference on ``n`` rows of ``slot``'s device input on ``slot``'s stream."""
        raise NotImplementedError(f"{type(self).__name__} runs on {self.device}; it has no enqueue()")

    def warmup(self) -> None:  # noqa: B027 - optional hook
        """Run once at start-up (allocations, autotuning, graph capture) so the first frame is not slow."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free sessions/engines."""
