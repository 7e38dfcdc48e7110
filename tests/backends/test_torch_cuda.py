"""The PyTorch-CUDA backend: loading without the model class (.pt2 / .pth + arch), buckets, and on a GPU,
graphs vs eager vs ONNX Runtime through the CUDA executor.

Model loading is device-agnostic and runs here on the CPU with real files written by the model side's own
checkpoint code and ``torch.export``; the rest carries the ``gpu`` marker.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from streamer.backends import torch_cuda
from streamer.errors import BackendUnavailableError, ModelError
from streamer.model.checkpoint import Checkpoint, save_checkpoint
from streamer.model.manifest import ModelManifest, sha256_file
from streamer.model.nets import build_net
from streamer.model.wrap import PipelineModel

GPU_REASON = torch_cuda.probe("torch")
needs_gpu = pytest.mark.skipif(GPU_REASON is not None, reason=f"needs a CUDA GPU: {GPU_REASON}")
MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
LABELS = tuple("abcdefghij")


def _write_model(folder: Path, name: str = "m", *, pt2: str | None = "pipeline", seed: int = 0) -> Path:
    """Files as the export tool leaves them — ``name.json`` (manifest), ``name.pth`` and optionally
    ``name.pt2`` — for a small_cnn; returns the manifest's path (the runtime accepts it like the .onnx)."""
    torch.manual_seed(seed)
    net = build_net("small_cnn", len(LABELS)).eval()
    pth = save_checkpoint(Checkpoint(arch="small_cnn", labels=LABELS, state_dict=net.state_dict(), mean=MEAN,
                                     std=STD), folder / f"{name}.pth")
    manifest = ModelManifest(name=name, labels=LABELS, input_hw=(32, 32), mean=MEAN, std=STD,
                             arch="small_cnn", checkpoint_sha256=sha256_file(pth),
                             extra={"checkpoint": pth.name})
    (folder / f"{name}.json").write_text(manifest.to_json())
    example = torch.zeros((2, 32, 32, 3), dtype=torch.uint8)
    batch = torch.export.Dim("N", min=1, max=4096)
    if pt2 == "pipeline":  # what tools/export_onnx.py writes: the whole uint8 → softmax model
        program = torch.export.export(PipelineModel(net, MEAN, STD).eval(), (example,),
                                      dynamic_shapes={"images": {0: batch}})
        torch.export.save(program, str(folder / f"{name}.pt2"))
    elif pt2 == "net":  # a bare net program (float NCHW → logits)
        program = torch.export.export(net, (torch.zeros(2, 3, 32, 32),), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(folder / f"{name}.pt2"))
    elif pt2 == "garbage":
        (folder / f"{name}.pt2").write_bytes(b"not a torch.export archive")
    return folder / f"{name}.json"


def _reference(seed: int = 0) -> PipelineModel:
    torch.manual_seed(seed)
    return PipelineModel(build_net("small_cnn", len(LABELS)).eval(), MEAN, STD).eval()


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))


def _run(model: torch.nn.Module, x: torch.Tensor, autocast: bool = False) -> np.ndarray:
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.float16, enabled=autocast):
        return model(x).float().numpy()


# -- everywhere: buckets, probe, model rebuilding ------------------------------------------------------------
def test_bucket_sizes_cover_every_batch_up_to_the_max() -> None:
    assert torch_cuda.bucket_sizes(64) == (1, 2, 4, 8, 16, 32, 64)
    assert torch_cuda.bucket_sizes(48) == (1, 2, 4, 8, 16, 32, 48)
    assert torch_cuda.bucket_sizes(1) == (1,)
    buckets = torch_cuda.bucket_sizes(48)
    for n in range(1, 49):
        b = torch_cuda.bucket_for(n, buckets)
        assert b >= n and (b == 1 or buckets[buckets.index(b) - 1] < n)
    with pytest.raises(ValueError, match="exceeds"):
        torch_cuda.bucket_for(49, buckets)


@pytest.mark.skipif(GPU_REASON is None, reason="checks the CPU-only machine's refusal")
def test_without_a_gpu_load_says_why_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailableError) as info:
        torch_cuda.load(_write_model(tmp_path), max_batch=4)
    assert "\n" not in str(info.value) and GPU_REASON in str(info.value)


@pytest.mark.parametrize("pt2", ["pipeline", "net"])
def test_pt2_is_preferred_and_computes_the_exported_model(tmp_path: Path, pt2: str) -> None:
    path = _write_model(tmp_path, pt2=pt2)
    loaded = torch_cuda.build_model(path, precision="fp32", device="cpu")
    assert loaded.origin == "m.pt2" and not loaded.autocast
    x = _images(16)
    np.testing.assert_allclose(_run(loaded.model, x), _run(_reference(), x), atol=1e-5)


