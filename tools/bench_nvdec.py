"""The GPU decode path (issue 10), side by side with the CPU path in one run, on the same inputs:

  decode-only  the sources alone, one thread each, through the product's FrameSource: CPU (OpenCV/FFmpeg, the
               pipeline's threading) and NVDEC (PyNvVideoCodec, frames left on the GPU)
  naive        the seed notebook's loop on the 1080p clip (as in ``bench.py pipeline``)
  streamer     the CLI with ``--decode cpu`` and with ``--decode nvdec``, publishing to a subscriber process
               that counts every message; CPU-seconds per 1,000 frames from the process's own accounting
  live         a 1080p30 H.264 stream without B-frames, served over HTTP as MPEG-TS at 30 fps
               (tools/ts_live_server.py), through ``--decode nvdec`` (and ``--decode cpu``):
               capture→publish p50/p95/p99 per window, frames dropped, and NVDEC's decode delay on its own
  start-up     time from process start to the first prediction, per backend (the demo clip, warm file cache)

Inputs: the 1080p H.264 clip of ``bench.py pipeline`` (media/vtest_1080p.mp4, B-frames), N copies of it at
once (--concurrency), a 4K HEVC clip and the live MPEG-TS clip (--uhd, --live-ts: made with ffmpeg by
tools/make_nvdec_media.py). Prints a table with ratios against the issue's targets and writes
every figure to --json-out.

    python tools/bench.py nvdec --json-out out/nvdec.json         # on the GPU host: bash tools/gpu_nvdec.sh
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from bench_common import Machine, Record, Target, fmt, ints, names, pick, ratio, work_dir
from bench_pipeline import read_all
from bench_pipeline_records import Percentiles, StreamerRun, Window
from bench_pipeline_streamer import run_streamer

from streamer.paths import DEFAULT_MODEL

REPO = Path(__file__).resolve().parents[1]
TOOLS = Path(__file__).resolve().parent
HELP = "the NVDEC path against the CPU path: decode-only, streamer, CPU cost, live 1080p30, start-up"
DECODERS = ("cpu", "nvdec")
SECTIONS = ("decode", "naive", "streamer", "live", "startup")
TARGETS = {
    "nvdec_vs_cpu_streamer_1080p": 1.5,
    "nvdec_vs_naive_1080p": 3.0,
    "aggregate_8x1080p_fps": 3500.0,
    "nvdec_vs_cpu_streamer_8x1080p": 2.5,
    "cpu_cost_ratio": 0.25,  # NVDEC streamer CPU-s per 1,000 frames / CPU-decode streamer's
    "live_p99_ms": 5.0,
    "first_prediction_torch_s": 3.0,
}
# --fast-start modes measured per backend (torch: with the ONNX Runtime bridge and without it)
FAST_START_MODES = {"torch": ("auto", "off")}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of: {', '.join(SECTIONS)}")
    p.add_argument("--concurrency", default="1,8,16", help="copies of the 1080p clip at once, comma list")
    p.add_argument("--clip", type=Path, default=REPO / "media" / "vtest_1080p.mp4")
    p.add_argument("--uhd", type=Path, default=None, help="a 4K HEVC clip (a row of its own; none: skipped)")
    p.add_argument("--live-ts", type=Path, default=None, help="1080p30 H.264 MPEG-TS without B-frames")
    p.add_argument("--live-seconds", type=float, default=120.0)
    p.add_argument("--live-window", type=float, default=30.0)
    p.add_argument("--live-cpu", action="store_true", help="also run the live stream through --decode cpu")
    p.add_argument("--backend", default="torch")
    p.add_argument("--startup-backends", default="torch,onnxruntime")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--slots", type=int, default=3)
    p.add_argument("--work-dir", type=Path, default=None)
    p.add_argument("--run-timeout", type=float, default=240.0)
    p.add_argument("--streamer-args", default="--fast-start off",
                   help="more streamer options for every streamer run (start-up is measured on its own, "
                        "with each --fast-start mode)")


# -- records -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DecodeOnly(Record):
    decoder: str
    sources: int
    frames: int
    seconds: float
    cpu_ms_per_frame: float
    on_gpu: bool  # the frames stayed on the GPU (NVDEC) or came to the host (CPU)

    DERIVED: ClassVar[tuple[str, ...]] = ("fps",)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class Run(Record):
    """One streamer run and what its summary said about decoding and start-up."""

    decoder: str
    run: StreamerRun
    decoders_used: dict[str, int]  # how many sources each decoder took (auto/nvdec can fall back per source)
    decode_delay_ms: dict[str, Any] | None = None  # NVDEC: the first source's decode delay percentiles
    first_prediction_s: float | None = None

    DERIVED: ClassVar[tuple[str, ...]] = ("fps", "cpu_s_per_1000")

    @property
    def fps(self) -> float | None:
        return self.run.fps

    @property
    def cpu_s_per_1000(self) -> float | None:
        return self.run.cpu_ms_per_frame  # CPU-ms per frame = CPU-s per 1,000 frames


@dataclass(frozen=True)
class Row(Record):
    config: str
    clip: str
    sources: int
    frames_each: int
    decode: tuple[DecodeOnly, ...] = ()
    naive_fps: float | None = None
    streamer: tuple[Run, ...] = ()

    def decode_of(self, decoder: str) -> DecodeOnly | None:
        return next((d for d in self.decode if d.decoder == decoder), None)

    def run_of(self, decoder: str) -> Run | None:
        return next((r for r in self.streamer if r.decoder == decoder), None)


@dataclass(frozen=True)
class Live(Record):
    decoder: str
    seconds: float
    run: Run
    windows: tuple[Window, ...] = ()
    latency_ms: Percentiles | None = None
    dropped: int | None = None


@dataclass(frozen=True)
class Startup(Record):
    backend: str
    wall_s: float  # process start → exit, 30 frames
    first_prediction_s: float | None
    model_ready_s: float | None  # the requested backend ready (with a bridge: the hand-over)
    sources_open_s: float | None
    rc: int
    fast_start: str = "auto"  # --fast-start
    handover_s: float | None = None  # the bridge handed over to the backend (None: no bridge)
    bridge_engine: str = ""  # what served the first frames while the backend loaded ("": no bridge)
    bridge_frames: int = 0


@dataclass(frozen=True)
class NvdecResult(Record):
    machine: Machine
    backend: str
    batch: int
    slots: int
    rows: tuple[Row, ...] = ()
    live: tuple[Live, ...] = ()
    startup: tuple[Startup, ...] = ()
    targets: tuple[Target, ...] = ()
    failed: tuple[str, ...] = ()


# -- measuring -----------------------------------------------------------------------------------------------
def decode_only(clip: Path, count: int, decoder: str, model: Path, batch: int) -> DecodeOnly:
    """``count`` sources of ``clip`` read at once, one thread each, through the product's sources; NVDEC
    sources make the model's input rows and share the decoder engines as the pipeline has them do."""
    from streamer.model.manifest import ModelManifest
    from streamer.preprocess import NativeThreads
    from streamer.sources import make_source, unique_names

    sources = [make_source(f"{clip}#decode={decoder}") for _ in range(count)]
    unique_names(sources)
    native = NativeThreads(count).apply() if decoder == "cpu" else None
    try:
        for s in sources:
            s.open()
        gpu = [s for s in sources if s.decoder == "nvdec"]
        if gpu:
            from streamer.sources.nvdec import decoder_engines
            from streamer.sources.nvdec_file import decoders_per_file

            shape = ModelManifest.from_onnx(model).input_hw
            for s in gpu:
                s.configure_gpu(shape, batch, False, decoders_per_file(len(gpu), decoder_engines()))
        done = read_all(sources, 0, native)
    finally:
        for s in sources:
            s.close()
        if native is not None:
            native.restore()
    on_gpu = all(s.decoder == "nvdec" for s in sources)
    return DecodeOnly(decoder, count, done.frames, done.seconds, done.cpu_ms_per_frame, on_gpu)


