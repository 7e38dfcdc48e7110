"""Where the repository's own files live (engines/, config/), independent of the working directory."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
ENGINES_DIR = REPO_ROOT / "engines"
CONFIG_DIR = REPO_ROOT / "config"
DEFAULT_CONFIG = CONFIG_DIR / "default.toml"
DEFAULT_MODEL = ENGINES_DIR / "shapes_cnn.onnx"


def resolve_data_path(path: str | Path, base: Path | None = None) -> Path:
    """A user-given path: absolute as is; relative against ``base`` (default: the working directory) when it
    exists there, else against the repository root (so ``engines/shapes_cnn.onnx`` works from anywhere).
    A path found in neither place is returned where its folder exists (the error then names a real place)."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    here = (base or Path.cwd()) / p
    if here.exists():
        return here
    in_repo = REPO_ROOT / p
    if in_repo.exists() or (in_repo.parent.is_dir() and not here.parent.is_dir()):
        return in_repo  # (missing in both: name the repository's engines/shapes_cnn.onnx, not ./engines/...)
    return here
