"""``streamer --workers N --ray ADDRESS`` end to end on a real two-node Ray cluster (tests/scale/conftest.py):
real video files and a real MJPEG stream, real ZeroMQ, a driver process killed or signalled as an operator
would. Every (source, frame) must be in the merged ``--output`` exactly once, whatever happens to a worker."""

from __future__ import annotations

import collections
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from servers import MjpegServer
from service_helpers import Collector, colour_jpegs
from streamer_helpers import REPO, color_sequence, write_video

WAIT_S = 120.0  # Ray starts workers in seconds; this only catches a hang


class Driver:
    """``python -m streamer.cli --workers ...`` with its stderr followed line by line."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen([sys.executable, "-m", "streamer.cli", *args], cwd=REPO, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     stdin=subprocess.DEVNULL)
        self.stderr: list[str] = []
        self.stdout: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        self._pumps = [threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr, self._lines),
                                        daemon=True),
                       threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout, None),
                                        daemon=True)]
        for pump in self._pumps:
            pump.start()

    @staticmethod
    def _pump(stream, lines: list[str], feed: queue.Queue[str] | None) -> None:
        for line in stream:
            lines.append(line)
            if feed is not None:
                feed.put(line)

    def wait_line(self, pattern: str, timeout_s: float = WAIT_S) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self._lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r}; stderr:\n{self.log}") from None
            if m := re.search(pattern, line):
                return m

    def finish(self, timeout_s: float = WAIT_S) -> int:
        """Wait for the driver to exit (and for its output to be read); its exit status."""
        self.proc.wait(timeout_s)
        for pump in self._pumps:
            pump.join(10)
        return self.proc.returncode

    def signal(self, signum: int) -> int:
        self.proc.send_signal(signum)
        return self.finish()

    @property
    def log(self) -> str:
        return "".join(self.stderr)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def merged(path: Path) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for line in path.read_text().splitlines():
        d = json.loads(line)
        counts[(d["source"], d["frame"])] += 1
    return counts


def lines_of(path: Path, source: str) -> int:
    try:
        return path.read_text().count(f'"source":"{source}"')
    except FileNotFoundError:
        return 0


def wait_for(what: str, condition, driver: Driver, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if driver.proc.poll() is not None:
            raise AssertionError(f"{what}: the driver exited ({driver.proc.returncode}):\n{driver.log}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s:\n{driver.log}")
        time.sleep(0.02)


def test_six_files_over_three_workers_every_frame_once_on_one_endpoint(
        ray_cluster: str, color_model: Path, tmp_path: Path, free_endpoint: str) -> None:
    lengths = [40, 55, 70, 85, 100, 115]
    colours = {f"clip{i}": color_sequence(n, seed=i) for i, n in enumerate(lengths)}
    clips = [write_video(tmp_path / f"{name}.avi", seq) for name, seq in colours.items()]
    out = tmp_path / "merged.jsonl"
    sub = Collector(free_endpoint)
    driver = Driver("--workers", "3", "--ray", ray_cluster, "--model", str(color_model), "--output", str(out),
                    "--bind", free_endpoint, "--wait-subscribers", "1", "--batch", "8",
                    *[arg for clip in clips for arg in ("--source", str(clip))])
    try:
        assert driver.finish() == 0, driver.log
    finally:
        driver.kill()
        sub.close()

    counts = merged(out)
    assert set(counts.values()) == {1}, "a frame was written twice"
    assert set(counts) == {(name, i) for name, seq in colours.items() for i in range(len(seq))}
    for line in out.read_text().splitlines():  # and they are the right frames: the colour model's answer
        d = json.loads(line)
        assert d["topk"][0]["label"] == colours[d["source"]][d["frame"]]
    placed = re.findall(r"worker (\d): pid \d+ on \S+ \(node (\w+)\)", driver.log)
    workers = {int(w): node for w, node in placed}
    assert sorted(workers) == [0, 1, 2] and len(set(workers.values())) == 2, driver.log  # over both nodes
    for name, seq in colours.items():  # the one endpoint: every source's predictions and its end
        assert sorted(m.payload["frame"] for m in sub.preds(name)) == list(range(len(seq)))
        assert [m.payload["frames"] for m in sub.select("eos", name)] == [len(seq)]
    final = sub.select("stats")[-1].payload  # the driver's stats cover every worker
    assert final["frames"] == sum(lengths) and sorted(final["workers"]) == ["0", "1", "2"]
    assert {name: s["frames"] for name, s in final["sources"].items()} == {n: len(c) for n, c in
                                                                           colours.items()}


def test_a_killed_worker_is_restarted_and_its_files_resume_exactly_once(
        ray_cluster: str, color_model: Path, tmp_path: Path, free_endpoint: str) -> None:
    # paced at 250 frames/s (--realtime, lossless with --policy block): a run of 4 s whatever the machine
    colours = {f"long{i}": color_sequence(1000, seed=10 + i) for i in range(3)}
    clips = [write_video(tmp_path / f"{name}.avi", seq, fps=250.0) for name, seq in colours.items()]
    out, summary = tmp_path / "merged.jsonl", tmp_path / "summary.json"
    driver = Driver("--workers", "3", "--ray", ray_cluster, "--model", str(color_model), "--output", str(out),
                    "--summary-json", str(summary), "--bind", free_endpoint, "--realtime", "--policy",
                    "block", "--http", "127.0.0.1:0",
                    *[arg for clip in clips for arg in ("--source", str(clip))])
    try:
        url = driver.wait_line(r"control plane on (http://\S+)").group(1)
        pid = int(driver.wait_line(r"worker 0: pid (\d+)").group(1))
        wait_for("worker 0's first 100 predictions", lambda: lines_of(out, "long0") >= 100, driver)
        os.kill(pid, signal.SIGKILL)
        driver.wait_line(rf"worker 0 \(pid {pid}\) died")
        metrics = urllib.request.urlopen(f"{url}/metrics", timeout=30).read().decode()
        assert 'streamer_worker_restarts_total{worker="0"} 1.0' in metrics
        assert 'streamer_worker_restarts_total{worker="1"} 0.0' in metrics
        assert driver.finish() == 0, driver.log
    finally:
        driver.kill()

    log = driver.log
    assert re.search(rf"worker 0 \(pid {pid}\) died", log)
    assert re.search(r"worker 0 restarted: pid (?!{pid})\d+", log)
    resumed = int(re.search(r"source long0 resumes after frame (\d+)", log).group(1))
    assert 99 <= resumed < 999
    counts = merged(out)
    assert set(counts.values()) == {1}, "a frame was written twice"
    assert set(counts) == {(name, i) for name in colours for i in range(1000)}
    workers = json.loads(summary.read_text())["extra"]["workers"]
    assert [w["restarts"] for w in workers] == [1, 0, 0]


def get_json(url: str) -> dict | list:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def post_source(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/sources", json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_a_live_source_on_a_killed_worker_goes_down_then_up_and_sigterm_drains(
        ray_cluster: str, color_model: Path, tmp_path: Path, free_endpoint: str) -> None:
    frames = colour_jpegs(["red", "green", "blue"] * 4)
    clip = write_video(tmp_path / "short.avi", color_sequence(20, seed=5))
    out = tmp_path / "merged.jsonl"
    with MjpegServer(frames, fps=25.0) as cam0, MjpegServer(frames, fps=25.0) as cam1:
        sub = Collector(free_endpoint)
        # worker 0 gets the stream, worker 1 a short file; --keep-running keeps both up after it ends
        driver = Driver("--workers", "2", "--ray", ray_cluster, "--model", str(color_model), "--output",
                        str(out), "--bind", free_endpoint, "--wait-subscribers", "1", "--keep-running",
                        "--http", "127.0.0.1:0", "--source", cam0.url() + "#policy=block",
                        "--source", str(clip))
        try:
            url = driver.wait_line(r"control plane on (http://\S+)").group(1)
            pid = int(driver.wait_line(r"worker 0: pid (\d+)").group(1))
            name0 = "127-0-0-1-video"
            sub.wait("the short file's end", lambda: sub.select("eos", "short"))
            # POST /sources goes to the worker with the fewest running sources: worker 1, idle now
            status, entry = post_source(url, {"source": cam1.url(), "name": "cam1", "policy": "block"})
            assert (status, entry["worker"], entry["name"]) == (201, 1, "cam1"), entry
            sub.wait("both streams' first predictions",
                     lambda: len(sub.preds(name0)) >= 10 and len(sub.preds("cam1")) >= 5)
            listed = get_json(f"{url}/sources")
            assert [(e["name"], e["worker"]) for e in listed] == [(name0, 0), ("short", 1), ("cam1", 1)]
            assert get_json(f"{url}/healthz")["workers"] == {"0": "running", "1": "running"}
            before = max(m.payload["frame"] for m in sub.preds(name0))
            os.kill(pid, signal.SIGKILL)
            sub.wait("cam0 down, then up again", lambda: [m.payload["state"] for m in
                                                          sub.select("health", name0)][-2:] == ["down", "up"])
            sub.wait("cam0's predictions after the restart",
                     lambda: any(m.payload["frame"] > before + 5 for m in sub.preds(name0)))
            assert driver.signal(signal.SIGTERM) == 0, driver.log
        finally:
            driver.kill()
            sub.close()

    states = [m.payload["state"] for m in sub.select("health", name0)]
    assert states[0] == "up" and states[-2:] == ["down", "up"], states
    assert "down" not in [m.payload["state"] for m in sub.select("health", "cam1")], "cam1 was not touched"
    frames0 = [m.payload["frame"] for m in sub.preds(name0)]
    assert frames0 == sorted(frames0), "frame numbers go on from where the dead worker stopped"
    counts = merged(out)
    assert set(counts.values()) == {1}
    assert {frame for source, frame in counts if source == "short"} == set(range(20))
    # SIGTERM drained both workers: each stream ended with eos "stopped", and the driver exited 0
    for name in (name0, "cam1"):
        assert [m.payload["reason"] for m in sub.select("eos", name)] == ["stopped"]
    assert "streamer: SIGTERM: finishing the frames in flight" in driver.log


def test_a_full_disk_stops_every_worker_with_one_line(ray_cluster: str, color_model: Path,
                                                      tmp_path: Path) -> None:
    clips = [write_video(tmp_path / f"c{i}.avi", color_sequence(60, seed=20 + i)) for i in range(2)]
    driver = Driver("--workers", "2", "--ray", ray_cluster, "--model", str(color_model), "--output",
                    "/dev/full", "--bind", "none",
                    *[arg for clip in clips for arg in ("--source", str(clip))])
    try:
        assert driver.finish() == 2, driver.log
    finally:
        driver.kill()
    last = driver.stderr[-1].strip()  # the last line: nothing of the workers' logs after it
    assert last.startswith("streamer: error: cannot write --output '/dev/full'"), driver.log
    assert "hint:" in last


def test_without_ray_the_driver_is_a_one_line_error_naming_the_extra(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['ray'] = None; from streamer.cli import main; "
            "sys.exit(main(['--workers', '2', '--source', 'demo', '--bind', 'none']))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "streamer: error: --workers needs Ray, which is not installed (hint: pip install 'streamer[ray]')"]


@pytest.mark.parametrize("args, message", [
    (["--workers", "2", "--device", "cuda:1"], "--device cuda:1 picks one GPU for one process"),
    (["--workers", "2", "--source", "nowhere.mp4"], "no such file or directory: nowhere.mp4"),
])
def test_bad_driver_arguments_are_one_line_errors_before_ray_starts(args: list[str], message: str) -> None:
    done = subprocess.run([sys.executable, "-m", "streamer.cli", "--bind", "none", *args,
                           *(["--source", "demo"] if "--source" not in args else [])],
                          cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
