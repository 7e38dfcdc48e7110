"""TensorRT and TensorRT-RTX on the CUDA executor: one adapter for both flavours.

``load`` asks :mod:`streamer.engine.plans` which plan to use (building or rebuilding it when it does not fit
this machine, or raising an error that names the build command), then deserialises it. Running: one
execution context per slot (a context must not run on two streams at once), its tensor addresses bound once
to the slot's device buffers, then per batch ``set_input_shape`` (partial batches) and ``execute_async_v3``
on the slot's stream.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from streamer import cuda_env
from streamer.backends.base import CudaBackend
from streamer.engine import flavour as flavours
from streamer.engine.identity import PlanIdentity
from streamer.engine.plans import build_command, manifest_for_plan, prepare_plan, this_machine
from streamer.engine.steps import make_logger
from streamer.errors import BackendUnavailableError, EngineMismatchError, ModelError
from streamer.executors.contract import CudaSlot
from streamer.model.manifest import ModelManifest

log = logging.getLogger(__name__)


def probe(name: str) -> str | None:
    """None when backend ``name`` (tensorrt | tensorrt-rtx) can run here, else why not."""
    module = flavours.info(name).module
    if not flavours.installed(name):
        return f"the {module} package is not installed ({flavours.info(name).install})"
    gpu = cuda_env.gpu_info()
    if gpu is None:
        return f"{cuda_env.no_gpu_reason()} ({module} is installed, but plans need a GPU to run)"
    if not flavours.runs_on(name, gpu.cc_string):
        return (f"the GPU ({gpu.name}) has compute capability {gpu.cc_string}, which TensorRT-RTX does not "
                f"support (it runs on {', '.join(flavours.rtx_compute_capabilities())})")
    return cuda_env.pycuda_reason()


class TensorRTBackend(CudaBackend):
    """A deserialised engine; ``name`` is ``tensorrt`` or ``tensorrt-rtx``."""

    name = "tensorrt"

    def __init__(self, manifest: ModelManifest, max_batch: int, *, flavour: flavours.TrtFlavour, engine: Any,
                 runtime: Any, plan: Path, identity: PlanIdentity, logger: Any = None) -> None:
        super().__init__(manifest, max_batch)
        self.name = flavour.name  # type: ignore[misc]  # per instance: one class serves both flavours
        self.trt = flavour.module
        self.engine = engine
        self.runtime = runtime  # kept: an engine must not outlive its runtime (nor the runtime its logger)
        self.logger = logger
        self.plan = plan
        self.precision = identity.precision
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

    def bind(self, slot: CudaSlot) -> Any:
        context = self.engine.create_execution_context()
        if context is None:
            raise ModelError(f"{self.plan.name}: TensorRT could not create an execution context "
                             "(out of GPU memory?)", "lower --batch or the number of slots")
        context.set_tensor_address(self._input, slot.input_ptr)
        context.set_tensor_address(self._output, slot.output_ptr)
        return context

    def enqueue(self, slot: CudaSlot, n: int) -> None:
        context = slot.engine_state
        h, w = self.manifest.input_hw
        if not context.set_input_shape(self._input, (n, h, w, 3)):
            raise ModelError(f"{self.plan.name}: batch of {n} is outside the engine's profile")
        if not context.execute_async_v3(slot.stream_handle):
            raise ModelError(f"{self.plan.name}: execute_async_v3 failed for a batch of {n}")

    def close(self) -> None:
        self.engine = None
        self.runtime = None


def _invalid_reason(trt: Any, runtime: Any, blob: bytes) -> str | None:
    """Ask TensorRT(-RTX) whether the plan can run on this GPU before deserialising it (when it can say)."""
    check = getattr(runtime, "get_engine_validity", None)  # newer bindings only
    if check is None:
        return None
    try:
        validity, diagnostics = check(blob)
    except Exception as exc:  # older bindings: deserialisation will tell
        log.debug("get_engine_validity failed (%s); deserialising to find out", exc)
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
    flavour = flavours.import_flavour(backend_name)
    plan, identity, decision = prepare_plan(model_path, flavour=backend_name,
                                            machine=this_machine(backend_name), max_batch=max_batch,
                                            precision=precision, plans_dir=plans_dir, rebuild=rebuild)
    manifest = manifest_for_plan(plan, decision.onnx, identity)
    trt = flavour.module
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
    log.info("%s %s: %s (%s, batches up to %d)", backend_name, flavour.version, plan.name, identity.precision,
             identity.profile.max)
    return TensorRTBackend(manifest, max_batch, flavour=flavour, engine=engine, runtime=runtime, plan=plan,
                           identity=identity, logger=logger)
