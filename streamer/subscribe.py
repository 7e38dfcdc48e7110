"""Receiving predictions: the ``Subscriber`` class for programs and the ``streamer-sub`` command.

    with Subscriber("tcp://127.0.0.1:5555", topics=("pred.",), timeout_ms=5000) as sub:
        for topic, payload in sub:          # stops after 5 s without a message
            print(payload["source"], payload["frame"], payload["topk"][0]["label"])

``latest_only=True`` is for consumers slower than the stream (a dashboard): a background thread keeps
reading the socket and keeps only the newest message of each topic, so ``recv`` returns the newest message
that has arrived and no backlog builds up (here or in the publisher) however slowly the caller reads (the
thread only moves raw frames, far faster than any stream). That is what ZMQ_CONFLATE
does inside libzmq, but CONFLATE does not support multipart messages (it would keep one frame of
``[topic, payload]`` and lose the other), so it is done here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from types import FrameType, TracebackType
from typing import Any, NamedTuple

import zmq

from streamer.errors import ConfigError, StreamerError
from streamer.protocol import DEFAULT_ENDPOINT, check_endpoint, decode

log = logging.getLogger(__name__)

_DEFAULT = object()
_POLL_SLICE_MS = 200  # blocking waits are sliced so Ctrl-C and close() are handled promptly
_DRAIN_BATCH = 1000  # latest_only: messages read per pass before handing them over


class Message(NamedTuple):
    topic: str
    payload: dict[str, Any]


class Subscriber:
    """A SUB socket connected to ``endpoint`` that yields decoded ``Message(topic, payload)`` tuples.

    ``topics`` are prefixes (``"pred."`` all predictions, ``"pred.cam0"`` one source — and ``cam01``, so
    compare ``payload["source"]`` when names share a prefix — ``""`` everything).
    ``timeout_ms``: default wait of ``recv`` and of iteration (None: wait forever).
    Malformed messages are skipped and counted in ``malformed``. Use one Subscriber from one thread.
    """

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, topics: Iterable[str] | str = ("pred.",),
                 latest_only: bool = False, timeout_ms: float | None = None, *,
                 rcvhwm: int | None = None) -> None:
        topic_list = [topics] if isinstance(topics, str) else list(topics)
        if not topic_list:
            raise ConfigError("no topic to subscribe to", 'give at least one prefix; "" means everything')
        try:
            check_endpoint(endpoint, bind=False)
        except ValueError as e:
            raise ConfigError(f"cannot connect to ZeroMQ endpoint {endpoint!r}: {e}", _CONNECT_HINT) from None
        self.endpoint = endpoint
        self.topics = tuple(topic_list)
        self.latest_only = latest_only
        self.timeout_ms = timeout_ms
        self.received = 0  # messages returned to the caller
        self.malformed = 0  # messages skipped: wrong frame count or undecodable payload
        self.missed = 0  # messages the publisher sent but this socket never got (gaps in per-topic "seq")
        self._last_seq: dict[str, int] = {}
        self._ctx = zmq.Context(io_threads=1)
        sock = self._ctx.socket(zmq.SUB)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            if rcvhwm is not None:
                sock.setsockopt(zmq.RCVHWM, rcvhwm)
            if "[" in endpoint:
                sock.setsockopt(zmq.IPV6, 1)
            for t in self.topics:
                sock.setsockopt(zmq.SUBSCRIBE, t.encode())
            sock.connect(endpoint)
        except zmq.ZMQError as e:
            sock.close(linger=0)
            self._ctx.term()
            raise ConfigError(f"cannot connect to ZeroMQ endpoint {endpoint!r}: {zmq.strerror(e.errno)}",
                              _CONNECT_HINT) from None
        # In latest_only mode the socket moves to the drain thread (thread start is the memory barrier
        # ZeroMQ asks for when a socket changes threads); this thread never touches it again.
        self._sock: zmq.Socket[bytes] | None = None if latest_only else sock
        self._latest = _LatestDrain(sock) if latest_only else None

    @property
    def conflated(self) -> int:
        """latest_only: older messages discarded because a newer one of the same topic arrived."""
        return self._latest.conflated if self._latest else 0

    def recv(self, timeout_ms: Any = _DEFAULT) -> Message | None:
        """The next message, or None if none arrives within ``timeout_ms`` (default: the constructor's;
        None waits forever)."""
        timeout = self.timeout_ms if timeout_ms is _DEFAULT else timeout_ms
        deadline = None if timeout is None else time.monotonic() + max(0.0, float(timeout)) / 1e3
        while True:
            if self._latest is not None:
                taken = self._latest.take(deadline)
                frames, skipped = taken if taken is not None else (None, 0)
            else:
                frames, skipped = self._recv_raw(deadline), 0
            if frames is None:
                return None
            msg = self._decode(frames)
            if msg is not None:
                self.received += 1
                self._count_missed(msg, skipped)
                return msg

    def __iter__(self) -> Iterator[Message]:
        """Messages until one fails to arrive within ``timeout_ms`` (forever when it is None)."""
        while True:
            msg = self.recv()
            if msg is None:
                return
            yield msg

    def close(self) -> None:
        """Idempotent."""
        if self._latest is not None:
            self._latest.stop()
        if self._sock is not None and not self._sock.closed:
            self._sock.close(linger=0)
        if not self._ctx.closed:
            self._ctx.term()

    @property
    def closed(self) -> bool:
        return self._ctx.closed

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _recv_raw(self, deadline: float | None) -> list[bytes] | None:
        assert self._sock is not None
        while True:
            slice_ms = _POLL_SLICE_MS if deadline is None else int(
                max(0.0, min((deadline - time.monotonic()) * 1e3, _POLL_SLICE_MS)))
            if self._sock.poll(slice_ms, zmq.POLLIN):
                return self._sock.recv_multipart()
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def _count_missed(self, msg: Message, conflated: int) -> None:
        """``conflated``: messages of this topic discarded here since the previous one (latest_only); they
        arrived, so they are not missed."""
        seq = msg.payload.get("seq")
        if not isinstance(seq, int):
            return
        last = self._last_seq.get(msg.topic)
        self._last_seq[msg.topic] = seq
        # A smaller seq means the publisher restarted: start counting afresh.
        if last is not None and seq > last + 1:
            self.missed += max(0, seq - last - 1 - conflated)

    def _decode(self, frames: list[bytes]) -> Message | None:
        if len(frames) != 2:
            self.malformed += 1
            log.debug("skipping a message of %d frames (expected [topic, payload])", len(frames))
            return None
        try:
            topic = frames[0].decode()
            payload = decode(frames[1])
        except StreamerError:
            raise  # e.g. msgpack payloads without msgpack installed: the user must act
        except Exception as e:  # any decoder's error means the same thing: not a protocol message
            self.malformed += 1
            log.debug("skipping an undecodable message on %r: %s", frames[0][:64], e)
            return None
        return Message(topic, payload)


class _LatestDrain:
    """Owns a SUB socket in a thread that reads continuously and keeps the newest raw message per topic."""

    def __init__(self, sock: zmq.Socket[bytes]) -> None:
        self._sock = sock
        # topic -> (newest frames, how many older ones were discarded since the last take); oldest first
        self._newest: dict[bytes, tuple[list[bytes], int]] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self.conflated = 0
        self._thread = threading.Thread(target=self._run, name="subscriber latest-only drain", daemon=True)
        self._thread.start()

    def take(self, deadline: float | None) -> tuple[list[bytes], int] | None:
        with self._cond:
            while not self._newest:
                if deadline is None:
                    self._cond.wait(_POLL_SLICE_MS / 1e3)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(min(remaining, _POLL_SLICE_MS / 1e3))
            topic = next(iter(self._newest))
            return self._newest.pop(topic)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def _run(self) -> None:
        sock = self._sock
        try:
            while not self._stop.is_set():
                if not sock.poll(_POLL_SLICE_MS // 2, zmq.POLLIN):
                    continue
                batch = []
                for _ in range(_DRAIN_BATCH):
                    try:
                        batch.append(sock.recv_multipart(zmq.NOBLOCK))
                    except zmq.Again:
                        break
                with self._cond:
                    for frames in batch:
                        topic = frames[0]
                        older = self._newest.pop(topic, None)
                        if older is not None:
                            self.conflated += 1
                        self._newest[topic] = (frames, 0 if older is None else older[1] + 1)
                    self._cond.notify_all()
        finally:
            sock.close(linger=0)


_CONNECT_HINT = ("give the publisher's endpoint as tcp://HOST:PORT, e.g. tcp://127.0.0.1:5555 "
                 "(the streamer's --bind), or ipc:///path/to/socket")


# ---- streamer-sub ---------------------------------------------------------------------------------------


def format_line(topic: str, payload: dict[str, Any]) -> str:
    """One human-readable line per message."""
    kind = payload.get("type")
    source = payload.get("source", "?")
    if kind == "pred":
        topk = payload.get("topk") or []
        top = f"{topk[0]['label']} {topk[0]['score']:.3f}" if topk else "-"
        latency = payload.get("latency_ms")
        lat = f"{latency:7.1f} ms" if isinstance(latency, (int, float)) else "      - ms"
        line = f"{source}  #{payload.get('frame', '?'):<6}  {top:<24}  latency {lat}"
        if payload.get("file"):
            line += f"  {payload['file']}"
        dropped = payload.get("dropped") or 0
        return f"{line}  dropped {dropped}" if dropped else line
    if kind == "eos":
        skipped = payload.get("skipped") or 0
        return (f"{source}  EOS after {payload.get('frames', '?')} frames ({payload.get('reason', '?')})"
                + (f", {skipped} undecodable skipped" if skipped else ""))
    if kind == "health":
        detail = payload.get("detail") or ""
        return f"{source}  HEALTH {payload.get('state', '?')}" + (f": {detail}" if detail else "")
    if kind == "stats":
        body = {k: v for k, v in payload.items() if k not in ("v", "minor", "type", "publish_ts", "seq")}
        return "STATS " + json.dumps(body, separators=(",", ":"))
    return f"{topic}  " + json.dumps(payload, separators=(",", ":"))


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="streamer-sub",
        description="Print what a streamer publishes: one line per message (predictions, end of stream, "
                    "source health, stats).")
    p.add_argument("endpoint", nargs="?", default=DEFAULT_ENDPOINT,
                   help=f"publisher endpoint (default {DEFAULT_ENDPOINT})")
    p.add_argument("--topic", action="append", metavar="PREFIX",
                   help='topic prefix to subscribe to, repeatable: "pred." predictions, "pred.cam0" one '
                        'source, "eos.", "health.", "stats" (default: everything)')
    p.add_argument("--json", action="store_true", help="print each payload as one JSON line")
    p.add_argument("--latest", action="store_true",
                   help="never fall behind: skip to the newest message of each topic")
    p.add_argument("--count", type=int, metavar="N", help="exit after N predictions")
    p.add_argument("--timeout", type=float, metavar="S",
                   help="stop after S seconds without a message (exit 1 if --count was not reached or "
                        "nothing arrived)")
    args = p.parse_args(argv)
    if args.count is not None and args.count < 1:
        p.error("--count must be >= 1")
    if args.timeout is not None and args.timeout <= 0:
        p.error("--timeout must be > 0")
    return args


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    with contextlib.suppress(ValueError):  # ValueError: not the main thread (main() called from a program)
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _print_messages(args)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `streamer-sub | head`: stop quietly, and keep Python's exit flush quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except StreamerError as e:
        print(f"streamer-sub: {e}", file=sys.stderr)
        return e.exit_code


def _print_messages(args: argparse.Namespace) -> int:
    topics = args.topic if args.topic else [""]
    timeout_ms = None if args.timeout is None else args.timeout * 1e3
    preds = received = 0
    with Subscriber(args.endpoint, topics, latest_only=args.latest, timeout_ms=timeout_ms) as sub:
        for topic, payload in sub:
            received += 1
            if args.json:
                print(json.dumps(payload, separators=(",", ":")), flush=True)
            else:
                print(format_line(topic, payload), flush=True)
            if payload.get("type") == "pred":
                preds += 1
                if args.count is not None and preds >= args.count:
                    return 0
    # Only --timeout ends the loop.
    hint = f"(hint: is a streamer running with --bind {args.endpoint}?)"
    if received == 0:
        print(f"streamer-sub: no message from {args.endpoint} within {args.timeout:g} s {hint}",
              file=sys.stderr)
        return 1
    if args.count is not None and preds < args.count:
        print(f"streamer-sub: {preds} of {args.count} predictions from {args.endpoint}, then nothing for "
              f"{args.timeout:g} s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
