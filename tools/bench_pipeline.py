"""End-to-end figures, side by side in one run, on the same inputs (issue 5):

  decode-only  the sources alone: one thread per source reading every frame, as the pipeline runs them
  engine-only  the backend on pre-staged batches, through the executor it makes (the pipeline's)
  naive        the seed notebook's loop: read, cv2.resize, model(x), copy back, publish over ZeroMQ, one frame
               at a time (ONNX Runtime on the CPU; PyTorch fp32 eager on CUDA)
  streamer     the real CLI (`python -m streamer.cli`) as a subprocess, publishing over ZeroMQ to a subscriber
               process that counts what arrives (--wait-subscribers 1: nothing may be lost)
  live         one source paced at 30 fps (--realtime on a looping playlist of the 1080p clip) for
               --live-seconds: capture→publish p50/p95/p99 per --live-window, and the streamer's RSS

Inputs: vtest.avi, a 1080p H.264 clip made from it (tools/make_bench_media.py, under media/), and N copies of
the 1080p clip at once (--concurrency). Prints a table with the ratios against the issue's targets, writes
every figure to --json-out and a PNG chart (throughput, latency histogram, per-stage time) beside it when
matplotlib is installed (`pip install streamer[bench]`; `--chart-from JSON` redraws one later).

    python tools/bench.py pipeline --json-out out/pipeline.json  # vtest, 1080p ×1/4 (CPU), ×1/4/8/16 (GPU)
    bash tools/gpu_pipeline.sh                                     # the GPU host, one command (see there)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from bench_common import Machine, cpu_seconds, ints, names, pick, work_dir
from bench_loop import drive
from bench_pipeline_records import (
    DecodeRun,
    EngineOnly,
    LiveRun,
    NaiveRun,
    OfflineRow,
    Percentiles,
    PipelineResult,
    StreamerRun,
    Variant,
)
from bench_pipeline_report import TARGETS, print_tables, targets
from bench_pipeline_streamer import free_endpoint, run_streamer, start_subscriber

from streamer.paths import DEFAULT_MODEL

if TYPE_CHECKING:
    from streamer.preprocess import NativeThreads
    from streamer.sources import FrameSource

REPO = Path(__file__).resolve().parents[1]

HELP = "end to end: decode-only, engine-only, naive loop, the streamer CLI + subscriber, live latency, RSS"

SECTIONS = ("decode", "engine", "naive", "streamer", "live")
INPUTS = ("vtest", "1080p")
VERSIONS = ("numpy", "cv2", "onnxruntime")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inputs", default="vtest,1080p", help="comma list of: vtest, 1080p (one source each)")
    p.add_argument("--concurrency", default=None,
                   help="N copies of the 1080p clip at once, comma list (default 1,4,8,16 on a GPU, 1,4 on "
                        "a CPU); N=1 is the 1080p input itself")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of: {', '.join(SECTIONS)}")
    p.add_argument("--backend", default="auto", help="as streamer --backend (auto: the fastest usable)")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--batch", type=int, default=16, help="streamer --batch, and the engine-only batch")
    p.add_argument("--slots", type=int, default=2, help="streamer --slots")
    p.add_argument("--threads", type=int, default=0, help="streamer --threads (ONNX Runtime)")
    p.add_argument("--engine-seconds", type=float, default=3.0, help="engine-only measuring time")
    p.add_argument("--max-frames", type=int, default=0, help="offline runs: stop each source after N frames")
    p.add_argument("--live-seconds", type=float, default=None,
                   help="live run length (default 180 on a GPU, 60 on a CPU: 1,800 frames, enough for the "
                        "RSS window that starts at the 1,000th)")
    p.add_argument("--live-window", type=float, default=None, help="latency window (default 60 s on a GPU, "
                                                                   "20 s on a CPU)")
    p.add_argument("--live-input", default="1080p", choices=INPUTS,
                   help="the clip the live playlist loops (paced at its own fps: 30 for 1080p)")
    p.add_argument("--variants", default="",
                   help="extra decode-only + streamer runs with environment overrides, comma list of "
                        "CONFIG:VAR=VALUE[+VAR=VALUE], e.g. 16x1080p:OPENCV_FFMPEG_THREADS=16 (the "
                        "pipeline's own threading choices step aside for variables the user sets)")
    p.add_argument("--media-dir", type=Path, default=REPO / "media")
    p.add_argument("--work-dir", type=Path, default=None, help="subscriber/summary files and streamer logs "
                                                               "(default: a temporary folder)")
    p.add_argument("--run-timeout", type=float, default=300.0, help="seconds allowed per streamer run")
    p.add_argument("--chart", type=Path, default=None, help="PNG path (default: beside --json-out)")
    p.add_argument("--chart-from", type=Path, default=None, help="only redraw the chart from this JSON")


# -- inputs --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    """One offline input configuration: ``count`` copies of ``clip`` read at once."""

    name: str
    clip: Path
    count: int
    frames_each: int
    fps: float

    @property
    def sources(self) -> list[Path]:
        return [self.clip] * self.count

    def expected(self, max_frames: int) -> int:
        each = min(self.frames_each, max_frames) if max_frames else self.frames_each
        return each * self.count

    def row(self) -> OfflineRow:
        return OfflineRow(self.name, str(self.clip), self.count, self.frames_each)


def _configs(inputs: list[str], concurrency: list[int], media: dict[str, Path]) -> list[Config]:
    import make_bench_media as mbm

    out = []
    for key in inputs:
        if key not in INPUTS:
            raise SystemExit(f"unknown input {key!r}: use {', '.join(INPUTS)}")
        info = mbm.probe(media[key], count=False)
        for n in [1] if key == "vtest" else sorted(set(concurrency)):
            out.append(Config(key if n == 1 else f"{n}x{key}", media[key], n, info.frames, info.fps))
    return out


@contextlib.contextmanager
def _env_vars(values: dict[str, str]) -> Iterator[None]:
    old = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# -- decode-only ---------------------------------------------------------------------------------------------
def decode_only(cfg: Config, max_frames: int, pipeline_threads: bool = True) -> DecodeRun:
    """Every source on its own thread, reading through the product's FrameSource (decode + BGR frame).

    ``pipeline_threads``: with the pipeline's OpenCV threading (NativeThreads: decoder threads shared out
    among the sources); else with OpenCV/FFmpeg's defaults (one decoder thread per core for every capture)."""
    from streamer.preprocess import NativeThreads
    from streamer.sources import make_source, unique_names

    sources = [make_source(str(p)) for p in cfg.sources]
    unique_names(sources)
    native = NativeThreads(len(sources)).apply() if pipeline_threads else None
    try:
        for s in sources:
            s.open()
        return read_all(sources, max_frames, native)
    finally:
        for s in sources:
            s.close()
        if native is not None:
            native.restore()


