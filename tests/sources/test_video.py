"""Video files are read to their real end, and every frame is accounted for against FFmpeg's own decoder.

The clips are made here with ffmpeg and damaged here: a zeroed stretch mid-file, a stream-copied cut whose
header announces frames an edit list hides, and seeded random damage (zeroed and dropped ranges, flipped
bits, truncation) in four containers. The reference counts come from ``ffprobe -count_frames`` and
``ffmpeg -f null`` on the same file.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from streamer_helpers import REPO, read_jsonl, run_cli
from zmq_helpers import recv_message, sub_socket, zmq_context

from media import DecodeCount, damage, ffmpeg_decoded_frames, ffprobe_count, make_h264_clip, require_ffmpeg
from streamer.errors import SourceError
from streamer.sources import make_source, open_source
from streamer.sources.base import SourceState

CLI_TIMEOUT_S = 120  # a run of a few hundred small frames takes seconds: this only catches a hang


def read_all(source) -> list:
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    return frames


def zero_stretch(src: Path, dst: Path, start: float = 0.4, length: float = 0.2) -> Path:
    data = bytearray(src.read_bytes())
    a = int(len(data) * start)
    b = a + int(len(data) * length)
    data[a:b] = bytes(b - a)
    dst.write_bytes(bytes(data))
    return dst


@pytest.fixture(scope="module")
def h264(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """15 s of 25 fps H.264 (375 frames, a keyframe every second) in MP4."""
    return make_h264_clip(tmp_path_factory.mktemp("h264") / "clip.mp4", seconds=15, fps=25)


@pytest.fixture(scope="module")
def damaged(h264: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DecodeCount]:
    """The clip with its middle fifth zeroed: some 75 undecodable frames, ~235 good ones after them."""
    path = zero_stretch(h264, tmp_path_factory.mktemp("damaged") / "damaged.mp4")
    ref = ffprobe_count(path)
    assert ref is not None and ref.packets == 375 and ref.undecodable >= 50, ref  # the damage is real
    return path, ref


def test_a_damaged_stretch_does_not_end_the_file(damaged: tuple[Path, DecodeCount]) -> None:
    path, ref = damaged
    source = open_source(str(path))
    assert source.total_frames == 375
    frames = read_all(source)
    source.close()
    assert len(frames) == ref.frames == ffmpeg_decoded_frames(path)  # every decodable frame, no more
    assert [f.index for f in frames] == list(range(len(frames)))
    assert len(frames) > 200  # the ~150 before the stretch and the ~150 after it
    # each read the decoder rejected is counted; FFmpeg's decoder threads swallow a few without a failed
    # read, so the count may fall short of the packets it could not decode, never above it
    assert ref.undecodable // 2 <= source.skipped <= ref.undecodable
    assert source.state is SourceState.ENDED
    assert source.detail == f"end of file ({source.skipped} undecodable frames skipped)"


def test_every_count_reaches_eos_stats_and_the_summary(damaged: tuple[Path, DecodeCount], color_model: Path,
                                                       tmp_path: Path, free_endpoint: str) -> None:
    """The CLI on the damaged clip: predictions = ffprobe's count; the skipped frames in eos, stats and the
    summary; FFmpeg's hundreds of complaints counted, not printed (--quiet prints warnings only)."""
    path, ref = damaged
    out, summary = tmp_path / "d.jsonl", tmp_path / "d.json"
    errors = tmp_path / "stderr.txt"
    with zmq_context() as ctx, open(errors, "w") as err:
        sock = sub_socket(ctx, free_endpoint, ("eos.", "stats"))
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamer.cli", "--source", str(path), "--model", str(color_model),
             "--backend", "onnxruntime", "--threads", "1", "--bind", free_endpoint, "--wait-subscribers", "2",
             "--stats-interval", "0.05", "--output", str(out), "--summary-json", str(summary), "--quiet"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        try:
            msgs = [recv_message(sock, 60)]
            while not msgs[-1][0].startswith("eos."):
                msgs.append(recv_message(sock, 60))
            assert proc.wait(CLI_TIMEOUT_S) == 0, errors.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stderr = errors.read_text()
    assert "Traceback" not in stderr
    assert len(read_jsonl(out)) == ref.frames
    eos = msgs[-1][1]
    s = json.loads(summary.read_text())
    skipped = s["sources"][0]["skipped"]
    assert 0 < skipped <= ref.undecodable
    assert (eos["frames"], eos["skipped"], eos["reason"]) == (ref.frames, skipped, "end")
    assert s["frames"] == ref.frames and s["sources"][0]["end"].startswith("end of file")
    assert max(m["sources"]["damaged"]["skipped"] for t, m in msgs if t == "stats") == skipped
    # FFmpeg's own lines are not on the terminal; one warning sums them up
    assert "[h264 @" not in stderr and "NAL unit" not in stderr
    lines = stderr.strip().splitlines()
    assert any(f"{skipped} undecodable frame(s) skipped" in line and "FFmpeg reported" in line
               for line in lines)
    assert len(lines) <= 3, stderr  # the first skip, the sum at the end (and the header's count, at info)


