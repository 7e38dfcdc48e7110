"""``--precision fp32|fp16|int8|auto``: the sibling model each backend opens, and one-line errors where a
backend cannot run it or the sibling is missing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from streamer_helpers import make_color_model, run_cli

from streamer.backends import ort
from streamer.backends.select import choose, precision_reason
from streamer.errors import ConfigError, ModelError
from streamer.model.variants import stem_of, variant_path

ENGINES = Path(__file__).resolve().parents[2] / "engines"
FP32 = ENGINES / "shapes_cnn.onnx"


@pytest.mark.parametrize(("given", "precision", "opened", "suffix"), [
    ("shapes_cnn.onnx", None, "shapes_cnn.onnx", "/onnxruntime"),
    ("shapes_cnn.onnx", "int8", "shapes_cnn.int8.onnx", "/onnxruntime-int8"),
    ("shapes_cnn.onnx", "fp16", "shapes_cnn.fp16.onnx", "/onnxruntime-fp16"),
    ("shapes_cnn.int8.onnx", "fp32", "shapes_cnn.onnx", "/onnxruntime"),
    ("shapes_cnn.int8.onnx", "auto", "shapes_cnn.int8.onnx", "/onnxruntime-int8"),
])
def test_onnxruntime_opens_the_sibling(given: str, precision: str | None, opened: str, suffix: str) -> None:
    backend = ort.load(ENGINES / given, max_batch=4, precision=precision)
    try:
        assert backend.path.name == opened and backend.engine_id.endswith(suffix)
    finally:
        backend.close()


def test_variant_names() -> None:
    assert variant_path(Path("a/x.fp16.onnx"), "int8") == Path("a/x.int8.onnx")
    assert variant_path(Path("x.int8.onnx"), "fp32") == Path("x.onnx")
    assert stem_of("x.int8.onnx") == stem_of("x.fp16.onnx") == stem_of("x.onnx") == "x"


def test_a_missing_sibling_says_how_to_make_it(tmp_path: Path) -> None:
    model = make_color_model(tmp_path / "color.onnx")
    with pytest.raises(ModelError) as err:
        ort.load(model, max_batch=4, precision="int8")
    assert str(err.value) == (f"--precision int8: color.int8.onnx is not beside color.onnx (hint: make it "
                              f"(calibrated, accuracy-gated): python tools/quantize.py {model} --calib "
                              "IMAGES_OR_VIDEO --eval LABELLED_FOLDER, or drop --precision)")
    shutil.copyfile(model, tmp_path / "color.int8.onnx")  # an fp32 model under the int8 name
    with pytest.raises(ModelError, match="--precision int8 wanted, but it is a fp32 model"):
        ort.load(model, max_batch=4, precision="int8")


def test_the_torch_backend_cannot_run_int8() -> None:
    assert precision_reason("torch", "int8") == "it runs fp32 and fp16 models, not int8"
    assert precision_reason("onnxruntime", "int8") is None and precision_reason("torch", "auto") is None
    with pytest.raises(ConfigError) as err:
        choose("torch", "int8")
    assert str(err.value).startswith("--backend torch cannot run --precision int8")
    assert "--backend tensorrt / tensorrt-rtx / onnxruntime for int8" in str(err.value)
    selection = choose("auto", "int8")
    assert ("torch", "it runs fp32 and fp16 models, not int8") in selection.skipped


def test_cli_runs_the_demo_in_int8_and_refuses_torch(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    r = run_cli("--source", "demo", "--precision", "int8", "--bind", "none", "--summary-json", str(summary))
    assert r.returncode == 0, r.stderr
    assert "demo accuracy: 300/300 = 100.0% top-1" in r.stdout
    assert json.loads(summary.read_text())["model"].endswith("/onnxruntime-int8")
    r = run_cli("--source", "demo", "--precision", "int8", "--backend", "torch", "--bind", "none")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "--backend torch cannot run --precision int8" in r.stderr
