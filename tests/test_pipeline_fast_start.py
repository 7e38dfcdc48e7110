"""A fast start end to end: the torch backend on the demo clip, ONNX Runtime bridging its load.

This machine has no GPU, so PyTorch CUDA cannot run here: the torch backend's adapter is replaced by the same
model rebuilt from its ``.pth`` by the product's loader and run by PyTorch on the CPU (``TorchOnCpu``). The
rest is real: ONNX Runtime, the hand-over, the batcher, the results stage and the JSONL writer. The load is
held until the bridge has made its first prediction (an event, with a timeout), so the first predictions are
ONNX Runtime's on any machine; the sink then holds the results thread until the hand-over happened, so the
bridge serves at most its own slots' batches and the rest go to torch.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from streamer_helpers import REPO, color_sequence, read_jsonl, write_video
from torch_helpers import write_model

from streamer.backends import torch_cuda
from streamer.backends.base import CpuBackend
from streamer.config import Settings, load_settings
from streamer.errors import ModelError
from streamer.model.torch_load import load_torch_model
from streamer.pipeline import Pipeline
from streamer.protocol import Prediction
from streamer.sinks import JsonlSink, Sink

WAIT_S = 60.0
DEMO_FRAMES = 300
BATCH = 8


class TorchOnCpu(CpuBackend):
    """The torch backend's model on the CPU: what stands in for PyTorch CUDA on a machine without a GPU."""

    name = "torch"

    def __init__(self, model_path: Path, max_batch: int) -> None:
        loaded = load_torch_model(model_path, "fp32", "fast", "cpu")
        super().__init__(loaded.manifest, max_batch)
        self.model = loaded.model

    def infer(self, images: np.ndarray, out: np.ndarray) -> None:
        with torch.inference_mode():
            out[...] = self.model(torch.from_numpy(images)).float().numpy()


