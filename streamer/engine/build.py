"""ONNX → plan + identity, reusing a plan already built for the same key. The runtime and
``tools/build_engine.py`` both call :func:`build_engine`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

from streamer.engine.flavour import TrtFlavour, import_flavour
from streamer.engine.identity import BatchProfile, PlanIdentity, identity_path_for, normalise_cc
from streamer.engine.steps import BuildPlan, CreateConfig, NetworkFromOnnx, SavePlan
from streamer.errors import BackendUnavailableError, ModelError
from streamer.model.manifest import ModelManifest, manifest_path_for, sha256_file
from streamer.model.qdq import is_qdq
from streamer.model.variants import PRECISIONS, sibling_hint, stem_of, variant_path

log = logging.getLogger(__name__)
DEFAULT = "default"  # timing_cache sentinel: <out_dir>/<backend><version>.timing.cache for TensorRT


@dataclass(frozen=True)
class BuildResult:
    plan: Path
    identity: PlanIdentity
    reused: bool  # an existing plan with the same key and a readable identity was kept
    onnx: Path


def onnx_precision(path: Path) -> tuple[str, ModelManifest | None]:
    """The ONNX's precision, from its streamer manifest, else from its graph (Q/DQ nodes: int8) and
    initializers' types."""
    import onnx

    try:
        manifest = ModelManifest.from_onnx(path)
        return manifest.precision, manifest
    except ModelError as exc:
        if not path.is_file() or "no streamer manifest" not in exc.message:
            raise
    model = onnx.load(str(path), load_external_data=False)
    if is_qdq(model):
        return "int8", None
    halves = any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    return ("fp16" if halves else "fp32"), None


def resolve_onnx(path: str | Path, precision: str | None) -> tuple[Path, str, ModelManifest | None]:
    """The ONNX to build ``precision`` from: ``path`` itself, or its fp32/fp16/int8 sibling (networks are
    strongly typed)."""
    path = Path(path)
    if precision is not None and precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}", f"use one of {', '.join(PRECISIONS)}")
    actual, manifest = onnx_precision(path)
    if precision is None or precision == actual:
        return path, actual, manifest
    sibling = variant_path(path, precision)
    if sibling.is_file():
        sib_precision, sib_manifest = onnx_precision(sibling)
        if sib_precision == precision:
            log.info("%s plan requested: building from %s", precision, sibling)
            return sibling, precision, sib_manifest
    raise ModelError(
        f"{path} is an {actual} model and networks are strongly typed, so an {precision} plan needs an "
        f"{precision} ONNX ({sibling.name} not found)",
        f"{sibling_hint(path, precision, manifest.dataset if manifest else 'shapes')}, or drop --precision",
    )


def _pth_bytes(onnx_path: Path, manifest: ModelManifest | None) -> int | None:
    if manifest is None or not manifest.extra.get("checkpoint"):
        return None
    pth = manifest_path_for(onnx_path).parent / str(manifest.extra["checkpoint"])
    return pth.stat().st_size if pth.is_file() else None


def build_engine(onnx_path: str | Path, *, precision: str | None = None, profile: BatchProfile | None = None,
                 out: str | Path | None = None, out_dir: str | Path | None = None,
                 compute_capabilities: tuple[str, ...] | None = None,
                 timing_cache: str | Path | None = DEFAULT, backend: str | TrtFlavour = "auto",
                 force: bool = False) -> BuildResult:
    """Build (or reuse) the plan for ``onnx_path``; returns where it is and its identity.

    The plan goes to ``out`` if given, else ``out_dir`` (default ``<onnx dir>/plans``) under
    :meth:`PlanIdentity.plan_name`, with ``<plan>.json`` beside it.
    """
    profile = profile or BatchProfile()
    source, prec, manifest = resolve_onnx(onnx_path, precision)
    try:
        flavour = backend if isinstance(backend, TrtFlavour) else import_flavour(backend)
    except BackendUnavailableError as exc:
        raise BackendUnavailableError(f"{source}: cannot build a plan: {exc.message}", exc.hint) from exc
    ccs = tuple(normalise_cc(c) for c in compute_capabilities) if compute_capabilities else None
    folder = Path(out_dir) if out_dir else source.parent / "plans"
    if timing_cache == DEFAULT:
        version = ".".join(flavour.version.split(".")[:3])
        timing_cache = None if flavour.is_rtx else folder / f"trt{version}.timing.cache"
    config = CreateConfig(profile, ccs, timing_cache)
    model_name = manifest.name if manifest else stem_of(source)
    draft = PlanIdentity(
        model_name=model_name, onnx_sha256=sha256_file(source), backend=flavour.name,
        backend_version=flavour.version, compute_capabilities=config.targets(flavour), precision=prec,
        profile=profile, onnx_file=source.name,
        checkpoint_sha256=manifest.checkpoint_sha256 if manifest else "",
        onnx_bytes=source.stat().st_size, pth_bytes=_pth_bytes(source, manifest),
    )
    plan_path = Path(out) if out else folder / draft.plan_name()
    if not force and plan_path.is_file() and identity_path_for(plan_path).is_file():
        try:
            existing = PlanIdentity.read(plan_path)
        except ModelError:
            existing = None
        size = plan_path.stat().st_size
        if existing is not None and existing.key == draft.key and existing.plan_bytes == size:
            log.info("plan up to date: %s", plan_path)
            return BuildResult(plan_path, existing, True, source)
    network = NetworkFromOnnx(source, flavour)
    parsed = network()
    shape = tuple(parsed.input.shape)[1:]
    _, built = SavePlan(BuildPlan(parsed, config), plan_path)()
    identity = replace(draft, input_name=parsed.input.name, input_shape=shape,
                       build_seconds=round(built.seconds, 3), plan_bytes=len(built.data),
                       built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       extra={"timing_cache": str(timing_cache) if timing_cache else None})
    identity.write(plan_path)
    return BuildResult(plan_path, identity, False, source)
