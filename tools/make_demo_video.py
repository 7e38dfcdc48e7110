#!/usr/bin/env python3
"""Render the shapes demo clip (mp4v) and its per-frame ground truth (JSON).

    python tools/make_demo_video.py                      # → engines/demo/shapes_demo.mp4 + shapes_demo.json
    python tools/make_demo_video.py --out-dir runs/demo --frames 600 --size 320
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streamer.errors import StreamerError
from streamer.model.demo import DEFAULT_DIR, DemoSpec, render_clip


def main(argv: list[str] | None = None) -> int:
    d = DemoSpec()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", type=Path, default=DEFAULT_DIR)
    p.add_argument("--frames", type=int, default=d.frames)
    p.add_argument("--size", type=int, default=d.size, help="square frame side in pixels")
    p.add_argument("--fps", type=float, default=d.fps)
    p.add_argument("--segment", type=int, default=d.segment, help="frames per shape class")
    p.add_argument("--seed", type=int, default=d.seed)
    a = p.parse_args(argv)
    try:
        spec = DemoSpec(frames=a.frames, size=a.size, fps=a.fps, segment=a.segment, seed=a.seed)
        video, truth = render_clip(a.out_dir, spec, progress=True)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StreamerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"wrote {video} ({video.stat().st_size / 1e6:.2f} MB, {spec.frames} frames) and {truth}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
