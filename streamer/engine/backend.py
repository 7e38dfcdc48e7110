"""Which TensorRT flavour builds plans here: ``tensorrt`` when importable, else ``tensorrt_rtx``.

Both expose the same builder API (Builder, OnnxParser, IBuilderConfig, ...); the differences that matter to
the builder: TensorRT-RTX builds on a CPU for explicit compute-capability targets and ignores timing caches,
TensorRT builds on the GPU it runs on (its target is that GPU).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from streamer.errors import BackendUnavailableError, ConfigError

MODULES = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}
INSTALL_HINT = {
    "tensorrt": "install TensorRT from NVIDIA (pip's 'tensorrt' needs NVIDIA's index), or use tensorrt-rtx",
    "tensorrt-rtx": "pip install tensorrt-rtx-cu13 (builds plans on a CPU; the 'trt-rtx' extra)",
}
# TensorRT-RTX compute capabilities this package targets by default, when the installed build knows them:
# Ampere, Ampere consumer, Ada, Blackwell consumer. Hopper (9.0) is not supported by TensorRT-RTX.
DEFAULT_RTX_TARGETS = ("8.0", "8.6", "8.9", "12.0")


@dataclass(frozen=True)
class TrtBackend:
    name: str  # "tensorrt" | "tensorrt-rtx"
    version: str
    module: Any = field(repr=False, compare=False)

    @property
    def is_rtx(self) -> bool:
        return self.name == "tensorrt-rtx"

    def supported_targets(self) -> tuple[str, ...]:
        """Compute capabilities the builder can target explicitly (TensorRT-RTX only)."""
        if not self.is_rtx:
            return ()
        out = []
        for member in self.module.ComputeCapability.__members__:
            if member.startswith("SM") and member[2:].isdigit():
                digits = member[2:]
                out.append(f"{int(digits[:-1])}.{digits[-1]}")
        return tuple(out)

    def cc_enum(self, cc: str) -> Any:
        member = "SM" + cc.replace(".", "")
        try:
            return self.module.ComputeCapability.__members__[member]
        except KeyError:
            raise ConfigError(f"{self.name} {self.version} cannot target compute capability {cc}",
                              f"choose from {', '.join(self.supported_targets())}") from None


def import_backend(requested: str = "auto") -> TrtBackend:
    """The builder backend: ``auto`` (tensorrt, then tensorrt-rtx), ``tensorrt`` or ``tensorrt-rtx``."""
    if requested != "auto" and requested not in MODULES:
        raise ConfigError(f"unknown engine backend {requested!r}", "use auto, tensorrt or tensorrt-rtx")
    names = list(MODULES) if requested == "auto" else [requested]
    failures = []
    for name in names:
        try:
            module = importlib.import_module(MODULES[name])
        except ImportError as exc:  # also OSError-free: a broken CUDA install surfaces at builder creation
            failures.append(f"{MODULES[name]}: {exc}")
            continue
        return TrtBackend(name=name, version=str(module.__version__), module=module)
    wanted = "tensorrt-rtx" if requested == "auto" else requested
    modules = " and ".join(MODULES[n] for n in names)
    raise BackendUnavailableError(
        f"cannot build a plan: {modules} not importable ({'; '.join(failures)})",
        INSTALL_HINT[wanted],
    )


def current_compute_capability() -> str | None:
    """The first visible GPU's compute capability as ``"8.6"``, or None without a GPU (or a way to ask)."""
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return f"{major}.{minor}"
    except ImportError:
        pass
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count():
            major, minor = cuda.Device(0).compute_capability()
            return f"{major}.{minor}"
    except Exception:  # no pycuda, no driver, no device: all mean "unknown"
        pass
    return None
