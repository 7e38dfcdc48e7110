"""Which frames the viewers take from the batcher, and how a frame becomes a host BGR image.

The batcher calls :meth:`FrameTap.take` for each frame it batches (only when a tap exists: ``--annotate`` or
``--preview`` is on). A frame is a :data:`Picture`: a callable that yields the frame as a host BGR uint8
HxWx3 array. A frame decoded on the CPU is its own picture (a reference, no copy: every read gives a new
array); a frame decoded on the GPU (``streamer.gpu.frames.DeviceFrame``) is downloaded, and only when a viewer
takes it, in the batcher's thread, before its device memory can be reused.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

Picture = Callable[[], np.ndarray]


def picture_of(image: Any) -> Picture:
    """The picture of a frame's ``image``: a host array as it is, anything else through its ``download()``."""
    if isinstance(image, np.ndarray):
        return lambda: image
    return image.download  # type: ignore[no-any-return]


class FrameTap:
    """Every frame of an annotated source, and (while at least one preview client watches) about one frame
    per ``preview_interval_s`` of each source. Any thread may change ``annotate_all``, ``annotated`` and the
    watcher count; ``take`` runs in the batcher's thread."""

    def __init__(self, preview_interval_s: float = 0.1) -> None:
        self.annotate_all = False  # --annotate DIR: every source, also those added while running
        self.annotated: frozenset[str] = frozenset()  # --annotate FILE: that source
        self.preview_interval_s = preview_interval_s
        self._watchers = 0
        self._lock = threading.Lock()
        self._due: dict[str, float] = {}  # source → when its next preview frame may be taken (batcher only)

    @property
    def watchers(self) -> int:
        return self._watchers

    def watch(self) -> None:
        """A preview client started watching: frames are taken from now on."""
        with self._lock:
            self._watchers += 1

    def unwatch(self) -> None:
        with self._lock:
            self._watchers = max(0, self._watchers - 1)

    def take(self, source: str, picture: Picture) -> np.ndarray | None:
        """The frame as a host image when a viewer needs it, else None (and the picture is not made)."""
        if self.annotate_all or source in self.annotated:
            return picture()
        if self._watchers:
            now = time.monotonic()
            if now >= self._due.get(source, 0.0):
                # a quarter of an interval early: a source running at the preview's rate, whose frames come
                # a little early or late, still has every frame taken
                self._due[source] = now + 0.75 * self.preview_interval_s
                return picture()
        return None
