"""INT8 against fp32 on this machine's CPU, side by side in one run (issue 14):

  engine     engine-only images/s: the ONNX Runtime backend through the executor the pipeline makes for it
             (same batch, slots, workers), on pre-staged batches, fp32 model then int8 model, --repeats times
             interleaved (the median of each goes into the ratio)
  streamer   the real CLI on a real clip (vtest.avi, 768×576, 795 frames) publishing to a subscriber process
             that counts every message, fp32 then int8, --repeats times interleaved
  accuracy   top-1 of both on the held-out shapes split (TEST_SEED, never seen in training, calibration or the
             gate) and on the demo clip read as the pipeline reads it; top-1 agreement between them
  plans      TensorRT-RTX plans built here on the CPU from the fp32, fp16 and int8 ONNX: bytes vs the .pth

    python tools/bench.py int8 --json-out out/int8.json
    python tools/bench.py int8 --sections engine,accuracy --repeats 5

The int8 model is ``<stem>.int8.onnx`` beside --model (tools/quantize.py makes it); the streamer runs it as
``--model <stem>.int8.onnx``, which is what ``--precision int8`` opens.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from bench_common import Machine, Record, Target, fmt, ints, pick, ratio, work_dir

from streamer.paths import DEFAULT_MODEL

REPO = Path(__file__).resolve().parents[1]
HELP = "int8 vs fp32 on the CPU: engine-only img/s, streamer fps on a clip, accuracy, plan sizes"
SECTIONS = ("engine", "streamer", "accuracy", "plans")
PRECISIONS = ("fp32", "int8")
TARGETS = {"engine_int8_vs_fp32": 1.5, "streamer_int8_vs_fp32": 1.3, "agreement": 0.99}
CPU_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "avx512f", "avx2")
VERSIONS = ("numpy", "cv2", "onnxruntime", "tensorrt_rtx")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="the fp32 ONNX; int8: <stem>.int8.onnx")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of: {', '.join(SECTIONS)}")
    p.add_argument("--batch", type=int, default=16, help="streamer --batch, and the engine-only batch")
    p.add_argument("--slots", type=int, default=2, help="streamer --slots")
    p.add_argument("--threads", type=int, default=0, help="streamer --threads (0: the default layout)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs of each precision per section")
    p.add_argument("--engine-seconds", type=float, default=3.0, help="engine-only measuring time per run")
    p.add_argument("--held-out", type=int, default=10_000, help="held-out shapes images (TEST_SEED)")
    p.add_argument("--clip", type=Path, default=None, help="the streamer's clip (default: media/vtest.avi)")
    p.add_argument("--media-dir", type=Path, default=REPO / "media")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="streamer logs and plans (default: a temporary folder)")
    p.add_argument("--run-timeout", type=float, default=300.0, help="seconds allowed per streamer run")


# -- records -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Runs(Record):
    """One figure of one precision, measured ``len(values)`` times interleaved with the other precision."""

    precision: str
    values: tuple[float, ...]
    unit: str
    engine_id: str = ""

    DERIVED: ClassVar[tuple[str, ...]] = ("median",)

    def __post_init__(self) -> None:
        if not self.values or min(self.values) <= 0:
            raise ValueError(f"{self.precision}: no positive {self.unit} measured ({self.values})")

    @property
    def median(self) -> float:
        return statistics.median(self.values)


@dataclass(frozen=True)
class Accuracy(Record):
    name: str
    source: str
    images: int
    fp32_top1: float
    int8_top1: float
    agreement: float

    def __post_init__(self) -> None:
        if self.images < 1 or not all(0 <= v <= 1 for v in (self.fp32_top1, self.int8_top1, self.agreement)):
            raise ValueError(f"bad accuracy record {self}")


@dataclass(frozen=True)
class Plan(Record):
    precision: str
    onnx: str
    onnx_bytes: int
    plan_bytes: int | None
    pth_bytes: int | None
    note: str = ""

    DERIVED: ClassVar[tuple[str, ...]] = ("plan_vs_pth",)

    @property
    def plan_vs_pth(self) -> float | None:
        return ratio(self.plan_bytes, self.pth_bytes)


@dataclass(frozen=True)
class Int8Result(Record):
    machine: Machine
    cpu_flags: tuple[str, ...]
    model: str
    int8_model: str
    int8_kernels: dict[str, int]  # ONNX Runtime's optimised graph of the int8 model, as the backend opens it
    batch: int
    slots: int
    repeats: int
    clip: str = ""
    engine: tuple[Runs, ...] = ()
    streamer: tuple[Runs, ...] = ()
    lost: int | None = None  # messages the subscriber missed over every streamer run
    accuracy: tuple[Accuracy, ...] = ()
    plans: tuple[Plan, ...] = ()
    targets: tuple[Target, ...] = ()
    failed: tuple[str, ...] = ()


# -- sections ------------------------------------------------------------------------------------------------
def cpu_flags() -> tuple[str, ...]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    lines = text.splitlines()
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    return tuple(f for f in CPU_FLAGS if f in flags)


def engine_section(models: dict[str, Path], a: argparse.Namespace) -> tuple[Runs, ...]:
    from bench_pipeline import engine_only

    values: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    ids: dict[str, str] = {}
    for _ in range(a.repeats):
        for precision in PRECISIONS:
            run = engine_only(models[precision], "onnxruntime", a.batch, a.slots, a.threads, a.engine_seconds)
            values[precision].append(round(run.loop.images_per_s, 1))
            ids[precision] = run.engine_id
            print(f"  engine-only {precision}: {run.loop.images_per_s:,.0f} images/s ({run.engine_id})")
    return tuple(Runs(p, tuple(values[p]), "images/s", ids[p]) for p in PRECISIONS)


def streamer_section(models: dict[str, Path], clip: Path, a: argparse.Namespace,
                     work: Path) -> tuple[tuple[Runs, ...], int, list[str]]:
    import make_bench_media as mbm
    from bench_pipeline_streamer import run_streamer

    frames = mbm.probe(clip).frames
    values: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    ids: dict[str, str] = {}
    lost, failed = 0, []
    for r in range(a.repeats):
        for precision in PRECISIONS:
            run = run_streamer(model=models[precision], backend="onnxruntime", batch=a.batch, slots=a.slots,
                               threads=a.threads, label=f"{precision}-{r}", sources=[clip], expected=frames,
                               work=work, cwd=REPO, timeout=a.run_timeout)
            if not run.ok or run.fps is None:
                failed.append(f"streamer {precision} run {r}: rc {run.rc}; {(run.log_tail or '')[-300:]}")
                continue
            values[precision].append(round(run.fps, 1))
            lost += run.lost_or_missed or 0
            ids[precision] = run.summary.model if run.summary else ""
            received = run.delivery.received if run.delivery else 0
            print(f"  streamer {precision}: {run.fps:,.0f} frames/s ({received}/{frames} delivered)")
    rows = tuple(Runs(p, tuple(values[p]), "frames/s", ids.get(p, "")) for p in PRECISIONS if values[p])
    return rows, lost, failed


def accuracy_section(models: dict[str, Path], held_out: int, int8_cpu: bytes) -> tuple[Accuracy, ...]:
    """``int8_cpu``: the int8 model in ONNX Runtime's form (serialized), as the backend opens it."""
    import numpy as np

    from streamer.model.calibration import load_samples
    from streamer.model.manifest import ModelManifest
    from streamer.model.quantize import cpu_session, predict

    manifest = ModelManifest.from_onnx(models["fp32"])
    sessions = cpu_session(models["fp32"]), cpu_session(int8_cpu)
    rows = []
    sets = [("held-out", "shapes:test", held_out)] if manifest.dataset == "shapes" else []
    sets.append(("demo clip", "demo", None))
    for name, spec, limit in sets:
        samples = load_samples(spec, manifest.input_hw, manifest.labels, limit=limit, purpose="evaluation")
        assert samples.labels is not None
        p32, p8 = (predict(s, samples.images, manifest.input_name) for s in sessions)
        rows.append(Accuracy(name, samples.source, len(samples), float((p32 == samples.labels).mean()),
                             float((p8 == samples.labels).mean()), float(np.mean(p32 == p8))))
    return tuple(rows)


