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
import copy
import functools
import statistics
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from bench_common import Machine, Target, ints, names, ratio, work_dir
from bench_engine_records import CopyRate, EngineResult, ModelInfo, Point, find
from bench_loop import Fill, drive

from streamer.model.manifest import ModelManifest

if TYPE_CHECKING:
    from streamer.backends.base import CudaBackend
    from streamer.backends.torch_cuda import TorchCudaBackend

HELP = "engine-level figures: engine-only img/s, executor slots, H2D, uint8 vs float32, graphs vs eager"

MODELS = ("seed", "resnet50")
TARGETS = {
    "exec2_vs_engine": 0.90,
    "exec2_vs_exec1": 1.30,
    "graphs_fp16_vs_eager_fp32": 3.0,
    "pinned_vs_best_h2d": 0.80,
}
# variants that the targets look up
TORCH_FAST = "torch-cuda fp16+graphs"
TORCH_EAGER = "torch-cuda fp32 eager"
EXEC_UINT8 = "uint8 NHWC, fill=copy"
EXEC_FLOAT = "float32 NCHW, fill=copy"
EXEC_FLOAT_NORMALISE = "float32 NCHW, fill=CPU normalise"
BIG_COPY = "64 MiB"
VERSIONS = ("numpy", "onnxruntime", "torch", "pycuda", "tensorrt", "tensorrt_rtx")


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


# -- models --------------------------------------------------------------------------------------------------
@dataclass
class BenchModel:
    key: str
    onnx: Path
    source: str
    manifest: ModelManifest
    net: Any = None  # bare torch net (ResNet-50); None: load through the torch backend from the files

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.manifest.input_hw

    def info(self, torch_source: str | None = None) -> ModelInfo:
        return ModelInfo(self.key, str(self.onnx), self.source, self.input_hw, self.manifest.num_classes,
                         torch_source)


def _prepare_models(keys: list[str], work: Path, prefer_default: bool) -> list[BenchModel]:
    import bench_models

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


# -- a run in progress ---------------------------------------------------------------------------------------
@dataclass
class _Run:
    """What the sections add to as they go; frozen into an :class:`EngineResult` at the end."""

    points: list[Point] = field(default_factory=list)
    h2d: list[CopyRate] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    torch_sources: dict[str, str] = field(default_factory=dict)

    def guarded(self, what: str, fn: Callable[[], list[Point]]) -> None:
        """Run one section; a failure is recorded (and printed) and the other sections still run."""
        try:
            self.points += fn()
        except Exception as exc:
            self.failed.append(f"{what}: {type(exc).__name__}: {exc}")
            traceback.print_exc()


# -- ONNX Runtime (CPU) engine-only --------------------------------------------------------------------------
def bench_ort(model: BenchModel, batches: list[int], seconds: float, max_seconds: float,
              skipped: list[str]) -> list[Point]:
    from streamer.backends import ort

    backend = ort.load(model.onnx, max_batch=max(batches))
    points = []
    per_image = None
    try:
        for b in sorted(batches):
            if per_image is not None and per_image * b > max_seconds:
                skipped.append(f"onnxruntime-cpu {model.key} batch {b}: one batch would take "
                               f"~{per_image * b:.1f} s (> --ort-max-seconds {max_seconds:g})")
                continue
            x = _images(b, model.input_hw)
            out = np.empty((b, model.manifest.num_classes), np.float32)
            n, dt = _timed_loop(functools.partial(backend.infer, x, out), lambda: None, seconds,
                                min_iters=2, warmup=1)
            per_image = dt / (n * b)
            points.append(Point("engine", model.key, f"onnxruntime-cpu ({backend.threads} thr)", b,
                                n * b / dt, 1e3 * dt / n))
    finally:
        backend.close()
    return points


# -- GPU -----------------------------------------------------------------------------------------------------
def _gpu_reason() -> str | None:
    from streamer.backends import torch_cuda

    return torch_cuda.probe("torch")