class SlowTorch:
    """The torch backend module's probe and load, patched: ``load`` waits for ``go`` (or raises ``fail``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.go = threading.Event()
        self.fail: Exception | None = None
        self.loads = 0
        monkeypatch.setattr(torch_cuda, "quick_probe", lambda name="torch": None)
        monkeypatch.setattr(torch_cuda, "probe", lambda name="torch": None)
        monkeypatch.setattr(torch_cuda, "load", self.load)

    def load(self, model_path: Path, max_batch: int, backend_name: str = "torch",
             **options: Any) -> TorchOnCpu:
        self.loads += 1
        assert self.go.wait(WAIT_S), "the test never let the torch backend finish loading"
        if self.fail is not None:
            raise self.fail
        return TorchOnCpu(Path(model_path), max_batch)


@pytest.fixture
def slow_torch(monkeypatch: pytest.MonkeyPatch) -> SlowTorch:
    return SlowTorch(monkeypatch)


class Gate(Sink):
    """Lets the load finish after the ``release_after``-th prediction; with ``hold``, keeps the results thread
    there until the pipeline handed over (so no more bridge batches can complete meanwhile)."""

    name = "gate"

    def __init__(self, torch_load: SlowTorch, release_after: int = 1, hold: bool = False) -> None:
        self.torch_load = torch_load
        self.release_after = release_after
        self.hold = hold
        self.preds: list[Prediction] = []
        self.pipeline: Pipeline | None = None

    def prediction(self, pred: Prediction) -> None:
        self.preds.append(pred)
        if len(self.preds) == self.release_after:
            self.torch_load.go.set()
            if self.hold:
                assert self.pipeline is not None and self.pipeline.handover is not None
                assert self.pipeline.handover.ready.wait(WAIT_S), "no hand-over"


def demo_settings(**overrides: Any) -> Settings:
    base = {"sources": ("demo",), "bind": "none", "backend": "torch", "batch": BATCH, "threads": 1,
            "stats_interval_s": 0.0}
    return load_settings(None, {**base, **overrides})


def run(settings: Settings, gate: Gate, jsonl: Path) -> tuple[Any, list[dict]]:
    pipeline = Pipeline(settings, sinks=[JsonlSink.create(str(jsonl)), gate])
    gate.pipeline = pipeline
    try:
        summary = pipeline.run()
    finally:
        pipeline.close()
    return summary, read_jsonl(jsonl)


def engine_ids(lines: list[dict]) -> list[str]:
    return [d["model"] for d in lines]


def test_onnx_runtime_serves_the_first_frames_then_torch_every_frame_once_in_order(
        slow_torch: SlowTorch, tmp_path: Path) -> None:
    summary, lines = run(demo_settings(), Gate(slow_torch, hold=True), tmp_path / "preds.jsonl")
    assert [d["frame"] for d in lines] == list(range(DEMO_FRAMES))  # every frame once, in order
    ids = engine_ids(lines)
    ort_id, torch_id = ids[0], ids[-1]
    assert ort_id.endswith("/onnxruntime") and torch_id.endswith("/torch")
    served = ids.count(ort_id)
    assert ids == [ort_id] * served + [torch_id] * (DEMO_FRAMES - served)  # one switch, never back
    assert 1 <= served <= 2 * BATCH  # the bridge's slots (one run at a time on one thread: 2 slots)
    bridge = summary.extra["startup"]["bridge"]
    assert bridge["engine"] == ort_id and bridge["for"] == "torch" and bridge["frames"] == served
    assert 1 <= bridge["batches"] <= 2
    startup = summary.extra["startup"]
    if startup["first_prediction_s"] is not None:  # None only where /proc cannot say when the process began
        # (a prediction is stamped after the sinks took it: the first here after the gate held it to the
        # hand-over)
        assert bridge["ready_s"] <= startup["first_prediction_s"]
        assert bridge["ready_s"] <= startup["model_ready_s"] <= bridge["handover_s"]
    assert (summary.backend, summary.model) == ("torch", torch_id)
    assert summary.accuracy is not None and summary.accuracy["correct"] == DEMO_FRAMES  # both engines right
    lines_shown = summary.lines()
    assert f"(onnxruntime for the first {served} frames, then torch, " in lines_shown[0]
    assert any(line.startswith(f"fast start: {ort_id} served {served} frames") for line in lines_shown)


def test_off_waits_for_the_backend_and_has_no_bridge(slow_torch: SlowTorch, tmp_path: Path) -> None:
    slow_torch.go.set()
    summary, lines = run(demo_settings(fast_start="off", max_frames=40), Gate(slow_torch),
                         tmp_path / "preds.jsonl")
    assert [d["frame"] for d in lines] == list(range(40))
    assert {d["model"] for d in lines} == {summary.model} and summary.model.endswith("/torch")
    assert summary.extra["startup"]["bridge"] is None
    assert "model_ready_s" in summary.extra["startup"]


def test_a_run_that_ends_on_the_bridge_still_waits_for_the_backend(slow_torch: SlowTorch,
                                                                     tmp_path: Path) -> None:
    summary, lines = run(demo_settings(max_frames=5), Gate(slow_torch, release_after=5),
                         tmp_path / "preds.jsonl")
    assert [d["frame"] for d in lines] == list(range(5))
    assert {d["model"] for d in lines} == {summary.extra["startup"]["bridge"]["engine"]}
    assert summary.backend == "torch" and slow_torch.loads == 1
    bridge = summary.extra["startup"]["bridge"]
    assert bridge["frames"] == 5 and 1 <= bridge["batches"] <= 5
    assert "model_ready_s" in summary.extra["startup"]  # torch got ready: the hand-over came after the run


def test_a_backend_that_fails_to_load_fails_the_run(slow_torch: SlowTorch, tmp_path: Path) -> None:
    slow_torch.fail = ModelError("shapes_cnn.pth: not a checkpoint", "re-export it")
    gate = Gate(slow_torch)
    with pytest.raises(ModelError, match=r"shapes_cnn\.pth: not a checkpoint"):
        run(demo_settings(), gate, tmp_path / "preds.jsonl")
    lines = read_jsonl(tmp_path / "preds.jsonl")
    assert lines and all(d["model"].endswith("/onnxruntime") for d in lines)  # never silently on the bridge
    assert [d["frame"] for d in lines] == list(range(len(lines)))  # what the bridge made is all written


def test_a_model_without_an_onnx_beside_it_runs_without_a_bridge(slow_torch: SlowTorch, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    slow_torch.go.set()
    model = write_model(tmp_path, pt2=None)  # m.json + m.pth, no m.onnx
    clip = write_video(tmp_path / "clip.avi", color_sequence(12, seed=4))
    settings = demo_settings(sources=(str(clip),), model=str(model))
    with caplog.at_level(logging.INFO, logger="streamer.backends.fast_start"):
        summary, lines = run(settings, Gate(slow_torch), tmp_path / "preds.jsonl")
    assert "fast start: no bridge for torch (no m.onnx beside m.json); waiting for it to load" in caplog.text
    assert len(lines) == 12 and {d["model"] for d in lines} == {summary.model}
    assert summary.extra["startup"]["bridge"] is None


@pytest.mark.skipif(torch_cuda.quick_probe() is None, reason="checks a machine where torch cannot run")
def test_the_cli_refuses_torch_without_a_gpu_as_it_did_without_a_bridge() -> None:
    """Nothing is bridged when the backend cannot run at all: the same one-line error, at once, either way."""
    errors = []
    for fast_start in ("auto", "off"):
        done = subprocess.run([sys.executable, "-m", "streamer", "--source", "demo", "--backend", "torch",
                               "--bind", "none", "--fast-start", fast_start, "--log-level", "debug"],
                              cwd=REPO, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 2, done.stderr
        errors.append(done.stderr.strip().splitlines()[-1])
        assert "serves the first batches" not in done.stderr and "demo accuracy" not in done.stdout
        assert ("fast start: backend torch starts quickly (or will not start): no bridge" in done.stderr) == (
            fast_start == "auto")
    assert errors[0] == errors[1] and errors[0].startswith("streamer: error: backend 'torch' cannot run here")
