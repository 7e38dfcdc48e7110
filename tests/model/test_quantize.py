"""INT8 quantization of the shipped model from real files: a QDQ model calibrated on a rendered video runs in
ONNX Runtime on int8 kernels, and the accuracy gate refuses a model calibrated on constant images."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from streamer.backends import ort as ort_backend
from streamer.errors import DatasetError, ModelError
from streamer.model import shapes
from streamer.model.calibration import IMAGE_EXTENSIONS, load_samples, spread
from streamer.model.demo import DemoSpec, render_clip
from streamer.model.manifest import ModelManifest
from streamer.model.qdq import is_qdq, onnxruntime_form, onnxruntime_kernels
from streamer.model.quantize import AccuracyGateError, predict, quantize_model
from streamer.sources.images import IMAGE_EXTENSIONS as SOURCE_IMAGE_EXTENSIONS

REPO = Path(__file__).resolve().parents[2]
ENGINES = REPO / "engines"
CONVS = 20  # the shipped seed_cnn_bn


def copy_model(folder: Path) -> Path:
    """The shipped fp32 model and its manifest in ``folder`` (the quantizer writes beside its input)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("shapes_cnn.onnx", "shapes_cnn.json"):
        shutil.copyfile(ENGINES / name, folder / name)
    return folder / "shapes_cnn.onnx"


