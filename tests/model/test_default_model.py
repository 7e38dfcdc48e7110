"""The shipped model (engines/shapes_cnn.*): contract, ONNX Runtime vs PyTorch parity, held-out accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from streamer.model import shapes
from streamer.model.checkpoint import load_pipeline_model
from streamer.model.export import check_parity
from streamer.model.manifest import ModelManifest, sha256_file

ENGINES = Path(__file__).resolve().parents[2] / "engines"
FP32, FP16 = ENGINES / "shapes_cnn.onnx", ENGINES / "shapes_cnn.fp16.onnx"


@pytest.fixture(scope="module")
def test_set():
    """1,000 held-out shapes images (a seed training and validation never saw), as the pipeline feeds: BGR."""
    x, y = shapes.make_shapes(1000, shapes.TEST_SEED)
    return np.ascontiguousarray(x[..., ::-1]), y


@pytest.fixture(scope="module")
def reference():
    return load_pipeline_model(FP32)  # .pth + manifest arch, no training code


def test_contract_and_manifest():
    for path, precision in ((FP32, "fp32"), (FP16, "fp16")):
        model = onnx.load(str(path))
        (inp,), (out,) = model.graph.input, model.graph.output
        assert inp.name == "images" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
        dims = inp.type.tensor_type.shape.dim
        assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [32, 32, 3]
        assert out.name == "scores" and out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        ops = [n.op_type for n in model.graph.node]
        assert ops[0] == "Cast" and ops.index("Transpose") > 0  # cast before any layout op (TensorRT-RTX)
        manifest = ModelManifest.from_onnx(path)
        assert manifest.precision == precision and manifest.labels == shapes.LABELS
        assert manifest.arch == "seed_cnn_bn" and manifest.dataset == "shapes"
        assert manifest.input_hw == (32, 32)
    side = ModelManifest.from_json((ENGINES / "shapes_cnn.json").read_text())
    assert side.checkpoint_sha256 == sha256_file(ENGINES / "shapes_cnn.pth")
    assert side.val_accuracy is not None and side.val_accuracy >= 0.95
    total = sum(p.stat().st_size for p in ENGINES.rglob("*") if p.is_file() and "plans" not in p.parts)
    assert total < 30e6


def test_fp32_parity_with_pytorch(test_set, reference):
    images, _ = test_set
    err, agree = check_parity(FP32, reference, images)
    assert err < 1e-4 and agree == 1.0


def test_fp16_agrees_with_pytorch_fp32(test_set, reference):
    images, _ = test_set
    _, agree = check_parity(FP16, reference, images)
    assert agree >= 0.99


@pytest.mark.parametrize("path", [FP32, FP16], ids=["fp32", "fp16"])
def test_held_out_accuracy(test_set, path):
    images, labels = test_set
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    scores = np.concatenate([session.run(["scores"], {"images": images[i:i + 250]})[0]
                             for i in range(0, len(images), 250)])
    np.testing.assert_allclose(scores.sum(1), 1.0, atol=1e-3)
    assert (scores.argmax(1) == labels).mean() >= 0.95


def test_torch_export_program_matches(test_set, reference):
    pt2 = ENGINES / "shapes_cnn.pt2"
    if not pt2.is_file():
        pytest.skip("no .pt2 shipped")
    program = torch.export.load(str(pt2)).module()
    x = torch.from_numpy(test_set[0][:64])
    with torch.no_grad():
        assert torch.allclose(program(x), reference(x), atol=1e-5)
    assert json.loads((ENGINES / "shapes_cnn.json").read_text())["extra"]["pt2"] == "shapes_cnn.pt2"
