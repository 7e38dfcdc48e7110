"""The sharding rule and run-wide source names (pure logic)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.errors import SourceError
from streamer.scale.shard import Described, deal, describe, least_loaded, name_sources


def test_sources_are_dealt_out_in_order() -> None:
    assert deal(7, 3) == [0, 1, 2, 0, 1, 2, 0]
    loads = [deal(7, 3).count(w) for w in range(3)]
    assert max(loads) - min(loads) <= 1
    assert deal(2, 4) == [0, 1]  # fewer sources than workers: the rest idle (or wait for POST /sources)
    with pytest.raises(ValueError):
        deal(3, 0)


def test_an_added_source_goes_to_the_least_loaded_worker() -> None:
    assert least_loaded([2, 1, 1]) == 1  # the lowest index on a tie
    assert least_loaded([0, 3]) == 0
    with pytest.raises(ValueError):
        least_loaded([])


def test_names_are_unique_over_the_whole_run(tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "clip.mp4").write_bytes(b"")
    specs = [str(tmp_path / "a" / "clip.mp4"), str(tmp_path / "b" / "clip.mp4#policy=latest"), "demo",
             "rtsp://user:pw@cam1:554/live", "webcam0"]
    assert name_sources(specs) == ["clip", "clip-2", "demo", "cam1-live", "webcam0"]


def test_a_missing_file_is_a_one_line_error_unless_it_lives_on_the_workers(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere" / "clip.mp4")
    with pytest.raises(SourceError, match="no such file"):
        name_sources([missing])
    assert name_sources([missing, missing + "#decode=nvdec"], local_files=False) == ["clip", "clip-2"]


def test_a_spec_is_described_once_with_its_name_kind_and_files(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    assert describe(str(clip) + "#policy=latest") == Described("clip", "file", (clip,))
    assert describe("rtsp://user:pw@cam1:554/live") == Described("cam1-live", "stream", ())
    missing = str(tmp_path / "nowhere" / "clip.mp4")
    assert describe(missing, local_files=False) == Described("clip", "source", ())
