"""End-to-end figures, side by side in one run, on the same inputs (issue 5):

  decode-only  the sources alone: one thread per source reading every frame, as the pipeline runs them
  engine-only  the backend on pre-staged batches, through the executor the pipeline builds for it
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
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TOOLS = Path(__file__).resolve().parent

HELP = "end to end: decode-only, engine-only, naive loop, the streamer CLI + subscriber, live latency, RSS"

SECTIONS = ("decode", "engine", "naive", "streamer", "live")
TARGETS = {
    "streamer_vs_limit": 0.90,  # offline, one source: streamer / min(decode-only, engine-only)
    "streamer_vs_naive_1080p": 2.0,  # GPU host
    "aggregate_8x1080p_vs_decode": 0.80,  # GPU host
    "live_p99_ms": 10.0,  # GPU host
    "live_drift": 1.2,  # last window p99 / first window p99
    "rss_flat": 1.10,  # peak RSS after the 1,000th frame / RSS at it
}
HIST_EDGES_MS = [round(x, 3) for x in np.geomspace(0.1, 2000, 61).tolist()]
RSS_PERIOD_S = 0.1


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inputs", default="vtest,1080p", help="comma list of: vtest, 1080p (one source each)")
    p.add_argument("--concurrency", default=None,
                   help="N copies of the 1080p clip at once, comma list (default 1,4,8,16 on a GPU, 1,4 on "
                        "a CPU); N=1 is the 1080p input itself")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of: {', '.join(SECTIONS)}")
    p.add_argument("--backend", default="auto", help="as streamer --backend (auto: the fastest usable)")
    p.add_argument("--model", type=Path, default=REPO / "engines" / "shapes_cnn.onnx")
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
    p.add_argument("--live-input", default="1080p", choices=("1080p", "vtest"),
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


# -- helpers -------------------------------------------------------------------------------------------------
def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _pct(values: list[float] | np.ndarray) -> dict[str, float | None]:
    a = np.asarray(values, np.float64)
    a = a[np.isfinite(a)]
    if not a.size:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    p50, p95, p99 = np.percentile(a, (50, 95, 99))
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "p99": round(float(p99), 3),
            "max": round(float(a.max()), 3)}


def _hist(values: list[float]) -> dict[str, list[float]]:
    counts, _ = np.histogram(np.clip(np.asarray(values, np.float64), HIST_EDGES_MS[0], HIST_EDGES_MS[-1]),
                             bins=HIST_EDGES_MS)
    return {"edges_ms": HIST_EDGES_MS, "counts": counts.tolist()}


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


@contextlib.contextmanager
def _env_var(name: str, value: str | None) -> Any:
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _machine() -> dict[str, Any]:
    import platform

    import cv2
    import onnxruntime

    from streamer.cuda_env import gpu_info

    info: dict[str, Any] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                            "opencv": cv2.__version__, "onnxruntime": onnxruntime.__version__,
                            "loadavg_start": os.getloadavg()}
    with contextlib.suppress(Exception):
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        info["cpu_model"] = next(line.split(":", 1)[1].strip() for line in cpuinfo
                                 if line.startswith("model name"))
    with contextlib.suppress(Exception):
        gpu = gpu_info()
        if gpu:
            info["gpu"] = {"name": gpu.name, "compute_capability": gpu.cc_string,
                           "memory_gib": round(gpu.total_memory / 2**30, 1)}
    return info


# -- inputs --------------------------------------------------------------------------------------------------
class Config:
    """One offline input configuration: ``count`` copies of ``clip`` read at once."""

    def __init__(self, name: str, clip: Path, count: int, frames_each: int, fps: float) -> None:
        self.name, self.clip, self.count, self.frames_each, self.fps = name, clip, count, frames_each, fps

    @property
    def sources(self) -> list[Path]:
        return [self.clip] * self.count

    def expected(self, max_frames: int) -> int:
        each = min(self.frames_each, max_frames) if max_frames else self.frames_each
        return each * self.count


def _configs(args: argparse.Namespace, gpu: bool, media: dict[str, Path]) -> list[Config]:
    import make_bench_media as mbm

    inputs = [x.strip() for x in args.inputs.split(",") if x.strip()]
    conc = _ints(args.concurrency) if args.concurrency else ([1, 4, 8, 16] if gpu else [1, 4])
    out = []
    for key in inputs:
        if key not in ("vtest", "1080p"):
            raise SystemExit(f"unknown input {key!r}: use vtest, 1080p")
        info = mbm.probe(media[key], count=False)
        counts = [1] if key == "vtest" else sorted(set(conc))
        for n in counts:
            name = key if n == 1 else f"{n}x{key}"
            out.append(Config(name, media[key], n, info.frames, info.fps))
    return out


# -- decode-only ---------------------------------------------------------------------------------------------
def decode_only(cfg: Config, max_frames: int, pipeline_threads: bool = True) -> dict[str, Any]:
    """Every source on its own thread, reading through the product's FrameSource (decode + BGR frame).

    ``pipeline_threads``: with the pipeline's OpenCV threading (NativeThreads: decoder threads shared out
    among the sources); else with OpenCV/FFmpeg's defaults (one decoder thread per core for every capture)."""
    from streamer.preprocess import NativeThreads
    from streamer.sources import make_source, unique_names

    sources = [make_source(str(p)) for p in cfg.sources]
    unique_names(sources)
    native = NativeThreads(len(sources)).apply() if pipeline_threads else None
    try:
        return _read_all(sources, max_frames, native)
    finally:
        if native is not None:
            native.restore()


