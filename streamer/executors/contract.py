"""The contract between executors and engines: slots (the buffers of one batch) and what an engine must do.

Executors own slots, streams and completion order; engines (``streamer.backends``) own a model and run it.
Executors import only this module; backends implement one of the two engine protocols.

Life of a slot (a producer thread fills and submits, a consumer thread collects and releases)::

    slot = ex.acquire()              # a free slot (blocks while all N are filled or in flight)
    resize_into(frame, slot.host_input[i]); slot.tags.append(tag)   # fill rows 0..n-1
    ex.submit(slot)                  # run the engine on slot.count rows; returns at once
    done = ex.collect()              # the oldest submitted slot, once its results are in host_output
    use(done.host_output[:done.count], done.tags)   # copy results out
    ex.release(done)                 # back to the free list; its buffers may now be overwritten

A slot's input is either host memory that the executor copies up (``host_input``), or — on a CUDA slot —
device memory the producer already filled on the slot's stream (``device_input`` with ``input_on_device``
set): frames decoded and resized on the GPU never cross PCIe. Rows a producer wrote to the host in such a
batch it uploads itself with :meth:`CudaSlot.upload_row`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from streamer.model.manifest import ModelManifest


@dataclass(frozen=True)
class BatchSpec:
    """What one row of a slot holds: the engine's input sample and its output scores."""

    sample_shape: tuple[int, ...]  # (H, W, 3) for the product's uint8 NHWC BGR models
    num_classes: int
    input_dtype: np.dtype[Any] = field(default_factory=lambda: np.dtype(np.uint8))

    def __post_init__(self) -> None:
        object.__setattr__(self, "sample_shape", tuple(int(d) for d in self.sample_shape))
        object.__setattr__(self, "input_dtype", np.dtype(self.input_dtype))
        if not self.sample_shape or min(self.sample_shape) <= 0:
            raise ValueError(f"bad sample shape {self.sample_shape}")
        if self.num_classes < 1:
            raise ValueError(f"bad number of classes {self.num_classes}")

    @classmethod
    def of(cls, manifest: ModelManifest) -> BatchSpec:
        """The model contract's batch: uint8 (H, W, 3) BGR in, (num_classes,) float32 scores out."""
        h, w = manifest.input_hw
        return cls((h, w, 3), manifest.num_classes)


class Slot:
    """One batch's host buffers and bookkeeping. Fields a producer writes: ``host_input`` rows, ``tags``,
    ``count``. Fields a consumer reads: ``host_output[:count]``, ``tags``, ``error``, ``engine_s``."""

    def __init__(self, index: int, host_input: np.ndarray, host_output: np.ndarray) -> None:
        self.index = index
        self.host_input = host_input  # (max_batch, *sample_shape)
        self.host_output = host_output  # (max_batch, num_classes) float32
        self.count = 0
        self.tags: list[Any] = []  # one per row: whatever the producer needs back (the batcher's FrameTag)
        self.seq = -1  # submission sequence number
        self.error: BaseException | None = None  # the engine failed on this batch (its results are not valid)
        self.engine_s = 0.0  # seconds the batch spent in the engine (CUDA: submit → completion)

    @property
    def capacity(self) -> int:
        return self.host_input.shape[0]

    def reset(self) -> None:
        self.count = 0
        self.tags.clear()
        self.error = None
        self.engine_s = 0.0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.index} seq={self.seq} count={self.count}>"


class CudaSlot(Slot):
    """A slot plus its device buffers, CUDA stream and completion event (made by the CUDA executor).

    ``device_input`` / ``device_output`` are pycuda ``GPUArray`` s (``__cuda_array_interface__``: PyTorch and
    CuPy view them without a copy); ``input_ptr`` / ``output_ptr`` are their raw addresses for TensorRT.
    ``engine_state`` is the engine's own per-slot state (a TensorRT execution context, captured CUDA graphs).
    """

    def __init__(self, index: int, host_input: np.ndarray, host_output: np.ndarray, *, device_input: Any,
                 device_output: Any, stream: Any, event: Any) -> None:
        super().__init__(index, host_input, host_output)
        self.device_input = device_input
        self.device_output = device_output
        self.stream = stream  # pycuda.driver.Stream
        self.event = event  # pycuda.driver.Event, recorded after the batch's last operation
        self.input_on_device = False  # rows 0..count-1 were written into device_input on ``stream``
        self.engine_state: Any = None

    @property
    def input_ptr(self) -> int:
        return int(self.device_input.gpudata)

    @property
    def output_ptr(self) -> int:
        return int(self.device_output.gpudata)

    @property
    def stream_handle(self) -> int:
        return int(self.stream.handle)

    def upload_row(self, row: int) -> None:
        """Queue the copy of host row ``row`` to the device, on this slot's stream (a mixed batch)."""
        import pycuda.driver as cuda

        nbytes = self.host_input[row].nbytes
        address = int(self.device_input.gpudata) + row * nbytes
        cuda.memcpy_htod_async(address, self.host_input[row], self.stream)

    def reset(self) -> None:
        super().reset()
        self.input_on_device = False


@runtime_checkable
class Engine(Protocol):
    """What every engine offers an executor and the pipeline."""

    manifest: ModelManifest
    max_batch: int

    @property
    def name(self) -> str:
        """As on the command line: onnxruntime | torch | tensorrt | tensorrt-rtx."""
        ...

    @property
    def batch_spec(self) -> BatchSpec: ...

    @property
    def engine_id(self) -> str: ...


class CpuEngine(Engine, Protocol):
    """Runs synchronously on host arrays; the CPU executor calls ``infer`` from its worker threads."""

    @property
    def workers(self) -> int:
        """How many batches it can run at once (``infer`` is called from that many threads)."""
        ...

    def infer(self, images: np.ndarray, out: np.ndarray) -> None:
        """``images`` (n, *sample_shape) → write (n, num_classes) float32 scores into ``out``."""


class CudaEngine(Engine, Protocol):
    """Queues work on a slot's stream over the slot's device buffers; never synchronises."""

    def prepare(self, slots: Sequence[CudaSlot]) -> None:
        """Once, before the first batch, under the device's primary context: bind tensor addresses, capture
        CUDA graphs — whatever lets ``enqueue`` be cheap."""

    def enqueue(self, slot: CudaSlot, n: int) -> None:
        """Queue the model on rows 0..n-1 of ``slot.device_input`` → ``slot.device_output``, on its stream."""

    def release(self, slots: Sequence[CudaSlot]) -> None:
        """Drop per-slot state (the executor frees the buffers afterwards)."""
