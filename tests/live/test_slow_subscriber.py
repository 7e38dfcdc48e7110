"""A subscriber that stops reading never slows inference: 10,000 frames through the real publisher, with and
without a stuck subscriber (and a slow latest-only one), measured side by side in one test."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import zmq
from streamer_helpers import color_sequence, write_video
from zmq_helpers import zmq_context

from streamer.config import load_settings
from streamer.pipeline import Pipeline
from streamer.publish import Publisher
from streamer.sinks import PublisherSink
from streamer.subscribe import Subscriber

N = 10_000
HWM = 500  # per-subscriber queue: small, so the stuck subscriber overflows it early in the run


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("long") / "long.avi", color_sequence(N, seed=7), size=(32, 32))


def run_once(model: Path, clip: Path, subscriber: str) -> tuple[Any, dict[str, int], dict[str, Any]]:
    """One pipeline run over ``clip`` publishing on a real socket. ``subscriber``: none; stuck (subscribed to
    everything, a tiny receive queue, never a recv()); or dashboard (latest-only, reading one message per
    20 ms)."""
    s = load_settings(None, {"sources": (str(clip),), "model": str(model), "backend": "onnxruntime",
                             "batch": 32, "threads": 1, "stats_interval_s": 0.5, "bind": "none"})
    publisher = Publisher("tcp://127.0.0.1:*", hwm=HWM, linger_ms=0)
    sink = PublisherSink(publisher, wait_subscribers=0 if subscriber == "none" else 1, wait_timeout_s=10.0)
    pipeline = Pipeline(s, sinks=[sink])
    latest: dict[str, Any] = {}
    done = threading.Event()
    reader = None
    with zmq_context() as ctx:
        endpoint = sink.bind()
        if subscriber == "stuck":
            stuck = ctx.socket(zmq.SUB)
            stuck.setsockopt(zmq.RCVHWM, 10)
            stuck.setsockopt(zmq.RCVBUF, 4096)  # a small kernel buffer too: the backlog reaches the publisher
            stuck.setsockopt(zmq.SUBSCRIBE, b"")
            stuck.connect(endpoint)
        elif subscriber == "dashboard":
            dashboard = Subscriber(endpoint, topics=("pred.",), latest_only=True, timeout_ms=100)

            def slow_dashboard() -> None:  # a consumer far slower than the stream
                with dashboard:
                    while not done.is_set():
                        msg = dashboard.recv()
                        if msg is not None:
                            latest["frame"] = msg.payload["frame"]
                        done.wait(0.02)
                    while (msg := dashboard.recv(2000)) is not None:  # what is left: the newest only
                        latest["frame"] = msg.payload["frame"]
                    latest["received"], latest["conflated"] = dashboard.received, dashboard.conflated

            reader = threading.Thread(target=slow_dashboard, daemon=True)
            reader.start()
        pipeline.open()
        try:
            summary = pipeline.run()
        finally:
            counters = publisher.counters()
            pipeline.close()
        if subscriber == "stuck":
            # what it can still read: the messages that fitted in its queues (and any seq gaps among them)
            seqs = []
            while stuck.poll(200):
                topic, payload = stuck.recv_multipart()
                if topic.startswith(b"pred."):
                    seqs.append(json.loads(payload)["seq"])
            latest["missed"] = sum(b - a - 1 for a, b in itertools.pairwise(seqs))
            latest["got"] = len(seqs)
        if reader is not None:
            done.set()
            reader.join(10.0)
            assert not reader.is_alive()
    return summary, counters, latest


def test_a_stuck_subscriber_does_not_slow_10000_frames(color_model: Path, long_clip: Path) -> None:
    """Three runs without and three with the stuck subscriber, interleaved in alternating order, compared by
    their medians (runs of ~1 s on 2 shared cores vary by ±20% on their own)."""
    runs: dict[str, list[Any]] = {"none": [], "stuck": []}
    counters: dict[str, int] = {}
    stuck_view: dict[str, Any] = {}
    for i in range(3):
        for kind in ("none", "stuck") if i % 2 == 0 else ("stuck", "none"):
            summary, c, view = run_once(color_model, long_clip, kind)
            runs[kind].append(summary)
            if kind == "stuck":
                counters, stuck_view = c, view
    fps = {kind: sorted(r.fps for r in rs) for kind, rs in runs.items()}
    ratio = fps["stuck"][1] / fps["none"][1]
    print(f"\n{N} frames: without a subscriber {[round(f) for f in fps['none']]} frames/s, with a stuck one "
          f"{[round(f) for f in fps['stuck']]} (median ratio {ratio:.3f}); publisher {counters}; "
          f"the stuck subscriber, reading afterwards: {stuck_view}")
    assert all(r.frames == N for rs in runs.values() for r in rs)  # the pipeline completed every frame
    assert counters["hwm_overflows"] > 0  # the stuck subscriber's queue did overflow ...
    assert counters["dropped_queue"] == 0  # ... and the publisher itself kept up
    assert 0 < stuck_view["got"] < N  # it lost the messages that did not fit, and only it lost them
    assert ratio > 0.6, f"a stuck subscriber slowed the pipeline: {fps}"


def test_a_latest_only_subscriber_far_slower_than_the_stream_ends_on_the_newest(color_model: Path,
                                                                                long_clip: Path) -> None:
    summary, _, latest = run_once(color_model, long_clip, "dashboard")
    print(f"\nlatest-only subscriber reading every 20 ms: {latest}; pipeline {summary.fps:.0f} frames/s")
    assert summary.frames == N
    assert latest["frame"] == N - 1  # it ended on the newest prediction ...
    assert latest["received"] < N // 10 and latest["conflated"] > N // 2  # ... without reading the backlog


def test_streamer_sub_latest_skips_a_backlog_to_the_newest() -> None:
    """``streamer-sub --latest`` is paused (SIGSTOP) while 3,000 predictions go out, then resumed: it prints
    the newest, not the backlog."""
    from streamer_helpers import REPO
    from zmq_helpers import make_prediction

    with Publisher("tcp://127.0.0.1:*", linger_ms=0) as pub:
        proc = subprocess.Popen([sys.executable, "-m", "streamer.subscribe", pub.endpoint, "--latest",
                                 "--json", "--topic", "pred.", "--timeout", "3"],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL)
        try:
            assert pub.wait_for_subscribers(1, timeout=20)
            proc.send_signal(signal.SIGSTOP)
            for i in range(3000):
                pub.publish(make_prediction(i))
            assert pub.flush(10.0)
            proc.send_signal(signal.SIGCONT)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, err
    frames = [json.loads(line)["frame"] for line in out.splitlines()]
    print(f"streamer-sub --latest printed {len(frames)} of 3000 predictions")
    assert frames and frames[-1] == 2999 and frames == sorted(set(frames))
    assert len(frames) < 3000  # it skipped to the newest rather than printing the backlog
