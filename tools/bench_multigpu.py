"""Two GPUs vs one (issue 15), side by side in one run: plain ``streamer`` processes, no Ray.

  one GPU    ``streamer --device cuda:0`` over all --sources copies of the clip
  two GPUs   ``streamer --device cuda:0`` over the first half and ``--device cuda:1`` over the second, at
             the same time (as ``--workers 2`` would shard them: source i → process i mod 2)

Each run writes every prediction to ``--output`` and a summary; every (source, frame) must be there exactly
once (checked against the clip's frame count). Aggregate frames/s = all frames / the longest process's own
elapsed time (start-up excluded: model load and CUDA graphs are per process and paid once), and, for
reference, over the wall time of the whole command (start-up included). --rounds interleaved rounds; the
median goes into the ratio (target ≥ 1.8 on a decode-bound 8-source 1080p load with NVDEC).

    python tools/bench.py multigpu --json-out out/multigpu.json          # needs 2 visible GPUs
    bash tools/gpu_multi.sh                                               # the same on the GPU host
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import make_bench_media as mbm
import numpy as np
from bench_common import Machine, Record, Target, fmt, ratio, work_dir

REPO = Path(__file__).resolve().parents[1]
HELP = "two GPUs vs one: two plain streamer processes (--device cuda:0 / cuda:1) over an 8-source load"
TARGET = 1.8


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clip", type=Path, default=REPO / "media" / "vtest_1080p.mp4",
                   help="the clip each source plays (tools/make_bench_media.py makes it)")
    p.add_argument("--loops", type=int, default=3,
                   help="play the clip this many times per source (a longer file made with ffmpeg "
                        "-stream_loop when ffmpeg is here; else the clip as it is)")
    p.add_argument("--sources", type=int, default=8, help="sources in all (each a copy of the clip)")
    p.add_argument("--decode", default="nvdec", choices=("nvdec", "cpu", "auto"), help="streamer --decode")
    p.add_argument("--devices", default="cuda:0,cuda:1",
                   help="the two processes' --device (the one-process run uses the first); cpu,cpu tries the "
                        "script out on a machine without GPUs")
    p.add_argument("--backend", default="auto", help="streamer --backend")
    p.add_argument("--batch", type=int, default=32, help="streamer --batch")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds of one GPU / two GPUs")
    p.add_argument("--work-dir", type=Path, default=None, help="outputs and logs (default: a temporary one)")
    p.add_argument("--run-timeout", type=float, default=300.0, help="seconds allowed per streamer process")


@dataclass(frozen=True)
class Process(Record):
    device: str
    sources: int
    frames: int
    elapsed_s: float  # the process's own streaming time (its summary)
    fps: float
    backend: str
    decoders: tuple[str, ...]  # where each source was decoded (cpu / nvdec)
    exactly_once: bool


@dataclass(frozen=True)
class Run(Record):
    way: str  # one | two
    round: int
    processes: tuple[Process, ...]
    wall_s: float  # the whole command: start-up included

    DERIVED: ClassVar[tuple[str, ...]] = ("frames", "fps", "wall_fps")

    @property
    def frames(self) -> int:
        return sum(p.frames for p in self.processes)

    @property
    def fps(self) -> float:
        longest = max(p.elapsed_s for p in self.processes)
        return self.frames / longest if longest else 0.0

    @property
    def wall_fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s else 0.0


@dataclass(frozen=True)
class MultiGpuReport(Record):
    machine: Machine
    clip: str
    clip_frames: int
    sources: int
    decode: str
    runs: tuple[Run, ...]
    targets: tuple[Target, ...]


def _gpus() -> int:
    from streamer.devices import visible_gpus

    return len(visible_gpus() or [])


def _looped(clip: Path, loops: int, work: Path) -> Path:
    """The clip ``loops`` times over, beside it (tools/gpu_multi.sh looks for it there) or in ``work`` when
    that folder is read-only; the clip itself, said so, without ffmpeg."""
    folder = clip.parent if os.access(clip.parent, os.W_OK) else work
    try:
        return mbm.looped_clip(clip, loops, folder)
    except mbm.MediaError as exc:
        if shutil.which("ffmpeg") is not None:
            raise
        print(f"  {exc}: playing {clip.name} once per source", flush=True)
        return clip


def _streamer(device: str, specs: list[str], out: Path, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "streamer.cli", "--device", device, "--decode", args.decode, "--backend",
           args.backend, "--batch", str(args.batch), "--bind", "none", "--quiet",
           "--output", str(out.with_suffix(".jsonl")), "--summary-json", str(out.with_suffix(".json"))]
    for spec in specs:
        cmd += ["--source", spec]
    log = open(out.with_suffix(".log"), "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _check(out: Path, device: str, names: list[str], clip_frames: int) -> Process:
    summary = json.loads(out.with_suffix(".json").read_text())
    seen: dict[str, set[int]] = {n: set() for n in names}
    lines = 0
    with open(out.with_suffix(".jsonl")) as f:
        for line in f:
            d = json.loads(line)
            seen.setdefault(d["source"], set()).add(d["frame"])
            lines += 1
    every = set(range(clip_frames))
    once = lines == sum(len(v) for v in seen.values()) and all(v == every for v in seen.values())
    decode = summary.get("extra", {}).get("decode", {})
    decoders = tuple(info.get("decoder", "cpu") for info in decode.values())
    return Process(device, len(names), summary["frames"], summary["elapsed_s"], summary["fps"],
                   summary["backend"], decoders, once)


def _run(way: str, rnd: int, files: list[Path], clip_frames: int, work: Path,
         args: argparse.Namespace) -> Run:
    groups = [files] if way == "one" else [files[0::2], files[1::2]]
    outs = [work / f"{way}{rnd}-{i}" for i in range(len(groups))]
    t0 = time.monotonic()
    devices = args.devices.split(",")
    procs = [_streamer(devices[i], [str(f) for f in group], out, args)
             for i, (group, out) in enumerate(zip(groups, outs, strict=True))]
    for proc, out in zip(procs, outs, strict=True):
        try:
            rc = proc.wait(args.run_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise RuntimeError(f"{out.name}: still running after {args.run_timeout:.0f} s") from None
        if rc != 0:
            tail = out.with_suffix(".log").read_text(errors="replace")[-1500:]
            raise RuntimeError(f"{out.name}: exit {rc}\n{tail}")
    wall = time.monotonic() - t0
    processes = tuple(_check(out, devices[i], [f.stem for f in group], clip_frames)
                      for i, (group, out) in enumerate(zip(groups, outs, strict=True)))
    run = Run(way, rnd, processes, round(wall, 2))
    decoders = sorted({d for p in processes for d in p.decoders})
    print(f"  round {rnd} {way} GPU{'s' if way == 'two' else ''}: {run.frames} frames, {run.fps:8.1f} "
          f"frames/s ({run.wall_fps:.1f} over {run.wall_s:.1f} s with start-up); exactly once: "
          f"{all(p.exactly_once for p in processes)}; decoders {decoders}", flush=True)
    return run


def run(args: argparse.Namespace) -> MultiGpuReport:
    gpus = _gpus()
    devices = args.devices.split(",")
    if len(devices) != 2:
        raise SystemExit(f"multigpu: --devices {args.devices}: give two, e.g. cuda:0,cuda:1")
    if any(d.startswith("cuda") for d in devices) and gpus < 2:
        raise SystemExit(f"multigpu: {gpus} GPU(s) visible; this comparison needs 2 (CUDA_VISIBLE_DEVICES)")
    if not args.clip.exists():
        raise SystemExit(f"multigpu: no clip {args.clip} (python tools/make_bench_media.py makes it)")
    machine = Machine.probe(("torch", "pycuda", "PyNvVideoCodec", "cv2"))
    with work_dir(args.work_dir, "bench-multigpu-") as work:
        clip = _looped(args.clip, args.loops, work)
        clip_frames = mbm.probe(clip).frames
        files = []
        for i in range(args.sources):  # distinct names: topics and output lines name their source
            link = work / f"src{i}{clip.suffix}"
            if not link.exists():
                link.symlink_to(clip.resolve())
            files.append(link)
        print(f"multigpu: {args.sources} × {clip.name} ({clip_frames} frames), --decode {args.decode}, "
              f"{gpus} GPUs visible", flush=True)
        runs = []
        for rnd in range(1, args.rounds + 1):
            for way in ("one", "two"):
                runs.append(_run(way, rnd, files, clip_frames, work, args))
    one = float(np.median([r.fps for r in runs if r.way == "one"]))
    two = float(np.median([r.fps for r in runs if r.way == "two"]))
    once = all(p.exactly_once for r in runs for p in r.processes)
    note = f"{args.sources}-source 1080p load, --decode {args.decode}"
    targets = (Target("two_vs_one_gpu", "aggregate frames/s, two GPUs (two processes) / one GPU",
                      ratio(two, one), TARGET, note=note),
               Target("exactly_once", "every (source, frame) once in every output (1 = yes)", float(once),
                      1.0))
    print(f"\n  one GPU {fmt(one, '8.1f')} frames/s   two GPUs {fmt(two, '8.1f')} frames/s   "
          f"ratio {fmt(ratio(two, one), '.2f')} (target ≥ {TARGET})   exactly once: {once}")
    return MultiGpuReport(machine.finished(), str(clip), clip_frames, args.sources, args.decode, tuple(runs),
                          targets)
