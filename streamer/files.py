"""Writing a file whole or not at all: a reader never sees half of it, a crash never leaves half of it. And
which files are still images, in what order they are read (the image-folder source and calibration agree)."""

from __future__ import annotations

import os
import re
from pathlib import Path

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


def natural_key(path: Path) -> list[object]:
    """Sort key of natural order: ``img2`` before ``img10`` (digit runs compare as numbers, the rest without
    case)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(path))]


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then rename it over ``path``.
    OSError as the file system raises it; the temporary file never stays behind."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
