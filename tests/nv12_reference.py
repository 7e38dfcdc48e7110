"""A NumPy transcription of streamer/gpu/nv12_resize.cu, step for step (the same integer and float32
operations in the same order, so the same bytes), vectorised over pixels; each function names the device
function it transcribes.

The CPU tests hold it against the path the model was validated with (OpenCV's FFmpeg decode, then
``preprocess.resize_into``), which it reproduces exactly; the GPU tests hold the kernel against it. Import as
``from nv12_reference import nv12_resize``. Python floats are IEEE doubles and NumPy float32 arithmetic rounds
each operation, as the kernel's ``__d*_rn``/``__f*_rn`` steps do.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from streamer.gpu.nv12 import BT601_LIMITED, ColorMatrix

F32 = np.float32


def mulhi16(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    return (a * b) >> 16


def bgr_image(y: np.ndarray, uv: np.ndarray, m: ColorMatrix = BT601_LIMITED) -> np.ndarray:
    """``bgr_at`` at every pixel: (h, w, 3) int64 BGR, swscale's fixed-point yuv2rgb."""
    h, w = y.shape
    y_coeff, y_offset, v2r, u2g, v2g, u2b = m.sws_coefficients()
    u = np.repeat(np.repeat(uv[:, 0::2].astype(np.int64), 2, 0), 2, 1)[:h, :w] * 8 - 1024
    v = np.repeat(np.repeat(uv[:, 1::2].astype(np.int64), 2, 0), 2, 1)[:h, :w] * 8 - 1024
    luma = mulhi16(y.astype(np.int64) * 8 - y_offset, y_coeff)
    b = luma + mulhi16(u, u2b)
    g = luma + (mulhi16(u, u2g) + mulhi16(v, v2g))
    r = luma + mulhi16(v, v2r)
    return np.clip(np.stack([b, g, r], -1), 0, 255)


def axis_scale(n_src: int, n_dst: int) -> float:
    return 1.0 / (n_dst / n_src)


def linear_taps(n_src: int, n_dst: int, area_mode: bool) -> tuple[np.ndarray, ...]:
    """``linear_tap`` for every output index: (s0, s1, a0, a1) arrays."""
    inv_scale = n_dst / n_src
    scale = 1.0 / inv_scale
    taps = np.empty((n_dst, 4), np.int64)
    for d in range(n_dst):
        if not area_mode:
            f = F32((d + 0.5) * scale - 0.5)
            s = math.floor(f)
            f = F32(f - F32(s))
        else:
            s = math.floor(d * scale)
            f = F32((d + 1) - (s + 1) * inv_scale)
            f = F32(0) if f <= 0 else F32(f - F32(math.floor(f)))
        if s < 0:
            f, s = F32(0), 0
        if s >= n_src - 1:
            f, s = F32(0), n_src - 1
        a0, a1 = np.rint((F32(1) - f) * F32(2048)), np.rint(f * F32(2048))  # half to even
        taps[d] = (s, min(s + 1, n_src - 1), int(a0), int(a1))
    return taps[:, 0], taps[:, 1], taps[:, 2], taps[:, 3]


def vertical(h0: np.ndarray, h1: np.ndarray, b0: np.ndarray, b1: np.ndarray) -> np.ndarray:
    return np.clip((mulhi16(h0 >> 4, b0) + mulhi16(h1 >> 4, b1) + 2) >> 2, 0, 255)


def linear_resize(img: np.ndarray, out_h: int, out_w: int, area_mode: bool) -> np.ndarray:
    """``linear_sample`` at every output pixel of an (out_h, out_w) grid over ``img``."""
    h, w = img.shape[:2]
    xs0, xs1, xa0, xa1 = linear_taps(w, out_w, area_mode)
    ys0, ys1, ya0, ya1 = linear_taps(h, out_h, area_mode)

    def horizontal(rows: np.ndarray) -> np.ndarray:
        return rows[:, xs0] * xa0[None, :, None] + rows[:, xs1] * xa1[None, :, None]

    return vertical(horizontal(img[ys0]), horizontal(img[ys1]), ya0[:, None, None], ya1[:, None, None])


def area_fast_factor(n_src: int, n_dst: int) -> int:
    scale = axis_scale(n_src, n_dst)
    i = round(scale)  # half to even, as __double2int_rn
    return i if abs(scale - i) < np.finfo(np.float64).eps else 0


