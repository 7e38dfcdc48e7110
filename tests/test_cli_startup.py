"""The ``streamer`` command's start-up, as a user and an adversary meet it: the publisher is bound before
anything slow happens (a subscriber already running gets every message), a signal in any start-up phase
stops before the first frame, an endpoint in use is refused on every transport, a malformed URL is one line.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import zmq
from streamer_helpers import REPO, color_sequence, read_jsonl, run_cli, stderr_lines, write_video
from zmq_helpers import recv_message, sub_socket, zmq_context

from streamer.config import load_settings
from streamer.pipeline import Pipeline, StopRequested
from streamer.sinks import Sink

EXIT_WAIT_S = 30


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("startup") / "clip.avi", color_sequence(60, seed=5))


def start(*args: str, model: Path) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
    """The CLI in the background; its stderr lines arrive on the queue."""
    proc = subprocess.Popen([sys.executable, "-m", "streamer.cli", *args, "--model", str(model), "--backend",
                             "onnxruntime", "--threads", "1"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    return proc, stderr_lines(proc)


def wait_line(lines: queue.Queue[str], needle: str, timeout: float = EXIT_WAIT_S) -> list[str]:
    seen: list[str] = []
    while True:
        line = lines.get(timeout=timeout)
        seen.append(line)
        if needle in line:
            return seen


def rest(lines: queue.Queue[str]) -> str:
    out = []
    while not lines.empty():
        out.append(lines.get())
    return "".join(out)


def finish(proc: subprocess.Popen[str]) -> int:
    try:
        return proc.wait(EXIT_WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- case 9: slow joiners ------------------------------------------------------------------------------------
def test_a_subscriber_already_running_gets_every_prediction(clip: Path, color_model: Path,
                                                            free_endpoint: str) -> None:
    """No --wait-subscribers: the subscriber was started first, and the streamer binds before it opens the
    source and loads the model, so the subscriber is in before the first prediction."""
    with zmq_context() as ctx:
        sock = sub_socket(ctx, free_endpoint, ("pred.", "eos."))  # retries until the streamer binds
        proc, lines = start("--source", str(clip), "--bind", free_endpoint, "--quiet", model=color_model)
        try:
            msgs = [recv_message(sock, EXIT_WAIT_S)]
            while not msgs[-1][0].startswith("eos."):
                msgs.append(recv_message(sock, EXIT_WAIT_S))
        finally:
            code = finish(proc)
    assert code == 0, rest(lines)
    assert [d["frame"] for t, d in msgs if t == "pred.clip"] == list(range(60))
    assert msgs[-1][1]["frames"] == 60


# -- case 7: a signal in every start-up phase ----------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_waiting_for_subscribers_stops_before_the_first_frame(
        sig: signal.Signals, clip: Path, color_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "w.jsonl"
    proc, lines = start("--source", str(clip), "--bind", "tcp://127.0.0.1:*", "--wait-subscribers", "1",
                        "--output", str(out), model=color_model)
    try:
        wait_line(lines, "waiting up to")
        proc.send_signal(sig)
    finally:
        code = finish(proc)
    stderr = rest(lines)
    assert code == 0, stderr
    assert "stopped before the first frame" in stderr and "Traceback" not in stderr
    assert read_jsonl(out) == []  # nothing was read, nothing classified


def test_a_signal_while_a_source_opens_stops_before_the_first_frame(color_model: Path,
                                                                   tmp_path: Path) -> None:
    """An HTTP camera that accepts the connection and never answers: the open would take --live-timeout
    (30 s); a SIGINT meanwhile ends the run at once, before any frame."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    accepted = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        held.append(conn)  # kept open, silent
        accepted.set()

    threading.Thread(target=accept, daemon=True).start()
    out = tmp_path / "o.jsonl"
    url = f"http://127.0.0.1:{server.getsockname()[1]}/video"
    proc, lines = start("--source", url, "--live-timeout", "30", "--bind", "none", "--output", str(out),
                        model=color_model)
    try:
        assert accepted.wait(EXIT_WAIT_S), "the streamer never connected"
        proc.send_signal(signal.SIGINT)
        code = proc.wait(10)  # far sooner than the 30 s the open could take
    finally:
        finish(proc)
        server.close()
        for conn in held:
            conn.close()
    stderr = rest(lines)
    assert code == 0, stderr
    assert "stopped before the first frame" in stderr and not out.exists()  # not even the output opened


class EndsSink(Sink):
    name = "ends"

    def __init__(self) -> None:
        self.preds = 0
        self.ends: list[tuple[str, int, str]] = []

    def prediction(self, pred: object) -> None:
        self.preds += 1

    def end(self, source: str, frames: int, reason: str, skipped: int = 0) -> None:
        self.ends.append((source, frames, reason))


