"""A NumPy transcription of streamer/gpu/nv12_resize.cu, step for step (float32, the same rounding points).

The CPU tests hold it against the path the model was validated with (OpenCV's NV12→BGR, then
``preprocess.resize_into``); the GPU tests hold the kernel against it. Import as ``from nv12_reference import
nv12_resize``.
"""

from __future__ import annotations

import cv2
import numpy as np

from streamer.gpu.nv12 import BT601_LIMITED, ColorMatrix


def bgr_float(y: np.ndarray, uv: np.ndarray, m: ColorMatrix = BT601_LIMITED) -> np.ndarray:
    """Every pixel of an NV12 picture as clamped float BGR (chroma from the co-sited sample)."""
    h, w = y.shape
    luma = (y.astype(np.float32) - np.float32(m.y_offset)) * np.float32(m.y_scale)
    u = np.repeat(np.repeat(uv[:, 0::2], 2, 0), 2, 1)[:h, :w].astype(np.float32) - 128
    v = np.repeat(np.repeat(uv[:, 1::2], 2, 0), 2, 1)[:h, :w].astype(np.float32) - 128
    b = luma + np.float32(m.b_u) * u
    g = luma + np.float32(m.g_u) * u + np.float32(m.g_v) * v
    r = luma + np.float32(m.r_v) * v
    return np.clip(np.stack([b, g, r], -1), 0, 255)


def _bilinear(img: np.ndarray, fx: np.ndarray, fy: np.ndarray) -> np.ndarray:
    """OpenCV-style bilinear samples at (fy[i], fx[j]) with the kernel's edge clamping, rounded."""
    h, w = img.shape[:2]

    def axis(f: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        i0 = np.floor(f).astype(np.int64)
        a = (f - i0).astype(np.float32)
        a[i0 < 0] = 0
        i0 = np.maximum(i0, 0)
        a[i0 >= n - 1] = 0
        i0 = np.minimum(i0, n - 1)
        return i0, np.minimum(i0 + 1, n - 1), a

    x0, x1, ax = axis(fx, w)
    y0, y1, ay = axis(fy, h)
    ax, ay = ax[None, :, None], ay[:, None, None]
    top = img[y0][:, x0] * (1 - ax) + img[y0][:, x1] * ax
    bottom = img[y1][:, x0] * (1 - ax) + img[y1][:, x1] * ax
    return np.rint(top * (1 - ay) + bottom * ay)


def _area_weights(n_src: int, n_dst: int) -> np.ndarray:
    """(n_dst, n_src): the coverage of each source pixel by each output pixel's footprint."""
    scale = n_src / n_dst
    weights = np.zeros((n_dst, n_src), np.float32)
    for o in range(n_dst):
        lo, hi = o * scale, (o + 1) * scale
        first, last = int(np.floor(lo)), min(int(np.ceil(hi)) - 1, n_src - 1)
        for i in range(first, last + 1):
            weights[o, i] = min(i + 1, hi) - max(i, lo)
    return weights


def nv12_resize(y: np.ndarray, uv: np.ndarray, out_h: int, out_w: int,
                m: ColorMatrix = BT601_LIMITED) -> np.ndarray:
    """What the kernel writes into a batch row: (out_h, out_w, 3) uint8 BGR."""
    h, w = y.shape
    img = bgr_float(y, uv, m)
    if w > 4 * out_w and h > 4 * out_h:
        fx = (np.arange(4 * out_w, dtype=np.float32) + 0.5) * np.float32(w / (4 * out_w)) - 0.5
        fy = (np.arange(4 * out_h, dtype=np.float32) + 0.5) * np.float32(h / (4 * out_h)) - 0.5
        mid = _bilinear(img, fx, fy)
        out = mid.reshape(out_h, 4, out_w, 4, 3).mean(axis=(1, 3))
    elif (h, w) == (out_h, out_w):
        out = img
    elif w >= out_w and h >= out_h:
        wy, wx = _area_weights(h, out_h), _area_weights(w, out_w)
        rows = (wy @ img.reshape(h, w * 3)).reshape(out_h, w, 3)  # separable: rows, then columns
        out = np.einsum("owc,pw->opc", rows, wx) / np.float32((h / out_h) * (w / out_w))
    else:
        fx = (np.arange(out_w, dtype=np.float32) + 0.5) * np.float32(w / out_w) - 0.5
        fy = (np.arange(out_h, dtype=np.float32) + 0.5) * np.float32(h / out_h) - 0.5
        out = _bilinear(img, fx, fy)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def to_nv12(bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An even-sized BGR image as NV12 planes (OpenCV's BT.601 limited-range I420, chroma interleaved)."""
    h, w = bgr.shape[:2]
    i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
    y = i420[:h].copy()
    u = i420[h:h + h // 4].reshape(h // 2, w // 2)
    v = i420[h + h // 4:].reshape(h // 2, w // 2)
    uv = np.empty((h // 2, w), np.uint8)
    uv[:, 0::2], uv[:, 1::2] = u, v
    return y, uv
