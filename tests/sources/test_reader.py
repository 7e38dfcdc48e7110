"""SourceReader threads: every frame into the buffer, end/failure/stop close it, realtime pacing."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

from streamer_helpers import write_video

from streamer.errors import SourceError
from streamer.sources import FrameBuffer, Policy, SourceReader, SourceState, open_source
from streamer.sources.base import Frame, FrameSource


def drain(buf: FrameBuffer, timeout: float = 10.0) -> list[Frame]:
    """Take frames until the buffer is finished (closed and empty)."""
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout
    with buf.cond:
        while not buf.finished:
            got = buf.take_locked()
            if got is not None:
                frames.append(got[0])
                continue
            assert time.monotonic() < deadline, "reader did not finish"
            buf.cond.wait(0.1)
    return frames


def test_reader_delivers_every_frame_then_closes(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "c.avi", ["red", "green"] * 20)
    source = open_source(str(clip))
    buf = FrameBuffer(source.name, source.policy, capacity=2)  # small: the reader must block, not drop
    reader = SourceReader(source, buf)
    reader.start()
    frames = drain(buf)
    assert [f.index for f in frames] == list(range(40))
    assert reader.join(5.0)
    assert buf.reason == "end of file" and not buf.failed and buf.dropped == 0


def test_max_frames_stops_the_source(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "c.avi", ["red"] * 20)
    source = open_source(str(clip))
    buf = FrameBuffer(source.name, Policy.BLOCK, capacity=4)
    SourceReader(source, buf, max_frames=7).start()
    assert [f.index for f in drain(buf)] == list(range(7))
    assert buf.reason == "max frames reached"


def test_stop_ends_a_blocked_reader(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "c.avi", ["red"] * 50)
    source = open_source(str(clip))
    buf = FrameBuffer(source.name, Policy.BLOCK, capacity=1)
    reader = SourceReader(source, buf)
    reader.start()
    with buf.cond:
        assert buf.cond.wait_for(lambda: len(buf) == 1, 5.0)
    reader.stop()
    assert reader.join(5.0)
    assert buf.reason == "stopped" and source.state is SourceState.ENDED


class _FailingSource(FrameSource):
    def __init__(self) -> None:
        super().__init__("bad", "bad", is_live=True)
        self.n = 0

    def _open(self) -> None:
        pass

    def _read(self) -> Frame | None:
        import numpy as np

        self.n += 1
        if self.n > 3:
            raise SourceError("lost the camera")
        return Frame(np.zeros((2, 2, 3), np.uint8), self.n - 1, time.time())


def test_source_failure_closes_the_buffer_as_failed() -> None:
    source = _FailingSource()
    states: list[tuple[SourceState, str]] = []
    source.add_listener(lambda s, st, d: states.append((st, d)))
    source.open()
    buf = FrameBuffer("bad", Policy.BLOCK, capacity=10)
    SourceReader(source, buf).start()
    assert len(drain(buf)) == 3
    assert buf.failed and "lost the camera" in buf.reason
    assert states[-1] == (SourceState.FAILED, "lost the camera")


def test_realtime_file_is_paced_at_its_fps(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "rt.avi", ["red"] * 6, fps=20.0)  # 6 frames at 20 fps: >= 0.25 s
    source = open_source(str(clip), realtime=True)
    buf = FrameBuffer(source.name, source.policy, capacity=10)
    started = time.monotonic()
    SourceReader(source, buf).start()
    frames = drain(buf)
    elapsed = time.monotonic() - started
    assert [f.index for f in frames] == list(range(6))
    assert elapsed >= 0.24  # paced, not read as fast as possible (a lower bound, not a speed test)
    gaps = [b.capture_time - a.capture_time for a, b in itertools.pairwise(frames)]
    assert min(gaps) > 0.02


def test_latest_policy_reader_never_blocks(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "c.avi", ["red"] * 30)
    source = open_source(str(clip))
    buf = FrameBuffer(source.name, Policy.LATEST, capacity=1)
    reader = SourceReader(source, buf)
    done = threading.Event()
    threading.Thread(target=lambda: (reader._run(), done.set()), daemon=True).start()
    assert done.wait(10.0)  # nobody takes: a LATEST reader still reaches the end
    got, dropped = buf.take()
    assert (got.index, dropped) == (29, 29)
