"""The PyTorch-CUDA backend: graph buckets, its probe, and on a GPU graphs vs eager vs fp32 through the CUDA
executor (loading the model without its class: tests/model/test_torch_load.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch_helpers import images, reference, run_model, write_model

from streamer.backends import torch_cuda
from streamer.errors import BackendUnavailableError

GPU_REASON = torch_cuda.probe("torch")
needs_gpu = pytest.mark.skipif(GPU_REASON is not None, reason=f"needs a CUDA GPU: {GPU_REASON}")


# -- everywhere: buckets, probe ------------------------------------------------------------
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
        torch_cuda.load(write_model(tmp_path), max_batch=4)
    assert "\n" not in str(info.value) and GPU_REASON in str(info.value)


# -- GPU -----------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@needs_gpu
def test_graphs_eager_and_fp32_agree_for_every_batch_size(tmp_path: Path) -> None:
    path = write_model(tmp_path)
    x = images(24, seed=5).numpy()
    want = run_model(reference(), torch.from_numpy(x))
    results = {}
    variants = {"graphs": {}, "eager": {"cuda_graphs": False},
                "fp32": {"precision": "fp32", "cuda_graphs": False, "channels_last": False}}
    for label, kwargs in variants.items():
        backend = torch_cuda.load(path, max_batch=24, **kwargs)
        got = []
        with backend.make_executor(24, 2) as ex:
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
    path = write_model(tmp_path)
    x = images(32, seed=9).numpy()
    a = torch_cuda.load(path, max_batch=32, source="pt2", cuda_graphs=False)
    b = torch_cuda.load(path, max_batch=32, source="pth", cuda_graphs=False)
    assert a.source == "m.pt2" and b.source.startswith("m.pth")
    np.testing.assert_allclose(a.run_host(x), b.run_host(x), atol=2e-3)
    assert a.engine_id.endswith("/torch-fp16") and a.precision == "fp16"
