"""The frame tap (streamer.view.tap): what the batcher hands the viewers, and what it costs unwatched."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from streamer.backends.ort import load
from streamer.batching import Batcher, SourceEnd
from streamer.executors.cpu import CpuExecutor
from streamer.sources import FrameBuffer, Policy
from streamer.sources.base import Frame
from streamer.view.tap import FrameTap, picture_of


class FakeDeviceFrame:
    """Stands for a GPU-resident frame: its picture is made by download(), which the test counts."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.downloads = 0

    def download(self) -> np.ndarray:
        self.downloads += 1
        return self.image.copy()


def test_a_host_frame_is_its_own_picture_and_a_device_frame_is_downloaded_only_when_taken() -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    assert picture_of(image)() is image  # a reference: no copy
    tap = FrameTap(preview_interval_s=10.0)
    device = FakeDeviceFrame(image)
    assert tap.take("cam", picture_of(device)) is None  # nobody watches, nothing annotated
    assert device.downloads == 0
    tap.annotated = frozenset({"cam"})
    taken = tap.take("cam", picture_of(device))
    assert taken is not None and device.downloads == 1
    assert tap.take("other", picture_of(device)) is None and device.downloads == 1


def test_preview_frames_are_taken_only_while_watched_and_rate_limited_per_source() -> None:
    image = np.zeros((2, 2, 3), np.uint8)
    tap = FrameTap(preview_interval_s=3600.0)  # one frame per source per hour
    assert tap.take("a", picture_of(image)) is None
    tap.watch()
    assert tap.take("a", picture_of(image)) is image
    assert tap.take("a", picture_of(image)) is None  # too soon for a
    assert tap.take("b", picture_of(image)) is image  # b has its own interval
    tap.unwatch()
    tap.unwatch()  # one too many: stays at 0
    assert tap.watchers == 0
    tap.annotate_all = True
    assert all(tap.take("a", picture_of(image)) is image for _ in range(5))  # annotated: every frame


def test_the_batcher_puts_taken_pictures_on_the_tags_and_only_those(color_model: Path) -> None:
    """Real buffers, a real CpuExecutor running ONNX Runtime."""
    executor = CpuExecutor(load(color_model, max_batch=4, threads=1), max_batch=4, num_slots=2)
    cond = threading.Condition()
    annotated = FrameBuffer("cam", Policy.BLOCK, 8, cond)
    plain = FrameBuffer("other", Policy.BLOCK, 8, cond)
    images = [np.full((6, 6, 3), i, np.uint8) for i in range(3)]
    for i, image in enumerate(images):
        annotated.put(Frame(image, i, 0.0))
        plain.put(Frame(image.copy(), i, 0.0))
    annotated.close()
    plain.close()
    tap = FrameTap()
    tap.annotated = frozenset({"cam"})
    batcher = Batcher([annotated, plain], executor, batch_size=4, timeout_s=0.01, tap=tap)
    batcher.start()
    tags = []
    while (event := batcher.outbox.get(timeout=30)) is not None:
        if not isinstance(event, SourceEnd):
            done = executor.collect(timeout=30)
            assert done is event
            tags += list(done.tags)
            executor.release(done)
    assert batcher.join(10)
    by_source = {(t.source, t.frame_index): t.picture for t in tags}
    assert len(by_source) == 6
    for i, image in enumerate(images):
        assert by_source[("cam", i)] is image  # the decoded frame itself, no copy
        assert by_source[("other", i)] is None
    executor.close()
