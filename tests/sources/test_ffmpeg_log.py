"""FFmpeg's own error messages, routed into logging: counted per source, redacted, at DEBUG.

The hook is process-wide (FFmpeg has one log callback), so it is installed in a child process here, never
in the test runner. The CLI's use of it (nothing on the terminal, a count per file, every line at --log-level
debug) is in test_video.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from streamer_helpers import REPO

from media import make_h264_clip
from streamer.sources.ffmpeg_log import public_log_text as redact

CHILD = r"""
import json, logging, sys, threading
import cv2
from streamer.sources import ffmpeg_log

lines = []
class Keep(logging.Handler):
    def emit(self, record):
        lines.append(record.getMessage())
logging.getLogger("streamer.ffmpeg").addHandler(Keep())
logging.getLogger("streamer.ffmpeg").setLevel(logging.DEBUG)
installed = ffmpeg_log.install() and ffmpeg_log.install()  # idempotent

def read(path, name, claim):
    if claim:
        ffmpeg_log.claim(name)
    cap = cv2.VideoCapture(path)
    misses = 0
    while misses < 300:
        ok = cap.grab()
        misses = 0 if ok else misses + 1
    cap.release()
    if claim:
        ffmpeg_log.unclaim()

read(sys.argv[1], "first", True)
read(sys.argv[1], "", False)  # nobody claims this thread: unattributed (no other source is claimed now)
print(json.dumps({"installed": installed, "counts": ffmpeg_log.counts(), "lines": lines}))
"""


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ffmpeg_log")
    clip = make_h264_clip(folder / "clip.mp4", seconds=4, fps=25)
    data = bytearray(clip.read_bytes())
    a, b = len(data) * 2 // 5, len(data) * 3 // 5
    data[a:b] = bytes(b - a)
    path = folder / "damaged.mp4"
    path.write_bytes(bytes(data))
    return path


def test_errors_are_counted_per_claiming_thread_and_logged(damaged: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_FFMPEG_LOGLEVEL"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(damaged)], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**env, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert "[h264 @" not in done.stderr  # none of FFmpeg's own printing
    got = json.loads(done.stdout)
    assert got["installed"] is True
    counts = got["counts"]
    assert counts["first"] > 10 and counts[""] > 10  # every message counted, and for whom
    ffmpeg_lines = [line for line in got["lines"] if line.startswith("ffmpeg")]
    assert len(ffmpeg_lines) == counts["first"] + counts[""]
    assert any(line.startswith("ffmpeg (first): [h264 @") for line in got["lines"])
    assert any(line.startswith("ffmpeg: [h264 @") for line in got["lines"])


def test_credentials_in_ffmpeg_messages_are_redacted() -> None:
    text = "[tcp @ 0x1] Connection to rtsp://admin:hunter2@cam:554/live?token=s3cret&ch=1 failed"
    assert redact(text) == "[tcp @ 0x1] Connection to rtsp://***@cam:554/live?token=***&ch=1 failed"
    assert redact("[h264 @ 0x2] Invalid NAL unit size (0 > 21064).") == (
        "[h264 @ 0x2] Invalid NAL unit size (0 > 21064).")


def test_secrets_outside_a_url_are_redacted_up_to_the_next_space() -> None:
    assert redact("[rtsp @ 0x3] option password=hunter2 token=t0k ignored; user=admin") == (
        "[rtsp @ 0x3] option password=*** token=*** ignored; user=***")
