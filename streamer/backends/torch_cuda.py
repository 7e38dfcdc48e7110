"""PyTorch on CUDA, for GPUs without TensorRT: fp16, channels-last, CUDA graphs, on the executor's streams.

The model is loaded without the user's class by :func:`streamer.model.torch_load.load_torch_model` (the
``.pt2`` program, else the ``.pth`` + arch), the very preprocessing the ONNX export bakes in included.

Each :class:`~streamer.executors.contract.CudaSlot` gets torch views of its pycuda device buffers (through
``__cuda_array_interface__``, no copy) and a ``torch.cuda.ExternalStream`` over its pycuda stream.

CUDA graphs: one graph per (slot, bucket) where buckets are 1, 2, 4, … max_batch; a partial batch of ``n``
rows replays the smallest bucket ≥ n (the extra rows compute on stale input and are never copied back —
the nets are row-independent in eval mode). The graphs read the slot's own device input and write its own
device output, so there is no extra device copy and no shared static buffer that would force the slots'
streams to serialise; each slot's graphs share one private memory pool (they only ever run one at a time, on
that slot's stream). Cost: slots × buckets captures at start-up (3.0 s for 3 slots × 7 buckets on the H200
host) and one activation pool per slot. They are captured before the first batch, while nothing else in the
process uses CUDA: capturing in a background thread while batches ran eagerly was tried, and failed on the
H200 host ("operation not permitted when stream is capturing" in the eager batches).

Loading: the ``.pth`` + arch first (``source="fast"``: 0.14 s on the H200 host, against 9.6 s to load the
``.pt2`` program), the ``.pt2`` when the net cannot be rebuilt from it.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streamer.backends.base import CudaBackend
from streamer.cuda_env import no_gpu_reason, pycuda_reason
from streamer.errors import BackendUnavailableError, ModelError
from streamer.executors.contract import BatchSpec, CudaSlot
from streamer.model.manifest import ModelManifest

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "fp32")


def quick_probe(name: str = "torch") -> str | None:
    """The checks of :func:`probe` that need no ``import torch`` (seconds on a GPU host): installed, a GPU,
    pycuda. None: PyTorch will most likely run (only a CPU-only torch build still fails :func:`probe`)."""
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed (pip install 'streamer[torch]')"
    return no_gpu_reason() or pycuda_reason()


def probe(name: str = "torch") -> str | None:
    """None if PyTorch can run on a CUDA GPU here; else why not (cheap checks before importing torch)."""
    reason = quick_probe(name)
    if reason:
        return reason
    import torch

    if not torch.cuda.is_available():
        return f"torch {torch.__version__} has no CUDA support (a CPU-only build?)"
    return None


def bucket_sizes(max_batch: int) -> tuple[int, ...]:
    """1, 2, 4, … below ``max_batch``, then ``max_batch``: the batch sizes graphs are captured for."""
    sizes = []
    b = 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    sizes.append(max_batch)
    return tuple(sizes)


def bucket_for(n: int, buckets: Sequence[int]) -> int:
    for b in buckets:
        if b >= n:
            return b
    raise ValueError(f"batch {n} exceeds the largest captured batch {buckets[-1]}")


@dataclass
class _SlotState:
    inp: torch.Tensor
    out: torch.Tensor
    stream: torch.cuda.ExternalStream
    buckets: tuple[int, ...]  # the backend's buckets that fit this slot, and the slot's capacity
    graphs: dict[int, torch.cuda.CUDAGraph] = field(default_factory=dict)


class _CudaArray:
    """A bare ``__cuda_array_interface__`` (v2, no stream) over a pycuda allocation."""

    def __init__(self, ptr: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.__cuda_array_interface__ = {"shape": tuple(shape), "typestr": np.dtype(dtype).str,
                                         "data": (ptr, False), "version": 2, "strides": None}


def _device_tensor(array: Any) -> torch.Tensor:
    """A torch view (no copy) of a pycuda GPUArray, through ``__cuda_array_interface__``."""
    import torch

    ptr = int(array.gpudata)
    try:
        tensor = torch.as_tensor(array, device="cuda")
    except (TypeError, RuntimeError, ValueError):  # a torch that rejects pycuda's v3 dict: hand it plain v2
        tensor = torch.as_tensor(_CudaArray(ptr, array.shape, array.dtype), device="cuda")
    if tensor.data_ptr() != ptr:
        raise RuntimeError("torch copied a slot buffer instead of viewing it; the engine would not see it")
    return tensor


class TorchCudaBackend(CudaBackend):
    name = "torch"

    def __init__(self, manifest: ModelManifest, max_batch: int, model: nn.Module, *, precision: str = "fp16",
                 cuda_graphs: bool = True, channels_last: bool = True, autocast: bool = False,
                 graph_buckets: Sequence[int] | None = None, source: str = "",
                 batch_spec: BatchSpec | None = None) -> None:
        """``model`` takes the slots' input rows (default the model contract's uint8 NHWC BGR; ``batch_spec``
        for another input, e.g. a benchmark's pre-normalised float NCHW) and returns float scores."""
        import torch

        from streamer.model.torch_load import set_eval

        super().__init__(manifest, max_batch)
        if precision not in PRECISIONS:
            raise ModelError(f"unknown precision {precision!r} for the torch backend", "use fp16 or fp32")
        self._batch_spec = batch_spec or BatchSpec.of(manifest)
        self.precision = precision
        self.cuda_graphs = cuda_graphs
        self.autocast = autocast
        self.source = source
        self.buckets = tuple(sorted(set(graph_buckets))) if graph_buckets else bucket_sizes(max_batch)
        if self.buckets[-1] < max_batch:
            self.buckets = (*self.buckets, max_batch)
        torch.backends.cudnn.benchmark = True
        set_eval(model)
        model = model.to("cuda")
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model

    @property
    def engine_id(self) -> str:
        graphs = "+graphs" if self.cuda_graphs else ""
        return f"{self.manifest.model_id}/{self.name}-{self.precision}{graphs}"

    # -- running ------------------------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        if self.autocast:
            with torch.autocast("cuda", dtype=torch.float16, cache_enabled=False):
                return self.model(x)
        return self.model(x)

    @property
    def batch_spec(self) -> BatchSpec:
        return self._batch_spec

    def bind(self, slot: CudaSlot) -> _SlotState:
        import torch

        state = _SlotState(
            inp=_device_tensor(slot.device_input),
            out=_device_tensor(slot.device_output),
            stream=torch.cuda.ExternalStream(slot.stream_handle),
            buckets=tuple(sorted({b for b in self.buckets if b < slot.capacity} | {slot.capacity})),
        )
        if self.cuda_graphs:
            self._capture(state)
        return state

    def _capture(self, state: _SlotState) -> None:
        import torch

        pool = torch.cuda.graph_pool_handle()
        side = torch.cuda.Stream()
        side.wait_stream(state.stream)
        with torch.inference_mode():
            for b in sorted(state.buckets, reverse=True):  # largest first: the pool is sized once
                inp, out = state.inp[:b], state.out[:b]
                with torch.cuda.stream(side):  # warm-up (cuDNN autotuning, lazy allocations) off-capture
                    for _ in range(2):
                        out.copy_(self._forward(inp))
                side.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool, stream=side, capture_error_mode="thread_local"):
                    out.copy_(self._forward(inp))
                state.graphs[b] = graph
        side.synchronize()

    def release(self, slots: Sequence[CudaSlot]) -> None:
        import torch

        super().release(slots)
        torch.cuda.synchronize()

    def enqueue(self, slot: CudaSlot, n: int) -> None:
        import torch

        state: _SlotState = slot.engine_state
        with torch.cuda.stream(state.stream):
            if self.cuda_graphs:
                state.graphs[bucket_for(n, state.buckets)].replay()
            else:
                with torch.inference_mode():
                    state.out[:n].copy_(self._forward(state.inp[:n]))

    def run_host(self, images: np.ndarray) -> np.ndarray:
        """Synchronous, outside any executor (checks and tools): uint8 (n,H,W,3) BGR → (n,C) scores."""
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(images)).to("cuda")
            return self._forward(x).float().cpu().numpy()

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]


# -- loading ------------------------------------------------------------------------------------------------
def load(model_path: str | Path, max_batch: int, backend_name: str = "torch", *, precision: str = "fp16",
         cuda_graphs: bool = True, channels_last: bool = True, graph_buckets: Sequence[int] | None = None,
         source: str = "fast", **options: Any) -> TorchCudaBackend:
    """Load an exported model for the CUDA executor (:func:`streamer.model.torch_load.load_torch_model`)."""
    reason = probe(backend_name)
    if reason:
        raise BackendUnavailableError(f"backend torch cannot run here: {reason}",
                                      "use --backend auto to fall back to what this machine has")
    from streamer.model.torch_load import load_torch_model

    loaded = load_torch_model(model_path, precision, source, "cuda")
    log.info("torch backend: %s from %s (%s, graphs=%s)", loaded.manifest.name, loaded.origin, precision,
             cuda_graphs)
    return TorchCudaBackend(loaded.manifest, max_batch, loaded.model, precision=precision,
                            cuda_graphs=cuda_graphs, channels_last=channels_last, autocast=loaded.autocast,
                            graph_buckets=graph_buckets, source=loaded.origin)
