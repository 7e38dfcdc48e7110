"""The PNG of ``tools/bench.py pipeline``: throughput bars, latency histogram, per-stage time (matplotlib)."""

from __future__ import annotations

from pathlib import Path

from bench_pipeline_records import Histogram, OfflineRow, PipelineResult


def render(result: PipelineResult, path: Path) -> None:
    """Draw the chart of one benchmark result; ImportError when matplotlib is not installed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = result.offline
    names = [r.config for r in rows]
    engine = result.engine.images_per_s if result.engine else None
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.5))
    fig.suptitle(f"streamer pipeline benchmark — {result.backend} on {result.machine.label}, "
                 f"{result.machine.cpus} cores, batch {result.batch}")

    ax = axes[0]
    series = [("decode-only", [r.decode_fps for r in rows]),
              ("engine-only", [engine for _ in rows]),
              ("naive loop", [r.naive_fps for r in rows]),
              ("streamer", [r.streamer_fps for r in rows])]
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
    live = result.live.run.delivery if result.live else None
    hists: list[tuple[str, Histogram | None]] = []
    if result.live and live:
        hists.append((f"live {result.live.fps_paced:g} fps", live.latency_hist))
    hists += [(f"offline {r.config}", r.streamer.delivery.latency_hist if r.streamer and r.streamer.delivery
               else None) for r in rows[:2]]
    drawn = False
    for label, hist in hists:
        if hist is None or not hist.total:
            continue
        counts = np.asarray(hist.counts, np.float64)
        ax.stairs(counts / counts.sum(), np.asarray(hist.edges_ms), label=label,
                  fill=label.startswith("live"), alpha=0.6)
        drawn = True
    ax.set_xscale("log")
    ax.set_xlabel("capture → publish (ms, log)")
    ax.set_ylabel("fraction of frames")
    ax.set_title("latency")
    if live and live.latency_ms.p99 is not None:
        ax.axvline(live.latency_ms.p99, color="k", lw=0.8, ls="--", label="live p99")
    if drawn:
        ax.legend(fontsize=8)

    ax = axes[2]

    bottom = np.zeros(len(rows))
    per_row = [_stages(r) for r in rows]
    for i, label in enumerate(("decode", "resize", "engine", "results")):
        heights = np.asarray([stages[i] for stages in per_row])
        ax.bar(x, heights, 0.6, bottom=bottom, label=label)
        bottom += heights
    ax.set_xticks(x, names)
    ax.set_ylabel("ms per frame")
    ax.set_title("per-stage time (decode: per source thread)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _stages(row: OfflineRow) -> tuple[float, float, float, float]:
    """ms per frame: decode (one source thread, decode-only), then resize, engine, results in the streamer."""
    st = row.streamer.stages if row.streamer else None
    values = (row.decode.ms_per_frame_per_source if row.decode else None,
              st.resize_ms_per_frame if st else None, st.engine_ms_per_frame if st else None,
              st.results_ms_per_frame if st else None)
    decode, resize, engine, results = (v or 0.0 for v in values)
    return decode, resize, engine, results
