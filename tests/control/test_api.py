"""The control plane on a real pipeline (video files the tests write, real ONNX Runtime, real HTTP on
127.0.0.1): probes through the run's phases, sources added and removed while it streams, bad requests that
change nothing, the token, and /metrics against the run's own summary."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from recording_sink import RecordingSink
from service_helpers import StreamerProcess
from streamer_helpers import color_sequence, run_cli, write_video

from streamer.config import Settings, load_settings
from streamer.control.api import serve
from streamer.control.server import HttpServer
from streamer.cuda_env import gpu_info, memory_info
from streamer.intake import IntakeClosed
from streamer.pipeline import Pipeline
from streamer.sinks import PublisherSink, Sink

TIMEOUT_S = 30.0
JSON = {"Content-Type": "application/json"}


def settings(model: Path, *sources: str, **overrides: Any) -> Settings:
    base = {"sources": tuple(sources), "model": str(model), "bind": "none", "backend": "onnxruntime",
            "threads": 1, "batch": 4, "stats_interval_s": 0.0, "http": "127.0.0.1:0", **overrides}
    return load_settings(None, base)


def call(server: HttpServer, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """(status, decoded JSON or text) of one request. ``body``: bytes as they are, else JSON-encoded."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    conn = http.client.HTTPConnection(server.host, server.port, timeout=TIMEOUT_S)
    try:
        sent = {**(JSON if data is not None else {}), **(headers or {})}
        conn.request(method, path, body=data, headers=sent)
        resp = conn.getresponse()
        raw = resp.read().decode()
        ctype = resp.getheader("Content-Type") or ""
        return resp.status, json.loads(raw) if ctype.startswith("application/json") else raw
    finally:
        conn.close()


class Service:
    """A pipeline with its control plane, streaming on a thread until ``stop()`` (or its sources end)."""

    def __init__(self, s: Settings, *more_sinks: Sink) -> None:
        self.sink = RecordingSink()
        self.pipeline = Pipeline(s, sinks=[self.sink, *more_sinks])
        server = serve(s, self.pipeline)
        assert server is not None
        self.server = server
        self.summary: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="test-service", daemon=True)

    def start(self) -> Service:
        self.pipeline.open()
        self._thread.start()
        self.sink.wait("the pipeline streams", lambda: self.pipeline.phase == "running" or self.done)
        return self

    @property
    def done(self) -> bool:
        return not self._thread.is_alive() and self._thread.ident is not None

    def _run(self) -> None:
        try:
            self.summary = self.pipeline.run()
        except BaseException as exc:
            self.error = exc

    def join(self, timeout_s: float = TIMEOUT_S) -> Any:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the pipeline did not end"
        if self.error is not None:
            raise self.error
        return self.summary

    def stop(self) -> Any:
        self.pipeline.request_stop()
        return self.join()

    def close(self) -> None:
        if self._thread.is_alive():
            self.pipeline.request_stop()
            self._thread.join(TIMEOUT_S)
        self.pipeline.close()
        self.server.close()


@pytest.fixture
def service() -> Iterator[list[Service]]:
    made: list[Service] = []
    yield made
    for svc in made:
        svc.close()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("control")
    return {"short": write_video(d / "short.avi", color_sequence(30, seed=1), size=(32, 32)),
            "other": write_video(d / "other.avi", color_sequence(45, seed=2), size=(32, 32)),
            # played at 50 fps (--realtime): 400 frames last 8 s, long enough to add and remove around it
            "long": write_video(d / "long.avi", color_sequence(400, seed=3), size=(32, 32), fps=50.0)}


