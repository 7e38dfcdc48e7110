#!/usr/bin/env python3
"""Media for ``tools/bench.py pipeline``: vtest.avi, a 1080p H.264 clip made from it, and a live playlist.

    python tools/make_bench_media.py                 # → media/vtest.avi, media/vtest_1080p.mp4
    python tools/make_bench_media.py --src PATH --out-dir media

- ``vtest.avi``: OpenCV's sample clip (768×576, 10 fps, 795 frames, MS-MPEG4 v3), copied from ``--src`` or
  ``../shared/media`` when there; otherwise made with ffmpeg (:func:`synthesize_vtest`): the same size,
  rate, length, codec and bit rate, from FFmpeg's ``testsrc2`` pattern with moving noise, so decoding costs
  about what the real footage costs (1,240 against 1,340 frames/s on one 2-core machine). The tests make
  theirs the same way.
- ``vtest_1080p.mp4``: the same frames scaled to 1920×1080, re-timed to 30 fps (frame for frame, none added or
  dropped), H.264 High (libx264, preset medium, CRF 23, yuv420p). Needs ffmpeg with libx264.
- ``<clip>_x<N><suffix>`` (written by :func:`looped_clip`, for ``bench.py view --repeat`` and ``multigpu
  --loops``): the clip N times over as one file, stream-copied.
- ``<clip>_live.ffconcat`` (written by :func:`live_playlist`): an FFmpeg concat playlist that plays the
  1080p clip over and over. OpenCV's FFmpeg backend opens it like a file, so a long paced live run needs no
  long file (``streamer --realtime --source media/vtest_1080p_live.ffconcat``).

Everything lands in ``media/`` (git-ignored). Existing outputs that decode are kept.
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MEDIA_DIR = REPO / "media"
VTEST_NAME = "vtest.avi"
CLIP_NAME = "vtest_1080p.mp4"
CLIP_FPS = 30
CLIP_SIZE = (1920, 1080)
VTEST_CANDIDATES = (REPO.parent / "shared" / "media" / VTEST_NAME,)  # a checkout beside a shared/ folder
VTEST_SIZE = (768, 576)
VTEST_FPS = 10
VTEST_FRAMES = 795


class MediaError(RuntimeError):
    pass


@dataclass(frozen=True)
class ClipInfo:
    path: Path
    frames: int
    width: int
    height: int
    fps: float

    def __post_init__(self) -> None:
        if self.frames < 1 or self.width < 1 or self.height < 1:
            raise ValueError(f"{self.path}: not a decodable video ({self.frames} frames "
                             f"{self.width}x{self.height})")


def probe(path: Path, count: bool = True) -> ClipInfo:
    """Open ``path`` with OpenCV (as the streamer will) and count its frames."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise MediaError(f"OpenCV cannot open {path}")
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        frames = 0
        if count:
            while cap.grab():
                frames += 1
        else:
            frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        cap.release()
    return ClipInfo(path, frames, w, h, fps)


def find_vtest(explicit: Path | None = None) -> Path | None:
    """The real vtest.avi: ``explicit`` (which must exist), else media/ or ../shared/media; None if absent."""
    if explicit is not None:
        if not explicit.is_file():
            raise MediaError(f"--src {explicit} not found")
        return explicit
    return next((path for path in (MEDIA_DIR / VTEST_NAME, *VTEST_CANDIDATES) if path.is_file()), None)


def synthesize_vtest(out: Path, *, frames: int = VTEST_FRAMES, size: tuple[int, int] = VTEST_SIZE,
                     fps: int = VTEST_FPS) -> Path:
    """A stand-in for vtest.avi made with ffmpeg: ``testsrc2`` (moving colour bars, a clock, text) under
    temporal noise, in vtest's container, codec (MS-MPEG4 v3), size, rate and bit rate (~800 kbit/s)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise MediaError(f"ffmpeg is not installed: cannot make {out.name} (install ffmpeg, or pass --src "
                         "with OpenCV's vtest.avi)")
    w, h = size
    source = f"testsrc2=size={w}x{h}:rate={fps},noise=alls=12:allf=t+u"
    return ffmpeg_into(out, ffmpeg, "-f", "lavfi", "-i", source,
                        "-frames:v", str(frames), "-c:v", "msmpeg4v3", "-b:v", "800k", "-g", "250", "-an")


def make_clip(src: Path, out: Path, *, crf: int = 23, preset: str = "medium") -> Path:
    """``src`` → 1080p30 H.264 ``out`` with ffmpeg (written to a temporary name, then renamed)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise MediaError("ffmpeg is not installed: cannot make the 1080p clip here (make it elsewhere with "
                         "tools/make_bench_media.py and copy media/vtest_1080p.mp4)")
    w, h = CLIP_SIZE
    # -r before -i re-times the input (10 fps) to 30 fps frame for frame; passthrough keeps every frame
    return ffmpeg_into(out, ffmpeg, "-r", str(CLIP_FPS), "-i", str(src),
                        "-vf", f"scale={w}:{h}:flags=bicubic", "-fps_mode", "passthrough",
                        "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
                        "-movflags", "+faststart", "-an")


