"""The NVDEC path on the GPU host (marker ``gpu``; skipped where NVDEC cannot run): predictions agree with
CPU decoding, every frame of a file comes out exactly once, damaged files are read to their end without a
crash or a hang, and a live HTTP stream killed and restarted comes back.

Media: clips the tests write with OpenCV (MPEG-4 part 2, which NVDEC decodes), the bundled demo clip, and
H.264/HEVC clips made elsewhere with ffmpeg (the GPU host has none): ``$STREAMER_NVDEC_MEDIA`` (set by
tools/gpu_nvdec.sh to the carried media/nvdec, made by tools/make_nvdec_media.py) and media/vtest_1080p.mp4.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from recording_sink import RecordingSink
from streamer_helpers import REPO, read_jsonl, run_cli

from streamer.sources.nvdec import nvdec_reason

pytestmark = pytest.mark.gpu
if nvdec_reason() is not None:
    pytest.skip(f"NVDEC is not available: {nvdec_reason()}", allow_module_level=True)

MEDIA = Path(os.environ.get("STREAMER_NVDEC_MEDIA", REPO / "media" / "nvdec"))
REAL_CLIP = REPO / "media" / "vtest_1080p.mp4"  # 1080p H.264 High with B-frames (tools/make_bench_media.py)
RUN_TIMEOUT = 240


def backend() -> str:
    from streamer.backends.select import probe

    return "torch" if probe("torch") is None else "onnxruntime"


def media(name: str) -> Path:
    path = MEDIA / name
    if not path.is_file():
        pytest.skip(f"{path} is missing (tools/make_nvdec_media.py; $STREAMER_NVDEC_MEDIA: the folder)")
    return path


def mp4v_clip(path: Path, frames: int, size: tuple[int, int] = (640, 360)) -> Path:
    """A clip whose frame i shows its own number and a moving shape (OpenCV's MPEG-4 part 2 writer)."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, size)
    assert writer.isOpened()
    w, h = size
    for i in range(frames):
        img = np.full((h, w, 3), (40 + i) % 256, np.uint8)
        cv2.circle(img, (int(w * (0.2 + 0.6 * i / frames)), h // 2), h // 4, (0, 0, 255), -1)
        cv2.putText(img, str(i), (10, h - 10), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
        writer.write(img)
    writer.release()
    return path


def classify(source: str, decode: str, out: Path, *extra: str) -> tuple[dict[int, int], dict[str, Any]]:
    """Run the CLI; returns {frame: top-1 index} and the summary."""
    summary = out.with_suffix(".summary.json")
    r = run_cli("--source", f"{source}#decode={decode}", "--backend", backend(), "--bind", "none", "-q",
                "--output", str(out), "--summary-json", str(summary), *extra, timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [row for row in read_jsonl(out) if row.get("type", "pred") == "pred"]
    frames = [row["frame"] for row in rows]
    assert len(frames) == len(set(frames)), "a frame was published twice"
    return {row["frame"]: row["topk"][0]["index"] for row in rows}, json.loads(summary.read_text())


def decoders(summary: dict[str, Any]) -> set[str]:
    return {info["decoder"] for info in summary["extra"]["decode"].values()}


@pytest.mark.parametrize("clip", ["demo", "real"])
def test_nvdec_top1_agrees_with_cpu_decoding(tmp_path: Path, clip: str) -> None:
    real = REAL_CLIP if REAL_CLIP.is_file() else media("live_1080p_nob.mp4")
    source = "demo" if clip == "demo" else str(real)
    cpu, _ = classify(source, "cpu", tmp_path / "cpu.jsonl")
    gpu, summary = classify(source, "nvdec", tmp_path / "nvdec.jsonl")
    assert decoders(summary) == {"nvdec"}
    assert sorted(gpu) == sorted(cpu), "NVDEC and the CPU decoded different frames"
    same = sum(gpu[f] == cpu[f] for f in cpu)
    print(f"top-1 agreement NVDEC vs CPU on {clip} ({source}): {same}/{len(cpu)} frames")
    assert same >= 0.99 * len(cpu)
    if clip == "demo":
        assert summary["accuracy"]["accuracy"] >= 0.99


def test_every_frame_of_a_file_exactly_once(tmp_path: Path) -> None:
    import cv2

    clip = mp4v_clip(tmp_path / "count.mp4", 150)
    cap = cv2.VideoCapture(str(clip))
    cpu_frames = 0
    while cap.grab():
        cpu_frames += 1
    cap.release()
    gpu, summary = classify(str(clip), "nvdec", tmp_path / "count.jsonl", "--batch", "7")
    assert decoders(summary) == {"nvdec"}
    assert sorted(gpu) == list(range(cpu_frames)) and cpu_frames == 150


def test_a_damaged_file_is_read_to_its_end_without_a_crash(tmp_path: Path) -> None:
    clips = [media("damaged.mp4")] if (MEDIA / "damaged.mp4").is_file() else []
    clean = mp4v_clip(tmp_path / "clean.mp4", 240)
    data = bytearray(clean.read_bytes())
    rng = np.random.default_rng(5)
    for at in rng.integers(len(data) // 3, 2 * len(data) // 3, 10):
        data[at:at + 800] = rng.integers(0, 256, 800, dtype=np.uint8).tobytes()
    # damaged in its middle, not truncated: OpenCV's writer puts the MP4 index last
    own = tmp_path / "damaged_mp4v.mp4"
    own.write_bytes(bytes(data))
    for clip in [*clips, own]:
        cpu, _ = classify(str(clip), "cpu", tmp_path / f"{clip.stem}.cpu.jsonl")
        t0 = time.monotonic()
        gpu, summary = classify(str(clip), "nvdec", tmp_path / f"{clip.stem}.nvdec.jsonl")
        source = summary["sources"][0]
        print(f"{clip.name}: CPU {len(cpu)} frames; NVDEC {len(gpu)} frames in {time.monotonic() - t0:.1f} "
              f"s, end {source['end']!r}, skipped {source.get('skipped')}, "
              f"decode {summary['extra']['decode']}")
        assert decoders(summary) == {"nvdec"}
        assert len(gpu) >= 0.9 * len(cpu), "NVDEC lost much more of the damaged file than the CPU decoder"


def test_a_live_http_stream_killed_and_restarted_comes_back(tmp_path: Path) -> None:
    from streamer.config import load_settings
    from streamer.pipeline import Pipeline

    ts = media("live_1080p_nob.ts")
    server = LiveServer(ts)
    sink = RecordingSink()
    try:
        url = server.start()
        settings = load_settings(None, {"sources": (f"{url}#decode=nvdec",), "backend": backend(),
                                        "bind": "none", "batch": 8, "stats_interval_s": 0.0,
                                        "live_timeout_s": 1.0, "reconnect_backoff_s": 0.1,
                                        "reconnect_backoff_max_s": 0.4})
        pipeline = Pipeline(settings, sinks=[sink]).open()
        name = pipeline.sources[0].name
        assert getattr(pipeline.sources[0], "decoder", "cpu") == "nvdec"
        runner = threading.Thread(target=pipeline.run, daemon=True)
        runner.start()
        sink.wait_preds(name, 30, timeout_s=60)
        server.kill()
        down = sink.wait_health(name, "down", timeout_s=30).at
        server.start()
        back = sink.wait_health(name, "up", since=down, timeout_s=60).at  # up again after it went down
        sink.wait_preds(name, 30, since=back, timeout_s=60)
        source = pipeline.sources[0]
        assert source.reconnects >= 1 and getattr(source, "decoder", "cpu") == "nvdec"
        delays = source.delays.percentiles()
        print(f"live NVDEC: {len(sink.preds(name))} predictions, reconnects {source.reconnects}, decode "
              f"delay {delays}, latency p50 {np.median([e.latency_ms for e in sink.preds(name)]):.2f} ms")
        pipeline.request_stop()
        runner.join(30)
        assert not runner.is_alive()
        pipeline.close()
    finally:
        server.kill()


class LiveServer:
    """tools/ts_live_server.py in a process of its own, killed and restarted on the same port."""

    def __init__(self, ts: Path) -> None:
        self.ts = ts
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> str:
        cmd = [sys.executable, str(REPO / "tools" / "ts_live_server.py"), "--file", str(self.ts), "--port",
               str(self.port)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        assert line.startswith("ready"), line
        self.port = int(line.split()[1])
        return f"http://127.0.0.1:{self.port}/live.ts"

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None
