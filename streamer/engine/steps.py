"""Plan building as small composable steps, in the style of Polygraphy's loaders.

Each step is a callable object holding its settings; calling it does the work, pulling its input from the
step it was given::

    network = NetworkFromOnnx("engines/shapes_cnn.fp16.onnx")
    config = CreateConfig(BatchProfile(1, 32, 64), compute_capabilities=("8.6", "12.0"))
    plan = BuildPlan(network, config)
    SavePlan(plan, "engines/plans/x.plan")()

Failures are one-line :class:`streamer.errors.StreamerError` s naming the file and the fix.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamer import cuda_env
from streamer.engine.flavour import RTX_DEFAULT_TARGETS, TrtFlavour, import_flavour
from streamer.engine.identity import BatchProfile
from streamer.errors import BackendUnavailableError, ConfigError, ModelError
from streamer.files import write_atomic

log = logging.getLogger(__name__)


def make_logger(trt: Any) -> Any:
    """A TensorRT logger that keeps errors (for our messages) and forwards the rest to ``logging``."""

    class Recorder(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(msg)
                log.debug("%s: %s", severity, msg)
            elif severity == trt.ILogger.Severity.WARNING:
                log.info("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

    return Recorder()


@dataclass
class ParsedNetwork:
    """A parsed network and the objects that must outlive it."""

    flavour: TrtFlavour
    builder: Any
    network: Any
    parser: Any
    logger: Any
    onnx_path: Path

    @property
    def input(self) -> Any:
        return self.network.get_input(0)


class NetworkFromOnnx:
    """ONNX file → strongly typed TensorRT network (precision comes from the ONNX's own types)."""

    def __init__(self, onnx_path: str | Path, flavour: TrtFlavour | str = "auto") -> None:
        self.onnx_path = Path(onnx_path)
        self.flavour = flavour

    def __call__(self) -> ParsedNetwork:
        path = self.onnx_path
        if not path.is_file():
            raise ModelError(f"ONNX model not found: {path}", "export one with tools/export_onnx.py")
        flavour = self.flavour if isinstance(self.flavour, TrtFlavour) else import_flavour(self.flavour)
        trt = flavour.module
        logger = make_logger(trt)
        try:
            builder = trt.Builder(logger)
        except Exception as exc:  # TensorRT without a GPU/driver fails here
            raise BackendUnavailableError(f"{flavour.name} {flavour.version} cannot create a builder ({exc})",
                                          "TensorRT builds on a GPU; on a CPU use tensorrt-rtx") from exc
        if builder is None:
            raise BackendUnavailableError(f"{flavour.name} {flavour.version} cannot create a builder "
                                          f"({'; '.join(logger.errors) or 'no reason given'})",
                                          "TensorRT builds on a GPU; on a CPU use tensorrt-rtx")
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(path)):
            raise self._parse_error(parser, logger)
        if network.num_inputs != 1:
            raise ModelError(f"{path}: not a valid ONNX model for streamer ({network.num_inputs} inputs; "
                             "one uint8 'images' input expected)", "re-export it with tools/export_onnx.py")
        return ParsedNetwork(flavour, builder, network, parser, logger, path)

    def _parse_error(self, parser: Any, logger: Any) -> ModelError:
        path = self.onnx_path
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        if not errors:
            detail = "; ".join(logger.errors) or "no reason given"
            return ModelError(f"{path}: the ONNX parser failed ({detail})",
                              "re-export it with tools/export_onnx.py")
        first = errors[0]
        code = str(first.code()).rsplit(".", 1)[-1]
        if code == "MODEL_DESERIALIZE_FAILED":
            return ModelError(f"{path}: not a valid ONNX model (it cannot be deserialised)",
                              "re-export it with tools/export_onnx.py")
        op = first.node_operator()
        if code in ("UNSUPPORTED_NODE", "INVALID_NODE", "UNSUPPORTED_NODE_ATTR", "UNSUPPORTED_NODE_INPUT",
                    "UNSUPPORTED_NODE_DATATYPE", "UNSUPPORTED_NODE_DYNAMIC") and op:
            where = f"node {first.node_name() or first.node()}"
            return ModelError(f"{path}: {where} uses op {op!r}, which this TensorRT cannot import "
                              f"({code}: {first.desc().strip()})",
                              "export with standard ONNX ops only (tools/export_onnx.py does), "
                              "or provide a TensorRT plugin for it")
        return ModelError(f"{path}: the ONNX parser failed ({code}: {first.desc().strip()})",
                          "re-export it with tools/export_onnx.py")


