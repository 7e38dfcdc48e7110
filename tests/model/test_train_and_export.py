"""tools/train.py (tiny real runs), checkpoints, and the export of a fresh checkpoint with its errors."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import train as train_tool

from streamer.errors import ModelError
from streamer.model import shapes
from streamer.model.checkpoint import Checkpoint, load_checkpoint, load_pipeline_model, save_checkpoint
from streamer.model.export import export_model
from streamer.model.manifest import ModelManifest
from streamer.model.nets import build_net
from streamer.model.wrap import normalise_rgb

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_training_run_through_the_tool(tmp_path):
    out = tmp_path / "tiny.pth"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "train.py"), "--arch", "small_cnn", "--epochs", "2",
         "--n-train", "768", "--n-val", "128", "--batch-size", "64", "--workers", "1", "--out", str(out),
         "--no-progress", "--export"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    summary = json.loads(next(line for line in lines if line.startswith('{"checkpoint"')))
    assert summary["epochs"] == 2 and summary["n_train"] == 768 and 0 <= summary["val_accuracy"] <= 1
    assert "epoch 2/2" in proc.stdout
    exported = json.loads(lines[-1])  # then the export's own summary
    assert exported["onnx"] == str(tmp_path / "tiny.onnx") and exported["fp32_max_abs_err"] < 1e-4
    assert "check fp32: ONNX Runtime vs PyTorch max abs error" in proc.stdout
    for name in ("tiny.onnx", "tiny.fp16.onnx", "tiny.json"):
        assert (tmp_path / name).is_file()
    ckpt = load_checkpoint(out)
    assert ckpt.arch == "small_cnn" and ckpt.labels == shapes.LABELS and ckpt.dataset == "shapes"
    assert ckpt.val_accuracy == pytest.approx(summary["val_accuracy"], abs=1e-4)
    ckpt.build()  # loads into a fresh net


def write_cifar(root: Path) -> None:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in (*[f"data_batch_{i}" for i in range(1, 6)], "test_batch"):
        data = rng.integers(0, 256, (16, 3072), dtype=np.uint8)
        with open(d / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": [int(x) for x in rng.integers(0, 10, 16)]}, f)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)


def test_cifar_training_run(tmp_path, capsys):
    write_cifar(tmp_path / "data")
    out = tmp_path / "cifar.pth"
    data_dir = str(tmp_path / "data")
    assert train_tool.main(["--arch", "small_cnn", "--dataset", "cifar10", "--data-dir", data_dir,
                            "--epochs", "1", "--batch-size", "32", "--out", str(out), "--no-progress",
                            "--no-download"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n_train"] == 80
    ckpt = load_checkpoint(out)
    assert ckpt.labels == tuple(f"c{i}" for i in range(10)) and ckpt.dataset == "cifar10"


@pytest.mark.parametrize(("args", "needle"), [
    (["--dataset", "cifar10", "--data-dir", "{tmp}/none", "--no-download"], "cifar-10-batches-py"),
    (["--out", "{tmp}/model.txt"], "expected a .pth"),
    (["--epochs", "0"], "--epochs must be positive"),
    (["--lr", "-1"], "--lr must be positive"),
    pytest.param(["--device", "cuda:0"], "no CUDA GPU", marks=pytest.mark.skipif(torch.cuda.is_available(),
                                                                                   reason="has a GPU")),
])
def test_training_errors_are_one_line(tmp_path, capsys, args, needle):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert train_tool.main(["--arch", "small_cnn", "--n-train", "64", "--n-val", "32", "--no-progress",
                            "--out", str(tmp_path / "x.pth"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and err.count("\n") == 1


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(1)
    net = build_net("small_cnn", 10).eval()
    for m in net.modules():  # non-trivial BatchNorm statistics, so folding them is actually tested
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    ckpt = Checkpoint(arch="small_cnn", labels=shapes.LABELS, state_dict=net.state_dict(), mean=shapes.MEAN,
                      std=shapes.STD, dataset="shapes", val_accuracy=0.5)
    return save_checkpoint(ckpt, d / "fresh.pth"), net


def test_export_writes_the_contract(small_ckpt, tmp_path):
    pth, net = small_ckpt
    r = export_model(pth, tmp_path, "fresh", pt2=False)
    assert r.fp32_max_abs_err < 1e-4 and r.fp16_top1_agreement >= 0.95
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"fresh.onnx", "fresh.fp16.onnx", "fresh.json", "fresh.pth"}
    manifest = ModelManifest.from_onnx(r.onnx)
    assert manifest.extra["checkpoint"] == "fresh.pth" and "pt2" not in manifest.extra
    # BGR in, dynamic batch: the graph flips to RGB and normalises exactly like training did
    session = ort.InferenceSession(str(r.onnx), providers=["CPUExecutionProvider"])
    rgb = shapes.make_shapes(5, seed=9)[0]
    with torch.no_grad():
        logits = net(normalise_rgb(torch.from_numpy(rgb), shapes.MEAN, shapes.STD))
        expected = torch.softmax(logits, 1).numpy()
    for n in (1, 5):
        got = session.run(["scores"], {"images": np.ascontiguousarray(rgb[:n, ..., ::-1])})[0]
        np.testing.assert_allclose(got, expected[:n], atol=1e-5)
    # the PyTorch runtime path: manifest → arch → .pth, in fp16 too
    model16 = load_pipeline_model(tmp_path / "fresh.json", dtype=torch.float16)
    with torch.no_grad():
        got16 = model16(torch.from_numpy(np.ascontiguousarray(rgb[..., ::-1])))
    assert got16.dtype == torch.float32 and (got16.numpy().argmax(1) == expected.argmax(1)).mean() >= 0.8


def test_checkpoint_and_export_errors(small_ckpt, tmp_path):
    pth, net = small_ckpt
    with pytest.raises(ModelError, match="checkpoint not found"):
        export_model(tmp_path / "missing.pth", tmp_path)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a zip or pickle")
    with pytest.raises(ModelError, match=r"junk\.pth: not a readable PyTorch checkpoint"):
        export_model(junk, tmp_path)
    bare = tmp_path / "bare.pth"
    torch.save(net.state_dict(), bare)
    with pytest.raises(ModelError, match="bare state_dict without arch/labels"):
        load_checkpoint(bare)
    assert load_checkpoint(bare, arch="small_cnn", labels=shapes.LABELS).build() is not None
    with pytest.raises(ModelError, match="weights do not fit arch 'seed_cnn'"):
        load_checkpoint(bare, arch="seed_cnn", labels=shapes.LABELS).build(str(bare))
    export_model(pth, tmp_path, "tampered", fp16=False, pt2=False, check=False)
    (tmp_path / "tampered.pth").write_bytes(pth.read_bytes() + b"\0")
    with pytest.raises(ModelError, match="does not match the sha256"):
        load_pipeline_model(tmp_path / "tampered.onnx")
