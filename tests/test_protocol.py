"""docs/protocol.md against what the code sends: every field of every message type is documented in that
type's table (and every documented field is sent), the version numbers agree, and the sentences that once
disagreed with the behaviour (eos ``frames``, empty ``latency_ms``) say what the code does."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from streamer_helpers import REPO, color_sequence, write_video
from zmq_helpers import make_prediction

from streamer.config import load_settings
from streamer.metrics import Metrics
from streamer.pipeline import Pipeline
from streamer.protocol import PROTOCOL_MINOR, PROTOCOL_VERSION, eos_payload, health_payload, stats_payload
from streamer.sinks import Sink

DOC = (REPO / "docs" / "protocol.md").read_text()
COMMON = {"v", "minor", "type", "publish_ts", "seq"}  # the "Every payload has" table


def documented(heading: str) -> set[str]:
    """Field names in the first column of the first table after ``heading`` (``| `a`, `b` | ...`` rows)."""
    start = DOC.index(heading)
    table = re.search(r"((?:^\|.*\n)+)", DOC[start:], re.MULTILINE)
    assert table is not None, heading
    first_cells = [row.split("|")[1] for row in table.group(1).splitlines()]
    return {name for cell in first_cells for name in re.findall(r"`(\w+)`", cell)}


def test_the_version_in_the_title_is_the_code_s() -> None:
    assert DOC.splitlines()[0].endswith(f"(version {PROTOCOL_VERSION}.{PROTOCOL_MINOR})")
    assert f"| {PROTOCOL_VERSION}.{PROTOCOL_MINOR} |" in DOC  # a line of the version history


def test_common_fields() -> None:
    assert documented("Every payload has:") == COMMON


@pytest.mark.parametrize("kind", ["pred", "eos", "health"])
def test_every_field_sent_is_documented_and_back(kind: str) -> None:
    payload = {
        "pred": lambda: dataclasses.replace(make_prediction(3), file="a/b.png").to_dict(1.0) | {"seq": 0},
        "eos": lambda: eos_payload("cam0", 10, "end", 1.0, skipped=2) | {"seq": 0},
        "health": lambda: health_payload("cam0", "up", "", 1.0) | {"seq": 0},
    }[kind]()
    assert set(payload) - COMMON == documented(f"### `{kind}.<source>`") - COMMON


class StatsSink(Sink):
    name = "stats"

    def __init__(self) -> None:
        self.msgs: list[dict] = []

    def stats(self, stats: dict) -> None:
        self.msgs.append(stats_payload(stats, 1.0))


def test_stats_fields_and_an_empty_latency(tmp_path: Path, color_model: Path) -> None:
    """A real run's stats: the documented fields; the first (before any frame) has latency_ms as an object
    whose values are null — as the doc now says."""
    clip = write_video(tmp_path / "c.avi", color_sequence(8))
    sink = StatsSink()
    s = load_settings(None, {"sources": (str(clip),), "model": str(color_model), "bind": "none",
                             "backend": "onnxruntime", "threads": 1, "stats_interval_s": 0.0})
    with Pipeline(s, sinks=[sink]) as pipeline:
        pipeline.run()
    last = sink.msgs[-1]  # the one sent at the end
    sent = {"fps", "frames", "latency_ms", "uptime_s", "sources", "batches", "mean_batch", "model"}
    assert sent <= set(last) and sent | {"publisher"} <= documented("### `stats`")
    per_source = set(last["sources"]["c"])
    for name in ("frames", "dropped", "queued", "policy", "state", "reconnects", "skipped"):
        assert name in per_source and f'"{name}"' in DOC
    empty = Metrics(["c"]).window()["latency_ms"]  # an interval without a frame
    assert empty == {"p50": None, "p95": None, "p99": None}
    assert "always this object, each value `null` when no frame" in DOC


def test_eos_frames_are_the_frames_classified() -> None:
    row = next(line for line in DOC.splitlines()
               if line.startswith("| `frames` | int | frames of the source"))
    assert "classified" in row and "read from" not in row
