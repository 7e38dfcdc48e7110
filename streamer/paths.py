"""Where streamer's own files (the default model, the demo clip) live, independent of the working directory.

A checkout keeps them in ``engines/`` beside the package (the repository's layout); a wheel carries a copy of
``ASSETS`` under ``streamer/_assets/`` (setup.py puts it there), so an installed streamer needs no checkout.
``DATA_DIR`` is whichever of the two holds them: relative paths such as ``engines/shapes_cnn.onnx`` resolve
against it.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CHECKOUT_DIR = PACKAGE_DIR.parent  # the repository root when running from a checkout (pip install -e .)
ASSETS_DIR = PACKAGE_DIR / "_assets"  # an installed wheel's copy of ASSETS

# what a wheel ships, relative to the repository root (the torch backend loads .pt2/.pth beside the .onnx)
ASSETS: tuple[str, ...] = (
    "engines/shapes_cnn.onnx",
    "engines/shapes_cnn.fp16.onnx",
    "engines/shapes_cnn.int8.onnx",
    "engines/shapes_cnn.json",
    "engines/shapes_cnn.int8.json",
    "engines/shapes_cnn.pt2",
    "engines/shapes_cnn.pth",
    "engines/demo/shapes_demo.mp4",
    "engines/demo/shapes_demo.json",
)

DATA_DIR = ASSETS_DIR if (ASSETS_DIR / "engines").is_dir() else CHECKOUT_DIR
ENGINES_DIR = DATA_DIR / "engines"
DEFAULT_MODEL = ENGINES_DIR / "shapes_cnn.onnx"
DEMO_DIR = ENGINES_DIR / "demo"


def resolve_data_path(path: str | Path, base: Path | None = None) -> Path:
    """A user-given path: absolute as is; relative against ``base`` (default: the working directory) when it
    exists there, else against ``DATA_DIR`` (so ``engines/shapes_cnn.onnx`` works from anywhere, installed
    or not). A path found in neither place is returned where its folder exists (the error then names a real
    place)."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    here = (base or Path.cwd()) / p
    if here.exists():
        return here
    ours = DATA_DIR / p
    if ours.exists() or (ours.parent.is_dir() and not here.parent.is_dir()):
        return ours  # (missing in both: name streamer's engines/shapes_cnn.onnx, not ./engines/...)
    return here
