"""Real TensorRT-RTX builds on the CPU: plan + identity, precision from the ONNX, reuse, and each error."""

from __future__ import annotations

import json
import shutil
import sys

import onnx
import onnx.helper as oh
import pytest

from streamer.engine import BatchProfile, PlanIdentity
from streamer.engine.build import build_engine
from streamer.engine.steps import BuildPlan, CreateConfig, NetworkFromOnnx, SavePlan
from streamer.errors import BackendUnavailableError, ModelError
from streamer.model.manifest import sha256_file

trt = pytest.importorskip("tensorrt_rtx")


def test_fp32_plan_and_identity(small_model, tmp_path):
    onnx_path = small_model / "small.onnx"
    result = build_engine(onnx_path, out_dir=tmp_path, backend="tensorrt-rtx")
    plan = result.plan
    assert not result.reused and plan.is_file() and plan.parent == tmp_path
    assert plan.name == (f"small.{sha256_file(onnx_path)[:12]}.rtx{'.'.join(trt.__version__.split('.')[:3])}"
                         ".sm80-86-89-120.fp32.b1-32-64.plan")
    data = json.loads((tmp_path / (plan.name + ".json")).read_text())  # plain JSON for any reader
    ident = PlanIdentity.read(plan)
    assert ident == result.identity and data["plan_bytes"] == plan.stat().st_size == ident.plan_bytes
    assert ident.backend == "tensorrt-rtx" and ident.backend_version == trt.__version__
    assert ident.onnx_sha256 == sha256_file(onnx_path) and ident.precision == "fp32"
    assert ident.compute_capabilities == ("8.0", "8.6", "8.9", "12.0")
    assert ident.input_name == "images" and ident.input_shape == (32, 32, 3)
    assert ident.pth_bytes == (small_model / "small.pth").stat().st_size and ident.build_seconds > 0
    # nothing else left behind (no temporary files)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([plan.name, plan.name + ".json"])


def test_fp16_builds_from_the_fp16_onnx_and_is_reused(small_model, tmp_path):
    first = build_engine(small_model / "small.onnx", precision="fp16", out_dir=tmp_path,
                         profile=BatchProfile(1, 8, 16), compute_capabilities=("8.6",))
    ident = first.identity
    assert first.onnx.name == "small.fp16.onnx" and ident.precision == "fp16"
    assert ident.compute_capabilities == ("8.6",) and ".sm86.fp16.b1-8-16.plan" in first.plan.name
    again = build_engine(small_model / "small.fp16.onnx", out_dir=tmp_path, profile=BatchProfile(1, 8, 16),
                         compute_capabilities=("8.6",))
    assert again.reused and again.plan == first.plan
    forced = build_engine(small_model / "small.fp16.onnx", out_dir=tmp_path, profile=BatchProfile(1, 8, 16),
                          compute_capabilities=("8.6",), force=True)
    assert not forced.reused


def test_steps_compose(small_model, tmp_path):
    network = NetworkFromOnnx(small_model / "small.fp16.onnx", "tensorrt-rtx")
    config = CreateConfig(BatchProfile(2, 4, 8), ("12.0",))
    path, built = SavePlan(BuildPlan(network, config), tmp_path / "x.plan")()
    assert path.read_bytes() == built.data and len(built.data) > 10_000


def test_fp16_without_an_fp16_onnx(small_model, tmp_path):
    shutil.copy(small_model / "small.onnx", tmp_path / "lonely.onnx")
    with pytest.raises(ModelError, match="strongly typed") as info:
        build_engine(tmp_path / "lonely.onnx", precision="fp16", out_dir=tmp_path)
    assert "lonely.fp16.onnx" in str(info.value) and "tools/export_onnx.py" in str(info.value)


def test_bad_onnx_files(tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07 definitely not protobuf" * 20)
    with pytest.raises(ModelError, match=r"garbage\.onnx") as info:
        build_engine(garbage, out_dir=tmp_path)
    assert "re-export" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        NetworkFromOnnx(garbage, "tensorrt-rtx")()
    with pytest.raises(ModelError, match="not found"):
        build_engine(tmp_path / "missing.onnx")


def test_unsupported_op_is_named(tmp_path):
    graph = oh.make_graph(
        [oh.make_node("Cast", ["images"], ["x"], to=onnx.TensorProto.FLOAT),
         oh.make_node("FancyPool", ["x"], ["scores"])],
        "fancy",
        [oh.make_tensor_value_info("images", onnx.TensorProto.UINT8, ["N", 32, 32, 3])],
        [oh.make_tensor_value_info("scores", onnx.TensorProto.FLOAT, ["N", 10])],
    )
    path = tmp_path / "fancy.onnx"
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)]), str(path))
    with pytest.raises(ModelError) as info:
        build_engine(path, out_dir=tmp_path)
    text = str(info.value)
    assert "fancy.onnx" in text and "'FancyPool'" in text and "plugin" in text and "\n" not in text


def test_missing_backend(small_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'streamer\[trt-rtx\]'") as info:
        build_engine(small_model / "small.onnx")
    assert str(info.value).startswith(str(small_model / "small.onnx")) and "\n" not in str(info.value)
    with pytest.raises(BackendUnavailableError, match="tensorrt not importable"):
        build_engine(small_model / "small.onnx", backend="tensorrt")


def test_bad_targets_and_profile(small_model, tmp_path):
    from streamer.errors import ConfigError

    with pytest.raises(ConfigError, match=r"cannot target compute capability 9\.0"):
        build_engine(small_model / "small.onnx", out_dir=tmp_path, compute_capabilities=("9.0",))
    with pytest.raises(ModelError, match="batch profile"):
        build_engine(small_model / "small.onnx", out_dir=tmp_path, profile=BatchProfile(8, 4, 2))


def test_build_engine_tool(small_model, tmp_path, capsys):
    import build_engine as tool
    out = tmp_path / "given.plan"
    assert tool.main([str(small_model / "small.onnx"), "--precision", "fp16", "--out", str(out),
                      "--max-batch", "16"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["plan"] == str(out) and summary["precision"] == "fp16" and out.is_file()
    assert (tmp_path / "given.plan.json").is_file()
    assert tool.main([str(tmp_path / "nope.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ONNX model not found") or err.startswith("error: model file not found")
