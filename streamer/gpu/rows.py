"""Decoded frames as model-input rows on the GPU: converted and resized once, where they are decoded.

An NVDEC source converts each decoded picture (NV12) into the model's input row (uint8 H×W×3 BGR) at once,
one kernel launch per batch of pictures, into its :class:`RowStore`; the picture itself is never copied. The
frame it hands on is a :class:`DeviceRow`. The batcher writes a batch's GPU frames through a
:class:`RowBatch`: one kernel launch gathers their rows into the slot's device input, on the slot's stream (a
host slot gets each row copied down). Per batch: one launch queued from Python, not a copy of each whole
picture, nor a copy call per row.

Row reuse: row ``r`` of a store of depth ``D`` holds frames ``r, r + D, r + 2D, ...`` in turn. A writer claims
the row for frame ``i`` only once frame ``i - D`` has let it go — batched (the claim then also waits for that
batch's completion event: its copy has run), dropped by its buffer, or skipped — so a row is never
overwritten while anything may still read it, in whatever order several decoders produce frames.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from streamer.gpu.context import PrimaryContext
from streamer.gpu.nv12 import Nv12Resizer

UINT8 = np.dtype(np.uint8)
ROW_SPARE = 64  # rows beyond a source's buffer and a batch: frames between its decoder and the engine
_CLAIM_POLL_S = 0.25  # how often a waiting writer re-checks its stop condition


class RowLedger:
    """Who may write which row: row ``r`` of ``depth`` goes to frames ``r, r + depth, ...`` in turn, each
    after the one before has let it go (the memory-free bookkeeping of a :class:`RowStore`)."""

    def __init__(self, depth: int) -> None:
        if depth < 2:
            raise ValueError("a row store needs at least 2 rows")
        self.depth = depth
        self._claimable = list(range(depth))  # row r: the frame index that may claim it next
        self._held = [-1] * depth  # row r: the frame index that holds it (claimed, not yet let go)
        self._after: list[Any] = [None] * depth  # row r: event of the batch that copied its last frame
        self._cond = threading.Condition()
        self._waiting = 0
        self.closed = False

    def claim(self, index: int, stopped: Callable[[], bool]) -> bool:
        """Wait until frame ``index`` may be written into its row (its previous frame let go of it), then
        wait for that frame's batch event (its copy has run); False when stopped()/close() came first."""
        return self.claim_many([index], stopped)

    def claim_many(self, indices: list[int], stopped: Callable[[], bool]) -> bool:
        """``claim`` each of ``indices`` in turn, then wait once for each distinct batch event among them
        (frames decoded together were mostly batched together: one wait, not one per row); False when
        stopped()/close() came first (the rows claimed so far stay claimed: let them go, or stop)."""
        events: dict[int, Any] = {}
        with self._cond:
            for index in indices:
                r = index % self.depth
                while self._claimable[r] != index:
                    if self._claimable[r] > index or self._held[r] == index:
                        raise RuntimeError(f"row of frame {index} claimed twice")
                    if stopped() or self.closed:
                        return False
                    self._waiting += 1
                    try:
                        self._cond.wait(_CLAIM_POLL_S)
                    finally:
                        self._waiting -= 1
                self._claimable[r] = -1
                self._held[r] = index
                after, self._after[r] = self._after[r], None
                if after is not None:
                    events[id(after)] = after
        for after in events.values():
            after.synchronize()
        return True

    def release(self, index: int, after: Any = None) -> None:
        """Frame ``index`` lets go of its row (``after``: the event of the batch that copies it, recorded when
        that batch was submitted). A frame that never claimed its row (skipped) releases it as well."""
        r = index % self.depth
        with self._cond:
            if self._held[r] == index:
                self._held[r] = -1
            elif self._claimable[r] != index:
                return  # already let go
            self._claimable[r] = index + self.depth
            self._after[r] = after
            if self._waiting:
                self._cond.notify_all()

    def close(self) -> None:
        """Wake waiting writers: they give up."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()


class RowStore(RowLedger):
    """``depth`` model-input rows of shape (h, w, 3) uint8 in device memory, for one source."""

    def __init__(self, context: PrimaryContext, shape: tuple[int, int], depth: int) -> None:
        import pycuda.driver as cuda

        super().__init__(depth)
        self._cuda = cuda
        self.context = context
        self.shape = (int(shape[0]), int(shape[1]))
        self.row_bytes = self.shape[0] * self.shape[1] * 3
        with context.active():
            self._memory = cuda.mem_alloc(depth * self.row_bytes)
            self.kernels = Nv12Resizer.get(context.handle)
        self.base = int(self._memory)

    def ptr(self, index: int) -> int:
        return self.base + (index % self.depth) * self.row_bytes

    def download(self, index: int, out: np.ndarray) -> None:
        """Copy frame ``index``'s row into the host array ``out`` (h, w, 3) uint8, now."""
        if out.shape != (*self.shape, 3) or out.dtype != UINT8:
            raise ValueError(f"row is {self.shape[0]}x{self.shape[1]}x3 uint8, not {out.shape} {out.dtype}")
        with self.context.active():
            if out.flags.c_contiguous:
                self._cuda.memcpy_dtoh(out, self.ptr(index))
            else:
                host = np.empty(out.shape, UINT8)
                self._cuda.memcpy_dtoh(host, self.ptr(index))
                out[...] = host

    def __del__(self) -> None:  # the memory goes with the last frame that refers to it
        memory = getattr(self, "_memory", None)
        if memory is None:
            return
        with contextlib.suppress(Exception), self.context.active():  # at exit CUDA may be gone already
            memory.free()


