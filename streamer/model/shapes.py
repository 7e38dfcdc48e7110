"""``shapes``: a procedural, deterministic 10-class image dataset (no download).

Each image is one filled shape (varied colour, size, position, rotation, aspect) over a textured background
(flat, gradient, stripes, checkers or smooth noise), with blur and sensor noise. Samples are drawn at
``render`` pixels and brought to 32×32 with :func:`streamer.preprocess.resize_into` — the very resize the
pipeline applies to video frames — so a model trained here sees demo-clip frames (:mod:`streamer.model.demo`,
drawn by the same :func:`draw_scene` at 256×256) the way it saw its training data.

Images are uint8 ``[N, H, W, 3]`` in **RGB** order (like CIFAR); the exported model takes BGR and flips it.
Image ``i`` of a given ``seed`` is the same on every machine and for any ``workers``: each chunk of
:data:`CHUNK` images has its own generator seeded by ``(seed, chunk index)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from streamer.preprocess import resize_into

LABELS: tuple[str, ...] = (
    "circle", "square", "triangle", "pentagon", "star", "cross", "ring", "crescent", "arrow", "heart",
)
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
SIZE = 32
RENDER = 64
CHUNK = 512
_SHIFT = 4  # fixed-point bits for sub-pixel polygon vertices
_RADIUS = (0.24, 0.40)  # shape radius as a fraction of the canvas side


def _regular(n: int, radius: float = 1.0, phase: float = -math.pi / 2) -> np.ndarray:
    t = phase + np.arange(n) * 2 * math.pi / n
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


def _star() -> np.ndarray:
    outer, inner = _regular(5, 1.0), _regular(5, 0.42, -math.pi / 2 + math.pi / 5)
    return np.stack([outer, inner], axis=1).reshape(-1, 2)


def _cross(w: float = 0.36) -> np.ndarray:
    return np.array([(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w),
                     (-1, w), (-1, -w), (-w, -w)], dtype=np.float64)


def _arrow() -> np.ndarray:
    return np.array([(-1, -0.22), (0.05, -0.22), (0.05, -0.62), (1, 0), (0.05, 0.62), (0.05, 0.22),
                     (-1, 0.22)], dtype=np.float64)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    pts = np.stack([x, y + 2.5], axis=1) / 16.5
    return pts


_CIRCLE = _regular(72)
# label → list of (polygon in unit coordinates, fill value); later polygons paint over earlier ones
_POLYGONS: dict[str, list[tuple[np.ndarray, int]]] = {
    "circle": [(_CIRCLE, 255)],
    "square": [(_regular(4, 0.92, math.pi / 4), 255)],
    "triangle": [(_regular(3, 1.0) + np.array([0.0, 0.2]), 255)],
    "pentagon": [(_regular(5, 0.95), 255)],
    "star": [(_star(), 255)],
    "cross": [(_cross(), 255)],
    "ring": [(_CIRCLE, 255), (_CIRCLE * 0.55, 0)],
    "crescent": [(_CIRCLE, 255), (_CIRCLE * 0.85 + (0.5, -0.1), 0)],
    "arrow": [(_arrow(), 255)],
    "heart": [(_heart(), 255)],
}
assert tuple(_POLYGONS) == LABELS


@dataclass(frozen=True)
class ShapeParams:
    """Where and how one shape is drawn, in canvas-relative units (so any canvas size looks alike)."""

    label: int
    cx: float  # centre, fraction of width
    cy: float
    radius: float  # fraction of the canvas side
    angle: float  # radians
    aspect: float  # y scale relative to x
    color: tuple[int, int, int]  # RGB

    def __post_init__(self) -> None:
        if not 0 <= self.label < len(LABELS):
            raise ValueError(f"shape label {self.label} out of range 0..{len(LABELS) - 1}")
        if self.radius <= 0:
            raise ValueError(f"shape radius must be positive, got {self.radius}")


def shape_mask(p: ShapeParams, size: int, supersample: int = 4) -> np.ndarray:
    """Float32 coverage mask in [0, 1] of shape ``p`` on a ``size``×``size`` canvas.

    Drawn hard-edged at ``supersample``× and area-averaged down: exact coverage at any canvas size (OpenCV's
    LINE_AA fill grows shapes by about half a pixel, which would make small renders fatter than large ones).
    """
    big = size * supersample
    mask = np.zeros((big, big), np.uint8)
    c, s = math.cos(p.angle), math.sin(p.angle)
    rot = np.array([[c, -s], [s, c]])
    scale = np.array([1.0, p.aspect]) * p.radius * big
    for poly, value in _POLYGONS[LABELS[p.label]]:
        pts = (poly * scale) @ rot.T + (p.cx * big, p.cy * big)
        fixed = np.round((pts - 0.5) * (1 << _SHIFT)).astype(np.int32)
        cv2.fillPoly(mask, [fixed], value, lineType=cv2.LINE_8, shift=_SHIFT)
    if supersample > 1:
        mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA)
    return mask.astype(np.float32) * (1.0 / 255.0)


def _luma(rgb: np.ndarray) -> float:
    return float(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])


def random_colors(rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int, int]]:
    """(background base colour, shape colour), both RGB, far enough apart in brightness or hue."""
    while True:
        bg = rng.integers(0, 256, 3).astype(np.float64)
        fg = rng.integers(0, 256, 3).astype(np.float64)
        if abs(_luma(fg) - _luma(bg)) >= 45 or np.abs(fg - bg).max() >= 110:
            return bg, (int(fg[0]), int(fg[1]), int(fg[2]))


def background(rng: np.random.Generator, size: int, base: np.ndarray, *, extent: float = 1.0,
               offset: tuple[float, float] = (0.0, 0.0), params: dict | None = None) -> np.ndarray:
    """A float32 RGB texture; ``extent``/``offset`` (canvas units) view a larger or shifted texture.

    Pass the same ``params`` dict (filled on the first call) to draw the same texture again, e.g. panned.
    """
    if params is None:
        params = {}
    if not params:
        params["kind"] = int(rng.integers(0, 5))
        params["amp"] = float(rng.uniform(10, 55))
        params["tint"] = rng.uniform(-1, 1, 3)
        params["angle"] = float(rng.uniform(0, math.pi))
        params["freq"] = float(rng.uniform(1.5, 5.0))
        params["grid"] = rng.uniform(-1, 1, (int(rng.integers(3, 8)),) * 2)
    kind, amp, tint = params["kind"], params["amp"], params["tint"]
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size * extent
    u = coords[None, :] + offset[0]
    v = coords[:, None] + offset[1]
    ca, sa = math.cos(params["angle"]), math.sin(params["angle"])
    if kind == 0:  # flat
        t = np.zeros((size, size), np.float32)
    elif kind == 1:  # linear gradient
        t = (u * ca + v * sa) * 2 - extent
    elif kind == 2:  # stripes
        t = np.sin(2 * math.pi * params["freq"] * (u * ca + v * sa))
    elif kind == 3:  # checkers, soft-edged
        f = params["freq"]
        t = np.tanh(4 * np.sin(math.pi * f * u) * np.sin(math.pi * f * v))
    else:  # smooth value noise, tiled so that panning wraps around
        grid = params["grid"]
        n = grid.shape[0]
        gx = np.mod(u * n, n).astype(np.float32).repeat(size, 0)
        gy = np.mod(v * n, n).astype(np.float32).repeat(size, 1)
        tiled = np.pad(grid, ((0, 1), (0, 1)), mode="wrap").astype(np.float32)
        t = cv2.remap(tiled, gx, gy, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    t = np.broadcast_to(t, (size, size)).astype(np.float32)
    colour = (base[None, None, :] + amp * t[..., None] * (0.6 + 0.4 * tint[None, None, :]))
    return colour.astype(np.float32)


def random_shape(rng: np.random.Generator, label: int, color: tuple[int, int, int]) -> ShapeParams:
    radius = float(rng.uniform(*_RADIUS))
    margin = radius * 0.85
    return ShapeParams(
        label=label,
        cx=float(rng.uniform(margin, 1 - margin)),
        cy=float(rng.uniform(margin, 1 - margin)),
        radius=radius,
        angle=float(rng.uniform(0, 2 * math.pi)),
        aspect=float(rng.uniform(0.85, 1.15)),
        color=color,
    )


def draw_scene(bg: np.ndarray, shape: ShapeParams) -> np.ndarray:
    """Composite ``shape`` over float RGB background ``bg`` → uint8 RGB (same size)."""
    size = bg.shape[0]
    alpha = shape_mask(shape, size)[..., None]
    fg = np.asarray(shape.color, np.float32)[None, None, :]
    img = bg * (1 - alpha) + fg * alpha
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def render_sample(rng: np.random.Generator, label: int, size: int = SIZE, render: int = RENDER) -> np.ndarray:
    """One uint8 RGB ``size``×``size`` image of class ``label``."""
    base, color = random_colors(rng)
    img = draw_scene(background(rng, render, base), random_shape(rng, label, color)).astype(np.float32)
    blur = rng.uniform(0, 1.2)
    if blur > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    img += rng.normal(0, rng.uniform(0, 8), img.shape).astype(np.float32)
    img8 = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    out = np.empty((size, size, 3), np.uint8)
    resize_into(img8, out)
    return out


def _chunk(args: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    seed, index, count, size = args
    rng = np.random.default_rng([seed, index])
    labels = rng.integers(0, len(LABELS), CHUNK)[:count]  # full chunk drawn: image i independent of n
    images = np.stack([render_sample(rng, int(lab), size) for lab in labels])
    return images, labels.astype(np.int64)


def make_shapes(n: int, seed: int = 0, size: int = SIZE, workers: int = 1,
                progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (uint8 RGB NHWC) and labels (int64); deterministic in ``(n, seed, size)``."""
    if n <= 0:
        raise ValueError(f"need a positive number of images, got {n}")
    jobs = [(seed, i, min(CHUNK, n - i * CHUNK), size) for i in range(math.ceil(n / CHUNK))]
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            for part in pool.map(_chunk, jobs):
                parts.append(part)
                if progress:
                    progress(len(part[1]))
    else:
        for job in jobs:
            parts.append(_chunk(job))
            if progress:
                progress(len(parts[-1][1]))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# disjoint seeds for the standard splits
TRAIN_SEED, VAL_SEED, TEST_SEED = 1, 2, 3