def read_all(sources: list[FrameSource], max_frames: int, native: NativeThreads | None) -> DecodeRun:
    """Every one of the open ``sources`` read to its end (or ``max_frames``) on a thread of its own, timed;
    ``native``: the OpenCV threading applied meanwhile (None: OpenCV's defaults)."""
    counts = [0] * len(sources)
    ends = [0.0] * len(sources)

    def read(i: int) -> None:
        src = sources[i]
        n = 0
        while not max_frames or n < max_frames:
            if src.read() is None:
                break
            n += 1
        counts[i] = n
        ends[i] = time.perf_counter()

    threads = [threading.Thread(target=read, args=(i,), name=f"decode-{i}") for i in range(len(sources))]
    c0, t0 = cpu_seconds(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    cpu = cpu_seconds() - c0
    frames = sum(counts)
    return DecodeRun(frames=frames, seconds=round(elapsed, 4),
                     threading="pipeline" if native is not None else "opencv-default",
                     decoder_threads=native.decoder_threads if native is not None else None,
                     per_source_fps=tuple(round(c / (e - t0), 1) for c, e in zip(counts, ends, strict=True)),
                     cpu_ms_per_frame=round(1e3 * cpu / max(frames, 1), 4),
                     ms_per_frame_per_source=round(1e3 * elapsed * len(sources) / max(frames, 1), 4))


def decode_best(cfg: Config, max_frames: int) -> tuple[DecodeRun, DecodeRun]:
    """(the faster, the slower) of the pipeline's threading and OpenCV's defaults: the limit that the
    streamer is held against must not be lowered by a threading choice."""
    a = decode_only(cfg, max_frames, pipeline_threads=True)
    b = decode_only(cfg, max_frames, pipeline_threads=False)
    return (a, b) if a.fps >= b.fps else (b, a)


# -- engine-only ---------------------------------------------------------------------------------------------
def engine_only(model: Path, backend_name: str, batch: int, slots: int, threads: int,
                seconds: float) -> EngineOnly:
    """The backend through the executor it makes for the pipeline (same batch, slots, workers), fed pre-staged
    full batches that never change: no decoding, no resizing, nothing published."""
    from streamer.backends.base import CpuBackend
    from streamer.backends.ort import OrtBackend
    from streamer.backends.select import open_backend

    backend = open_backend(model, backend_name, max_batch=batch, threads=threads)
    try:
        spec = backend.batch_spec
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (batch, *spec.sample_shape)).astype(spec.input_dtype)
        ex = backend.make_executor(batch, slots)
        try:
            for slot in ex.slots:
                slot.host_input[:batch] = images
            loop = drive(ex, batch, warmup=3 * ex.num_slots, seconds=seconds, min_batches=5)
        finally:
            ex.close()
        return EngineOnly(backend.name, backend.engine_id,
                          workers=backend.workers if isinstance(backend, CpuBackend) else None,
                          threads=backend.threads if isinstance(backend, OrtBackend) else None, loop=loop)
    finally:
        backend.close()