def _summary_extra(work: Path, label: str) -> dict[str, Any]:
    path = work / f"{label}.summary.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text()).get("extra") or {}


def streamer_run(args: argparse.Namespace, work: Path, label: str, sources: list[Path | str], decoder: str,
                 expected: int | None, *, max_frames: int = 0, window_s: float = 0.0) -> Run:
    run = run_streamer(model=args.model, backend=args.backend, batch=args.batch, slots=args.slots, threads=0,
                       label=label, sources=sources, expected=expected, work=work, cwd=REPO,
                       timeout=args.run_timeout, max_frames=max_frames, window_s=window_s,
                       extra_args=["--decode", decoder, *shlex.split(args.streamer_args)])
    extra = _summary_extra(work, label)
    used: dict[str, int] = {}
    delay = None
    for info in (extra.get("decode") or {}).values():
        used[info.get("decoder", "?")] = used.get(info.get("decoder", "?"), 0) + 1
        if delay is None and info.get("decode_delay_ms"):
            delay = info["decode_delay_ms"]
    first = (extra.get("startup") or {}).get("first_prediction_s")
    return Run(decoder, run, used, delay, first)


def startup(backend: str, work: Path, fast_start: str = "auto") -> Startup:
    """The demo clip, 30 frames, nothing published: once to warm the file cache, then measured."""
    summary = work / f"startup-{backend}-{fast_start}.json"
    cmd = [sys.executable, "-m", "streamer.cli", "--source", "demo", "--backend", backend, "--bind", "none",
           "--max-frames", "30", "-q", "--fast-start", fast_start, "--summary-json", str(summary)]
    rc = 0
    wall = 0.0
    for _ in range(2):
        summary.unlink(missing_ok=True)
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180)
        wall, rc = time.perf_counter() - t0, done.returncode
    s = (json.loads(summary.read_text()).get("extra") or {}).get("startup", {}) if summary.is_file() else {}
    bridge = s.get("bridge") or {}
    return Startup(backend, round(wall, 3), s.get("first_prediction_s"), s.get("model_ready_s"),
                   s.get("sources_open_s"), rc, fast_start, bridge.get("handover_s"),
                   bridge.get("engine", ""), bridge.get("frames", 0))