def plans_section(models: dict[str, Path], work: Path) -> tuple[Plan, ...]:
    from streamer.engine import flavour
    from streamer.engine.build import build_engine
    from streamer.model.variants import PRECISIONS as ONNX_PRECISIONS
    from streamer.model.variants import variant_path

    rows = []
    for precision in ONNX_PRECISIONS:
        onnx = variant_path(models["fp32"], precision)
        if not onnx.is_file():
            rows.append(Plan(precision, str(onnx), 0, None, None, "no such ONNX"))
            continue
        if not flavour.installed("tensorrt-rtx"):
            rows.append(Plan(precision, str(onnx), onnx.stat().st_size, None, None,
                             "tensorrt_rtx not installed (pip install 'streamer[trt-rtx]')"))
            continue
        result = build_engine(onnx, precision=precision, out_dir=work / "plans", backend="tensorrt-rtx")
        ident = result.identity
        rows.append(Plan(precision, onnx.name, ident.onnx_bytes, ident.plan_bytes, ident.pth_bytes,
                         f"TensorRT-RTX {ident.backend_version}, targets "
                         f"{' '.join(ident.compute_capabilities)}, batch {ident.profile.tag}, "
                         f"built in {ident.build_seconds:.2f}s"))
    return tuple(rows)


# -- the run -------------------------------------------------------------------------------------------------
def _median(rows: tuple[Runs, ...], precision: str) -> float | None:
    return next((r.median for r in rows if r.precision == precision), None)


