"""Shared fixtures (helpers to import live in streamer_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from streamer_helpers import VTEST, make_color_model

from streamer.publish import Publisher


@pytest.fixture(scope="session")
def color_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_color_model(tmp_path_factory.mktemp("model") / "color.onnx")


@pytest.fixture(scope="session")
def vtest() -> Path:
    if not VTEST.is_file():
        pytest.skip(f"sample media {VTEST} not present")
    return VTEST


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
