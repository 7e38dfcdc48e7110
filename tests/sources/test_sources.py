"""Sources on real files: generated clips, image folders, a vtest.avi stand-in; error messages; names; URLs.
(Damaged and miscounted video files: test_video.py.)"""

from __future__ import annotations

import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
from streamer_helpers import COLORS, color_sequence, write_video

from streamer.errors import SourceError
from streamer.sources import SourceState, make_source, open_source, redact_url, unique_names
from streamer.sources.base import Policy
from streamer.sources.factory import url_name
from streamer.sources.images import ImageFilesSource
from streamer.sources.live import CameraSource, StreamSource
from streamer.sources.video import VideoFileSource


def read_all(source) -> list:
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    return frames


def test_video_file_yields_every_frame_in_order_as_bgr(tmp_path: Path) -> None:
    colors = color_sequence(30)
    clip = write_video(tmp_path / "clip.avi", colors, size=(64, 48), fps=12)
    states: list[SourceState] = []
    source = make_source(str(clip))
    source.add_listener(lambda s, state, detail: states.append(state))
    source.open()
    assert (source.name, source.is_live, source.policy) == ("clip", False, Policy.BLOCK)
    assert source.fps == pytest.approx(12)
    assert source.total_frames == 30
    frames = read_all(source)
    source.close()
    assert [f.index for f in frames] == list(range(30))
    for frame, color in zip(frames, colors, strict=True):
        assert frame.image.shape == (48, 64, 3) and frame.image.dtype == np.uint8
        assert np.abs(frame.image[5:20, 20:60].mean(axis=(0, 1)) - COLORS[color]).max() < 30  # BGR order
    times = [f.capture_time for f in frames]
    assert times == sorted(times)
    assert states == [SourceState.CONNECTING, SourceState.RUNNING, SourceState.ENDED]
    assert source.read() is None


def test_sample_video_reads_all_795_frames(vtest: Path) -> None:
    source = open_source(str(vtest))
    assert (source.name, source.total_frames) == ("vtest", 795)
    n = sum(1 for _ in iter(source.read, None))
    assert n == 795 and source.skipped == 0
    assert source.state is SourceState.ENDED and source.detail == "end of file"


def test_missing_file_is_a_one_line_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"no such file or directory: .*nope\.mp4") as err:
        make_source(str(tmp_path / "nope.mp4"))
    assert "\n" not in str(err.value)


def test_file_that_is_not_a_video_fails_to_open(tmp_path: Path) -> None:
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video\n" * 100)
    source = make_source(str(bad))
    with pytest.raises(SourceError, match=r"cannot decode video file .*notes\.mp4"):
        source.open()
    assert source.state is SourceState.FAILED


def test_camera_that_does_not_exist_fails_to_open() -> None:
    source = make_source("webcam99")
    assert isinstance(source, CameraSource) and source.name == "webcam99" and source.is_live
    assert source.policy is Policy.LATEST
    with pytest.raises(SourceError, match=r"camera webcam99 \(/dev/video99\) did not open"):
        source.open()


def test_images_directory_in_natural_order_skipping_unreadable(tmp_path: Path) -> None:
    folder = tmp_path / "shots"
    folder.mkdir()
    for i, color in ((10, "red"), (2, "green"), (1, "blue")):
        img = np.zeros((20, 30, 3), np.uint8)
        img[:] = COLORS[color]
        cv2.imwrite(str(folder / f"img{i}.png"), img)
    cv2.imwrite(str(folder / "img5.png"), np.full((20, 30), 200, np.uint8))  # grey → BGR
    (folder / "img7.png").write_bytes(b"broken")
    (folder / "readme.txt").write_text("ignored")
    source = open_source(str(folder))
    assert isinstance(source, ImageFilesSource) and source.name == "shots"
    assert source.total_frames == 5
    frames = read_all(source)
    assert [f.index for f in frames] == [0, 1, 2, 4]  # img1, img2, img5, (img7 unreadable), img10
    assert [f.file for f in frames] == ["img1.png", "img2.png", "img5.png", "img10.png"]  # the gap, explained
    assert frames[2].image.shape == (20, 30, 3) and frames[2].image[0, 0].tolist() == [200, 200, 200]
    assert frames[3].image[0, 0].tolist() == list(COLORS["red"])
    assert source.skipped == 1


def test_image_glob_and_empty_folder(tmp_path: Path) -> None:
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"f{i}.jpg"), np.zeros((8, 8, 3), np.uint8))
    source = open_source(str(tmp_path / "f*.jpg"))
    assert [f.file for f in read_all(source)] == ["f0.jpg", "f1.jpg", "f2.jpg"]
    for cam in ("a", "b"):
        (tmp_path / "shots" / cam).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "shots" / cam / "x1.png"), np.zeros((8, 8, 3), np.uint8))
    source = open_source(str(tmp_path / "shots" / "*" / "x*.png"))  # names relative to the glob's folder
    assert [f.file for f in read_all(source)] == ["a/x1.png", "b/x1.png"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no images found"):
        open_source(str(empty))


def test_url_credentials_are_redacted_everywhere() -> None:
    url = "rtsp://admin:s3cret@cam1.local:554/live/main?token=abc&channel=2"
    redacted = redact_url(url)
    assert redacted == "rtsp://***@cam1.local:554/live/main?token=***&channel=2"
    assert url_name(url) == "cam1-local-live-main"
    source = make_source(url)
    assert isinstance(source, StreamSource) and source.is_live
    assert "s3cret" not in source.spec and "s3cret" not in source.name and "abc" not in source.spec


def test_unreachable_stream_fails_fast_without_leaking_the_password() -> None:
    with socket.socket() as s:  # a port with nobody listening: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = make_source(f"rtsp://user:hunter2@127.0.0.1:{port}/stream")
    with pytest.raises(SourceError) as err:
        source.open()
    assert "hunter2" not in str(err.value) and "***@127.0.0.1" in str(err.value)


def test_unsupported_scheme() -> None:
    with pytest.raises(SourceError, match="unsupported URL scheme 'ftp'"):
        make_source("ftp://host/clip.mp4")


def test_colliding_names_are_made_unique(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = write_video(tmp_path / "a" / "clip.avi", ["red"] * 2)
    two = write_video(tmp_path / "b" / "clip.avi", ["red"] * 2)
    sources = [make_source(str(one)), make_source(str(two)), make_source(str(one))]
    unique_names(sources)
    assert [s.name for s in sources] == ["clip", "clip-2", "clip-3"]


def test_realtime_file_behaves_as_live(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "rt.avi", ["red"] * 3)
    source = make_source(str(clip), realtime=True)
    assert isinstance(source, VideoFileSource)
    assert source.is_live and source.realtime and source.policy is Policy.LATEST


def test_names_are_topic_safe(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "my clip.v2 (final).avi", ["red"])
    assert make_source(str(clip)).name == "my-clip-v2-final"


def test_demo_source_has_ground_truth() -> None:
    pytest.importorskip("streamer.model.demo", reason="the demo clip (model side) is not in this tree yet")
    source = open_source("demo")
    assert source.name == "demo" and source.truth_path.is_file()
    first = source.read()
    assert first is not None and first.index == 0
    source.close()
