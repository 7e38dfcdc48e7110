"""LiveCaptureSource's watchdog and reconnect logic, driven by scripted captures (no network): a read that
never returns, a connection that drops, an open that fails, a stream of a finite recording. The real
servers are in tests/live/."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from streamer.errors import ConfigError, SourceError
from streamer.sources import FrameBuffer, Policy, SourceReader, SourceState
from streamer.sources.factory import make_source, redact_url, split_policy, url_name
from streamer.sources.live import LiveCaptureSource, LiveOptions, busy_captures

FAST = LiveOptions(timeout_s=0.3, backoff_s=0.02, backoff_max_s=0.05)


class FakeCapture:
    """cv2.VideoCapture's interface over a script: ``frames`` images, then ``then``: "eof" (read fails),
    "hang" (read blocks until ``release_hang`` is set), or "more" (frames for ever)."""

    def __init__(self, size: tuple[int, int] = (8, 6), frames: int = 3, then: str = "eof",
                 opened: bool = True, frame_count: int = 0) -> None:
        self.size, self.frames, self.then = size, frames, then
        self.opened, self.frame_count = opened, frame_count
        self.reads = 0
        self.released = threading.Event()
        self.release_hang = threading.Event()

    def isOpened(self) -> bool:
        return self.opened

    def get(self, prop: int) -> float:
        import cv2

        return {cv2.CAP_PROP_FPS: 25.0, cv2.CAP_PROP_FRAME_COUNT: float(self.frame_count),
                cv2.CAP_PROP_FRAME_WIDTH: float(self.size[0]),
                cv2.CAP_PROP_FRAME_HEIGHT: float(self.size[1])}.get(prop, 0.0)

    def read(self) -> tuple[bool, np.ndarray | None]:
        self.reads += 1
        if self.reads <= self.frames or self.then == "more":
            return True, np.full((self.size[1], self.size[0], 3), self.reads, np.uint8)
        if self.then == "hang":
            self.release_hang.wait(30)
        return False, None

    def release(self) -> None:
        self.released.set()


class ScriptedSource(LiveCaptureSource):
    kind = "stream"

    def __init__(self, captures: list[FakeCapture], options: LiveOptions = FAST) -> None:
        super().__init__("cam", "stream fake://cam", options)
        self.captures = list(captures)
        self.opened: list[FakeCapture] = []
        self.states: list[tuple[SourceState, str]] = []
        self.add_listener(lambda s, state, detail: self.states.append((state, detail)))

    def _capture(self) -> FakeCapture:  # type: ignore[override]
        cap = self.captures.pop(0) if len(self.captures) > 1 else self.captures[0]
        self.opened.append(cap)
        return cap

    def _open_error(self, reason: str) -> SourceError:
        return SourceError(f"cannot open {self.spec}: {reason}")


def read_n(source: LiveCaptureSource, n: int) -> list:
    return [source.read() for _ in range(n)]


def states_of(source: ScriptedSource) -> list[str]:
    return [s.value for s, _ in source.states]


def test_a_dropped_connection_is_reopened_and_indices_keep_increasing() -> None:
    src = ScriptedSource([FakeCapture((8, 6), 3), FakeCapture((16, 12), 3, "more")])
    src.open()
    frames = read_n(src, 6)
    assert [f.index for f in frames] == list(range(6))
    assert [f.image.shape for f in frames] == [(6, 8, 3)] * 3 + [(12, 16, 3)] * 3  # the new size, as is
    assert states_of(src) == ["connecting", "running", "down", "reconnecting", "running"]
    assert src.states[2][1] == "the stream ended or timed out"
    assert src.reconnects == 1 and src.losses == 1 and src.size == (16, 12)
    assert src.opened[0].released.wait(5)
    src.stop()
    src.close()


def test_a_read_that_never_returns_is_abandoned_by_the_watchdog() -> None:
    stuck = FakeCapture(frames=2, then="hang")
    src = ScriptedSource([stuck, FakeCapture(frames=5, then="more")])
    src.open()
    started = time.monotonic()
    frames = read_n(src, 4)
    took = time.monotonic() - started
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert ("down" in states_of(src)) and src.states[2][1] == "no frame for 0.3 s"
    assert 0.25 < took < 5.0
    assert not stuck.released.is_set()  # its thread is still inside read(): left behind, not waited for
    stuck.release_hang.set()
    assert stuck.released.wait(5)  # and it releases the capture once the read returns
    src.stop()
    src.close()


def test_failed_attempts_back_off_then_give_up_with_an_error() -> None:
    options = LiveOptions(timeout_s=0.3, reconnect_attempts=3, backoff_s=0.02, backoff_max_s=0.05)
    src = ScriptedSource([FakeCapture(frames=1), FakeCapture(opened=False)], options)
    src.open()
    assert src.read() is not None
    with pytest.raises(SourceError, match=r"gave up after 3 reconnect attempts \(last: did not open\)"):
        src.read()
    assert src.state is SourceState.FAILED
    assert states_of(src)[2:] == ["down"] + ["reconnecting", "down"] * 3 + ["failed"]
    assert [d for s, d in src.states if s is SourceState.RECONNECTING] == [
        "attempt 1/3 in 0.0 s", "attempt 2/3 in 0.0 s", "attempt 3/3 in 0.1 s"]


def test_backoff_doubles_up_to_its_cap() -> None:
    o = LiveOptions(backoff_s=0.5, backoff_max_s=10.0)
    assert [o.delay(a) for a in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert o.delay(10_000) == 10.0
    for bad in ({"timeout_s": 0}, {"backoff_s": -1}, {"backoff_max_s": float("nan")},
                {"reconnect_attempts": -1}):
        with pytest.raises(ConfigError):
            LiveOptions(**bad)


def test_stop_ends_a_reconnect_wait_at_once() -> None:
    options = LiveOptions(timeout_s=0.3, backoff_s=30.0, backoff_max_s=30.0)
    src = ScriptedSource([FakeCapture(frames=1), FakeCapture(opened=False)], options)
    src.open()
    src.read()
    result: list = []
    reader = threading.Thread(target=lambda: result.append(src.read()), daemon=True)
    reader.start()
    deadline = time.monotonic() + 5
    while "reconnecting" not in states_of(src):
        assert time.monotonic() < deadline
        reader.join(0.01)
    src.stop()
    reader.join(2.0)
    assert not reader.is_alive() and result == [None] and src.state is SourceState.ENDED


def test_a_stream_of_a_finite_recording_ends_at_its_announced_length() -> None:
    src = ScriptedSource([FakeCapture(frames=4, frame_count=4)])
    src.open()
    assert len(read_n(src, 4)) == 4
    assert src.read() is None
    assert src.state is SourceState.ENDED and src.detail == "end of stream (4 frames)"
    assert src.reconnects == 0


def test_an_open_that_never_returns_is_a_timely_error() -> None:
    class HangingOpen(ScriptedSource):
        def _capture(self) -> FakeCapture:  # type: ignore[override]
            hang.wait(30)
            return FakeCapture()

    hang = threading.Event()
    src = HangingOpen([], LiveOptions(timeout_s=0.2))
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"did not open within 0\.2 s"):
        src.open()
    assert time.monotonic() - started < 3.0
    hang.set()
    assert busy_captures(5.0) == 0


def test_a_cancelled_open_returns_at_once() -> None:
    class HangingOpen(ScriptedSource):
        def _capture(self) -> FakeCapture:  # type: ignore[override]
            hang.wait(30)
            return FakeCapture()

    hang = threading.Event()
    src = HangingOpen([], LiveOptions(timeout_s=30))
    src.cancel = threading.Event()
    threading.Timer(0.1, src.cancel.set).start()
    started = time.monotonic()
    with pytest.raises(SourceError, match="stopped while opening"):
        src.open()
    assert time.monotonic() - started < 2.0
    hang.set()


def test_the_reader_marks_the_buffer_down_while_the_source_reconnects() -> None:
    gate = threading.Event()

    class Gated(FakeCapture):
        def isOpened(self) -> bool:
            gate.wait(10)
            return True

    src = ScriptedSource([FakeCapture(frames=2), Gated(frames=2, then="more")],
                         LiveOptions(timeout_s=5, backoff_s=0.01, backoff_max_s=0.01))
    src.open()
    buf = FrameBuffer(src.name, Policy.LATEST, 1)
    reader = SourceReader(src, buf)
    reader.start()
    wait_for(lambda: buf.down, "buffer down")
    gate.set()
    wait_for(lambda: not buf.down and src.state is SourceState.RUNNING, "buffer up again")
    reader.stop()
    assert reader.join(5)


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not cond():
        assert time.monotonic() < deadline, what
        pause.wait(0.005)


# -- specs: policy suffix, redaction ------------------------------------------------------------------------
def test_policy_suffix_and_global_policy(tmp_path) -> None:
    from streamer_helpers import write_video

    clip = write_video(tmp_path / "c.avi", ["red"])
    assert split_policy("rtsp://cam/live#policy=drop-oldest") == ("rtsp://cam/live", Policy.DROP_OLDEST)
    assert split_policy("clip#1.mp4") == ("clip#1.mp4", None)
    assert make_source(str(clip)).policy is Policy.BLOCK
    assert make_source(str(clip), policy=Policy.LATEST).policy is Policy.LATEST
    assert make_source(f"{clip}#policy=drop-oldest", policy=Policy.LATEST).policy is Policy.DROP_OLDEST
    assert make_source("rtsp://u:p@cam/x#policy=block").policy is Policy.BLOCK
    assert make_source("webcam3").policy is Policy.LATEST
    with pytest.raises(SourceError, match="unknown backpressure policy 'fast'"):
        make_source(f"{clip}#policy=fast")


@pytest.mark.parametrize(("url", "redacted", "name"), [
    ("rtsp://admin:pw@10.0.0.7:554/user=admin_password=tlJw_channel=1_stream=0.sdp",
     "rtsp://***@10.0.0.7:554/user=***_password=***_channel=1_stream=0.sdp",
     "10-0-0-7-user-_password-_channel-1_stream-0-sdp"),
    ("http://cam/video.cgi?user=bob&pwd=x&res=720", "http://cam/video.cgi?user=***&pwd=***&res=720",
     "cam-video-cgi"),
    ("https://cam/stream?access_token=abc", "https://cam/stream?access_token=***", "cam-stream"),
    ("rtsp://:onlypass@cam/live", "rtsp://***@cam/live", "cam-live"),
])
def test_secrets_in_paths_and_queries_are_redacted(url: str, redacted: str, name: str) -> None:
    assert redact_url(url) == redacted
    assert url_name(url) == name
    source = make_source(url)
    assert source.spec == redacted and source.name == name
