"""Shared fixtures (helpers to import live in streamer_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from streamer_helpers import make_color_model

from media import require_ffmpeg, synthesize_vtest
from streamer.publish import Publisher


@pytest.fixture(scope="session")
def color_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_color_model(tmp_path_factory.mktemp("model") / "color.onnx")


@pytest.fixture(scope="session")
def vtest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for OpenCV's vtest.avi (768x576, 10 fps, 795 frames, MS-MPEG4 v3), made once per session
    with ffmpeg by the same function as tools/make_bench_media.py: nothing outside the repository is read."""
    require_ffmpeg()
    return synthesize_vtest(tmp_path_factory.mktemp("media") / "vtest.avi")


@pytest.fixture
def free_endpoint() -> str:
    """A loopback endpoint whose port was free a moment ago."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"


@pytest.fixture
def publisher() -> Iterator[Publisher]:
    """A started Publisher on a free loopback port (``publisher.endpoint``), closed with no linger."""
    pub = Publisher("tcp://127.0.0.1:*", linger_ms=0).start()
    yield pub
    pub.close()