def area_fast_round(sums: np.ndarray, fx: int, fy: int) -> np.ndarray:
    if fx == 2 and fy == 2:
        return (sums + 2) >> 2
    return np.clip(np.rint(sums.astype(F32) * (F32(1) / F32(fx * fy))), 0, 255)


def area_fast(img: np.ndarray, fx: int, fy: int) -> np.ndarray:
    h, w = img.shape[:2]
    sums = img.reshape(h // fy, fy, w // fx, fx, 3).sum(axis=(1, 3))
    return area_fast_round(sums, fx, fy)


def area_taps(n_src: int, n_dst: int) -> tuple[np.ndarray, np.ndarray]:
    """``area_span``/``area_weight`` for every output index: (n_dst, k) source indices and float32 weights in
    the kernel's loop order, padded at the end with weight 0 (adding 0 leaves a float32 sum unchanged)."""
    scale = axis_scale(n_src, n_dst)
    spans = []
    for d in range(n_dst):
        fs1 = d * scale
        fs2 = fs1 + scale
        cell = min(scale, n_src - fs1)
        s2 = min(math.floor(fs2), n_src - 1)
        s1 = min(math.ceil(fs1), s2)
        head, tail = s1 - fs1 > 1e-3, fs2 - s2 > 1e-3
        taps = [(s1 - 1, F32((s1 - fs1) / cell))] if head else []
        taps += [(s, F32(1.0 / cell)) for s in range(s1, s2)]
        if tail:
            taps.append((s2, F32(min(min(fs2 - s2, 1.0), cell) / cell)))
        spans.append(taps)
    k = max(len(taps) for taps in spans)
    index, weight = np.zeros((n_dst, k), np.int64), np.zeros((n_dst, k), F32)
    for d, taps in enumerate(spans):
        for j, (s, a) in enumerate(taps):
            index[d, j], weight[d, j] = s, a
    return index, weight


def area_general(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """The kernel's float INTER_AREA loop: each source row across (``row``), then rows down (``acc``)."""
    h, w = img.shape[:2]
    xi, xw = area_taps(w, out_w)
    yi, yw = area_taps(h, out_h)
    src = img.astype(F32)
    rows = np.zeros((h, out_w, 3), F32)  # every source row's across-sum, shared by the outputs that use it
    for k in range(xi.shape[1]):
        rows = rows + src[:, xi[:, k]] * xw[None, :, k, None]
    acc = np.zeros((out_h, out_w, 3), F32)
    for k in range(yi.shape[1]):
        acc = acc + yw[:, k, None, None] * rows[yi[:, k]]
    return np.clip(np.rint(acc), 0, 255)


def resize_bgr(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """``resize_pixel`` over a whole BGR image (int): what ``preprocess.resize_into`` writes."""
    h, w = img.shape[:2]
    if (h, w) == (out_h, out_w):
        return img
    if w > 4 * out_w and h > 4 * out_h:
        return area_fast(linear_resize(img, 4 * out_h, 4 * out_w, False), 4, 4)
    if w >= out_w and h >= out_h:
        fx, fy = area_fast_factor(w, out_w), area_fast_factor(h, out_h)
        return area_fast(img, fx, fy) if fx and fy else area_general(img, out_h, out_w)
    return linear_resize(img, out_h, out_w, True)


def nv12_resize(y: np.ndarray, uv: np.ndarray, out_h: int, out_w: int,
                m: ColorMatrix = BT601_LIMITED) -> np.ndarray:
    """What the kernel writes into a batch row: (out_h, out_w, 3) uint8 BGR."""
    return resize_bgr(bgr_image(y, uv, m), out_h, out_w).astype(np.uint8)


def to_nv12(bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An even-sized BGR image as NV12 planes (OpenCV's BT.601 limited-range I420, chroma interleaved)."""
    h, w = bgr.shape[:2]
    i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
    y = i420[:h].copy()
    chroma = i420[h:].ravel()  # U then V, each (h/2, w/2), packed into rows of w
    u = chroma[:h * w // 4].reshape(h // 2, w // 2)
    v = chroma[h * w // 4:].reshape(h // 2, w // 2)
    uv = np.empty((h // 2, w), np.uint8)
    uv[:, 0::2], uv[:, 1::2] = u, v
    return y, uv
