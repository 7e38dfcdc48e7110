"""What a plan was built from and for: the ``<plan>.json`` identity file, and the check against a machine.

A plan only runs with the backend and version that built it, on the GPUs it targets, and is only the right
plan for the ONNX it came from. :meth:`PlanIdentity.mismatches` lists every way a plan does not fit a
:class:`Machine`; the runtime rebuilds (or says how to) when the list is not empty.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from streamer.errors import EngineMismatchError, ModelError
from streamer.files import write_atomic
from streamer.model.variants import PRECISIONS  # int8: built from a QDQ ONNX (explicit quantization)

FORMAT = "streamer.plan"
VERSION = 1
BACKENDS = ("tensorrt", "tensorrt-rtx")
_SHORT = {"tensorrt": "trt", "tensorrt-rtx": "rtx"}


def normalise_cc(cc: str | float | tuple[int, int]) -> str:
    """``8.6``, ``"86"``, ``"sm86"``, ``(8, 6)`` → ``"8.6"``; ``"120"``/``"sm120"`` → ``"12.0"``."""
    if isinstance(cc, tuple):
        major, minor = cc
        return f"{int(major)}.{int(minor)}"
    text = str(cc).strip().lower().removeprefix("sm").removeprefix("_")
    if "." in text:
        major_s, minor_s = text.split(".", 1)
    elif text.isdigit() and len(text) >= 2:
        major_s, minor_s = text[:-1], text[-1]
    else:
        raise ModelError(f"bad compute capability {cc!r}", "write it like 8.6, 86 or sm86")
    if not (major_s.isdigit() and minor_s.isdigit()):
        raise ModelError(f"bad compute capability {cc!r}", "write it like 8.6, 86 or sm86")
    return f"{int(major_s)}.{int(minor_s)}"


def cc_tag(ccs: tuple[str, ...]) -> str:
    """``("8.0", "8.6", "12.0")`` → ``"sm80-86-120"`` (``"smany"`` when unknown)."""
    return "sm" + "-".join(c.replace(".", "") for c in ccs) if ccs else "smany"


@dataclass(frozen=True)
class BatchProfile:
    min: int = 1
    opt: int = 32
    max: int = 64

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ModelError(f"bad batch profile {self.min}/{self.opt}/{self.max}",
                             "need 1 <= min <= opt <= max, e.g. --min-batch 1 --opt-batch 32 --max-batch 64")

    @property
    def tag(self) -> str:
        return f"b{self.min}-{self.opt}-{self.max}"


@dataclass(frozen=True)
class Machine:
    """What a plan is about to run with: the backend in use and the GPU it runs on."""

    backend: str
    backend_version: str
    compute_capability: str | None = None  # None: unknown (no GPU visible)

    def __post_init__(self) -> None:
        if self.compute_capability is not None:
            object.__setattr__(self, "compute_capability", normalise_cc(self.compute_capability))


@dataclass(frozen=True)
class PlanIdentity:
    model_name: str
    onnx_sha256: str
    backend: str
    backend_version: str
    compute_capabilities: tuple[str, ...]
    precision: str
    profile: BatchProfile
    input_name: str = "images"
    input_shape: tuple[int, ...] = ()  # per-sample shape, e.g. (32, 32, 3)
    onnx_file: str = ""
    checkpoint_sha256: str = ""
    build_seconds: float = 0.0
    plan_bytes: int = 0
    onnx_bytes: int = 0
    pth_bytes: int | None = None
    built_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    version: int = VERSION

    def __post_init__(self) -> None:
        if isinstance(self.profile, dict):
            object.__setattr__(self, "profile", BatchProfile(**self.profile))
        elif isinstance(self.profile, list | tuple):
            object.__setattr__(self, "profile", BatchProfile(*self.profile))
        object.__setattr__(self, "compute_capabilities",
                           tuple(normalise_cc(c) for c in self.compute_capabilities))
        object.__setattr__(self, "input_shape", tuple(int(x) for x in self.input_shape))
        if self.backend not in BACKENDS:
            raise ModelError(f"plan identity names unknown backend {self.backend!r}",
                             f"expected one of {', '.join(BACKENDS)}")
        if self.precision not in PRECISIONS:
            raise ModelError(f"plan identity names unknown precision {self.precision!r}")
        if len(self.onnx_sha256) != 64:
            raise ModelError(f"plan identity has a bad model sha256 {self.onnx_sha256!r}")
        if self.format != FORMAT:
            raise ModelError(f"not a plan identity (format {self.format!r})")

    @property
    def key(self) -> str:
        """The part of the plan's file name that changes whenever the plan would be different."""
        version = ".".join(self.backend_version.split(".")[:3])
        return (f"{self.onnx_sha256[:12]}.{_SHORT[self.backend]}{version}.{cc_tag(self.compute_capabilities)}"
                f".{self.precision}.{self.profile.tag}")

    def plan_name(self) -> str:
        return f"{self.model_name}.{self.key}.plan"

    def mismatches(self, machine: Machine, *, onnx_sha256: str | None = None, precision: str | None = None,
                   max_batch: int | None = None) -> list[str]:
        """Every reason this plan does not fit ``machine`` (and, if given, the model/precision/batch)."""
        out: list[str] = []
        if machine.backend != self.backend:
            out.append(f"plan is for {self.backend}, the backend in use is {machine.backend}")
        elif machine.backend_version != self.backend_version:
            out.append(f"plan was built with {self.backend} {self.backend_version}, "
                       f"this machine has {machine.backend_version}")
        cc = machine.compute_capability
        if cc is not None and self.compute_capabilities and cc not in self.compute_capabilities:
            hopper = cc == "9.0" and self.backend == "tensorrt-rtx"
            why = " (TensorRT-RTX does not run on Hopper)" if hopper else ""
            out.append(f"plan targets compute capability {', '.join(self.compute_capabilities)}, "
                       f"this GPU is {cc}{why}")
        if onnx_sha256 is not None and onnx_sha256 != self.onnx_sha256:
            out.append(f"plan was built from another model (sha256 {self.onnx_sha256[:12]}, "
                       f"the model is {onnx_sha256[:12]})")
        if precision is not None and precision != self.precision:
            out.append(f"plan is {self.precision}, {precision} was asked for")
        if max_batch is not None and max_batch > self.profile.max:
            out.append(f"plan takes batches up to {self.profile.max}, {max_batch} was asked for")
        return out

    def check(self, machine: Machine, plan_path: str | Path = "<plan>", **expected: Any) -> None:
        """Raise EngineMismatchError naming every mismatch and the rebuild command."""
        problems = self.mismatches(machine, **expected)
        if problems:
            source = self.onnx_file or "MODEL.onnx"
            raise EngineMismatchError(f"{plan_path}: " + "; ".join(problems),
                                      f"rebuild it: python tools/build_engine.py {source}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["compute_capabilities"] = list(self.compute_capabilities)
        data["input_shape"] = list(self.input_shape)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, origin: str = "<plan identity>") -> PlanIdentity:
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise TypeError(f"top level is {type(data).__name__}")
            known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
            return cls(**known)
        except (json.JSONDecodeError, TypeError, ValueError) as exc:
            raise ModelError(f"{origin}: malformed plan identity ({exc})",
                             "delete the plan and its .json and rebuild with tools/build_engine.py") from exc

    @classmethod
    def read(cls, path: str | Path) -> PlanIdentity:
        """Read ``<plan>.json`` (pass the plan or the json path)."""
        path = Path(path)
        side = path if path.suffix == ".json" else identity_path_for(path)
        if not side.is_file():
            raise ModelError(f"{side}: plan identity file missing",
                             "rebuild the plan with tools/build_engine.py (it writes both)")
        return cls.from_json(side.read_text(), str(side))

    def write(self, plan_path: str | Path) -> Path:
        side = identity_path_for(plan_path)
        write_atomic(side, (self.to_json() + "\n").encode())
        return side


def identity_path_for(plan_path: str | Path) -> Path:
    p = Path(plan_path)
    return p.with_name(p.name + ".json")
