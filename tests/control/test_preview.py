"""``--preview`` over plain HTTP: the ``streamer`` command on two live MJPEG cameras (loopback), its page and
streams read with urllib (tools/preview_client.py), its predictions with a ZeroMQ subscriber.

What a browser shows is tested in test_preview_browser.py; here: what the streams carry, that frames are
encoded only while someone watches, and the rate limit."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from preview_client import PreviewWatcher
from servers import MjpegServer, free_port
from service_helpers import Collector, StreamerProcess, colour_jpegs
from streamer_helpers import color_sequence, run_cli

CAMERA_FPS = 25.0
PREVIEW_FPS = 5.0
PREVIEW_WIDTH = 160


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def state(url: str) -> dict:
    status, _, body = get(url + "/preview/state")
    assert status == 200
    return json.loads(body)


@pytest.mark.timeout(180)
def test_the_preview_streams_carry_each_sources_frames_with_their_predictions(tmp_path: Path,
                                                                              color_model: Path) -> None:
    config = tmp_path / "preview.toml"
    config.write_text(f"[control]\npreview_fps = {PREVIEW_FPS}\npreview_width = {PREVIEW_WIDTH}\n")
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    frames = colour_jpegs(color_sequence(40, seed=8), size=(320, 240))
    with MjpegServer(frames, fps=CAMERA_FPS) as cam1, MjpegServer(frames[::-1], fps=CAMERA_FPS) as cam2:
        collector = Collector(endpoint)
        streamer = StreamerProcess("--config", str(config), "--source", cam1.url(), "--source", cam2.url(),
                                   "--model", str(color_model), "--backend", "onnxruntime", "--threads", "1",
                                   "--bind", endpoint, "--wait-subscribers", "1", "--http", "127.0.0.1:0",
                                   "--preview", "--stats-interval", "0")
        try:
            url = streamer.url
            streamer.wait_line(r"preview page on http://")
            names = [s["name"] for s in state(url)["sources"]]
            assert len(names) == 2
            collector.wait("predictions of both cameras",
                           lambda: all(len(collector.preds(n)) >= 50 for n in names))
            # frames flow, nobody watches: nothing is encoded
            idle = state(url)
            assert idle["watchers"] == 0 and idle["jpegs"] == 0, idle

            status, ctype, page = get(url + "/")
            assert status == 200 and ctype.startswith("text/html")
            assert b'src="/preview/static/preview.js"' in page and b"http" not in page.split(b"<body>")[1]
            for name, kind in (("preview.js", "text/javascript"), ("preview.css", "text/css")):
                status, ctype, body = get(f"{url}/preview/static/{name}")
                assert status == 200 and ctype.startswith(kind) and body
            assert get(url + "/preview/static/secrets.txt")[0] == 404
            assert get(url + "/preview/mjpeg/nosuch")[0] == 404

            with PreviewWatcher(url + "/preview/feed", keep=True) as feed:
                feed.wait("frames of both sources", lambda: all(feed.per_source[n] >= 12 for n in names))
                assert state(url)["watchers"] == 1
            parts = feed.snapshot()
            assert feed.error is None
            states = [p.json() for p in parts if not p.is_jpeg]
            assert states and {s["name"] for s in states[-1]["sources"]} == set(names)
            assert all(s["state"] == "running" for s in states[-1]["sources"])
            jpegs = [p for p in parts if p.is_jpeg]
            published = {(m.payload["source"], m.payload["frame"]): m.payload
                         for m in collector.select("pred")}
            for part in jpegs:
                meta = part.meta
                image = cv2.imdecode(np.frombuffer(part.body, np.uint8), cv2.IMREAD_COLOR)
                assert image is not None and image.shape[1] == PREVIEW_WIDTH  # 320 px scaled down
                assert (meta["width"], meta["height"]) == (image.shape[1], image.shape[0])
                pred = published[(meta["source"], meta["frame"])]  # the frame's own published prediction
                assert [k["label"] for k in meta["topk"]] == [k["label"] for k in pred["topk"]]
                mean_bgr = image.reshape(-1, 3).mean(0)
                assert ("blue", "green", "red")[int(mean_bgr.argmax())] == meta["topk"][0]["label"]
            for name in names:  # at most PREVIEW_FPS frames per second of each (the cameras send 25)
                times = [p.at for p in jpegs if p.meta["source"] == name][1:]  # the first comes at once
                rate = (len(times) - 1) / (times[-1] - times[0])
                assert rate <= PREVIEW_FPS * 1.3, (name, rate)
                frames_shown = [p.meta["frame"] for p in jpegs if p.meta["source"] == name]
                assert frames_shown == sorted(set(frames_shown))  # newest first, never back in time

            # the client left: nobody watches, nothing more is encoded
            collector.wait("the watcher's end", lambda: state(url)["watchers"] == 0)
            encoded = state(url)["jpegs"]
            n = len(collector.preds(names[0]))
            collector.wait("50 more predictions", lambda: len(collector.preds(names[0])) >= n + 50)
            assert state(url)["jpegs"] == encoded

            with PreviewWatcher(f"{url}/preview/mjpeg/{names[1]}", keep=True) as one:
                one.wait("a few frames of one source", lambda: one.jpegs >= 5)
            assert {p.meta["source"] for p in one.snapshot()} == {names[1]} and one.states == 0
        finally:
            assert streamer.interrupt() == 0
            collector.close()


def test_preview_without_http_is_a_one_line_error(tmp_path: Path, color_model: Path) -> None:
    r = run_cli("--source", "demo", "--model", str(color_model), "--bind", "none", "--preview")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "streamer: error: --preview needs --http: the page is served by the control plane (hint: add --http "
        "127.0.0.1:8090 and open http://127.0.0.1:8090/)"]