def _read_all(sources: list[Any], max_frames: int, native: Any) -> dict[str, Any]:
    for s in sources:
        s.open()
    counts = [0] * len(sources)
    ends: list[float] = [0.0] * len(sources)

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
    c0, t0 = _cpu_s(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    cpu = _cpu_s() - c0
    for s in sources:
        s.close()
    frames = sum(counts)
    return {"frames": frames, "seconds": round(elapsed, 4), "fps": frames / elapsed,
            "threading": "pipeline" if native is not None else "opencv-default",
            "decoder_threads": native.decoder_threads if native is not None else None,
            "per_source_fps": [round(c / (e - t0), 1) for c, e in zip(counts, ends, strict=True)],
            "cpu_ms_per_frame": round(1e3 * cpu / max(frames, 1), 4),
            "ms_per_frame_per_source": round(1e3 * elapsed * len(sources) / max(frames, 1), 4)}


# -- engine-only ---------------------------------------------------------------------------------------------
def engine_only(args: argparse.Namespace, backend_name: str, seconds: float) -> dict[str, Any]:
    """The backend through the executor the pipeline builds (same batch, slots, workers), fed pre-staged full
    batches that never change: no decoding, no resizing, nothing published."""
    from streamer.backends.select import open_backend
    from streamer.pipeline import make_executor

    backend = open_backend(args.model, backend_name, max_batch=args.batch, threads=args.threads)
    executor = make_executor(backend, args.batch, args.slots)
    b = args.batch
    h, w = backend.manifest.input_hw
    images = np.random.default_rng(0).integers(0, 256, (b, h, w, 3), dtype=np.uint8)
    for slot in executor.slots:
        slot.host_input[:b] = images
    stop = threading.Event()
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            while not stop.is_set():
                slot = executor.acquire(timeout=1.0)
                if slot is None:
                    continue
                slot.count = b
                executor.submit(slot)
        except BaseException as exc:
            errors.append(exc)

    def consume(n: int) -> None:
        for _ in range(n):
            slot = None
            while slot is None:
                if errors:
                    raise RuntimeError("engine-only producer failed") from errors[0]
                slot = executor.collect(timeout=1.0)
            if slot.error is not None:
                raise RuntimeError("engine-only batch failed") from slot.error
            executor.release(slot)

    producer = threading.Thread(target=produce, name="engine-producer", daemon=True)
    producer.start()
    try:
        consume(3 * len(executor.slots))  # warm-up
        c0, t0 = _cpu_s(), time.perf_counter()
        batches = 0
        while time.perf_counter() - t0 < seconds or batches < 5:
            consume(1)
            batches += 1
        elapsed = time.perf_counter() - t0
        cpu = _cpu_s() - c0
    finally:
        stop.set()
        producer.join(5.0)
        # drain what is in flight so the executor closes cleanly
        while executor.in_flight:
            slot = executor.collect(timeout=5.0)
            if slot is None:
                break
            executor.release(slot)
        executor.close()
        backend.close()
    images_n = batches * b
    return {"backend": backend.name, "engine_id": backend.engine_id, "batch": b,
            "slots": len(executor.slots), "workers": len(getattr(executor, "workers", [])) or None,
            "threads": getattr(backend, "threads", None), "images": images_n, "seconds": round(elapsed, 4),
            "images_per_s": images_n / elapsed, "ms_per_batch": round(1e3 * elapsed / batches, 4),
            "cpu_ms_per_image": round(1e3 * cpu / images_n, 4)}


# -- streamer (the CLI) + subscriber process -----------------------------------------------------------------
class RssSampler:
    """VmRSS and CPU time of a process every RSS_PERIOD_S, with wall-clock times, until it exits."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int]] = []  # (time.time(), kB)
        self.cpu: list[tuple[float, float]] = []  # (time.time(), CPU seconds so far)
        self.cpu_s: float | None = None  # at exit (wait4)
        self.thread_cpu: list[tuple[str, float]] = []  # (thread name, CPU s) at the last snapshot

    def sample(self) -> None:
        now = time.time()
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                self.samples.append((now, int(line.split()[1])))
                break
        fields = stat.rsplit(")", 1)[1].split()
        self.cpu.append((now, (int(fields[11]) + int(fields[12])) / self.TICK))  # utime + stime
        if len(self.cpu) % 10 == 1:
            self._threads()

    def _threads(self) -> None:
        """CPU seconds of every thread (which threads burn the CPU: decoders, pools, Python threads)."""
        rows = []
        for task in Path(f"/proc/{self.pid}/task").glob("*"):
            try:
                stat = (task / "stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat.rsplit(")", 1)[1].split()
            rows.append((name, (int(fields[11]) + int(fields[12])) / self.TICK))
        if rows:
            rows.sort(key=lambda r: -r[1])
            self.thread_cpu = rows

    def cpu_before(self, t: float) -> float | None:
        """CPU seconds at the last sample taken before ``t`` (start-up cost, to leave out)."""
        before = [c for ts, c in self.cpu if ts <= t]
        return before[-1] if before else None


def _subscriber(endpoint: str, sources: int, out: Path, log: Path, timeout: float) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, str(TOOLS / "bench_pipeline_sub.py"), "--endpoint", endpoint, "--sources",
           str(sources), "--out", str(out), "--timeout", str(timeout)]
    with open(log, "wb") as log_file:
        return subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=log_file, stderr=subprocess.STDOUT)


def _wait_child(proc: subprocess.Popen[bytes], sampler: RssSampler, timeout: float) -> int:
    """Wait for ``proc`` sampling its RSS; returns its exit status (124 after a timeout: it is killed)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            sampler.cpu_s = usage.ru_utime + usage.ru_stime
            return proc.returncode
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            return 124
        sampler.sample()
        time.sleep(RSS_PERIOD_S)  # a sampling period, not a synchronisation


def run_streamer(args: argparse.Namespace, backend_name: str, label: str, sources: list[Path],
                 expected: int | None, work: Path, *, realtime: bool = False, max_frames: int = 0,
                 env: dict[str, str] | None = None, window_s: float = 0.0) -> dict[str, Any]:
    endpoint = _free_endpoint()
    sub_out, summary = work / f"{label}.sub.json", work / f"{label}.summary.json"
    log_path, sub_log = work / f"{label}.log", work / f"{label}.sub.log"
    for f in (sub_out, summary):
        f.unlink(missing_ok=True)
    sub = _subscriber(endpoint, len(sources), sub_out, sub_log, args.run_timeout + 30)
    cmd = [sys.executable, "-m", "streamer.cli"]
    for src in sources:
        cmd += ["--source", str(src)]
    cmd += ["--model", str(args.model), "--backend", backend_name, "--bind", endpoint,
            "--wait-subscribers", "1", "--summary-json", str(summary), "--batch", str(args.batch),
            "--slots", str(args.slots), "--threads", str(args.threads), "--quiet", "--log-level", "info"]
    if realtime:
        cmd.append("--realtime")
    if max_frames:
        cmd += ["--max-frames", str(max_frames)]
    t_start = time.time()
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, cwd=REPO, env=_env(env), stdout=log_file, stderr=subprocess.STDOUT)
    sampler = RssSampler(proc.pid)
    rc = _wait_child(proc, sampler, args.run_timeout)
    try:
        sub_rc = sub.wait(timeout=60 if rc == 0 else 5)
    except subprocess.TimeoutExpired:
        sub.kill()
        sub_rc = sub.wait()
    out: dict[str, Any] = {"label": label, "sources": len(sources), "rc": rc, "subscriber_rc": sub_rc,
                           "command": " ".join(cmd[1:]), "env": env or {},
                           "wall_s": round(time.time() - t_start, 2)}
    if summary.is_file():
        s = json.loads(summary.read_text())
        keys = ("frames", "elapsed_s", "fps", "latency_ms", "dropped", "batches", "mean_batch", "backend",
                "model", "failed_batches")
        out["summary"] = {k: s.get(k) for k in keys}
        out["stages"] = (s.get("extra") or {}).get("stages")
        out["publisher"] = (s.get("extra") or {}).get("publisher")
    if rc != 0 or not sub_out.is_file():
        out["log_tail"] = log_path.read_text(errors="replace")[-3000:]
        out["sub_log_tail"] = sub_log.read_text(errors="replace")[-1000:]
        if not sub_out.is_file():
            return out
    d = json.loads(sub_out.read_text())
    received, unique = d["received"], d["unique"]
    capture = np.asarray(d["capture_ts"], np.float64)
    latency = np.asarray(d["latency_ms"], np.float64)
    out.update({
        "received": received, "unique": unique, "missed": d["missed"], "complete": d["complete"],
        "expected": expected, "lost": None if expected is None else expected - unique,
        "duplicates": sum(v["duplicates"] for v in d["per_source"].values()),
        "out_of_order": sum(v["out_of_order"] for v in d["per_source"].values()),
        "eos_frames": sum(v["frames"] for v in d["eos"].values()),
        "dropped_by_policy": sum(v["dropped"] for v in d["per_source"].values()),
        "latency_ms": _pct(latency), "recv_latency_ms": _pct(d["recv_latency_ms"]),
        "latency_hist": _hist(latency.tolist()),
    })
    if received:
        # delivered rate: first capture (the first frame decoded) → last prediction arrived at the subscriber
        span = d["t_last"] - float(capture.min())
        out["fps"] = received / span if span > 0 else 0.0
    out["rss"] = _rss_window(sampler.samples, d.get("t_checkpoint"), d.get("t_last"))
    if sampler.thread_cpu:
        cpu = [c for _, c in sampler.thread_cpu]
        top = [[n, round(c, 2)] for n, c in sampler.thread_cpu[:24]]
        out["threads"] = {"count": len(cpu), "top_cpu_s": top, "busy_over_0_5s": sum(c > 0.5 for c in cpu)}
    if sampler.cpu_s is not None and received:
        # CPU while streaming: from the last sample before the first frame was captured to the exit
        startup = sampler.cpu_before(float(capture.min())) or 0.0
        out["cpu_s"] = round(sampler.cpu_s, 3)
        out["startup_cpu_s"] = round(startup, 3)
        out["cpu_ms_per_frame"] = round(1e3 * (sampler.cpu_s - startup) / received, 4)
    if window_s > 0 and received:
        out["windows"] = _windows(capture, latency, window_s)
    return out