def test_probes_follow_the_run_through_its_phases(color_model: Path, clips: dict[str, Path],
                                                  service: list[Service]) -> None:
    svc = Service(settings(color_model, keep_running=True, realtime=True))
    service.append(svc)
    status, body = call(svc.server, "GET", "/healthz")
    assert (status, body["status"], body["phase"]) == (200, "ok", "created")  # alive while starting
    status, body = call(svc.server, "GET", "/readyz")
    assert (status, body["reason"]) == (503, "not started")
    svc.start()
    status, body = call(svc.server, "GET", "/readyz")
    assert (status, body["reason"], body["model"]) == (503, "no source is up (add one: POST /sources)", True)
    assert call(svc.server, "GET", "/healthz")[1]["threads"] == {"batcher": True, "results": True}

    status, entry = call(svc.server, "POST", "/sources", {"source": str(clips["long"]), "name": "cam"})
    assert status == 201 and entry["name"] == "cam" and entry["state"] == "running"
    status, body = call(svc.server, "GET", "/readyz")
    assert (status, body["status"], body["sources_up"]) == (200, "ready", 1)
    svc.sink.wait_preds("cam", 5)

    svc.stop()
    status, body = call(svc.server, "GET", "/healthz")
    assert (status, body["reason"]) == (503, "the run has ended")
    assert call(svc.server, "GET", "/readyz")[0] == 503
    status, body = call(svc.server, "POST", "/sources", {"source": str(clips["short"])})
    assert status == 503 and "not streaming" in body["error"]


def test_a_source_is_added_and_removed_while_the_run_streams(color_model: Path, clips: dict[str, Path],
                                                            service: list[Service]) -> None:
    svc = Service(settings(color_model, str(clips["long"]), realtime=True)).start()
    service.append(svc)
    sink = svc.sink
    sink.wait_preds("long", 10)
    status, entry = call(svc.server, "POST", "/sources",
                         {"source": str(clips["long"]), "name": "extra", "policy": "drop-oldest"})
    assert status == 201
    assert {k: entry[k] for k in ("name", "kind", "policy", "uri")} == {
        "name": "extra", "kind": "file", "policy": "drop-oldest", "uri": str(clips["long"])}
    sink.wait_preds("extra", 20)
    frames = [e.frame for e in sink.preds("extra")]
    assert frames[0] == 0 and frames == sorted(set(frames))  # its own indices, from 0
    assert sink.health_states("extra")[:1] == ["up"]

    status, entry = call(svc.server, "DELETE", "/sources/extra")
    assert status == 200 and (entry["end"], entry["state"]) == ("removed", "ended")
    end = sink.select("end", "extra")
    assert [(e.state, e.frame) for e in end] == [("removed", entry["frames"])]
    last_pred = sink.preds("extra")[-1]
    assert last_pred.at <= end[0].at and len(sink.preds("extra")) == entry["frames"]  # drained, then eos
    assert sink.select("end", "long") == []  # the other source goes on
    before = len(sink.preds("long"))
    sink.wait_preds("long", before + 10)

    status, listed = call(svc.server, "GET", "/sources")
    assert [(s["name"], s["end"]) for s in listed] == [("long", ""), ("extra", "removed")]
    summary = svc.join()  # without --keep-running the run ends with its last source
    assert {s.name: s.end for s in summary.sources} == {"long": "end of file", "extra": "removed"}
    with pytest.raises(IntakeClosed):
        svc.pipeline.add_source(str(clips["short"]))


