"""What loading a model with TensorRT(-RTX) takes on this machine, decided without a GPU: use a plan, build
one, or rebuild a misfit — and the exact ``tools/build_engine.py`` command when it cannot be done here.

A model path is a ``.plan`` (its identity JSON beside it) or an ``.onnx`` (its plans are cached in
``<model dir>/plans``, or in the user's cache when that folder cannot be written, e.g. a model shipped inside
an installed package). A plan fits when its identity matches this machine — flavour and version, the GPU's
compute capability — and the request — precision, model hash, batch profile — and its file is whole.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from streamer import cuda_env
from streamer.engine.build import build_engine, onnx_precision, resolve_onnx
from streamer.engine.flavour import import_flavour, rtx_compute_capabilities, runs_on
from streamer.engine.identity import BatchProfile, Machine, PlanIdentity, normalise_cc
from streamer.errors import EngineMismatchError, ModelError
from streamer.model.manifest import ModelManifest, manifest_path_for, sha256_file
from streamer.model.variants import stem_of, variant_path

log = logging.getLogger(__name__)

# where plans of read-only model folders go (default ~/.cache/streamer/plans)
CACHE_ENV = "STREAMER_PLAN_CACHE"


@dataclass(frozen=True)
class PlanDecision:
    """What loading does with a plan: ``use`` it, ``build`` one (none yet) or ``rebuild`` it (a misfit)."""

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


def this_machine(flavour: str, compute_capability: tuple[int, int] | str | None = None) -> Machine:
    """This machine as a :class:`Machine`: the installed flavour's version, the GPU's compute capability."""
    version = import_flavour(flavour).version
    if compute_capability is None:
        gpu = cuda_env.gpu_info()
        compute_capability = gpu.compute_capability if gpu else None
    cc = normalise_cc(compute_capability) if compute_capability is not None else None
    return Machine(flavour, version, cc)


def writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK)


def plans_dir_for(onnx: Path) -> Path:
    """``<onnx dir>/plans`` where it can be written, else the user's plan cache."""
    folder = onnx.parent / "plans"
    if writable(folder if folder.is_dir() else onnx.parent):
        return folder
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "streamer" / "plans"


def build_command(model: Path, flavour: str, precision: str, max_batch: int) -> str:
    """The ``tools/build_engine.py`` command line that builds the plan the runtime wants."""
    onnx = model if model.suffix == ".onnx" else model.with_name(model.name.split(".", 1)[0] + ".onnx")
    onnx = variant_path(onnx, "fp32")
    return (f"python tools/build_engine.py {onnx} --backend {flavour} --precision {precision} "
            f"--max-batch {max_batch}")


def _default_precision(onnx: Path) -> str:
    """An fp32 model: fp16 when there is an fp16 graph to build it from (the product's fast path), else fp32.
    An fp16 or int8 model: its own precision (the user picked that file)."""
    own, _ = onnx_precision(onnx)
    return "fp16" if own == "fp32" and variant_path(onnx, "fp16").is_file() else own


def _plan_problems(plan: Path, identity: PlanIdentity, machine: Machine, onnx: Path | None,
                   precision: str | None, max_batch: int) -> list[str]:
    problems = []
    size = plan.stat().st_size
    if identity.plan_bytes and size != identity.plan_bytes:
        problems.append(f"plan file is {size} bytes, its identity says {identity.plan_bytes} (truncated or "
                        "overwritten)")
    onnx_sha = sha256_file(onnx) if onnx is not None and onnx.is_file() else None
    problems += identity.mismatches(machine, onnx_sha256=onnx_sha, precision=precision, max_batch=max_batch)
    return problems


def _onnx_beside_plan(plan: Path, identity: PlanIdentity) -> Path | None:
    """The ONNX a plan was built from: named in its identity, beside it or one folder up (engines/plans)."""
    if not identity.onnx_file:
        return None
    for folder in (plan.parent, plan.parent.parent):
        candidate = folder / identity.onnx_file
        if candidate.is_file():
            return candidate
    return None


def _refuse_unsupported(machine: Machine, model: Path) -> None:
    cc = machine.compute_capability
    if cc is not None and not runs_on(machine.backend, cc):
        raise EngineMismatchError(
            f"{model.name}: TensorRT-RTX plans cannot run on this GPU (compute capability {cc}; "
            f"TensorRT-RTX runs on {', '.join(rtx_compute_capabilities())})",
            "use --backend torch (or auto) on this GPU")


