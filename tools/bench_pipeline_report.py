"""The targets of ``tools/bench.py pipeline`` (issue 5), computed from one run's records, and its tables."""

from __future__ import annotations

from bench_common import Target, fmt, ratio
from bench_pipeline_records import PipelineResult

TARGETS = {
    "streamer_vs_limit": 0.90,  # offline, one source: streamer / min(decode-only, engine-only)
    "streamer_vs_naive_1080p": 2.0,  # GPU host
    "aggregate_8x1080p_vs_decode": 0.80,  # GPU host
    "live_p99_ms": 10.0,  # GPU host
    "live_drift": 1.2,  # last window p99 / first window p99
    "rss_flat": 1.10,  # peak RSS after the 1,000th frame / RSS at it
}
GPU_ONLY_NOTE = "GPU-host target (shown for reference)"


def limit(*values: float | None) -> float | None:
    """The lower of the figures measured (the bound a pipeline of those stages can reach)."""
    present = [v for v in values if v]
    return min(present) if present else None


def cpu_bound_fps(result: PipelineResult, config: str) -> float | None:
    """On a CPU the decoder and the engine share the cores: cores / (decode + engine CPU-ms per frame)."""
    row = result.row(config)
    if result.gpu or row is None or row.decode is None or result.engine is None:
        return None
    per_frame = row.decode.cpu_ms_per_frame + result.engine.cpu_ms_per_image
    return 1e3 * result.machine.cpus / per_frame if per_frame > 0 else None


def targets(result: PipelineResult) -> list[Target]:
    gpu = result.gpu
    engine = result.engine.images_per_s if result.engine else None
    out = []
    for name in ("vtest", "1080p"):
        r = result.row(name)
        if r is None:
            continue
        note = ""
        bound = cpu_bound_fps(result, name)
        if bound is not None and r.decode is not None and result.engine is not None:
            note = (f"{result.machine.cpus} cores shared: decode {r.decode.cpu_ms_per_frame:.2f} + engine "
                    f"{result.engine.cpu_ms_per_image:.2f} CPU-ms/frame → ≤ {bound:.0f} fps; "
                    f"streamer/that bound = {fmt(ratio(r.streamer_fps, bound))}")
        out.append(Target(f"streamer_vs_limit[{name}]", f"{name}: streamer / min(decode, engine)",
                          ratio(r.streamer_fps, limit(r.decode_fps, engine)), TARGETS["streamer_vs_limit"],
                          ">=", note))
    r = result.row("1080p")
    if r:
        out.append(Target("streamer_vs_naive[1080p]", "1080p: streamer / naive loop",
                          ratio(r.streamer_fps, r.naive_fps), TARGETS["streamer_vs_naive_1080p"], ">=",
                          "" if gpu else GPU_ONLY_NOTE, applies=gpu))
    r = result.row("8x1080p")
    if r:
        out.append(Target("aggregate_vs_decode[8x1080p]", "8×1080p: streamer / decode-only aggregate",
                          ratio(r.streamer_fps, r.decode_fps), TARGETS["aggregate_8x1080p_vs_decode"], ">=",
                          applies=gpu))
    live = result.live
    if live and live.windows:
        w = live.windows
        out.append(Target("live_p99_ms", f"live: capture→publish p99 (ms, {live.frames_total} frames)",
                          live.run.delivery.latency_ms.p99 if live.run.delivery else None,
                          TARGETS["live_p99_ms"], "<=", "" if gpu else GPU_ONLY_NOTE, applies=gpu))
        drift = ratio(w[-1].latency_ms.p99, w[0].latency_ms.p99) if len(w) > 1 else None
        out.append(Target("live_drift", f"live: last / first window p99 ({len(w)} windows)", drift,
                          TARGETS["live_drift"], "<="))
    runs = [r.streamer for r in result.offline if r.streamer]
    if runs:
        bad = [s.label for s in runs if s.lost_or_missed is None or s.rc != 0]
        lost = sum(s.lost_or_missed or 0 for s in runs)
        out.append(Target("zero_lost", f"offline, subscriber first: messages lost ({len(runs)} runs)",
                          None if bad else float(lost), 0.0, "<=",
                          f"incomplete runs: {', '.join(bad)}" if bad else ""))
    rss_runs = [(live.run, "live run")] if live else []
    rss_runs += [(s, "offline run") for s in runs]
    rss = next(((s.rss, which) for s, which in rss_runs if s.rss and s.rss.ratio is not None), None)
    if rss:
        window, which = rss
        out.append(Target("rss_flat", f"peak RSS after the 1,000th frame / RSS at it ({which})",
                          window.ratio, TARGETS["rss_flat"], "<=",
                          f"{window.at_checkpoint_mb} → {window.peak_after_mb} MB over {window.window_s} s"))
    return out


