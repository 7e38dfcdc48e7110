"""Offline frames/s with ``--annotate`` and with the preview page watched, against the same run without them,
side by side in one run (issue 13). Each variant is the real ``streamer`` command on the same clip,
publishing to a ZeroMQ subscriber in this process that counts every prediction; the variants run
interleaved, ``--rounds`` times (the order rotates each round), and the median of each goes into the ratios:

  plain            no viewer at all (no --http, no tap in the batcher)
  preview-idle     --http --preview, nobody watching (the tap is there and takes nothing)
  preview-http     --http --preview, a plain HTTP client (urllib: tools/preview_client.py) reading the page's
                   stream (/preview/feed) for the whole run: every JPEG, as a browser would, without drawing
  preview-browser  --http --preview, a headless Chromium showing the page for the whole run (skipped, and
                   said so, where there is no Chromium: the GPU host; preview-http is the measure there)
  annotate         --annotate FILE: every frame drawn on and encoded (lossless: the run waits for the encoder)

Target: the preview open costs at most 5% of the frames/s (preview-http and preview-browser ≥ 0.95 × plain).
On this 2-core machine Chromium itself shares the two cores with the streamer; on a real deployment the
browser is elsewhere, which preview-http measures.

    python tools/bench.py view --json-out out/view.json                  # CPU: 1080p clip, 3 rounds (~3 min)
    python tools/bench.py view --repeat 4 --json-out out/view.json       # GPU host: the clip 4 times over
    bash tools/gpu_view.sh                                               # the GPU host, in one command
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import make_bench_media as mbm
from bench_common import Machine, Record, Target, fmt, pick, ratio, work_dir
from bench_pipeline_streamer import free_port, process_cpu, wait_child

REPO = Path(__file__).resolve().parents[1]
HELP = "offline fps with --annotate and with the --preview page watched vs without, side by side"
VARIANTS = ("plain", "preview-idle", "preview-http", "preview-browser", "annotate")
WATCHED = ("preview-http", "preview-browser")
GOAL = 0.95  # preview open: at most 5% fewer frames/s
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1000,700")
VERSIONS = ("numpy", "cv2", "onnxruntime", "torch", "zmq")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clip", type=Path, default=None,
                   help="the clip (default: media/vtest_1080p.mp4, made by tools/make_bench_media.py)")
    p.add_argument("--repeat", type=int, default=1,
                   help="play the clip this many times over (one file, stream-copied with ffmpeg): a longer "
                        "run where the machine is fast")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of: {', '.join(VARIANTS)}")
    p.add_argument("--rounds", type=int, default=3, help="interleaved runs of every variant")
    p.add_argument("--model", type=Path, default=None, help="streamer --model (default: the bundled one)")
    p.add_argument("--backend", default="auto", help="streamer --backend")
    p.add_argument("--batch", type=int, default=16, help="streamer --batch")
    p.add_argument("--preview-fps", type=float, default=None,
                   help="[control] preview_fps of the preview runs (default: the streamer's default)")
    p.add_argument("--media-dir", type=Path, default=REPO / "media")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="logs, summaries, the long clip (default: a temporary folder)")
    p.add_argument("--run-timeout", type=float, default=300.0, help="seconds allowed per streamer run")


# -- records -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ViewRun(Record):
    """One streamer run."""

    variant: str
    round: int
    fps: float  # the run's summary: frames / seconds from the first frame read to the last published
    frames: int
    elapsed_s: float
    received: int  # predictions the subscriber got
    jpegs: int = 0  # preview frames the watcher got while the run went on (0 unwatched)
    annotated: int = 0  # frames in the annotated video
    cpu_s: float = 0.0  # CPU seconds of the streamer process from its first frame to its exit
    client_cpu_s: float = 0.0  # CPU seconds of the preview's client meanwhile (Chromium's processes, or the
    #                            urllib reader's thread)

    DERIVED: ClassVar[tuple[str, ...]] = ("cpu_ms_per_frame",)

    @property
    def cpu_ms_per_frame(self) -> float:
        """What a frame costs this machine: the streamer's CPU and the preview client's, per frame."""
        return round(1e3 * (self.cpu_s + self.client_cpu_s) / self.frames, 3) if self.frames else 0.0

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}")
        if self.fps < 0 or self.frames < 0 or self.received < 0:
            raise ValueError("negative figures")


@dataclass(frozen=True)
class ViewResult(Record):
    machine: Machine
    clip: str
    clip_frames: int
    backend: str = ""
    preview_fps: float | None = None  # None: the streamer's default
    rounds: int = 0
    runs: tuple[ViewRun, ...] = ()
    skipped: dict[str, str] = field(default_factory=dict)  # variant → why it did not run
    targets: tuple[Target, ...] = ()
    failed: tuple[str, ...] = ()

    def median(self, variant: str) -> float | None:
        fps = [r.fps for r in self.runs if r.variant == variant]
        return statistics.median(fps) if fps else None

    def paired(self, variant: str) -> float | None:
        """The median over rounds of (the variant's frames/s / plain's in the same round): slow drifts of
        the machine's other load cancel out."""
        plain = {r.round: r.fps for r in self.runs if r.variant == "plain"}
        ratios = [r.fps / plain[r.round] for r in self.runs if r.variant == variant and plain.get(r.round)]
        return statistics.median(ratios) if ratios else None

    def median_cpu(self, variant: str) -> float | None:
        cpu = [r.cpu_ms_per_frame for r in self.runs if r.variant == variant]
        return statistics.median(cpu) if cpu else None


