"""The whole pipeline in-process: real files, real ONNX Runtime, real JSONL and (when present) real ZeroMQ."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from streamer_helpers import COLOR_LABELS, COLORS, color_sequence, read_jsonl, write_video

from streamer.config import Settings, load_settings
from streamer.errors import ConfigError, ModelError, PublishError, SourceError
from streamer.pipeline import Pipeline
from streamer.protocol import Prediction
from streamer.sinks import JsonlSink, Sink
from streamer.sources import Frame, FrameSource, make_source


class ListSink(Sink):
    """Records everything the pipeline hands its sinks (the test stand-in for the publisher)."""

    name = "list"

    def __init__(self) -> None:
        self.preds: list[Prediction] = []
        self.ends: list[tuple[str, int, str]] = []
        self.healths: list[tuple[str, str]] = []
        self.stat_msgs: list[dict[str, Any]] = []
        self.skipped: dict[str, int] = {}  # per source, from its end
        self.started = self.closed = False
        self.first_pred = threading.Event()

    def start(self) -> None:
        self.started = True

    def prediction(self, pred: Prediction) -> None:
        self.preds.append(pred)
        self.first_pred.set()

    def end(self, source: str, frames: int, reason: str, skipped: int = 0) -> None:
        self.ends.append((source, frames, reason))
        self.skipped[source] = skipped

    def health(self, source: str, state: str, detail: str) -> None:
        self.healths.append((source, state))

    def stats(self, stats: dict[str, Any]) -> None:
        self.stat_msgs.append(stats)

    def close(self) -> None:
        self.closed = True


def settings(model: Path, *sources: str, **overrides: Any) -> Settings:
    base = {"sources": tuple(sources), "model": str(model), "bind": "none", "backend": "onnxruntime",
            "batch": 8, "threads": 1, "stats_interval_s": 0.0}
    base.update(overrides)
    return load_settings(None, base)


def run(s: Settings, sink: Sink | None = None) -> tuple[Any, ListSink]:
    sink = sink or ListSink()
    pipeline = Pipeline(s, sinks=[sink])
    try:
        summary = pipeline.run()
    finally:
        pipeline.close()
    return summary, sink


def test_a_file_of_n_frames_gives_n_predictions_in_order(tmp_path: Path, color_model: Path) -> None:
    colors = color_sequence(57, seed=1)
    clip = write_video(tmp_path / "clip.avi", colors)
    summary, sink = run(settings(color_model, str(clip), topk=2))
    assert [p.frame_index for p in sink.preds] == list(range(57))
    assert [p.topk[0].label for p in sink.preds] == colors
    assert all(len(p.topk) == 2 and p.topk[0].score >= p.topk[1].score for p in sink.preds)
    assert {p.source for p in sink.preds} == {"clip"}
    assert sink.preds[0].model_id == "color@000000000000/onnxruntime"
    assert sink.ends == [("clip", 57, "end")]
    assert sink.started and sink.closed
    assert (summary.frames, summary.dropped, summary.sources[0].frames) == (57, 0, 57)
    assert summary.latency_ms["p50"] is not None and summary.latency_ms["p50"] <= summary.latency_ms["p99"]
    assert summary.batches >= 57 // 8


def test_two_files_keep_their_ids_counts_and_order(tmp_path: Path, color_model: Path) -> None:
    a = write_video(tmp_path / "a.avi", color_sequence(40, seed=2))
    b = write_video(tmp_path / "b.avi", color_sequence(23, seed=3))
    summary, sink = run(settings(color_model, str(a), str(b)))
    for name, n, seed in (("a", 40, 2), ("b", 23, 3)):
        preds = [p for p in sink.preds if p.source == name]
        assert [p.frame_index for p in preds] == list(range(n))
        assert [p.topk[0].label for p in preds] == color_sequence(n, seed=seed)
    assert sorted(sink.ends) == [("a", 40, "end"), ("b", 23, "end")]
    assert {s.name: s.frames for s in summary.sources} == {"a": 40, "b": 23}
    # eos of a source comes after its last prediction
    last_b = max(i for i, p in enumerate(sink.preds) if p.source == "b")
    assert last_b < len(sink.preds)
    assert summary.mean_batch > 1


def test_same_file_twice_gets_two_ids(tmp_path: Path, color_model: Path) -> None:
    clip = write_video(tmp_path / "cam.avi", ["red"] * 5)
    summary, _ = run(settings(color_model, str(clip), str(clip)))
    assert sorted((s.name, s.frames) for s in summary.sources) == [("cam", 5), ("cam-2", 5)]


def test_jsonl_is_lossless_with_the_real_writer(tmp_path: Path, color_model: Path, vtest: Path) -> None:
    out = tmp_path / "preds.jsonl"
    summary, _ = run(settings(color_model, str(vtest), batch=16), JsonlSink.create(str(out)))
    lines = read_jsonl(out)
    assert len(lines) == summary.frames == 795
    assert [d["frame"] for d in lines] == list(range(795))
    assert all(d["source"] == "vtest" and d["v"] == 1 for d in lines)
    assert all(d["topk"][0]["label"] in COLOR_LABELS for d in lines)
    assert all(d["latency_ms"] >= 0 for d in lines)


def test_max_frames_and_stop_reason(tmp_path: Path, color_model: Path) -> None:
    clip = write_video(tmp_path / "long.avi", ["green"] * 30)
    _, sink = run(settings(color_model, str(clip), max_frames=12))
    assert len(sink.preds) == 12 and sink.ends == [("long", 12, "stopped")]


def test_request_stop_drains_and_ends_every_source(tmp_path: Path, color_model: Path) -> None:
    clip = write_video(tmp_path / "slow.avi", ["blue"] * 200, fps=50.0)
    sink = ListSink()
    pipeline = Pipeline(settings(color_model, str(clip), realtime=True), sinks=[sink])
    pipeline.open()
    runner = threading.Thread(target=lambda: setattr(pipeline, "result", pipeline.run()), daemon=True)
    runner.start()
    assert sink.first_pred.wait(10.0)
    pipeline.request_stop()
    runner.join(10.0)
    assert not runner.is_alive()
    pipeline.close()
    summary = pipeline.result
    n = len(sink.preds)
    assert 0 < n < 200 and summary.frames == n and summary.stopped_by_signal
    indices = [p.frame_index for p in sink.preds]
    assert indices == sorted(indices) and len(set(indices)) == n
    assert sink.ends == [("slow", n, "stopped")]
    assert ("slow", "up") in sink.healths


def test_stats_are_handed_to_sinks(tmp_path: Path, color_model: Path) -> None:
    clip = write_video(tmp_path / "s.avi", ["red"] * 10)
    s = settings(color_model, str(clip), stats_interval_s=0.05)
    sink = ListSink()
    pipeline = Pipeline(s, sinks=[sink])
    pipeline.open()
    pipeline.run()
    pipeline.close()
    assert sink.stat_msgs, "no stats message"
    final = sink.stat_msgs[-1]  # one always follows the run
    assert final["frames"] == 10 and final["sources"]["s"]["frames"] == 10 and final["model"]


def test_demo_accuracy_is_reported(color_model: Path) -> None:
    pytest.importorskip("streamer.model.demo", reason="demo clip not in this tree yet")
    summary, _ = run(settings(color_model, "demo", max_frames=20))
    acc = summary.accuracy
    assert acc is not None and acc["source"] == "demo" and acc["total"] == 20
    assert 0.0 <= acc["accuracy"] <= 1.0  # the colour model knows no shapes: only the bookkeeping is tested


def test_demo_accuracy_with_the_default_model() -> None:
    from streamer.paths import DEFAULT_MODEL

    if not DEFAULT_MODEL.is_file():
        pytest.skip("the default model engines/shapes_cnn.onnx is not in this tree yet")
    pytest.importorskip("streamer.model.demo")
    summary, _ = run(load_settings(None, {"sources": ("demo",), "bind": "none", "threads": 1,
                                          "stats_interval_s": 0.0}))
    assert summary.accuracy is not None
    assert summary.accuracy["accuracy"] >= 0.95, summary.accuracy


def test_a_failing_batch_stops_the_run_with_a_model_error(tmp_path: Path, color_model: Path) -> None:
    clip = write_video(tmp_path / "f.avi", ["red"] * 40)
    sink = ListSink()
    pipeline = Pipeline(settings(color_model, str(clip)), sinks=[sink]).open()

    def broken(images: np.ndarray, out: np.ndarray) -> None:
        raise RuntimeError("device lost")

    pipeline.backend.infer = broken  # type: ignore[method-assign]
    with pytest.raises(ModelError, match="inference failed on a batch: RuntimeError: device lost"):
        pipeline.run()
    pipeline.close()
    assert sink.preds == [] and sink.ends and sink.closed
    assert pipeline.metrics.failed_batches >= 1


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"sources": ()}, ConfigError, "no source given"),
        ({"sources": ("/nope/missing.mp4",)}, SourceError, "no such file"),
        ({"sources": ("webcam97",)}, SourceError, "camera webcam97"),
        ({"model": "/nope/model.onnx"}, ModelError, "model file not found"),
    ],
)
def test_start_up_errors(tmp_path: Path, color_model: Path, overrides: dict, error: type, match: str) -> None:
    clip = write_video(tmp_path / "ok.avi", ["red"])
    s = settings(color_model, str(clip)).replace(**overrides)
    with pytest.raises(error, match=match):
        Pipeline(s, sinks=[ListSink()]).open()


class _LiveTestSource(FrameSource):
    """A live source that delivers ``frames`` red frames, then fails (or hangs until stopped)."""

    kind = "test"

    def __init__(self, name: str, frames: int, then: str) -> None:
        super().__init__(name, name, is_live=True)
        self.frames, self.then, self.n = frames, then, 0
        self.hanging = threading.Event()

    def _open(self) -> None:
        pass

    def _read(self) -> Frame | None:
        if self.n < self.frames:
            self.n += 1
            return Frame(np.full((24, 24, 3), COLORS["red"], np.uint8), self.n - 1, time.time())
        if self.then == "fail":
            raise SourceError(f"{self.name} lost")
        self.hanging.set()
        while not self.state.is_final:  # a dead camera: read() blocks until the pipeline stops it
            self.hanging.wait(0.01)
        return None


def test_a_failing_live_source_does_not_stop_the_others(tmp_path: Path, color_model: Path) -> None:
    clip = write_video(tmp_path / "file.avi", color_sequence(40, seed=4))
    sink = ListSink()
    s = settings(color_model, str(clip))
    pipeline = Pipeline(s, sinks=[sink], sources=[_LiveTestSource("cam", 3, "fail"), make_source(str(clip))])
    summary = pipeline.run()
    pipeline.close()
    assert [p.frame_index for p in sink.preds if p.source == "file"] == list(range(40))
    assert len([p for p in sink.preds if p.source == "cam"]) >= 1  # live: older frames may be dropped
    assert sorted(sink.ends)[0][::2] == ("cam", "error") and ("file", 40, "end") in sink.ends
    assert ("cam", "down") in sink.healths
    assert pipeline.failed_sources == ["cam"]
    assert {x.name: x.end for x in summary.sources}["cam"].startswith("failed: cam lost")


def test_a_dead_live_source_never_stalls_the_others(tmp_path: Path, color_model: Path) -> None:
    clip = write_video(tmp_path / "file.avi", color_sequence(30, seed=6))
    sink = ListSink()
    dead = _LiveTestSource("dead", 1, "hang")
    sources = [dead, make_source(str(clip))]
    pipeline = Pipeline(settings(color_model, str(clip)), sinks=[sink], sources=sources)
    pipeline.open()
    result: list[Any] = []
    runner = threading.Thread(target=lambda: result.append(pipeline.run()), daemon=True)
    runner.start()
    assert dead.hanging.wait(10.0)
    deadline = time.monotonic() + 10.0
    while ("file", 30, "end") not in sink.ends:  # the file finishes while the dead camera hangs
        assert time.monotonic() < deadline, "the file did not finish"
        sink.first_pred.wait(0.01)
    assert runner.is_alive()
    pipeline.request_stop()
    runner.join(10.0)
    assert not runner.is_alive()
    pipeline.close()
    assert ("dead", 1, "stopped") in sink.ends
    assert [p.frame_index for p in sink.preds if p.source == "file"] == list(range(30))


# -- with the real publisher ------------------------------------------------------------------------------
publish = pytest.importorskip("streamer.publish", reason="the ZeroMQ publisher is not in this tree yet")


def test_a_subscriber_connected_first_receives_every_prediction_then_eos(tmp_path: Path,
                                                                         color_model: Path) -> None:
    from zmq_helpers import recv_message, sub_socket, zmq_context

    from streamer.sinks import PublisherSink

    colors = color_sequence(45, seed=5)
    clip = write_video(tmp_path / "pub.avi", colors)
    out = tmp_path / "pub.jsonl"
    sink = PublisherSink(publish.Publisher("tcp://127.0.0.1:*", linger_ms=1000), wait_subscribers=1,
                         wait_timeout_s=10.0)
    pipeline = Pipeline(settings(color_model, str(clip)), sinks=[sink, JsonlSink.create(str(out))])
    with zmq_context() as ctx:
        sock = sub_socket(ctx, sink.bind(), ("pred.", "eos."))
        pipeline.open()
        summary = pipeline.run()  # waits for the subscription to arrive before reading frames
        pipeline.close()
        got = [recv_message(sock) for _ in range(46)]
    preds = [d for t, d in got if t == "pred.pub"]
    assert [d["frame"] for d in preds] == list(range(45))
    assert [d["topk"][0]["label"] for d in preds] == colors
    assert got[-1][0] == "eos.pub" and got[-1][1]["frames"] == 45 and got[-1][1]["reason"] == "end"
    assert len(read_jsonl(out)) == summary.frames == 45


def test_endpoint_in_use_is_a_publish_error(tmp_path: Path, color_model: Path) -> None:
    from zmq_helpers import pub_socket, zmq_context

    clip = write_video(tmp_path / "x.avi", ["red"])
    with zmq_context() as ctx:
        _, endpoint = pub_socket(ctx)
        s = settings(color_model, str(clip), bind=endpoint)
        with pytest.raises(PublishError, match="address already in use"):
            Pipeline(s).open()
