"""Media the tests make for themselves (nothing outside the repository): a stand-in for OpenCV's vtest.avi,
H.264 clips, damaged copies, and the decoder's own frame counts (``ffprobe -count_frames``) to hold the
streamer's counts against.

Import as ``from media import ...`` (tests/ is on sys.path). Needs ffmpeg/ffprobe (CI installs them; the
fixtures say what to install when they are missing).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from make_bench_media import VTEST_FRAMES, synthesize_vtest

__all__ = ["VTEST_FRAMES", "DecodeCount", "damage", "ffmpeg_decoded_frames", "ffprobe_count",
           "make_h264_clip", "require_ffmpeg", "synthesize_vtest"]


def require_ffmpeg() -> str:
    """The ffmpeg executable; the test fails (not skips) without it: CI installs it (.ci/run)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None or shutil.which("ffprobe") is None:
        pytest.fail("ffmpeg and ffprobe are needed to make and count the test media: apt-get install ffmpeg")
    return ffmpeg


@dataclass(frozen=True)
class DecodeCount:
    """What FFmpeg's own decoder makes of a file: packets demuxed, frames decoded."""

    packets: int
    frames: int

    @property
    def undecodable(self) -> int:
        """Packets that gave no frame: undecodable ones (or, in a stream-copied cut, ones an edit list
        hides)."""
        return self.packets - self.frames


def ffprobe_count(path: Path, timeout: float = 120) -> DecodeCount | None:
    """``ffprobe -count_frames -count_packets`` on the first video stream; None when it cannot open it."""
    done = subprocess.run(["ffprobe", "-v", "quiet", "-count_frames", "-count_packets", "-select_streams",
                           "v:0", "-show_entries", "stream=nb_read_packets,nb_read_frames", "-of", "json",
                           str(path)], capture_output=True, text=True, timeout=timeout)
    try:
        stream = json.loads(done.stdout)["streams"][0]
        return DecodeCount(packets=int(stream["nb_read_packets"]), frames=int(stream["nb_read_frames"]))
    except (ValueError, KeyError, IndexError):
        return None


def ffmpeg_decoded_frames(path: Path, timeout: float = 120) -> int | None:
    """Frames FFmpeg's own decoder gets out of the first video stream (``ffmpeg -i PATH -f null -``, every
    frame passed through as decoded); None when ffmpeg cannot open it. For damaged MPEG-TS this is the
    reliable count: ``ffprobe -count_frames`` stops early on some of those."""
    done = subprocess.run([require_ffmpeg(), "-v", "quiet", "-nostdin", "-i", str(path), "-map", "0:v:0",
                           "-fps_mode", "passthrough", "-f", "null", "-", "-progress", "pipe:1"],
                          capture_output=True, text=True, timeout=timeout)
    counts = [line.split("=", 1)[1] for line in done.stdout.splitlines() if line.startswith("frame=")]
    if not counts or not counts[-1].strip().isdigit():
        return None
    return int(counts[-1])


def make_h264_clip(path: Path, *, seconds: float = 15.0, fps: int = 25, size: tuple[int, int] = (320, 240),
                   gop: int = 25, container_args: tuple[str, ...] = ()) -> Path:
    """An H.264 clip of FFmpeg's ``testsrc2`` under moving noise (real-footage-like bit rate: every frame
    costs the decoder something), a keyframe every ``gop`` frames."""
    ffmpeg = require_ffmpeg()
    w, h = size
    subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size={w}x{h}:rate={fps}:duration={seconds},noise=alls=20:allf=t",
                    "-c:v", "libx264", "-preset", "veryfast", "-g", str(gop), "-pix_fmt", "yuv420p",
                    *container_args, str(path)], check=True, capture_output=True, timeout=300)
    return path


def damage(data: bytes, rng: random.Random, places: int, *, keep_head: int) -> tuple[bytes, list[str]]:
    """``data`` damaged at ``places`` seeded places: zeroed ranges, dropped ranges, flipped bits, and (at
    most once, last) truncation. The first ``keep_head`` bytes (the container header) are left alone, so the
    file still opens; what is said about it is in the returned list."""
    out = bytearray(data)
    done: list[str] = []
    kinds = [rng.choice(("zero", "drop", "flip")) for _ in range(places)]
    if rng.random() < 0.3:
        kinds[-1] = "truncate"
    for kind in kinds:
        size = len(out)
        start = rng.randrange(keep_head, size - 1)
        if kind == "zero":
            end = min(size, start + rng.randrange(64, max(65, size // 12)))
            out[start:end] = bytes(end - start)
        elif kind == "drop":
            end = min(size, start + rng.randrange(64, max(65, size // 12)))
            del out[start:end]
        elif kind == "flip":
            for _ in range(rng.randrange(1, 64)):
                j = rng.randrange(keep_head, size)
                out[j] ^= 1 << rng.randrange(8)
            end = start
        else:
            end = size
            del out[start:]
        done.append(f"{kind} {start}-{end}")
    return bytes(out), done
