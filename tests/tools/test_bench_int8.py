"""``tools/bench.py int8``: every section for real on a short run (a clip the test renders), a JSON that reads
back into the result record, and the targets computed from medians."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bench_common import Machine
from bench_int8 import Accuracy, Int8Result, Runs, targets
from streamer_helpers import REPO

from streamer.model.demo import DemoSpec, render_clip


def test_int8_bench_runs_every_section(tmp_path: Path) -> None:
    clip, _ = render_clip(tmp_path / "clip", DemoSpec(frames=90, size=128, segment=9))
    out = tmp_path / "int8.json"
    cmd = [sys.executable, str(REPO / "tools" / "bench.py"), "int8", "--repeats", "1", "--engine-seconds",
           "0.2", "--held-out", "64", "--clip", str(clip), "--work-dir", str(tmp_path / "work"),
           "--json-out", str(out)]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=280,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["command"] == "int8" and doc["failed"] == [] and doc["lost"] == 0
    assert doc["int8_kernels"]["QLinearConv"] == 20
    result = Int8Result.from_dict(doc)
    assert [r.precision for r in result.engine] == [r.precision for r in result.streamer] == ["fp32", "int8"]
    assert result.streamer[1].engine_id.endswith("/onnxruntime-int8")
    assert [a.name for a in result.accuracy] == ["held-out", "demo clip"]
    assert result.accuracy[0].images == 64 and result.accuracy[1].images == 300
    assert [p.precision for p in result.plans] == ["fp32", "fp16", "int8"]
    assert all(p.plan_bytes for p in result.plans) and result.plans[2].onnx == "shapes_cnn.int8.onnx"
    assert [t.name for t in result.targets] == ["engine_int8_vs_fp32", "streamer_int8_vs_fp32",
                                                "agreement[held-out]", "agreement[demo clip]"]
    assert "targets" in done.stdout and "plan/pth" in done.stdout


def test_targets_are_ratios_of_medians() -> None:
    machine = Machine(cpus=2, platform="test")
    result = Int8Result(machine, (), "m.onnx", "m.int8.onnx", {}, 16, 2, 3, clip="clip.avi",
                        engine=(Runs("fp32", (100.0, 300.0, 110.0), "images/s"),
                                Runs("int8", (200.0, 150.0, 900.0), "images/s")),
                        accuracy=(Accuracy("demo clip", "demo", 300, 1.0, 0.99, 0.985),))
    by_name = {t.name: t for t in targets(result)}
    assert by_name["engine_int8_vs_fp32"].value == pytest.approx(200 / 110)
    assert by_name["engine_int8_vs_fp32"].met and by_name["agreement[demo clip]"].met is False
    with pytest.raises(ValueError, match="no positive"):
        Runs("int8", (), "frames/s")