def _rss_window(samples: list[tuple[float, int]], t_from: float | None, t_to: float | None) -> dict[str, Any]:
    peak_all = max((kb for _, kb in samples), default=0)
    out: dict[str, Any] = {"samples": len(samples), "peak_mb": round(peak_all / 1024, 1)}
    if t_from is None or t_to is None:
        out["note"] = "fewer than 1,000 frames: no flatness window"
        return out
    window = [kb for t, kb in samples if t_from <= t <= t_to]
    if not window:
        out["note"] = "no RSS sample inside the window"
        return out
    base, peak = window[0], max(window)
    out.update({"at_checkpoint_mb": round(base / 1024, 1), "peak_after_mb": round(peak / 1024, 1),
                "ratio": round(peak / base, 4), "window_s": round(t_to - t_from, 1)})
    return out


def _windows(capture: np.ndarray, latency: np.ndarray, window_s: float) -> list[dict[str, Any]]:
    t0 = float(capture.min())
    idx = np.floor((capture - t0) / window_s).astype(int)
    rows = []
    for k in range(int(idx.max()) + 1):
        sel = latency[idx == k]
        if sel.size:
            rows.append({"window": k, "from_s": round(k * window_s, 1), "frames": int(sel.size), **_pct(sel)})
    return rows


# -- naive ---------------------------------------------------------------------------------------------------
def naive(args: argparse.Namespace, cfg: Config, device: str, work: Path) -> dict[str, Any]:
    from bench_pipeline_naive import run_naive

    endpoint = _free_endpoint()
    sub_out, sub_log = work / f"naive-{cfg.name}.sub.json", work / f"naive-{cfg.name}.sub.log"
    sub = _subscriber(endpoint, 1, sub_out, sub_log, args.run_timeout + 30)
    try:
        res = run_naive(cfg.clip, args.model, device, endpoint, max_frames=args.max_frames)
    except BaseException:
        sub.kill()
        raise
    try:
        sub.wait(timeout=60)
    except subprocess.TimeoutExpired:
        sub.kill()
    if sub_out.is_file():
        d = json.loads(sub_out.read_text())
        res.update({"received": d["received"], "missed": d["missed"],
                    "latency_ms": _pct(d["latency_ms"])})
    res["device"] = device
    return res


