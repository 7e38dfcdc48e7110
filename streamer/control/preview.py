"""``--preview``: the live page at ``/`` on the control plane, and the streams it reads (docs/view.md).

- ``GET /``: the page (plain HTML/CSS/JS from the package: ``streamer/control/static``), whose script and
  style sheet are ``GET /preview/static/<file>``;
- ``GET /preview/feed``: one ``multipart/x-mixed-replace`` stream for the page: a JSON part with every
  source's state about twice a second, and a JPEG part whenever a source has a newer frame (at most
  ``preview_fps`` per source), that frame's prediction in the part's ``X-Meta`` header;
- ``GET /preview/mjpeg/<source>``: plain MJPEG of one source (an ``<img>``, VLC, ``ffplay``);
- ``GET /preview/state``: the JSON state alone.

Why one multipart stream and not WebSocket: the page only receives, and a streamed HTTP response does that
with the control plane's own server (the standard library's, which has no WebSocket upgrade), through any
proxy, readable by curl or urllib; one connection carries every source, so browsers' limit of six
connections per host never caps the number of tiles; and TCP backpressure paces a slow client, which then
gets each source's newest frame, never a backlog. Frames are encoded in the client's connection thread,
only while it is connected (streamer.view.preview).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from importlib import resources
from typing import Any

from streamer.control.server import HttpError, HttpServer, Request, Response
from streamer.pipeline import Pipeline
from streamer.view.preview import PreviewHub, Still

log = logging.getLogger(__name__)

BOUNDARY = "frame"
STATE_INTERVAL_S = 0.5
KEEPALIVE_S = 5.0  # a one-source stream with no new frame sends its last one again: a client gone is noticed
ASSETS = {"preview.js": "text/javascript; charset=utf-8", "preview.css": "text/css; charset=utf-8"}
MULTIPART = f"multipart/x-mixed-replace; boundary={BOUNDARY}"


def part(content_type: str, body: bytes, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    head = [f"--{BOUNDARY}", f"Content-Type: {content_type}", f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body + b"\r\n"


def still_meta(still: Still) -> dict[str, Any]:
    """What the page shows beside a frame: its prediction (the same frame's)."""
    p = still.pred
    return {"source": still.source, "frame": p.frame_index, "capture_ts": p.capture_time,
            "latency_ms": still.latency_ms, "width": still.width, "height": still.height,
            "topk": [{"label": t.label, "score": round(t.score, 4)} for t in p.topk]}


def jpeg_part(still: Still) -> bytes:
    meta = json.dumps(still_meta(still), separators=(",", ":"))  # ASCII (non-ASCII labels \u-escaped)
    return part("image/jpeg", still.jpeg, (("X-Source", still.source), ("X-Meta", meta)))


class PreviewPage:
    """The page's routes, bound to a pipeline whose viewers have a preview hub. ``entries()``: the sources as
    ``GET /sources`` lists them (ControlPlane.entries)."""

    def __init__(self, pipeline: Pipeline, entries: Callable[[], list[dict[str, Any]]]) -> None:
        viewers = pipeline.viewers
        if viewers is None or viewers.preview is None:
            raise ValueError("the pipeline was made without --preview")
        self.pipeline = pipeline
        self.hub: PreviewHub = viewers.preview
        self.entries = entries
        self._files = {name: resources.files("streamer.control").joinpath("static", name).read_bytes()
                       for name in ("index.html", *ASSETS)}

    def add_to(self, server: HttpServer) -> HttpServer:
        r = server.routes
        r.add("GET", "/", self.index)
        r.add("GET", "/preview/static/{file}", self.asset)
        r.add("GET", "/preview/feed", self.feed)
        r.add("GET", "/preview/state", self.state)
        r.add("GET", "/preview/mjpeg/{source}", self.mjpeg)
        return server

    # -- the page ----------------------------------------------------------------------------------------
    def index(self, request: Request) -> Response:
        return Response(200, self._files["index.html"], "text/html; charset=utf-8")

    def asset(self, request: Request) -> Response:
        name = request.params["file"]
        if name not in ASSETS:
            raise HttpError(404, f"no such file: {request.path}", "the page is at /")
        return Response(200, self._files[name], ASSETS[name])

    # -- state -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        p = self.pipeline
        return {"phase": p.phase, "model": p.backend.engine_id if p.backend is not None else "",
                "backend": p.backend.name if p.backend is not None else "",
                "preview_fps": round(1.0 / self.hub.interval_s, 3), "watchers": self.hub.tap.watchers,
                "jpegs": self.hub.encoded,
                "sources": self.entries()}

    def state(self, request: Request) -> Response:
        return Response.json(self.state_dict())

    # -- streams -----------------------------------------------------------------------------------------
    def feed(self, request: Request) -> Response:
        return Response(200, self._feed(), MULTIPART)

    def mjpeg(self, request: Request) -> Response:
        name = request.params["source"]
        if name not in {e["name"] for e in self.entries()}:
            raise HttpError(404, f"no source named {name!r} in this run", "GET /sources lists them")
        return Response(200, self._feed(only=name), MULTIPART)

    def _feed(self, only: str | None = None) -> Iterator[bytes]:
        """The page's stream (state and every source's frames), or one source's frames (``only``). Ends when
        the run ends; the server closes it (and this generator) when the client leaves."""
        hub = self.hub
        interval = hub.interval_s
        seen: dict[str, int] = {}
        next_state = 0.0
        last: Still | None = None  # what a one-source stream sent last, and when
        sent_at = time.monotonic()
        with hub.watching():
            while not hub.closed:
                round_start = time.monotonic()
                if only is None and round_start >= next_state:
                    next_state = round_start + STATE_INTERVAL_S
                    yield part("application/json", json.dumps(self.state_dict()).encode())
                for name in hub.newer(seen, only):
                    still = hub.still(name)
                    if still is not None:
                        seen[name] = still.seq
                        last, sent_at = still, round_start
                        yield jpeg_part(still)
                if only is not None and last is not None and round_start - sent_at >= KEEPALIVE_S:
                    sent_at = round_start
                    yield jpeg_part(last)
                until = next_state if only is None else round_start + STATE_INTERVAL_S
                hub.wait(seen, round_start + interval, until, only)