def test_ffmpeg_messages_are_in_the_debug_log_attributed_to_the_source(damaged: tuple[Path, DecodeCount],
                                                                       color_model: Path) -> None:
    path, _ = damaged
    r = run_cli("--source", str(path), "--model", str(color_model), "--backend", "onnxruntime", "--bind",
                "none", "--log-level", "debug", timeout=CLI_TIMEOUT_S)
    assert r.returncode == 0, r.stderr[-2000:]
    ffmpeg_lines = [line for line in r.stderr.splitlines() if "ffmpeg (damaged): [" in line]
    reported = int(r.stderr.split("FFmpeg reported ")[1].split()[0])
    assert len(ffmpeg_lines) == reported > 10
    assert all(" DEBUG " in line for line in ffmpeg_lines)


@pytest.fixture(scope="module")
def edit_list_cut(h264: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stream-copied cut: its header counts the packets before the cut point that the edit list hides
    (more frames than a decoder shows). A healthy file: nothing is lost reading it."""
    cut = tmp_path_factory.mktemp("cut") / "cut.mp4"
    subprocess.run([require_ffmpeg(), "-v", "error", "-y", "-ss", "0.5", "-i", str(h264), "-c", "copy", "-t",
                    "5", str(cut)], check=True, capture_output=True, timeout=60)
    return cut


@pytest.mark.parametrize("which", ["plain", "edit-list cut"])
def test_a_healthy_file_ends_without_a_warning(which: str, h264: Path, edit_list_cut: Path,
                                               color_model: Path, tmp_path: Path) -> None:
    path = h264 if which == "plain" else edit_list_cut
    ref = ffprobe_count(path)
    assert ref is not None and (ref.undecodable == 0 or which == "edit-list cut")  # those are hidden
    source = open_source(str(path))
    header = source.total_frames
    source.close()
    if which == "edit-list cut":
        assert header is not None and header > ref.frames  # the header announces more: not a loss
    out, summary = tmp_path / "h.jsonl", tmp_path / "h.json"
    r = run_cli("--source", str(path), "--model", str(color_model), "--backend", "onnxruntime", "--bind",
                "none", "--output", str(out), "--summary-json", str(summary), "--log-level", "warning",
                timeout=CLI_TIMEOUT_S)
    assert r.returncode == 0 and r.stderr == "", r.stderr  # no warning when nothing was lost
    assert len(read_jsonl(out)) == ref.frames
    s = json.loads(summary.read_text())["sources"][0]
    assert (s["end"], s["skipped"]) == ("end of file", 0)


# -- randomised damage ---------------------------------------------------------------------------------------
CONTAINERS = {
    "mkv": ("libx264", ()),
    "mp4": ("libx264", ("-movflags", "+faststart")),
    "ts": ("libx264", ()),
    "avi": ("mpeg4", ("-q:v", "5")),
}
SEEDS = 12


@pytest.fixture(scope="module")
def clean_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One 6 s clip (150 frames of testsrc2 under noise) per container."""
    ffmpeg = require_ffmpeg()
    folder = tmp_path_factory.mktemp("clean")
    clips = {}
    for ext, (codec, args) in CONTAINERS.items():
        path = folder / f"clean.{ext}"
        subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i",
                        "testsrc2=size=320x240:rate=25:duration=6,noise=alls=20:allf=t", "-c:v", codec,
                        "-g", "25", "-pix_fmt", "yuv420p", *args, str(path)],
                       check=True, capture_output=True, timeout=120)
        clips[ext] = path
    return clips