# -- targets and table ---------------------------------------------------------------------------------------
def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or not b else a / b


def _limit(*values: float | None) -> float | None:
    present = [v for v in values if v]
    return min(present) if present else None


def _target(name: str, description: str, value: float | None, goal: float, op: str,
            note: str = "", applies: bool = True) -> dict[str, Any]:
    met = None if value is None or not applies else (value >= goal if op == ">=" else value <= goal)
    return {"name": name, "description": description, "value": value, "goal": goal, "op": op, "met": met,
            "applies": applies, "note": note}


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    gpu = result["device"] == "cuda"
    rows = {r["config"]: r for r in result["offline"]}
    engine = (result.get("engine") or {}).get("images_per_s")
    out = []
    cores = result["machine"]["cpus"] or 1
    for name in ("vtest", "1080p"):
        r = rows.get(name)
        if not r:
            continue
        limit = _limit(r.get("decode_fps"), engine)
        note = ""
        dec_cpu = (r.get("decode") or {}).get("cpu_ms_per_frame")
        eng_cpu = (result.get("engine") or {}).get("cpu_ms_per_image")
        if not gpu and dec_cpu and eng_cpu:
            bound = 1e3 * cores / (dec_cpu + eng_cpu)
            r["cpu_bound_fps"] = bound
            note = (f"{cores} cores shared: decode {dec_cpu:.2f} + engine {eng_cpu:.2f} CPU-ms/frame → "
                    f"≤ {bound:.0f} fps; streamer/that bound = {_fmt(_ratio(r.get('streamer_fps'), bound))}")
        out.append(_target(f"streamer_vs_limit[{name}]", f"{name}: streamer / min(decode, engine)",
                           _ratio(r.get("streamer_fps"), limit), TARGETS["streamer_vs_limit"], ">=", note))
    r = rows.get("1080p")
    if r:
        out.append(_target("streamer_vs_naive[1080p]", "1080p: streamer / naive loop",
                           _ratio(r.get("streamer_fps"), r.get("naive_fps")),
                           TARGETS["streamer_vs_naive_1080p"], ">=",
                           "" if gpu else "GPU-host target (shown for reference)", applies=gpu))
    r = rows.get("8x1080p")
    if r:
        out.append(_target("aggregate_vs_decode[8x1080p]", "8×1080p: streamer / decode-only aggregate",
                           _ratio(r.get("streamer_fps"), r.get("decode_fps")),
                           TARGETS["aggregate_8x1080p_vs_decode"], ">=", "", applies=gpu))
    live = result.get("live")
    if live and live.get("windows"):
        w = live["windows"]
        out.append(_target("live_p99_ms", f"live: capture→publish p99 (ms, {live['frames_total']} frames)",
                           (live.get("latency_ms") or {}).get("p99"), TARGETS["live_p99_ms"], "<=",
                           "" if gpu else "GPU-host target (shown for reference)", applies=gpu))
        drift = _ratio(w[-1]["p99"], w[0]["p99"]) if len(w) > 1 else None
        out.append(_target("live_drift", f"live: last / first window p99 ({len(w)} windows)", drift,
                           TARGETS["live_drift"], "<="))
    runs = [r["streamer"] for r in result["offline"] if r.get("streamer")]
    if runs:
        lost = sum((s.get("lost") or 0) + (s.get("missed") or 0) for s in runs)
        bad = [s["label"] for s in runs if s.get("lost") is None or s.get("rc") != 0]
        out.append(_target("zero_lost", f"offline, subscriber first: messages lost ({len(runs)} runs)",
                           float(lost) if not bad else None, 0.0, "<=",
                           f"incomplete runs: {', '.join(bad)}" if bad else ""))
    rss_runs = [(live or {}).get("rss")] + [s.get("rss") for s in runs]
    rss = next((x for x in rss_runs if x and x.get("ratio") is not None), None)
    if rss:
        which = "live run" if live and rss is live.get("rss") else "offline run"
        out.append(_target("rss_flat", f"peak RSS after the 1,000th frame / RSS at it ({which})",
                           rss["ratio"], TARGETS["rss_flat"], "<=",
                           f"{rss['at_checkpoint_mb']} → {rss['peak_after_mb']} MB over {rss['window_s']} s"))
    return out


