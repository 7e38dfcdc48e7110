"""How an NVDEC file is shared among decoder sessions (streamer.sources.nvdec_file): the segment plan from key
frames, and the scan that places each decoded picture by its timestamp."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest

from streamer.sources.nvdec_file import MIN_SEGMENT, Segment, plan_segments, scan


@dataclass
class Packet:
    pts: int
    key: int
    bsl: int = 100  # bytes of bitstream (0: the demuxer's closing empty packet)


def test_one_decoder_or_a_short_file_is_one_segment() -> None:
    assert plan_segments([0, 250, 500], 795, 0, 1) == [Segment(0, 795)]
    assert plan_segments([0, 100], 2 * MIN_SEGMENT - 1, 0, 4) == [Segment(0, 2 * MIN_SEGMENT - 1)]
    assert plan_segments([0], 0, 0, 4) == []


def test_segments_start_at_key_frames_cover_every_frame_once_and_are_not_too_short() -> None:
    keys = list(range(0, 2000, 50))  # a key frame every 50 frames
    segments = plan_segments(keys, 2000, 0, 4)
    assert segments[0].start == 0 and segments[-1].stop == 2000
    assert all(a.stop == b.start for a, b in itertools.pairwise(segments))
    assert all(s.start in keys for s in segments)
    assert all(s.stop - s.start >= MIN_SEGMENT // 2 for s in segments)
    assert all(s.stop - s.start >= MIN_SEGMENT for s in segments[:-1])


def test_a_resumed_file_is_planned_from_its_first_frame() -> None:
    segments = plan_segments(list(range(0, 1000, 250)), 1000, 300, 3)
    assert segments[0].start == 300 and [s.start for s in segments[1:]] == [500, 750]


def test_a_bad_segment_is_refused() -> None:
    with pytest.raises(ValueError):
        Segment(10, 10)


def test_the_scan_orders_timestamps_for_display_and_finds_key_frames() -> None:
    # decode order with B-frames: I0 P3 B1 B2 | I4 P6 B5
    packets = [Packet(0, 1), Packet(3, 0), Packet(1, 0), Packet(2, 0), Packet(4, 1), Packet(6, 0),
               Packet(5, 0), Packet(0, 0, bsl=0)]
    index = scan(iter(packets))
    assert index is not None
    assert index.pts == (0, 1, 2, 3, 4, 5, 6) and index.keys == (0, 4) and index.frames == 7
    assert index.index_of()[5] == 5


def test_timestamps_that_cannot_place_frames_give_no_index() -> None:
    assert scan(iter([Packet(0, 1), Packet(0, 0)])) is None  # repeated
    assert scan(iter([Packet(-1, 1), Packet(0, 0)])) is None  # missing (negative)
    assert scan(iter([])) is None


def test_a_scan_stopped_by_damage_keeps_what_it_read() -> None:
    def packets():
        yield Packet(0, 1)
        yield Packet(1, 0)
        raise RuntimeError("demuxer gave up")

    index = scan(packets())
    assert index is not None and index.frames == 2


def test_sessions_per_file_share_the_decoder_engines() -> None:
    from streamer.sources.nvdec_file import MAX_DECODERS_PER_FILE, decoders_per_file

    assert decoders_per_file(1, 7) == MAX_DECODERS_PER_FILE
    assert decoders_per_file(2, 7) == 3
    assert decoders_per_file(8, 7) == 1 and decoders_per_file(16, 7) == 1
    assert decoders_per_file(8, 7, requested=2) == 2
