"""Frame normalisation and resizing into a batch slot (the only CPU pixel work on the hot path).

Frames inside the pipeline are BGR uint8 HxWx3 (OpenCV's native layout). Odd inputs (grey, BGRA, 16-bit)
are converted here; everything else (÷255, mean/std, HWC→CHW, BGR→RGB) lives inside the exported model.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from streamer.host import usable_cores

# Anti-aliased downscale. cv2.INTER_AREA alone costs ~6.6 ms for 1080p→32×32 (non-integer factors take its
# slow path) against ~0.07 ms for a bilinear step to 4× the target followed by INTER_AREA, which looks the
# same to the model. Everything that feeds the model (batcher, demo accuracy, bench) goes through resize_into.
RESIZE_INTERPOLATION = cv2.INTER_AREA
_PRESCALE = 4


def to_bgr8(frame: np.ndarray) -> np.ndarray:
    """Return ``frame`` as BGR uint8 HxWx3; grey, BGRA and 16-bit/float inputs are converted."""
    if frame.dtype != np.uint8:
        if frame.dtype == np.uint16:
            frame = (frame >> 8).astype(np.uint8)
        elif np.issubdtype(frame.dtype, np.floating):
            frame = np.clip(frame * 255.0 if frame.max(initial=0) <= 1.0 else frame, 0, 255).astype(np.uint8)
        else:
            frame = np.clip(frame, 0, 255).astype(np.uint8)
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    channels = frame.shape[2]
    if channels == 3:
        return frame
    if channels == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if channels == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    raise ValueError(f"unsupported frame shape {frame.shape}")


def resize_into(frame: np.ndarray, out: np.ndarray) -> None:
    """Resize a BGR uint8 frame straight into ``out`` (an HxWx3 uint8 view of a slot's host input)."""
    h, w = out.shape[:2]
    fh, fw = frame.shape[:2]
    if fh == h and fw == w:
        out[...] = frame
        return
    if fh > _PRESCALE * h and fw > _PRESCALE * w:
        frame = cv2.resize(frame, (_PRESCALE * w, _PRESCALE * h), interpolation=cv2.INTER_LINEAR)
    cv2.resize(frame, (w, h), dst=out, interpolation=RESIZE_INTERPOLATION)


# -- native threading ----------------------------------------------------------------------------------------
DECODE_THREADS_ENV = "OPENCV_FFMPEG_THREADS"  # FFmpeg decoder threads per capture, read when a capture opens
POOL_THREADS_ENV = "OPENCV_FOR_THREADS_NUM"  # OpenCV's own thread pool (cv2.setNumThreads)


def decode_threads(sources: int, cores: int) -> int | None:
    """FFmpeg threads per capture for ``sources`` decoded at once: the cores shared out (at least 1), so that
    N captures do not each start one thread per core; None (FFmpeg's default) for a single source.

    Measured on the GPU host (16 cores, 16 × 1080p H.264): the default 16 threads per capture (256 decoder
    threads) starved the batcher and gave 819 frames/s; 1 per capture gave 1,244 (decode alone: 1,503/1,404).
    """
    if sources <= 1:
        return None
    return max(1, cores // sources)


class NativeThreads:
    """OpenCV threading while a pipeline runs; ``restore()`` puts back what was there.

    - Several sources: OpenCV's own pool is set to one thread (its idle workers busy-wait after every call,
      taking cores from the decoders) and each capture's FFmpeg decoder gets :func:`decode_threads` threads.
      One source keeps OpenCV's default pool: on the H100 host, vtest.avi alone ran 658 frames/s with a
      pool of 1 against 930 with the default, in the same bench run (the decode's colour conversion uses it).
    The user's own ``OPENCV_FOR_THREADS_NUM`` / ``OPENCV_FFMPEG_THREADS`` win.
    """

    def __init__(self, sources: int, cores: int | None = None) -> None:
        self.sources = sources
        self.cores = cores or usable_cores()
        self._pool_before: int | None = None
        self._env_set = False
        self.decoder_threads: int | None = None

    def apply(self) -> NativeThreads:
        if self.sources > 1 and POOL_THREADS_ENV not in os.environ:
            self._pool_before = cv2.getNumThreads()
            cv2.setNumThreads(1)
        threads = decode_threads(self.sources, self.cores)
        if threads is not None and DECODE_THREADS_ENV not in os.environ:
            os.environ[DECODE_THREADS_ENV] = str(threads)
            self._env_set = True
            self.decoder_threads = threads
        return self

    def restore(self) -> None:
        if self._pool_before is not None:
            cv2.setNumThreads(self._pool_before)
            self._pool_before = None
        if self._env_set:
            os.environ.pop(DECODE_THREADS_ENV, None)
            self._env_set = False