@pytest.mark.parametrize("seed", range(SEEDS), ids=[f"{list(CONTAINERS)[i % 4]}-{i}" for i in range(SEEDS)])
def test_randomly_damaged_clips(seed: int, clean_clips: dict[str, Path], color_model: Path,
                                tmp_path: Path) -> None:
    """One clip damaged at 1-4 seeded places: never a hang (the run has a deadline), never a traceback, a
    prediction for every frame FFmpeg decodes, and the undecodable ones counted, never over-counted."""
    ext = list(CONTAINERS)[seed % len(CONTAINERS)]
    rng = random.Random(seed)
    data, what = damage(clean_clips[ext].read_bytes(), rng, rng.randrange(1, 5), keep_head=4096)
    path = tmp_path / f"r{seed}.{ext}"
    path.write_bytes(data)
    decoded = ffmpeg_decoded_frames(path)
    out, summary = tmp_path / "r.jsonl", tmp_path / "r.json"
    r = run_cli("--source", str(path), "--model", str(color_model), "--backend", "onnxruntime", "--threads",
                "1", "--bind", "none", "--output", str(out), "--summary-json", str(summary), "--quiet",
                timeout=CLI_TIMEOUT_S)
    assert "Traceback" not in r.stderr, (what, r.stderr)
    if decoded is None:  # the damage reached what FFmpeg needs to open the file at all
        assert r.returncode == 2, (what, r.stderr)
        assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "cannot decode video file" in r.stderr
        return
    assert r.returncode == 0, (what, r.stderr)
    rows = read_jsonl(out)
    assert len(rows) == decoded, what
    assert [row["frame"] for row in rows] == list(range(decoded))
    skipped = json.loads(summary.read_text())["sources"][0]["skipped"]
    ref = ffprobe_count(path)
    if ext != "ts" and ref is not None and ref.frames == decoded:  # ffprobe miscounts damaged MPEG-TS
        assert 0 <= skipped <= ref.undecodable, (what, ref, skipped)


# -- what is not a video file --------------------------------------------------------------------------------
def test_a_device_or_a_named_pipe_is_named_for_what_it_is(tmp_path: Path, color_model: Path) -> None:
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)
    for spec, what in (("/dev/zero", "a character device"), (str(fifo), "a named pipe (FIFO)")):
        with pytest.raises(SourceError, match=re.escape(f"is {what}, not a video file")):
            make_source(spec)
        r = run_cli("--source", spec, "--model", str(color_model), "--bind", "none")
        assert r.returncode == 2, r.stderr
        assert r.stderr.strip().splitlines() == [r.stderr.strip()]
        assert f"is {what}, not a video file" in r.stderr and "no such file" not in r.stderr


def test_open_at_takes_over_a_file_at_a_frame(h264: Path) -> None:
    """What NVDEC's hand-over uses after its demuxer gave up: the CPU decoder reads on from that frame."""
    from streamer.sources.video import VideoFileSource

    source = VideoFileSource(h264, "clip")
    source.open_at(300, 375)
    try:
        frames = read_all(source)
    finally:
        source.close()
    assert [f.index for f in frames] == list(range(300, 375))
