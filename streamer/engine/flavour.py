"""The two TensorRT flavours in one table: their modules, install hints and the GPUs they run on.

TensorRT and TensorRT-RTX share the builder and runtime API (Builder, OnnxParser, Runtime, execute_async_v3).
What differs: TensorRT-RTX builds on a CPU for explicit compute-capability targets, ignores timing caches and
does not run on every GPU (not on Hopper, 9.0); TensorRT builds on the GPU it runs on, for that GPU.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any

from streamer.errors import BackendUnavailableError, ConfigError


@dataclass(frozen=True)
class FlavourInfo:
    name: str  # as on the command line
    module: str  # the Python package
    install: str  # how to get it


FLAVOURS: dict[str, FlavourInfo] = {
    "tensorrt": FlavourInfo(
        "tensorrt", "tensorrt",
        "install TensorRT from NVIDIA (pip install tensorrt --extra-index-url https://pypi.nvidia.com; this "
        "machine may not reach that index), or use tensorrt-rtx"),
    "tensorrt-rtx": FlavourInfo("tensorrt-rtx", "tensorrt_rtx", "pip install 'streamer[trt-rtx]'"),
}
# TensorRT-RTX's targets when its ComputeCapability enum cannot be read (the enum of 1.7 lists these)
RTX_RUNS_ON = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")
# what a plan built without explicit targets runs on: Ampere, Ampere consumer, Ada, Blackwell consumer
RTX_DEFAULT_TARGETS = ("8.0", "8.6", "8.9", "12.0")


def info(name: str) -> FlavourInfo:
    try:
        return FLAVOURS[name]
    except KeyError:
        raise ConfigError(f"unknown TensorRT flavour {name!r}", f"use {' or '.join(FLAVOURS)}") from None


def installed(name: str) -> bool:
    return importlib.util.find_spec(info(name).module) is not None


@dataclass(frozen=True)
class TrtFlavour:
    """An imported TensorRT flavour: its name, version and module."""

    name: str  # "tensorrt" | "tensorrt-rtx"
    version: str
    module: Any = field(repr=False, compare=False)

    @property
    def is_rtx(self) -> bool:
        return self.name == "tensorrt-rtx"

    def compute_capabilities(self) -> tuple[str, ...]:
        """Compute capabilities the flavour runs on and can target explicitly (TensorRT-RTX; () for TensorRT,
        which targets the GPU it builds on)."""
        return rtx_compute_capabilities(self.module) if self.is_rtx else ()

    def cc_enum(self, cc: str) -> Any:
        member = "SM" + cc.replace(".", "")
        try:
            return self.module.ComputeCapability.__members__[member]
        except KeyError:
            raise ConfigError(f"{self.name} {self.version} cannot target compute capability {cc}",
                              f"choose from {', '.join(self.compute_capabilities())}") from None


def import_flavour(requested: str = "auto") -> TrtFlavour:
    """``auto`` (tensorrt, then tensorrt-rtx), ``tensorrt`` or ``tensorrt-rtx``, imported."""
    names = list(FLAVOURS) if requested == "auto" else [info(requested).name]
    failures = []
    for name in names:
        try:
            module = importlib.import_module(FLAVOURS[name].module)
        except ImportError as exc:
            failures.append(f"{FLAVOURS[name].module}: {exc}")
            continue
        return TrtFlavour(name=name, version=str(module.__version__), module=module)
    wanted = "tensorrt-rtx" if requested == "auto" else requested
    modules = " and ".join(FLAVOURS[n].module for n in names)
    raise BackendUnavailableError(f"{modules} not importable ({'; '.join(failures)})",
                                  FLAVOURS[wanted].install)


def rtx_compute_capabilities(module: Any = None) -> tuple[str, ...]:
    """What TensorRT-RTX runs on, read from its ``ComputeCapability`` enum (``SM89`` → ``8.9``)."""
    if module is None:
        try:
            module = importlib.import_module(FLAVOURS["tensorrt-rtx"].module)
        except ImportError:
            return RTX_RUNS_ON
    members = getattr(getattr(module, "ComputeCapability", None), "__members__", {})
    ccs = sorted((int(m[2:-1]), int(m[-1])) for m in members if m.startswith("SM") and m[2:].isdigit())
    return tuple(f"{a}.{b}" for a, b in ccs) or RTX_RUNS_ON


def runs_on(name: str, cc: str) -> bool:
    """Whether a plan of flavour ``name`` can run on a GPU of compute capability ``cc`` (``"9.0"``)."""
    return name != "tensorrt-rtx" or cc in rtx_compute_capabilities()
