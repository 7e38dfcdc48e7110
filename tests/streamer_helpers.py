"""Test helpers: a tiny ONNX model of the real contract, real video files made with cv2.VideoWriter, the CLI.

Import as ``from streamer_helpers import ...`` (tests/ is on sys.path; a module named ``conftest`` is not a
safe place for shared code: another tests/**/conftest.py takes over that name). Fixtures are in conftest.py.

The colour model classifies a frame by its mean B, G, R (labels ``blue``, ``green``, ``red``), so a clip of
solid-colour frames has known answers: tests can check order and correctness end to end, fast.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from streamer.model.manifest import METADATA_KEY, ModelManifest

REPO = Path(__file__).resolve().parent.parent

COLORS = {"blue": (255, 0, 0), "green": (0, 255, 0), "red": (0, 0, 255)}
COLOR_LABELS = ("blue", "green", "red")


def make_color_model(path: Path, *, labels: Sequence[str] = COLOR_LABELS,
                     input_hw: tuple[int, int] = (32, 32), manifest_hw: tuple[int, int] | None = None,
                     input_name: str = "images", output_name: str = "scores", input_type: int | None = None,
                     channels: int = 3, classes: int | None = None, metadata: bool = True,
                     softmax: bool = True, batch: int | str = "N") -> Path:
    """Write an ONNX model: images uint8 [N,H,W,3] BGR → scores float32 [N,C] = softmax(mean colour · W).

    The keyword arguments break the contract on purpose for the validation tests.
    """
    import onnx
    from onnx import TensorProto, helper

    classes = len(labels) if classes is None else classes
    h, w = input_hw
    weights = np.zeros((channels, classes), np.float32)
    for i in range(min(channels, classes)):
        weights[i, i] = 0.1  # mean channel value 0..255 → logit 0..25.5
    nodes = [
        helper.make_node("Cast", ["images_in"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=0),
        helper.make_node("MatMul", ["m", "W"], ["logits"]),
    ]
    nodes.append(helper.make_node("Softmax", ["logits"], ["out"], axis=-1) if softmax
                 else helper.make_node("Identity", ["logits"], ["out"]))
    nodes[0].input[0] = input_name
    nodes[-1].output[0] = output_name
    graph = helper.make_graph(
        nodes, "color",
        [helper.make_tensor_value_info(input_name, input_type or TensorProto.UINT8, [batch, h, w, channels])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch, classes])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2]),
                     onnx.numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="tests")
    model.ir_version = 9
    if metadata:
        manifest = ModelManifest(name="color", labels=tuple(labels),
                                 input_hw=manifest_hw or input_hw, mean=(0, 0, 0),
                                 std=(1, 1, 1), arch="mean-colour", checkpoint_sha256="0" * 64)
        helper.set_model_props(model, {METADATA_KEY: manifest.to_json()})
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_video(path: Path, colors: Sequence[str], size: tuple[int, int] = (64, 48),
                fps: float = 25.0) -> Path:
    """An MJPG .avi whose frame i is a solid ``colors[i]`` (with a frame number drawn in grey)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened(), "cv2.VideoWriter cannot write MJPG here"
    for i, name in enumerate(colors):
        frame = np.empty((size[1], size[0], 3), np.uint8)
        frame[:] = COLORS[name]
        cv2.putText(frame, str(i), (2, size[1] - 4), cv2.FONT_HERSHEY_PLAIN, 0.8, (128, 128, 128), 1)
        writer.write(frame)
    writer.release()
    return path


def color_sequence(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [COLOR_LABELS[i] for i in rng.integers(0, 3, n)]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def stderr_lines(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    """``proc``'s stderr, line by line, as it comes (read on a thread)."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def run_cli(*args: str, timeout: float = 120, cwd: Path = REPO, env: dict | None = None
            ) -> subprocess.CompletedProcess[str]:
    """``python -m streamer.cli ARGS`` as a user would run it (stdin closed, text output)."""
    # the checkout first, then whatever the caller's environment adds (a GPU host's wheels in /tmp/site)
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    full_env = {**os.environ, "PYTHONPATH": path, **(env or {})}
    return subprocess.run([sys.executable, "-m", "streamer.cli", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
