"""Backpressure policies end to end: a realtime file at 100 fps into a pipeline held to ~30 batches/s, so the
source is always ahead. latest keeps only the newest frame, drop-oldest a short queue, block loses nothing;
every drop is counted in the buffer, the stats and the next prediction's ``dropped``."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from recording_sink import RecordingSink
from streamer_helpers import color_sequence, run_cli, write_video

from streamer.config import load_settings
from streamer.errors import ConfigError
from streamer.pipeline import Pipeline

FRAMES = 60


@pytest.fixture(scope="module")
def fast_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("policy") / "fast.avi", color_sequence(FRAMES, seed=11),
                       size=(32, 32), fps=100.0)


def run_behind(model: Path, spec: str, **overrides: Any) -> tuple[Any, RecordingSink, Pipeline]:
    s = load_settings(None, {"sources": (spec,), "model": str(model), "bind": "none",
                             "backend": "onnxruntime", "threads": 1, "batch": 1, "slots": 1, "realtime": True,
                             "stats_interval_s": 0.0, "live_queue": 4, **overrides})
    sink = RecordingSink()
    pipeline = Pipeline(s, sinks=[sink]).open()
    backend = pipeline.backend
    assert backend is not None
    real_infer = backend.infer
    hold = threading.Event()  # never set: its wait() makes each batch take 30 ms, like a slow engine

    def slow_infer(images: np.ndarray, out: np.ndarray) -> None:
        hold.wait(0.03)
        real_infer(images, out)

    backend.infer = slow_infer  # type: ignore[method-assign]
    try:
        summary = pipeline.run()
    finally:
        pipeline.close()
    return summary, sink, pipeline


@pytest.mark.parametrize("policy", ["latest", "drop-oldest", "block"])
def test_every_drop_is_counted_under_each_policy(policy: str, color_model: Path, fast_clip: Path) -> None:
    summary, sink, pipeline = run_behind(color_model, f"{fast_clip}#policy={policy}")
    buf = pipeline.buffers[0]
    preds = sink.preds("fast")
    frames = [e.frame for e in preds]
    assert buf.policy.value == policy and buf.capacity == {"latest": 1, "drop-oldest": 4, "block": 8}[policy]
    assert frames == sorted(set(frames)) and frames[-1] == FRAMES - 1  # in order, and the last one always
    # every frame is either published or counted as dropped, and each drop shows in the next prediction
    assert len(frames) + buf.dropped == FRAMES
    assert sum(e.dropped for e in preds) == buf.dropped == summary.dropped
    gaps = [b - a - 1 for a, b in zip([-1, *frames], frames, strict=False)]
    assert [e.dropped for e in preds] == gaps
    final = pipeline.stats()["sources"]["fast"]
    assert (final["dropped"], final["policy"]) == (buf.dropped, policy)
    if policy == "block":
        assert buf.dropped == 0
    else:
        assert buf.dropped > FRAMES // 3  # it was behind, and said so
    print(f"{policy}: {len(frames)} published, {buf.dropped} dropped")


def test_drop_oldest_keeps_runs_of_consecutive_frames(color_model: Path, fast_clip: Path) -> None:
    """A queue drops from its old end: what it delivers comes in runs; latest never keeps two in a row
    while behind (at 100 fps in and ~30 out)."""
    _, queue_sink, _ = run_behind(color_model, f"{fast_clip}#policy=drop-oldest")
    _, latest_sink, _ = run_behind(color_model, f"{fast_clip}#policy=latest")

    def consecutive(sink: RecordingSink) -> int:
        frames = [e.frame for e in sink.preds("fast")]
        return sum(b == a + 1 for a, b in itertools.pairwise(frames))

    assert consecutive(queue_sink) > consecutive(latest_sink)


def test_policy_option_and_config_validation(color_model: Path, fast_clip: Path, tmp_path: Path) -> None:
    s = load_settings(None, {"policy": "drop-oldest"})
    assert s.policy == "drop-oldest"
    with pytest.raises(ConfigError, match="--policy / \\[input\\] policy: invalid choice 'fastest'"):
        load_settings(None, {"policy": "fastest"})
    out = tmp_path / "p.json"
    r = run_cli("--source", str(fast_clip), "--policy", "latest", "--model", str(color_model),
                "--bind", "none", "--backend", "onnxruntime", "--summary-json", str(out),
                "--log-level", "info")
    assert r.returncode == 0, r.stderr
    assert "policy latest" in r.stderr  # the start-up line names each source's policy
