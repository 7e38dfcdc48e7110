"""The batcher with frames decoded on the GPU (NVDEC): the first such frame of a batch gives the slot's row
writer, which takes every GPU frame of the batch (``add``), writes them once the batch is complete together
with the host rows of a mixed batch (``finish``), and is told when the slot was submitted (``submitted``).
The GPU frame here is a stand-in recording the calls (the real writer and its kernel are tested on the GPU
host: tests/gpu, tests/sources/test_nvdec_gpu.py)."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from streamer_helpers import COLORS

from streamer.backends.ort import load
from streamer.batching import Batcher
from streamer.executors.cpu import CpuExecutor
from streamer.sources import Frame, FrameBuffer, Policy

TIMEOUT = 10.0


class WriterStandIn:
    """Writes each frame's colour into its host row (the stand-in's "device") when the batch is finished."""

    def __init__(self, slot: Any, calls: list[tuple[str, Any]]) -> None:
        self.slot = slot
        self.calls = calls
        self.rows: list[tuple[int, str]] = []

    def add(self, image: GpuFrameStandIn, row: int) -> None:
        self.calls.append(("add", row))
        self.rows.append((row, image.color))

    def finish(self, host_rows: list[int]) -> None:
        self.calls.append(("finish", list(host_rows)))
        for row, color in self.rows:
            self.slot.host_input[row] = COLORS[color]

    def submitted(self) -> None:
        self.calls.append(("submitted", self.slot.seq))


class GpuFrameStandIn:
    """Shaped like a DeviceRow (what Frame checks); its writer records the calls."""

    dtype = np.dtype(np.uint8)
    ndim = 3

    def __init__(self, color: str, calls: list[tuple[str, Any]]) -> None:
        self.shape = (1080, 1920, 3)
        self.color = color
        self.calls = calls

    def row_writer(self, slot: Any) -> WriterStandIn:
        self.calls.append(("row_writer", slot.index))
        return WriterStandIn(slot, self.calls)


@pytest.fixture
def executor(color_model: Path):
    ex = CpuExecutor(load(color_model, max_batch=8, threads=1), max_batch=8, num_slots=2)
    yield ex
    ex.close()


def host_frame(i: int, color: str) -> Frame:
    img = np.empty((48, 64, 3), np.uint8)
    img[:] = COLORS[color]
    return Frame(img, i, time.time())


def test_a_mixed_batch_writes_its_gpu_rows_once_complete_and_tells_them_of_the_submit(executor) -> None:
    calls: list[tuple[str, Any]] = []
    cond = threading.Condition()
    buf = FrameBuffer("mixed", Policy.BLOCK, 16, cond)
    colors = ["red", "green", "blue", "red", "green", "blue"]
    for i, color in enumerate(colors):
        image = GpuFrameStandIn(color, calls) if i % 2 else host_frame(i, color).image
        buf.put(Frame(image, i, time.time()))
    buf.close("end of input")
    outbox: queue.Queue = queue.Queue()
    batcher = Batcher([buf], executor, batch_size=8, timeout_s=1.0, outbox=outbox)
    batcher.start()
    slot = outbox.get(timeout=TIMEOUT)
    assert slot.count == 6
    # one writer for the batch; the GPU rows (1, 3, 5) added in order; written once the batch is complete,
    # with the host rows (0, 2, 4) handed over to go up with them; told of the submit once, after it
    assert calls == [("row_writer", slot.index), ("add", 1), ("add", 3), ("add", 5), ("finish", [0, 2, 4]),
                     ("submitted", slot.seq)]
    done = executor.collect(timeout=TIMEOUT)
    labels = done.host_output[:6].argmax(1).tolist()
    executor.release(done)
    assert labels == [{"red": 2, "green": 1, "blue": 0}[c] for c in colors]
    assert batcher.join(TIMEOUT)


def test_a_batch_of_host_frames_makes_no_row_writer(executor) -> None:
    cond = threading.Condition()
    buf = FrameBuffer("host", Policy.BLOCK, 16, cond)
    for i, color in enumerate(["red", "blue"]):
        buf.put(host_frame(i, color))
    buf.close("end of input")
    outbox: queue.Queue = queue.Queue()
    batcher = Batcher([buf], executor, batch_size=8, timeout_s=1.0, outbox=outbox)
    batcher.start()
    slot = outbox.get(timeout=TIMEOUT)
    assert slot.count == 2 and batcher._writer is None
    done = executor.collect(timeout=TIMEOUT)
    assert done.host_output[:2].argmax(1).tolist() == [2, 0]
    executor.release(done)
    assert batcher.join(TIMEOUT)