def _fmt(v: float | None, spec: str = ".2f") -> str:
    if v is None:
        width = spec.split(".")[0].lstrip(",")
        return "-".rjust(int(width)) if width.isdigit() else "-"
    return format(v, spec)


def print_tables(result: dict[str, Any]) -> None:
    eng = result.get("engine") or {}
    print(f"\n== offline throughput (frames/s; engine-only {_fmt(eng.get('images_per_s'), ',.0f')} img/s: "
          f"{eng.get('engine_id', '-')}, batch {eng.get('batch', '-')}) ==")
    hdr = (f"{'input':10} {'decode':>8} {'engine':>8} {'naive':>7} {'streamer':>9} {'/min':>6} {'/naive':>7} "
           f"{'/decode':>8} {'lost':>5} {'batch':>6} {'p50 ms':>8} {'p99 ms':>8}")
    print(hdr)
    for r in result["offline"]:
        s = r.get("streamer") or {}
        limit = _limit(r.get("decode_fps"), eng.get("images_per_s"))
        lat = s.get("latency_ms") or {}
        lost = s.get("lost")
        lost_s = "-" if lost is None else str(lost + (s.get("missed") or 0))
        print(f"{r['config']:10} {_fmt(r.get('decode_fps'), '8.0f')} {_fmt(eng.get('images_per_s'), '8.0f')} "
              f"{_fmt(r.get('naive_fps'), '7.0f')} {_fmt(r.get('streamer_fps'), '9.0f')} "
              f"{_fmt(_ratio(r.get('streamer_fps'), limit), '6.2f')} "
              f"{_fmt(_ratio(r.get('streamer_fps'), r.get('naive_fps')), '7.2f')} "
              f"{_fmt(_ratio(r.get('streamer_fps'), r.get('decode_fps')), '8.2f')} {lost_s:>5} "
              f"{_fmt((s.get('summary') or {}).get('mean_batch'), '6.1f')} {_fmt(lat.get('p50'), '8.1f')} "
              f"{_fmt(lat.get('p99'), '8.1f')}")
    print("\n== per-stage (ms per frame: decode = one source thread's wall time per frame in decode-only; "
          "resize/engine/results inside the streamer) ==")
    print(f"{'input':10} {'decode':>8} {'resize':>8} {'engine':>8} {'results':>8} {'cpu/frame':>10} "
          f"{'decode cpu':>10}")
    for r in result["offline"]:
        st = (r.get("streamer") or {}).get("stages") or {}
        print(f"{r['config']:10} {_fmt((r.get('decode') or {}).get('ms_per_frame_per_source'), '8.3f')} "
              f"{_fmt(st.get('resize_ms_per_frame'), '8.3f')} {_fmt(st.get('engine_ms_per_frame'), '8.3f')} "
              f"{_fmt(st.get('results_ms_per_frame'), '8.3f')} "
              f"{_fmt((r.get('streamer') or {}).get('cpu_ms_per_frame'), '10.3f')} "
              f"{_fmt((r.get('decode') or {}).get('cpu_ms_per_frame'), '10.3f')}")
    for v in result.get("variants", []):
        ratio = _ratio(v.get("streamer_fps"), v.get("decode_fps"))
        print(f"variant {v['label']}: decode {_fmt(v.get('decode_fps'), '.0f')} fps, streamer "
              f"{_fmt(v.get('streamer_fps'), '.0f')} fps (streamer/decode {_fmt(ratio)})")
    live = result.get("live")
    if live:
        print(f"\n== live: {live.get('source')} paced at {live.get('fps_paced')} fps for "
              f"{live.get('seconds')} s ({live.get('frames_total')} frames published, "
              f"{live.get('dropped_by_policy')} dropped as stale, {live.get('missed')} missed) ==")
        print(f"{'window':>8} {'frames':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for w in live.get("windows", []):
            print(f"{w['from_s']:7.0f}s {w['frames']:7d} {_fmt(w['p50'], '8.2f')} {_fmt(w['p95'], '8.2f')} "
                  f"{_fmt(w['p99'], '8.2f')} {_fmt(w['max'], '8.2f')}")
        lat = live.get("latency_ms") or {}
        print(f"{'all':>8} {live.get('frames_total', 0):7d} {_fmt(lat.get('p50'), '8.2f')} "
              f"{_fmt(lat.get('p95'), '8.2f')} {_fmt(lat.get('p99'), '8.2f')} {_fmt(lat.get('max'), '8.2f')}"
              f"   (capture→receive p99 {_fmt((live.get('recv_latency_ms') or {}).get('p99'), '.2f')} ms)")
    print("\n== targets (issue 5), ratios from this run ==")
    for t in result["targets"]:
        verdict = {True: "MET", False: "MISSED", None: "n/a" if t["applies"] else "info"}[t["met"]]
        print(f"{t['description']:58} {_fmt(t['value'], '8.2f')} (goal {t['op']} {t['goal']:g}) "
              f"{verdict:7} {t['note']}")
    for title in ("skipped", "failed"):
        for line in result.get(title, []):
            print(f"{title}: {line}")


# -- the run -------------------------------------------------------------------------------------------------
def _device_of(backend_name: str) -> str:
    return "cpu" if backend_name == "onnxruntime" else "cuda"


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.chart_from:
        result = json.loads(args.chart_from.read_text())
        chart = args.chart or args.chart_from.with_suffix(".png")
        _chart(result, chart)
        return {"chart_from": str(args.chart_from)}
    sys.path.insert(0, str(TOOLS))
    import make_bench_media as mbm

    from streamer.backends.select import choose

    sections = {x.strip() for x in args.sections.split(",") if x.strip()}
    unknown = sections - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections: {', '.join(sorted(unknown))}")
    backend_name = choose(args.backend).name
    device = _device_of(backend_name)
    gpu = device == "cuda"
    live_seconds = args.live_seconds if args.live_seconds is not None else (180.0 if gpu else 60.0)
    window = args.live_window if args.live_window is not None else (60.0 if gpu else 20.0)
    inputs = {x.strip() for x in args.inputs.split(",") if x.strip()}
    need = tuple(sorted(inputs | ({args.live_input} if "live" in sections else set())))
    media = mbm.ensure_media(args.media_dir, need=need)
    configs = _configs(args, gpu, media)
    result: dict[str, Any] = {
        "machine": _machine(), "device": device, "backend": backend_name, "model": str(args.model),
        "batch": args.batch, "slots": args.slots, "threads": args.threads, "sections": sorted(sections),
        "media": {k: str(v) for k, v in media.items()}, "offline": [], "variants": [], "skipped": [],
        "failed": [], "targets_goals": TARGETS,
    }
    print(f"backend {backend_name} ({device}); model {args.model.name}; batch {args.batch}; inputs "
          f"{', '.join(c.name for c in configs)}; sections {', '.join(s for s in SECTIONS if s in sections)}",
          flush=True)
    partial = args.json_out.with_suffix(".partial.json") if args.json_out else None

    def checkpoint() -> None:  # what is measured so far survives a run cut short (a time limit)
        if partial is not None:
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps(result, indent=1, default=str))

    work_ctx = (contextlib.nullcontext(args.work_dir) if args.work_dir
                else tempfile.TemporaryDirectory(prefix="streamer-bench-pipeline-"))
    with work_ctx as work_dir:
        work = Path(work_dir)
        work.mkdir(parents=True, exist_ok=True)
        if "engine" in sections:
            print("engine-only ...", flush=True)
            try:
                result["engine"] = engine_only(args, backend_name, args.engine_seconds)
            except Exception as exc:
                result["failed"].append(f"engine-only: {type(exc).__name__}: {exc}")
            checkpoint()
        for cfg in configs:
            row: dict[str, Any] = {"config": cfg.name, "clip": str(cfg.clip), "sources": cfg.count,
                                   "frames_each": cfg.frames_each}
            result["offline"].append(row)
            if "decode" in sections:
                print(f"{cfg.name}: decode-only ...", flush=True)
                # the better of: the pipeline's threading, OpenCV's defaults (the limit must not be lowered)
                a = decode_only(cfg, args.max_frames, pipeline_threads=True)
                b = decode_only(cfg, args.max_frames, pipeline_threads=False)
                row["decode"], row["decode_other"] = (a, b) if a["fps"] >= b["fps"] else (b, a)
                row["decode_fps"] = row["decode"]["fps"]
            if "naive" in sections and cfg.count == 1:
                print(f"{cfg.name}: naive loop ...", flush=True)
                try:
                    row["naive"] = naive(args, cfg, device, work)
                    row["naive_fps"] = row["naive"]["fps"]
                except Exception as exc:
                    result["failed"].append(f"naive {cfg.name}: {type(exc).__name__}: {exc}")
            if "streamer" in sections:
                print(f"{cfg.name}: streamer ...", flush=True)
                s = run_streamer(args, backend_name, f"streamer-{cfg.name}", cfg.sources,
                                 cfg.expected(args.max_frames), work, max_frames=args.max_frames)
                row["streamer"] = s
                row["streamer_fps"] = s.get("fps")
                if s["rc"] != 0 or s.get("fps") is None:
                    result["failed"].append(f"streamer {cfg.name}: exit {s['rc']}: "
                                            f"{(s.get('log_tail') or '')[-600:]}")
            checkpoint()
        by_name = {c.name: c for c in configs}
        for n, spec in enumerate(x.strip() for x in args.variants.split(",") if x.strip()):
            name, _, assigns = spec.partition(":")
            cfg = by_name.get(name)
            env = dict(a.split("=", 1) for a in assigns.split("+") if "=" in a)
            if cfg is None or not env:
                result["skipped"].append(f"variant {spec!r}: no such input in this run, or no VAR=VALUE")
                continue
            label = f"{name} {' '.join(f'{k}={v}' for k, v in env.items())}"
            print(f"variant {label} ...", flush=True)
            v: dict[str, Any] = {"label": label, "config": name, "env": env}
            with contextlib.ExitStack() as stack:
                for key, value in env.items():
                    stack.enter_context(_env_var(key, value))
                v["decode"] = decode_only(cfg, args.max_frames)
            v["decode_fps"] = v["decode"]["fps"]
            if "streamer" in sections:
                s = run_streamer(args, backend_name, f"variant{n}-{name}", cfg.sources,
                                 cfg.expected(args.max_frames), work, max_frames=args.max_frames, env=env)
                keys = ("fps", "lost", "missed", "rc", "summary", "stages", "cpu_ms_per_frame", "threads",
                        "rss")
                v["streamer"] = {key: s.get(key) for key in keys}
                v["streamer_fps"] = s.get("fps")
            result["variants"].append(v)
            checkpoint()
        if "live" in sections and live_seconds > 0:
            clip = media[args.live_input]
            info = mbm.probe(clip, count=False)
            playlist = mbm.live_playlist(clip, live_seconds, info.fps, info.frames)
            frames = max(1, round(live_seconds * info.fps))
            print(f"live: {playlist.name} at {info.fps:g} fps for {live_seconds:g} s ...", flush=True)
            s = run_streamer(args, backend_name, "live", [playlist], None, work, realtime=True,
                             max_frames=frames, window_s=window)
            s.update({"source": playlist.name, "fps_paced": info.fps, "seconds": live_seconds,
                      "window_s": window, "frames_total": s.get("received")})
            result["live"] = s
            if s["rc"] != 0:
                result["failed"].append(f"live: exit {s['rc']}: {(s.get('log_tail') or '')[-600:]}")
    result["machine"]["loadavg_end"] = os.getloadavg()
    result["targets"] = targets(result)
    checkpoint()
    print_tables(result)
    chart = args.chart or (args.json_out.with_suffix(".png") if args.json_out else None)
    if chart:
        _chart(result, chart)
    return result


def _chart(result: dict[str, Any], path: Path) -> None:
    try:
        from bench_pipeline_chart import render
    except ImportError:
        sys.path.insert(0, str(TOOLS))
        from bench_pipeline_chart import render
    try:
        render(result, path)
    except ImportError as exc:
        print(f"chart: skipped ({exc}; pip install 'streamer[bench]')")
        result.setdefault("skipped", []).append(f"chart: {exc}")
        return
    print(f"chart: {path}")


if __name__ == "__main__":  # python tools/bench_pipeline.py ARGS == python tools/bench.py pipeline ARGS
    sys.path.insert(0, str(TOOLS))
    import bench

    sys.exit(bench.main(["pipeline", *sys.argv[1:]]))
