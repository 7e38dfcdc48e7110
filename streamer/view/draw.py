"""The overlay of an annotated frame: a dark panel at the top left with the source name, frame index, fps and
capture→publish latency, then one bar and ``label score`` line per top-k class, best first.

Frames narrower than ``MIN_WIDTH`` are first scaled up by a whole factor (nearest neighbour: the pixels stay
sharp), so the text stays readable on small inputs; the panel's size follows the frame's width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from streamer.protocol import Prediction

MIN_WIDTH = 480
FONT = cv2.FONT_HERSHEY_SIMPLEX
TEXT = (255, 255, 255)
BAR = (80, 200, 80)  # BGR: green bars
BAR_BACK = (70, 70, 70)


def upscale_factor(width: int) -> int:
    """The whole factor a frame ``width`` pixels wide is scaled up by before drawing (1: as it is)."""
    return 1 if width >= MIN_WIDTH else math.ceil(MIN_WIDTH / max(1, width))


def fit(image: np.ndarray) -> np.ndarray:
    """``image`` scaled up for the overlay when it is small (a new array), else ``image`` itself."""
    k = upscale_factor(image.shape[1])
    if k == 1:
        return image
    return cv2.resize(image, (image.shape[1] * k, image.shape[0] * k), interpolation=cv2.INTER_NEAREST)


@dataclass(frozen=True)
class Layout:
    """Where the panel's parts go on a frame ``width`` pixels wide, for ``rows`` top-k classes."""

    width: int
    rows: int

    @property
    def scale(self) -> float:
        return min(2.0, max(0.7, self.width / 800))

    @property
    def font_scale(self) -> float:
        return 0.5 * self.scale

    @property
    def thickness(self) -> int:
        return 1 if self.scale < 1.4 else 2

    @property
    def line(self) -> int:
        return round(22 * self.scale)

    @property
    def margin(self) -> int:
        return round(8 * self.scale)

    @property
    def bar_width(self) -> int:
        return round(90 * self.scale)

    def panel(self) -> tuple[int, int, int, int]:
        """x0, y0, x1, y1 of the panel (two header lines, then one line per class)."""
        m = self.margin
        w = min(self.width - m, m + round(330 * self.scale))
        return m, m, w, m + self.line * (2 + self.rows) + m // 2

    def label_box(self, row: int) -> tuple[int, int, int, int]:
        """x0, y0, x1, y1 of class ``row``'s line (bar and text): where its label is drawn."""
        x0, y0, x1, _ = self.panel()
        top = y0 + self.line * (2 + row)
        return x0, top, x1, top + self.line


def draw(image: np.ndarray, pred: Prediction, fps: float | None, latency_ms: float | None) -> None:
    """Draw ``pred``'s overlay on ``image`` in place (BGR uint8; call :func:`fit` first for small frames)."""
    height, width = image.shape[:2]
    lay = Layout(width, len(pred.topk))
    x0, y0, x1, y1 = lay.panel()
    y1 = min(y1, height)
    if x1 <= x0 or y1 <= y0:
        return
    roi = image[y0:y1, x0:x1]
    np.right_shift(roi, 1, out=roi)  # darken: the text stays readable on any picture
    fs, th, m, line = lay.font_scale, lay.thickness, lay.margin, lay.line
    tx = x0 + m

    def text(s: str, row: int, x: int = tx) -> None:
        baseline_y = y0 + line * (row + 1) - round(line * 0.3)
        cv2.putText(image, s, (x, baseline_y), FONT, fs, TEXT, th, cv2.LINE_AA)

    text(f"{pred.source}  #{pred.frame_index}", 0)
    parts = [f"{fps:.1f} fps" if fps else "- fps",
             f"{latency_ms:.1f} ms" if latency_ms is not None else "- ms"]
    text("   ".join(parts), 1)
    for row, top in enumerate(pred.topk):
        bx0, by0, _, by1 = lay.label_box(row)
        pad = max(2, line // 5)
        bar_top, bar_bottom = by0 + pad, by1 - pad
        if bar_bottom > height:
            break
        bar_x = bx0 + m
        cv2.rectangle(image, (bar_x, bar_top), (bar_x + lay.bar_width, bar_bottom), BAR_BACK, -1)
        filled = round(lay.bar_width * min(1.0, max(0.0, top.score)))
        if filled:
            cv2.rectangle(image, (bar_x, bar_top), (bar_x + filled, bar_bottom), BAR, -1)
        text(f"{top.label} {top.score:.2f}", 2 + row, bar_x + lay.bar_width + m)
