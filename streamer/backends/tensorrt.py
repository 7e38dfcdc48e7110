"""TensorRT and TensorRT-RTX: one adapter for both (they share the Runtime / execution-context API).

Loading (``load``): the model path is a ``.plan`` (its identity JSON beside it) or an ``.onnx`` (the plan is
looked up, or built, in ``engines/plans/`` by :mod:`streamer.engine`). Before deserialising, the plan's
identity is checked against this machine — backend and version, GPU compute capability, precision, model
hash, batch profile — and against its own file (size, sha256). A plan that does not fit is rebuilt from the
ONNX beside it, or, when there is none (or ``rebuild=False``), refused with an
:class:`~streamer.errors.EngineMismatchError` naming the exact ``tools/build_engine.py`` command to run.
All of that runs without a GPU (see :func:`resolve_plan`); deserialising needs one the plan supports.

Running (``enqueue``): one execution context per executor slot (a context must not run on two streams at
once), its tensor addresses bound once to the slot's device buffers (IO tensors by name), then per batch
``set_input_shape`` (partial batches) and ``execute_async_v3`` on the slot's stream.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamer import cuda_env
from streamer.backends.base import Backend
from streamer.errors import BackendUnavailableError, EngineMismatchError, ModelError
from streamer.model.manifest import ModelManifest

if TYPE_CHECKING:
    from streamer.executors.base import Slot

log = logging.getLogger(__name__)

MODULES = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}
INSTALL = {
    "tensorrt": "its wheels come from NVIDIA's index (pip install tensorrt --extra-index-url "
                "https://pypi.nvidia.com), which this machine may not reach",
    "tensorrt-rtx": "pip install 'streamer[trt-rtx]'",
}
# TensorRT-RTX's documented targets, used when its ComputeCapability enum cannot be read
RTX_DOCUMENTED = ((7, 5), (8, 0), (8, 6), (8, 9), (12, 0), (12, 1))


def package_present(name: str) -> bool:
    return importlib.util.find_spec(MODULES[name]) is not None


def trt_module(name: str) -> Any:
    try:
        return importlib.import_module(MODULES[name])
    except ImportError as exc:
        raise BackendUnavailableError(f"backend {name}: {MODULES[name]} is not installed ({exc})",
                                      INSTALL[name]) from exc


def rtx_compute_capabilities() -> tuple[tuple[int, int], ...]:
    """What the installed TensorRT-RTX builds for, read from its ``ComputeCapability`` enum (``SM89`` …)."""
    try:
        trt = trt_module("tensorrt-rtx")
        names = [n for n in dir(trt.ComputeCapability) if re.fullmatch(r"SM\d{2,3}", n)]
    except (BackendUnavailableError, AttributeError):
        return RTX_DOCUMENTED
    ccs = sorted((int(n[2:-1]), int(n[-1])) for n in names)
    return tuple(ccs) or RTX_DOCUMENTED


def rtx_supports(cc: tuple[int, int]) -> bool:
    return tuple(cc) in rtx_compute_capabilities()


def _cc_list(ccs: Sequence[tuple[int, int]]) -> str:
    return ", ".join(f"{a}.{b}" for a, b in ccs)


def probe(name: str) -> str | None:
    """None when backend ``name`` (tensorrt | tensorrt-rtx) can run here, else why not."""
    if name not in MODULES:
        raise ValueError(f"not a TensorRT backend: {name!r}")
    if not package_present(name):
        return f"the {MODULES[name]} package is not installed ({INSTALL[name]})"
    gpu = cuda_env.gpu_info()
    if gpu is None:
        return f"{cuda_env.no_gpu_reason()} ({MODULES[name]} is installed, but plans need a GPU to run)"
    if name == "tensorrt-rtx" and not rtx_supports(gpu.compute_capability):
        return (f"the GPU ({gpu.name}) has compute capability {gpu.cc_string}, which TensorRT-RTX does not "
                f"support (it runs on {_cc_list(rtx_compute_capabilities())})")
    return cuda_env.pycuda_reason()


# -- the plan: identity checks and the rebuild decision (no GPU needed) -----------------------------------
@dataclass(frozen=True)
class PlanDecision:
    """What ``load`` does with a plan: ``use`` it, ``build`` one (none yet) or ``rebuild`` it (a misfit)."""

    action: str  # "use" | "build" | "rebuild"
    plan: Path | None  # the plan to use or to replace; None when one is to be built under its keyed name
    onnx: Path | None  # what a (re)build starts from
    precision: str
    reasons: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.action not in ("use", "build", "rebuild"):
            raise ValueError(f"unknown plan action {self.action!r}")
        if self.action == "use" and self.plan is None:
            raise ValueError("using a plan needs its path")
        if self.action != "use" and self.onnx is None:
            raise ValueError("building a plan needs its ONNX")
        if self.action == "rebuild" and not self.reasons:
            raise ValueError("a rebuild must say why")


def machine_for(backend_name: str, compute_capability: tuple[int, int] | str | None = None) -> Any:
    """This machine as a :class:`streamer.engine.Machine`: installed backend version and the GPU's CC."""
    from streamer.engine import Machine

    trt = trt_module(backend_name)
    if compute_capability is None:
        gpu = cuda_env.gpu_info()
        compute_capability = gpu.compute_capability if gpu else None
    if isinstance(compute_capability, tuple):
        compute_capability = f"{compute_capability[0]}.{compute_capability[1]}"
    return Machine(backend_name, str(trt.__version__), compute_capability)