def targets(result: Int8Result) -> tuple[Target, ...]:
    out = []
    if result.engine:
        out.append(Target("engine_int8_vs_fp32", f"engine-only images/s, int8 / fp32 (batch {result.batch})",
                          ratio(_median(result.engine, "int8"), _median(result.engine, "fp32")),
                          TARGETS["engine_int8_vs_fp32"]))
    if result.streamer:
        clip = Path(result.clip).name
        out.append(Target("streamer_int8_vs_fp32", f"streamer frames/s on {clip}, int8 / fp32",
                          ratio(_median(result.streamer, "int8"), _median(result.streamer, "fp32")),
                          TARGETS["streamer_int8_vs_fp32"]))
    for acc in result.accuracy:
        out.append(Target(f"agreement[{acc.name}]", f"top-1 agreement, int8 vs fp32, {acc.name}",
                          acc.agreement, TARGETS["agreement"]))
    return tuple(out)


def run(a: argparse.Namespace) -> Int8Result:
    import onnx

    from streamer.errors import ModelError
    from streamer.model.qdq import INT8_KERNELS, onnxruntime_form, onnxruntime_kernels
    from streamer.model.variants import quantize_command, variant_path

    sections = pick(a.sections, SECTIONS, "sections")
    ints(str(a.repeats))
    models = {"fp32": variant_path(a.model, "fp32"), "int8": variant_path(a.model, "int8")}
    if not models["int8"].is_file():
        raise ModelError(f"{models['int8']} not found", f"make it: {quantize_command(models['fp32'])}")
    int8_graph = onnx.load(str(models["int8"]))
    onnxruntime_form(int8_graph)
    int8_cpu = int8_graph.SerializeToString()  # serialized once: the kernel count and the accuracy session
    kernels = {op: n for op, n in sorted(onnxruntime_kernels(int8_cpu).items()) if op in INT8_KERNELS}
    machine = Machine.probe(VERSIONS)
    flags = cpu_flags()
    print(f"{machine.cpu_model} ({machine.cpus} cores; int8 instructions: {' '.join(flags) or 'none'}); "
          f"ONNX Runtime int8 kernels in {models['int8'].name}: "
          f"{', '.join(f'{n} {op}' for op, n in kernels.items()) or 'none'}")
    result = Int8Result(machine, flags, str(models["fp32"]), str(models["int8"]), kernels, a.batch, a.slots,
                        a.repeats)
    failed: list[str] = []
    with work_dir(a.work_dir, "bench-int8-") as work:
        if "engine" in sections:
            result = result.replace(engine=engine_section(models, a))
        if "streamer" in sections:
            import make_bench_media as mbm

            clip = a.clip or mbm.ensure_media(a.media_dir, need=("vtest",))["vtest"]
            rows, lost, bad = streamer_section(models, clip, a, work)
            failed += bad
            result = result.replace(clip=str(clip), streamer=rows, lost=lost)
        if "accuracy" in sections:
            result = result.replace(accuracy=accuracy_section(models, a.held_out, int8_cpu))
        if "plans" in sections:
            result = result.replace(plans=plans_section(models, work))
    result = result.replace(machine=machine.finished(), failed=tuple(failed))
    result = result.replace(targets=targets(result))
    print_tables(result)
    return result


def print_tables(r: Int8Result) -> None:
    print()
    for title, rows in (("engine-only (images/s)", r.engine), (f"streamer on {Path(r.clip).name} (frames/s)",
                                                               r.streamer)):
        if rows:
            print(f"{title:<34} {'median':>8}   runs")
            for row in rows:
                runs = ", ".join(f"{v:,.0f}" for v in row.values)
                print(f"  {row.precision:<32} {row.median:>8,.0f}   {runs}   {row.engine_id}")
    if r.lost is not None and r.streamer:
        print(f"  messages lost over every streamer run: {r.lost}")
    if r.accuracy:
        print(f"\n{'accuracy (top-1)':<34} {'images':>7} {'fp32':>8} {'int8':>8} {'agree':>8}")
        for acc in r.accuracy:
            print(f"  {acc.name:<32} {acc.images:>7} {acc.fp32_top1:>8.2%} "
                  f"{acc.int8_top1:>8.2%} {acc.agreement:>8.2%}")
    if r.plans:
        print(f"\n{'artifact':<34} {'onnx MB':>8} {'plan MB':>8} {'plan/pth':>9}")
        for p in r.plans:
            plan_mb = fmt(p.plan_bytes / 1e6 if p.plan_bytes else None, "8.2f")
            label = f"{p.precision} ({Path(p.onnx).name})"
            size = f"{p.onnx_bytes / 1e6:>8.2f} {plan_mb} {fmt(p.plan_vs_pth, '9.2f')}"
            print(f"  {label:<32} {size}   {p.note}")
        pth = next((p.pth_bytes for p in r.plans if p.pth_bytes), None)
        if pth:
            print(f"  {'.pth':<32} {'':>8} {pth / 1e6:>8.2f} {1.0:>9.2f}")
    print("\ntargets")
    for t in r.targets:
        print(f"  {t.description:<62} {fmt(t.value, '6.2f')} {t.op} {t.goal:<5} {t.verdict}")
    for f in r.failed:
        print(f"FAILED {f}")
