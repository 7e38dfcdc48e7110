"""FrameBuffer policies: BLOCK never loses a frame, LATEST keeps the newest and counts drops."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from streamer.sources import Frame, FrameBuffer, Policy


def frame(i: int) -> Frame:
    return Frame(np.zeros((4, 4, 3), np.uint8), i, time.time())


def test_block_buffer_waits_when_full_and_loses_nothing() -> None:
    buf = FrameBuffer("a", Policy.BLOCK, capacity=2)
    assert buf.put(frame(0)) and buf.put(frame(1))
    assert not buf.put(frame(2), timeout=0.05)  # full: the reader would wait
    put_done = threading.Event()
    t = threading.Thread(target=lambda: (buf.put(frame(2)), put_done.set()), daemon=True)
    t.start()
    assert not put_done.wait(0.1)
    got, dropped = buf.take()
    assert (got.index, dropped) == (0, 0)
    assert put_done.wait(5.0)
    assert [buf.take()[0].index for _ in range(2)] == [1, 2]
    assert buf.dropped == 0 and buf.take() is None


def test_latest_buffer_drops_oldest_and_reports_drops_since_last_take() -> None:
    buf = FrameBuffer("cam", Policy.LATEST, capacity=1)
    for i in range(5):
        assert buf.put(frame(i))
    got, dropped = buf.take()
    assert (got.index, dropped) == (4, 4)
    buf.put(frame(5))
    assert buf.take()[1] == 0
    buf.count_drop(3)
    buf.put(frame(9))
    assert buf.take()[1] == 3
    assert buf.dropped == 7


def test_close_wakes_a_blocked_reader_and_keeps_buffered_frames() -> None:
    buf = FrameBuffer("a", Policy.BLOCK, capacity=1)
    buf.put(frame(0))
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(buf.put(frame(1))), daemon=True)
    t.start()
    buf.close("stopped")
    t.join(5.0)
    assert result == [False]
    assert buf.closed and not buf.finished
    assert buf.take()[0].index == 0
    assert buf.finished and buf.reason == "stopped"
    buf.close("end of input")  # the first reason wins
    assert buf.reason == "stopped"


def test_frame_validation() -> None:
    with pytest.raises(ValueError):
        Frame(np.zeros((4, 4), np.uint8), 0, 0.0)
    with pytest.raises(ValueError):
        Frame(np.zeros((4, 4, 3), np.uint8), -1, 0.0)