# -- helpers -------------------------------------------------------------------------------------------------
def wait_http(url: str, deadline: float, proc: subprocess.Popen[bytes]) -> None:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except urllib.error.HTTPError:
            return  # it answers (503 while the model loads)
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"the streamer exited ({proc.returncode}) before serving {url}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer") from None
            time.sleep(0.05)  # polling period


def tree_cpu(root: int) -> float:
    """CPU seconds used so far by ``root`` and every process below it (Chromium's, below its driver)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree = {root}
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return sum(process_cpu(pid) for pid in tree)


def watchers(url: str) -> int:
    with urllib.request.urlopen(url + "/preview/state", timeout=10) as r:
        return int(json.loads(r.read())["watchers"])


class Counter:
    """Counts the predictions published on ``endpoint`` (a thread with a Subscriber) until ``close()``."""

    def __init__(self, endpoint: str) -> None:
        from streamer.subscribe import Subscriber

        self.preds = 0
        self.eos = 0
        self._stop = threading.Event()
        self._sub = Subscriber(endpoint, topics=("",), timeout_ms=100)
        self._thread = threading.Thread(target=self._run, name="counter", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self._sub as sub:
            while not self._stop.is_set():
                msg = sub.recv()
                if msg is None:
                    continue
                kind = msg.payload.get("type")
                if kind == "pred":
                    self.preds += 1
                elif kind == "eos":
                    self.eos += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="bench-view-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*BROWSER_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER), log_output=subprocess.DEVNULL),
                              options=options)
    try:
        yield driver
    finally:
        driver.quit()
        import shutil

        shutil.rmtree(profile, ignore_errors=True)


def browser_missing() -> str | None:
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        return "no Chromium here (apt-get install chromium chromium-driver): preview-http is the measure"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    return None


# -- one run -------------------------------------------------------------------------------------------------
def run_once(variant: str, rnd: int, clip: Path, a: argparse.Namespace, work: Path,
             browser: Any) -> tuple[ViewRun, str]:
    """One streamer run of ``variant``; and the backend it ran."""
    from preview_client import PreviewWatcher

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    label = f"{variant}-{rnd}"
    summary, log_path = work / f"{label}.summary.json", work / f"{label}.log"
    annotated = work / f"{label}.mp4"
    summary.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "streamer.cli", "--source", str(clip), "--backend", a.backend, "--batch",
           str(a.batch), "--bind", endpoint, "--wait-subscribers", "1", "--summary-json", str(summary),
           "--quiet", "--log-level", "info", "--stats-interval", "0"]
    if a.model is not None:
        cmd += ["--model", str(a.model)]
    url = ""
    if variant.startswith("preview"):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd += ["--http", f"127.0.0.1:{port}", "--preview"]
        if a.preview_fps is not None:
            config = work / "preview.toml"
            config.write_text(f"[control]\npreview_fps = {float(a.preview_fps)}\n")
            cmd += ["--config", str(config)]
    if variant == "annotate":
        cmd += ["--annotate", str(annotated)]
    deadline = time.monotonic() + a.run_timeout
    watcher: PreviewWatcher | None = None
    counter: Counter | None = None
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        try:
            if url:
                wait_http(url + "/healthz", deadline, proc)
            if variant == "preview-http":
                watcher = PreviewWatcher(url + "/preview/feed").start()
            elif variant == "preview-browser":
                browser.get(url + "/")
            if variant in WATCHED:
                while watchers(url) < 1:  # the page is connected before the first frame is read
                    if time.monotonic() > deadline:
                        raise TimeoutError("the preview client did not connect")
                    time.sleep(0.05)  # polling period
            startup_cpu = process_cpu(proc.pid)  # it waits for the subscriber: what came before is start-up
            browser_cpu = tree_cpu(browser.service.process.pid) if variant == "preview-browser" else 0.0
            counter = Counter(endpoint)  # the run starts reading once this subscriber is in
            done = wait_child(proc, deadline)
            if done is None:
                raise TimeoutError("the streamer did not finish in time")
            rc, total_cpu = done
            if variant == "preview-browser":
                browser_cpu = tree_cpu(browser.service.process.pid) - browser_cpu
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            if counter is not None:
                counter.close()
            if watcher is not None:
                watcher.close()
            if browser is not None and variant == "preview-browser":
                browser.get("about:blank")
    if rc != 0:
        raise RuntimeError(f"{label}: the streamer exited {rc} (log: {log_path})")
    s = json.loads(summary.read_text())
    frames_annotated = 0
    if variant == "annotate":
        frames_annotated = mbm.probe(annotated).frames
        annotated.unlink(missing_ok=True)
    jpegs = watcher.jpegs if watcher is not None else 0
    client_cpu = watcher.cpu_s if watcher is not None else browser_cpu
    if variant == "preview-browser":
        jpegs = int(s["extra"].get("preview", {}).get("jpegs", 0))  # what the server encoded for the page
    run_cpu = round(total_cpu - startup_cpu, 3)
    return ViewRun(variant, rnd, float(s["fps"]), int(s["frames"]), float(s["elapsed_s"]),
                   counter.preds if counter else 0, jpegs, frames_annotated, run_cpu,
                   round(client_cpu, 3)), str(s.get("backend", ""))


# -- the section ---------------------------------------------------------------------------------------------
def targets(result: ViewResult) -> tuple[Target, ...]:
    """Frames/s against plain, as the ratio of the medians and as the median of each round's ratio (slow
    drifts of the machine's other load cancel out in the second). CPU time per frame is in the table and
    the JSON, not a target: ONNX Runtime's threads spin while they wait, so on a contended machine a run
    can spend less CPU per frame while it gets fewer frames through."""
    plain = result.median("plain")
    out = []
    for variant, what in (("preview-http", "preview open, an HTTP client reading the stream"),
                          ("preview-browser", "preview open, headless Chromium on this machine"),
                          ("preview-idle", "--preview, nobody watching")):
        if result.median(variant) is None:
            continue
        out.append(Target(f"{variant}_fps", f"{what}: frames/s / none", ratio(result.median(variant), plain),
                          GOAL))
        out.append(Target(f"{variant}_fps_paired", f"{what}: frames/s / none, per round",
                          result.paired(variant), GOAL))
    if result.median("annotate") is not None:
        out.append(Target("annotate_fps", "--annotate (lossless encoding): frames/s / none",
                          ratio(result.median("annotate"), plain), 0.0, applies=False,
                          note="for reference: the run waits for the encoder"))
    return tuple(out)


def run(a: argparse.Namespace) -> ViewResult:
    variants = pick(a.variants, VARIANTS, "variants")
    if "plain" not in variants:
        variants.insert(0, "plain")
    skipped: dict[str, str] = {}
    if "preview-browser" in variants and (why := browser_missing()):
        skipped["preview-browser"] = why
        variants.remove("preview-browser")
    machine = Machine.probe(VERSIONS)
    failed: list[str] = []
    with work_dir(a.work_dir, "bench-view-") as work:
        clip = a.clip or mbm.ensure_media(a.media_dir, need=("vtest", "1080p"))["1080p"]
        clip = mbm.looped_clip(clip, a.repeat, work)
        frames = mbm.probe(clip).frames
        print(f"{machine.label} ({machine.cpus} cores); {clip.name}: {frames} frames; variants "
              f"{', '.join(variants)}; {a.rounds} rounds" + "".join(f"\n  {v} skipped: {w}"
                                                                    for v, w in skipped.items()), flush=True)
        runs: list[ViewRun] = []
        backend = ""
        browser_ctx = chromium() if "preview-browser" in variants else contextlib.nullcontext()
        with browser_ctx as browser:
            for rnd in range(a.rounds):
                order = variants[rnd % len(variants):] + variants[:rnd % len(variants)]
                for variant in order:
                    try:
                        row, backend = run_once(variant, rnd, clip, a, work, browser)
                    except Exception as exc:
                        failed.append(f"{variant} round {rnd}: {type(exc).__name__}: {exc}")
                        print(f"  {variant} round {rnd}: FAILED {exc}", flush=True)
                        continue
                    runs.append(row)
                    print(f"  round {rnd} {variant:<16} {row.fps:8.1f} frames/s  ({row.frames} frames, "
                          f"{row.received} received, {row.jpegs} preview JPEGs, {row.annotated} annotated)",
                          flush=True)
    result = ViewResult(machine.finished(), str(clip), frames, backend, a.preview_fps, a.rounds, tuple(runs),
                        skipped, failed=tuple(failed))
    result = result.replace(targets=targets(result))
    print_table(result, variants)
    return result


def print_table(r: ViewResult, variants: list[str]) -> None:
    from streamer.config import SETTINGS

    preview_fps = r.preview_fps if r.preview_fps is not None else SETTINGS["preview_fps"].default
    plain, plain_cpu = r.median("plain"), r.median_cpu("plain")
    print(f"\n{Path(r.clip).name} ({r.clip_frames} frames, {r.backend}; preview {preview_fps:g} frames/s per "
          "source)")
    print(f"  {'variant':<16} {'frames/s':>8} {'/ plain':>8} {'CPU ms/fr':>10} {'plain/it':>9}   "
          f"{'frames/s of each round':<32} JPEGs/run")
    for variant in variants:
        rows = [x for x in r.runs if x.variant == variant]
        if not rows:
            continue
        med, cpu = r.median(variant), r.median_cpu(variant)
        runs = ", ".join(f"{x.fps:.1f}" for x in rows)
        jpegs = statistics.median(x.jpegs for x in rows) if variant in WATCHED else "-"
        print(f"  {variant:<16} {fmt(med, '8.1f')} {fmt(ratio(med, plain), '8.3f')} {fmt(cpu, '10.2f')} "
              f"{fmt(ratio(plain_cpu, cpu), '9.3f')}   {runs:<32} {jpegs}")
    lost = [x for x in r.runs if x.received != x.frames]
    print(f"  every prediction received: {'yes' if not lost else f'NO: {len(lost)} runs lost some'}")
    annotated = [x for x in r.runs if x.variant == "annotate"]
    if annotated:
        same = all(x.annotated == x.frames for x in annotated)
        print(f"  annotated videos: {'a frame per prediction in every run' if same else 'FRAMES MISSING'}")
    print("\ntargets")
    for t in r.targets:
        print(f"  {t.description:<76} {fmt(t.value, '6.3f')} {t.op} {t.goal:<5} {t.verdict}  {t.note}")
    for f in r.failed:
        print(f"FAILED {f}")
