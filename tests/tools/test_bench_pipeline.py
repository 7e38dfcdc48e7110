"""``tools/bench.py pipeline`` end to end on a tiny run: real clip, real ONNX Runtime, real CLI subprocess
publishing over ZeroMQ to the real subscriber process; the JSON it writes must hold every section and read
back into the result records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bench_pipeline_records import PipelineResult
from streamer_helpers import REPO, make_color_model

FRAMES = 24


@pytest.fixture(scope="module")
def bench_result(tmp_path_factory: pytest.TempPathFactory, vtest: Path) -> dict:
    tmp = tmp_path_factory.mktemp("bench")
    media = tmp / "media"
    media.mkdir()
    (media / "vtest.avi").symlink_to(vtest)
    model = make_color_model(tmp / "color.onnx")
    out = tmp / "pipeline.json"
    cmd = [sys.executable, str(REPO / "tools" / "bench.py"), "pipeline", "--inputs", "vtest",
           "--model", str(model), "--media-dir", str(media), "--work-dir", str(tmp / "work"),
           "--max-frames", str(FRAMES), "--engine-seconds", "0.2", "--batch", "4",
           "--live-input", "vtest", "--live-seconds", "1.5", "--live-window", "0.5",
           "--chart", str(tmp / "chart.png"), "--json-out", str(out), "--run-timeout", "60"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(out.read_text())
    result["_stdout"] = done.stdout
    return result


def test_every_section_is_measured(bench_result: dict) -> None:
    assert bench_result["command"] == "pipeline" and bench_result["device"] == "cpu"
    assert bench_result["failed"] == []
    (row,) = bench_result["offline"]
    assert row["config"] == "vtest"
    assert row["decode"]["frames"] == FRAMES and row["decode_fps"] > 0
    assert bench_result["engine"]["images_per_s"] > 0 and bench_result["engine"]["batch"] == 4
    assert row["naive"]["frames"] == FRAMES and row["naive"]["received"] == FRAMES
    assert row["streamer_fps"] > 0
    engine = bench_result["engine"]  # pre-staged batches through the executor the backend makes
    assert engine["loop"]["batches"] >= 5 and engine["slots"] >= 2 and engine["cpu_ms_per_image"] > 0


def test_the_json_reads_back_into_records(bench_result: dict) -> None:
    result = PipelineResult.from_dict(bench_result)
    assert result.device == "cpu" and result.row("vtest") is not None
    assert result.to_dict() == {k: v for k, v in bench_result.items() if k in result.to_dict()}


def test_the_subscriber_counts_every_message(bench_result: dict) -> None:
    streamer = bench_result["offline"][0]["streamer"]
    delivery = streamer["delivery"]
    assert streamer["rc"] == 0 and delivery["complete"]
    assert delivery["received"] == streamer["expected"] == delivery["eos_frames"] == FRAMES
    assert streamer["lost"] == 0 and delivery["missed"] == 0 and delivery["duplicates"] == 0
    assert streamer["summary"]["frames"] == FRAMES
    assert set(streamer["stages"]) >= {"resize_ms_per_frame", "engine_ms_per_frame", "results_ms_per_frame"}
    assert delivery["latency_ms"]["p99"] >= delivery["latency_ms"]["p50"] > 0


def test_live_run_reports_windows_and_targets(bench_result: dict) -> None:
    live = bench_result["live"]
    assert live["run"]["rc"] == 0 and live["fps_paced"] == pytest.approx(10.0)
    assert live["frames_total"] == 15  # 1.5 s at vtest's 10 fps, stopped by --max-frames
    assert [w["window"] for w in live["run"]["delivery"]["windows"]] == [0, 1, 2]
    names = {t["name"] for t in bench_result["targets"]}
    assert {"streamer_vs_limit[vtest]", "zero_lost", "live_drift", "live_p99_ms"} <= names
    zero = next(t for t in bench_result["targets"] if t["name"] == "zero_lost")
    assert zero["value"] == 0 and zero["met"] is True
    assert "== targets (issue 5)" in bench_result["_stdout"]
