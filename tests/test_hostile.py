"""Hostile input, fed to the ``streamer`` command as a user would: each case ends in a one-line error (exit 2)
or a counted, logged skip — never a hang, a traceback or a crash mid-run.

- corrupt clip (bits flipped all through a vtest.avi stand-in, like Debian's Megamind_bugy.avi): decoded with
  FFmpeg's concealment, every frame FFmpeg decodes classified, exit 0 (more damage: sources/test_video.py)
- truncated video file: the frames before the cut, a note naming how many of the header's count, exit 0
- a file that is not a video (random bytes, empty, text): ``cannot decode video file``, exit 2
- images that are grey, RGBA, 16-bit, float, 1x1, 2x3000, 6000x4000, broken or empty: every readable one
  classified, the two unreadable ones skipped with a warning and counted, exit 0
- a stream that sends corrupt JPEGs: skipped, counted (``skipped`` in stats), logged; the stream goes on
- a camera index that does not exist: ``camera webcam99 (/dev/video99) did not open``, exit 2
- a URL that refuses (rtsp, http): ``cannot open stream <redacted url>``, exit 2, at once
- credentials in URLs: never in a log line, error, topic, source name, message, JSONL or summary
- truncated ONNX, truncated .plan, ONNX for another input shape: one-line error naming the file, exit 2
- a bind endpoint in use: ``address already in use``, exit 2
- an unknown ``#policy=``: one-line error naming the choices, exit 2
"""

from __future__ import annotations

import json
import random
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from recording_sink import RecordingSink
from servers import MjpegServer, jpeg_frames
from streamer_helpers import make_color_model, read_jsonl, run_cli
from zmq_helpers import pub_socket, recv_frames, sub_socket, zmq_context

from media import ffmpeg_decoded_frames
from streamer.config import load_settings
from streamer.pipeline import Pipeline

SECRET = "hunter2"
TOKEN = "tok3n5ecret"


