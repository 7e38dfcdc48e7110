"""A plain HTTP client of the preview's streams (``GET /preview/feed``, ``/preview/mjpeg/<source>``): urllib
reading ``multipart/x-mixed-replace`` parts as they come.

The bench keeps one open as the "preview open" load where no browser runs (the GPU host has no Chromium):
it reads every part as a browser would, without drawing it. The tests read the stream with it.

    with PreviewWatcher("http://127.0.0.1:8090/preview/feed") as w:   # reads on a thread
        ...
    print(w.jpegs, w.per_source)
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

READ_BYTES = 1 << 16


@dataclass(frozen=True)
class Part:
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float  # time.monotonic() when it was complete

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    @property
    def is_jpeg(self) -> bool:
        return self.content_type.startswith("image/jpeg")

    @property
    def meta(self) -> dict[str, Any]:
        """A JPEG part's prediction (its ``X-Meta`` header)."""
        return json.loads(self.headers["x-meta"]) if "x-meta" in self.headers else {}

    def json(self) -> Any:
        return json.loads(self.body)


def read_parts(response: Any) -> Iterator[Part]:
    """The parts of an open multipart response, as they complete (ends with the stream)."""
    buf = b""
    while True:
        while (end := buf.find(b"\r\n\r\n")) >= 0:
            lines = buf[:end].decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)
                       if _ and k}
            length = int(headers.get("content-length", "-1"))
            if length < 0:
                raise ValueError(f"a part without Content-Length: {lines}")
            start = end + 4
            if len(buf) < start + length + 2:
                break
            yield Part(headers, buf[start:start + length], time.monotonic())
            buf = buf[start + length + 2:]
        chunk = response.read1(READ_BYTES)
        if not chunk:
            return
        buf += chunk


def open_stream(url: str, timeout: float = 30.0) -> Any:
    response = urllib.request.urlopen(url, timeout=timeout)
    ctype = response.headers.get("Content-Type", "")
    if not ctype.startswith("multipart/x-mixed-replace"):
        response.close()
        raise ValueError(f"{url} is not a multipart stream ({ctype})")
    return response


class PreviewWatcher:
    """Reads a preview stream on a thread until ``close()`` (or the stream ends), counting what it got."""

    def __init__(self, url: str, timeout: float = 30.0, keep: bool = False) -> None:
        """``keep``: also keep every part (tests)."""
        self.url = url
        self.timeout = timeout
        self.keep = keep
        self.parts: list[Part] = []
        self.jpegs = 0
        self.states = 0
        self.bytes = 0
        self.per_source: Counter[str] = Counter()
        self.error: BaseException | None = None
        self.cpu_s = 0.0  # CPU seconds its reading thread used (once it has ended)
        self.ended = threading.Event()
        self._cond = threading.Condition()
        self._response: Any = None
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="preview-watcher", daemon=True)

    def start(self) -> PreviewWatcher:
        self._response = open_stream(self.url, self.timeout)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for part in read_parts(self._response):
                if self._closing:
                    break
                with self._cond:
                    self.bytes += len(part.body)
                    if part.is_jpeg:
                        self.jpegs += 1
                        self.per_source[part.headers.get("x-source", "")] += 1
                    else:
                        self.states += 1
                    if self.keep:
                        self.parts.append(part)
                    self._cond.notify_all()
        except Exception as exc:
            if not self._closing:
                self.error = exc
        finally:
            self.cpu_s = time.thread_time()
            self.ended.set()
            with self._cond:
                self._cond.notify_all()

    def wait(self, what: str, condition: Any, timeout: float = 60.0) -> None:
        """Until ``condition()`` holds (checked as parts come), else AssertionError naming ``what``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not condition():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.ended.is_set() and not condition()):
                    raise AssertionError(f"{what}: not within {timeout:.0f} s (stream ended: "
                                         f"{self.ended.is_set()}, error: {self.error}; {self.jpegs} JPEGs, "
                                         f"{self.states} states)")
                self._cond.wait(min(remaining, 0.25))

    def snapshot(self) -> list[Part]:
        with self._cond:
            return list(self.parts)

    def close(self) -> None:
        self._closing = True
        if self._response is not None:
            with contextlib.suppress(Exception):  # wakes the reading thread at once (urllib's own socket)
                self._response.fp.raw._sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(Exception):
                self._response.close()
        self._thread.join(10.0)

    def __enter__(self) -> PreviewWatcher:
        return self.start() if not self._thread.is_alive() else self

    def __exit__(self, *exc: object) -> None:
        self.close()