def _torch_backend(model: BenchModel, max_batch: int, buckets: list[int] | None, *, precision: str = "fp16",
                   graphs: bool = True, channels_last: bool = True, source: str = "auto") -> TorchCudaBackend:
    from streamer.backends import torch_cuda

    if model.net is not None:
        from streamer.model.torch_load import wrap_net

        return torch_cuda.TorchCudaBackend(
            model.manifest, max_batch, wrap_net(copy.deepcopy(model.net), model.manifest, precision),
            precision=precision, cuda_graphs=graphs, channels_last=channels_last, graph_buckets=buckets,
            source="<module>")
    return torch_cuda.load(model.onnx, max_batch, precision=precision, cuda_graphs=graphs,
                           channels_last=channels_last, graph_buckets=buckets, source=source)


def _float_input_backend(model: BenchModel, max_batch: int) -> TorchCudaBackend:
    """The same net in fp16 + graphs, taking float32 NCHW RGB already normalised (no in-graph prologue)."""
    import torch
    from torch import nn

    from streamer.backends.torch_cuda import TorchCudaBackend
    from streamer.executors.contract import BatchSpec
    from streamer.model.torch_load import load_pth

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
        net = load_pth(model.onnx, model.manifest, "fp16").net
    h, w = model.input_hw
    return TorchCudaBackend(model.manifest, max_batch, FloatInput(net), precision="fp16",
                            graph_buckets=[max_batch], source="<float32-input variant>",
                            batch_spec=BatchSpec((3, h, w), model.manifest.num_classes, np.float32))


