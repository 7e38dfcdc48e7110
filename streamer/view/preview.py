"""The preview's frames: the newest classified frame of each source with its prediction, as JPEG on demand.

The results thread hands :meth:`PreviewHub.show` the frames the tap took (at most one per source per
``[control] preview_fps`` interval while someone watches, every frame of an annotated source): it keeps a
reference to the newest one per source, nothing more. A client (streamer.control.preview) encodes it when
it is about to send it: downscaled to ``[control] preview_width`` and JPEG-compressed, once per frame however
many clients watch, in the client's own thread. Nobody watching: the tap takes no frames, nothing is encoded.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from streamer.protocol import Prediction
from streamer.view.tap import FrameTap

JPEG_QUALITY = 75


@dataclass(frozen=True)
class Still:
    """One source's newest preview frame: ``seq`` counts the frames the preview got from that source."""

    source: str
    seq: int
    pred: Prediction
    jpeg: bytes
    width: int
    height: int

    @property
    def latency_ms(self) -> float | None:
        latency = self.pred.latency_ms
        return None if latency is None else round(latency, 2)


class _Newest:
    """A source's newest frame (reference) and the JPEG of the frame last encoded."""

    __slots__ = ("encode_lock", "image", "pred", "seq", "still")

    def __init__(self) -> None:
        self.seq = 0
        self.pred: Prediction | None = None
        self.image: np.ndarray | None = None
        self.still: Still | None = None
        self.encode_lock = threading.Lock()


class PreviewHub:
    def __init__(self, tap: FrameTap, width: int = 480, quality: int = JPEG_QUALITY) -> None:
        self.tap = tap
        self.width = width
        self.quality = quality
        self.encoded = 0  # JPEGs made (nobody watching: stays put)
        self._newest: dict[str, _Newest] = {}
        self._cond = threading.Condition()
        self._closed = threading.Event()

    @property
    def interval_s(self) -> float:
        """The least time between two frames of one source sent to a client."""
        return self.tap.preview_interval_s

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    # -- the results thread ------------------------------------------------------------------------------
    def show(self, pred: Prediction, image: np.ndarray) -> None:
        with self._cond:
            newest = self._newest.get(pred.source)
            if newest is None:
                newest = self._newest[pred.source] = _Newest()
            newest.seq += 1
            newest.pred, newest.image = pred, image
            self._cond.notify_all()

    def close(self) -> None:
        """The run is over: clients' streams end."""
        with self._cond:
            self._closed.set()
            self._cond.notify_all()

    # -- clients -----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def watching(self) -> Iterator[PreviewHub]:
        """A client watches inside the block: the tap takes frames meanwhile."""
        self.tap.watch()
        try:
            yield self
        finally:
            self.tap.unwatch()

    def newer(self, seen: dict[str, int], only: str | None = None) -> list[str]:
        """Sources (``only`` that one) whose newest frame is not the one ``seen`` (source → seq) says a client
        has."""
        with self._cond:
            return [name for name, n in self._newest.items()
                    if n.seq != seen.get(name, 0) and (only is None or name == only)]

    def wait(self, seen: dict[str, int], not_before: float, until: float, only: str | None = None) -> None:
        """Return at ``time.monotonic() >= not_before`` once a source (``only`` that one) has a frame newer
        than ``seen``, or at ``until`` at the latest, or when the hub closes."""
        delay = not_before - time.monotonic()
        if delay > 0 and self._closed.wait(delay):
            return
        with self._cond:
            while not self._closed.is_set():
                if self.newer(seen, only):
                    return
                remaining = until - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(remaining)

    def still(self, source: str) -> Still | None:
        """The source's newest frame as a JPEG (encoded now unless that frame already was), or None."""
        with self._cond:
            newest = self._newest.get(source)
            if newest is None:
                return None
        with newest.encode_lock:
            with self._cond:
                seq, pred, image = newest.seq, newest.pred, newest.image
            if newest.still is not None and newest.still.seq == seq:
                return newest.still
            if pred is None or image is None:
                return None
            jpeg, (w, h) = self.encode(image)
            newest.still = Still(source, seq, pred, jpeg, w, h)
            return newest.still

    def encode(self, image: np.ndarray) -> tuple[bytes, tuple[int, int]]:
        """``image`` scaled down to at most ``width`` pixels wide, as JPEG; and its size."""
        h, w = image.shape[:2]
        if w > self.width:
            h, w = max(1, round(h * self.width / w)), self.width
            # bilinear: a tenth of INTER_AREA's time on a 1080p frame, and good enough for a preview
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise RuntimeError(f"JPEG encoding of a {w}x{h} frame failed")
        with self._cond:
            self.encoded += 1
        return data.tobytes(), (w, h)