def _default_precision(onnx: Path) -> str:
    """fp16 when there is an fp16 graph to build it from (the product's fast path), else the ONNX's own."""
    from streamer.engine.build import onnx_precision, sibling_for

    own, _ = onnx_precision(onnx)
    return "fp16" if own == "fp16" or sibling_for(onnx, "fp16").is_file() else own


def _plan_problems(plan: Path, identity: Any, machine: Any, onnx: Path | None, precision: str | None,
                   max_batch: int) -> list[str]:
    from streamer.model.manifest import sha256_file

    problems = []
    size = plan.stat().st_size
    if identity.plan_bytes and size != identity.plan_bytes:
        problems.append(f"plan file is {size} bytes, its identity says {identity.plan_bytes} (truncated or "
                        "overwritten)")
    onnx_sha = sha256_file(onnx) if onnx is not None and onnx.is_file() else None
    problems += identity.mismatches(machine, onnx_sha256=onnx_sha, precision=precision, max_batch=max_batch)
    return problems


def _onnx_beside_plan(plan: Path, identity: Any) -> Path | None:
    """The ONNX a plan was built from: named in its identity, beside it or one folder up (engines/plans)."""
    if not identity.onnx_file:
        return None
    for folder in (plan.parent, plan.parent.parent):
        candidate = folder / identity.onnx_file
        if candidate.is_file():
            return candidate
    return None


def _refuse_unsupported(machine: Any, model: Path, backend_name: str) -> None:
    cc = machine.compute_capability
    if backend_name == "tensorrt-rtx" and cc is not None:
        major, minor = (int(x) for x in cc.split("."))
        if not rtx_supports((major, minor)):
            raise EngineMismatchError(
                f"{model.name}: TensorRT-RTX plans cannot run on this GPU (compute capability {cc}; "
                f"TensorRT-RTX runs on {_cc_list(rtx_compute_capabilities())})",
                "use --backend torch (or auto) on this GPU")