def bench_engine_only(backend: CudaBackend, model: BenchModel, batches: list[int], seconds: float,
                      variant: str) -> list[Point]:
    """The backend alone on one slot's stream; input already on the device (no copies, no host work)."""
    from streamer.executors.cuda import CudaExecutor

    points = []
    ex = CudaExecutor(backend, max(batches), 1, backend.device_index)
    try:
        slot = ex.slots[0]
        with ex.context.active():
            slot.device_input.set(_images(slot.capacity, model.input_hw).astype(slot.device_input.dtype))
            for b in batches:
                n, dt = _timed_loop(functools.partial(backend.enqueue, slot, b), slot.stream.synchronize,
                                    seconds)
                lat = []
                for _ in range(min(50, max(5, n // 10))):
                    t0 = time.perf_counter()
                    backend.enqueue(slot, b)
                    slot.stream.synchronize()
                    lat.append(time.perf_counter() - t0)
                points.append(Point("engine", model.key, variant, b, n * b / dt, 1e3 * dt / n,
                                    latency_ms_median=1e3 * statistics.median(lat)))
    finally:
        ex.close()
    return points


def copy_fill(pool: Sequence[np.ndarray]) -> Fill:
    """Each batch copies the next array of ``pool`` into the slot (what a batcher's resize costs at least)."""
    def fill(dst: np.ndarray, i: int) -> None:
        np.copyto(dst, pool[i % len(pool)])

    return fill


def normalise_fill(manifest: ModelManifest, pool: Sequence[np.ndarray]) -> Fill:
    """uint8 NHWC BGR → float32 NCHW RGB normalised, on the CPU, straight into the slot (no temporaries)."""
    scale = [1.0 / (255.0 * s) for s in manifest.std]
    shift = [-m / s for m, s in zip(manifest.mean, manifest.std, strict=True)]

    def fill(dst: np.ndarray, i: int) -> None:
        src = pool[i % len(pool)]
        for c in range(3):  # RGB channel c is BGR channel 2 - c
            np.multiply(src[..., 2 - c], scale[c], out=dst[:, c], casting="unsafe")
            dst[:, c] += shift[c]

    return fill


def bench_executor(backend: CudaBackend, model: BenchModel, b: int, slot_counts: list[int], seconds: float,
                   variant: str, fill: Fill) -> list[Point]:
    """The executor the backend makes, driven by the benchmarks' producer/consumer loop, per slot count."""
    points = []
    for k in slot_counts:
        ex = backend.make_executor(b, k)
        try:
            loop = drive(ex, b, fill=fill, warmup=max(5, 2 * k), seconds=seconds, min_batches=20)
        finally:
            ex.close()
        points.append(Point.of_loop(model.key, variant, loop))
    return points


def bench_h2d(sizes: dict[str, int], repeats: int = 20) -> list[CopyRate]:
    """GB/s of host→device (and device→host) copies, pinned vs pageable, per size; best of ``repeats``."""
    import pycuda.driver as cuda

    from streamer.gpu.context import PrimaryContext

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

            kinds: list[tuple[Literal["H2D", "D2H"], Literal["pinned", "pageable"], Literal["async", "sync"],
                              Callable[[], None]]] = [
                ("H2D", "pinned", "async", pinned_async),
                ("H2D", "pinned", "sync", functools.partial(cuda.memcpy_htod, dev, pinned)),
                ("H2D", "pageable", "sync", functools.partial(cuda.memcpy_htod, dev, pageable)),
                ("D2H", "pinned", "async", d2h_pinned),
                ("D2H", "pageable", "sync", functools.partial(cuda.memcpy_dtoh, pageable, dev)),
            ]
            for direction, memory, mode, fn in kinds:
                best, median = gbps(fn)
                rows.append(CopyRate(label, size, direction, memory, mode, best, median))
            dev.free()
            del pinned
    return rows


def _bench_gpu(models: list[BenchModel], args: argparse.Namespace, batches: list[int], slot_counts: list[int],
               run: _Run) -> None:
    import torch

    from streamer.backends import tensorrt as trt_adapter

    eb = args.exec_batch

    def engine_torch(model: BenchModel) -> list[Point]:
        backend = _torch_backend(model, max(batches), batches)
        run.torch_sources[model.key] = backend.source
        try:
            return bench_engine_only(backend, model, batches, args.seconds, TORCH_FAST)
        finally:
            backend.close()

    def engine_trt(model: BenchModel, name: str) -> list[Point]:
        backend = trt_adapter.load(model.onnx, max(batches), backend_name=name, precision="fp16")
        try:
            return bench_engine_only(backend, model, batches, args.seconds, f"{name} fp16")
        finally:
            backend.close()

    def executor_uint8(model: BenchModel) -> list[Point]:
        backend = _torch_backend(model, eb, [eb])
        pool = [_images(eb, model.input_hw, seed=i) for i in range(4)]
        try:
            return bench_executor(backend, model, eb, slot_counts, args.seconds, EXEC_UINT8, copy_fill(pool))
        finally:
            backend.close()

    def executor_float(model: BenchModel) -> list[Point]:
        backend = _float_input_backend(model, eb)
        h, w = model.input_hw
        rng = np.random.default_rng(1)
        floats = [rng.standard_normal((eb, 3, h, w), dtype=np.float32) for _ in range(4)]
        images = [_images(eb, model.input_hw, seed=i) for i in range(4)]
        try:
            points = bench_executor(backend, model, eb, [2], args.seconds, EXEC_FLOAT, copy_fill(floats))
            points += bench_executor(backend, model, eb, [2], args.seconds, EXEC_FLOAT_NORMALISE,
                                     normalise_fill(model.manifest, images))
        finally:
            backend.close()
        return points

    def eager_batch1(model: BenchModel) -> list[Point]:
        # the seed notebook's way: the net's own nn.Module (rebuilt from the .pth), fp32, eager
        backend = _torch_backend(model, 1, [1], precision="fp32", graphs=False, channels_last=False,
                                 source="pth")
        try:
            return bench_engine_only(backend, model, [1], args.seconds, TORCH_EAGER)
        finally:
            backend.close()

    for model in models:
        run.guarded(f"{model.key} engine torch", functools.partial(engine_torch, model))
        for name in ("tensorrt", "tensorrt-rtx"):
            reason = trt_adapter.probe(name)
            if reason:
                run.skipped.append(f"{name} engine on {model.key}: {reason}")
            else:
                run.guarded(f"{model.key} engine {name}", functools.partial(engine_trt, model, name))
        torch.cuda.empty_cache()
        run.guarded(f"{model.key} executor uint8", functools.partial(executor_uint8, model))
        run.guarded(f"{model.key} executor float32", functools.partial(executor_float, model))
        run.guarded(f"{model.key} eager fp32 batch 1", functools.partial(eager_batch1, model))
        torch.cuda.empty_cache()

    sizes = {f"{m.key} batch {eb} uint8": eb * m.input_hw[0] * m.input_hw[1] * 3 for m in models}
    sizes.update({f"{m.key} batch {eb} float32": 4 * eb * m.input_hw[0] * m.input_hw[1] * 3 for m in models})
    sizes[BIG_COPY] = 64 << 20
    try:
        run.h2d += bench_h2d(sizes)
    except Exception as exc:
        run.failed.append(f"h2d: {type(exc).__name__}: {exc}")
        traceback.print_exc()


# -- targets -------------------------------------------------------------------------------------------------
def _rate(point: Point | None) -> float | None:
    return point.images_per_s if point else None


def targets(models: Sequence[ModelInfo], points: Sequence[Point], h2d: Sequence[CopyRate],
            eb: int) -> list[Target]:
    out = []
    copy_rate = max((r.gbps_best for r in h2d if r.direction == "H2D" and r.memory == "pinned"), default=None)
    for m in models:
        engine = find(points, "engine", m.key, TORCH_FAST, eb)
        e1 = find(points, "executor", m.key, EXEC_UINT8, eb, slots=1)
        e2 = find(points, "executor", m.key, EXEC_UINT8, eb, slots=2)
        out.append(Target(f"exec2_vs_engine[{m.key}]", f"{m.key}: executor 2 slots / engine-only, batch {eb}",
                          ratio(_rate(e2), _rate(engine)), TARGETS["exec2_vs_engine"]))
        note = ""
        if engine and copy_rate:
            copy_ms = 1e3 * eb * (m.image_bytes + 4 * m.classes) / (copy_rate * 1e9)
            note = f"copies {copy_ms:.3f} ms vs engine {engine.ms_per_batch:.3f} ms per batch"
        out.append(Target(f"exec2_vs_exec1[{m.key}]", f"{m.key}: executor 2 slots / 1 slot, batch {eb}",
                          ratio(_rate(e2), _rate(e1)), TARGETS["exec2_vs_exec1"], note=note))
    if any(m.key == "seed" for m in models):
        fast = find(points, "engine", "seed", TORCH_FAST, 1)
        slow = find(points, "engine", "seed", TORCH_EAGER, 1)
        note = ""
        if fast and slow and fast.latency_ms_median and slow.latency_ms_median:
            slow_ms, fast_ms = slow.latency_ms_median, fast.latency_ms_median
            note = f"latency {slow_ms:.3f} → {fast_ms:.3f} ms (×{slow_ms / fast_ms:.2f})"
        out.append(Target("graphs_fp16_vs_eager_fp32[seed]", "seed: torch fp16+graphs / eager fp32, batch 1",
                          ratio(_rate(fast), _rate(slow)), TARGETS["graphs_fp16_vs_eager_fp32"], note=note))
    big = [r for r in h2d if r.size == BIG_COPY and r.direction == "H2D"]
    if big:
        best = max(r.gbps_best for r in h2d if r.direction == "H2D")
        pinned = max(r.gbps_best for r in big if r.memory == "pinned")
        pageable = max(r.gbps_best for r in big if r.memory == "pageable")
        out.append(Target("pinned_vs_best_h2d", f"pinned H2D ({BIG_COPY}) / best H2D rate in this run",
                          pinned / best, TARGETS["pinned_vs_best_h2d"],
                          note=f"pinned {pinned:.1f} GB/s, pageable {pageable:.1f} GB/s"))
    return out


# -- output --------------------------------------------------------------------------------------------------
def print_tables(result: EngineResult) -> None:
    print("\n== engine-only (input on the device; ONNX Runtime: host arrays) ==")
    print(f"{'model':9} {'variant':34} {'batch':>5} {'images/s':>12} {'ms/batch':>9} {'lat ms':>8}")
    for p in result.points:
        if p.section == "engine":
            lat = "" if p.latency_ms_median is None else f"{p.latency_ms_median:8.3f}"
            print(f"{p.model:9} {p.variant:34} {p.batch:5d} {p.images_per_s:12,.0f} {p.ms_per_batch:9.3f} "
                  f"{lat}".rstrip())
    ex = [p for p in result.points if p.section == "executor"]
    if ex:
        print("\n== CUDA executor end to end (fill → H2D → engine → D2H → results out; in flight: a batch's "
              "submit → done) ==")
        print(f"{'model':9} {'variant':44} {'batch':>5} {'images/s':>12} {'ms/batch':>9} "
              f"{'in flight ms':>12}")
        for p in ex:
            engine_ms = f"{p.loop.engine_ms_per_batch:12.3f}" if p.loop else ""
            print(f"{p.model:9} {p.label:44} {p.batch:5d} {p.images_per_s:12,.0f} {p.ms_per_batch:9.3f} "
                  f"{engine_ms}")
    if result.h2d:
        print("\n== copies (GB/s, best / median) ==")
        for r in result.h2d:
            print(f"{r.size:26} {r.kind:26} {r.gbps_best:7.2f} / {r.gbps_median:7.2f}")
    if result.targets:
        print("\n== targets (issue 4), ratios from this run ==")
        for t in result.targets:
            value = "n/a" if t.value is None else f"{t.value:.2f}"
            verdict = "not measured" if t.met is None else t.verdict
            print(f"{t.description:54} {value:>6} (goal ≥ {t.goal:.2f}) {verdict:12} {t.note}")
    for title, lines in (("skipped", result.skipped), ("FAILED", result.failed)):
        if lines:
            print(f"\n== {title} ==")
            for line in lines:
                print(f"- {line}")


def run(args: argparse.Namespace) -> EngineResult:
    batches = sorted(set(ints(args.batches)))
    slot_counts = ints(args.slots)
    keys = names(args.models)
    machine = Machine.probe(VERSIONS)
    progress = _Run()
    with work_dir(args.work_dir, "streamer-bench-") as work:
        models = _prepare_models(keys, work, prefer_default=not args.no_default_model)
        for m in models:
            print(f"model {m.key}: {m.source} ({m.onnx.name}, {m.input_hw[0]}x{m.input_hw[1]}, "
                  f"{m.manifest.num_classes} classes)")
        reason = "--cpu-only given" if args.cpu_only else _gpu_reason()
        if reason:
            progress.skipped.append(f"GPU sections (torch-cuda engine, executor, h2d, input, batch1): "
                                    f"{reason}")
        if not args.no_ort:
            for m in models:
                progress.points += bench_ort(m, batches, args.seconds, args.ort_max_seconds, progress.skipped)
        if not reason:
            _bench_gpu(models, args, batches, slot_counts, progress)
    infos = tuple(m.info(progress.torch_sources.get(m.key)) for m in models)
    result = EngineResult(
        machine=machine.finished(), exec_batch=args.exec_batch, models=infos, points=tuple(progress.points),
        h2d=tuple(progress.h2d),
        targets=tuple(targets(infos, progress.points, progress.h2d, args.exec_batch)) if not reason else (),
        skipped=tuple(progress.skipped), failed=tuple(progress.failed))
    print_tables(result)
    return result
