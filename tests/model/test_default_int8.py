"""The shipped INT8 variant (engines/shapes_cnn.int8.onnx): made from the shipped fp32 model, its gate passed,
and it agrees with fp32 on held-out shapes and on the demo clip as the pipeline reads it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from streamer.model import shapes
from streamer.model.calibration import load_samples
from streamer.model.manifest import ModelManifest, sha256_file
from streamer.model.qdq import is_qdq
from streamer.model.quantize import cpu_session, predict
from streamer.paths import ASSETS

ENGINES = Path(__file__).resolve().parents[2] / "engines"
FP32, INT8 = ENGINES / "shapes_cnn.onnx", ENGINES / "shapes_cnn.int8.onnx"


@pytest.fixture(scope="module")
def sessions():
    return cpu_session(FP32), cpu_session(onnx.load(str(INT8)))


def test_made_from_the_shipped_model_with_its_gate_passed() -> None:
    manifest = ModelManifest.from_onnx(INT8)
    assert manifest == ModelManifest.from_json((ENGINES / "shapes_cnn.int8.json").read_text())
    assert manifest.precision == "int8" and manifest.labels == shapes.LABELS
    int8 = manifest.extra["int8"]
    assert int8["source_sha256"] == sha256_file(FP32) and int8["source_onnx"] == FP32.name
    assert int8["calibration"]["source"] == "shapes:train"
    gate = int8["gate"]
    assert gate["passed"] and gate["eval_source"] == "shapes:val" and gate["samples"] == 10_000
    assert gate["drop_points"] <= gate["max_drop_points"] == 1.0 and gate["agreement"] >= 0.99
    assert int8["onnxruntime_kernels"]["QLinearConv"] == 20
    assert is_qdq(onnx.load(str(INT8))) and INT8.stat().st_size < 0.3 * FP32.stat().st_size
    assert {"engines/shapes_cnn.int8.onnx", "engines/shapes_cnn.int8.json"} <= set(ASSETS)


def test_held_out_accuracy_and_agreement(sessions) -> None:
    x, y = shapes.make_shapes(1000, shapes.TEST_SEED)
    images = np.ascontiguousarray(x[..., ::-1])
    p32, p8 = (predict(s, images) for s in sessions)
    assert (p8 == y).mean() >= (p32 == y).mean() - 0.01
    assert (p8 == p32).mean() >= 0.99


def test_demo_clip_read_like_the_pipeline(sessions) -> None:
    demo = load_samples("demo", (32, 32), shapes.LABELS, limit=None, purpose="evaluation")
    assert len(demo) == 300 and demo.labels is not None
    p32, p8 = (predict(s, demo.images) for s in sessions)
    assert (p8 == demo.labels).mean() >= 0.95 and (p8 == p32).mean() >= 0.99
