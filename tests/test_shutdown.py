"""Graceful shutdown of the ``streamer`` command with live sources: SIGINT/SIGTERM stop intake, drain, publish
eos, release the cameras and exit 0 within 5 s — with the subscriber gone, with a stream stuck in a read, and
while a stream is still opening."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from servers import MjpegServer, jpeg_frames
from service_helpers import CliProcess
from streamer_helpers import read_jsonl
from zmq_helpers import recv_message, sub_socket, wait_until, zmq_context

EXIT_WITHIN_S = 5.0


@pytest.fixture(scope="module")
def frames(vtest: Path) -> list[bytes]:
    return jpeg_frames(vtest, 30, (320, 240))


class Streamer(CliProcess):
    """The command, for the shutdown tests."""

    wait_s = 30.0

    def signal_and_time_exit(self, sig: signal.Signals) -> tuple[int, float]:
        sent = time.monotonic()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running 30 s after {sig.name}") from None
        return code, time.monotonic() - sent

    def __enter__(self) -> Streamer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def common_args(model: Path, tmp_path: Path) -> list[str]:
    return ["--model", str(model), "--backend", "onnxruntime", "--threads", "1", "--batch", "4",
            "--output", str(tmp_path / "out.jsonl"), "--summary-json", str(tmp_path / "summary.json"),
            "--stats-interval", "0.2"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_with_a_live_source_and_the_subscriber_gone(sig: signal.Signals, color_model: Path,
                                                           frames: list[bytes], tmp_path: Path) -> None:
    cam = MjpegServer(frames, fps=25)
    with cam, Streamer("--source", cam.url(), "--bind", "tcp://127.0.0.1:*", "--wait-subscribers", "1",
                       *common_args(color_model, tmp_path)) as s:
        endpoint = s.wait_line(r"publishing on (tcp://\S+)").group(1)
        with zmq_context() as ctx:  # a subscriber that reads a few predictions, then goes away
            sock = sub_socket(ctx, endpoint, ("pred.",))
            got = [recv_message(sock) for _ in range(5)]
        code, took = s.signal_and_time_exit(sig)
        wait_until(lambda: not cam._conns, what="the camera connection released")
    assert code == 0, "".join(s.stderr)
    assert took < EXIT_WITHIN_S, f"exit took {took:.1f} s"
    written = read_jsonl(tmp_path / "out.jsonl")
    frames_written = [d["frame"] for d in written]
    assert frames_written == sorted(set(frames_written)) and len(written) >= len(got)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stopped_by_signal"] and summary["frames"] == len(written)
    assert summary["sources"][0]["end"] == "stopped"
    assert "Traceback" not in "".join(s.stderr)
    print(f"{sig.name}: exit 0 after {took:.2f} s, {len(written)} frames")


def test_sigterm_with_a_stream_stuck_in_a_read(color_model: Path, frames: list[bytes],
                                               tmp_path: Path) -> None:
    """The server stops sending without closing; FFmpeg's own timeout is 30 s, so the read stays stuck."""
    cam = MjpegServer(frames, fps=25)
    with cam, Streamer("--source", cam.url(), "--bind", "tcp://127.0.0.1:*", "--wait-subscribers", "1",
                       "--live-timeout", "30", *common_args(color_model, tmp_path)) as s:
        endpoint = s.wait_line(r"publishing on (tcp://\S+)").group(1)
        with zmq_context() as ctx:
            sock = sub_socket(ctx, endpoint, ("pred.", "eos."))
            for _ in range(5):
                recv_message(sock)
            cam.stall()
            # frames already in flight still arrive; then nothing: the read is stuck
            deadline = time.monotonic() + 20
            while sock.poll(1000):
                sock.recv_multipart()
                assert time.monotonic() < deadline, "frames kept coming from a stalled server"
            code, took = s.signal_and_time_exit(signal.SIGTERM)
            eos = [recv_message(sock, timeout_s=1.0)]  # sent before the socket closed (finite linger)
        cam.resume()
    assert code == 0, "".join(s.stderr)
    assert took < EXIT_WITHIN_S, f"exit took {took:.1f} s"
    assert eos[-1][0].startswith("eos.") and eos[-1][1]["reason"] == "stopped"
    assert "Traceback" not in "".join(s.stderr)
    print(f"stuck read: exit 0 after {took:.2f} s")


def test_sigint_while_a_stream_is_still_opening(color_model: Path, frames: list[bytes],
                                                tmp_path: Path) -> None:
    """The server accepts the connection and never answers: the open itself hangs (FFmpeg timeout 30 s)."""
    cam = MjpegServer(frames, fps=25)
    with cam:
        cam.stall()
        with Streamer("--source", cam.url(), "--bind", "none", "--live-timeout", "30",
                      *common_args(color_model, tmp_path)) as s:
            wait_until(lambda: cam.requests >= 1, timeout_s=30, what="the streamer's HTTP request")
            code, took = s.signal_and_time_exit(signal.SIGINT)
        cam.resume()
    assert code == 0, "".join(s.stderr)
    assert took < EXIT_WITHIN_S, f"exit took {took:.1f} s"
    assert "stopped before the first frame" in "".join(s.stderr)
    assert "Traceback" not in "".join(s.stderr)