def test_bad_requests_change_nothing_and_say_why(color_model: Path, clips: dict[str, Path],
                                                 service: list[Service], tmp_path: Path) -> None:
    svc = Service(settings(color_model, str(clips["long"]), realtime=True, keep_running=True)).start()
    service.append(svc)
    missing = tmp_path / "missing.mp4"

    def state() -> list[tuple[str, str, str]]:
        return [(s["name"], s["policy"], s["uri"]) for s in call(svc.server, "GET", "/sources")[1]]

    before = state()
    assert call(svc.server, "POST", "/sources", {"source": str(clips["short"]), "name": "second"})[0] == 201
    before = state()
    cli = run_cli("--source", str(missing), "--bind", "none", "--model", str(color_model))
    cli_line = cli.stderr.strip().splitlines()[-1]
    assert cli.returncode == 2 and cli_line.startswith("streamer: error: no such file or directory")
    cases: list[tuple[str, str, Any, int, str]] = [
        ("POST", "/sources", b'{"source": ', 400, "malformed JSON body"),
        ("POST", "/sources", ["not", "an", "object"], 400, "the body must be a JSON object"),
        ("POST", "/sources", {"source": str(clips["short"]), "nmae": "x"}, 400, "unknown field(s) 'nmae'"),
        ("POST", "/sources", {"name": "x"}, 400, '"source" is missing or empty'),
        ("POST", "/sources", {"source": 5}, 400, '"source" must be a string'),
        ("POST", "/sources", {"source": str(missing)}, 400, cli_line.removeprefix("streamer: error: ")),
        ("POST", "/sources", {"source": "ftp://cam/x"}, 400, "unsupported URL scheme 'ftp'"),
        ("POST", "/sources", {"source": str(clips["short"]), "policy": "fastest"}, 400,
         "\"policy\": unknown backpressure policy 'fastest'"),
        ("POST", "/sources", {"source": str(clips["short"]), "name": "a b"}, 400, "bad source name 'a b'"),
        ("POST", "/sources", {"source": str(clips["short"]), "name": "second"}, 409,
         "a source named 'second' is already in this run"),
        ("DELETE", "/sources/nobody", None, 404, "no source named 'nobody' in this run"),
        ("PUT", "/sources/second", None, 405, "PUT is not allowed on /sources/second"),
    ]
    for method, path, body, want_status, want_error in cases:
        status, answer = call(svc.server, method, path, body)
        assert (status, answer["status"]) == (want_status, want_status), (method, body, answer)
        assert answer["error"].startswith(want_error), (answer["error"], want_error)
        assert "\n" not in answer["error"]
        assert state() == before, f"{method} {body!r} changed the sources"
    svc.sink.wait("the short clip ends", lambda: bool(svc.sink.select("end", "second")))
    status, answer = call(svc.server, "DELETE", "/sources/second")
    assert status == 409 and answer["error"].startswith("source 'second' has already ended")
    assert state() == before


def test_changes_need_the_token_when_one_is_set(color_model: Path, clips: dict[str, Path],
                                                service: list[Service]) -> None:
    svc = Service(settings(color_model, keep_running=True, http_token="s3cret")).start()
    service.append(svc)
    body = {"source": str(clips["short"]), "name": "t"}
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "s3cret"}):
        status, answer = call(svc.server, "POST", "/sources", body, headers)
        assert status == 401 and "token" in answer["error"]
    assert call(svc.server, "GET", "/sources") == (200, [])  # reads need no token; nothing was added
    status, entry = call(svc.server, "POST", "/sources", body, {"Authorization": "Bearer s3cret"})
    assert (status, entry["name"]) == (201, "t")
    assert call(svc.server, "DELETE", "/sources/t")[0] == 401


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition: (name, sorted labels) → value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_add_up_to_the_runs_own_summary(color_model: Path, clips: dict[str, Path],
                                                 service: list[Service]) -> None:
    publisher = PublisherSink.create("tcp://127.0.0.1:*", hwm=1000, encoding="json")
    s = settings(color_model, str(clips["short"]), str(clips["other"]), keep_running=True)
    svc = Service(s, publisher)
    service.append(svc)
    svc.start()
    svc.sink.wait("both clips end", lambda: len(svc.sink.select("end")) == 2)
    assert publisher.publisher.flush(timeout=10.0)  # every queued message handed to ZeroMQ before the scrape
    status, text = call(svc.server, "GET", "/metrics")
    summary = svc.stop()
    assert status == 200
    m = samples(text)
    frames = {s.name: s.frames for s in summary.sources}
    assert frames == {"short": 30, "other": 45}
    for name, n in frames.items():
        assert m[("streamer_frames_total", (("source", name),))] == n
        assert m[("streamer_frames_dropped_total", (("reason", "backpressure"), ("source", name)))] == 0
        assert m[("streamer_source_up", (("source", name),))] == 0  # ended
    total = sum(frames.values())
    assert m[("streamer_capture_to_publish_seconds_count", ())] == total
    assert m[("streamer_capture_to_publish_seconds_bucket", (("le", "+Inf"),))] == total
    for stage, count in (("decode", total), ("resize", total), ("queue", total),
                         ("engine", summary.batches), ("publish", summary.batches)):
        assert m[("streamer_stage_seconds_count", (("stage", stage),))] == count, stage
    assert m[("streamer_stage_seconds_sum", (("stage", "engine"),))] > 0
    assert m[("streamer_batch_size_sum", ())] == total
    assert m[("streamer_batch_size_count", ())] == summary.batches
    info = next(labels for (name, labels) in m if name == "streamer_info")
    assert dict(info) == {"backend": "onnxruntime", "model": summary.model, "protocol_version": "1",
                          "version": dict(info)["version"]}
    assert m[("streamer_zmq_messages_sent_total", ())] >= total  # every prediction went to ZeroMQ
    assert ("streamer_zmq_messages_dropped_total", (("reason", "queue_full"),)) in m
    assert ("process_resident_memory_bytes", ()) in m


