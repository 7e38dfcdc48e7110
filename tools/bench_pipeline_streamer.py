"""The streamer CLI as a subprocess, publishing over ZeroMQ to a subscriber process that counts every message,
its RSS and CPU sampled while it runs: one :class:`~bench_pipeline_records.StreamerRun` per call."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from bench_pipeline_records import (
    CliSummary,
    Delivery,
    Histogram,
    Percentiles,
    RssWindow,
    Stages,
    StreamerRun,
    ThreadCpu,
    Window,
)

TOOLS = Path(__file__).resolve().parent
RSS_PERIOD_S = 0.1
TICK = os.sysconf("SC_CLK_TCK")
SUMMARY_KEYS = ("frames", "elapsed_s", "fps", "latency_ms", "dropped", "batches", "mean_batch", "backend",
                "model", "failed_batches")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


def stat_cpu(stat: str) -> float:
    """CPU seconds (user + system) in the text of a ``/proc/<pid>/stat`` (or of a thread's, under task/)."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far; 0 when it is gone."""
    try:
        return stat_cpu(Path(f"/proc/{pid}/stat").read_text())
    except OSError:
        return 0.0


def wait_child(proc: subprocess.Popen[bytes], deadline: float, tick: Callable[[], None] = lambda: None,
               period: float = 0.05) -> tuple[int, float] | None:
    """Wait for ``proc`` until ``deadline`` (``time.monotonic()``), calling ``tick`` every ``period`` s
    meanwhile: (its exit status, the CPU seconds it used in all); None after the deadline (it is killed)."""
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            return None
        tick()
        time.sleep(period)  # a polling (and sampling) period, not a synchronisation


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


def start_subscriber(endpoint: str, sources: int, out: Path, log: Path, timeout: float,
                     cwd: Path) -> subprocess.Popen[bytes]:
    """The subscriber process (tools/bench_pipeline_sub.py), writing what it counted to ``out``."""
    cmd = [sys.executable, str(TOOLS / "bench_pipeline_sub.py"), "--endpoint", endpoint, "--sources",
           str(sources), "--out", str(out), "--timeout", str(timeout)]
    with open(log, "wb") as log_file:
        return subprocess.Popen(cmd, cwd=cwd, env=child_env(), stdout=log_file, stderr=subprocess.STDOUT)


class RssSampler:
    """VmRSS and CPU time of a process every RSS_PERIOD_S, with wall-clock times, until it exits.

    Wall-clock (``time.time()``) because the samples are matched against the subscriber's arrival times,
    which another process stamped."""

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
        except OSError:  # the process just exited
            return
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                self.samples.append((now, int(line.split()[1])))
                break
        self.cpu.append((now, stat_cpu(stat)))
        if len(self.cpu) % 10 == 1:
            self._threads()

    def _threads(self) -> None:
        """CPU seconds of every thread (which threads burn the CPU: decoders, pools, Python threads)."""
        rows = []
        for task in Path(f"/proc/{self.pid}/task").glob("*"):
            try:
                stat = (task / "stat").read_text()
            except OSError:  # the thread just ended
                continue
            rows.append((stat[stat.index("(") + 1:stat.rindex(")")], stat_cpu(stat)))
        if rows:
            rows.sort(key=lambda r: -r[1])
            self.thread_cpu = rows

    def cpu_before(self, t: float) -> float | None:
        """CPU seconds at the last sample taken before ``t`` (start-up cost, to leave out)."""
        before = [c for ts, c in self.cpu if ts <= t]
        return before[-1] if before else None

    def threads(self) -> ThreadCpu | None:
        if not self.thread_cpu:
            return None
        cpu = [c for _, c in self.thread_cpu]
        return ThreadCpu(len(cpu), tuple((n, round(c, 2)) for n, c in self.thread_cpu[:24]),
                         sum(c > 0.5 for c in cpu))


def _wait_child(proc: subprocess.Popen[bytes], sampler: RssSampler, timeout: float) -> int:
    """Wait for ``proc`` sampling its RSS; returns its exit status (124 after a timeout: it is killed)."""
    done = wait_child(proc, time.monotonic() + timeout, sampler.sample, RSS_PERIOD_S)
    if done is None:
        return 124
    rc, sampler.cpu_s = done
    return rc


def run_streamer(*, model: Path, backend: str, batch: int, slots: int, threads: int, label: str,
                 sources: Sequence[Path | str], expected: int | None, work: Path, cwd: Path, timeout: float,
                 realtime: bool = False, max_frames: int = 0, env: dict[str, str] | None = None,
                 window_s: float = 0.0, extra_args: Sequence[str] = ()) -> StreamerRun:
    """``extra_args``: more streamer flags (e.g. ``--decode nvdec``)."""
    endpoint = free_endpoint()
    sub_out, summary = work / f"{label}.sub.json", work / f"{label}.summary.json"
    log_path, sub_log = work / f"{label}.log", work / f"{label}.sub.log"
    for f in (sub_out, summary):
        f.unlink(missing_ok=True)
    sub = start_subscriber(endpoint, len(sources), sub_out, sub_log, timeout + 30, cwd)
    cmd = [sys.executable, "-m", "streamer.cli"]
    for src in sources:
        cmd += ["--source", str(src)]
    cmd += ["--model", str(model), "--backend", backend, "--bind", endpoint,
            "--wait-subscribers", "1", "--summary-json", str(summary), "--batch", str(batch),
            "--slots", str(slots), "--threads", str(threads), "--quiet", "--log-level", "info"]
    if realtime:
        cmd.append("--realtime")
    if max_frames:
        cmd += ["--max-frames", str(max_frames)]
    cmd += list(extra_args)
    t_start = time.monotonic()
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, cwd=cwd, env=child_env(env), stdout=log_file, stderr=subprocess.STDOUT)
    sampler = RssSampler(proc.pid)
    rc = _wait_child(proc, sampler, timeout)
    try:
        sub_rc: int | None = sub.wait(timeout=60 if rc == 0 else 5)
    except subprocess.TimeoutExpired:
        sub.kill()
        sub_rc = sub.wait()
    fields: dict[str, Any] = {"label": label, "sources": len(sources), "command": " ".join(cmd[1:]),
                              "env": env or {}, "rc": rc, "subscriber_rc": sub_rc,
                              "wall_s": round(time.monotonic() - t_start, 2), "expected": expected}
    if summary.is_file():
        s = json.loads(summary.read_text())
        extra = s.get("extra") or {}
        fields["summary"] = CliSummary.from_dict({k: s[k] for k in SUMMARY_KEYS if k in s})
        fields["stages"] = Stages.from_dict(extra["stages"]) if extra.get("stages") else None
        fields["publisher"] = extra.get("publisher")
    if rc != 0 or not sub_out.is_file():
        fields["log_tail"] = log_path.read_text(errors="replace")[-3000:]
        fields["sub_log_tail"] = sub_log.read_text(errors="replace")[-1000:]
    if not sub_out.is_file():
        return StreamerRun(**fields)
    d = json.loads(sub_out.read_text())
    capture = np.asarray(d["capture_ts"], np.float64)
    latency = np.asarray(d["latency_ms"], np.float64)
    received = int(d["received"])
    per_source = d["per_source"].values()
    fps = None
    if received:
        # delivered rate: first capture (the first frame decoded) → last prediction arrived at the subscriber
        span = d["t_last"] - float(capture.min())
        fps = received / span if span > 0 else 0.0
    fields["delivery"] = Delivery(
        received=received, unique=int(d["unique"]), missed=int(d["missed"]), complete=bool(d["complete"]),
        duplicates=sum(v["duplicates"] for v in per_source),
        out_of_order=sum(v["out_of_order"] for v in per_source),
        eos_frames=sum(v["frames"] for v in d["eos"].values()),
        dropped_by_policy=sum(v["dropped"] for v in per_source),
        latency_ms=Percentiles.of(latency), recv_latency_ms=Percentiles.of(d["recv_latency_ms"]),
        latency_hist=Histogram.of(latency), fps=fps,
        windows=windows(capture, latency, window_s) if window_s > 0 and received else ())
    fields["rss"] = rss_window(sampler.samples, d.get("t_checkpoint"), d.get("t_last"))
    fields["threads"] = sampler.threads()
    if sampler.cpu_s is not None and received:
        # CPU while streaming: from the last sample before the first frame was captured to the exit
        startup = sampler.cpu_before(float(capture.min())) or 0.0
        fields["cpu_s"] = round(sampler.cpu_s, 3)
        fields["startup_cpu_s"] = round(startup, 3)
        fields["cpu_ms_per_frame"] = round(1e3 * (sampler.cpu_s - startup) / received, 4)
    return StreamerRun(**fields)


def rss_window(samples: list[tuple[float, int]], t_from: float | None, t_to: float | None) -> RssWindow:
    peak_mb = round(max((kb for _, kb in samples), default=0) / 1024, 1)
    if t_from is None or t_to is None:
        return RssWindow(len(samples), peak_mb, note="fewer than 1,000 frames: no flatness window")
    window = [kb for t, kb in samples if t_from <= t <= t_to]
    if not window:
        return RssWindow(len(samples), peak_mb, note="no RSS sample inside the window")
    base, peak = window[0], max(window)
    return RssWindow(len(samples), peak_mb, at_checkpoint_mb=round(base / 1024, 1),
                     peak_after_mb=round(peak / 1024, 1), ratio=round(peak / base, 4),
                     window_s=round(t_to - t_from, 1))


def windows(capture: np.ndarray, latency: np.ndarray, window_s: float) -> tuple[Window, ...]:
    t0 = float(capture.min())
    idx = np.floor((capture - t0) / window_s).astype(int)
    rows = []
    for k in range(int(idx.max()) + 1):
        sel = latency[idx == k]
        if sel.size:
            rows.append(Window(k, round(k * window_s, 1), int(sel.size), Percentiles.of(sel)))
    return tuple(rows)
