"""The JSONL sink: a batch's lines in one write on flush, none held back at close, a full disk one error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from zmq_helpers import make_prediction

from streamer.errors import StreamerError
from streamer.protocol import Prediction
from streamer.sinks import JsonlSink


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_batch_goes_to_the_file_on_flush_in_one_write(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "preds.jsonl"
    sink = JsonlSink.create(str(path))
    writes: list[int] = []
    write_lines = sink.writer.write_lines
    monkeypatch.setattr(sink.writer, "write_lines",
                        lambda data, count=1: (writes.append(count), write_lines(data, count)))
    preds = [make_prediction(i) for i in range(5)]
    for p in preds:
        sink.prediction(p)
    assert path.read_bytes() == b"" and writes == []
    sink.flush()
    assert writes == [5] and sink.writer.lines == 5
    assert [Prediction.from_dict(row).frame_index for row in rows(path)] == list(range(5))
    sink.flush()  # nothing held: nothing written
    assert writes == [5]
    sink.close()
    assert [row["frame"] for row in rows(path)] == list(range(5))


def test_close_writes_the_lines_still_held(tmp_path: Path) -> None:
    path = tmp_path / "preds.jsonl"
    sink = JsonlSink.create(str(path))
    for i in range(3):
        sink.prediction(make_prediction(i, "a"))
    sink.close()
    assert sink.writer.closed
    assert [(row["source"], row["frame"]) for row in rows(path)] == [("a", 0), ("a", 1), ("a", 2)]


def test_a_full_disk_fails_the_flush_once_and_close_still_closes() -> None:
    full = Path("/dev/full")
    if not full.exists():
        pytest.fail("/dev/full is missing (every Linux has it)")
    sink = JsonlSink.create(str(full))
    sink.prediction(make_prediction(0))
    with pytest.raises(StreamerError, match="No space left on device; it holds the first 0 predictions"):
        sink.flush()
    sink.close()  # the failed lines are not written a second time
    assert sink.writer.closed
