"""``tools/bench.py scale`` (the driver's forwarding cost) and ``tools/bench.py multigpu`` (two processes vs
one, what tools/gpu_multi.sh runs on the 2-GPU host) on this machine, small: real processes, real ZeroMQ, the
real CLI; the JSON reads back and every message and frame is accounted for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from streamer_helpers import REPO, color_sequence, write_video


def bench(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(REPO / "tools" / "bench.py"), *args, "--json-out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(out.read_text())


def test_forwarding_and_channel_throughput_and_latency(tmp_path: Path) -> None:
    doc = bench(tmp_path, "scale", "--sections", "forward,latency,channel", "--messages", "6000", "--senders",
                "2", "--rate", "1000", "--latency-seconds", "1", "--repeats", "1")
    assert [(t["way"], t["received"]) for t in doc["throughput"]] == [("direct", 6000), ("forwarded", 6000)]
    assert all(t["per_s"] > 0 for t in doc["throughput"])
    received = [(lat["way"], lat["received"]) for lat in doc["latency"]]
    assert received == [("direct", 1000), ("forwarded", 1000)]
    assert all(0 < lat["p50_ms"] <= lat["p99_ms"] <= lat["max_ms"] for lat in doc["latency"])
    assert [(c["predictions"], c["written"]) for c in doc["channel"]] == [(6000, 6000)]  # each once
    targets = {t["name"]: t for t in doc["targets"]}
    assert targets["forward_vs_direct"]["value"] > 0 and targets["added_p99_ms"]["value"] is not None


def test_multigpu_script_runs_one_and_two_processes_and_checks_every_frame(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "clip.avi", color_sequence(40, seed=9))
    doc = bench(tmp_path, "multigpu", "--devices", "cpu,cpu", "--decode", "cpu", "--backend", "onnxruntime",
                "--sources", "4", "--loops", "1", "--rounds", "1", "--clip", str(clip), "--work-dir",
                str(tmp_path / "work"))
    runs = [(r["way"], len(r["processes"]), r["frames"]) for r in doc["runs"]]
    assert runs == [("one", 1, 160), ("two", 2, 160)]
    assert [p["sources"] for p in doc["runs"][1]["processes"]] == [2, 2]  # source i → process i mod 2
    assert all(p["exactly_once"] for r in doc["runs"] for p in r["processes"])
    assert {t["name"]: t["value"] for t in doc["targets"]}["exactly_once"] == 1.0