def test_command_line_start_up_errors_are_one_line(color_model: Path, clips: dict[str, Path]) -> None:
    common = ("--model", str(color_model), "--backend", "onnxruntime", "--bind", "none")
    r = run_cli("--keep-running", *common)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "streamer: error: --keep-running without a --source needs --http: nothing could add a source (hint: "
        "give --http HOST:PORT, then POST /sources (streamer-ctl add SRC))"]
    r = run_cli("--source", str(clips["short"]), "--http", "localhost:http", *common)
    assert r.returncode == 2
    assert r.stderr.startswith("streamer: error: --http / [control] http: bad address 'localhost:http'")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run_cli("--source", str(clips["short"]), "--http", f"127.0.0.1:{port}", *common)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    want = f"streamer: error: --http / [control] http: cannot listen on 127.0.0.1:{port}: "
    assert r.stderr.startswith(want)


def test_a_service_without_sources_waits_and_stops_on_sigint(color_model: Path) -> None:
    svc = StreamerProcess("--keep-running", "--http", "127.0.0.1:0", "--model", str(color_model),
                          "--backend", "onnxruntime", "--bind", "none")
    try:
        svc.wait_line(r"backend onnxruntime selected")
        host, port = svc.url.removeprefix("http://").rsplit(":", 1)
        server = HttpServer(host, int(port))  # not started: only its address, for call()
        status, body = poll(lambda: call(server, "GET", "/readyz"), lambda r: r[1]["phase"] == "running")
        assert (status, body["reason"]) == (503, "no source is up (add one: POST /sources)")
        assert call(server, "GET", "/sources") == (200, [])
    finally:
        code = svc.interrupt()
    assert code == 0, "".join(svc.stderr)


def poll(get: Any, done: Any, timeout_s: float = TIMEOUT_S) -> Any:
    """``get()`` until ``done(result)``, with a deadline."""
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while not done(result := get()):
        assert time.monotonic() < deadline, f"not reached within {timeout_s} s: last {result}"
        pause.wait(0.05)
    return result


def test_gpu_memory_comes_from_the_driver_or_is_absent() -> None:
    """What streamer_gpu_memory_bytes reports on a GPU backend: the device's memory through the driver;
    without a GPU, nothing (and the metric is left out)."""
    info, mem = gpu_info(0), memory_info(0)
    if info is None:
        assert mem is None
    else:
        assert mem is not None
        free, total = mem
        assert total == info.total_memory and 0 < free <= total
