"""The control plane's endpoints on a pipeline: Prometheus ``/metrics``, ``/healthz``, ``/readyz`` and
``/sources`` (list, add, remove while running). docs/control.md documents each, with its statuses.

``serve(settings, pipeline)`` binds the server before the pipeline opens (a port in use is a one-line error
at start-up, and the probes answer while the model loads) and returns it; the caller closes it after the run.
Other features add their own routes to ``server.routes`` (see streamer.control.server).
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from streamer.config import SETTINGS, TOKEN_ENV, Settings
from streamer.control.redact import public_text, public_uri
from streamer.control.server import Guard, HttpError, HttpServer, Request, Response, parse_address
from streamer.errors import ConfigError, SourceError
from streamer.intake import IntakeClosed, SourceAlreadyEnded, SourceNameTaken, UnknownSource
from streamer.pipeline import Pipeline
from streamer.results import eos_reason
from streamer.sources import FrameBuffer, FrameSource, SourceState

log = logging.getLogger(__name__)

REMOVE_WAIT_S = 5.0  # DELETE waits this long for the source's eos before answering 202 instead of 200
ADD_FIELDS = ("source", "name", "policy")


class Endpoints(ABC):
    """The control plane's routes over what runs the sources: one pipeline (:class:`ControlPlane`) or a driver
    over workers (``streamer.scale.control.DriverControl``). Subclasses give the probes, the entries, and how
    a source is added and removed; the routes, the checks of a request and the statuses are shared."""

    registry: Any  # prometheus_client CollectorRegistry

    def add_to(self, server: HttpServer) -> HttpServer:
        r = server.routes
        r.add("GET", "/metrics", self.metrics)
        r.add("GET", "/healthz", self.healthz)
        r.add("GET", "/readyz", self.readyz)
        r.add("GET", "/sources", self.list_sources)
        r.add("GET", "/sources/{name}", self.get_source)
        r.add("POST", "/sources", self.add_source)
        r.add("DELETE", "/sources/{name}", self.remove_source)
        return server

    def metrics(self, request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)

    @abstractmethod
    def healthz(self, request: Request) -> Response: ...

    @abstractmethod
    def readyz(self, request: Request) -> Response: ...

    @abstractmethod
    def entries(self) -> list[dict[str, Any]]:
        """Every source of the run, as GET /sources lists them."""

    @abstractmethod
    def add(self, spec: str, name: str | None, policy: str | None) -> str:
        """Open ``spec`` as a ``--source`` would be; the name it runs under."""

    @abstractmethod
    def remove(self, name: str, wait_s: float) -> bool:
        """Stop source ``name``; True once its eos is out (within ``wait_s``)."""

    def _entry(self, name: str) -> dict[str, Any]:
        for entry in self.entries():
            if entry["name"] == name:
                return entry
        raise HttpError(404, f"no source named {name!r} in this run", "GET /sources lists them")

    def list_sources(self, request: Request) -> Response:
        return Response.json(self.entries())

    def get_source(self, request: Request) -> Response:
        return Response.json(self._entry(request.params["name"]))

    def add_source(self, request: Request) -> Response:
        body = request.json()
        if not isinstance(body, dict):
            raise HttpError(400, "the body must be a JSON object",
                            '{"source": "...", "name": "optional", "policy": "optional"}')
        unknown = sorted(set(body) - set(ADD_FIELDS))
        if unknown:
            raise HttpError(400, f"unknown field(s) {', '.join(map(repr, unknown))}",
                            f"the fields are {', '.join(ADD_FIELDS)}")
        for key in ADD_FIELDS:
            if key in body and not isinstance(body[key], str):
                raise HttpError(400, f'"{key}" must be a string')
        if not body.get("source", "").strip():
            raise HttpError(400, '"source" is missing or empty',
                            "give what --source takes: webcam<N>, a video file, a folder or glob of images, "
                            "a URL, or demo")
        try:
            name = self.add(body["source"], body.get("name"), body.get("policy"))
        except SourceNameTaken as exc:
            raise HttpError(409, exc.message, exc.hint) from None
        except IntakeClosed as exc:
            raise HttpError(503, exc.message, exc.hint) from None
        except (SourceError, ConfigError) as exc:
            raise HttpError(400, exc.message, exc.hint) from None
        return Response.json(self._entry(name), 201, (("Location", f"/sources/{name}"),))

    def remove_source(self, request: Request) -> Response:
        name = request.params["name"]
        try:
            published = self.remove(name, REMOVE_WAIT_S)
        except UnknownSource as exc:
            raise HttpError(404, exc.message, exc.hint) from None
        except SourceAlreadyEnded as exc:
            raise HttpError(409, exc.message, exc.hint) from None
        except IntakeClosed as exc:
            raise HttpError(503, exc.message, exc.hint) from None
        # 200: its last frames and its eos are out; 202: still draining (its eos follows)
        return Response.json(self._entry(name), 200 if published else 202)


class ControlPlane(Endpoints):
    """The endpoints, bound to one pipeline. ``add_to(server)`` puts them in its route table."""

    def __init__(self, pipeline: Pipeline) -> None:
        from streamer.control.prometheus import make_registry  # prometheus-client: only with --http

        self.pipeline = pipeline
        self.registry = make_registry(pipeline)

    # -- probes ------------------------------------------------------------------------------------------
    def healthz(self, request: Request) -> Response:
        """200 while the process and the pipeline's threads are alive (also while starting); 503 once a
        pipeline thread has failed, or the run has ended."""
        p = self.pipeline
        stages = {"batcher": p.batcher, "results": p.results}
        threads = {name: stage.alive for name, stage in stages.items() if stage is not None}
        problems = [f"the {name} thread failed: {type(stage.error).__name__}: {stage.error}"
                    for name, stage in stages.items() if stage is not None and stage.error is not None]
        if p.phase == "ended":
            problems.append("the run has ended")
        body = {"status": "failing" if problems else "ok", "phase": p.phase, "threads": threads}
        if problems:
            body["reason"] = "; ".join(problems)
        return Response.json(body, 503 if problems else 200)

    def readyz(self, request: Request) -> Response:
        """200 when the model is loaded, the publisher bound and at least one source up; else 503 and why."""
        p = self.pipeline
        streaming = p.phase == "running"
        up = [src.name for src, _ in p.intake.entries() if src.state is SourceState.RUNNING]
        checks = {"phase": p.phase, "model": p.backend is not None and p.executor is not None,
                  "publisher": (streaming or p.phase == "draining") if p.settings.publish else "off",
                  "sources_up": len(up)}
        if not streaming:
            reason = {"created": "not started", "opening": "opening the sources, the model and the outputs",
                      "draining": "stopping: draining the frames in flight",
                      "ended": "the run has ended"}.get(p.phase, p.phase)
        elif not up:
            reason = "no source is up" + (" (add one: POST /sources)" if p.settings.keep_running else "")
        else:
            return Response.json({"status": "ready", **checks})
        return Response.json({"status": "not ready", "reason": reason, **checks}, 503)

    # -- sources -----------------------------------------------------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        p = self.pipeline
        counts = p.metrics.counts() if p.metrics is not None else {}
        rates = p.metrics.rates() if p.metrics is not None else {}
        ends = dict(p.results.ends) if p.results is not None else {}
        out = []
        for src, buf in p.intake.entries():
            c = counts.get(src.name)
            end = ends.get(src.name)
            out.append(source_entry(src, buf, c.frames if c else 0, rates.get(src.name, 0.0),
                                    eos_reason(end) if end is not None else ""))
        return out

    def add(self, spec: str, name: str | None, policy: str | None) -> str:
        return self.pipeline.add_source(spec, name, policy).name

    def remove(self, name: str, wait_s: float) -> bool:
        return self.pipeline.remove_source(name, wait_s)


def source_entry(src: FrameSource, buf: FrameBuffer, frames: int, fps: float, end: str) -> dict[str, Any]:
    """One source as GET /sources shows it."""
    return {"name": src.name, "uri": public_uri(src.spec), "kind": src.kind, "policy": buf.policy.value,
            "state": src.state.value, "detail": public_text(src.detail), "frames": frames,
            "dropped": buf.dropped, "skipped": src.skipped, "reconnects": src.reconnects, "queued": len(buf),
            "fps": fps, "end": end}


def serve_endpoints(settings: Settings, endpoints: Callable[[], Endpoints],
                    extra: Callable[[HttpServer, Endpoints], None] | None = None, *,
                    listing: str = "/metrics /healthz /readyz /sources") -> HttpServer | None:
    """Start the control plane of ``settings.http`` with the routes of ``endpoints()`` (made only when it is
    on), and whatever ``extra(server, endpoints)`` adds, before it starts; None when it is off. ConfigError
    when the address is bad or cannot be bound. ``listing``: what the start-up log line says it serves."""
    address = parse_address(settings.http, SETTINGS["http"].where)
    if address is None:
        if settings.keep_running and not settings.sources:
            raise ConfigError("--keep-running without a --source needs --http: nothing could add a source",
                              "give --http HOST:PORT, then POST /sources (streamer-ctl add SRC)")
        return None
    host, port = address
    token = settings.http_token or os.environ.get(TOKEN_ENV, "")
    server = HttpServer(host, port, Guard(host, token), where=SETTINGS["http"].where)
    control = endpoints()
    control.add_to(server)
    if extra is not None:
        extra(server, control)
    server.start()
    log.info("control plane on %s (%s)%s", server.url, listing,
             "; POST/DELETE need the token" if token else "")
    if not server.guard.open_to_changes:
        log.warning("control plane on %s, beyond this machine, without a token: POST/DELETE /sources are "
                    "refused (set --http-token or %s)", host, TOKEN_ENV)
    return server


def serve(settings: Settings, pipeline: Pipeline) -> HttpServer | None:
    """Start the control plane of ``settings.http`` on ``pipeline`` (None when it is off), with the preview
    page when ``settings.preview``. ConfigError when the address is bad or cannot be bound."""

    def add_preview(server: HttpServer, control: Endpoints) -> None:
        from streamer.control.preview import PreviewPage

        PreviewPage(pipeline, control.entries).add_to(server)

    server = serve_endpoints(settings, lambda: ControlPlane(pipeline),
                             add_preview if settings.preview else None)
    if settings.preview:
        if server is None:
            raise ConfigError("--preview needs --http: the page is served by the control plane",
                              "add --http 127.0.0.1:8090 and open http://127.0.0.1:8090/")
        log.info("preview page on %s/", server.url)
        if not server.guard.loopback:
            log.warning("the preview on %s shows every source's pictures to anyone who can reach it (reads "
                        "need no token): put an authenticating proxy in front, or bind to 127.0.0.1",
                        server.host)
    return server