def write_labelled_folder(root: Path, per_class: int, seed: int) -> Path:
    """``root/<class>/<i>.png``: shapes images drawn at 64×64 (the pipeline resizes them to 32×32)."""
    images, labels = shapes.make_shapes(per_class * len(shapes.LABELS), seed, size=64)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / shapes.LABELS[label]
        folder.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(folder / f"{i}.png"), np.ascontiguousarray(image[..., ::-1]))
    return root


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A rendered demo clip (mp4v, with its truth file) and a labelled folder of held-out PNGs."""
    root = tmp_path_factory.mktemp("int8_media")
    video, _ = render_clip(root / "clip", DemoSpec(frames=60, size=128, segment=6, seed=11))
    return {"video": video, "eval": write_labelled_folder(root / "eval", per_class=20, seed=shapes.TEST_SEED)}


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory, media: dict[str, Path]):
    model = copy_model(tmp_path_factory.mktemp("int8_model"))
    return quantize_model(model, str(media["video"]), eval_source=str(media["eval"]), calib_samples=60)


def test_a_video_calibrated_qdq_model_runs_on_int8_kernels(quantized, media) -> None:
    r = quantized
    assert r.onnx.name == "shapes_cnn.int8.onnx" and r.manifest_json.name == "shapes_cnn.int8.json"
    assert r.calibration.startswith(str(media["video"])) and r.calibration_samples == 60
    model = onnx.load(str(r.onnx))
    onnx.checker.check_model(model)
    assert is_qdq(model)
    int8_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8 and t.dims]
    assert len(int8_weights) >= CONVS  # conv weights stored as int8, per channel
    # the manifest in the metadata and beside the model carries both accuracies of the gate
    manifest = ModelManifest.from_onnx(r.onnx)
    side = ModelManifest.from_json(r.manifest_json.read_text())
    assert manifest == side and manifest.precision == "int8" and manifest.labels == shapes.LABELS
    gate = manifest.extra["int8"]["gate"]
    assert gate["samples"] == 200 and gate["passed"] and gate["eval_source"].startswith(str(media["eval"]))
    assert gate["fp32_top1"] >= 0.97 and gate["int8_top1"] >= gate["fp32_top1"] - 0.01
    # ONNX Runtime fuses every conv into an int8 QLinearConv in the form the backend opens
    assert r.kernels.get("QLinearConv") == CONVS
    # and the backend runs it: predictions agree with fp32 on the held-out images
    held_out = load_samples(str(media["eval"]), (32, 32), shapes.LABELS, limit=None, purpose="evaluation")
    int8 = ort_backend.load(r.source_onnx, max_batch=32, precision="int8")
    fp32 = ort_backend.load(r.source_onnx, max_batch=32)
    try:
        assert int8.path == r.onnx and int8.engine_id.endswith("/onnxruntime-int8")
        assert fp32.engine_id.endswith("/onnxruntime")
        scores8 = np.empty((len(held_out), 10), np.float32)
        scores32 = np.empty_like(scores8)
        for i in range(0, len(held_out), 32):
            int8.infer(held_out.images[i:i + 32], scores8[i:i + 32])
            fp32.infer(held_out.images[i:i + 32], scores32[i:i + 32])
    finally:
        int8.close()
        fp32.close()
    assert (scores8.argmax(1) == scores32.argmax(1)).mean() >= 0.99
    assert np.allclose(scores8.sum(1), 1.0, atol=1e-3)  # the softmax stays float


def test_the_onnxruntime_form_is_what_turns_on_the_int8_kernels(quantized) -> None:
    """The QDQ file (TensorRT's form: symmetric int8 after each ReLU) runs float convs in ONNX Runtime; the
    uint8 re-typing of non-negative activations lets it fuse every conv into QLinearConv."""
    model = onnx.load(str(quantized.onnx))
    assert onnxruntime_kernels(model).get("QLinearConv", 0) == 0
    changed = onnxruntime_form(model)
    assert changed >= CONVS - 1  # the input of every conv but the first (normalised pixels can be negative)
    kernels = onnxruntime_kernels(model)
    assert kernels["QLinearConv"] == CONVS and kernels.get("Relu", 0) == 0


def test_constant_calibration_is_refused_with_both_accuracies_and_no_file(tmp_path, media) -> None:
    model = copy_model(tmp_path / "model")
    constant = tmp_path / "constant"
    constant.mkdir()
    for i in range(16):
        assert cv2.imwrite(str(constant / f"{i}.png"), np.full((64, 64, 3), 128, np.uint8))
    before = sorted(p.name for p in model.parent.iterdir())
    r = subprocess.run([sys.executable, str(REPO / "tools" / "quantize.py"), str(model),
                        "--calib", str(constant), "--eval", str(media["eval"])],
                       capture_output=True, text=True, timeout=240, cwd=REPO, stdin=subprocess.DEVNULL)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    line = lines[0]
    assert line.startswith("error: shapes_cnn.int8.onnx not written: int8 top-1 ")
    assert " vs fp32 " in line and "points lost > --max-drop 1" in line and str(constant) in line
    int8, fp32 = (float(x) for x in re.findall(r"(\d+\.\d+)%", line)[:2])
    assert fp32 - int8 > 1.0 and int8 < fp32
    assert sorted(p.name for p in model.parent.iterdir()) == before  # nothing written, no temporary left


def test_the_gate_in_the_package_raises_and_a_looser_gate_passes(tmp_path, media) -> None:
    model = copy_model(tmp_path / "model")
    constant = tmp_path / "constant"
    constant.mkdir()
    for i in range(4):
        assert cv2.imwrite(str(constant / f"{i}.png"), np.full((48, 48, 3), 128, np.uint8))
    with pytest.raises(AccuracyGateError) as err:
        quantize_model(model, str(constant), eval_source=str(media["eval"]))
    assert "not written" in err.value.message and not (model.parent / "shapes_cnn.int8.onnx").exists()
    loose = quantize_model(model, str(constant), eval_source=str(media["eval"]), max_drop=100)
    assert loose.gate.passed and loose.gate.drop_points > 1.0  # written, and the manifest says what it cost
    assert ModelManifest.from_onnx(loose.onnx).extra["int8"]["gate"]["drop_points"] == loose.gate.drop_points


def test_a_file_it_did_not_write_is_never_replaced(tmp_path, media) -> None:
    model = copy_model(tmp_path / "model")
    foreign = model.with_name("shapes_cnn.int8.onnx")
    shutil.copyfile(model, foreign)  # somebody's fp32 model under the int8 name
    with pytest.raises(ModelError, match=r"not an int8 model written by tools/quantize\.py"):
        quantize_model(model, str(media["video"]), eval_source=str(media["eval"]), calib_samples=8)
    assert foreign.read_bytes() == model.read_bytes()
    foreign.unlink()
    for kwargs, match in (({"out": tmp_path / "model" / "other.onnx"}, r"named <stem>\.int8\.onnx"),
                          ({"max_drop": -1.0}, "must be >= 0"), ({"calib_samples": 0}, "at least one")):
        with pytest.raises(ModelError, match=match):
            quantize_model(model, str(media["video"]), eval_source=str(media["eval"]), **kwargs)
    assert not (tmp_path / "model" / "other.json").exists()


def test_calibration_sources(tmp_path, media) -> None:
    assert IMAGE_EXTENSIONS == SOURCE_IMAGE_EXTENSIONS
    labels = shapes.LABELS
    video = load_samples(str(media["video"]), (32, 32), labels, limit=10, purpose="evaluation")
    assert video.images.shape == (10, 32, 32, 3) and video.labels is not None  # truth beside the clip
    folder = load_samples(str(media["eval"]), (32, 32), labels, limit=30, purpose="evaluation")
    assert len(folder) == 30 and folder.labels is not None and len(set(folder.labels.tolist())) >= 5
    train = load_samples("shapes", (32, 32), labels, limit=16)
    assert train.source == "shapes:train" and train.images.flags.c_contiguous
    assert list(spread(10, 4)) == [0, 3, 6, 9] and list(spread(3, None)) == [0, 1, 2]
    loose = tmp_path / "loose"
    loose.mkdir()
    cv2.imwrite(str(loose / "a.png"), np.zeros((40, 40), np.uint8))  # grey: converted like a source does
    unlabelled = load_samples(str(loose), (32, 32), labels, limit=None)
    assert unlabelled.labels is None and unlabelled.images.shape == (1, 32, 32, 3)
    odd = tmp_path / "odd" / "hexagon"
    odd.mkdir(parents=True)
    cv2.imwrite(str(odd / "0.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DatasetError, match="class 'hexagon' is not one of the model's"):
        load_samples(str(odd.parent), (32, 32), labels, limit=None, purpose="evaluation")
    for bad, match in (("nothing/here/*.png", "no such file, folder or glob"),
                       ("shapes:dev", "no such split")):
        with pytest.raises(DatasetError, match=match):
            load_samples(bad, (32, 32), labels, limit=4)


def test_predict_batches_match_one_run(quantized, media) -> None:
    from streamer.model.quantize import cpu_session

    held_out = load_samples(str(media["eval"]), (32, 32), shapes.LABELS, limit=None, purpose="evaluation")
    session = cpu_session(onnx.load(str(quantized.onnx)))
    whole = np.asarray(session.run(None, {"images": held_out.images})[0]).argmax(1)
    assert (predict(session, held_out.images) == whole).all()
