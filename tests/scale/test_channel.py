"""The lossless channel over real ZeroMQ on loopback: worker sinks → the driver's collector → JSONL, each
(source, frame) once across a worker's restart, and a full disk that stops the run instead of losing lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from zmq_helpers import make_prediction

from streamer.publish import JsonlWriter
from streamer.scale.channel import ChannelSink, Collector, WorkerChannel

WAIT_S = 30.0


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def collector(tmp_path: Path):
    writer = JsonlWriter(tmp_path / "merged.jsonl")
    events: list[tuple] = []
    col = Collector("127.0.0.1", writer, lambda *event: events.append(event)).start()
    col.events = events
    yield col
    col.close()
    writer.close()


def send(channel: WorkerChannel, source: str, frames: range) -> None:
    """One batch's predictions, as a worker's results thread hands them to its sinks."""
    for frame in frames:
        channel.prediction(make_prediction(frame, source))
    channel.flush()


def test_a_restarted_worker_resumes_and_every_frame_is_written_once(collector: Collector,
                                                                     tmp_path: Path) -> None:
    collector.track("a", 0)
    collector.track("b", 0)
    assert collector.begin(0, 1) == {"a": -1, "b": -1}
    first = WorkerChannel(collector.endpoint, 0, 1)
    send(first, "a", range(50))
    send(first, "b", range(20))
    assert collector.wait_for(lambda: collector.sources["a"].last_frame == 49
                              and collector.sources["b"].last_frame == 19, WAIT_S)

    # the worker "dies": the driver starts incarnation 2, resuming after what it has written
    resume = collector.begin(0, 2)
    assert resume == {"a": 49, "b": 19}
    send(first, "a", range(50, 60))  # still in flight from the dead incarnation: refused
    second = WorkerChannel(collector.endpoint, 0, 2)
    send(second, "a", range(45, 100))  # overlapping what was written: 45..49 are dropped
    ChannelSink(second, {"a": 50}).end("a", 50, "end", 0)  # this run classified 50..99
    second.done({"summary": None})
    assert collector.wait_done(0, 2, WAIT_S) == {"summary": None}
    first.close()
    second.close()

    counters = collector.counters()
    assert counters.stale == 10 and counters.duplicates == 5
    got = [(d["source"], d["frame"]) for d in lines(tmp_path / "merged.jsonl")]
    assert sorted(got) == sorted([("a", i) for i in range(100)] + [("b", i) for i in range(20)])
    assert len(got) == len(set(got)) == counters.written
    record = collector.sources["a"]
    assert record.frames == 100 and record.end == {"frames": 100, "reason": "end", "skipped": 0}
    assert ("end", 0, "a", {"frames": 100, "reason": "end", "skipped": 0}) in collector.events
    assert collector.begin(0, 3) == {"b": 19}  # an ended source is not resumed again


def test_health_and_stats_are_recorded_per_source_and_worker(collector: Collector) -> None:
    collector.begin(1, 1)
    channel = WorkerChannel(collector.endpoint, 1, 1)
    sink = ChannelSink(channel)
    sink.health("cam", "down", "no frame for 5 s")
    sink.stats({"fps": 12.5, "sources": {"cam": {"frames": 3}}})
    channel.done({})
    assert collector.wait_done(1, 1, WAIT_S) == {}
    channel.close()
    sources, stats = collector.snapshot()
    assert (sources["cam"].health, sources["cam"].detail) == ("down", "no frame for 5 s")
    assert stats[1]["fps"] == 12.5
    assert ("health", 1, "cam", {"state": "down", "detail": "no frame for 5 s"}) in collector.events


def test_a_full_disk_stops_the_run_instead_of_losing_lines() -> None:
    full = Path("/dev/full")
    if not full.exists():
        pytest.fail("/dev/full is missing (every Linux has it)")
    writer = JsonlWriter(full)
    collector = Collector("127.0.0.1", writer).start()
    try:
        collector.begin(0, 1)
        channel = WorkerChannel(collector.endpoint, 0, 1)
        send(channel, "a", range(3))
        assert collector.wait_for(lambda: collector.error is not None, WAIT_S)
        assert "cannot write --output" in str(collector.error)
        send(channel, "a", range(3, 5000))  # still received (and dropped): a worker can drain and stop
        channel.done({})
        assert collector.wait_done(0, 1, WAIT_S) == {}
        channel.close()
    finally:
        collector.close()
        writer.close()
