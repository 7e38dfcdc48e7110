"""PyTorch on CUDA, for GPUs without TensorRT: fp16, channels-last, CUDA graphs, on the executor's streams.

The model is loaded without the user's class: ``<stem>.pt2`` (a ``torch.export`` program of the bare net or of
the whole pipeline model) when it loads and runs, else the net rebuilt from ``<stem>.pth`` + the manifest's
``arch`` through :mod:`streamer.model.nets`. It is wrapped in :class:`streamer.model.wrap.PipelineModel`, the
very preprocessing the ONNX export bakes in (uint8 NHWC BGR → float → CHW → RGB → normalise; softmax out).

Each :class:`~streamer.executors.cuda.CudaSlot` gets torch views of its pycuda device buffers (through
``__cuda_array_interface__``, no copy) and a ``torch.cuda.ExternalStream`` over its pycuda stream.

CUDA graphs: one graph per (slot, bucket) where buckets are 1, 2, 4, … max_batch; a partial batch of ``n``
rows replays the smallest bucket ≥ n (the extra rows compute on stale input and are never copied back —
the nets are row-independent in eval mode). The graphs read the slot's own device input and write its own
device output, so there is no extra device copy and no shared static buffer that would force the slots'
streams to serialise; each slot's graphs share one private memory pool (they only ever run one at a time, on
that slot's stream). Cost: slots × buckets captures at start-up and one activation pool per slot.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streamer.backends.base import Backend
from streamer.cuda_env import no_gpu_reason, pycuda_reason
from streamer.errors import BackendUnavailableError, ModelError
from streamer.model.manifest import ModelManifest, manifest_path_for

if TYPE_CHECKING:
    import torch
    from torch import nn

    from streamer.executors.base import Slot

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "fp32")


def probe(name: str = "torch") -> str | None:
    """None if PyTorch can run on a CUDA GPU here; else why not (cheap checks before importing torch)."""
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed (pip install 'streamer[torch]')"
    reason = no_gpu_reason()
    if reason:
        return reason
    reason = pycuda_reason()
    if reason:
        return reason
    import torch

    if not torch.cuda.is_available():
        return f"torch {torch.__version__} has no CUDA support (a CPU-only build?)"
    return None


def bucket_sizes(max_batch: int) -> tuple[int, ...]:
    """1, 2, 4, … below ``max_batch``, then ``max_batch``: the batch sizes graphs are captured for."""
    sizes = []
    b = 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    sizes.append(max_batch)
    return tuple(sizes)


def bucket_for(n: int, buckets: Sequence[int]) -> int:
    for b in buckets:
        if b >= n:
            return b
    raise ValueError(f"batch {n} exceeds the largest captured batch {buckets[-1]}")


@dataclass
class _SlotState:
    inp: torch.Tensor
    out: torch.Tensor
    stream: torch.cuda.ExternalStream
    buckets: tuple[int, ...]  # the backend's buckets that fit this slot, and the slot's capacity
    graphs: dict[int, torch.cuda.CUDAGraph] = field(default_factory=dict)


class _CudaArray:
    """A bare ``__cuda_array_interface__`` (v2, no stream) over a pycuda allocation."""

    def __init__(self, ptr: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.__cuda_array_interface__ = {"shape": tuple(shape), "typestr": np.dtype(dtype).str,
                                         "data": (ptr, False), "version": 2, "strides": None}


def _device_tensor(array: Any) -> torch.Tensor:
    """A torch view (no copy) of a pycuda GPUArray, through ``__cuda_array_interface__``."""
    import torch

    ptr = int(array.gpudata)
    try:
        tensor = torch.as_tensor(array, device="cuda")
    except (TypeError, RuntimeError, ValueError):  # a torch that rejects pycuda's v3 dict: hand it plain v2
        tensor = torch.as_tensor(_CudaArray(ptr, array.shape, array.dtype), device="cuda")
    if tensor.data_ptr() != ptr:
        raise RuntimeError("torch copied a slot buffer instead of viewing it; the engine would not see it")
    return tensor


def _module_stem(path: Path) -> Path:
    name = path.name
    for suffix in (".onnx", ".pt2", ".pth", ".json"):
        name = name.removesuffix(suffix)
    return path.with_name(name.removesuffix(".fp16"))


class TorchCudaBackend(Backend):
    name = "torch"
    device = "cuda"

    def __init__(self, manifest: ModelManifest, max_batch: int, model: nn.Module, *, precision: str = "fp16",
                 cuda_graphs: bool = True, channels_last: bool = True, autocast: bool = False,
                 graph_buckets: Sequence[int] | None = None, source: str = "") -> None:
        import torch

        super().__init__(manifest, max_batch)
        if precision not in PRECISIONS:
            raise ModelError(f"unknown precision {precision!r} for the torch backend", "use fp16 or fp32")
        self.precision = precision
        self.cuda_graphs = cuda_graphs
        self.autocast = autocast
        self.source = source
        self.buckets = tuple(sorted(set(graph_buckets))) if graph_buckets else bucket_sizes(max_batch)
        if self.buckets[-1] < max_batch:
            self.buckets = (*self.buckets, max_batch)
        torch.backends.cudnn.benchmark = True
        _set_eval(model)
        model = model.to("cuda")
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self._pool = None

    @property
    def engine_id(self) -> str:
        graphs = "+graphs" if self.cuda_graphs else ""
        return f"{self.manifest.model_id}/{self.name}-{self.precision}{graphs}"

    # -- running ------------------------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        if self.autocast:
            with torch.autocast("cuda", dtype=torch.float16, cache_enabled=False):
                return self.model(x)
        return self.model(x)

    def _bind(self, slot: Slot) -> _SlotState:
        import torch

        dev_in = getattr(slot, "device_input", None)
        if dev_in is None:
            raise ModelError("the torch backend needs a CUDA slot (device buffers and a stream)",
                             "drive it with streamer.executors.cuda.CudaExecutor")
        state = _SlotState(
            inp=_device_tensor(slot.device_input),
            out=_device_tensor(slot.device_output),
            stream=torch.cuda.ExternalStream(slot.stream.handle),
            buckets=tuple(sorted({b for b in self.buckets if b < slot.capacity} | {slot.capacity})),
        )
        if self.cuda_graphs:
            self._capture(state)
        slot.backend_state = state
        return state

    def _capture(self, state: _SlotState) -> None:
        import torch

        pool = torch.cuda.graph_pool_handle()
        side = torch.cuda.Stream()
        side.wait_stream(state.stream)
        with torch.inference_mode():
            for b in sorted(state.buckets, reverse=True):  # largest first: the pool is sized once
                inp, out = state.inp[:b], state.out[:b]
                with torch.cuda.stream(side):  # warm-up (cuDNN autotuning, lazy allocations) off-capture
                    for _ in range(2):
                        out.copy_(self._forward(inp))
                side.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool, stream=side, capture_error_mode="thread_local"):
                    out.copy_(self._forward(inp))
                state.graphs[b] = graph
        side.synchronize()

    def prepare_slots(self, slots: Sequence[Slot]) -> None:
        for slot in slots:
            self._bind(slot)

    def release_slots(self, slots: Sequence[Slot]) -> None:
        import torch

        for slot in slots:
            slot.backend_state = None  # type: ignore[attr-defined]
        torch.cuda.synchronize()

    def enqueue(self, slot: Slot, n: int) -> None:
        import torch

        state: _SlotState | None = getattr(slot, "backend_state", None)
        if state is None:
            state = self._bind(slot)
        with torch.cuda.stream(state.stream):
            if self.cuda_graphs:
                state.graphs[bucket_for(n, state.buckets)].replay()
            else:
                with torch.inference_mode():
                    state.out[:n].copy_(self._forward(state.inp[:n]))

    def run_host(self, images: np.ndarray) -> np.ndarray:
        """Synchronous, outside any executor (checks and tools): uint8 (n,H,W,3) BGR → (n,C) scores."""
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(images)).to("cuda")
            return self._forward(x).float().cpu().numpy()

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]


# -- loading ------------------------------------------------------------------------------------------------
def _set_eval(model: nn.Module) -> None:
    """eval() without calling it: a ``torch.export`` module refuses train()/eval() (it is already eval)."""
    for m in model.modules():
        m.training = False


def _read_manifest(path: Path) -> ModelManifest:
    if path.suffix == ".onnx":
        return ModelManifest.from_onnx(path)
    side = manifest_path_for(_module_stem(path).with_suffix(".onnx"))
    if path.suffix == ".json":
        side = path
    if not side.is_file():
        raise ModelError(f"{path}: no manifest {side.name} beside it",
                         "export the model with tools/export_onnx.py")
    return ModelManifest.from_json(side.read_text(), str(side))


def _exported_takes_uint8(module: nn.Module) -> bool:
    import torch

    for node in module.graph.nodes:  # type: ignore[union-attr]
        if node.op == "placeholder" and "val" in node.meta:
            val = node.meta["val"]
            if getattr(val, "dtype", None) is not None and val.dim() == 4:
                return val.dtype == torch.uint8
    return False


def _load_pt2(pt2: Path, manifest: ModelManifest, precision: str) -> tuple[nn.Module, bool]:
    """(pipeline model, needs autocast) from a torch.export program of the bare net or of the pipeline model
    (what tools/export_onnx.py writes). For the latter the bare net is taken back out (``unflatten(...).net``)
    so its weights can be cast to fp16; autocast over the whole program is the fallback."""
    import torch

    from streamer.model.wrap import PipelineModel

    program = torch.export.load(str(pt2))
    module = program.module()
    dtype = torch.float16 if precision == "fp16" else torch.float32
    if not _exported_takes_uint8(module):
        return PipelineModel(module.to(dtype), manifest.mean, manifest.std, dtype=dtype), False
    try:
        net = torch.export.unflatten(program).net
        for m in net.modules():  # run the generated code, not torch.fx.Interpreter node by node (eager speed)
            if hasattr(m, "_run_with_interpreter"):
                m._run_with_interpreter = False
    except Exception as exc:  # an exported pipeline without a ``net`` submodule
        log.info("%s: no separable net (%s); running the whole program%s", pt2, exc,
                 " under fp16 autocast" if precision == "fp16" else "")
        return module, precision == "fp16"
    return PipelineModel(net.to(dtype), manifest.mean, manifest.std, dtype=dtype), False


def _load_pth(model_path: Path, manifest: ModelManifest, precision: str) -> nn.Module:
    import torch

    from streamer.model.checkpoint import checkpoint_for, load_checkpoint
    from streamer.model.wrap import PipelineModel

    stem = _module_stem(model_path)
    try:
        pth = checkpoint_for(manifest, stem.parent)
    except ModelError:
        pth = stem.with_suffix(".pth")
    if not pth.is_file():
        raise ModelError(f"{model_path}: the torch backend needs {stem.name}.pt2 or {pth.name} beside it",
                         "re-export the model with tools/export_onnx.py (it writes both)")
    ckpt = load_checkpoint(pth, arch=manifest.arch or None, labels=manifest.labels)
    dtype = torch.float16 if precision == "fp16" else torch.float32
    return PipelineModel(ckpt.build(str(pth)).to(dtype), manifest.mean, manifest.std, dtype=dtype)


def _smoke(model: nn.Module, manifest: ModelManifest, autocast: bool, device: str) -> None:
    """One tiny forward, so a program that cannot run in this precision fails at load, not mid-stream."""
    import torch

    _set_eval(model)
    h, w = manifest.input_hw
    x = torch.zeros((2, h, w, 3), dtype=torch.uint8, device=device)
    amp = torch.autocast(device, dtype=torch.float16) if autocast else contextlib.nullcontext()
    with torch.inference_mode(), amp:
        y = model.to(device)(x)
    if tuple(y.shape) != (2, manifest.num_classes):
        raise ModelError(f"model {manifest.name!r} returns shape {tuple(y.shape)}, "
                         f"expected (2, {manifest.num_classes})", "re-export the model")


@dataclass(frozen=True)
class LoadedModel:
    """What :func:`build_model` found: the pipeline model (uint8 BGR in, softmax out) and its origin."""

    model: nn.Module = field(repr=False)
    manifest: ModelManifest
    origin: str  # "x.pt2" or "x.pth + arch 'seed_cnn'"
    autocast: bool  # run under fp16 autocast (a whole-pipeline program whose net could not be separated)


def build_model(model_path: str | Path, precision: str = "fp16", source: str = "auto",
                device: str = "cuda") -> LoadedModel:
    """Rebuild an exported model without its class: ``<stem>.pt2`` when it loads and runs, else ``<stem>.pth``
    + the manifest's ``arch``. ``model_path``: the ``.onnx`` (or its ``.json``, ``.pt2``, ``.pth``)."""
    if source not in ("auto", "pt2", "pth"):
        raise ModelError(f"unknown torch model source {source!r}", "use auto, pt2 or pth")
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r} for the torch backend", "use fp16 or fp32")
    model_path = Path(model_path)
    if not model_path.exists():
        raise ModelError(f"model file not found: {model_path}", "pass --model PATH to an exported .onnx")
    manifest = _read_manifest(model_path)
    pt2 = _module_stem(model_path).with_suffix(".pt2")
    if source == "pt2" and not pt2.is_file():
        raise ModelError(f"{model_path}: no {pt2.name} beside it", "re-export it with tools/export_onnx.py")
    if source in ("auto", "pt2") and pt2.is_file():
        try:
            model, autocast = _load_pt2(pt2, manifest, precision)
            _smoke(model, manifest, autocast, device)
            return LoadedModel(model, manifest, pt2.name, autocast)
        except Exception as exc:  # a program from another torch version, or one that cannot run in fp16
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            if source == "pt2":
                raise ModelError(f"{pt2}: does not load or run here ({type(exc).__name__}: {first})",
                                 "re-export it with this torch version, or use the .pth") from exc
            log.warning("%s does not load or run here (%s: %s); rebuilding the net from the .pth",
                        pt2, type(exc).__name__, first)
    model = _load_pth(model_path, manifest, precision)
    _smoke(model, manifest, False, device)
    origin = f"{_module_stem(model_path).name}.pth + arch {manifest.arch!r}"
    return LoadedModel(model, manifest, origin, False)