def resolve_plan(model_path: str | Path, *, backend_name: str, machine: Any, max_batch: int,
                 precision: str | None = None, plans_dir: str | Path | None = None,
                 rebuild: bool = True) -> PlanDecision:
    """Decide, without a GPU, what loading ``model_path`` (a ``.plan`` or an ``.onnx``) takes on ``machine``.

    Raises :class:`EngineMismatchError` (naming the command to run) when the plan does not fit and cannot be
    rebuilt here: no ONNX beside it, ``rebuild=False``, or a GPU the backend cannot run on.
    """
    from streamer.engine import PlanIdentity
    from streamer.engine.build import resolve_onnx

    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelError(f"model file not found: {model_path}",
                         "pass --model PATH to an exported .onnx or a .plan")
    _refuse_unsupported(machine, model_path, backend_name)
    if model_path.suffix == ".plan":
        return _resolve_given_plan(model_path, backend_name, machine, max_batch, precision, rebuild)
    if model_path.suffix != ".onnx":
        raise ModelError(f"{model_path.name}: the {backend_name} backend takes an .onnx or a .plan",
                         "pass the exported .onnx (its plan is built and cached in engines/plans/)")
    precision = precision or _default_precision(model_path)
    source, precision, _ = resolve_onnx(model_path, precision)
    folder = Path(plans_dir) if plans_dir else source.parent / "plans"
    stem = source.name.removesuffix(".onnx").removesuffix(".fp16")
    stale: list[str] = []
    for plan in sorted(folder.glob("*.plan")) if folder.is_dir() else []:
        try:
            identity = PlanIdentity.read(plan)
        except ModelError:
            continue
        if identity.onnx_file != source.name and not plan.name.startswith(stem + "."):
            continue  # another model's plan
        if identity.backend != backend_name or identity.precision != precision:
            continue  # another artifact of this model, not a candidate for this load
        problems = _plan_problems(plan, identity, machine, source, precision, max_batch)
        if not problems:
            return PlanDecision("use", plan, source, precision)
        stale.append(f"{plan.name}: " + "; ".join(problems))
    if not rebuild:
        detail = ("; ".join(stale)) if stale else f"no plan for it in {folder}"
        raise EngineMismatchError(f"{source.name}: no usable {backend_name} plan ({detail})",
                                  f"build one: {build_command(source, backend_name, precision, max_batch)}")
    if stale:
        return PlanDecision("rebuild", None, source, precision, tuple(stale))
    return PlanDecision("build", None, source, precision)


def _resolve_given_plan(plan: Path, backend_name: str, machine: Any, max_batch: int, precision: str | None,
                        rebuild: bool) -> PlanDecision:
    from streamer.engine import PlanIdentity

    try:
        identity = PlanIdentity.read(plan)
    except ModelError as exc:
        command = build_command(plan, backend_name, precision or "fp16", max_batch)
        raise EngineMismatchError(f"{plan.name}: cannot tell what this plan was built for ({exc.message})",
                                  f"rebuild it: {command}") from exc
    onnx = _onnx_beside_plan(plan, identity)
    problems = _plan_problems(plan, identity, machine, onnx, precision, max_batch)
    if not problems:
        return PlanDecision("use", plan, onnx, identity.precision)
    onnx_name = identity.onnx_file or plan.name.split(".", 1)[0] + ".onnx"
    command = build_command(Path(onnx_name) if onnx is None else onnx, backend_name,
                            precision or identity.precision, max(max_batch, identity.profile.max))
    if onnx is None or not rebuild:
        why = "no ONNX beside it to rebuild from" if onnx is None else "rebuilding is off"
        raise EngineMismatchError(f"{plan.name} does not fit this machine: {'; '.join(problems)} ({why})",
                                  f"rebuild it: {command}")
    return PlanDecision("rebuild", plan, onnx, precision or identity.precision, tuple(problems))


def prepare_plan(model_path: str | Path, *, backend_name: str, machine: Any, max_batch: int,
                 precision: str | None = None, plans_dir: str | Path | None = None,
                 rebuild: bool = True) -> tuple[Path, Any, PlanDecision]:
    """:func:`resolve_plan`, then build what it says (streamer.engine); returns (plan, identity, decision)."""
    from streamer.engine import BatchProfile, PlanIdentity
    from streamer.engine.build import build_engine

    decision = resolve_plan(model_path, backend_name=backend_name, machine=machine, max_batch=max_batch,
                            precision=precision, plans_dir=plans_dir, rebuild=rebuild)
    if decision.action == "use":
        assert decision.plan is not None
        return decision.plan, PlanIdentity.read(decision.plan), decision
    for reason in decision.reasons:
        log.warning("%s plan does not fit, rebuilding: %s", backend_name, reason)
    assert decision.onnx is not None
    cc = machine.compute_capability
    ccs = (cc,) if backend_name == "tensorrt-rtx" and cc else None  # RTX: just this GPU (a fast build)
    profile = BatchProfile(1, max(1, min(32, max_batch)), max_batch)
    if decision.plan is not None:  # a given .plan: replace it in place, identity beside it
        out, out_dir = decision.plan, None
    else:
        out, out_dir = None, Path(plans_dir) if plans_dir else decision.onnx.parent / "plans"
    result = build_engine(decision.onnx, precision=decision.precision, profile=profile, out=out,
                          out_dir=out_dir, compute_capabilities=ccs, backend=backend_name,
                          force=decision.action == "rebuild")
    log.info("%s plan %s: %s (%.1f s)", backend_name, "rebuilt" if decision.action == "rebuild" else "built",
             result.plan, result.identity.build_seconds)
    return result.plan, result.identity, decision