class RowBatch:
    """The GPU-decoded frames of one batch being filled (``DeviceRow.row_writer``): their rows go into the
    slot's device input in one kernel launch when the batch closes (:meth:`finish`), rather than a copy call
    each — per frame, every driver call from Python is also a hand-over of the interpreter lock, and several
    decoders, readers and the publisher wait on that lock. After the submit (:meth:`submitted`) each frame
    lets go of its row once the batch's event has passed.

    A host slot (ONNX Runtime, a fast start's bridge) gets each row copied down at once instead; a frame
    whose source keeps no rows of the batch's size is converted from its whole picture
    (``DeviceFrame.fill_row``)."""

    __slots__ = ("_dsts", "_frames", "_picture", "_srcs", "_store", "device_input", "slot")

    def __init__(self, slot: Any) -> None:
        self.slot = slot
        self.device_input = getattr(slot, "device_input", None)
        self._srcs: list[int] = []
        self._dsts: list[int] = []
        self._frames: list[DeviceRow] = []  # told their batch's event at the submit
        self._store: RowStore | None = None  # a store of this batch's rows (its context and kernels)
        self._picture: Any = None  # a picture converted straight into the device input (no rows)

    def add(self, image: DeviceRow, row: int) -> None:
        """Row ``row`` of the slot comes from ``image``."""
        store, device_input = image.store, self.device_input
        if store is None or (device_input is not None and tuple(device_input.shape[1:3]) != store.shape):
            if image.picture is None:
                raise ValueError(f"NVDEC rows are {store.shape if store else '?'}, the batch takes "
                                 f"{tuple(device_input.shape[1:3]) if device_input is not None else '?'}: "
                                 "configure the rows for the model")
            if image.picture.fill_row(self.slot, row):  # no rows of this size: made from the picture
                self._picture = image.picture
            self._frames.append(image)
            return
        if device_input is None:
            store.download(image.index, self.slot.host_input[row])
            image.let_go(None)
            return
        self._srcs.append(store.ptr(image.index))
        self._dsts.append(int(device_input.gpudata) + row * store.row_bytes)
        self._store = store
        self._frames.append(image)

    def finish(self, host_rows: list[int]) -> None:
        """Queue the rows' copies on the slot's stream (one launch per 64 rows) and, in a batch that mixes
        them with frames resized on the host, upload those ``host_rows``; the input is then on the device."""
        store = self._store
        if store is not None:
            with store.context.active():
                store.kernels.copy_rows(self._srcs, self._dsts, store.row_bytes, self.slot.stream)
                for row in host_rows:
                    self.slot.upload_row(row)
            self.slot.input_on_device = True
        elif self._picture is not None:
            self._picture.upload_rows(self.slot, host_rows)

    def submitted(self) -> None:
        """The batch was submitted: each row is free once the batch's event has passed."""
        event = getattr(self.slot, "event", None)
        for frame in self._frames:
            frame.let_go(event)
        self._frames.clear()


class DeviceRow:
    """A decoded frame as its model-input row on the GPU (and, when a viewer may want it, the whole picture).

    ``shape`` is the decoded picture's (H, W, 3), like the host frames it stands for. ``picture``: a
    :class:`~streamer.gpu.frames.DeviceFrame` of the whole picture, kept only when viewers run (``download``),
    or when the source has no row store (its rows are then made from the picture by the batcher). The batcher
    writes a batch's GPU frames through one :meth:`row_writer` (a :class:`RowBatch`)."""

    __slots__ = ("_done", "index", "picture", "shape", "store")
    dtype = UINT8
    ndim = 3

    def __init__(self, store: RowStore | None, index: int, shape: tuple[int, int, int],
                 picture: Any = None) -> None:
        if store is None and picture is None:
            raise ValueError("a DeviceRow needs a row store or a picture")
        self.store = store
        self.index = index
        self.shape = shape
        self.picture = picture
        self._done = False

    def row_writer(self, slot: Any) -> RowBatch:
        """What writes the GPU frames of a batch into ``slot`` (this frame and the batch's others)."""
        return RowBatch(slot)

    def download(self) -> np.ndarray:
        """The whole picture as BGR uint8 on the host (viewers)."""
        if self.picture is None:
            raise RuntimeError("this NVDEC frame kept no picture: viewers must be configured before reading")
        return self.picture.download()  # type: ignore[no-any-return]

    def let_go(self, after: Any) -> None:
        """This frame no longer needs its row (``after``: the event of the batch that copies it)."""
        if not self._done and self.store is not None:
            self._done = True
            self.store.release(self.index, after)

    def __del__(self) -> None:  # dropped by its buffer, or never batched: its row is free at once
        with contextlib.suppress(Exception):
            self.let_go(None)

    def __repr__(self) -> str:
        return f"<DeviceRow {self.shape[1]}x{self.shape[0]} frame {self.index} on the GPU>"