def cli(*args: str, model: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    argv = list(args)
    if "--bind" not in argv:
        argv += ["--bind", "none"]
    started = time.monotonic()
    r = run_cli(*argv, "--model", str(model), "--backend", "onnxruntime", "--threads", "1", timeout=timeout)
    r.elapsed = time.monotonic() - started  # type: ignore[attr-defined]
    assert "Traceback" not in r.stderr, r.stderr
    return r


def one_line_error(r: subprocess.CompletedProcess[str], needle: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamer: error: "), r.stderr
    assert needle in lines[0], lines[0]
    assert r.stdout == ""
    return lines[0]


def test_corrupt_clip_is_decoded_to_the_end(color_model: Path, vtest: Path, tmp_path: Path) -> None:
    data = bytearray(vtest.read_bytes())
    rng = random.Random(7)
    for _ in range(300):  # bits flipped all through the frames, the header left alone
        j = rng.randrange(8192, len(data))
        data[j] ^= 1 << rng.randrange(8)
    bugy = tmp_path / "bugy.avi"
    bugy.write_bytes(bytes(data))
    decoded = ffmpeg_decoded_frames(bugy)
    out = tmp_path / "bugy.jsonl"
    r = cli("--source", str(bugy), "--output", str(out), "--summary-json", str(tmp_path / "s.json"),
            model=color_model)
    assert r.returncode == 0, r.stderr
    frames = [d["frame"] for d in read_jsonl(out)]
    assert frames == list(range(len(frames))) and len(frames) == decoded and decoded >= 700
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["frames"] == len(frames) and summary["sources"][0]["end"].startswith("end of file")


def test_truncated_video_file_gives_the_frames_before_the_cut(color_model: Path, vtest: Path,
                                                             tmp_path: Path) -> None:
    cut = tmp_path / "cut.avi"
    data = vtest.read_bytes()
    cut.write_bytes(data[: len(data) * 37 // 100])
    out = tmp_path / "cut.jsonl"
    r = cli("--source", str(cut), "--output", str(out), "--log-level", "info", model=color_model)
    assert r.returncode == 0, r.stderr
    n = len(read_jsonl(out))
    assert 100 < n < 795 and n == ffmpeg_decoded_frames(cut)
    assert f"its header announces 795 frames; the file held {n} decodable" in r.stderr  # noted, with counts


@pytest.mark.parametrize("content", ["random", "empty", "text"])
def test_a_file_that_is_not_a_video_is_one_line(content: str, color_model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "clip.mp4"
    data = {"random": np.random.default_rng(1).bytes(50_000), "empty": b"", "text": b"hello\n" * 1000}
    bad.write_bytes(data[content])
    r = cli("--source", str(bad), model=color_model)
    one_line_error(r, f"cannot decode video file {bad}")


def test_images_of_odd_sizes_channels_and_depths(color_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    good = {
        "01_grey.png": np.full((20, 30), 200, np.uint8),
        "02_rgba.png": np.dstack([np.full((25, 17, 3), (0, 0, 255), np.uint8),
                                  np.full((25, 17), 9, np.uint8)]),
        "03_bgr16.png": np.full((33, 21, 3), (0, 65535, 0), np.uint16),
        "04_grey16.png": np.full((9, 1000), 40000, np.uint16),
        "05_tiny.png": np.full((1, 1, 3), (255, 0, 0), np.uint8),
        "06_tall.png": np.zeros((3000, 2, 3), np.uint8),
        "07_rgba16.png": np.full((10, 10, 4), 65535, np.uint16),
        "10_float.tiff": np.full((10, 10, 3), 0.5, np.float32),
        "11_big.jpg": np.zeros((4000, 6000, 3), np.uint8),
    }
    for name, image in good.items():
        assert cv2.imwrite(str(folder / name), image)
    (folder / "08_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (folder / "09_empty.jpg").write_bytes(b"")
    out = tmp_path / "odd.jsonl"
    r = cli("--source", str(folder), "--output", str(out), "--summary-json", str(tmp_path / "s.json"),
            model=color_model)
    assert r.returncode == 0, r.stderr
    rows = read_jsonl(out)
    assert [d["frame"] for d in rows] == [0, 1, 2, 3, 4, 5, 6, 9, 10]  # 7 and 8 are the unreadable ones
    assert [d["file"] for d in rows] == sorted(good)  # each prediction names its image; 08 and 09 are absent
    labels = {d["frame"]: d["topk"][0]["label"] for d in rows}
    assert (labels[1], labels[2], labels[4]) == ("red", "green", "blue")  # RGBA, 16-bit, 1x1: real colours
    assert r.stderr.count("skipping unreadable image") == 2
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["sources"][0]["end"] == "end of images (2 unreadable skipped)"


def test_a_stream_with_corrupt_frames_skips_and_counts_them(color_model: Path, vtest: Path) -> None:
    frames = jpeg_frames(vtest, 10, (160, 120))
    garbage = b"\xff\xd8" + b"not a jpeg " * 40 + b"\xff\xd9"
    cam = MjpegServer([*frames[:5], garbage, *frames[5:]], fps=50)
    with cam:
        s = load_settings(None, {"sources": (cam.url(),), "model": str(color_model), "bind": "none",
                                 "backend": "onnxruntime", "threads": 1, "batch": 4, "stats_interval_s": 0.1,
                                 "live_timeout_s": 2.0})
        sink = RecordingSink()
        pipeline = Pipeline(s, sinks=[sink]).open()
        source = pipeline.sources[0]
        runner = threading.Thread(target=pipeline.run, daemon=True)
        runner.start()
        try:
            sink.wait("3 corrupt frames skipped", lambda: source.skipped >= 3)
            sink.wait("stats showing them", lambda: any(m["sources"][source.name]["skipped"] >= 3
                                                        for m in sink.stats_msgs))
        finally:
            pipeline.request_stop()
            runner.join(10)
            pipeline.close()
    assert not runner.is_alive()
    assert source.losses == 0 and source.reconnects == 0  # skipped, not a reason to reconnect
    frames_seen = [e.frame for e in sink.preds(source.name)]
    assert frames_seen == sorted(set(frames_seen)) and len(frames_seen) > 10


def test_a_camera_that_does_not_exist(color_model: Path) -> None:
    r = cli("--source", "webcam99", model=color_model)
    one_line_error(r, "camera webcam99 (/dev/video99) did not open")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("scheme", ["rtsp", "http"])
def test_a_url_that_refuses(scheme: str, color_model: Path) -> None:
    port = _closed_port()
    r = cli("--source", f"{scheme}://admin:{SECRET}@127.0.0.1:{port}/live?token={TOKEN}", "--log-level",
            "debug", model=color_model)
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last == (f"streamer: error: cannot open stream {scheme}://***@127.0.0.1:{port}/live?token=***: "
                    "did not open (hint: check the URL, that the server is up and reachable, and the "
                    "credentials)")
    assert SECRET not in r.stderr + r.stdout and TOKEN not in r.stderr + r.stdout  # not even at debug level
    assert r.elapsed < 15  # type: ignore[attr-defined]  # refused at once, not after the 5 s timeout


def test_credentials_are_redacted_everywhere(color_model: Path, vtest: Path, tmp_path: Path,
                                             free_endpoint: str) -> None:
    """A camera that needs basic auth, with a token in the query: the streamer connects with them, and they
    appear nowhere it writes — stderr at debug level, every ZeroMQ topic and message (health details
    included), the JSONL and the summary."""
    cam = MjpegServer(jpeg_frames(vtest, 10, (160, 120)), fps=25, auth=("admin", SECRET))
    url = cam.url(f"admin:{SECRET}") + f"?token={TOKEN}"  # the server ignores the query
    out, summary = tmp_path / "c.jsonl", tmp_path / "c.json"
    with cam, zmq_context() as ctx:
        sock = sub_socket(ctx, free_endpoint, ("",))
        r = cli("--source", url, "--max-frames", "30", "--bind", free_endpoint, "--wait-subscribers", "1",
                "--output", str(out), "--summary-json", str(summary), "--log-level", "debug",
                "--stats-interval", "0.1", model=color_model)
        wire = []
        while sock.poll(500):
            wire.extend(recv_frames(sock))
    assert r.returncode == 0, r.stderr
    assert 0 < len(read_jsonl(out)) <= 30  # live: the newest frame wins, an older one may be dropped
    topics = {f.split(b".")[0] for f in wire[::2]}
    assert {b"pred", b"health", b"eos", b"stats"} <= topics, topics
    everything = r.stderr + r.stdout + out.read_text() + summary.read_text() + b"".join(wire).decode()
    assert f"http://***@127.0.0.1:{cam.port}/video?token=***" in r.stderr  # logged, redacted
    for secret in (SECRET, TOKEN, "admin:"):
        assert secret not in everything, secret


def test_a_truncated_onnx(color_model: Path, tmp_path: Path, vtest: Path) -> None:
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(color_model.read_bytes()[:300])
    r = cli("--source", str(vtest), model=cut)
    one_line_error(r, "cut.onnx")


def test_a_truncated_engine_plan(color_model: Path, tmp_path: Path, vtest: Path) -> None:
    pytest.importorskip("tensorrt_rtx", reason="needs tensorrt-rtx-cu13 to build a real plan")
    from streamer.engine.build import build_engine

    plan = build_engine(color_model, out_dir=tmp_path / "plans", backend="tensorrt-rtx").plan
    cut = tmp_path / plan.name
    cut.write_bytes(plan.read_bytes()[: plan.stat().st_size // 2])
    shutil.copy(plan.with_suffix(".plan.json"), cut.with_suffix(".plan.json"))
    r = run_cli("--source", str(vtest), "--model", str(cut), "--bind", "none", timeout=60)
    assert "Traceback" not in r.stderr
    one_line_error(r, cut.name)


def test_an_onnx_for_another_input_shape(tmp_path: Path, vtest: Path) -> None:
    other = make_color_model(tmp_path / "nchw.onnx", input_hw=(32, 32), manifest_hw=(64, 64))
    r = cli("--source", str(vtest), model=other)
    one_line_error(r, "input 'images' has shape [N, 32, 32, 3], expected [N, 64, 64, 3]")


def test_a_bind_endpoint_in_use(color_model: Path, vtest: Path) -> None:
    with zmq_context() as ctx:
        _, endpoint = pub_socket(ctx)
        r = cli("--source", str(vtest), "--bind", endpoint, model=color_model)
    one_line_error(r, f"cannot bind ZeroMQ endpoint {endpoint}: address already in use")


def test_an_unknown_policy(color_model: Path, vtest: Path) -> None:
    r = cli("--source", f"{vtest}#policy=newest", model=color_model)
    one_line_error(r, "unknown backpressure policy 'newest' (hint: choose one of block, latest, drop-oldest)")