class CreateConfig:
    """Builder config: batch profile, compute-capability targets (TensorRT-RTX), timing cache (TensorRT)."""

    def __init__(self, profile: BatchProfile | None = None,
                 compute_capabilities: tuple[str, ...] | None = None,
                 timing_cache: str | Path | None = None) -> None:
        self.profile = profile or BatchProfile()
        self.compute_capabilities = compute_capabilities
        self.timing_cache = Path(timing_cache) if timing_cache else None

    def targets(self, flavour: TrtFlavour) -> tuple[str, ...]:
        """The compute capabilities a plan from this config runs on."""
        if not flavour.is_rtx:
            if self.compute_capabilities:
                log.warning("TensorRT builds for the GPU it runs on; ignoring targets %s",
                            self.compute_capabilities)
            gpu = cuda_env.gpu_info()
            return (gpu.cc_string,) if gpu else ()
        if self.compute_capabilities:
            return tuple(self.compute_capabilities)
        supported = flavour.compute_capabilities()
        return tuple(cc for cc in RTX_DEFAULT_TARGETS if cc in supported)

    def __call__(self, parsed: ParsedNetwork) -> Any:
        trt = parsed.flavour.module
        config = parsed.builder.create_builder_config()
        tensor = parsed.input
        sample = tuple(tensor.shape)[1:]
        if any(d < 0 for d in sample) or tensor.shape[0] != -1:
            raise ModelError(f"{parsed.onnx_path}: input {tensor.name}{list(tensor.shape)} needs a dynamic "
                             "batch and a fixed sample shape", "re-export it with tools/export_onnx.py")
        profile = parsed.builder.create_optimization_profile()
        p = self.profile
        profile.set_shape(tensor.name, (p.min, *sample), (p.opt, *sample), (p.max, *sample))
        config.add_optimization_profile(profile)
        if parsed.flavour.is_rtx:
            targets = self.targets(parsed.flavour)
            config.num_compute_capabilities = len(targets)
            for i, cc in enumerate(targets):
                if not config.set_compute_capability(parsed.flavour.cc_enum(cc), i):
                    raise ConfigError(f"{parsed.flavour.name} refused compute capability target {cc}",
                                      f"choose from {', '.join(parsed.flavour.compute_capabilities())}")
            if self.timing_cache:
                log.info("TensorRT-RTX has no timing cache (its operations are no-ops); not using %s",
                         self.timing_cache)
        elif self.timing_cache:
            blob = self.timing_cache.read_bytes() if self.timing_cache.is_file() else b""
            cache = config.create_timing_cache(blob)
            config.set_timing_cache(cache, ignore_mismatch=False)
        del trt
        return config


@dataclass(frozen=True)
class BuiltPlan:
    data: bytes
    seconds: float


class BuildPlan:
    """Network + config → serialized plan bytes (and how long the build took)."""

    def __init__(self, network: NetworkFromOnnx | ParsedNetwork, config: CreateConfig) -> None:
        self.network = network
        self.config = config

    def __call__(self) -> BuiltPlan:
        parsed = self.network() if callable(self.network) else self.network
        t0 = time.perf_counter()
        config = self.config(parsed)
        serialized = parsed.builder.build_serialized_network(parsed.network, config)
        seconds = time.perf_counter() - t0
        if serialized is None:
            detail = "; ".join(parsed.logger.errors[-3:]) or "no reason given"
            raise ModelError(f"{parsed.onnx_path}: {parsed.flavour.name} could not build a plan ({detail})",
                             "check the ONNX ops/types are supported, or try another --precision/profile")
        if self.config.timing_cache and not parsed.flavour.is_rtx:
            _atomic_write(self.config.timing_cache, bytes(config.get_timing_cache().serialize()))
        return BuiltPlan(bytes(serialized), seconds)


class SavePlan:
    """Write the plan atomically (tmp file in the same folder, then ``os.replace``)."""

    def __init__(self, plan: BuildPlan | BuiltPlan, path: str | Path) -> None:
        self.plan = plan
        self.path = Path(path)

    def __call__(self) -> tuple[Path, BuiltPlan]:
        built = self.plan() if callable(self.plan) else self.plan
        _atomic_write(self.path, built.data)
        return self.path, built


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)
