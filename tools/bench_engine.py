"""Engine-level figures, side by side in one run, on the seed CNN (32×32) and a random ResNet-50 (224×224).

Sections (GPU ones need a CUDA GPU, pycuda and torch with CUDA; without them they are listed as skipped):
  engine      engine-only images/s per batch size: the backend on one slot, input already on the device
              (ONNX Runtime CPU always; PyTorch-CUDA fp16 + CUDA graphs; TensorRT where it can run)
  executor    the CUDA executor end to end (host fill → H2D → engine → D2H → results copied out) with
              1, 2 and 3 slots at one batch size
  h2d         host→device copy GB/s from pinned and from pageable memory
  input       uint8 NHWC input (the product's) vs float32 NCHW input (pre-normalised; and normalised on
              the CPU per batch, what a pipeline without in-graph preprocessing pays)
  batch1      PyTorch-CUDA fp16 + graphs vs eager fp32 PyTorch at batch 1
Then the targets of issue 4 as ratios of figures from this run.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import statistics
import tempfile
import threading
import time
import traceback
import types
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("bench.engine")

HELP = "engine-level figures: engine-only img/s, executor slots, H2D, uint8 vs float32, graphs vs eager"

MODELS = ("seed", "resnet50")
TARGETS = {
    "exec2_vs_engine": 0.90,
    "exec2_vs_exec1": 1.30,
    "graphs_fp16_vs_eager_fp32": 3.0,
    "pinned_vs_best_h2d": 0.80,
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default=",".join(MODELS), help="comma list of: seed, resnet50")
    p.add_argument("--batches", default="1,8,32,64,256", help="engine-only batch sizes")
    p.add_argument("--slots", default="1,2,3", help="executor slot counts")
    p.add_argument("--exec-batch", type=int, default=64, help="batch size for executor/input sections")
    p.add_argument("--seconds", type=float, default=1.0, help="target seconds per measured point")
    p.add_argument("--ort-max-seconds", type=float, default=2.0,
                   help="skip ONNX Runtime points whose single batch would take longer than this")
    p.add_argument("--no-ort", action="store_true", help="skip the ONNX Runtime CPU engine figures")
    p.add_argument("--cpu-only", action="store_true", help="skip the GPU sections even with a GPU")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="where on-the-spot model exports go (default: a temporary folder)")
    p.add_argument("--no-default-model", action="store_true",
                   help="use a random-weights SeedCNN even when engines/shapes_cnn.onnx exists")


# -- records -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Point:
    section: str
    model: str
    variant: str
    batch: int
    images_per_s: float
    ms_per_batch: float
    extra: dict[str, Any]

    def __post_init__(self) -> None:
        if self.batch < 1 or self.images_per_s < 0:
            raise ValueError(f"bad point {self}")


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    value: float | None
    goal: float
    note: str = ""

    @property
    def met(self) -> bool | None:
        return None if self.value is None else self.value >= self.goal


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _timed_loop(step: Callable[[], None], sync: Callable[[], None], seconds: float,
                min_iters: int = 5, warmup: int = 3) -> tuple[int, float]:
    """Run ``step`` enough times to fill ``seconds`` (calibrated), return (iterations, elapsed s)."""
    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    calib = 0
    while calib < min_iters or time.perf_counter() - t0 < min(0.1, seconds / 5):
        step()
        calib += 1
    sync()
    per = (time.perf_counter() - t0) / calib
    n = max(min_iters, int(seconds / max(per, 1e-7)))
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    sync()
    return n, time.perf_counter() - t0


# -- machine -------------------------------------------------------------------------------------------------
def _gpu_reason() -> str | None:
    from streamer.backends import torch_cuda

    return torch_cuda.probe("torch")


def _machine() -> dict[str, Any]:
    import os

    import onnxruntime

    from streamer.cuda_env import gpu_info

    info: dict[str, Any] = {"cpus": os.cpu_count(), "onnxruntime": onnxruntime.__version__}
    gpu = gpu_info()
    if gpu:
        info["gpu"] = {"name": gpu.name, "compute_capability": gpu.cc_string,
                       "memory_gib": round(gpu.total_memory / 2**30, 1), "driver": gpu.driver_version}
    if importlib.util.find_spec("torch"):
        import torch

        info["torch"] = torch.__version__
    for mod in ("pycuda", "tensorrt", "tensorrt_rtx"):
        if importlib.util.find_spec(mod):
            with contextlib.suppress(Exception):
                m = __import__(mod)
                info[mod] = getattr(m, "VERSION_TEXT", None) or getattr(m, "__version__", "?")
    return info


# -- models --------------------------------------------------------------------------------------------------
@dataclass
class BenchModel:
    key: str
    onnx: Path
    source: str
    manifest: Any
    net: Any = None  # bare torch net (ResNet-50); None: load through the torch backend from the files

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.manifest.input_hw


def _prepare_models(keys: list[str], work: Path, prefer_default: bool) -> list[BenchModel]:
    import bench_models

    from streamer.model.manifest import ModelManifest

    out = []
    for key in keys:
        if key == "seed":
            path, source = bench_models.seed_model(work, prefer_default=prefer_default)
            out.append(BenchModel("seed", path, source, ModelManifest.from_onnx(path)))
        elif key == "resnet50":
            path, net = bench_models.resnet50_model(work)
            out.append(BenchModel("resnet50", path, "compact ResNet-50, random weights",
                                  ModelManifest.from_onnx(path), net))
        else:
            raise SystemExit(f"unknown model {key!r}; choose from {', '.join(MODELS)}")
    return out


def _images(n: int, hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *hw, 3), dtype=np.uint8)


# -- ONNX Runtime (CPU) engine-only --------------------------------------------------------------------------
def bench_ort(model: BenchModel, batches: list[int], seconds: float, max_seconds: float,
              skipped: list[str]) -> list[Point]:
    from streamer.backends import ort

    backend = ort.load(model.onnx, max_batch=max(batches))
    points = []
    per_image = None
    for b in sorted(batches):
        if per_image is not None and per_image * b > max_seconds:
            skipped.append(f"onnxruntime-cpu {model.key} batch {b}: one batch would take "
                           f"~{per_image * b:.1f} s (> --ort-max-seconds {max_seconds:g})")
            continue
        x = _images(b, model.input_hw)
        out = np.empty((b, model.manifest.num_classes), np.float32)
        n, dt = _timed_loop(lambda x=x, out=out: backend.infer(x, out), lambda: None, seconds,
                            min_iters=2, warmup=1)
        per_image = dt / (n * b)
        points.append(Point("engine", model.key, f"onnxruntime-cpu ({backend.threads} thr)", b,
                            n * b / dt, 1e3 * dt / n, {}))
    backend.close()
    return points


# -- GPU -----------------------------------------------------------------------------------------------------
def _torch_backend(model: BenchModel, max_batch: int, buckets: list[int] | None, *, precision: str = "fp16",
                   graphs: bool = True, channels_last: bool = True, source: str = "auto") -> Any:
    from streamer.backends import torch_cuda

    if model.net is not None:
        import copy

        return torch_cuda.from_module(copy.deepcopy(model.net), model.manifest, max_batch,
                                      precision=precision, cuda_graphs=graphs, channels_last=channels_last,
                                      graph_buckets=buckets)
    return torch_cuda.load(model.onnx, max_batch, precision=precision, cuda_graphs=graphs,
                           channels_last=channels_last, graph_buckets=buckets, source=source)


@contextlib.contextmanager
def _executor(backend: Any, max_batch: int, slots: int) -> Iterator[Any]:
    from streamer.executors.cuda import CudaExecutor

    ex = CudaExecutor(backend, max_batch, num_slots=slots)
    try:
        yield ex
    finally:
        ex.close()


def bench_engine_only(backend: Any, model: BenchModel, batches: list[int], seconds: float,
                      variant: str) -> list[Point]:
    """The backend alone on one slot's stream; input already on the device (no copies, no host work)."""
    points = []
    with _executor(backend, max(batches), 1) as ex:
        slot = ex.slots[0]
        with ex.context.active():
            slot.device_input.set(_images(slot.capacity, model.input_hw).astype(slot.device_input.dtype))
            for b in batches:
                n, dt = _timed_loop(lambda b=b: backend.enqueue(slot, b), slot.stream.synchronize, seconds)
                lat = []
                for _ in range(min(50, max(5, n // 10))):
                    t0 = time.perf_counter()
                    backend.enqueue(slot, b)
                    slot.stream.synchronize()
                    lat.append(time.perf_counter() - t0)
                points.append(Point("engine", model.key, variant, b, n * b / dt, 1e3 * dt / n,
                                    {"latency_ms_median": 1e3 * statistics.median(lat)}))
    return points


def _fill_copy(slot: Any, src: np.ndarray, b: int) -> None:
    np.copyto(slot.host_input[:b], src)


def _make_fill_normalise(manifest: Any) -> Callable[[Any, np.ndarray, int], None]:
    """uint8 NHWC BGR → float32 NCHW RGB normalised, on the CPU, straight into the slot (no temporaries)."""
    scale = [1.0 / (255.0 * s) for s in manifest.std]
    shift = [-m / s for m, s in zip(manifest.mean, manifest.std, strict=True)]

    def fill(slot: Any, src: np.ndarray, b: int) -> None:
        dst = slot.host_input[:b]
        for c in range(3):  # RGB channel c is BGR channel 2 - c
            np.multiply(src[..., 2 - c], scale[c], out=dst[:, c], casting="unsafe")
            dst[:, c] += shift[c]

    return fill


def run_executor(ex: Any, pool: list[np.ndarray], b: int, batches: int, warmup: int,
                 fill: Callable[[Any, np.ndarray, int], None]) -> tuple[float, dict[str, Any]]:
    """Producer thread fills + submits ``warmup + batches`` slots; this thread collects, copies results
    out and releases. Returns images/s over the batches after warm-up."""
    total = warmup + batches
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            for i in range(total):
                slot = ex.acquire(timeout=30.0)
                if slot is None:
                    raise TimeoutError("no free slot in 30 s")
                fill(slot, pool[i % len(pool)], b)
                slot.count = b
                slot.tags.append(i)
                ex.submit(slot)
        except BaseException as exc:
            errors.append(exc)

    producer = threading.Thread(target=produce, name="bench-producer", daemon=True)
    producer.start()
    t_start = t_end = 0.0
    done = 0
    checksum = 0.0
    while done < total:
        slot = ex.collect(timeout=30.0)
        if slot is None:
            raise TimeoutError(f"batch {done} did not complete in 30 s ({errors})")
        if slot.error is not None:
            raise RuntimeError(f"batch {done} failed") from slot.error
        top1 = slot.host_output[: slot.count].argmax(1)  # results leave the slot before it is reused
        checksum += float(top1.sum())
        ex.release(slot)
        done += 1
        if done == warmup:
            t_start = time.perf_counter()
        elif done == total:
            t_end = time.perf_counter()
    producer.join(timeout=30.0)
    if errors:
        raise RuntimeError("producer failed") from errors[0]
    dt = t_end - t_start
    return batches * b / dt, {"batches": batches, "seconds": round(dt, 3), "checksum": checksum}


def bench_executor(backend: Any, model: BenchModel, b: int, slot_counts: list[int], seconds: float,
                   engine_ms: float, variant: str, fill: Callable[[Any, np.ndarray, int], None] | None = None,
                   pool: list[np.ndarray] | None = None) -> list[Point]:
    fill = fill or _fill_copy
    if pool is None:
        pool = [_images(b, model.input_hw, seed=i) for i in range(4)]
    h, w = model.input_hw  # time one fill first, so that a slow CPU fill does not stretch the run
    shape = tuple(getattr(backend, "input_shape", (h, w, 3)))
    dtype = getattr(backend, "input_dtype", np.uint8)
    scratch = types.SimpleNamespace(host_input=np.empty((b, *shape), dtype))
    t0 = time.perf_counter()
    fill(scratch, pool[0], b)
    fill_ms = 1e3 * (time.perf_counter() - t0)
    batches = max(20, int(seconds / max(engine_ms / 1e3, fill_ms / 1e3, 1e-6)))
    points = []
    for k in slot_counts:
        with _executor(backend, b, k) as ex:
            ips, extra = run_executor(ex, pool, b, batches, warmup=max(5, 2 * k), fill=fill)
        points.append(Point("executor", model.key, f"{variant}, {k} slot{'s' if k > 1 else ''}", b, ips,
                            1e3 * b / ips, {"slots": k, **extra}))
    return points


def bench_h2d(sizes: dict[str, int], repeats: int = 20) -> list[dict[str, Any]]:
    """GB/s of host→device (and device→host) copies, pinned vs pageable, per size; best of ``repeats``."""
    import pycuda.driver as cuda

    from streamer.executors.cuda import PrimaryContext

    ctx = PrimaryContext.get(0)
    rows = []
    with ctx.active():
        stream = cuda.Stream()
        for label, size in sizes.items():
            pinned = cuda.pagelocked_empty(size, np.uint8)
            pageable = np.empty(size, np.uint8)
            pinned[:] = 1
            pageable[:] = 1
            dev = cuda.mem_alloc(size)
            reps = max(3, min(repeats, int(2e9 / size)))  # small copies: more repeats, bounded time

            def gbps(copy: Callable[[], None], reps: int = reps, size: int = size) -> tuple[float, float]:
                copy()
                times = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    copy()
                    times.append(time.perf_counter() - t0)
                return size / min(times) / 1e9, size / statistics.median(times) / 1e9

            def pinned_async(dev: Any = dev, pinned: np.ndarray = pinned) -> None:
                cuda.memcpy_htod_async(dev, pinned, stream)
                stream.synchronize()

            def d2h_pinned(dev: Any = dev, pinned: np.ndarray = pinned) -> None:
                cuda.memcpy_dtoh_async(pinned, dev, stream)
                stream.synchronize()

            kinds: list[tuple[str, Callable[[], None]]] = [
                ("pinned, async on a stream", pinned_async),
                ("pinned, sync", lambda dev=dev, pinned=pinned: cuda.memcpy_htod(dev, pinned)),
                ("pageable, sync", lambda dev=dev, pageable=pageable: cuda.memcpy_htod(dev, pageable)),
                ("D2H pinned, async", d2h_pinned),
                ("D2H pageable, sync", lambda dev=dev, pageable=pageable: cuda.memcpy_dtoh(pageable, dev)),
            ]
            for kind, fn in kinds:
                best, median = gbps(fn)
                rows.append({"size": label, "bytes": size, "kind": kind, "gbps_best": best,
                             "gbps_median": median})
            dev.free()
            del pinned
    return rows


def _float_input_backend(model: BenchModel, max_batch: int) -> Any:
    """The same net in fp16 + graphs, taking float32 NCHW RGB already normalised (no in-graph prologue)."""
    import copy

    import torch
    from torch import nn

    from streamer.backends.torch_cuda import TorchCudaBackend, _load_pth

    class FloatInput(nn.Module):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.to(torch.float16).contiguous(memory_format=torch.channels_last)
            return torch.softmax(self.net(x).to(torch.float32), dim=1)

    if model.net is not None:
        net = copy.deepcopy(model.net).half()
    else:
        net = _load_pth(model.onnx, model.manifest, "fp16").net
    backend = TorchCudaBackend(model.manifest, max_batch, FloatInput(net), precision="fp16",
                               graph_buckets=[max_batch], source="<float32-input variant>")
    h, w = model.input_hw
    backend.input_dtype = np.float32
    backend.input_shape = (3, h, w)
    return backend


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _find(points: list[Point], section: str, model: str, variant_prefix: str, batch: int) -> Point | None:
    for p in points:
        if (p.section, p.model, p.batch) == (section, model, batch) and p.variant.startswith(variant_prefix):
            return p
    return None


def _guarded(result: dict[str, Any], what: str, fn: Callable[[], list[Point]]) -> None:
    """Run one section; a failure is recorded (and printed) and the other sections still run."""
    try:
        result["points"] += fn()
    except Exception as exc:
        result["failed"].append(f"{what}: {type(exc).__name__}: {exc}")
        traceback.print_exc()


def _bench_gpu(models: list[BenchModel], args: argparse.Namespace, batches: list[int], slot_counts: list[int],
               result: dict[str, Any]) -> None:
    import torch

    from streamer.backends import tensorrt as trt_adapter

    eb = args.exec_batch

    def engine_torch(model: BenchModel) -> list[Point]:
        backend = _torch_backend(model, max(batches), batches)
        result["models"][model.key]["torch_source"] = backend.source
        try:
            return bench_engine_only(backend, model, batches, args.seconds, "torch-cuda fp16+graphs")
        finally:
            backend.close()

    def engine_trt(model: BenchModel, name: str) -> list[Point]:
        backend = trt_adapter.load(model.onnx, max(batches), backend_name=name, precision="fp16")
        try:
            return bench_engine_only(backend, model, batches, args.seconds, f"{name} fp16")
        finally:
            backend.close()

    def executor_uint8(model: BenchModel, engine_ms: float) -> list[Point]:
        backend = _torch_backend(model, eb, [eb])
        return bench_executor(backend, model, eb, slot_counts, args.seconds, engine_ms,
                              "uint8 NHWC, fill=copy")

    def executor_float(model: BenchModel, engine_ms: float) -> list[Point]:
        backend = _float_input_backend(model, eb)
        h, w = model.input_hw
        rng = np.random.default_rng(1)
        pool = [rng.standard_normal((eb, 3, h, w), dtype=np.float32) for _ in range(4)]
        points = bench_executor(backend, model, eb, [2], args.seconds, engine_ms, "float32 NCHW, fill=copy",
                                pool=pool)
        normalise = _make_fill_normalise(model.manifest)
        points += bench_executor(backend, model, eb, [2], args.seconds, engine_ms,
                                 "float32 NCHW, fill=CPU normalise", fill=normalise)
        return points

    def eager_batch1(model: BenchModel) -> list[Point]:
        # the seed notebook's way: the net's own nn.Module (rebuilt from the .pth), fp32, eager
        backend = _torch_backend(model, 1, [1], precision="fp32", graphs=False, channels_last=False,
                                 source="pth")
        return bench_engine_only(backend, model, [1], args.seconds, "torch-cuda fp32 eager")

    for model in models:
        _guarded(result, f"{model.key} engine torch", lambda m=model: engine_torch(m))
        for name in ("tensorrt", "tensorrt-rtx"):
            reason = trt_adapter.probe(name)
            if reason:
                result["skipped"].append(f"{name} engine on {model.key}: {reason}")
            else:
                _guarded(result, f"{model.key} engine {name}", lambda m=model, n=name: engine_trt(m, n))
        torch.cuda.empty_cache()
        engine = _find(result["points"], "engine", model.key, "torch-cuda", eb)
        engine_ms = engine.ms_per_batch if engine else 1.0
        _guarded(result, f"{model.key} executor uint8", lambda m=model, e=engine_ms: executor_uint8(m, e))
        _guarded(result, f"{model.key} executor float32", lambda m=model, e=engine_ms: executor_float(m, e))
        _guarded(result, f"{model.key} eager fp32 batch 1", lambda m=model: eager_batch1(m))
        torch.cuda.empty_cache()

    sizes = {f"{m.key} batch {eb} uint8": eb * m.input_hw[0] * m.input_hw[1] * 3 for m in models}
    sizes.update({f"{m.key} batch {eb} float32": 4 * eb * m.input_hw[0] * m.input_hw[1] * 3 for m in models})
    sizes["64 MiB"] = 64 << 20
    try:
        result["h2d"] = bench_h2d(sizes)
    except Exception as exc:
        result["failed"].append(f"h2d: {type(exc).__name__}: {exc}")
        traceback.print_exc()


def _targets(models: list[BenchModel], points: list[Point], h2d: list[dict[str, Any]],
             eb: int) -> list[Target]:
    targets = []
    copy_rate = max((r["gbps_best"] for r in h2d if r["kind"].startswith("pinned")), default=None)
    for m in models:
        engine = _find(points, "engine", m.key, "torch-cuda", eb)
        e1 = _find(points, "executor", m.key, "uint8 NHWC, fill=copy, 1 slot", eb)
        e2 = _find(points, "executor", m.key, "uint8 NHWC, fill=copy, 2 slots", eb)
        targets.append(Target(f"exec2_vs_engine[{m.key}]",
                              f"{m.key}: executor 2 slots / engine-only, batch {eb}",
                              _ratio(e2 and e2.images_per_s, engine and engine.images_per_s),
                              TARGETS["exec2_vs_engine"]))
        note = ""
        if engine and copy_rate:
            per_image = m.input_hw[0] * m.input_hw[1] * 3 + 4 * m.manifest.num_classes
            copy_ms = 1e3 * eb * per_image / (copy_rate * 1e9)
            note = f"copies {copy_ms:.3f} ms vs engine {engine.ms_per_batch:.3f} ms per batch"
        targets.append(Target(f"exec2_vs_exec1[{m.key}]", f"{m.key}: executor 2 slots / 1 slot, batch {eb}",
                              _ratio(e2 and e2.images_per_s, e1 and e1.images_per_s),
                              TARGETS["exec2_vs_exec1"], note))
    seed = next((m for m in models if m.key == "seed"), None)
    if seed:
        fast = _find(points, "engine", "seed", "torch-cuda fp16+graphs", 1)
        slow = _find(points, "engine", "seed", "torch-cuda fp32 eager", 1)
        note = ""
        if fast and slow:
            slow_ms, fast_ms = slow.extra["latency_ms_median"], fast.extra["latency_ms_median"]
            note = f"latency {slow_ms:.3f} → {fast_ms:.3f} ms (×{slow_ms / fast_ms:.2f})"
        targets.append(Target("graphs_fp16_vs_eager_fp32[seed]",
                              "seed: torch fp16+graphs / eager fp32, batch 1",
                              _ratio(fast and fast.images_per_s, slow and slow.images_per_s),
                              TARGETS["graphs_fp16_vs_eager_fp32"], note))
    big = [r for r in h2d if r["size"] == "64 MiB"]
    if big:
        best = max(r["gbps_best"] for r in h2d if not r["kind"].startswith("D2H"))
        pinned = max(r["gbps_best"] for r in big if r["kind"].startswith("pinned"))
        pageable = next(r["gbps_best"] for r in big if r["kind"].startswith("pageable"))
        targets.append(Target("pinned_vs_best_h2d", "pinned H2D (64 MiB) / best H2D rate in this run",
                              pinned / best, TARGETS["pinned_vs_best_h2d"],
                              f"pinned {pinned:.1f} GB/s, pageable {pageable:.1f} GB/s"))
    return targets


# -- output --------------------------------------------------------------------------------------------------
def _print_tables(result: dict[str, Any]) -> None:
    points: list[Point] = result["points"]
    print("\n== engine-only (input on the device; ONNX Runtime: host arrays) ==")
    print(f"{'model':9} {'variant':34} {'batch':>5} {'images/s':>12} {'ms/batch':>9} {'lat ms':>8}")
    for p in points:
        if p.section == "engine":
            lat = p.extra.get("latency_ms_median")
            print(f"{p.model:9} {p.variant:34} {p.batch:5d} {p.images_per_s:12,.0f} {p.ms_per_batch:9.3f} "
                  f"{'' if lat is None else f'{lat:8.3f}'}")
    ex = [p for p in points if p.section == "executor"]
    if ex:
        print("\n== CUDA executor end to end (fill → H2D → engine → D2H → results out) ==")
        print(f"{'model':9} {'variant':44} {'batch':>5} {'images/s':>12} {'ms/batch':>9}")
        for p in ex:
            print(f"{p.model:9} {p.variant:44} {p.batch:5d} {p.images_per_s:12,.0f} {p.ms_per_batch:9.3f}")
    if result.get("h2d"):
        print("\n== copies (GB/s, best / median) ==")
        for r in result["h2d"]:
            print(f"{r['size']:26} {r['kind']:26} {r['gbps_best']:7.2f} / {r['gbps_median']:7.2f}")
    if result["targets"]:
        print("\n== targets (issue 4), ratios from this run ==")
        for t in result["targets"]:
            value = "n/a" if t["value"] is None else f"{t['value']:.2f}"
            verdict = {True: "MET", False: "MISSED", None: "not measured"}[t["met"]]
            print(f"{t['description']:54} {value:>6} (goal ≥ {t['goal']:.2f}) {verdict:12} {t['note']}")
    for title, key in (("skipped", "skipped"), ("FAILED", "failed")):
        if result[key]:
            print(f"\n== {title} ==")
            for line in result[key]:
                print(f"- {line}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    batches = sorted(set(_ints(args.batches)))
    slot_counts = _ints(args.slots)
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    work_ctx = (contextlib.nullcontext(args.work_dir) if args.work_dir
                else tempfile.TemporaryDirectory(prefix="streamer-bench-"))
    result: dict[str, Any] = {"machine": _machine(), "points": [], "h2d": [], "targets": [], "skipped": [],
                              "failed": []}
    with work_ctx as work:
        work = Path(work)
        work.mkdir(parents=True, exist_ok=True)
        models = _prepare_models(keys, work, prefer_default=not args.no_default_model)
        result["models"] = {m.key: {"onnx": str(m.onnx), "source": m.source, "input_hw": m.input_hw,
                                    "classes": m.manifest.num_classes} for m in models}
        for m in models:
            print(f"model {m.key}: {m.source} ({m.onnx.name}, {m.input_hw[0]}x{m.input_hw[1]}, "
                  f"{m.manifest.num_classes} classes)")
        reason = "--cpu-only given" if args.cpu_only else _gpu_reason()
        if reason:
            result["skipped"].append(f"GPU sections (torch-cuda engine, executor, h2d, input, batch1): "
                                     f"{reason}")
        if not args.no_ort:
            for m in models:
                result["points"] += bench_ort(m, batches, args.seconds, args.ort_max_seconds,
                                              result["skipped"])
        if not reason:
            _bench_gpu(models, args, batches, slot_counts, result)
        targets = _targets(models, result["points"], result["h2d"], args.exec_batch) if not reason else []
        result["targets"] = [{**asdict(t), "met": t.met} for t in targets]
        _print_tables(result)
    result["points"] = [asdict(p) for p in result["points"]]
    return result
