"""The PNG of ``tools/bench.py pipeline``: throughput bars, latency histogram, per-stage time (matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def render(result: dict[str, Any], path: Path) -> None:
    """Draw the chart of one benchmark result; ImportError when matplotlib is not installed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = result.get("offline", [])
    names = [r["config"] for r in rows]
    engine = (result.get("engine") or {}).get("images_per_s")
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.5))
    machine = result.get("machine", {})
    where = (machine.get("gpu") or {}).get("name") or machine.get("cpu_model") or "CPU"
    fig.suptitle(f"streamer pipeline benchmark — {result.get('backend')} on {where}, "
                 f"{machine.get('cpus')} cores, batch {result.get('batch')}")

    ax = axes[0]
    series = [("decode-only", [r.get("decode_fps") for r in rows]),
              ("engine-only", [engine for _ in rows]),
              ("naive loop", [r.get("naive_fps") for r in rows]),
              ("streamer", [r.get("streamer_fps") for r in rows])]
    x = np.arange(len(names))
    width = 0.2
    for i, (label, values) in enumerate(series):
        vals = [v or 0.0 for v in values]
        bars = ax.bar(x + (i - 1.5) * width, vals, width, label=label)
        if label == "streamer":
            for b, v in zip(bars, vals, strict=True):
                if v:
                    ax.annotate(f"{v:.0f}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom",
                                fontsize=7)
    ax.set_xticks(x, names)
    ax.set_yscale("log")
    ax.set_ylim(bottom=10)
    ax.set_ylabel("frames/s (log)")
    ax.set_title("offline throughput")
    ax.legend(fontsize=8)

    ax = axes[1]
    live = result.get("live") or {}
    drawn = False
    for label, hist in (("live 30 fps", live.get("latency_hist")),
                        *((f"offline {r['config']}", (r.get("streamer") or {}).get("latency_hist"))
                          for r in rows[:2])):
        if not hist or not sum(hist["counts"]):
            continue
        edges = np.asarray(hist["edges_ms"])
        counts = np.asarray(hist["counts"], np.float64)
        ax.stairs(counts / counts.sum(), edges, label=label, fill=label.startswith("live"), alpha=0.6)
        drawn = True
    ax.set_xscale("log")
    ax.set_xlabel("capture → publish (ms, log)")
    ax.set_ylabel("fraction of frames")
    ax.set_title("latency")
    if live.get("latency_ms", {}).get("p99") is not None:
        ax.axvline(live["latency_ms"]["p99"], color="k", lw=0.8, ls="--", label="live p99")
    if drawn:
        ax.legend(fontsize=8)

    ax = axes[2]
    def stage(r: dict[str, Any], key: str) -> float:
        if key == "decode":
            return (r.get("decode") or {}).get("ms_per_frame_per_source") or 0.0
        return ((r.get("streamer") or {}).get("stages") or {}).get(f"{key}_ms_per_frame") or 0.0

    bottom = np.zeros(len(rows))
    for label in ("decode", "resize", "engine", "results"):
        vals = np.asarray([stage(r, label) for r in rows])
        ax.bar(x, vals, 0.6, bottom=bottom, label=label)
        bottom += vals
    ax.set_xticks(x, names)
    ax.set_ylabel("ms per frame")
    ax.set_title("per-stage time (decode: per source thread)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
