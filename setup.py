"""Everything about the package is in pyproject.toml; this only adds its data files from outside it.

A wheel (``pip install .``, ``pip wheel .``, ``python -m build``) carries a copy of the default model and the
demo clip — ``streamer.paths.ASSETS``, from the checkout's engines/ — under ``streamer/_assets/``, so an
installed streamer runs ``--source demo`` without a checkout. An editable install copies nothing: it reads
the checkout's engines/ directly (see streamer/paths.py).
"""

from __future__ import annotations

import runpy
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# paths.py imports nothing of streamer's: it runs here, in the build environment, without the package's deps
ASSETS: tuple[str, ...] = runpy.run_path(str(ROOT / "streamer" / "paths.py"))["ASSETS"]


class BuildPyWithAssets(build_py):
    def _asset_targets(self) -> list[tuple[Path, Path]]:
        return [(ROOT / rel, Path(self.build_lib) / "streamer" / "_assets" / rel) for rel in ASSETS]

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        for src, dst in self._asset_targets():
            if not src.is_file():
                raise SystemExit(f"setup.py: {src} is missing: the wheel ships it (streamer.paths.ASSETS); "
                                 "restore it from git or re-export the model (tools/export_onnx.py)")
            dst.parent.mkdir(parents=True, exist_ok=True)
            self.copy_file(str(src), str(dst))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        extra = [] if self.editable_mode else [str(dst) for _, dst in self._asset_targets()]
        return [*super().get_outputs(include_bytecode), *extra]


setup(cmdclass={"build_py": BuildPyWithAssets})