def test_pipeline_pt2_in_fp16_separates_the_net_and_casts_its_weights(tmp_path: Path) -> None:
    loaded = torch_cuda.build_model(_write_model(tmp_path), precision="fp16", device="cpu")
    assert loaded.origin == "m.pt2" and not loaded.autocast
    assert {p.dtype for p in loaded.model.net.parameters()} == {torch.float16}
    x = _images(64, seed=3)
    got, want = _run(loaded.model, x), _run(_reference(), x)
    assert got.dtype == np.float32
    assert np.abs(got - want).max() < 2e-2
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.95


def test_without_pt2_the_net_is_rebuilt_from_pth_and_arch(tmp_path: Path) -> None:
    path = _write_model(tmp_path, pt2=None)
    loaded = torch_cuda.build_model(path, precision="fp32", device="cpu")
    assert loaded.origin == "m.pth + arch 'small_cnn'"
    x = _images(8, seed=1)
    np.testing.assert_allclose(_run(loaded.model, x), _run(_reference(), x), atol=1e-6)


def test_a_broken_pt2_falls_back_to_the_pth_with_a_warning(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    path = _write_model(tmp_path, pt2="garbage")
    loaded = torch_cuda.build_model(path, precision="fp32", device="cpu")
    assert loaded.origin.startswith("m.pth")
    assert "m.pt2 does not load or run here" in caplog.text
    with pytest.raises(ModelError, match=r"m\.pt2: does not load"):
        torch_cuda.build_model(path, precision="fp32", source="pt2", device="cpu")


def test_missing_files_are_named(tmp_path: Path) -> None:
    path = _write_model(tmp_path, pt2=None)
    (tmp_path / "m.pth").unlink()
    with pytest.raises(ModelError, match=r"needs m\.pt2 or m\.pth"):
        torch_cuda.build_model(path, device="cpu")
    with pytest.raises(ModelError, match="model file not found"):
        torch_cuda.build_model(tmp_path / "nothing.onnx", device="cpu")
    other = tmp_path / "other"
    other.mkdir()
    _write_model(other, "x", pt2="pipeline").unlink()  # a .pt2 without its manifest
    with pytest.raises(ModelError, match=r"no manifest x\.json"):
        torch_cuda.build_model(other / "x.pt2", device="cpu")


def test_a_pth_that_does_not_match_the_arch_is_refused(tmp_path: Path) -> None:
    path = _write_model(tmp_path, pt2=None)
    manifest = json.loads((tmp_path / "m.json").read_text())
    manifest["arch"] = "seed_cnn"
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="seed_cnn"):
        torch_cuda.build_model(path, device="cpu")


# -- GPU -----------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@needs_gpu
def test_graphs_eager_and_fp32_agree_for_every_batch_size(tmp_path: Path) -> None:
    from streamer.executors.cuda import CudaExecutor

    path = _write_model(tmp_path)
    x = _images(24, seed=5).numpy()
    want = _run(_reference(), torch.from_numpy(x))
    results = {}
    variants = {"graphs": {}, "eager": {"cuda_graphs": False},
                "fp32": {"precision": "fp32", "cuda_graphs": False, "channels_last": False}}
    for label, kwargs in variants.items():
        backend = torch_cuda.load(path, max_batch=24, **kwargs)
        got = []
        with CudaExecutor(backend, 24, num_slots=2) as ex:
            for n in range(1, 25):  # every partial batch size, each through its bucket's graph
                slot = ex.acquire(timeout=30)
                assert slot is not None
                slot.host_input[:n] = x[:n]
                slot.count = n
                ex.submit(slot)
                done = ex.collect(timeout=30)
                assert done is slot and done.error is None
                got.append(done.host_output[:n].copy())
                ex.release(done)
        results[label] = got
    for n in range(1, 25):
        # fp32 on the GPU still convolves in TF32 (cuDNN's default, as for any PyTorch user): ~1e-4 off
        np.testing.assert_allclose(results["fp32"][n - 1], want[:n], atol=1e-3)
        np.testing.assert_allclose(results["graphs"][n - 1], results["eager"][n - 1], atol=1e-3)
        assert np.abs(results["graphs"][n - 1] - want[:n]).max() < 2e-2


@pytest.mark.gpu
@needs_gpu
def test_pt2_and_pth_sources_agree_on_the_gpu(tmp_path: Path) -> None:
    path = _write_model(tmp_path)
    x = _images(32, seed=9).numpy()
    a = torch_cuda.load(path, max_batch=32, source="pt2", cuda_graphs=False)
    b = torch_cuda.load(path, max_batch=32, source="pth", cuda_graphs=False)
    assert a.source == "m.pt2" and b.source.startswith("m.pth")
    np.testing.assert_allclose(a.run_host(x), b.run_host(x), atol=2e-3)
    assert a.engine_id.endswith("/torch-fp16") and a.precision == "fp16"
