"""Subscriber class and the streamer-sub command with real ZeroMQ sockets on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from zmq_helpers import make_prediction, pub_socket, wait_subscribed, wait_until, zmq_context

from streamer.errors import ConfigError
from streamer.protocol import encode
from streamer.publish import Publisher
from streamer.subscribe import Message, Subscriber, format_line

REPO = Path(__file__).resolve().parent.parent
ANY_PORT = "tcp://127.0.0.1:*"


def test_subscriber_iterates_decoded_messages_of_its_topics(publisher: Publisher) -> None:
    with Subscriber(publisher.endpoint, topics=("pred.",), timeout_ms=500) as sub:
        assert publisher.wait_for_subscribers(1, timeout=10)
        for i in range(20):
            publisher.publish(make_prediction(i, "cam0" if i % 2 else "cam1"))
        publisher.publish_eos("cam0", 10, "end")  # not subscribed: never seen
        got = list(sub)  # ends 0.5 s after the last message
        assert sub.received == 20 and sub.missed == 0 and sub.malformed == 0
    assert sub.closed
    assert all(isinstance(m, Message) for m in got)
    assert [m.payload["frame"] for m in got] == list(range(20))
    assert [m.topic for m in got[:2]] == ["pred.cam1", "pred.cam0"]
    _, payload = got[0]
    assert payload["source"] == "cam1" and payload["topk"][0]["label"] == "cat"


def test_single_topic_string_and_one_source(publisher: Publisher) -> None:
    with Subscriber(publisher.endpoint, topics="pred.cam1") as sub:
        assert publisher.wait_for_subscribers(1, timeout=10)
        publisher.publish(make_prediction(0, "cam0"))
        publisher.publish(make_prediction(1, "cam1"))
        msg = sub.recv(10_000)
    assert msg is not None and msg.topic == "pred.cam1" and msg.payload["frame"] == 1


def test_recv_times_out_with_none(publisher: Publisher) -> None:
    with Subscriber(publisher.endpoint, timeout_ms=50) as sub:
        assert sub.recv() is None
        assert sub.recv(0) is None


def test_latest_only_returns_the_newest_per_topic_and_counts_no_false_misses(publisher: Publisher) -> None:
    with Subscriber(publisher.endpoint, topics=("pred.",), latest_only=True, timeout_ms=200) as sub:
        assert publisher.wait_for_subscribers(1, timeout=10)
        for i in range(1000):
            publisher.publish(make_prediction(i, "cam0"))
            publisher.publish(make_prediction(i, "cam1"))
        # Nobody reads: all but the newest of each topic are conflated away as they arrive.
        wait_until(lambda: sub.conflated == 1998, what="1998 conflated messages")
        got = {m.payload["source"]: m.payload["frame"] for m in sub}
        assert got == {"cam0": 999, "cam1": 999}
        for i in range(1000, 1011):
            publisher.publish(make_prediction(i, "cam0"))
        wait_until(lambda: sub.conflated == 2008, what="10 more conflated messages")
        msg = sub.recv()
        assert msg is not None and msg.payload["frame"] == 1010
        assert sub.recv() is None
        assert sub.missed == 0  # skipped here on purpose, not lost on the wire


def test_latest_only_keeps_up_with_a_stream(publisher: Publisher) -> None:
    """A reader that is slower than the stream still ends on the last message, in increasing order."""
    with Subscriber(publisher.endpoint, latest_only=True, timeout_ms=10_000) as sub:
        assert publisher.wait_for_subscribers(1, timeout=10)
        for i in range(5000):
            publisher.publish(make_prediction(i))
        frames = []
        while not frames or frames[-1] != 4999:
            msg = sub.recv()
            assert msg is not None, f"stopped after {frames[-5:]}"
            frames.append(msg.payload["frame"])
    assert frames == sorted(set(frames))


def test_malformed_messages_are_skipped_and_counted() -> None:
    with zmq_context() as ctx:
        xpub, endpoint = pub_socket(ctx, xpub=True)
        with Subscriber(endpoint, topics=("",), timeout_ms=10_000) as sub:
            wait_subscribed(xpub)
            xpub.send(b"pred.x")  # one frame
            xpub.send_multipart([b"pred.x", b"{not json"])
            xpub.send_multipart([b"pred.x", b"\xc1"])  # not msgpack either
            xpub.send_multipart([b"pred.x", b"[1, 2]"])  # not an object
            xpub.send_multipart([b"pred.x", b"{}", b"extra"])  # three frames
            xpub.send_multipart([b"pred.x", encode({"v": 1, "type": "pred", "seq": 0})])
            msg = sub.recv()
            assert msg == Message("pred.x", {"v": 1, "type": "pred", "seq": 0})
            assert sub.malformed == 5


def test_gaps_in_seq_are_counted_as_missed() -> None:
    with zmq_context() as ctx:
        xpub, endpoint = pub_socket(ctx, xpub=True)
        with Subscriber(endpoint, topics=("",), timeout_ms=10_000) as sub:
            wait_subscribed(xpub)
            for topic, seq in [(b"pred.a", 0), (b"pred.a", 1), (b"pred.b", 7), (b"pred.a", 5), (b"pred.b", 8),
                               (b"pred.a", 0)]:  # the last: a restarted publisher, not a gap
                xpub.send_multipart([topic, encode({"v": 1, "type": "pred", "seq": seq})])
            got = [sub.recv() for _ in range(6)]
    assert all(m is not None for m in got)
    assert sub.missed == 3


def test_msgpack_payloads_are_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("msgpack")
    with Publisher(ANY_PORT, encoding="msgpack", linger_ms=0) as pub, \
            Subscriber(pub.endpoint, topics=("pred.", "eos."), timeout_ms=10_000) as sub:
        assert pub.wait_for_subscribers(2, timeout=10)
        pub.publish(make_prediction(4, "cam3"))
        pub.publish_eos("cam3", 5, "end")
        pred, eos = sub.recv(), sub.recv()
        assert pred is not None and pred.payload["frame"] == 4 and pred.payload["source"] == "cam3"
        assert eos is not None and eos.payload == {"v": 1, "minor": 1, "type": "eos", "source": "cam3",
                                                   "frames": 5, "skipped": 0, "reason": "end",
                                                   "publish_ts": eos.payload["publish_ts"], "seq": 0}
        pub.publish(make_prediction(5, "cam3"))
        assert pub.flush(timeout=10)
        monkeypatch.setitem(sys.modules, "msgpack", None)  # a subscriber without msgpack installed
        with pytest.raises(ConfigError, match=r"pip install streamer\[msgpack\]"):
            sub.recv()


@pytest.mark.parametrize("endpoint", ["127.0.0.1:5555", "tcp://nonsense", "tcp://127.0.0.1:99999",
                                      "tcp://127.0.0.1:*", "bogus://x"])
def test_bad_endpoint_is_a_config_error(endpoint: str) -> None:
    with pytest.raises(ConfigError) as info:
        Subscriber(endpoint)
    msg = str(info.value)
    assert endpoint in msg and "tcp://127.0.0.1:5555" in msg and "\n" not in msg


def test_close_is_idempotent(publisher: Publisher) -> None:
    for latest in (False, True):
        sub = Subscriber(publisher.endpoint, latest_only=latest)
        sub.close()
        sub.close()
        assert sub.closed


def test_format_line_for_each_type() -> None:
    pred = make_prediction(12, "cam0", label="person", score=0.873, dropped=2).to_dict()
    pred.update(latency_ms=12.34)
    line = format_line("pred.cam0", pred)
    assert line.split()[:4] == ["cam0", "#12", "person", "0.873"]
    assert "12.3 ms" in line and "dropped 2" in line
    eos = format_line("eos.cam0", {"type": "eos", "source": "cam0", "frames": 795, "reason": "end"})
    assert eos == "cam0  EOS after 795 frames (end)"
    eos = format_line("eos.clip", {"type": "eos", "source": "clip", "frames": 297, "skipped": 75,
                                   "reason": "end"})
    assert eos == "clip  EOS after 297 frames (end), 75 undecodable skipped"
    image = format_line("pred.shots", {**pred, "source": "shots", "file": "day1/img7.png"})
    assert "day1/img7.png" in image
    health = format_line("health.cam1",
                         {"type": "health", "source": "cam1", "state": "down", "detail": "refused"})
    assert health == "cam1  HEALTH down: refused"
    assert format_line("stats", {"v": 1, "minor": 1, "type": "stats", "publish_ts": 1.0, "seq": 4,
                                 "fps": 30}) == "STATS {\"fps\":30}"


# ---- streamer-sub as a user runs it -----------------------------------------------------------------------


def _streamer_sub(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "streamer.subscribe", *args], cwd=REPO, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _finish(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"streamer-sub did not exit: {out!r} {err!r}") from None


def test_streamer_sub_prints_predictions_and_exits_after_count(publisher: Publisher) -> None:
    proc = _streamer_sub(publisher.endpoint, "--count", "5", "--timeout", "30")
    assert publisher.wait_for_subscribers(1, timeout=30), "streamer-sub did not subscribe"
    publisher.publish_health("cam0", "up", "video file x.avi")
    for i in range(8):
        publisher.publish(make_prediction(i, "cam0", label="person", score=0.5))
    out, err = _finish(proc)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[0] == "cam0  HEALTH up: video file x.avi"
    assert len(lines) == 6
    for i, line in enumerate(lines[1:]):
        assert line.split()[:4] == ["cam0", f"#{i}", "person", "0.500"]
        assert line.endswith(" ms")


def test_streamer_sub_json_and_topic_filter(publisher: Publisher) -> None:
    proc = _streamer_sub(publisher.endpoint, "--json", "--topic", "pred.b", "--count", "3", "--timeout", "30")
    assert publisher.wait_for_subscribers(1, timeout=30), "streamer-sub did not subscribe"
    for i in range(3):
        publisher.publish(make_prediction(i, "a"))
        publisher.publish(make_prediction(i, "b"))
    out, err = _finish(proc)
    assert proc.returncode == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["source"], r["frame"]) for r in rows] == [("b", 0), ("b", 1), ("b", 2)]
    assert rows[0]["type"] == "pred" and rows[0]["v"] == 1


def test_streamer_sub_latest(publisher: Publisher) -> None:
    proc = _streamer_sub(publisher.endpoint, "--latest", "--count", "1", "--timeout", "30")
    assert publisher.wait_for_subscribers(1, timeout=30), "streamer-sub did not subscribe"
    publisher.publish(make_prediction(0))
    out, err = _finish(proc)
    assert proc.returncode == 0, err
    assert out.split()[:2] == ["cam0", "#0"]


def test_streamer_sub_exits_0_on_sigint(publisher: Publisher) -> None:
    proc = _streamer_sub(publisher.endpoint)
    assert publisher.wait_for_subscribers(1, timeout=30), "streamer-sub did not subscribe"
    proc.send_signal(signal.SIGINT)
    _, err = _finish(proc)
    assert proc.returncode == 0 and err == ""


def test_streamer_sub_exits_0_on_sigterm(publisher: Publisher) -> None:
    proc = _streamer_sub(publisher.endpoint)
    assert publisher.wait_for_subscribers(1, timeout=30), "streamer-sub did not subscribe"
    proc.send_signal(signal.SIGTERM)
    _, err = _finish(proc)
    assert proc.returncode == 0 and err == ""


def test_streamer_sub_bad_endpoint_exits_2_with_one_line() -> None:
    proc = _streamer_sub("localhost:5555")
    out, err = _finish(proc)
    assert proc.returncode == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("streamer-sub: ") and "localhost:5555" in err


def test_streamer_sub_timeout_without_publisher_exits_1(free_endpoint: str) -> None:
    proc = _streamer_sub(free_endpoint, "--timeout", "0.3")
    out, err = _finish(proc)
    assert proc.returncode == 1 and out == ""
    assert err.count("\n") == 1 and "no message" in err and free_endpoint in err


def test_streamer_sub_timeout_before_count_exits_1(publisher: Publisher) -> None:
    proc = _streamer_sub(publisher.endpoint, "--count", "5", "--timeout", "1")
    assert publisher.wait_for_subscribers(1, timeout=30), "streamer-sub did not subscribe"
    for i in range(2):
        publisher.publish(make_prediction(i))
    out, err = _finish(proc)
    assert proc.returncode == 1 and len(out.splitlines()) == 2
    assert err.count("\n") == 1 and "2 of 5 predictions" in err
