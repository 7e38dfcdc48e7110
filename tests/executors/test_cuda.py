"""The CUDA executor (pycuda slots, streams, events) driving the PyTorch-CUDA backend on a real GPU.

GPU tests carry the ``gpu`` marker and skip without CUDA/pycuda/torch-with-CUDA. The checks that need no GPU
(which backends it accepts, what it says without pycuda) run everywhere.
"""

from __future__ import annotations

import gc
import itertools
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from streamer.backends import torch_cuda
from streamer.backends.base import Backend, CudaBackend
from streamer.cuda_env import pycuda_reason
from streamer.errors import BackendUnavailableError, ConfigError
from streamer.model.manifest import ModelManifest

REPO = Path(__file__).resolve().parents[2]
GPU_REASON = torch_cuda.probe("torch")
needs_gpu = pytest.mark.skipif(GPU_REASON is not None, reason=f"needs a CUDA GPU: {GPU_REASON}")
TIMEOUT = 30.0


class FakeCudaBackend(CudaBackend):
    """A CUDA backend whose engine does nothing (D2H returns the device output as is); can fail on cue."""

    name = "fake-cuda"

    def __init__(self, manifest: ModelManifest, max_batch: int, fail_on: set[int] | None = None) -> None:
        super().__init__(manifest, max_batch)
        self.fail_on = fail_on or set()
        self.calls = 0

    def bind(self, slot: object) -> None:
        return None

    def enqueue(self, slot: object, n: int) -> None:
        self.calls += 1
        if self.calls in self.fail_on:
            raise RuntimeError(f"engine failure on call {self.calls}")


def _manifest() -> ModelManifest:
    return ModelManifest(name="fake", labels=("a", "b", "c"), input_hw=(8, 8), mean=(0, 0, 0), std=(1, 1, 1))


# -- everywhere ----------------------------------------------------------------------------------------------
def test_refuses_a_batch_above_the_backends() -> None:
    from streamer.executors.cuda import CudaExecutor

    with pytest.raises(ConfigError, match="exceeds"):
        CudaExecutor(FakeCudaBackend(_manifest(), 4), 8)


@pytest.mark.skipif(pycuda_reason() is None, reason="pycuda is installed here")
def test_without_pycuda_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamer.executors.cuda import CudaExecutor

    monkeypatch.setitem(sys.modules, "pycuda", None)  # make the import fail even if a stub were around
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    with pytest.raises(BackendUnavailableError, match=r"streamer\[cuda\]"):
        CudaExecutor(FakeCudaBackend(_manifest(), 4), 4)


# -- GPU -----------------------------------------------------------------------------------------------------
def _seed_model(tmp: Path) -> Path:
    """The committed default model when present (with its .pth), else a random-weights SeedCNN, exported."""
    default = REPO / "engines" / "shapes_cnn.onnx"
    if default.is_file() and default.with_suffix(".pth").is_file():
        return default
    import bench_models

    path, _ = bench_models.seed_model(tmp, prefer_default=False)
    return path


@pytest.fixture(scope="module")
def seed_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if GPU_REASON is not None:
        pytest.skip(f"needs a CUDA GPU: {GPU_REASON}")
    return _seed_model(tmp_path_factory.mktemp("seed"))


@pytest.fixture(scope="module")
def ort_backend(seed_onnx: Path) -> Iterator[Backend]:
    from streamer.backends import ort

    backend = ort.load(seed_onnx, max_batch=64)
    yield backend
    backend.close()


def _images(n: int, seed: int, hw: tuple[int, int] = (32, 32)) -> np.ndarray:
    """Varied content: noise, flat colours and gradients, so top-1 is not one class for every row."""
    rng = np.random.default_rng(seed)
    out = rng.integers(0, 256, (n, *hw, 3), dtype=np.uint8)
    for i in range(0, n, 3):
        out[i] = rng.integers(0, 256, 3, dtype=np.uint8)
    ramp = np.linspace(0, 255, hw[1], dtype=np.float32)
    for i in range(1, n, 3):
        c = rng.integers(0, 3)
        out[i, :, :, c] = ramp.astype(np.uint8)[None, :]
    return out


