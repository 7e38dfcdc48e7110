"""The batcher with frames decoded on the GPU (NVDEC): such a frame fills its row itself (``fill_row``), a
batch mixing them with host frames has its host rows uploaded (``upload_rows``), and host slots (a CPU
executor) get the row written on the host. The GPU frame here is a stand-in recording the calls (the real one
and the kernel behind it are tested on the GPU host: tests/gpu, tests/sources/test_nvdec_gpu.py)."""

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


class GpuFrameStandIn:
    """Shaped like a DeviceFrame (what Frame checks); writes ``color`` where asked, and says where."""

    dtype = np.dtype(np.uint8)
    ndim = 3

    def __init__(self, color: str, on_device: bool, calls: list[tuple[str, Any]]) -> None:
        self.shape = (1080, 1920, 3)
        self.color = color
        self.on_device = on_device
        self.calls = calls

    def fill_row(self, slot: Any, row: int) -> bool:
        self.calls.append(("fill_row", row))
        slot.host_input[row] = COLORS[self.color]  # the stand-in's "device": the same host row
        return self.on_device

    def upload_rows(self, slot: Any, rows: list[int]) -> None:
        self.calls.append(("upload_rows", list(rows)))
        slot.input_on_device = True

    def submitted(self, slot: Any) -> None:
        self.calls.append(("submitted", slot.seq))


@pytest.fixture
def executor(color_model: Path):
    ex = CpuExecutor(load(color_model, max_batch=8, threads=1), max_batch=8, num_slots=2)
    yield ex
    ex.close()


def host_frame(i: int, color: str) -> Frame:
    img = np.empty((48, 64, 3), np.uint8)
    img[:] = COLORS[color]
    return Frame(img, i, time.time())


@pytest.mark.parametrize("on_device", [True, False])
def test_a_mixed_batch_fills_gpu_rows_on_the_gpu_and_uploads_the_host_rows(executor, on_device: bool) -> None:
    calls: list[tuple[str, Any]] = []
    cond = threading.Condition()
    buf = FrameBuffer("mixed", Policy.BLOCK, 16, cond)
    colors = ["red", "green", "blue", "red", "green", "blue"]
    for i, color in enumerate(colors):
        image = GpuFrameStandIn(color, on_device, calls) if i % 2 else host_frame(i, color).image
        buf.put(Frame(image, i, time.time()))
    buf.close("end of input")
    outbox: queue.Queue = queue.Queue()
    batcher = Batcher([buf], executor, batch_size=8, timeout_s=1.0, outbox=outbox)
    batcher.start()
    slot = outbox.get(timeout=TIMEOUT)
    assert slot.count == 6
    assert [c for c in calls if c[0] == "fill_row"] == [("fill_row", 1), ("fill_row", 3), ("fill_row", 5)]
    uploads = [c for c in calls if c[0] == "upload_rows"]
    # rows written on the device: the host rows (0, 2, 4) go up with them, once, after the batch is filled
    assert uploads == ([("upload_rows", [0, 2, 4])] if on_device else [])
    # a device row is told its batch was submitted (its row may be reused after the batch's event), once
    assert [c for c in calls if c[0] == "submitted"] == ([("submitted", slot.seq)] * 3 if on_device else [])
    done = executor.collect(timeout=TIMEOUT)
    labels = done.host_output[:6].argmax(1).tolist()
    executor.release(done)
    assert labels == [{"red": 2, "green": 1, "blue": 0}[c] for c in colors]
    assert batcher.join(TIMEOUT)