class TensorRTBackend(Backend):
    """A deserialised engine; ``name`` is ``tensorrt`` or ``tensorrt-rtx``."""

    name = "tensorrt"
    device = "cuda"

    def __init__(self, manifest: ModelManifest, max_batch: int, *, backend_name: str, trt: Any, engine: Any,
                 runtime: Any, plan: Path, precision: str, logger: Any = None) -> None:
        super().__init__(manifest, max_batch)
        self.name = backend_name  # type: ignore[misc]  # per instance: one class serves both flavours
        self.trt = trt
        self.engine = engine
        self.runtime = runtime
        self.logger = logger
        self.plan = plan
        self.precision = precision
        self._input = manifest.input_name
        self._output = manifest.output_name
        self._check_io()

    @property
    def engine_id(self) -> str:
        return f"{self.manifest.model_id}/{self.name}-{self.precision}"

    def _check_io(self) -> None:
        trt, engine = self.trt, self.engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        hint = f"rebuild it: {build_command(self.plan, self.name, self.precision, self.max_batch)}"
        for name, mode in ((self._input, trt.TensorIOMode.INPUT), (self._output, trt.TensorIOMode.OUTPUT)):
            if name not in names or engine.get_tensor_mode(name) != mode:
                raise ModelError(f"{self.plan.name}: engine has no {mode.name.lower()} tensor {name!r} "
                                 f"(it has {', '.join(names)})", hint)
        if engine.get_tensor_dtype(self._input) != trt.DataType.UINT8:
            raise ModelError(f"{self.plan.name}: input {self._input!r} is "
                             f"{engine.get_tensor_dtype(self._input)}, expected UINT8", hint)
        if engine.get_tensor_dtype(self._output) != trt.DataType.FLOAT:
            raise ModelError(f"{self.plan.name}: output {self._output!r} is "
                             f"{engine.get_tensor_dtype(self._output)}, expected FLOAT", hint)
        shape = tuple(engine.get_tensor_shape(self._input))
        h, w = self.manifest.input_hw
        if len(shape) != 4 or tuple(shape[1:]) != (h, w, 3):
            raise ModelError(f"{self.plan.name}: input shape {shape}, expected (N, {h}, {w}, 3)", hint)
        _, _, max_shape = engine.get_tensor_profile_shape(self._input, 0)
        if max_shape[0] < self.max_batch:
            raise EngineMismatchError(f"{self.plan.name}: built for batches up to {max_shape[0]}, "
                                      f"the pipeline needs {self.max_batch}", hint)

    def prepare_slots(self, slots: Sequence[Slot]) -> None:
        for slot in slots:
            self._bind(slot)

    def _bind(self, slot: Slot) -> Any:
        context = self.engine.create_execution_context()
        if context is None:
            raise ModelError(f"{self.plan.name}: TensorRT could not create an execution context "
                             "(out of GPU memory?)", "lower --max-batch or the number of slots")
        context.set_tensor_address(self._input, slot.input_ptr)  # type: ignore[attr-defined]
        context.set_tensor_address(self._output, slot.output_ptr)  # type: ignore[attr-defined]
        slot.backend_state = context  # type: ignore[attr-defined]
        return context

    def release_slots(self, slots: Sequence[Slot]) -> None:
        for slot in slots:
            slot.backend_state = None  # type: ignore[attr-defined]

    def enqueue(self, slot: Slot, n: int) -> None:
        context = getattr(slot, "backend_state", None) or self._bind(slot)
        h, w = self.manifest.input_hw
        if not context.set_input_shape(self._input, (n, h, w, 3)):
            raise ModelError(f"{self.plan.name}: batch of {n} is outside the engine's profile")
        if not context.execute_async_v3(slot.stream.handle):  # type: ignore[attr-defined]
            raise ModelError(f"{self.plan.name}: execute_async_v3 failed for a batch of {n}")

    def close(self) -> None:
        self.engine = None
        self.runtime = None


