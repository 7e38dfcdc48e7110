"""Whole decoded pictures kept on the GPU: what viewers (``--annotate``, ``--preview``) download.

An NVDEC decoder reuses its output surfaces, so a source that must keep whole pictures copies each decoded
NV12 picture into its own :class:`Nv12Ring` (a device-to-device copy: ~3 MB at 1080p) and refers to it with a
:class:`DeviceFrame`. The pipeline's rows are made elsewhere (:mod:`streamer.gpu.rows`); a DeviceFrame can
still ``fill_row`` a slot itself (NV12 → BGR + resize straight into the slot's device input, on the slot's
stream) when a source has no rows of the model's size.

Ring depth and reuse: a source never has more than ``buffer capacity + a few`` frames between its decoder and
the batcher (its buffer, the frame being batched, the one it holds), so a ring of ``capacity + RING_SPARE``
entries is reused only after the batcher has queued the kernel that reads the entry; each entry also carries
an event recorded after that kernel, which the source waits on before overwriting it (normally long done).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np

from streamer.gpu.context import STREAM_NON_BLOCKING, PrimaryContext
from streamer.gpu.nv12 import BT601_LIMITED, ColorMatrix, Nv12Planes, Nv12Resizer

RING_SPARE = 6  # entries beyond the buffer's capacity: batcher's frame, reader's frame, live hand-over queue
UINT8 = np.dtype(np.uint8)


class _Entry:
    """One NV12 picture's device memory (luma then chroma, tight pitch) and the event of its last reader."""

    def __init__(self, cuda: Any, width: int, height: int) -> None:
        self.buffer = cuda.mem_alloc(width * height * 3 // 2)
        self.event = cuda.Event(cuda.event_flags.DISABLE_TIMING)
        self.planes = Nv12Planes(int(self.buffer), width, int(self.buffer) + width * height, width, width,
                                 height)


class _Resources:
    """A ring's CUDA objects, held apart from the ring: they are destroyed inside the ring's context."""

    def __init__(self) -> None:
        self.stream: Any = None
        self.entries: list[_Entry] = []
        self.retired: list[_Entry] = []  # entries of an earlier picture size (frames may still use them)
        self.scratch: Any = None  # a resized row for host slots (CPU executors)


def _release(context: PrimaryContext, resources: _Resources) -> None:
    """Drop a dead ring's CUDA objects with its context current: pycuda frees each one then (dropped in any
    other thread — the batcher, which lets go of the last frame — it could not, and would leak them)."""
    try:
        with context.active():
            if resources.stream is not None:
                resources.stream.synchronize()
            resources.entries.clear()
            resources.retired.clear()
            resources.scratch = None
            resources.stream = None
    except Exception:  # the process is ending and CUDA is gone: nothing left to free
        pass


class Nv12Ring:
    """A source's ring of NV12 device buffers and its CUDA stream (the decoder's stream as well).

    It lives as long as any frame decoded into it (each DeviceFrame holds its ring): a source that ends drops
    its ring, and the memory is freed once the last of its frames has been batched."""

    def __init__(self, context: PrimaryContext, depth: int, matrix: ColorMatrix = BT601_LIMITED) -> None:
        import pycuda.driver as cuda

        if depth < 2:
            raise ValueError("a ring needs at least 2 entries")
        self._cuda = cuda
        self.context = context
        self.depth = depth
        self.matrix = matrix
        self.size = (0, 0)  # width, height of the current entries
        self._res = _Resources()
        self._next = 0
        self._scratch_bytes = 0
        self._store_lock = threading.Lock()  # an abandoned live connection may store late
        self._lock = threading.Lock()  # host-slot fills may come from the batcher while the reader stores
        with context.active():
            self._res.stream = cuda.Stream(STREAM_NON_BLOCKING)
            self.resizer = Nv12Resizer.get(context.handle)
        weakref.finalize(self, _release, context, self._res)

    @property
    def stream(self) -> Any:
        return self._res.stream

    def _resize_entries(self, width: int, height: int) -> None:
        """(Re)allocate for a new picture size (a stream that changed resolution); the old entries are kept
        until the ring goes (frames may still use them)."""
        self._res.retired += self._res.entries
        self._res.entries = [_Entry(self._cuda, width, height) for _ in range(self.depth)]
        for entry in self._res.entries:
            entry.event.record(self.stream)
        self._next = 0
        self.size = (width, height)

    def store(self, src: Nv12Planes) -> DeviceFrame:
        """Copy a decoded picture (planes in the decoder's memory, ready on this ring's stream) into the next
        entry; returns once the copy is done, so the decoder may overwrite its surface."""
        cuda = self._cuda
        with self._store_lock, self.context.active():
            if self.size != (src.width, src.height) or len(self._res.entries) != self.depth:
                self._resize_entries(src.width, src.height)
            entry = self._res.entries[self._next]
            self._next = (self._next + 1) % self.depth
            entry.event.synchronize()  # the batcher's kernel that read this entry last has run
            dst = entry.planes
            for s_ptr, s_pitch, d_ptr, rows in ((src.y_ptr, src.y_pitch, dst.y_ptr, src.height),
                                                (src.uv_ptr, src.uv_pitch, dst.uv_ptr, src.height // 2)):
                copy = cuda.Memcpy2D()
                copy.set_src_device(s_ptr)
                copy.src_pitch = s_pitch
                copy.set_dst_device(d_ptr)
                copy.dst_pitch = src.width
                copy.width_in_bytes = src.width
                copy.height = rows
                copy(self.stream)
            self.stream.synchronize()
        return DeviceFrame(self, entry)

    def fill_device(self, entry: _Entry, out_ptr: int, out_h: int, out_w: int, stream: Any) -> None:
        with self.context.active():
            self.resizer.launch(entry.planes, out_ptr, out_h, out_w, stream, self.matrix)
            entry.event.record(stream)

    def fill_host(self, entry: _Entry, out: np.ndarray) -> None:
        """Resize on the device into a scratch row, then copy that small row down into ``out``."""
        cuda = self._cuda
        with self._lock, self.context.active():
            if self._scratch_bytes < out.nbytes:
                self._res.scratch = cuda.mem_alloc(out.nbytes)
                self._scratch_bytes = out.nbytes
            scratch = self._res.scratch
            # no event recorded: this waits for its own work below, and re-recording the entry's event here
            # would drop the wait for a device fill of the same entry still queued on a slot's stream
            self.resizer.launch(entry.planes, int(scratch), out.shape[0], out.shape[1], self.stream,
                                self.matrix)
            if out.flags.c_contiguous:
                cuda.memcpy_dtoh_async(out, scratch, self.stream)
                self.stream.synchronize()
            else:
                host = np.empty(out.shape, np.uint8)
                self.stream.synchronize()
                cuda.memcpy_dtoh(host, scratch)
                out[...] = host

    def close(self) -> None:
        """Free the device memory now (tests, tools; no frame of this ring may be used afterwards). A source
        never calls it: frames it decoded may still wait in its buffer."""
        _release(self.context, self._res)
        self.size = (0, 0)
        self._scratch_bytes = 0


class DeviceFrame:
    """A decoded picture in GPU memory, shaped like the host frames it stands for: (H, W, 3) uint8 BGR.

    The batcher asks it to ``fill_row`` of a slot; :meth:`download` gives the full BGR frame on the host
    (checks and tools only: the pipeline never copies whole frames down)."""

    __slots__ = ("_entry", "_ring", "shape")
    dtype = UINT8
    ndim = 3

    def __init__(self, ring: Nv12Ring, entry: _Entry) -> None:
        self._ring = ring
        self._entry = entry
        self.shape = (entry.planes.height, entry.planes.width, 3)

    def fill_row(self, slot: Any, row: int) -> bool:
        """Convert + resize into row ``row`` of ``slot``: into its device input on its stream when it has one
        (True), else into its host row (False)."""
        device_input = getattr(slot, "device_input", None)
        if device_input is None:
            self._ring.fill_host(self._entry, slot.host_input[row])
            return False
        h, w = int(device_input.shape[1]), int(device_input.shape[2])
        self._ring.fill_device(self._entry, int(device_input.gpudata) + row * h * w * 3, h, w, slot.stream)
        return True

    def upload_rows(self, slot: Any, rows: list[int]) -> None:
        """Mark ``slot``'s input as written on the device, uploading the host rows of a mixed batch."""
        with self._ring.context.active():
            for row in rows:
                slot.upload_row(row)
        slot.input_on_device = True

    def download(self) -> np.ndarray:
        """The whole frame as BGR uint8 on the host (same kernel, at full size)."""
        h, w, _ = self.shape
        out = np.empty((h, w, 3), np.uint8)
        self._ring.fill_host(self._entry, out)
        return out

    def __repr__(self) -> str:
        return f"<DeviceFrame {self.shape[1]}x{self.shape[0]} NV12 on the GPU>"
