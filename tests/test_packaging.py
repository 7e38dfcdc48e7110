"""A built wheel works without the checkout: installed in a fresh venv, ``streamer --source demo`` run from
another directory finds the default model and the demo clip inside the package (300/300)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from streamer_helpers import REPO

from streamer.paths import ASSETS

# what the build does not need (tests, tools, caches, per-machine plans) is left out of the copy it runs in
NOT_BUILT = shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__", "tests", "tools",
                                   "docs", "media", "out", "runs", "plans")


def _run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r


def test_manifest_in_carries_the_assets_into_the_sdist() -> None:
    listed = {name for line in (REPO / "MANIFEST.in").read_text().splitlines()
              if line.startswith("include ") for name in line.split()[1:]}
    assert set(ASSETS) <= listed
    assert all((REPO / rel).is_file() for rel in ASSETS)


@pytest.mark.slow
def test_wheel_runs_the_demo_outside_the_checkout(tmp_path: Path) -> None:
    """~15 s: build (pip wheel, isolated build env) → fresh venv → demo from an unrelated directory. The venv
    gets this environment's packages as its dependencies through a .pth file (no downloads); the streamer it
    runs is the wheel's, which the test checks. (.ci/run does the same with the dependencies from PyPI.)"""
    t0 = time.monotonic()
    src = tmp_path / "src"  # a copy: a build in the checkout writes build/ there, under other runs' feet
    shutil.copytree(REPO, src, ignore=NOT_BUILT)
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--disable-pip-version-check",
          "-w", str(dist), str(src)], timeout=240)
    (wheel,) = dist.glob("streamer-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"streamer/_assets/{rel}" for rel in ASSETS} <= names
    assert {f"streamer/control/static/{f}" for f in ("index.html", "preview.js", "preview.css")} <= names
    built = time.monotonic()

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
          "--disable-pip-version-check", str(wheel)], timeout=120)
    # only now (pip must not see this environment's editable streamer): its packages as the dependencies
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
                     ).stdout.strip())
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_streamer_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    installed = time.monotonic()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = _run([str(python), "-c", "import streamer.paths as p; print(p.DATA_DIR); print(p.DEFAULT_MODEL)"],
                 cwd=elsewhere, env=env).stdout.split()
    assert [Path(w).is_relative_to(site / "streamer" / "_assets") for w in where] == [True, True], where
    r = _run([str(venv / "bin" / "streamer"), "--source", "demo", "--bind", "none"], cwd=elsewhere, env=env,
             timeout=120)
    assert "demo accuracy: 300/300" in r.stdout, r.stdout + r.stderr
    print(f"wheel built in {built - t0:.1f} s, installed in {installed - built:.1f} s, "
          f"demo ran in {time.monotonic() - installed:.1f} s")
