"""A 2-source live run of the ``streamer`` command (two MJPEG cameras on loopback at 25 fps), changed while it
runs with ``streamer-ctl``: a third source is added (its predictions come under its own name, frames from 0),
then one of the first two is removed (its eos, reason ``removed``, after its last prediction), and the
others' published frame rate stays within 10% throughout. Rates come from the predictions' capture times
over windows of frames, not from sleeps."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import MjpegServer, free_port
from service_helpers import Collector, StreamerProcess, colour_jpegs, published_rate
from streamer_helpers import REPO, color_sequence

FPS = 25.0
WINDOW = 75  # predictions per rate window: 3 s at 25 fps
WARM_UP = 25  # a new connection's first frames come in a burst (FFmpeg reads ahead while probing the stream)
TOLERANCE = 0.10


def ctl(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamer.ctl", "--url", url, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.mark.timeout(240)
def test_a_third_source_is_added_and_one_removed_while_the_others_keep_their_rate(color_model: Path) -> None:
    frames = colour_jpegs(color_sequence(50, seed=5))
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    with (MjpegServer(frames, fps=FPS) as cam1, MjpegServer(frames, fps=FPS) as cam2,
          MjpegServer(frames, fps=FPS) as cam3):
        collector = Collector(endpoint)
        streamer = StreamerProcess("--source", cam1.url(), "--source", cam2.url(), "--model",
                                   str(color_model), "--backend", "onnxruntime", "--threads", "1",
                                   "--bind", endpoint, "--wait-subscribers", "1", "--http", "127.0.0.1:0",
                                   "--stats-interval", "0")
        t0 = time.monotonic()
        timeline: list[tuple[float, str]] = []

        def mark(what: str, at: float | None = None) -> None:
            timeline.append(((at or time.monotonic()) - t0, what))

        try:
            listed = ctl(streamer.url, "--json", "list")
            assert listed.returncode == 0, listed.stderr
            a, b = (s["name"] for s in json.loads(listed.stdout))
            mark(f"streaming {a} and {b}", collector.wait(
                "both cameras' predictions",
                lambda: all(len(collector.preds(n)) >= WARM_UP + WINDOW for n in (a, b))))
            before = {n: collector.preds(n)[-WINDOW:] for n in (a, b)}

            mark("POST /sources cam3 (streamer-ctl add)")
            added = ctl(streamer.url, "add", cam3.url(), "--name", "cam3", "--policy", "drop-oldest")
            mark(f"→ {added.stdout.strip()}")
            assert added.returncode == 0, added.stderr
            assert added.stdout.startswith("added cam3 (stream http://127.0.0.1:")
            collector.wait("cam3 predictions", lambda: collector.preds("cam3"))
            mark("first cam3 prediction arrived", collector.preds("cam3")[0].at)
            collector.wait("a window of cam3", lambda: len(collector.preds("cam3")) >= WARM_UP + WINDOW)
            cam3_preds = collector.preds("cam3")
            assert cam3_preds[0].payload["frame"] == 0
            indices = [m.payload["frame"] for m in cam3_preds]
            assert indices == sorted(set(indices))
            n_a = len(collector.preds(a))
            collector.wait(f"a window of {a} with cam3", lambda: len(collector.preds(a)) >= n_a + WINDOW)
            during = {a: collector.preds(a)[-WINDOW:], "cam3": collector.preds("cam3")[-WINDOW:]}

            mark(f"DELETE /sources/{b} (streamer-ctl remove)")
            removed = ctl(streamer.url, "remove", b)
            mark(f"→ {removed.stdout.strip()}")
            assert removed.returncode == 0 and removed.stdout.startswith(f"removed {b} "), removed.stderr
            collector.wait(f"eos of {b}", lambda: collector.select("eos", b))
            eos = collector.select("eos", b)
            mark(f"eos.{b} arrived: reason {eos[0].payload['reason']}, {eos[0].payload['frames']} frames",
                 eos[0].at)
            assert [m.payload["reason"] for m in eos] == ["removed"]
            b_preds = collector.preds(b)
            assert b_preds[-1].at <= eos[0].at and eos[0].payload["frames"] == len(b_preds)
            n_a, n_c = len(collector.preds(a)), len(collector.preds("cam3"))
            collector.wait("a window after the removal", lambda: len(collector.preds(a)) >= n_a + WINDOW
                           and len(collector.preds("cam3")) >= n_c + WINDOW)
            after = {a: collector.preds(a)[n_a:n_a + WINDOW],
                     "cam3": collector.preds("cam3")[n_c:n_c + WINDOW]}
            assert len(collector.preds(b)) == len(b_preds)  # nothing of b after its eos
            mark("windows measured")

            rates = {"before": {n: published_rate(w) for n, w in before.items()},
                     "with cam3": {n: published_rate(w) for n, w in during.items()},
                     f"after removing {b}": {n: published_rate(w) for n, w in after.items()}}
            listing = ctl(streamer.url, "list").stdout
        finally:
            code = streamer.interrupt()
            collector.close()
        mark(f"SIGINT → exit {code}")
        lines = [f"  {t:6.2f}  {what}" for t, what in sorted(timeline)]
        print("\ntimeline (s since start):\n" + "\n".join(lines))
        print("published frames/s:", {k: {n: round(r, 2) for n, r in v.items()} for k, v in rates.items()})
        print("streamer-ctl list before the end:\n" + listing)
        assert code == 0, "".join(streamer.stderr)
        assert sorted(m.payload["source"] for m in collector.select("eos")) == sorted([a, b, "cam3"])
        for window, measured in rates.items():
            for name, rate in measured.items():
                reference = rates["before"][a] if name == a else rates["with cam3"]["cam3"]
                assert abs(rate / reference - 1) <= TOLERANCE, (window, name, rate, reference, rates)
            assert all(abs(rate / FPS - 1) <= TOLERANCE for rate in measured.values()), rates
