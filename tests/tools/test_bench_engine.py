"""``tools/bench.py engine`` on the CPU: the ONNX Runtime figures, the GPU sections listed as skipped with the
reason, and a JSON that reads back into the result record."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench_engine_records import EngineResult
from streamer_helpers import REPO


def test_engine_bench_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "engine.json"
    cmd = [sys.executable, str(REPO / "tools" / "bench.py"), "engine", "--models", "seed", "--cpu-only",
           "--seconds", "0.05", "--batches", "1,4", "--work-dir", str(tmp_path / "work"),
           "--no-default-model", "--json-out", str(out)]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=240,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "== engine-only" in done.stdout and "--cpu-only given" in done.stdout
    doc = json.loads(out.read_text())
    assert doc["command"] == "engine" and doc["failed"] == []
    assert [(p["section"], p["batch"]) for p in doc["points"]] == [("engine", 1), ("engine", 4)]
    assert all(p["variant"].startswith("onnxruntime-cpu") and p["images_per_s"] > 0 for p in doc["points"])
    assert any(line.startswith("GPU sections") for line in doc["skipped"])
    result = EngineResult.from_dict(doc)
    assert result.models[0].key == "seed" and result.models[0].input_hw == (32, 32)
    assert result.targets == ()  # every target needs the GPU sections
