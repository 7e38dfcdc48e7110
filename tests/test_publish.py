"""Publisher and JsonlWriter with real ZeroMQ sockets on loopback."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import resource
import subprocess
import sys
import threading
import time

import pytest
import zmq
from streamer_helpers import REPO
from zmq_helpers import (
    assert_silent,
    make_prediction,
    pub_socket,
    recv_frames,
    recv_message,
    recv_messages,
    sub_socket,
    zmq_context,
)

from streamer.errors import ConfigError, PublishError
from streamer.protocol import PROTOCOL_MINOR, PROTOCOL_VERSION, Prediction, TopK, decode, encode
from streamer.publish import JsonlWriter, Publisher
from streamer.subscribe import Subscriber

ANY_PORT = "tcp://127.0.0.1:*"


def test_subscriber_connected_first_receives_all_in_order(publisher: Publisher) -> None:
    n = 2000
    with zmq_context() as ctx:
        sub = sub_socket(ctx, publisher.endpoint, ["pred."])
        assert publisher.wait_for_subscribers(1, timeout=10)
        sent = [make_prediction(i, dropped=i % 3) for i in range(n)]
        for p in sent:
            assert publisher.publish(p)
        got = recv_messages(sub, n)
        assert_silent(sub)
        assert publisher.counters()["subscriptions"] == 1
    assert [t for t, _ in got] == ["pred.cam0"] * n
    assert [d["frame"] for _, d in got] == list(range(n))
    assert [d["seq"] for _, d in got] == list(range(n))
    first = got[0][1]
    assert set(first) >= {"v", "type", "source", "frame", "capture_ts", "publish_ts", "latency_ms", "topk",
                          "dropped", "model", "seq"}
    assert first["v"] == PROTOCOL_VERSION and first["type"] == "pred" and first["model"] == "test-model"
    assert first["topk"] == [{"index": 3, "label": "cat", "score": 0.9},
                             {"index": 1, "label": "dog", "score": 0.1}]
    for p, (_, d) in zip(sent, got, strict=True):
        assert d["capture_ts"] == p.capture_time
        assert d["publish_ts"] >= d["capture_ts"]
        assert d["latency_ms"] == pytest.approx((d["publish_ts"] - d["capture_ts"]) * 1e3, abs=1e-3)
        assert d["dropped"] == p.dropped
    assert Prediction.from_dict(first).frame_index == 0
    c = publisher.counters()
    assert c["sent"] == n and c["dropped_queue"] == 0 and c["hwm_overflows"] == 0 and c["errors"] == 0


def test_control_topics_and_payloads(publisher: Publisher) -> None:
    with zmq_context() as ctx:
        everything = sub_socket(ctx, publisher.endpoint, [""])
        only_eos = sub_socket(ctx, publisher.endpoint, ["eos."])
        assert publisher.wait_for_subscribers(2, timeout=10)
        publisher.publish(make_prediction(0, "vtest.avi"))
        publisher.publish_health("cam1", "reconnecting", "connection refused")
        publisher.publish_eos("vtest.avi", 795, "end", skipped=4)
        publisher.publish_stats({"fps": 123.4, "p99_ms": float("nan"), "per_source": {"cam1": {"fps": 1.5}}})
        got = dict(recv_messages(everything, 4))
        eos_topic, eos_only = recv_message(only_eos)
        assert_silent(only_eos)
    assert set(got) == {"pred.vtest.avi", "health.cam1", "eos.vtest.avi", "stats"}
    health = got["health.cam1"]
    assert health["type"] == "health" and health["source"] == "cam1"
    assert health["state"] == "reconnecting" and health["detail"] == "connection refused"
    eos = got["eos.vtest.avi"]
    assert eos == eos_only and eos_topic == "eos.vtest.avi"
    assert eos["type"] == "eos" and eos["source"] == "vtest.avi"
    assert (eos["frames"], eos["skipped"], eos["reason"]) == (795, 4, "end")
    stats = got["stats"]
    assert stats["type"] == "stats" and stats["fps"] == 123.4
    assert stats["p99_ms"] is None  # NaN is not JSON; sent as null
    assert stats["per_source"] == {"cam1": {"fps": 1.5}}
    assert stats["publisher"]["sent"] >= 3 and stats["publisher"]["subscriptions"] == 2
    for d in got.values():
        assert d["v"] == PROTOCOL_VERSION and d["minor"] == PROTOCOL_MINOR and d["publish_ts"] > 0
        assert d["seq"] == 0


def test_an_image_prediction_names_its_file_and_others_do_not() -> None:
    """Protocol 1.1: ``file`` is there for image sources only; it survives the round trip."""
    image = dataclasses.replace(make_prediction(7, "shots"), file="day1/img0007.png")
    video = make_prediction(7, "clip")
    d = image.to_dict()
    assert (d["file"], d["v"], d["minor"]) == ("day1/img0007.png", PROTOCOL_VERSION, PROTOCOL_MINOR)
    assert "file" not in video.to_dict()
    assert Prediction.from_dict(d) == image and Prediction.from_dict(video.to_dict()).file == ""
    with pytest.raises(ValueError, match="overwrite"):
        make_prediction(0, file="an extra may not pose as the field")


def test_control_messages_are_validated(publisher: Publisher) -> None:
    with pytest.raises(ValueError, match="health state"):
        publisher.publish_health("cam0", "sleepy", "")
    with pytest.raises(ValueError, match="frames"):
        publisher.publish_eos("cam0", -1, "end")
    with pytest.raises(ValueError, match="overwrite"):
        make_prediction(0, model="not allowed in extra")


def test_endpoint_in_use_is_a_publish_error() -> None:
    with zmq_context() as ctx:
        _, endpoint = pub_socket(ctx)
        pub = Publisher(endpoint)
        with pytest.raises(PublishError) as info:
            pub.start()
    msg = str(info.value)
    assert endpoint in msg and "already in use" in msg and "--bind" in msg
    assert "\n" not in msg
    pub.close()  # harmless after a failed start


@pytest.mark.parametrize("endpoint", ["localhost:5555", "tcp://nonsense", "foo://x", "tcp://127.0.0.1:99999",
                                      "tcp://192.0.2.1:5555"])
def test_malformed_endpoint_is_a_publish_error(endpoint: str) -> None:
    with pytest.raises(PublishError) as info:
        Publisher(endpoint).start()
    msg = str(info.value)
    assert endpoint in msg and "--bind" in msg and "\n" not in msg


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="high-water"):
        Publisher(ANY_PORT, hwm=0)
    with pytest.raises(ConfigError, match="encoding"):
        Publisher(ANY_PORT, encoding="xml")


def test_stuck_subscriber_never_blocks_publish_and_others_still_receive() -> None:
    """A subscriber that never reads, a tiny HWM, 20,000 large messages: every publish() returns, the
    overflow is counted, and a second subscriber still gets messages and counts exactly what it missed."""
    n = 20_000
    pad = "x" * 4000  # 80 MB in all: far beyond the kernel's socket buffers, so the stuck queue must overflow
    pub = Publisher(ANY_PORT, hwm=20, linger_ms=0).start()
    with zmq_context() as ctx:
        stuck = sub_socket(ctx, pub.endpoint, ["pred."], rcvhwm=20)
        reader = Subscriber(pub.endpoint, topics=("pred.", "health."), timeout_ms=10_000)
        assert pub.wait_for_subscribers(3, timeout=10)
        frames: list[int] = []
        seqs: list[int] = []
        marker = threading.Event()

        def read() -> None:
            for topic, payload in reader:
                if topic.startswith("health."):
                    marker.set()
                    return
                frames.append(payload["frame"])
                seqs.append(payload["seq"])

        reading = threading.Thread(target=read, daemon=True)
        reading.start()
        results: list[bool] = []

        def flood() -> None:
            results.extend(pub.publish(make_prediction(i, pad=pad)) for i in range(n))

        flooding = threading.Thread(target=flood, daemon=True)
        flooding.start()
        flooding.join(timeout=120)
        assert not flooding.is_alive(), "publish() blocked behind a stuck subscriber"
        assert len(results) == n
        assert pub.flush(timeout=60)
        # The reader is still served while the stuck subscriber holds its overflowing queue: a marker sent
        # now reaches it (re-sent until it does, since the reader's own queue may be momentarily full).
        deadline = time.monotonic() + 30
        while not marker.is_set() and time.monotonic() < deadline:
            pub.publish_health("marker", "up", "")
            marker.wait(0.2)
        assert marker.is_set(), "a healthy subscriber stopped receiving while another one was stuck"
        reading.join(timeout=10)
        c = pub.counters()
        assert c["hwm_overflows"] >= 1
        assert c["sent"] + c["dropped_queue"] >= n
        assert c["dropped_queue"] == results.count(False)
        assert frames and all(a < b for a, b in itertools.pairwise(frames))
        # The reader accounts for every prediction up to the last it got: received or counted as missed.
        assert seqs[0] == 0 and len(seqs) + reader.missed == seqs[-1] + 1
        reader.close()
        stuck.close()
    pub.close()


def test_close_drains_the_queue() -> None:
    n = 3000
    with zmq_context() as ctx:
        pub = Publisher(ANY_PORT, linger_ms=2000).start()
        sub = sub_socket(ctx, pub.endpoint)
        assert pub.wait_for_subscribers(1, timeout=10)
        for i in range(n):
            pub.publish(make_prediction(i))
        pub.publish_eos("cam0", n, "stopped")
        pub.close()  # returns after everything queued was sent
        got = recv_messages(sub, n + 1)
    assert [d.get("frame") for _, d in got[:n]] == list(range(n))
    assert got[-1][0] == "eos.cam0" and got[-1][1]["reason"] == "stopped"
    assert pub.counters()["sent"] == n + 1


def test_a_batch_handed_over_at_once_goes_out_in_order_before_a_later_eos(publisher: Publisher) -> None:
    with zmq_context() as ctx:
        sub = sub_socket(ctx, publisher.endpoint, ["pred.", "eos."])
        assert publisher.wait_for_subscribers(1, timeout=10)
        assert publisher.publish_many([make_prediction(i) for i in range(64)])
        assert publisher.publish_many([])
        assert publisher.publish_many([make_prediction(i) for i in range(64, 100)])
        assert publisher.publish_eos("cam0", 100)
        got = recv_messages(sub, 101)
        assert_silent(sub)
    assert [d["frame"] for _, d in got[:100]] == list(range(100))
    assert [d["seq"] for _, d in got[:100]] == list(range(100))
    assert got[100][0] == "eos.cam0"
    assert publisher.counters()["sent"] == 101


def test_a_batch_after_close_is_dropped_and_each_message_counted() -> None:
    pub = Publisher(ANY_PORT).start()
    pub.close()
    assert pub.publish_many([make_prediction(i) for i in range(5)]) is False
    assert pub.counters()["dropped_queue"] == 5


def test_publish_after_close_is_dropped_and_counted() -> None:
    pub = Publisher(ANY_PORT).start()
    pub.close()
    pub.close()  # idempotent
    assert pub.publish(make_prediction(0)) is False
    assert pub.counters()["dropped_queue"] == 1


def test_publish_before_start_is_a_programming_error() -> None:
    with pytest.raises(RuntimeError, match="before start"):
        Publisher(ANY_PORT).publish(make_prediction(0))


def test_wait_for_subscribers_times_out_without_one(publisher: Publisher) -> None:
    assert publisher.wait_for_subscribers(1, timeout=0.2) is False
    assert publisher.counters()["subscriptions"] == 0


def test_wait_for_subscribers_ends_early_on_stop_or_close(publisher: Publisher) -> None:
    stop = threading.Event()
    stop.set()
    assert publisher.wait_for_subscribers(1, timeout=60, stop=stop) is False  # returns at once
    other = Publisher(ANY_PORT, linger_ms=0).start()
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(other.wait_for_subscribers(1, timeout=60)))
    waiter.start()
    other.close()
    waiter.join(timeout=10)
    assert result == [False]


def test_subscriptions_are_counted_and_released(publisher: Publisher) -> None:
    with zmq_context() as ctx:
        a = sub_socket(ctx, publisher.endpoint, ["pred.", "eos."])
        b = sub_socket(ctx, publisher.endpoint, ["pred."])
        assert publisher.wait_for_subscribers(3, timeout=10)
        a.close()
        deadline = time.monotonic() + 10
        while publisher.counters()["subscriptions"] != 1 and time.monotonic() < deadline:
            publisher.wait_for_subscribers(99, timeout=0.05)  # a bounded wait for the unsubscribes
        assert publisher.counters()["subscriptions"] == 1
        b.close()


def test_msgpack_round_trip() -> None:
    msgpack = pytest.importorskip("msgpack")
    with zmq_context() as ctx, Publisher(ANY_PORT, encoding="msgpack", linger_ms=0) as pub:
        sub = sub_socket(ctx, pub.endpoint)
        assert pub.wait_for_subscribers(1, timeout=10)
        p = make_prediction(7, "cam2", label="zebra", score=0.75, dropped=2)
        pub.publish(p)
        pub.publish_eos("cam2", 8, "end")
        (topic, raw), (eos_topic, eos_raw) = recv_frames(sub), recv_frames(sub)
    assert topic == b"pred.cam2" and eos_topic == b"eos.cam2"
    d = msgpack.unpackb(raw, raw=False)
    assert d == decode(raw)
    assert d["frame"] == 7 and d["dropped"] == 2
    assert d["topk"][0] == {"index": 3, "label": "zebra", "score": 0.75}
    assert Prediction.from_dict(d).topk == p.topk
    assert decode(eos_raw)["frames"] == 8


def test_missing_msgpack_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "msgpack", None)  # import msgpack -> ImportError
    with pytest.raises(ConfigError) as info:
        Publisher(ANY_PORT, encoding="msgpack")
    assert "pip install streamer[msgpack]" in str(info.value)


def test_unencodable_extra_is_counted_not_fatal(publisher: Publisher) -> None:
    with zmq_context() as ctx:
        sub = sub_socket(ctx, publisher.endpoint)
        assert publisher.wait_for_subscribers(1, timeout=10)
        publisher.publish(make_prediction(0, blob=object()))
        publisher.publish(make_prediction(1))
        _, d = recv_message(sub)
    assert d["frame"] == 1 and d["seq"] == 0  # the failed one used no sequence number: no false gap
    assert publisher.counters()["errors"] == 1


def test_a_nan_prediction_is_counted_not_fatal(publisher: Publisher) -> None:
    """NaN is not JSON: the prediction is not sent (counted as an error, no seq used), the next one is."""
    with zmq_context() as ctx:
        sub = sub_socket(ctx, publisher.endpoint)
        assert publisher.wait_for_subscribers(1, timeout=10)
        assert publisher.publish_many([dataclasses.replace(make_prediction(0), capture_time=float("nan")),
                                       make_prediction(1)])
        _, d = recv_message(sub)
        assert_silent(sub)
    assert d["frame"] == 1 and d["seq"] == 0
    assert publisher.counters()["errors"] == 1


def test_json_payloads_are_the_generic_encoding_byte_for_byte(publisher: Publisher) -> None:
    """What goes on the wire (JSON written straight from the fields) is exactly json.dumps of the payload
    dict with its seq: plain, image (``file``), escaped-name and ``extra`` (the generic way) predictions."""
    five = tuple(TopK(i, label, score) for i, label, score in
                 [(7, "zebra", 0.6123456789), (2, 'a "quoted" \\ label', 0.2), (9, "ünïcødé ☃", 1e-07),
                  (4, "tab\there", 0.0), (1, "cat", 0.1876543)])
    preds = [make_prediction(0), dataclasses.replace(make_prediction(1), topk=five),
             dataclasses.replace(make_prediction(2, "shots"), file='day 1/"img".png', topk=five[:1]),
             make_prediction(3, note="an extra", startup={"first_prediction_s": 1.25}),
             dataclasses.replace(make_prediction(4), frame_index=2**40, dropped=12, model_id="m\u00e9")]
    with zmq_context() as ctx:
        sub = sub_socket(ctx, publisher.endpoint, ["pred."])
        assert publisher.wait_for_subscribers(1, timeout=10)
        assert publisher.publish_many(preds[:3])
        for pred in preds[3:]:
            assert publisher.publish(pred)
        got = [recv_frames(sub) for _ in preds]
        assert_silent(sub)
    seqs = {"cam0": 0, "shots": 0}
    for pred, (topic, payload) in zip(preds, got, strict=True):
        assert topic == pred.topic.encode()
        sent = json.loads(payload)
        expected = pred.to_dict(sent["publish_ts"]) | {"seq": seqs[pred.source]}
        seqs[pred.source] += 1
        assert payload == encode(expected, "json")
    assert publisher.counters()["errors"] == 0


# ---- JsonlWriter ------------------------------------------------------------------------------------------


def test_jsonl_writer_writes_one_line_per_prediction(tmp_path) -> None:
    path = tmp_path / "preds.jsonl"
    preds = [make_prediction(i, "a" if i % 2 else "b") for i in range(50)]
    with JsonlWriter(path) as w:
        for p in preds:
            w.write(p)
        assert w.lines == 50
    assert w.closed
    lines = path.read_text().splitlines()
    assert len(lines) == 50
    rows = [json.loads(line) for line in lines]
    for p, row in zip(preds, rows, strict=True):
        assert row["source"] == p.source and row["frame"] == p.frame_index and row["v"] == PROTOCOL_VERSION
        assert row["publish_ts"] >= p.capture_time and row["latency_ms"] is not None
        assert Prediction.from_dict(row).topk == p.topk


def test_jsonl_writer_keeps_a_given_publish_time(tmp_path) -> None:
    p = make_prediction(0)
    stamped = dataclasses.replace(p, publish_time=p.capture_time + 0.5)
    with JsonlWriter(tmp_path / "x.jsonl") as w:
        w.write(stamped)
    row = json.loads((tmp_path / "x.jsonl").read_text())
    assert row == stamped.to_dict()
    assert row["latency_ms"] == pytest.approx(500.0, abs=1e-3)


def test_jsonl_lines_are_the_generic_encoding_byte_for_byte(tmp_path) -> None:
    """Each line is json.dumps of ``to_dict`` (no seq) and a newline, fast path or generic (``extra``)."""
    preds = [make_prediction(0), dataclasses.replace(make_prediction(1, "shots"), file="a/ü.png"),
             make_prediction(2, label='say "hi"', note="extra"), dataclasses.replace(make_prediction(3),
                                                                                       publish_time=5e9)]
    with JsonlWriter(tmp_path / "x.jsonl") as w:
        for p in preds:
            w.write(p)
    lines = (tmp_path / "x.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == len(preds) + 1
    for p, line in zip(preds, lines, strict=False):
        assert line == encode(p.to_dict(json.loads(line)["publish_ts"]), "json")
    assert json.loads(lines[3])["publish_ts"] == 5e9


@pytest.mark.parametrize("bad", ["missing-dir/preds.jsonl", "."])
def test_jsonl_writer_bad_path_is_one_line(tmp_path, bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        JsonlWriter(tmp_path / bad)
    msg = str(info.value)
    assert "--output" in msg and "\n" not in msg


def test_jsonl_writer_after_close_raises(tmp_path) -> None:
    w = JsonlWriter(tmp_path / "x.jsonl")
    w.close()
    w.close()
    with pytest.raises(RuntimeError, match="after close"):
        w.write(make_prediction(0))


def test_a_write_cut_short_keeps_and_counts_its_complete_lines(tmp_path) -> None:
    """Three lines in one write under a size limit that cuts the third: two stay, the third is cut off."""
    path = tmp_path / "x.jsonl"
    script = ("import sys\n"
              "from streamer.errors import StreamerError\n"
              "from streamer.publish import JsonlWriter\n"
              "w = JsonlWriter(sys.argv[1])\n"
              "w.write_lines(b'a\\n')\n"
              "try:\n"
              "    w.write_lines(b'bb\\ncc\\ndd\\n', 3)\n"
              "except StreamerError as e:\n"
              "    print(w.lines, e)\n")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (7, 7))  # a\nbb\ncc: the third line cut in the middle

    r = subprocess.run([sys.executable, "-c", script, str(path)], cwd=REPO, capture_output=True, text=True,
                       timeout=60, preexec_fn=limit, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("2 cannot write --output") and "it holds the first 2 predictions" in r.stdout
    assert path.read_bytes() == b"a\nbb\n"


def test_wildcard_interface_in_use_is_a_publish_error() -> None:
    with zmq_context() as ctx:
        other = ctx.socket(zmq.PUB)
        port = other.bind_to_random_port("tcp://*")
        with pytest.raises(PublishError, match="already in use"):
            Publisher(f"tcp://*:{port}").start()
