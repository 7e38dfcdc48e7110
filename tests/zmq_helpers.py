"""Shared ZeroMQ test helpers: real sockets on loopback, linger 0, random ports, every receive with a timeout.

Import from any test under tests/ as ``from zmq_helpers import ...`` (pytest puts tests/ on sys.path because
tests/conftest.py lives there and tests/ is not a package).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import zmq

from streamer.protocol import Prediction, TopK, decode

Ctx = zmq.Context  # type: ignore[type-arg]
Sock = zmq.Socket  # type: ignore[type-arg]

RECV_TIMEOUT_S = 10.0  # generous: a receive that takes this long means the message is not coming


@contextmanager
def zmq_context() -> Iterator[Ctx]:
    """A private context; every socket made from it is closed with linger 0 at exit."""
    ctx: Ctx = zmq.Context()
    ctx.setsockopt(zmq.LINGER, 0)  # default for sockets created from it
    try:
        yield ctx
    finally:
        ctx.destroy(linger=0)


def sub_socket(ctx: Ctx, endpoint: str, topics: Iterable[str] = ("",), *,
               rcvhwm: int | None = None) -> Sock:
    """A raw SUB socket connected to ``endpoint``, subscribed to ``topics`` (prefixes)."""
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    if rcvhwm is not None:
        sock.setsockopt(zmq.RCVHWM, rcvhwm)
    for t in topics:
        sock.setsockopt(zmq.SUBSCRIBE, t.encode())
    sock.connect(endpoint)
    return sock


def pub_socket(ctx: Ctx, host: str = "tcp://127.0.0.1", *, xpub: bool = False) -> tuple[Sock, str]:
    """A raw PUB (or XPUB: it receives subscriptions, see ``wait_subscribed``) socket bound to a random
    loopback port; returns (socket, endpoint)."""
    sock = ctx.socket(zmq.XPUB if xpub else zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port(host)
    return sock, f"{host}:{port}"


def wait_subscribed(xpub: Sock, timeout_s: float = RECV_TIMEOUT_S) -> bytes:
    """Block until a subscription reaches an XPUB socket; returns its topic prefix. From then on the
    subscriber receives what the XPUB sends (no slow-joiner loss)."""
    frames = recv_frames(xpub, timeout_s)
    assert frames[0][:1] == b"\x01", f"expected a subscription, got {frames!r}"
    return frames[0][1:]


def wait_until(condition: Callable[[], bool], timeout_s: float = RECV_TIMEOUT_S,
               what: str = "condition") -> None:
    """Poll ``condition`` (state another thread advances) until true; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s} s")
        pause.wait(0.005)


def recv_frames(sock: Sock, timeout_s: float = RECV_TIMEOUT_S) -> list[bytes]:
    """One multipart message, or AssertionError after ``timeout_s``."""
    if not sock.poll(int(timeout_s * 1e3), zmq.POLLIN):
        raise AssertionError(f"no message within {timeout_s} s")
    return sock.recv_multipart()


def recv_message(sock: Sock, timeout_s: float = RECV_TIMEOUT_S) -> tuple[str, dict]:
    """One ``[topic, payload]`` message decoded to (topic, payload dict)."""
    frames = recv_frames(sock, timeout_s)
    assert len(frames) == 2, f"expected [topic, payload], got {len(frames)} frames"
    return frames[0].decode(), decode(frames[1])


def recv_messages(sock: Sock, n: int, timeout_s: float = RECV_TIMEOUT_S) -> list[tuple[str, dict]]:
    """Exactly ``n`` messages; each must arrive within ``timeout_s`` of the previous one."""
    return [recv_message(sock, timeout_s) for _ in range(n)]


def assert_silent(sock: Sock, timeout_s: float = 0.3) -> None:
    """Nothing (more) arrives within ``timeout_s``."""
    if sock.poll(int(timeout_s * 1e3), zmq.POLLIN):
        raise AssertionError(f"unexpected message: {sock.recv_multipart()!r}")


def make_prediction(frame: int, source: str = "cam0", *, label: str = "cat", score: float = 0.9,
                    dropped: int = 0, **extra: object) -> Prediction:
    """A valid prediction with a capture time of now."""
    return Prediction(source=source, frame_index=frame, capture_time=time.time(),
                      topk=(TopK(3, label, score), TopK(1, "dog", round(1.0 - score, 6))),
                      model_id="test-model", dropped=dropped, extra=dict(extra))
