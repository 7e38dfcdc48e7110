"""Nothing overwritten, nothing half-written: the ``streamer`` command's output paths (``--output``,
``--summary-json``) are checked before the first frame, and a full disk ends a run with one line and complete
files. Real full disks: ``/dev/full`` (every write fails with ENOSPC) and a file-size limit on the process
(RLIMIT_FSIZE: a write is cut short at the limit, the next one fails), so a line can really be half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from streamer_helpers import REPO, color_sequence, read_jsonl, write_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("outputs") / "clip.avi", color_sequence(60, seed=3))


def cli(*args: str, model: Path, limit_bytes: int | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI on ONNX Runtime, not publishing; ``limit_bytes``: no file it writes may grow past that."""
    argv = [sys.executable, "-m", "streamer.cli", *args, "--model", str(model), "--backend", "onnxruntime",
            "--threads", "1", "--bind", "none"]

    def limit() -> None:
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    r = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL, preexec_fn=limit,
                       env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"})
    assert "Traceback" not in r.stderr, r.stderr
    return r


def one_line_error(r: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamer: error: "), r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- case 1: an output that would destroy a file -------------------------------------------------------------
@pytest.mark.parametrize("how", ["same path", "symlink", "hard link"])
def test_output_naming_the_input_video_is_refused(how: str, clip: Path, color_model: Path,
                                                  tmp_path: Path) -> None:
    video = tmp_path / "clip.avi"
    video.write_bytes(clip.read_bytes())
    before = digest(video), video.stat().st_mtime_ns
    target = {"same path": video, "symlink": tmp_path / "link.jsonl",
              "hard link": tmp_path / "hard.jsonl"}[how]
    if how == "symlink":
        target.symlink_to(video)
    elif how == "hard link":
        os.link(video, target)
    for flag in ("--output", "--summary-json"):
        r = cli("--source", str(video), flag, str(target), model=color_model)
        one_line_error(r, flag, str(target), f"is the input {str(video)!r}")
        assert (digest(video), video.stat().st_mtime_ns) == before  # not even opened for writing


def test_output_naming_an_image_of_the_input_folder_is_refused(color_model: Path, tmp_path: Path) -> None:
    import cv2
    import numpy as np

    folder = tmp_path / "shots"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"img{i}.png"), np.full((8, 8, 3), 60 * i, np.uint8))
    victim = folder / "img1.png"
    before = digest(victim)
    r = cli("--source", str(folder), "--output", str(victim), model=color_model)
    one_line_error(r, "is the input")
    assert digest(victim) == before


@pytest.mark.parametrize("flag", ["--output", "--summary-json"])
def test_an_existing_file_that_is_not_ours_is_refused(flag: str, clip: Path, color_model: Path,
                                                      tmp_path: Path) -> None:
    for name, content in (("notes.txt", b"my notes\n"), ("other.json", b'{"frames": "mine"}\n'),
                          ("model.onnx", color_model.read_bytes())):
        victim = tmp_path / name
        victim.write_bytes(content)
        r = cli("--source", str(clip), flag, str(victim), model=color_model)
        what = "a streamer JSONL file" if flag == "--output" else "a streamer summary"
        one_line_error(r, flag, f"exists and is not {what}")
        assert victim.read_bytes() == content


def test_our_own_outputs_and_empty_files_are_replaced(clip: Path, color_model: Path,
                                                      tmp_path: Path) -> None:
    out, summary = tmp_path / "preds.jsonl", tmp_path / "summary.json"
    out.write_bytes(b"")
    for _ in range(2):  # first over empty files ... then over the previous run's own outputs
        if not summary.exists():
            summary.write_bytes(b"")
        r = cli("--source", str(clip), "--output", str(out), "--summary-json", str(summary), "--quiet",
                model=color_model)
        assert r.returncode == 0, r.stderr
        assert len(read_jsonl(out)) == 60 and json.loads(summary.read_text())["frames"] == 60


@pytest.mark.parametrize("case", ["directory", "missing dir", "same file twice"])
def test_unusable_output_paths_fail_before_the_first_frame(case: str, clip: Path, color_model: Path,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "preds.jsonl"
    args = {"directory": ["--output", str(tmp_path)],
            "missing dir": ["--output", str(out), "--summary-json", str(tmp_path / "no" / "s.json")],
            "same file twice": ["--output", str(out), "--summary-json", str(out)]}[case]
    needle = {"directory": "is a directory", "missing dir": "does not exist",
              "same file twice": "is also given to --output"}[case]
    r = cli("--source", str(clip), *args, model=color_model)
    one_line_error(r, needle)
    if case == "missing dir":
        assert not out.exists()  # refused before anything was opened for writing


# -- cases 4 and 5: a full disk ------------------------------------------------------------------------------
def test_summary_on_a_full_disk_is_one_line_after_the_summary(clip: Path, color_model: Path,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "preds.jsonl"
    r = cli("--source", str(clip), "--output", str(out), "--summary-json", "/dev/full", "--log-level",
            "warning", model=color_model)
    one_line_error(r, "cannot write --summary-json '/dev/full': No space left on device")
    assert "60 frames in" in r.stdout  # the summary was shown first
    assert len(read_jsonl(out)) == 60  # and nothing else was lost


def test_a_summary_that_cannot_be_written_leaves_the_old_one_whole(clip: Path, color_model: Path,
                                                                  tmp_path: Path) -> None:
    summary = tmp_path / "s.json"
    r = cli("--source", str(clip), "--summary-json", str(summary), "--quiet", model=color_model)
    assert r.returncode == 0, r.stderr
    old = summary.read_bytes()
    r = cli("--source", str(clip), "--summary-json", str(summary), "--quiet", model=color_model,
            limit_bytes=len(old) // 2)
    one_line_error(r, "cannot write --summary-json", "File too large")
    assert summary.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]  # no temporary file left behind


def test_jsonl_on_a_full_disk_is_one_line(clip: Path, color_model: Path) -> None:
    r = cli("--source", str(clip), "--output", "/dev/full", "--quiet", model=color_model)
    one_line_error(r, "cannot write --output '/dev/full': No space left on device; it holds the first 0")


def test_jsonl_cut_short_by_the_disk_ends_on_a_complete_line(clip: Path, color_model: Path,
                                                            tmp_path: Path) -> None:
    out = tmp_path / "preds.jsonl"
    line = one_line_size(clip, color_model, tmp_path)
    limit = line * 20 + line // 2  # the 21st line is cut in the middle by the limit
    r = cli("--source", str(clip), "--output", str(out), "--quiet", model=color_model, limit_bytes=limit)
    error = one_line_error(r, "cannot write --output", "File too large")
    data = out.read_bytes()
    assert data.endswith(b"\n") and len(data) <= limit
    rows = read_jsonl(out)
    assert 18 <= len(rows) <= 21 and [row["frame"] for row in rows] == list(range(len(rows)))
    assert f"it holds the first {len(rows)} predictions" in error


def one_line_size(clip: Path, model: Path, tmp_path: Path) -> int:
    """Bytes of one JSONL line as the CLI writes it for ``clip`` (lines differ by a few bytes only)."""
    probe = tmp_path / "probe.jsonl"
    r = cli("--source", str(clip), "--output", str(probe), "--max-frames", "1", "--quiet", model=model)
    assert r.returncode == 0, r.stderr
    size = probe.stat().st_size
    probe.unlink()
    return size
