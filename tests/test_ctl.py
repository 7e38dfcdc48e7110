"""``streamer-ctl`` against a real control plane (a pipeline streaming files the test writes) and against
nothing at all: what it prints and its exit status."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import free_port
from streamer_helpers import REPO, color_sequence, write_video

from streamer.config import load_settings
from streamer.control.api import serve
from streamer.control.server import HttpServer
from streamer.pipeline import Pipeline
from streamer.sinks import Sink


def ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamer.ctl", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.fixture
def service(color_model: Path) -> Iterator[tuple[Pipeline, HttpServer]]:
    s = load_settings(None, {"model": str(color_model), "backend": "onnxruntime", "threads": 1,
                             "bind": "none", "stats_interval_s": 0.0, "keep_running": True,
                             "http": "127.0.0.1:0", "realtime": True})
    pipeline = Pipeline(s, sinks=[Sink()])
    server = serve(s, pipeline)
    assert server is not None
    pipeline.open()
    thread = threading.Thread(target=pipeline.run, daemon=True)
    thread.start()
    try:
        yield pipeline, server
    finally:
        pipeline.request_stop()
        thread.join(30)
        pipeline.close()
        server.close()


def test_list_add_remove_and_refusals(service: tuple[Pipeline, HttpServer], tmp_path: Path) -> None:
    _, server = service
    clip = write_video(tmp_path / "clip.avi", color_sequence(400, seed=8), size=(32, 32), fps=25.0)
    url = server.url
    added = ctl("--url", url, "add", f"{clip}#policy=drop-oldest", "--name", "door")
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith(f"added door (file {clip}, policy drop-oldest, ")
    listed = ctl("--url", url, "list")
    assert listed.returncode == 0
    header, row = listed.stdout.splitlines()
    assert header.split() == ["NAME", "STATE", "FPS", "FRAMES", "DROPPED", "POLICY", "URI"]
    assert row.split()[0:2] == ["door", "running"] and row.endswith(str(clip))
    duplicate = ctl("--url", url, "add", str(clip), "--name", "door")
    assert duplicate.returncode == 1
    assert duplicate.stderr == ("streamer-ctl: 409: a source named 'door' is already in this run (hint: "
                                "choose another name (GET /sources lists the names in use))\n")
    removed = ctl("--url", url, "remove", "door")
    assert removed.returncode == 0 and removed.stdout.startswith("removed door (file ")
    unknown = ctl("--url", url, "remove", "door-2")
    assert (unknown.returncode, unknown.stderr.splitlines()) == (1, [
        "streamer-ctl: 404: no source named 'door-2' in this run (hint: GET /sources lists the names in "
        "use)"])
    ready = ctl("--url", url, "ready")
    assert ready.returncode == 1 and "503: " in ready.stderr  # no source up: not ready
    metrics = ctl("--url", url, "metrics", "--grep", "streamer_frames_total")
    assert metrics.returncode == 0 and metrics.stdout.startswith('streamer_frames_total{source="door"} ')


def test_no_streamer_at_the_url_is_a_one_line_error() -> None:
    r = ctl("--url", f"127.0.0.1:{free_port()}", "list")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("streamer-ctl: no streamer answers at http://127.0.0.1:")
    assert len(r.stderr.splitlines()) == 1
    bad = ctl("frobnicate")
    assert bad.returncode == 2 and "invalid choice: 'frobnicate'" in bad.stderr