def build_command(model: Path, backend_name: str, precision: str, max_batch: int) -> str:
    """The ``tools/build_engine.py`` command line that builds the plan the runtime wants."""
    onnx = model if model.suffix == ".onnx" else model.with_name(model.name.split(".", 1)[0] + ".onnx")
    onnx = onnx.with_name(onnx.name.replace(".fp16.onnx", ".onnx"))
    return (f"python tools/build_engine.py {onnx} --backend {backend_name} --precision {precision} "
            f"--max-batch {max_batch}")


def _manifest_for(plan: Path, onnx: Path | None, identity: Any) -> ModelManifest:
    from streamer.model.manifest import manifest_path_for

    candidates = [onnx] if onnx is not None else []
    candidates += [folder / identity.onnx_file for folder in (plan.parent, plan.parent.parent)
                   if identity.onnx_file]
    for candidate in candidates:
        side = manifest_path_for(candidate)
        if side.is_file():
            return ModelManifest.from_json(side.read_text(), str(side))
        if candidate.is_file():
            return ModelManifest.from_onnx(candidate)
    raise ModelError(f"{plan.name}: no model manifest found (looked for {identity.onnx_file or 'the ONNX'} "
                     "and its .json beside the plan and one folder up)",
                     "keep the plan under engines/ with its model")


def _invalid_reason(trt: Any, runtime: Any, blob: bytes) -> str | None:
    """Ask TensorRT(-RTX) whether the plan can run on this GPU before deserialising it (when it can say)."""
    check = getattr(runtime, "get_engine_validity", None)
    if check is None:
        return None
    try:
        validity, diagnostics = check(blob)
    except Exception:  # older bindings: fall through to deserialisation
        return None
    if validity != trt.EngineValidity.INVALID:
        return None
    flags = [name for name, member in trt.EngineInvalidityDiagnostics.__members__.items()
             if int(diagnostics) & int(member)] if diagnostics else []
    return ", ".join(flags) or "invalid"


def load(model_path: str | Path, max_batch: int, backend_name: str = "tensorrt", *,
         precision: str | None = None, plans_dir: str | Path | None = None, rebuild: bool = True,
         **options: Any) -> TensorRTBackend:
    """Open a plan (or the plan for an ONNX, built if needed) on this GPU for the CUDA executor."""
    reason = probe(backend_name)
    if reason:
        raise BackendUnavailableError(f"backend {backend_name} cannot run here: {reason}",
                                      "use --backend auto to fall back to what this machine has")
    trt = trt_module(backend_name)
    machine = machine_for(backend_name)
    plan, identity, decision = prepare_plan(model_path, backend_name=backend_name, machine=machine,
                                            max_batch=max_batch, precision=precision, plans_dir=plans_dir,
                                            rebuild=rebuild)
    manifest = _manifest_for(plan, decision.onnx, identity)
    from streamer.engine.steps import make_logger

    logger = make_logger(trt)
    runtime = trt.Runtime(logger)
    blob = plan.read_bytes()
    command = build_command(decision.onnx or plan, backend_name, identity.precision, max_batch)
    invalid = _invalid_reason(trt, runtime, blob)
    if invalid:
        raise EngineMismatchError(f"{plan.name}: {backend_name} says it cannot run on this GPU ({invalid})",
                                  f"rebuild it: {command}")
    engine = runtime.deserialize_cuda_engine(blob)
    if engine is None:
        detail = "; ".join(logger.errors[-2:]) or "no reason given"
        raise EngineMismatchError(f"{plan.name}: {backend_name} cannot deserialise it ({detail})",
                                  f"rebuild it: {command}")
    log.info("%s %s: %s (%s, batches up to %d)", backend_name, trt.__version__, plan.name, identity.precision,
             identity.profile.max)
    return TensorRTBackend(manifest, max_batch, backend_name=backend_name, trt=trt, engine=engine,
                           runtime=runtime, plan=plan, precision=identity.precision, logger=logger)