def resolve_plan(model_path: str | Path, *, flavour: str, machine: Machine, max_batch: int,
                 precision: str | None = None, plans_dir: str | Path | None = None,
                 rebuild: bool = True) -> PlanDecision:
    """Decide what loading ``model_path`` (a ``.plan`` or an ``.onnx``) takes on ``machine``.

    Raises :class:`EngineMismatchError` (naming the command to run) when the plan does not fit and cannot be
    rebuilt here: no ONNX beside it, ``rebuild=False``, or a GPU the flavour cannot run on.
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelError(f"model file not found: {model_path}",
                         "pass --model PATH to an exported .onnx or a .plan")
    _refuse_unsupported(machine, model_path)
    if model_path.suffix == ".plan":
        return _resolve_given_plan(model_path, flavour, machine, max_batch, precision, rebuild)
    if model_path.suffix != ".onnx":
        raise ModelError(f"{model_path.name}: the {flavour} backend takes an .onnx or a .plan",
                         "pass the exported .onnx (its plan is built and cached in engines/plans/)")
    precision = precision or _default_precision(model_path)
    source, precision, _ = resolve_onnx(model_path, precision)
    folder = Path(plans_dir) if plans_dir else plans_dir_for(source)
    stem = stem_of(source)
    stale: list[str] = []
    for plan in sorted(folder.glob("*.plan")) if folder.is_dir() else []:
        try:
            identity = PlanIdentity.read(plan)
        except ModelError:
            continue
        if identity.onnx_file != source.name and not plan.name.startswith(stem + "."):
            continue  # another model's plan
        if identity.backend != flavour or identity.precision != precision:
            continue  # another artifact of this model, not a candidate for this load
        problems = _plan_problems(plan, identity, machine, source, precision, max_batch)
        if not problems:
            return PlanDecision("use", plan, source, precision)
        stale.append(f"{plan.name}: " + "; ".join(problems))
    if not rebuild:
        detail = ("; ".join(stale)) if stale else f"no plan for it in {folder}"
        raise EngineMismatchError(f"{source.name}: no usable {flavour} plan ({detail})",
                                  f"build one: {build_command(source, flavour, precision, max_batch)}")
    if stale:
        return PlanDecision("rebuild", None, source, precision, tuple(stale))
    return PlanDecision("build", None, source, precision)


def _resolve_given_plan(plan: Path, flavour: str, machine: Machine, max_batch: int, precision: str | None,
                        rebuild: bool) -> PlanDecision:
    try:
        identity = PlanIdentity.read(plan)
    except ModelError as exc:
        command = build_command(plan, flavour, precision or "fp16", max_batch)
        raise EngineMismatchError(f"{plan.name}: cannot tell what this plan was built for ({exc.message})",
                                  f"rebuild it: {command}") from exc
    onnx = _onnx_beside_plan(plan, identity)
    problems = _plan_problems(plan, identity, machine, onnx, precision, max_batch)
    if not problems:
        return PlanDecision("use", plan, onnx, identity.precision)
    onnx_name = identity.onnx_file or plan.name.split(".", 1)[0] + ".onnx"
    command = build_command(Path(onnx_name) if onnx is None else onnx, flavour,
                            precision or identity.precision, max(max_batch, identity.profile.max))
    if onnx is None or not rebuild:
        why = "no ONNX beside it to rebuild from" if onnx is None else "rebuilding is off"
        raise EngineMismatchError(f"{plan.name} does not fit this machine: {'; '.join(problems)} ({why})",
                                  f"rebuild it: {command}")
    return PlanDecision("rebuild", plan, onnx, precision or identity.precision, tuple(problems))


def prepare_plan(model_path: str | Path, *, flavour: str, machine: Machine, max_batch: int,
                 precision: str | None = None, plans_dir: str | Path | None = None,
                 rebuild: bool = True) -> tuple[Path, PlanIdentity, PlanDecision]:
    """:func:`resolve_plan`, then build what it says; returns (plan, identity, decision)."""
    decision = resolve_plan(model_path, flavour=flavour, machine=machine, max_batch=max_batch,
                            precision=precision, plans_dir=plans_dir, rebuild=rebuild)
    if decision.action == "use":
        assert decision.plan is not None
        return decision.plan, PlanIdentity.read(decision.plan), decision
    for reason in decision.reasons:
        log.warning("%s plan does not fit, rebuilding: %s", flavour, reason)
    assert decision.onnx is not None
    cc = machine.compute_capability
    ccs = (cc,) if flavour == "tensorrt-rtx" and cc else None  # RTX: just this GPU (a fast build)
    profile = BatchProfile(1, max(1, min(32, max_batch)), max_batch)
    if decision.plan is not None:  # a given .plan: replace it in place, identity beside it
        out, out_dir = decision.plan, None
    else:
        out, out_dir = None, Path(plans_dir) if plans_dir else plans_dir_for(decision.onnx)
    result = build_engine(decision.onnx, precision=decision.precision, profile=profile, out=out,
                          out_dir=out_dir, compute_capabilities=ccs, backend=flavour,
                          force=decision.action == "rebuild")
    log.info("%s plan %s: %s (%.1f s)", flavour, "rebuilt" if decision.action == "rebuild" else "built",
             result.plan, result.identity.build_seconds)
    return result.plan, result.identity, decision


def manifest_for_plan(plan: Path, onnx: Path | None, identity: PlanIdentity) -> ModelManifest:
    """The model manifest of a plan: from its ONNX's ``.json`` (or metadata), beside it or one folder up."""
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
