"""tools/nv12_match.py on a clip the test makes: it measures each step and size, writes its JSON, and finds
the kernel's arithmetic (tests/nv12_reference.py) byte-exact with OpenCV's decode + resize_into."""

from __future__ import annotations

import json
from pathlib import Path

import nv12_match
import pytest

from media import make_h264_clip


def test_nv12_match_reports_every_step_and_size_exact(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    clip = make_h264_clip(tmp_path / "clip.mp4", seconds=0.2, fps=10, size=(640, 360))
    out = tmp_path / "match.json"
    args = [str(clip), "--frames", "2", "--sizes", "32x32,100x60,x1.5", "--nv12-from", "ffmpeg", "--json-out",
            str(out)]
    assert nv12_match.main(args) == 0
    report = json.loads(out.read_text())
    assert report["cv2"] and any(line.startswith("swscale") for line in report["build"])
    (result,) = report["clips"]
    assert result["size"] == [640, 360] and result["frames"] == 2 and result["matrix"] == "bt601"
    assert result["colour"]["bt601"] == {"exact_pct": 100.0, "mean_diff": 0.0, "max_diff": 0}
    assert result["colour"]["bt709"]["exact_pct"] < 90  # the other matrix is measurably off
    assert sorted(result["rows"]) == ["100x60", "32x32", "960x540"]
    for size, row in result["rows"].items():
        assert row == {"exact_pct": 100.0, "mean_diff": 0.0, "max_diff": 0}, size
    printed = capsys.readouterr().out
    assert "cv2 " in printed and "32x32  exact 100.00000%" in printed


def test_nv12_match_refuses_a_missing_clip(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no video file at"):
        nv12_match.main([str(tmp_path / "nope.mp4"), "--nv12-from", "ffmpeg"])
