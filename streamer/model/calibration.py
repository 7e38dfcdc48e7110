"""Image sets for calibration and accuracy checks, read and resized exactly as the pipeline does.

A source (``--calib`` / ``--eval`` of tools/quantize.py) is one of:

- ``shapes`` (or ``shapes:train`` / ``shapes:val`` / ``shapes:test``): the procedural dataset's splits;
  calibration defaults to the training split, evaluation to the validation split;
- ``demo``: the bundled demo clip, with its per-frame ground truth;
- a video file: frames spread evenly over the clip; labels from ``<stem>.json`` beside it (the demo clip's
  truth format: ``{"labels": [...], "frames": [{"frame": i, "label": k}, ...]}``) when there is one;
- a folder, a glob or one image: ``<folder>/<class name>/*.png`` (one subfolder per class, the usual
  labelled-folder layout) gives labels; loose images give none.

Frames become uint8 BGR with :func:`streamer.preprocess.to_bgr8` and are resized with
:func:`streamer.preprocess.resize_into`, as the sources and the batcher do, so the model is calibrated and
judged on what it will see. Images are rows of uint8 ``[N, H, W, 3]`` BGR, the model's input.
"""

from __future__ import annotations

import glob
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from streamer.errors import DatasetError
from streamer.files import IMAGE_EXTENSIONS, natural_key
from streamer.host import usable_cores
from streamer.preprocess import resize_into, to_bgr8

log = logging.getLogger(__name__)

SHAPES_SPLITS = ("train", "val", "test")
SOURCES_HINT = ("give shapes[:train|val|test], demo, a video file, a folder or glob of images "
                "(labels: one subfolder per class)")


