"""``streamer-ctl``: list, add and remove the sources of a running streamer, and read its probes and metrics,
over its HTTP control plane (``streamer --http HOST:PORT``; docs/control.md).

Exit status: 0 done; 1 the streamer refused (its one-line reason is printed: a bad source, a duplicate name,
a missing token ...); 2 a bad command line or no streamer answering at the URL.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any, NoReturn

from streamer.config import POLICY_CHOICES, TOKEN_ENV

DEFAULT_URL = "http://127.0.0.1:8090"
URL_ENV = "STREAMER_URL"
TIMEOUT_S = 30.0  # an added stream may take its open timeout to answer


class CtlError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CtlError(f"{message} (see streamer-ctl --help)", 2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="streamer-ctl", description="Control a running streamer over its --http endpoint.")
    p.add_argument("--url", default=os.environ.get(URL_ENV, DEFAULT_URL),
                   help=f"the streamer's --http address (default ${URL_ENV} or {DEFAULT_URL})")
    p.add_argument("--token", default=os.environ.get(TOKEN_ENV, ""),
                   help=f"bearer token for add/remove (default ${TOKEN_ENV})")
    p.add_argument("--json", action="store_true", help="print the server's JSON as it is")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("list", help="the sources of the run: name, state, frames/s, frames, dropped, URI")
    add = sub.add_parser("add", help="open one more source, as --source would")
    add.add_argument("source", help="what --source takes: webcam<N>, a file, a folder, a URL, demo")
    add.add_argument("--name", help="its id (topics pred.<name>); default: derived from the source")
    add.add_argument("--policy", choices=POLICY_CHOICES,
                     help="its backpressure policy (default: as --policy)")
    remove = sub.add_parser("remove", help="stop a source: its buffered frames are published, then its eos")
    remove.add_argument("name")
    sub.add_parser("health", help="GET /healthz")
    sub.add_parser("ready", help="GET /readyz")
    metrics = sub.add_parser("metrics", help="GET /metrics (Prometheus text)")
    metrics.add_argument("--grep", default="streamer_",
                         help="only lines starting with this (default streamer_)")
    return p


def request(url: str, method: str = "GET", body: Any = None, token: str = "") -> tuple[int, bytes]:
    """(status, body) of one request; CtlError(code 2) when nothing answers."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CtlError(f"no streamer answers at {url}: {reason} (start it with --http, or give --url)",
                       2) from None


def _table(sources: list[dict[str, Any]]) -> str:
    rows = [("NAME", "STATE", "FPS", "FRAMES", "DROPPED", "POLICY", "URI")]
    for s in sources:
        state = s.get("end") or s["state"]  # ended: why (end, error, stopped, removed)
        rows.append((s["name"], state, f"{s['fps']:.1f}", str(s["frames"]), str(s["dropped"]), s["policy"],
                     s["uri"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    base = args.url.rstrip("/")
    if "://" not in base:
        base = "http://" + base
    if args.command == "list":
        status, body = request(f"{base}/sources")
    elif args.command == "add":
        payload = {"source": args.source}
        payload.update({k: v for k, v in (("name", args.name), ("policy", args.policy)) if v})
        status, body = request(f"{base}/sources", "POST", payload, args.token)
    elif args.command == "remove":
        status, body = request(f"{base}/sources/{urllib.request.quote(args.name, safe='')}", "DELETE",
                               token=args.token)
    elif args.command in ("health", "ready"):
        status, body = request(f"{base}/{args.command}z")
    else:
        status, body = request(f"{base}/metrics")
        if status == 200 and not args.json:
            lines = [line for line in body.decode().splitlines() if line.startswith(args.grep)]
            print("\n".join(lines))
            return 0
    text = body.decode(errors="replace")
    if status >= 400:
        try:
            message = json.loads(text)["error"]
        except (ValueError, KeyError, TypeError):
            message = text.strip() or "no reason given"
        if args.json:
            print(text, end="")
        raise CtlError(f"{status}: {message}", 1)
    if args.json or args.command not in ("list", "add", "remove"):
        print(text, end="" if text.endswith("\n") else "\n")
    elif args.command == "list":
        print(_table(json.loads(text)))
    else:
        entry = json.loads(text)
        verb = "added" if args.command == "add" else ("removed" if status == 200 else "removing")
        print(f"{verb} {entry['name']} ({entry['kind']} {entry['uri']}, policy {entry['policy']}, "
              f"{entry['frames']} frames)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(build_parser().parse_args(argv))
    except CtlError as exc:
        print(f"streamer-ctl: {exc}", file=sys.stderr)
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
