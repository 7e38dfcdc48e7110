"""A directory or glob of still images, read in natural order (img2 before img10) as one finite source."""

from __future__ import annotations

import glob
import logging
import time
from pathlib import Path

import cv2

from streamer.errors import SourceError
from streamer.files import IMAGE_EXTENSIONS, natural_key
from streamer.preprocess import to_bgr8
from streamer.sources.base import Frame, FrameSource

log = logging.getLogger(__name__)


def image_root(spec: str) -> Path:
    """The folder that image names are given relative to: the directory itself, a single image's folder, or
    a glob's deepest folder without wildcards (``frames/*/cam*.png`` → ``frames``)."""
    p = Path(spec).expanduser()
    if p.is_dir():
        return p
    if p.is_file():
        return p.parent
    return next((q for q in p.parents if not any(c in str(q) for c in "*?[")), Path("."))


def list_images(spec: str) -> list[Path]:
    """Image files of a directory, a glob pattern or a single image path, naturally sorted."""
    p = Path(spec).expanduser()
    if p.is_dir():
        files = [f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()]
    elif p.is_file():
        files = [p]
    else:
        files = [Path(f) for f in glob.glob(str(p), recursive=True)]
        files = [f for f in files if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()]
    return sorted(files, key=natural_key)


class ImageFilesSource(FrameSource):
    """Every image once, in order; the frame index is the image's position in the sorted list.

    An unreadable image is skipped with a warning (its index is left out: indices stay positions in the list)
    and counted; a list of only unreadable images ends with nothing. Each frame carries its image's path
    relative to :func:`image_root` (``file`` in the predictions), so a gap in the indices is never ambiguous.
    ``fps`` is unknown unless given, so ``--realtime`` paces it only when it is set.
    """

    kind = "images"

    def __init__(self, spec: str, name: str, *, fps: float | None = None, realtime: bool = False) -> None:
        super().__init__(name, spec, is_live=realtime and fps is not None, fps=fps, realtime=realtime)
        self.files: list[Path] = []
        self.root = Path(".")
        self.skipped = 0
        self._pos = 0

    def _open(self) -> None:
        self.files = list_images(self.spec)
        self.root = image_root(self.spec)
        if not self.files:
            raise SourceError(f"no images found at {self.spec}",
                              f"expected files ending in {', '.join(sorted(IMAGE_EXTENSIONS))}")
        self.total_frames = len(self.files)

    def _read(self) -> Frame | None:
        while self._pos < len(self.files):
            path = self.files[self._pos]
            index = self._pos
            self._pos += 1
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if image is None:
                self.skipped += 1
                log.warning("source %s: skipping unreadable image %s", self.name, path)
                continue
            return Frame(to_bgr8(image), index, time.time(), time.monotonic(), file=self._relative(path))
        self.detail = "end of images" + (f" ({self.skipped} unreadable skipped)" if self.skipped else "")
        return None

    def input_files(self) -> list[Path]:
        return list(self.files)

    def _relative(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.name
