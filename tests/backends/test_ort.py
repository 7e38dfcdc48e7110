"""The ONNX Runtime backend with real sessions: contract checks give one-line ModelErrors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto
from streamer_helpers import COLORS, make_color_model

from streamer.backends import ort as ort_backend
from streamer.backends.select import open_backend
from streamer.errors import ModelError


def test_probe_finds_onnxruntime() -> None:
    assert ort_backend.probe("onnxruntime") is None


def test_loads_and_classifies(color_model: Path) -> None:
    backend = open_backend(color_model, "onnxruntime", max_batch=4, threads=1)
    assert backend.name == "onnxruntime" and backend.workers >= 1
    assert backend.engine_id == "color@000000000000/onnxruntime"
    assert backend.threads == 1
    images = np.stack([np.full((32, 32, 3), COLORS[c], np.uint8) for c in ("red", "blue", "green")])
    out = np.full((3, 3), -1.0, np.float32)
    backend.infer(images, out)
    assert out.argmax(1).tolist() == [2, 0, 1]
    np.testing.assert_allclose(out.sum(1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_name": "input"}, "model inputs are \\(input\\), expected one named 'images'"),
        ({"input_type": TensorProto.FLOAT}, r"input 'images' is tensor\(float\), expected tensor\(uint8\)"),
        ({"channels": 4}, "input 'images' has shape \\[N, 32, 32, 4\\], expected \\[N, 32, 32, 3\\]"),
        ({"manifest_hw": (64, 64)}, "has shape \\[N, 32, 32, 3\\], expected \\[N, 64, 64, 3\\]"),
        ({"classes": 4}, "output 'scores' has shape \\[N, 4\\] but the manifest lists 3 labels"),
        ({"output_name": "probs"}, "no output named 'scores' \\(it has probs\\)"),
        ({"softmax": False}, "is not softmax probabilities"),
        ({"batch": 1}, "input batch size is fixed at 1"),
        ({"metadata": False}, "no streamer manifest in its metadata and no color.json beside it"),
    ],
)
def test_models_that_do_not_fit_are_rejected(tmp_path: Path, kwargs: dict, message: str) -> None:
    model = make_color_model(tmp_path / "color.onnx", **kwargs)
    with pytest.raises(ModelError, match=message) as err:
        ort_backend.load(model, max_batch=4)
    assert "\n" not in str(err.value) and err.value.hint


def test_manifest_beside_the_model_is_used(tmp_path: Path, color_model: Path) -> None:
    from streamer.model.manifest import ModelManifest

    model = make_color_model(tmp_path / "bare.onnx", metadata=False)
    manifest = ModelManifest(name="side", labels=("blue", "green", "red"), input_hw=(32, 32),
                             mean=(0, 0, 0), std=(1, 1, 1))
    (tmp_path / "bare.json").write_text(manifest.to_json())
    assert ort_backend.load(model, max_batch=2).manifest.name == "side"


def test_missing_and_garbage_model_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model file not found"):
        ort_backend.load(tmp_path / "nope.onnx", max_batch=2)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01not a protobuf" * 50)
    with pytest.raises(ModelError, match=r"garbage\.onnx"):
        ort_backend.load(garbage, max_batch=2)


def test_a_plan_file_is_refused_with_the_onnx_to_use(tmp_path: Path) -> None:
    plan = tmp_path / "shapes_cnn.abc.rtx1.7.fp16.b1-32-64.plan"
    plan.write_bytes(b"\0" * 64)
    expected = r"TensorRT plan cannot run on ONNX Runtime.*--model shapes_cnn\.onnx"
    with pytest.raises(ModelError, match=expected):
        ort_backend.load(plan, 8)


def test_default_layout_shares_the_cores_between_two_runs() -> None:
    assert ort_backend.default_layout(1) == (1, 1)
    assert ort_backend.default_layout(2) == (2, 1)
    assert ort_backend.default_layout(16) == (2, 8)


def test_threads_zero_runs_batches_side_by_side(color_model: Path) -> None:
    auto = ort_backend.load(color_model, max_batch=4, threads=0)
    assert (auto.workers, auto.threads) == ort_backend.default_layout()
    explicit = ort_backend.load(color_model, max_batch=4, threads=1)
    assert (explicit.workers, explicit.threads) == (1, 1)
