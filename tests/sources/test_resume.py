"""``resume_after``: a source continues a stream another run delivered up to a frame (a restarted scale-out
worker). Files and image lists read past what was delivered; cameras and streams number on from it."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from servers import MjpegServer, solid_jpegs
from streamer_helpers import color_sequence, write_video

from streamer.sources import FrameBuffer, Policy, make_source
from streamer.sources.live import LiveOptions
from streamer.sources.reader import SourceReader


def read_all(source) -> list:
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    return frames


def test_a_file_resumes_after_the_given_frame_with_the_same_frames(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "clip.avi", color_sequence(30, seed=3))
    whole = make_source(str(clip), decode="cpu")
    whole.open()
    everything = read_all(whole)
    whole.close()
    resumed = make_source(str(clip), decode="cpu")
    resumed.resume_after(11)
    resumed.open()
    rest = read_all(resumed)
    resumed.close()
    assert [f.index for f in rest] == list(range(12, 30))
    assert all(np.array_equal(a.image, b.image) for a, b in zip(rest, everything[12:], strict=True))
    assert resumed.frames_read == 30  # the frames read past count as read (--max-frames stays per source)


def test_max_frames_counts_the_frames_before_the_resume_point(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "clip.avi", color_sequence(30, seed=4))
    source = make_source(str(clip), decode="cpu")
    source.resume_after(9)
    source.open()
    buffer = FrameBuffer(source.name, Policy.BLOCK, 64)
    reader = SourceReader(source, buffer, max_frames=20)
    reader.start()
    assert reader.join(30)
    got = []
    while (item := buffer.take()) is not None:
        got.append(item[0].index)
    assert got == list(range(10, 20))


def test_an_image_folder_resumes_by_position(tmp_path: Path) -> None:
    for i in range(6):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), np.full((8, 8, 3), 40 * i, np.uint8))
    source = make_source(str(tmp_path))
    source.resume_after(3)
    source.open()
    frames = read_all(source)
    assert [(f.index, f.file) for f in frames] == [(4, "img4.png"), (5, "img5.png")]


def test_a_stream_numbers_its_frames_on_from_the_resume_point() -> None:
    with MjpegServer(solid_jpegs((32, 24)), fps=50.0) as server:
        source = make_source(server.url(), live=LiveOptions(timeout_s=5.0))
        source.resume_after(99)
        source.open()
        try:
            assert [source.read().index for _ in range(3)] == [100, 101, 102]
        finally:
            source.stop()
            source.close()