def _ort_scores(ort_backend: Backend, images: np.ndarray) -> np.ndarray:
    out = np.empty((len(images), ort_backend.manifest.num_classes), np.float32)
    ort_backend.infer(images, out)
    return out


def _run(ex: object, batches: list[np.ndarray]) -> list[np.ndarray]:
    """Submit from a producer thread, collect here (the pipeline's threading), results copied out in order."""
    from streamer.executors.cuda import CudaExecutor

    assert isinstance(ex, CudaExecutor)
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            for i, images in enumerate(batches):
                slot = ex.acquire(timeout=TIMEOUT)
                assert slot is not None, "no free slot"
                slot.host_input[: len(images)] = images
                slot.count = len(images)
                slot.tags.append(i)
                ex.submit(slot)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    results = []
    for i in range(len(batches)):
        slot = ex.collect(timeout=TIMEOUT)
        assert slot is not None, f"batch {i} not collected in {TIMEOUT} s ({errors})"
        assert slot.error is None, slot.error
        assert slot.tags == [i], f"out of order: expected batch {i}, got {slot.tags}"
        results.append(slot.host_output[: slot.count].copy())
        ex.release(slot)
    t.join(TIMEOUT)
    assert not errors, errors
    return results


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("graphs", [True, False], ids=["graphs", "eager"])
def test_outputs_match_onnxruntime_for_full_and_partial_batches(seed_onnx: Path, ort_backend: Backend,
                                                                graphs: bool) -> None:
    from streamer.executors.cuda import CudaExecutor
    from streamer.model.export import check_images

    backend = torch_cuda.load(seed_onnx, max_batch=32, cuda_graphs=graphs)
    counts = [32, 1, 7, 32, 17, 2, 31, 32, 16, 5, 32, 9] * 2 + [32, 32]
    # the export tool's own check set: real dataset samples (for the shapes model) and noise; pure noise
    # puts a trained model's top-2 within fp16 rounding of each other on ~1 image in 200
    images = check_images(backend.manifest, sum(counts))
    starts = np.cumsum([0, *counts])
    batches = [images[a:b] for a, b in itertools.pairwise(starts)]
    with CudaExecutor(backend, 32, num_slots=2) as ex:
        got = _run(ex, batches)
    want = [_ort_scores(ort_backend, b) for b in batches]
    got_all, want_all = np.concatenate(got), np.concatenate(want)
    assert got_all.shape == want_all.shape == (sum(counts), backend.manifest.num_classes)
    agreement = float((got_all.argmax(1) == want_all.argmax(1)).mean())
    max_diff = float(np.abs(got_all - want_all).max())
    print(f"top-1 agreement {agreement:.4f}, max |Δscore| {max_diff:.2e} over {len(got_all)} images")
    assert agreement >= 0.99
    assert max_diff < 2e-2  # fp16 vs fp32 probabilities
    np.testing.assert_allclose(got_all.sum(1), 1.0, atol=1e-3)