@dataclass(frozen=True)
class Samples:
    """Model inputs (uint8 ``[N, H, W, 3]`` BGR) and, for a labelled set, each one's class index."""

    images: np.ndarray
    labels: np.ndarray | None  # int64 [N], indices into the model's labels
    source: str  # what they are, for messages and the manifest: "shapes:val", "clip.mp4 (frames 0..299)"

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[3] != 3:
            raise ValueError(f"samples must be uint8 [N, H, W, 3], not {self.images.dtype}"
                             f"{self.images.shape}")
        if len(self.images) == 0:
            raise ValueError("no samples")
        if self.labels is not None and self.labels.shape != (len(self.images),):
            raise ValueError(f"{len(self.labels)} labels for {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.images)


def spread(total: int, limit: int | None) -> np.ndarray:
    """Indices of ``limit`` items spread evenly over ``total`` (all of them without a limit)."""
    if limit is None or limit >= total:
        return np.arange(total)
    return np.unique(np.linspace(0, total - 1, limit).round().astype(np.int64))


def load_samples(spec: str, input_hw: tuple[int, int], labels: tuple[str, ...], *, limit: int | None,
                 default_split: str = "train", purpose: str = "calibration") -> Samples:
    """Up to ``limit`` samples of source ``spec`` sized for a model with input ``input_hw`` and ``labels``."""
    name = spec.strip()
    if name == "shapes" or name.startswith("shapes:"):
        split = name.partition(":")[2] or default_split
        return _shapes(split, input_hw, labels, limit, purpose)
    if name == "demo":
        from streamer.model.demo import ensure_demo_clip

        video, truth = ensure_demo_clip()
        return _video(video, input_hw, labels, limit, purpose, truth, "demo")
    path = Path(name).expanduser()
    if path.is_file() and path.suffix.lower() not in IMAGE_EXTENSIONS:
        truth = path.with_suffix(".json")
        return _video(path, input_hw, labels, limit, purpose, truth if truth.is_file() else None, str(path))
    return _images(name, input_hw, labels, limit, purpose)


# -- shapes ------------------------------------------------------------------------------------------------
def _shapes(split: str, input_hw: tuple[int, int], labels: tuple[str, ...], limit: int | None,
            purpose: str) -> Samples:
    from streamer.model import shapes

    if split not in SHAPES_SPLITS:
        raise DatasetError(f"{purpose} source shapes:{split}: no such split",
                           f"use one of {', '.join('shapes:' + s for s in SHAPES_SPLITS)}")
    h, w = input_hw
    if h != w:
        raise DatasetError(f"{purpose} source shapes: the model takes {h}x{w} images, shapes are square",
                           SOURCES_HINT)
    seed = {"train": shapes.TRAIN_SEED, "val": shapes.VAL_SEED, "test": shapes.TEST_SEED}[split]
    count = limit or 10_000
    images, truth = shapes.make_shapes(count, seed, size=h, workers=min(usable_cores(), 1 + count // 2048))
    bgr = np.ascontiguousarray(images[..., ::-1])
    same_labels = tuple(labels) == shapes.LABELS
    if purpose != "calibration" and not same_labels:
        raise DatasetError(f"{purpose} source shapes: the model's classes ({', '.join(labels[:4])}, ...) are "
                           "not the shapes classes", "pass --eval with a labelled folder of its own classes")
    return Samples(bgr, truth if same_labels else None, f"shapes:{split}")


# -- videos ------------------------------------------------------------------------------------------------
def _video(path: Path, input_hw: tuple[int, int], labels: tuple[str, ...], limit: int | None, purpose: str,
           truth: Path | None, name: str) -> Samples:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise DatasetError(f"{purpose} source {path}: not a video OpenCV can open, nor an image",
                           SOURCES_HINT)
    try:
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        # frames spread over the clip when it says how long it is, else the first ``limit``
        wanted = set(spread(count, limit).tolist()) if count > 0 else None
        last = max(wanted) if wanted else -1
        h, w = input_hw
        rows: list[np.ndarray] = []
        index: list[int] = []
        frame = 0
        while limit is None or wanted is not None or len(rows) < limit:
            if wanted is not None and frame > last:
                break
            if not cap.grab():
                break
            if wanted is None or frame in wanted:
                ok, image = cap.retrieve()
                if ok and image is not None:
                    row = np.empty((h, w, 3), np.uint8)
                    resize_into(to_bgr8(image), row)
                    rows.append(row)
                    index.append(frame)
            frame += 1
    finally:
        cap.release()
    if not rows:
        raise DatasetError(f"{purpose} source {path}: no frame could be read", "check the file plays")
    frames = np.asarray(index)
    classes = _video_truth(truth, frames, labels, purpose) if truth is not None else None
    return Samples(np.stack(rows), classes, f"{name} ({len(rows)} frames of {frame})")


def _video_truth(truth: Path, frames: np.ndarray, labels: tuple[str, ...], purpose: str) -> np.ndarray:
    try:
        doc = json.loads(truth.read_text())
        names = [str(x) for x in doc["labels"]]
        by_frame = {int(f["frame"]): int(f["label"]) for f in doc["frames"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{purpose} truth {truth}: not a ground-truth file ({type(exc).__name__}: {exc})",
                           'expected {"labels": [...], "frames": [{"frame": 0, "label": 3}, ...]}') from None
    missing = [int(f) for f in frames if int(f) not in by_frame]
    if missing:
        raise DatasetError(f"{purpose} truth {truth}: no label for frame {missing[0]} "
                           f"({len(missing)} frames unlabelled)", "label every frame of the clip")
    return np.asarray([_class_index(names[by_frame[int(f)]], labels, truth, purpose) for f in frames],
                      np.int64)


# -- still images ------------------------------------------------------------------------------------------
def _image_files(spec: str) -> tuple[list[Path], Path | None]:
    """(image files, the labelled root when the folder has one subfolder per class)."""
    p = Path(spec).expanduser()
    if p.is_file():
        return [p], None
    if p.is_dir():
        loose = [f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS]
        nested = [f for f in p.glob("*/*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS]
        if nested and not loose:
            return sorted(nested, key=natural_key), p
        return sorted(loose, key=natural_key), None
    found = [Path(f) for f in glob.glob(str(p), recursive=True)]
    return sorted((f for f in found if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS),
                  key=natural_key), None


def _images(spec: str, input_hw: tuple[int, int], labels: tuple[str, ...], limit: int | None,
            purpose: str) -> Samples:
    files, labelled_root = _image_files(spec)
    if not files:
        raise DatasetError(f"{purpose} source {spec!r}: no such file, folder or glob of images", SOURCES_HINT)
    h, w = input_hw
    rows: list[np.ndarray] = []
    classes: list[int] = []
    unreadable = 0
    for i in spread(len(files), limit):
        image = cv2.imread(str(files[i]), cv2.IMREAD_UNCHANGED)
        if image is None:
            unreadable += 1
            continue
        row = np.empty((h, w, 3), np.uint8)
        resize_into(to_bgr8(image), row)
        rows.append(row)
        if labelled_root is not None:
            classes.append(_class_index(files[i].parent.name, labels, files[i].parent, purpose))
    if unreadable:
        log.warning("%s source %s: %d unreadable image(s) skipped", purpose, spec, unreadable)
    if not rows:
        raise DatasetError(f"{purpose} source {spec!r}: none of its {len(files)} images could be read",
                           "check the files are images")
    where = f"{spec} ({len(rows)} images" + (f", {len(set(classes))} classes)" if classes else ")")
    return Samples(np.stack(rows), np.asarray(classes, np.int64) if labelled_root else None, where)


def _class_index(name: str, labels: tuple[str, ...], where: Path, purpose: str) -> int:
    try:
        return labels.index(name)
    except ValueError:
        raise DatasetError(f"{purpose} labels at {where}: class {name!r} is not one of the model's "
                           f"({', '.join(labels)})", "name each subfolder after one of the model's classes"
                           ) from None
