"""The batcher with real buffers, a real CpuExecutor and ONNX Runtime: size, deadline, round-robin, ends."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from streamer_helpers import COLORS

from streamer.backends.ort import load
from streamer.batching import Batcher, FrameTag, SealedError, SourceEnd
from streamer.executors.cpu import CpuExecutor
from streamer.metrics import Timings
from streamer.preprocess import resize_into
from streamer.sources import Frame, FrameBuffer, Policy

TIMEOUT = 10.0


def frame(i: int, color: str = "red", size: tuple[int, int] = (48, 64)) -> Frame:
    img = np.empty((*size, 3), np.uint8)
    img[:] = COLORS[color]
    img[0, 0] = (i % 256, 7, 9)  # makes every frame distinct
    return Frame(img, i, time.time())


@pytest.fixture
def executor(color_model: Path):
    ex = CpuExecutor(load(color_model, max_batch=8, threads=1), max_batch=8, num_slots=2)
    yield ex
    ex.close()


def next_event(outbox: queue.Queue, timeout: float = TIMEOUT):
    return outbox.get(timeout=timeout)


def collect(executor, slot):
    done = executor.collect(timeout=TIMEOUT)
    assert done is slot
    n = done.count
    rows = (list(done.tags), done.host_output[:n].argmax(1).tolist(), done.host_input[:n].copy())
    executor.release(done)
    return rows


def test_batch_closes_on_deadline_with_a_partial_batch(executor) -> None:
    cond = threading.Condition()
    buf = FrameBuffer("cam", Policy.BLOCK, 16, cond)
    batcher = Batcher([buf], executor, batch_size=8, timeout_s=0.02)
    for i in range(3):
        buf.put(frame(i))
    batcher.start()
    slot = next_event(batcher.outbox)  # 3 frames, the source still open: only the deadline can close it
    assert slot.count == 3
    tags, labels, _ = collect(executor, slot)
    assert [t.frame_index for t in tags] == [0, 1, 2] and labels == [2, 2, 2]
    buf.put(frame(3, "green"))
    slot = next_event(batcher.outbox)
    assert slot.count == 1 and collect(executor, slot)[1] == [1]
    buf.close("end of input")
    assert next_event(batcher.outbox) == SourceEnd("cam", 4, "end of input", False)
    assert next_event(batcher.outbox) is None
    assert batcher.join(TIMEOUT)


def test_batches_close_on_size_and_frames_are_resized_into_the_slot(executor) -> None:
    cond = threading.Condition()
    buf = FrameBuffer("file", Policy.BLOCK, 32, cond)
    frames = [frame(i, ("blue", "green", "red")[i % 3]) for i in range(20)]
    for f in frames:
        buf.put(f)
    buf.close("end of input")
    batcher = Batcher([buf], executor, batch_size=8, timeout_s=5.0)  # a long deadline: size must close
    batcher.start()
    sizes, indices, labels = [], [], []
    while True:
        event = next_event(batcher.outbox)
        if event is None:
            break
        if isinstance(event, SourceEnd):
            assert event.frames == 20
            continue
        tags, lab, pixels = collect(executor, event)
        sizes.append(len(tags))
        indices += [t.frame_index for t in tags]
        labels += lab
        for tag, row in zip(tags, pixels, strict=True):
            expected = np.empty((32, 32, 3), np.uint8)
            resize_into(frames[tag.frame_index].image, expected)
            np.testing.assert_array_equal(row, expected)
    assert sizes == [8, 8, 4]
    assert indices == list(range(20))
    assert labels == [i % 3 for i in range(20)]
    assert batcher.batches == 3 and batcher.frames == 20


def test_sources_share_batches_round_robin_and_keep_their_ids(executor) -> None:
    cond = threading.Condition()
    a = FrameBuffer("a", Policy.BLOCK, 8, cond)
    b = FrameBuffer("b", Policy.BLOCK, 8, cond)
    for i in range(4):
        a.put(frame(i, "red"))
        b.put(frame(i, "blue"))
    batcher = Batcher([a, b], executor, batch_size=8, timeout_s=1.0)
    batcher.start()
    slot = next_event(batcher.outbox)
    tags, labels, _ = collect(executor, slot)
    assert [t.source for t in tags] == ["a", "b"] * 4
    assert [t.frame_index for t in tags] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert labels == [2, 0] * 4
    a.close()
    b.close()
    ends = {next_event(batcher.outbox).source, next_event(batcher.outbox).source}
    assert ends == {"a", "b"}
    assert next_event(batcher.outbox) is None


def test_live_sources_do_not_wait_out_the_deadline(executor) -> None:
    cond = threading.Condition()
    cams = [FrameBuffer(f"cam{i}", Policy.LATEST, 1, cond) for i in range(2)]
    batcher = Batcher(cams, executor, batch_size=8, timeout_s=60.0)  # a deadline no test would wait for
    batcher.start()
    cams[0].put(frame(0))
    cams[1].put(frame(0, "blue"))
    slot = next_event(batcher.outbox)  # both cameras are in: the batch closes without the deadline
    assert sorted(t.source for t in collect(executor, slot)[0]) == ["cam0", "cam1"]
    batcher.abort()


def test_drops_of_a_live_source_are_tagged(executor) -> None:
    cond = threading.Condition()
    buf = FrameBuffer("cam", Policy.LATEST, 1, cond)
    for i in range(5):
        buf.put(frame(i))
    batcher = Batcher([buf], executor, batch_size=8, timeout_s=0.01)
    batcher.start()
    tags, _, _ = collect(executor, next_event(batcher.outbox))
    assert tags == [FrameTag("cam", 4, tags[0].capture_time, tags[0].capture_mono, 4)]
    buf.close("stopped")
    end = next_event(batcher.outbox)
    assert (end.frames, end.reason) == (1, "stopped")


def test_an_ended_source_is_reported_while_another_stays_idle(executor) -> None:
    cond = threading.Condition()
    done = FrameBuffer("done", Policy.BLOCK, 4, cond)
    idle = FrameBuffer("idle", Policy.LATEST, 1, cond)
    done.put(frame(0))
    done.close("end of input", failed=False)
    batcher = Batcher([done, idle], executor, batch_size=8, timeout_s=0.01)
    batcher.start()
    slot = next_event(batcher.outbox)
    collect(executor, slot)
    assert next_event(batcher.outbox) == SourceEnd("done", 1, "end of input", False)
    batcher.abort()
    assert next_event(batcher.outbox) is None
    assert batcher.join(TIMEOUT)


def test_buffers_must_share_one_condition(executor) -> None:
    with pytest.raises(ValueError, match="one condition"):
        Batcher([FrameBuffer("a", Policy.BLOCK, 1), FrameBuffer("b", Policy.BLOCK, 1)], executor, 4)


# -- buffers added while running (the control plane's POST /sources) ----------------------------------------
def test_a_buffer_added_while_running_is_batched_and_leaves_once_reported(executor) -> None:
    cond = threading.Condition()
    first = FrameBuffer("first", Policy.BLOCK, 4, cond)
    batcher = Batcher([first], executor, batch_size=8, timeout_s=0.01)
    batcher.start()
    added = FrameBuffer("added", Policy.BLOCK, 4, cond)
    batcher.add(added)
    added.put(frame(0, "green"))
    added.close("removed")
    tags, labels, _ = collect(executor, next_event(batcher.outbox))
    assert [(t.source, t.frame_index) for t in tags] == [("added", 0)] and labels == [1]
    assert next_event(batcher.outbox) == SourceEnd("added", 1, "removed", False)
    assert batcher.buffers == [first]  # reported: out of the round-robin
    first.close("end of input")
    assert next_event(batcher.outbox) == SourceEnd("first", 0, "end of input", False)
    assert next_event(batcher.outbox) is None  # not keep_open: its last buffer ended, so it ends
    assert batcher.join(TIMEOUT)


def test_keep_open_waits_without_buffers_until_sealed(executor) -> None:
    cond = threading.Condition()
    batcher = Batcher([], executor, batch_size=8, timeout_s=0.01, cond=cond, keep_open=True)
    batcher.start()
    buf = FrameBuffer("late", Policy.BLOCK, 4, cond)
    batcher.add(buf)  # nothing batched before: an empty keep_open batcher just waits
    buf.put(frame(3))
    buf.close("end of input")
    slot = next_event(batcher.outbox)
    assert [t.frame_index for t in collect(executor, slot)[0]] == [3]
    assert next_event(batcher.outbox) == SourceEnd("late", 1, "end of input", False)
    with pytest.raises(queue.Empty):
        batcher.outbox.get(timeout=0.3)  # no source left, yet still running: more may be added
    assert batcher.alive
    batcher.seal()
    assert next_event(batcher.outbox) is None and batcher.join(TIMEOUT)
    with pytest.raises(SealedError):
        batcher.add(FrameBuffer("too-late", Policy.BLOCK, 4, cond))


def test_adding_to_a_run_whose_sources_all_ended_is_refused(executor) -> None:
    cond = threading.Condition()
    done = FrameBuffer("done", Policy.BLOCK, 4, cond)
    done.close("end of input")
    batcher = Batcher([done], executor, batch_size=8)  # not started: the decision is add()'s own
    with pytest.raises(SealedError, match="the run is ending"):
        batcher.add(FrameBuffer("new", Policy.BLOCK, 4, cond))
    with pytest.raises(ValueError, match="one condition"):
        Batcher([], executor, 8, cond=cond, keep_open=True).add(FrameBuffer("x", Policy.BLOCK, 1))
    with pytest.raises(ValueError, match="no buffers"):
        Batcher([], executor, 8)


def test_resize_and_queue_times_are_added_once_per_batch(executor) -> None:
    cond = threading.Condition()
    buf = FrameBuffer("cam", Policy.BLOCK, 16, cond)
    timings = Timings()
    batcher = Batcher([buf], executor, batch_size=8, timeout_s=0.01, timings=timings)
    for i in range(5):
        buf.put(frame(i))
    buf.close("end of input")
    batcher.start()
    collect(executor, next_event(batcher.outbox))
    assert next_event(batcher.outbox).source == "cam" and next_event(batcher.outbox) is None
    resize, queued = timings.stages["resize"].snapshot(), timings.stages["queue"].snapshot()
    assert (resize.count, queued.count) == (5, 5)
    assert resize.sum > 0 and abs(resize.sum - batcher.resize_s) < 1e-9 and queued.sum > 0