def print_tables(result: PipelineResult) -> None:
    eng = result.engine
    engine_fps = eng.images_per_s if eng else None
    print(f"\n== offline throughput (frames/s; engine-only {fmt(engine_fps, ',.0f')} img/s: "
          f"{eng.engine_id if eng else '-'}, batch {eng.batch if eng else '-'}) ==")
    print(f"{'input':10} {'decode':>8} {'engine':>8} {'naive':>7} {'streamer':>9} {'/min':>6} {'/naive':>7} "
          f"{'/decode':>8} {'lost':>5} {'batch':>6} {'p50 ms':>8} {'p99 ms':>8}")
    for r in result.offline:
        s = r.streamer
        lat = s.delivery.latency_ms if s and s.delivery else None
        lost = s.lost_or_missed if s else None
        print(f"{r.config:10} {fmt(r.decode_fps, '8.0f')} {fmt(engine_fps, '8.0f')} "
              f"{fmt(r.naive_fps, '7.0f')} {fmt(r.streamer_fps, '9.0f')} "
              f"{fmt(ratio(r.streamer_fps, limit(r.decode_fps, engine_fps)), '6.2f')} "
              f"{fmt(ratio(r.streamer_fps, r.naive_fps), '7.2f')} "
              f"{fmt(ratio(r.streamer_fps, r.decode_fps), '8.2f')} {'-' if lost is None else lost:>5} "
              f"{fmt(s.summary.mean_batch if s and s.summary else None, '6.1f')} "
              f"{fmt(lat.p50 if lat else None, '8.1f')} {fmt(lat.p99 if lat else None, '8.1f')}")
    print("\n== per-stage (ms per frame: decode = one source thread's wall time per frame in decode-only; "
          "resize/engine/results inside the streamer) ==")
    print(f"{'input':10} {'decode':>8} {'resize':>8} {'engine':>8} {'results':>8} {'cpu/frame':>10} "
          f"{'decode cpu':>10}")
    for r in result.offline:
        st = r.streamer.stages if r.streamer else None
        print(f"{r.config:10} {fmt(r.decode.ms_per_frame_per_source if r.decode else None, '8.3f')} "
              f"{fmt(st.resize_ms_per_frame if st else None, '8.3f')} "
              f"{fmt(st.engine_ms_per_frame if st else None, '8.3f')} "
              f"{fmt(st.results_ms_per_frame if st else None, '8.3f')} "
              f"{fmt(r.streamer.cpu_ms_per_frame if r.streamer else None, '10.3f')} "
              f"{fmt(r.decode.cpu_ms_per_frame if r.decode else None, '10.3f')}")
    for v in result.variants:
        print(f"variant {v.label}: decode {fmt(v.decode_fps, '.0f')} fps, streamer "
              f"{fmt(v.streamer_fps, '.0f')} fps "
              f"(streamer/decode {fmt(ratio(v.streamer_fps, v.decode_fps))})")
    live = result.live
    if live:
        d = live.run.delivery
        print(f"\n== live: {live.source} paced at {live.fps_paced:g} fps for {live.seconds:g} s "
              f"({fmt(live.frames_total, 'd')} frames published, "
              f"{fmt(d.dropped_by_policy if d else None, 'd')} dropped as stale, "
              f"{fmt(d.missed if d else None, 'd')} missed) ==")
        print(f"{'window':>8} {'frames':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for w in live.windows:
            p = w.latency_ms
            print(f"{w.from_s:7.0f}s {w.frames:7d} {fmt(p.p50, '8.2f')} {fmt(p.p95, '8.2f')} "
                  f"{fmt(p.p99, '8.2f')} {fmt(p.max, '8.2f')}")
        if d:
            p = d.latency_ms
            print(f"{'all':>8} {d.received:7d} {fmt(p.p50, '8.2f')} {fmt(p.p95, '8.2f')} "
                  f"{fmt(p.p99, '8.2f')} {fmt(p.max, '8.2f')}   "
                  f"(capture→receive p99 {fmt(d.recv_latency_ms.p99, '.2f')} ms)")
    print("\n== targets (issue 5), ratios from this run ==")
    for t in result.targets:
        print(f"{t.description:58} {fmt(t.value, '8.2f')} (goal {t.op} {t.goal:g}) {t.verdict:7} {t.note}")
    for title, lines in (("skipped", result.skipped), ("failed", result.failed)):
        for line in lines:
            print(f"{title}: {line}")
