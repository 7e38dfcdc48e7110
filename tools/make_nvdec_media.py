#!/usr/bin/env python3
"""Media for the NVDEC bench and GPU tests, made with ffmpeg from vtest.avi (the GPU host has no ffmpeg: make
them here, carry the folder; tools/gpu_nvdec.sh points the tests at it with STREAMER_NVDEC_MEDIA):

    python tools/make_nvdec_media.py                  # → media/nvdec/ (git-ignored), ~7 MB

- ``live_1080p_nob.ts``: 1080p30 H.264 as cameras encode it (no B-frames, GOP 60), 300 frames, MPEG-TS: the
  live stream that tools/ts_live_server.py serves at 30 fps;
- ``live_1080p_nob.mp4``: the same pictures in MP4 (a real clip for the NVDEC/CPU agreement test);
- ``uhd_hevc.mp4``: 3840×2160 HEVC (x265), 300 frames: the 4K row;
- ``damaged.mp4``: ``live_1080p_nob.mp4`` with twelve 1.5 kB runs of random bytes in its middle and the last
  15 % cut off (a seeded, reproducible damage).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
from pathlib import Path

from make_bench_media import MEDIA_DIR, MediaError, ensure_media, ffmpeg_into

CLIPS = ("live_1080p_nob.mp4", "live_1080p_nob.ts", "uhd_hevc.mp4", "damaged.mp4")


def _ffmpeg(out: Path, *args: str) -> None:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise MediaError("ffmpeg is not installed (make the NVDEC media on a machine that has it)")
    ffmpeg_into(out, ffmpeg, *args)


def damage(src: Path, out: Path, seed: int = 5) -> Path:
    rng = random.Random(seed)
    data = bytearray(src.read_bytes())
    n = len(data)
    for _ in range(12):
        at = rng.randrange(int(n * 0.3), int(n * 0.7))
        data[at:at + 1500] = bytes(rng.randrange(256) for _ in range(1500))
    out.write_bytes(bytes(data[: int(n * 0.85)]))
    return out


def make(out_dir: Path, vtest: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in CLIPS}
    frames = ["-r", "30", "-i", str(vtest), "-frames:v", "300"]
    if not paths["live_1080p_nob.mp4"].is_file():
        _ffmpeg(paths["live_1080p_nob.mp4"], *frames, "-vf", "scale=1920:1080:flags=bicubic",
                "-c:v", "libx264", "-preset", "veryfast", "-crf", "28", "-bf", "0", "-g", "60",
                "-pix_fmt", "yuv420p", "-movflags", "+faststart")
    if not paths["live_1080p_nob.ts"].is_file():
        _ffmpeg(paths["live_1080p_nob.ts"], "-i", str(paths["live_1080p_nob.mp4"]), "-c", "copy",
                "-bsf:v", "h264_mp4toannexb", "-f", "mpegts")
    if not paths["uhd_hevc.mp4"].is_file():
        _ffmpeg(paths["uhd_hevc.mp4"], *frames, "-vf", "scale=3840:2160:flags=bicubic", "-c:v", "libx265",
                "-preset", "fast", "-crf", "30", "-pix_fmt", "yuv420p", "-tag:v", "hvc1",
                "-x265-params", "log-level=error")
    if not paths["damaged.mp4"].is_file():
        damage(paths["live_1080p_nob.mp4"], paths["damaged.mp4"])
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", type=Path, default=None,
                   help="vtest.avi (default: media/ or ../shared/media when there, else an ffmpeg stand-in)")
    p.add_argument("--out-dir", type=Path, default=MEDIA_DIR / "nvdec")
    a = p.parse_args(argv)
    try:
        vtest = ensure_media(MEDIA_DIR, a.src, need=("vtest",))["vtest"]
        for name, path in make(a.out_dir, vtest).items():
            print(f"{name:20} {path.stat().st_size / 1e6:5.1f} MB  {path}")
    except MediaError as exc:
        print(f"make_nvdec_media: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