@pytest.mark.gpu
@needs_gpu
def test_a_slot_is_never_overwritten_while_in_flight(seed_onnx: Path) -> None:
    """Every batch is stamped (its own content and tag); each result must be its own batch's, exactly."""
    from streamer.executors.cuda import CudaExecutor

    backend = torch_cuda.load(seed_onnx, max_batch=32)
    patterns = [_images(n, seed=1000 + i) for i, n in enumerate([32, 11, 32, 3, 32, 27, 32, 1])]
    with CudaExecutor(backend, 32, num_slots=1) as ex:  # one slot: nothing can overlap, the reference
        reference = _run(ex, patterns)
    for i in range(len(patterns)):  # the stamps are distinguishable at the tolerance used below
        for j in range(i + 1, len(patterns)):
            k = min(len(reference[i]), len(reference[j]))
            assert np.abs(reference[i][:k] - reference[j][:k]).max() > 1e-4
    order = [i % len(patterns) for i in range(600)]
    with CudaExecutor(backend, 32, num_slots=3) as ex:
        got = _run(ex, [patterns[k] for k in order])
    for n, (k, result) in enumerate(zip(order, got, strict=True)):
        np.testing.assert_allclose(result, reference[k], rtol=0, atol=1e-5,
                                   err_msg=f"batch {n} (pattern {k}) got another batch's data")


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.gpu
@needs_gpu
def test_ten_thousand_batches_grow_neither_host_nor_device_memory(seed_onnx: Path) -> None:
    import pycuda.driver as cuda
    import torch

    from streamer.executors.cuda import CudaExecutor

    backend = torch_cuda.load(seed_onnx, max_batch=16)
    batch = _images(16, seed=7)
    counts = [16, 9, 16, 1]

    def run_batches(ex: CudaExecutor, n: int) -> None:
        submitted = collected = 0
        while collected < n:
            while submitted < n and submitted - collected < len(ex.slots):
                slot = ex.acquire(timeout=TIMEOUT)
                assert slot is not None
                k = counts[submitted % len(counts)]
                slot.host_input[:k] = batch[:k]
                slot.count = k
                ex.submit(slot)
                submitted += 1
            slot = ex.collect(timeout=TIMEOUT)
            assert slot is not None and slot.error is None
            ex.release(slot)
            collected += 1

    with CudaExecutor(backend, 16, num_slots=2) as ex:
        run_batches(ex, 500)  # warm-up: allocator pools, lazy module loads
        gc.collect()
        with ex.context.active():
            free_before, _ = cuda.mem_get_info()
        torch_before = torch.cuda.memory_allocated()
        rss_before = _rss_bytes()
        run_batches(ex, 10_000)
        gc.collect()
        with ex.context.active():
            free_after, _ = cuda.mem_get_info()
        torch_after = torch.cuda.memory_allocated()
        rss_after = _rss_bytes()
    print(f"host RSS {rss_before / 2**20:.1f} → {rss_after / 2**20:.1f} MiB; device free "
          f"{free_before / 2**20:.1f} → {free_after / 2**20:.1f} MiB; "
          f"torch allocated {torch_before} → {torch_after}")
    assert torch_after == torch_before
    assert free_before - free_after < 2 << 20  # device: less than 2 MiB over 10,000 batches
    assert rss_after - rss_before < 8 << 20  # host: under 840 bytes a batch


@pytest.mark.gpu
@pytest.mark.skipif(pycuda_reason() is not None or GPU_REASON is not None, reason="needs pycuda and a GPU")
def test_a_failing_batch_comes_back_with_its_error_and_the_next_ones_run() -> None:
    from streamer.executors.cuda import CudaExecutor

    backend = FakeCudaBackend(_manifest(), 4, fail_on={2})
    with CudaExecutor(backend, 4, num_slots=2) as ex:
        outcomes = []
        for i in range(4):
            slot = ex.acquire(timeout=TIMEOUT)
            assert slot is not None
            slot.count = 4
            slot.tags.append(i)
            ex.submit(slot)
            done = ex.collect(timeout=TIMEOUT)
            assert done is not None and done.tags == [i]
            outcomes.append(None if done.error is None else str(done.error))
            ex.release(done)
    assert outcomes == [None, "engine failure on call 2", None, None]


@pytest.mark.gpu
@pytest.mark.skipif(pycuda_reason() is not None or GPU_REASON is not None, reason="needs pycuda and a GPU")
def test_collect_times_out_instead_of_hanging_and_close_frees_the_slots() -> None:
    from streamer.executors.cuda import CudaExecutor

    ex = CudaExecutor(FakeCudaBackend(_manifest(), 4), 4, num_slots=2)
    assert ex.collect(timeout=0.05) is None  # nothing submitted
    slot = ex.acquire(timeout=1.0)
    assert slot is not None
    slot.count = 1
    ex.submit(slot)
    assert ex.collect(timeout=TIMEOUT) is slot
    ex.release(slot)
    ex.close()
    assert ex.acquire(timeout=0.05) is None  # closed: no more slots handed out
