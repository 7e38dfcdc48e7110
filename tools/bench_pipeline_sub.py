#!/usr/bin/env python3
"""The benchmark's subscriber: a separate process that counts what arrives over ZeroMQ and writes JSON.

    python tools/bench_pipeline_sub.py --endpoint tcp://127.0.0.1:5555 --sources 4 --out sub.json

Subscribes to everything (one subscription, so the publisher's ``--wait-subscribers 1`` sees it), and stops
once ``eos`` arrived for ``--sources`` sources, or ``--idle`` seconds pass without a message after the first,
or ``--timeout`` seconds pass in all. For every prediction it keeps the capture time, the publisher's
capture→publish latency, the capture→receive latency and the arrival time; per source it counts frames,
duplicates and out-of-order frames; ``missed`` counts gaps in the per-topic ``seq`` (messages the publisher
sent that never arrived). It prints one line when it is connected (``ready``), one when it is done.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from streamer.subscribe import Subscriber

CHECKPOINT = 1000  # the arrival time of this prediction marks the start of the RSS-flatness window


def collect(endpoint: str, sources: int, timeout_s: float, idle_s: float, rcvhwm: int) -> dict[str, Any]:
    per: dict[str, dict[str, Any]] = {}
    seen: dict[str, set[int]] = {}
    eos: dict[str, dict[str, Any]] = {}
    capture: list[float] = []
    latency: list[float] = []
    recv_latency: list[float] = []
    arrival: list[float] = []
    other = {"health": 0, "stats": 0, "other": 0}
    t_checkpoint: float | None = None
    deadline = time.monotonic() + timeout_s
    last_msg = 0.0
    with Subscriber(endpoint, topics=("",), timeout_ms=200, rcvhwm=rcvhwm) as sub:
        print("ready", flush=True)
        while len(eos) < sources:
            now = time.monotonic()
            if now > deadline or (last_msg and now - last_msg > idle_s):
                break
            msg = sub.recv()
            if msg is None:
                continue
            last_msg = time.monotonic()
            t = time.time()
            p = msg.payload
            kind = p.get("type")
            if kind == "pred":
                src = p["source"]
                st = per.setdefault(src, {"frames": 0, "duplicates": 0, "out_of_order": 0, "last": -1,
                                          "dropped": 0})
                frames = seen.setdefault(src, set())
                idx = int(p["frame"])
                if idx in frames:
                    st["duplicates"] += 1
                frames.add(idx)
                if idx < st["last"]:
                    st["out_of_order"] += 1
                st["last"] = max(st["last"], idx)
                st["frames"] += 1
                st["dropped"] += int(p.get("dropped", 0))
                capture.append(float(p["capture_ts"]))
                latency.append(float(p["latency_ms"]) if p.get("latency_ms") is not None else float("nan"))
                recv_latency.append(1e3 * (t - float(p["capture_ts"])))
                arrival.append(t)
                if len(arrival) == CHECKPOINT:
                    t_checkpoint = t
            elif kind == "eos":
                eos[p["source"]] = {"frames": int(p["frames"]), "reason": p.get("reason", "")}
            elif kind in other:
                other[kind] += 1
            else:
                other["other"] += 1
        result = {
            "endpoint": endpoint, "expected_sources": sources, "complete": len(eos) >= sources,
            "received": len(arrival), "missed": sub.missed, "malformed": sub.malformed,
            "per_source": per, "eos": eos, "other": other,
            "unique": sum(len(s) for s in seen.values()),
            "t_first": arrival[0] if arrival else None, "t_last": arrival[-1] if arrival else None,
            "t_checkpoint": t_checkpoint, "checkpoint": CHECKPOINT,
            "capture_ts": capture, "latency_ms": latency, "recv_latency_ms": recv_latency, "arrival": arrival,
        }
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--sources", type=int, required=True, help="stop after eos from this many sources")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds in all")
    p.add_argument("--idle", type=float, default=30.0, help="give up after this long without a message")
    p.add_argument("--rcvhwm", type=int, default=100_000, help="receive queue (messages) of the SUB socket")
    a = p.parse_args(argv)
    result = collect(a.endpoint, a.sources, a.timeout, a.idle, a.rcvhwm)
    tmp = a.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(a.out)
    print(f"done: {result['received']} predictions, {len(result['eos'])}/{a.sources} eos, "
          f"{result['missed']} missed", flush=True)
    return 0 if result["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
