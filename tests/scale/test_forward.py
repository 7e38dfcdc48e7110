"""The driver's forwarder over real ZeroMQ on loopback: workers' publishers connect to it, subscribers see
one endpoint with the protocol unchanged, subscriptions reach workers that connect later."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from zmq_helpers import make_prediction

from streamer.errors import PublishError
from streamer.publish import Publisher
from streamer.scale.forward import Forwarder
from streamer.subscribe import Subscriber

WAIT_S = 30.0


@pytest.fixture
def forwarder() -> Iterator[Forwarder]:
    fw = Forwarder("tcp://127.0.0.1:*", "127.0.0.1").start()
    yield fw
    fw.close()


def worker_publisher(forwarder: Forwarder) -> Publisher:
    return Publisher(forwarder.upstream, connect=True, linger_ms=0).start()


def receive(sub: Subscriber, n: int) -> list:
    got = []
    while len(got) < n:
        msg = sub.recv()
        assert msg is not None, f"only {len(got)} of {n} messages arrived"
        got.append(msg)
    return got


def test_a_subscriber_sees_every_worker_on_one_endpoint(forwarder: Forwarder) -> None:
    with Subscriber(forwarder.endpoint, topics=("",), timeout_ms=int(WAIT_S * 1e3)) as sub:
        assert forwarder.wait_for_subscribers(1, WAIT_S)
        workers = [worker_publisher(forwarder), worker_publisher(forwarder)]
        try:
            for pub in workers:  # the subscription reached each worker through the XSUB socket
                assert pub.wait_for_subscribers(1, WAIT_S)
            for i in range(50):
                workers[0].publish(make_prediction(i, "cam-a"))
                workers[1].publish(make_prediction(i, "cam-b"))
            workers[1].publish_eos("cam-b", 50, "end")
            got = receive(sub, 101)
            forwarder.publish_stats({"frames": 100})
            forwarder.publish_stats({"frames": 101})
            stats = receive(sub, 2)
        finally:
            for pub in workers:
                pub.close()
    by_topic: dict[str, list[int]] = {}
    for msg in got:
        by_topic.setdefault(msg.topic, []).append(msg.payload["seq"])
    assert by_topic["pred.cam-a"] == list(range(50)) and by_topic["pred.cam-b"] == list(range(50))
    assert by_topic["eos.cam-b"] == [0]
    assert [(m.topic, m.payload["seq"], m.payload["frames"]) for m in stats] == [("stats", 0, 100),
                                                                                  ("stats", 1, 101)]
    assert "publisher" in stats[0].payload  # the forwarder's counters ride along, as a publisher's do
    assert sub.missed == 0
    assert forwarder.counters()["forwarded"] == 101


def test_a_worker_that_connects_later_gets_the_subscriptions(forwarder: Forwarder) -> None:
    with Subscriber(forwarder.endpoint, topics=("pred.", "health."), timeout_ms=int(WAIT_S * 1e3)) as sub:
        assert forwarder.wait_for_subscribers(2, WAIT_S)
        late = worker_publisher(forwarder)  # e.g. a worker Ray restarted
        try:
            assert late.wait_for_subscribers(2, WAIT_S)
            late.publish_health("cam", "up", "restarted")
            late.publish(make_prediction(7, "cam"))
            got = receive(sub, 2)
        finally:
            late.close()
    assert [(m.topic, m.payload.get("state"), m.payload.get("frame")) for m in got] == [
        ("health.cam", "up", None), ("pred.cam", None, 7)]


def test_the_driver_says_a_source_went_down(forwarder: Forwarder) -> None:
    with Subscriber(forwarder.endpoint, topics=("health.",), timeout_ms=int(WAIT_S * 1e3)) as sub:
        assert forwarder.wait_for_subscribers(1, WAIT_S)
        forwarder.publish_health("cam", "down", "worker 0 lost; restarting it")
        msg = receive(sub, 1)[0]
    assert (msg.topic, msg.payload["state"], msg.payload["detail"]) == ("health.cam", "down",
                                                                        "worker 0 lost; restarting it")


def test_an_endpoint_in_use_is_a_one_line_error(forwarder: Forwarder) -> None:
    with pytest.raises(PublishError, match="address already in use"):
        Forwarder(forwarder.endpoint, "127.0.0.1").start()
