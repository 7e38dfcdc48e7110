"""The demo clip: moving shapes over panning textured backgrounds, with per-frame ground truth.

One shape class per segment of frames (all ten classes, in a seeded order); within a segment the shape
glides, turns and breathes in size while the background texture pans. Frames are drawn with the ``shapes``
dataset's own renderer (:func:`streamer.model.shapes.draw_scene`) at 256×256, so the default model — which
sees each whole frame after :func:`streamer.preprocess.resize_into` to 32×32 — classifies them as it did
its training data. The truth file maps every frame index to its label index and name.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from streamer.errors import SourceError
from streamer.model import shapes
from streamer.paths import DEMO_DIR

DEFAULT_DIR = DEMO_DIR  # the committed clip (a checkout's engines/demo, or an installed wheel's copy)
VIDEO_NAME = "shapes_demo.mp4"
TRUTH_NAME = "shapes_demo.json"


@dataclass(frozen=True)
class DemoSpec:
    frames: int = 300
    size: int = 256
    fps: float = 30.0
    segment: int = 30  # frames per shape class
    seed: int = 7

    def __post_init__(self) -> None:
        if self.frames <= 0 or self.size < 32 or self.segment <= 0 or self.fps <= 0:
            raise ValueError(f"bad demo spec {self}")


def label_schedule(spec: DemoSpec) -> list[int]:
    """Label of every frame: segments of ``spec.segment`` frames cycling through a seeded class order."""
    order = np.random.default_rng(spec.seed).permutation(len(shapes.LABELS))
    return [int(order[(i // spec.segment) % len(order)]) for i in range(spec.frames)]


def render_frames(spec: DemoSpec = DemoSpec()):  # -> Iterator[tuple[int, np.ndarray]]
    """Yield ``(label, frame)`` with frame uint8 HxWx3 **BGR**; deterministic in ``spec``."""
    schedule = label_schedule(spec)
    rng = np.random.default_rng([spec.seed, 1])
    seg_state: dict = {}
    for i, label in enumerate(schedule):
        seg = i // spec.segment
        if seg_state.get("seg") != seg:
            base, color = shapes.random_colors(rng)
            r0, r1 = rng.uniform(0.27, 0.36, 2)
            margin = max(r0, r1) * 0.9
            seg_state = {
                "seg": seg, "base": base, "color": color, "params": {}, "r": (r0, r1),
                "start": rng.uniform(margin, 1 - margin, 2), "end": rng.uniform(margin, 1 - margin, 2),
                "angle0": rng.uniform(0, 2 * math.pi), "spin": rng.uniform(-0.08, 0.08),
                "aspect": rng.uniform(0.9, 1.1), "pan": rng.uniform(-0.01, 0.01, 2),
            }
            # draw once to fill the texture parameters from this segment's generator state
            shapes.background(rng, 8, base, params=seg_state["params"])
        s = seg_state
        t = (i % spec.segment) / max(1, spec.segment - 1)
        ease = 0.5 - 0.5 * math.cos(math.pi * t)
        cx, cy = s["start"] + (s["end"] - s["start"]) * ease
        radius = s["r"][0] + (s["r"][1] - s["r"][0]) * t
        k = i % spec.segment
        bg = shapes.background(rng, spec.size, s["base"], offset=(s["pan"][0] * k, s["pan"][1] * k),
                               params=s["params"])
        shape = shapes.ShapeParams(label=label, cx=float(cx), cy=float(cy), radius=float(radius),
                                   angle=float(s["angle0"] + s["spin"] * k), aspect=float(s["aspect"]),
                                   color=s["color"])
        yield label, np.ascontiguousarray(shapes.draw_scene(bg, shape)[..., ::-1])


def render_clip(out_dir: str | Path = DEFAULT_DIR, spec: DemoSpec = DemoSpec(), progress: bool = False
                ) -> tuple[Path, Path]:
    """Write ``shapes_demo.mp4`` (mp4v) and ``shapes_demo.json`` (ground truth) into ``out_dir``."""
    from streamer.model.progress import progress_bar

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    video, truth = out_dir / VIDEO_NAME, out_dir / TRUTH_NAME
    tmp_video = out_dir / f".{VIDEO_NAME}.{os.getpid()}.tmp.mp4"
    fourcc = cv2.VideoWriter_fourcc(*"mp4v")
    writer = cv2.VideoWriter(str(tmp_video), fourcc, spec.fps, (spec.size, spec.size))
    if not writer.isOpened():
        raise SourceError(f"{tmp_video}: OpenCV cannot write mp4v video here",
                          "install an OpenCV build with FFmpeg (opencv-python-headless has it)")
    labels: list[int] = []
    try:
        with progress_bar(spec.frames, "rendering demo clip", progress, "frame") as bar:
            for label, frame in render_frames(spec):
                writer.write(frame)
                labels.append(label)
                bar.update(1)
    finally:
        writer.release()
    os.replace(tmp_video, video)
    doc = {
        "video": VIDEO_NAME, "fps": spec.fps, "width": spec.size, "height": spec.size,
        "frames_total": spec.frames, "segment_frames": spec.segment, "seed": spec.seed,
        "labels": list(shapes.LABELS),
        "frames": [{"frame": i, "label": lab, "name": shapes.LABELS[lab]} for i, lab in enumerate(labels)],
    }
    tmp_truth = truth.with_name(truth.name + ".tmp")
    tmp_truth.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp_truth, truth)
    return video, truth


def load_truth(path: str | Path) -> list[int]:
    """Label index of every frame, from a truth file written by :func:`render_clip`."""
    doc = json.loads(Path(path).read_text())
    frames = sorted(doc["frames"], key=lambda f: f["frame"])
    if [f["frame"] for f in frames] != list(range(len(frames))):
        raise SourceError(f"{path}: frame indices are not 0..{len(frames) - 1}", "re-render the demo clip")
    return [int(f["label"]) for f in frames]


def ensure_demo_clip(out_dir: str | Path = DEFAULT_DIR) -> tuple[Path, Path]:
    """(video, truth) of the demo clip; the committed one if present, else rendered (deterministically)."""
    out_dir = Path(out_dir)
    video, truth = out_dir / VIDEO_NAME, out_dir / TRUTH_NAME
    if video.is_file() and video.stat().st_size > 0 and truth.is_file():
        return video, truth
    return render_clip(out_dir)