# -- naive ---------------------------------------------------------------------------------------------------
def naive(cfg: Config, model: Path, device: Literal["cpu", "cuda"], work: Path, max_frames: int,
          timeout: float) -> NaiveRun:
    from bench_pipeline_naive import run_naive

    endpoint = free_endpoint()
    sub_out, sub_log = work / f"naive-{cfg.name}.sub.json", work / f"naive-{cfg.name}.sub.log"
    sub = start_subscriber(endpoint, 1, sub_out, sub_log, timeout + 30, REPO)
    try:
        res = run_naive(cfg.clip, model, device, endpoint, max_frames=max_frames)
    except BaseException:
        sub.kill()
        raise
    try:
        sub.wait(timeout=60)
    except subprocess.TimeoutExpired:
        sub.kill()
    if not sub_out.is_file():
        return res
    d = json.loads(sub_out.read_text())
    return NaiveRun(res.frames, res.seconds, device, received=d["received"], missed=d["missed"],
                    latency_ms=Percentiles.of(d["latency_ms"]))


# -- the run -------------------------------------------------------------------------------------------------
def _device_of(backend_name: str) -> Literal["cpu", "cuda"]:
    return "cpu" if backend_name == "onnxruntime" else "cuda"


def _variant_specs(text: str) -> Iterator[tuple[str, str, dict[str, str]]]:
    """``CONFIG:VAR=VALUE[+VAR=VALUE]`` items → (spec, config name, variables)."""
    for spec in names(text):
        name, _, assigns = spec.partition(":")
        yield spec, name, dict(a.split("=", 1) for a in assigns.split("+") if "=" in a)