@contextlib.contextmanager
def ts_server(ts: Path) -> Any:
    cmd = [sys.executable, str(TOOLS / "ts_live_server.py"), "--file", str(ts), "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("ready"):
            raise RuntimeError(f"the live server did not start: {line!r}")
        yield f"http://127.0.0.1:{line.split()[1]}/live.ts"
    finally:
        proc.kill()
        proc.wait()


def live(args: argparse.Namespace, work: Path, decoder: str) -> Live:
    frames = round(args.live_seconds * 30)
    with ts_server(args.live_ts) as url:
        r = streamer_run(args, work, f"live-{decoder}", [url], decoder, None, max_frames=frames,
                         window_s=args.live_window)
    d = r.run.delivery
    return Live(decoder, args.live_seconds, r, d.windows if d else (), d.latency_ms if d else None,
                d.dropped_by_policy if d else None)


# -- the run -------------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> NvdecResult:
    import make_bench_media as mbm

    from streamer.sources.nvdec import nvdec_reason

    reason = nvdec_reason()
    if reason is not None:
        raise SystemExit(f"bench nvdec: NVDEC is not available here ({reason})")
    sections = set(pick(args.sections, SECTIONS, "sections"))
    failed: list[str] = []
    result = NvdecResult(machine=Machine.probe(("numpy", "cv2", "torch", "PyNvVideoCodec")),
                         backend=args.backend, batch=args.batch, slots=args.slots)
    configs: list[tuple[str, Path, int]] = [(f"{n}x1080p" if n > 1 else "1080p", args.clip, n)
                                            for n in ints(args.concurrency)]
    if args.uhd is not None:
        configs.append(("4k-hevc", args.uhd, 1))
    with work_dir(args.work_dir, "streamer-bench-nvdec-") as work:
        rows = []
        for name, clip, n in configs:
            each = mbm.probe(clip, count=False).frames
            row = Row(name, str(clip), n, each)
            if "decode" in sections:
                print(f"{name}: decode-only cpu / nvdec ...", flush=True)
                row = row.replace(decode=tuple(decode_only(clip, n, d, args.model, args.batch)
                                               for d in DECODERS))
            if "naive" in sections and n == 1 and name == "1080p":
                print(f"{name}: naive loop ...", flush=True)
                try:
                    from bench_pipeline import Config, naive

                    # the same loop, publishing to a subscriber process, as `bench.py pipeline` runs it
                    run = naive(Config(name, clip, 1, each, 30.0), args.model, "cuda", work, 0, 300.0)
                    row = row.replace(naive_fps=round(run.fps, 1))
                except Exception as exc:
                    failed.append(f"naive {name}: {type(exc).__name__}: {exc}")
            if "streamer" in sections:
                runs = []
                for d in DECODERS:
                    print(f"{name}: streamer --decode {d} ...", flush=True)
                    r = streamer_run(args, work, f"{name}-{d}", [clip] * n, d, each * n)
                    if not r.run.ok:
                        failed.append(f"streamer {name} {d}: {r.run.failure()}")
                    runs.append(r)
                row = row.replace(streamer=tuple(runs))
            rows.append(row)
            result = result.replace(rows=tuple(rows))
            _progress(row)
            _checkpoint(args, result)
        if "live" in sections and args.live_ts is not None and args.live_seconds > 0:
            lives = []
            for d in (DECODERS if args.live_cpu else ("nvdec",)):
                print(f"live 1080p30 --decode {d} for {args.live_seconds:g} s ...", flush=True)
                try:
                    lives.append(live(args, work, d))
                except Exception as exc:
                    failed.append(f"live {d}: {type(exc).__name__}: {exc}")
            result = result.replace(live=tuple(lives))
            _checkpoint(args, result)
        if "startup" in sections:
            ups = []
            for b in names(args.startup_backends):
                for fast in FAST_START_MODES.get(b, ("auto",)):
                    print(f"start-up {b} --fast-start {fast} ...", flush=True)
                    ups.append(startup(b, work, fast))
            result = result.replace(startup=tuple(ups))
    result = result.replace(failed=tuple(failed))
    result = result.replace(targets=tuple(targets(result)))
    print_tables(result)
    return result


def _checkpoint(args: argparse.Namespace, result: NvdecResult) -> None:
    """What is measured so far, beside --json-out (a run cut short by a time limit keeps it)."""
    if args.json_out:
        path = args.json_out.with_suffix(".partial.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result.to_dict(), indent=1, default=str))


def _progress(row: Row) -> None:
    parts = [f"decode {d.decoder} {d.fps:.0f} fps ({d.cpu_ms_per_frame:.2f} CPU-ms/frame)"
             for d in row.decode]
    parts += [f"streamer {r.decoder} {fmt(r.fps, '.0f')} fps (CPU-s/1k {fmt(r.cpu_s_per_1000)}, lost "
              f"{r.run.lost}, first prediction {fmt(r.first_prediction_s)} s)" for r in row.streamer]
    if row.naive_fps is not None:
        parts.append(f"naive {row.naive_fps:.0f} fps")
    print(f"  {row.config}: " + "; ".join(parts), flush=True)


def _row(result: NvdecResult, config: str) -> Row | None:
    return next((r for r in result.rows if r.config == config), None)


def _fps(run: Run | None) -> float | None:
    return run.fps if run else None


def targets(result: NvdecResult) -> list[Target]:
    out: list[Target] = []
    one = _row(result, "1080p")
    if one:
        nv, cpu = one.run_of("nvdec"), one.run_of("cpu")
        out.append(Target("nvdec_vs_cpu_streamer[1080p]", "1080p: streamer NVDEC / streamer CPU decode",
                          ratio(_fps(nv), _fps(cpu)), TARGETS["nvdec_vs_cpu_streamer_1080p"]))
        out.append(Target("nvdec_vs_naive[1080p]", "1080p: streamer NVDEC / naive loop",
                          ratio(_fps(nv), one.naive_fps), TARGETS["nvdec_vs_naive_1080p"]))
    eight = _row(result, "8x1080p")
    if eight:
        nv, cpu = eight.run_of("nvdec"), eight.run_of("cpu")
        out.append(Target("aggregate_fps[8x1080p]", "8×1080p: streamer NVDEC frames/s", _fps(nv),
                          TARGETS["aggregate_8x1080p_fps"]))
        out.append(Target("nvdec_vs_cpu_streamer[8x1080p]", "8×1080p: streamer NVDEC / streamer CPU decode",
                          ratio(_fps(nv), _fps(cpu)), TARGETS["nvdec_vs_cpu_streamer_8x1080p"]))
    for row in result.rows:
        nv, cpu = row.run_of("nvdec"), row.run_of("cpu")
        if nv and cpu and row.config in ("1080p", "8x1080p"):
            out.append(Target(f"cpu_cost[{row.config}]",
                              f"{row.config}: CPU-s/1,000 frames NVDEC / CPU decode",
                              ratio(nv.cpu_s_per_1000, cpu.cpu_s_per_1000), TARGETS["cpu_cost_ratio"], "<="))
    for lv in result.live:
        if lv.decoder == "nvdec":
            out.append(Target("live_p99_ms[nvdec]",
                              f"live 1080p30 NVDEC {lv.seconds:g} s: capture→publish p99 ms",
                              lv.latency_ms.p99 if lv.latency_ms else None, TARGETS["live_p99_ms"], "<=",
                              f"dropped {lv.dropped}"))
    ups = {(up.backend, up.fast_start): up for up in result.startup}
    if up := ups.get(("torch", "auto")):
        off = ups.get(("torch", "off"))
        note = (f"bridge {up.bridge_engine or 'none'}, hand-over at {fmt(up.handover_s)} s; "
                f"--fast-start off: {fmt(off.first_prediction_s if off else None)} s")
        out.append(Target("first_prediction_s[torch]", "torch: process start → first prediction, s",
                          up.first_prediction_s, TARGETS["first_prediction_torch_s"], "<=", note))
    return out


def print_tables(result: NvdecResult) -> None:
    print(f"\nbackend {result.backend}, batch {result.batch}, slots {result.slots}")
    head = (f"{'input':10} {'dec cpu':>8} {'dec nvdec':>9} {'naive':>6} {'str cpu':>8} {'str nvdec':>9} "
            f"{'nv/cpu':>6} {'nv/naive':>8} {'CPU-s/1k cpu':>12} {'nvdec':>6} {'lost':>5}")
    print(head)
    for r in result.rows:
        dc, dn = r.decode_of("cpu"), r.decode_of("nvdec")
        sc, sn = r.run_of("cpu"), r.run_of("nvdec")
        lost = [x.run.lost for x in (sc, sn) if x is not None and x.run.lost is not None]
        print(f"{r.config:10} {fmt(dc.fps if dc else None, '8.0f')} {fmt(dn.fps if dn else None, '9.0f')} "
              f"{fmt(r.naive_fps, '6.0f')} {fmt(_fps(sc), '8.0f')} {fmt(_fps(sn), '9.0f')} "
              f"{fmt(ratio(_fps(sn), _fps(sc)), '6.2f')} {fmt(ratio(_fps(sn), r.naive_fps), '8.2f')} "
              f"{fmt(sc.cpu_s_per_1000 if sc else None, '12.2f')} "
              f"{fmt(sn.cpu_s_per_1000 if sn else None, '6.2f')} "
              f"{sum(lost) if lost else '-':>5}")
        if sn and sn.decoders_used.get("cpu"):
            print(f"{'':10} (NVDEC fell back to the CPU for {sn.decoders_used['cpu']} source(s))")
    for lv in result.live:
        lat = lv.latency_ms
        win = ", ".join(f"{w.latency_ms.p99}" for w in lv.windows)
        dd = lv.run.decode_delay_ms or {}
        p = [fmt(getattr(lat, q) if lat else None) for q in ("p50", "p95", "p99")]
        received = lv.run.run.delivery.received if lv.run.run.delivery else "-"
        print(f"live 1080p30 --decode {lv.decoder}, {lv.seconds:g} s: capture→publish p50 {p[0]} / "
              f"p95 {p[1]} / p99 {p[2]} ms; per window p99 {win or '-'}; frames {received}, dropped "
              f"{lv.dropped}; decode delay p50 {dd.get('p50', '-')} / p99 {dd.get('p99', '-')} ms")
    for up in result.startup:
        bridge = (f"; {up.bridge_engine} served {up.bridge_frames} frames, hand-over at "
                  f"{fmt(up.handover_s)} s" if up.bridge_engine else "")
        print(f"start-up {up.backend:12} --fast-start {up.fast_start:4} first prediction "
              f"{fmt(up.first_prediction_s)} s (model ready {fmt(up.model_ready_s)} s, sources open "
              f"{fmt(up.sources_open_s)} s; whole run {up.wall_s:.2f} s, exit {up.rc}{bridge})")
    print("\ntarget                               value      goal  verdict")
    for t in result.targets:
        print(f"{t.name:34} {fmt(t.value, '8.2f')} {t.op}{t.goal:<8g} {t.verdict:7} {t.note}")
    for f in result.failed:
        print(f"FAILED: {f[:600]}")


if __name__ == "__main__":  # python tools/bench_nvdec.py ARGS == python tools/bench.py nvdec ARGS
    import bench

    sys.exit(bench.main(["nvdec", *sys.argv[1:]]))