def test_a_stop_while_the_model_loads_stops_before_the_first_frame(clip: Path, color_model: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """What a SIGINT during the model load does (the handler only sets the stop flag): the load finishes,
    then the start-up stops. The signal is stood in for by setting the flag from inside the load."""
    s = load_settings(None, {"sources": (str(clip),), "model": str(color_model), "bind": "none",
                             "backend": "onnxruntime", "threads": 1})
    pipeline = Pipeline(s, sinks=[EndsSink()])
    load = Pipeline._open_model

    def load_then_signal(self: Pipeline) -> None:
        load(self)
        self.request_stop()

    monkeypatch.setattr(Pipeline, "_open_model", load_then_signal)
    with pytest.raises(StopRequested, match="while loading the model"):
        pipeline.open()
    assert pipeline.sources[0].frames_read == 0


def test_a_stop_before_the_run_publishes_each_end_and_reads_nothing(clip: Path, color_model: Path) -> None:
    sink = EndsSink()
    s = load_settings(None, {"sources": (str(clip),), "model": str(color_model), "bind": "none",
                             "backend": "onnxruntime", "threads": 1})
    pipeline = Pipeline(s, sinks=[sink]).open()
    try:
        pipeline.request_stop()
        with pytest.raises(StopRequested, match="before the first frame"):
            pipeline.run()
    finally:
        pipeline.close()
    assert (sink.preds, sink.ends) == (0, [("clip", 0, "stopped")])
    assert pipeline.sources[0].frames_read == 0


# -- case 6: an endpoint in use, on every transport ----------------------------------------------------------
def one_line_error(r: subprocess.CompletedProcess[str], needle: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamer: error: ") and needle in lines[0], r.stderr


def test_an_ipc_endpoint_in_use_is_refused_and_its_owner_keeps_it(clip: Path, color_model: Path,
                                                                  tmp_path: Path) -> None:
    path = tmp_path / "pred.sock"
    endpoint = f"ipc://{path}"
    with zmq_context() as ctx:
        owner = ctx.socket(zmq.PUB)
        owner.setsockopt(zmq.LINGER, 0)
        owner.bind(endpoint)
        r = run_cli("--source", str(clip), "--model", str(color_model), "--bind", endpoint)
        one_line_error(r, f"cannot bind ZeroMQ endpoint {endpoint}: address already in use")
        sub = sub_socket(ctx, endpoint, ("x",))  # the first program still owns the path: it still delivers
        msg = None
        for _ in range(200):  # slow joiner: resend until the subscription is in
            owner.send_multipart([b"x", b"{}"])
            if sub.poll(50):
                msg = sub.recv_multipart()
                break
        assert msg == [b"x", b"{}"]


def test_an_abstract_ipc_endpoint_in_use_is_refused(clip: Path, color_model: Path) -> None:
    endpoint = f"ipc://@streamer-test-{os.getpid()}"
    with zmq_context() as ctx:
        owner = ctx.socket(zmq.PUB)
        owner.setsockopt(zmq.LINGER, 0)
        owner.bind(endpoint)
        r = run_cli("--source", str(clip), "--model", str(color_model), "--bind", endpoint)
    one_line_error(r, "address already in use")


def test_a_file_at_the_ipc_path_is_not_deleted(clip: Path, color_model: Path, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("mine\n")
    r = run_cli("--source", str(clip), "--model", str(color_model), "--bind", f"ipc://{path}")
    one_line_error(r, "exists and is not a socket")
    assert path.read_text() == "mine\n"


def test_a_stale_ipc_socket_is_reused(clip: Path, color_model: Path, tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    left = socket.socket(socket.AF_UNIX)
    left.bind(str(path))  # a socket file nobody listens on, as a crashed run leaves it
    left.close()
    r = run_cli("--source", str(clip), "--model", str(color_model), "--bind", f"ipc://{path}", "--quiet")
    assert r.returncode == 0, r.stderr


# -- case 8: malformed URLs ----------------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["http://[::1", "rtsp://admin:hunter2@[::1/live", "rtsp://cam:99999/x",
                                 "http:///video"])
def test_a_malformed_url_is_one_line(url: str, color_model: Path) -> None:
    r = run_cli("--source", url, "--model", str(color_model), "--bind", "none")
    one_line_error(r, "malformed URL in --source")
    assert "Traceback" not in r.stderr and "hunter2" not in r.stderr


# -- case 11: what --help says -------------------------------------------------------------------------------
def test_help_names_every_exit_status_and_counts_subscriptions() -> None:
    r = run_cli("--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for status in ("exit status: 0 done", "1 it ran, but a source failed or was given up",
                   "2 a one-line error", "128+N a second signal"):
        assert status in text, status
    assert "until N subscriptions are active" in text and "N subscribers" not in text