def run(args: argparse.Namespace) -> PipelineResult:
    if args.chart_from:
        doc = json.loads(args.chart_from.read_text())
        result = PipelineResult.from_dict(doc)
        _chart(result, args.chart or args.chart_from.with_suffix(".png"))
        return result
    import make_bench_media as mbm

    from streamer.backends.select import choose

    sections = set(pick(args.sections, SECTIONS, "sections"))
    backend_name = choose(args.backend).name
    device = _device_of(backend_name)
    gpu = device == "cuda"
    live_seconds = args.live_seconds if args.live_seconds is not None else (180.0 if gpu else 60.0)
    window = args.live_window if args.live_window is not None else (60.0 if gpu else 20.0)
    inputs = names(args.inputs)
    need = tuple(sorted(set(inputs) | ({args.live_input} if "live" in sections else set())))
    media = mbm.ensure_media(args.media_dir, need=need)
    concurrency = ints(args.concurrency) if args.concurrency else ([1, 4, 8, 16] if gpu else [1, 4])
    configs = _configs(inputs, concurrency, media)
    result = PipelineResult(
        machine=Machine.probe(VERSIONS), device=device, backend=backend_name, model=str(args.model),
        batch=args.batch, slots=args.slots, threads=args.threads,
        sections=tuple(s for s in SECTIONS if s in sections), media={k: str(v) for k, v in media.items()},
        goals=TARGETS)
    print(f"backend {backend_name} ({device}); model {args.model.name}; batch {args.batch}; inputs "
          f"{', '.join(c.name for c in configs)}; sections {', '.join(result.sections)}", flush=True)
    partial = args.json_out.with_suffix(".partial.json") if args.json_out else None
    failed: list[str] = []
    skipped: list[str] = []

    def checkpoint(**changes: object) -> None:
        """Record ``changes``; what is measured so far survives a run cut short (a time limit)."""
        nonlocal result
        result = result.replace(failed=tuple(failed), skipped=tuple(skipped), **changes)
        if partial is not None:
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps(result.to_dict(), indent=1, default=str))

    def streamer(label: str, sources: list[Path], expected: int | None, work: Path, *,
                 realtime: bool = False, max_frames: int = 0, env: dict[str, str] | None = None,
                 window_s: float = 0.0) -> StreamerRun:
        return run_streamer(model=args.model, backend=backend_name, batch=args.batch, slots=args.slots,
                            threads=args.threads, label=label, sources=sources, expected=expected, work=work,
                            cwd=REPO, timeout=args.run_timeout, realtime=realtime, max_frames=max_frames,
                            env=env, window_s=window_s)

    with work_dir(args.work_dir, "streamer-bench-pipeline-") as work:
        if "engine" in sections:
            print("engine-only ...", flush=True)
            try:
                checkpoint(engine=engine_only(args.model, backend_name, args.batch, args.slots, args.threads,
                                              args.engine_seconds))
            except Exception as exc:
                failed.append(f"engine-only: {type(exc).__name__}: {exc}")
                checkpoint()
        for cfg in configs:
            row = cfg.row()
            if "decode" in sections:
                print(f"{cfg.name}: decode-only ...", flush=True)
                best, other = decode_best(cfg, args.max_frames)
                row = row.replace(decode=best, decode_other=other)
            if "naive" in sections and cfg.count == 1:
                print(f"{cfg.name}: naive loop ...", flush=True)
                try:
                    row = row.replace(naive=naive(cfg, args.model, device, work, args.max_frames,
                                                  args.run_timeout))
                except Exception as exc:
                    failed.append(f"naive {cfg.name}: {type(exc).__name__}: {exc}")
            if "streamer" in sections:
                print(f"{cfg.name}: streamer ...", flush=True)
                s = streamer(f"streamer-{cfg.name}", cfg.sources, cfg.expected(args.max_frames), work,
                             max_frames=args.max_frames)
                row = row.replace(streamer=s)
                if not s.ok:
                    failed.append(f"streamer {cfg.name}: {s.failure()}")
            checkpoint(offline=(*result.offline, row))
        by_name = {c.name: c for c in configs}
        for n, (spec, name, env) in enumerate(_variant_specs(args.variants)):
            base = by_name.get(name)
            if base is None or not env:
                skipped.append(f"variant {spec!r}: no such input in this run, or no VAR=VALUE")
                continue
            label = f"{name} {' '.join(f'{k}={v}' for k, v in env.items())}"
            print(f"variant {label} ...", flush=True)
            with _env_vars(env):
                decode = decode_only(base, args.max_frames)
            with_env = None
            if "streamer" in sections:
                with_env = streamer(f"variant{n}-{name}", base.sources, base.expected(args.max_frames), work,
                                    max_frames=args.max_frames, env=env)
            checkpoint(variants=(*result.variants, Variant(label, name, env, decode, with_env)))
        if "live" in sections and live_seconds > 0:
            clip = media[args.live_input]
            info = mbm.probe(clip, count=False)
            playlist = mbm.live_playlist(clip, live_seconds, info.fps, info.frames)
            frames = max(1, round(live_seconds * info.fps))
            print(f"live: {playlist.name} at {info.fps:g} fps for {live_seconds:g} s ...", flush=True)
            s = streamer("live", [playlist], None, work, realtime=True, max_frames=frames, window_s=window)
            if s.rc != 0:
                failed.append(f"live: {s.failure()}")
            checkpoint(live=LiveRun(playlist.name, info.fps, live_seconds, window, s))
    checkpoint(machine=result.machine.finished())
    checkpoint(targets=tuple(targets(result)))
    print_tables(result)
    chart = args.chart or (args.json_out.with_suffix(".png") if args.json_out else None)
    if chart:
        skipped += _chart(result, chart)
        checkpoint()
    return result


def _chart(result: PipelineResult, path: Path) -> list[str]:
    """Draw the PNG; returns what was skipped (matplotlib missing)."""
    from bench_pipeline_chart import render

    try:
        render(result, path)
    except ImportError as exc:
        print(f"chart: skipped ({exc}; pip install 'streamer[bench]')")
        return [f"chart: {exc}"]
    print(f"chart: {path}")
    return []


if __name__ == "__main__":  # python tools/bench_pipeline.py ARGS == python tools/bench.py pipeline ARGS
    import bench

    sys.exit(bench.main(["pipeline", *sys.argv[1:]]))