def load(model_path: str | Path, max_batch: int, backend_name: str = "torch", *, precision: str = "fp16",
         cuda_graphs: bool = True, channels_last: bool = True, graph_buckets: Sequence[int] | None = None,
         source: str = "auto", **options: Any) -> TorchCudaBackend:
    """Load an exported model for the CUDA executor (see :func:`build_model` for what is looked for)."""
    reason = probe(backend_name)
    if reason:
        raise BackendUnavailableError(f"backend torch cannot run here: {reason}",
                                      "use --backend auto to fall back to what this machine has")
    loaded = build_model(model_path, precision, source, "cuda")
    log.info("torch backend: %s from %s (%s, graphs=%s)", loaded.manifest.name, loaded.origin, precision,
             cuda_graphs)
    return TorchCudaBackend(loaded.manifest, max_batch, loaded.model, precision=precision,
                            cuda_graphs=cuda_graphs, channels_last=channels_last, autocast=loaded.autocast,
                            graph_buckets=graph_buckets, source=loaded.origin)


def from_module(net: nn.Module, manifest: ModelManifest, max_batch: int, *, precision: str = "fp16",
                cuda_graphs: bool = True, channels_last: bool = True,
                graph_buckets: Sequence[int] | None = None) -> TorchCudaBackend:
    """A backend over an in-memory bare net (float NCHW RGB normalised → logits), e.g. for benchmarks."""
    import torch

    from streamer.model.wrap import PipelineModel

    dtype = torch.float16 if precision == "fp16" else torch.float32
    _set_eval(net)
    model = PipelineModel(net.to(dtype), manifest.mean, manifest.std, dtype=dtype)
    return TorchCudaBackend(manifest, max_batch, model, precision=precision, cuda_graphs=cuda_graphs,
                            channels_last=channels_last, graph_buckets=graph_buckets, source="<module>")