def looped_clip(clip: Path, times: int, out_dir: Path) -> Path:
    """``clip`` played ``times`` times over as one file, ``<out_dir>/<stem>_x<times><suffix>`` (ffmpeg
    ``-stream_loop``, stream copy; kept when it is there already); ``clip`` itself when ``times`` <= 1."""
    if times <= 1:
        return clip
    out = out_dir / f"{clip.stem}_x{times}{clip.suffix}"
    if out.is_file():
        return out
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise MediaError(f"ffmpeg is not installed: cannot make {out.name} (make it elsewhere: ffmpeg "
                         f"-stream_loop {times - 1} -i {clip.name} -c copy {out.name})")
    return ffmpeg_into(out, ffmpeg, "-stream_loop", str(times - 1), "-i", str(clip), "-c", "copy",
                        timeout=600)


def ffmpeg_into(out: Path, ffmpeg: str, *args: str, timeout: float | None = None) -> Path:
    """``ffmpeg ARGS`` writing ``out`` under a temporary name, renamed once complete (MediaError if it
    fails)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp" + out.suffix)
    done = subprocess.run([ffmpeg, "-v", "error", "-y", *args, str(tmp)], capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise MediaError(f"ffmpeg failed making {out.name}: {done.stderr.strip()[-300:]}")
    tmp.replace(out)
    return out


def live_playlist(clip: Path, seconds: float, fps: float = CLIP_FPS, clip_frames: int | None = None,
                  out: Path | None = None) -> Path:
    """An ffconcat playlist beside ``clip`` that plays it enough times to last ``seconds`` at ``fps``."""
    frames = clip_frames or probe(clip, count=False).frames or 1
    loops = max(1, math.ceil(seconds * fps / frames) + 1)
    out = out or clip.with_name(f"{clip.stem}_live.ffconcat")
    # names relative to the playlist: the concat demuxer's safe mode accepts them
    rel = clip.name if clip.parent.resolve() == out.parent.resolve() else str(clip.resolve())
    lines = ["ffconcat version 1.0"] + [f"file '{rel}'" for _ in range(loops)]
    out.write_text("\n".join(lines) + "\n")
    return out


def ensure_media(out_dir: Path = MEDIA_DIR, src: Path | None = None, *, log: bool = True,
                 need: tuple[str, ...] = ("vtest", "1080p")) -> dict[str, Path]:
    """vtest.avi and (if in ``need``) the 1080p clip in ``out_dir``, copied or made when missing."""
    out_dir.mkdir(parents=True, exist_ok=True)
    vtest = out_dir / VTEST_NAME
    if not vtest.is_file():
        real = find_vtest(src)
        if real is not None:
            shutil.copyfile(real, vtest)
            if log:
                print(f"copied {VTEST_NAME} → {vtest}")
        else:
            if log:
                print(f"making {vtest} with ffmpeg ({VTEST_NAME} is not here: a synthetic stand-in) ...",
                      flush=True)
            synthesize_vtest(vtest)
    if "1080p" not in need:
        return {"vtest": vtest}
    clip = out_dir / CLIP_NAME
    ok = False
    if clip.is_file():
        try:
            info = probe(clip, count=False)
            ok = (info.width, info.height) == CLIP_SIZE
        except (MediaError, ValueError):
            ok = False
    if not ok:
        if log:
            print(f"making {clip} from {vtest.name} with ffmpeg (1080p30 H.264) ...", flush=True)
        make_clip(vtest, clip)
    return {"vtest": vtest, "1080p": clip}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", type=Path, default=None,
                   help="OpenCV's vtest.avi (default: ../shared/media/vtest.avi if there, else one is made)")
    p.add_argument("--out-dir", type=Path, default=MEDIA_DIR)
    p.add_argument("--live-seconds", type=float, default=0.0,
                   help="also write the live playlist lasting this long (0 = no)")
    a = p.parse_args(argv)
    try:
        paths = ensure_media(a.out_dir, a.src)
        for key, path in paths.items():
            info = probe(path)
            print(f"{key:6} {path}  {info.width}x{info.height} {info.fps:g} fps {info.frames} frames "
                  f"{path.stat().st_size / 1e6:.1f} MB")
        if a.live_seconds > 0:
            print(f"live   {live_playlist(paths['1080p'], a.live_seconds)}")
    except MediaError as exc:
        print(f"make_bench_media: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
