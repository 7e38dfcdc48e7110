"""INT8 TensorRT-RTX plans built on the CPU from the QDQ ONNX (explicit quantization), and the plan identity,
sibling choice and tool options that go with them. Running such a plan needs an Ampere/Ada/Blackwell GPU."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from streamer.engine import Machine, PlanIdentity, flavour, plans
from streamer.engine.build import build_engine, onnx_precision, resolve_onnx
from streamer.errors import ModelError
from streamer.model.manifest import sha256_file

pytestmark = pytest.mark.skipif(not flavour.installed("tensorrt-rtx"), reason="tensorrt_rtx is not installed")

ENGINES = Path(__file__).resolve().parents[2] / "engines"
INT8 = ENGINES / "shapes_cnn.int8.onnx"


def test_an_int8_plan_builds_on_the_cpu_from_the_qdq_onnx(tmp_path: Path) -> None:
    result = build_engine(ENGINES / "shapes_cnn.onnx", precision="int8", out_dir=tmp_path,
                          backend="tensorrt-rtx")
    ident = result.identity
    assert result.onnx == INT8 and not result.reused
    assert ident.precision == "int8" and ident.onnx_file == "shapes_cnn.int8.onnx"
    assert ident.onnx_sha256 == sha256_file(INT8) and ".int8.b1-32-64.plan" in result.plan.name
    assert result.plan.stat().st_size == ident.plan_bytes > 100_000
    assert ident.pth_bytes == (ENGINES / "shapes_cnn.pth").stat().st_size
    assert PlanIdentity.read(result.plan) == ident
    assert json.loads(Path(str(result.plan) + ".json").read_text())["precision"] == "int8"
    # a plan of one precision is not taken for another
    rtx = Machine("tensorrt-rtx", ident.backend_version, "8.9")
    assert ident.mismatches(rtx, precision="int8") == []
    assert ident.mismatches(rtx, precision="fp16") == ["plan is int8, fp16 was asked for"]


def test_the_int8_onnx_is_its_own_precision(tmp_path: Path) -> None:
    assert onnx_precision(INT8)[0] == "int8"
    assert resolve_onnx(INT8, None)[1] == "int8" and resolve_onnx(INT8, "fp32")[0].name == "shapes_cnn.onnx"
    # auto on the int8 model means int8 (not the fp16 sibling it also has)
    machine = Machine("tensorrt-rtx", flavour.import_flavour("tensorrt-rtx").version, "8.6")
    decision = plans.resolve_plan(INT8, flavour="tensorrt-rtx", max_batch=8, plans_dir=tmp_path,
                                  machine=machine)
    assert (decision.action, decision.precision, decision.onnx) == ("build", "int8", INT8)


def test_no_int8_sibling_names_the_quantize_command(small_model: Path) -> None:
    with pytest.raises(ModelError) as err:
        resolve_onnx(small_model / "small.onnx", "int8")
    assert "small.int8.onnx not found" in err.value.message
    assert f"python tools/quantize.py {small_model / 'small.onnx'} --calib shapes" in (err.value.hint or "")
    assert "tools/build_engine.py" in plans.build_command(small_model / "small.int8.onnx", "tensorrt-rtx",
                                                          "int8", 8)


def test_build_engine_tool_quantizes_then_builds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import build_engine as tool

    for name in ("shapes_cnn.onnx", "shapes_cnn.json"):
        shutil.copyfile(ENGINES / name, tmp_path / name)
    rc = tool.main([str(tmp_path / "shapes_cnn.onnx"), "--precision", "int8", "--calib", "shapes",
                    "--calib-samples", "64", "--eval-samples", "300", "--backend", "tensorrt-rtx",
                    "--cc", "8.6", "--max-batch", "16"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "gate passed: top-1 int8" in out and "ONNX Runtime int8 kernels: 1 QGemm, 20 QLinearConv" in out
    record = json.loads(out.strip().splitlines()[-1])
    assert record["precision"] == "int8" and record["onnx_file"] == "shapes_cnn.int8.onnx"
    assert Path(record["plan"]).is_file() and (tmp_path / "shapes_cnn.int8.json").is_file()
    # --calib belongs to --precision int8
    assert tool.main([str(tmp_path / "shapes_cnn.onnx"), "--calib", "shapes"]) == 2
    assert "--calib calibrates an int8 model" in capsys.readouterr().err
