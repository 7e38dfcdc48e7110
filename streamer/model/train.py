"""Training loop (CPU or CUDA) shared by ``tools/train.py`` and the tests.

The whole dataset sits in memory as uint8 NHWC (on the GPU when training there); batches are normalised
on the fly exactly as :class:`streamer.model.wrap.PipelineModel` does, augmented with random flips (and
random crops for CIFAR-10), and the epoch with the best validation accuracy is the one saved.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from streamer.errors import ConfigError, DatasetError
from streamer.model import cifar, shapes
from streamer.model.checkpoint import Checkpoint, save_checkpoint
from streamer.model.nets import ARCHS, build_net
from streamer.model.progress import progress_bar
from streamer.model.wrap import normalise_rgb

DATASETS = ("shapes", "cifar10")


@dataclass(frozen=True)
class Data:
    train_x: np.ndarray  # uint8 NHWC RGB
    train_y: np.ndarray  # int64
    val_x: np.ndarray
    val_y: np.ndarray
    labels: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    name: str


@dataclass(frozen=True)
class TrainConfig:
    # defaults = the shipped model (engines/shapes_cnn.*): the seed CNN with BatchNorm, see docs/model.md
    arch: str = "seed_cnn_bn"
    dataset: str = "shapes"
    epochs: int = 19
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 5e-4
    n_train: int = 150_000  # shapes only (CIFAR-10 has 50k/10k)
    n_val: int = 10_000
    seed: int = 0
    device: str = "auto"
    data_dir: str = "data"
    download: bool = True  # cifar10: fetch the archive when the batches are missing
    workers: int = 0  # processes rendering shapes; 0 = one per core
    progress: bool = True
    max_seconds: float | None = None  # fewer epochs (schedule shortened after epoch 1) to fit this budget

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ConfigError(f"unknown --arch {self.arch!r}", f"choose one of: {', '.join(ARCHS)}")
        if self.dataset not in DATASETS:
            raise ConfigError(f"unknown --dataset {self.dataset!r}", f"choose one of: {', '.join(DATASETS)}")
        for name in ("epochs", "batch_size", "n_train", "n_val"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ConfigError(f"--max-seconds must be positive, got {self.max_seconds}")


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path
    arch: str
    dataset: str
    val_accuracy: float
    best_epoch: int
    epochs: int
    seconds: float
    device: str
    n_train: int
    n_val: int
    history: tuple[tuple[float, float], ...] = field(default=())  # (train loss, val accuracy) per epoch


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {requested}: no CUDA GPU visible to torch", "use --device cpu")
    try:
        return torch.device(requested)
    except RuntimeError as exc:
        raise ConfigError(f"bad --device {requested!r}", "use auto, cpu or cuda[:N]") from exc


def load_data(cfg: TrainConfig) -> Data:
    if cfg.dataset == "cifar10":
        tx, ty, labels = cifar.load_cifar10(cfg.data_dir, "train", allow_download=cfg.download)
        vx, vy, _ = cifar.load_cifar10(cfg.data_dir, "test", allow_download=cfg.download)
        return Data(tx, ty, vx, vy, labels, cifar.MEAN, cifar.STD, "cifar10")
    workers = cfg.workers or os.cpu_count() or 1
    with progress_bar(cfg.n_train + cfg.n_val, "rendering shapes", cfg.progress, "img") as bar:
        tx, ty = shapes.make_shapes(cfg.n_train, shapes.TRAIN_SEED + 1000 * cfg.seed, workers=workers,
                                    progress=bar.update)
        vx, vy = shapes.make_shapes(cfg.n_val, shapes.VAL_SEED, workers=workers, progress=bar.update)
    return Data(tx, ty, vx, vy, shapes.LABELS, shapes.MEAN, shapes.STD, "shapes")


def _augment(x: torch.Tensor, crop_pad: int, gen: torch.Generator) -> torch.Tensor:
    """Random h/v flips per sample (and random crops); x is float NCHW."""
    n = x.shape[0]
    flip = torch.rand(n, generator=gen, device=x.device) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if crop_pad:
        h, w = x.shape[2:]
        padded = nn.functional.pad(x, (crop_pad,) * 4, mode="reflect")
        dy = torch.randint(0, 2 * crop_pad + 1, (n,), generator=gen, device=x.device)
        dx = torch.randint(0, 2 * crop_pad + 1, (n,), generator=gen, device=x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        x = padded[torch.arange(n, device=x.device)[:, None, None, None],
                   torch.arange(x.shape[1], device=x.device)[None, :, None, None], rows, cols]
    else:  # shapes are flip-invariant as classes both ways; CIFAR only left-right
        vflip = torch.rand(n, generator=gen, device=x.device) < 0.5
        x = torch.where(vflip[:, None, None, None], x.flip(2), x)
    return x


def _lr_factor(progress: float) -> float:
    """Linear warm-up over the first 10% of training, then cosine decay to 1% of the peak."""
    if progress < 0.1:
        return 0.04 + 0.96 * progress / 0.1
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - 0.1) / 0.9)))


@torch.no_grad()
def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor, mean: tuple[float, ...],
             std: tuple[float, ...], batch_size: int = 512) -> float:
    """Top-1 accuracy of ``net`` on uint8 NHWC RGB ``x``."""
    net.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        logits = net(normalise_rgb(x[i:i + batch_size], mean, std))
        correct += int((logits.argmax(1) == y[i:i + batch_size]).sum())
    return correct / max(1, len(x))


def train(cfg: TrainConfig, out: str | Path, data: Data | None = None) -> TrainResult:
    """Train ``cfg.arch`` on ``cfg.dataset`` and save the best epoch's checkpoint at ``out``."""
    out = Path(out)
    if out.suffix != ".pth":
        raise ConfigError(f"--out {out}: expected a .pth path")
    data = data or load_data(cfg)  # before touching CUDA: rendering forks worker processes
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if len(data.train_x) == 0 or len(data.val_x) == 0:
        raise DatasetError(f"dataset {data.name!r} is empty")
    t0 = time.perf_counter()
    tx = torch.from_numpy(data.train_x).to(device)
    ty = torch.from_numpy(data.train_y).to(device)
    vx = torch.from_numpy(data.val_x).to(device)
    vy = torch.from_numpy(data.val_y).to(device)
    net = build_net(cfg.arch, len(data.labels)).to(device)
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    steps_per_epoch = math.ceil(len(tx) / cfg.batch_size)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    planned = [cfg.epochs]  # shortened after epoch 1 when max_seconds says so; the schedule follows
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: _lr_factor(step / (planned[0] * steps_per_epoch)))
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed)
    crop_pad = 4 if data.name == "cifar10" else 0
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    best_acc, best_epoch, best_state = -1.0, 0, None
    history: list[tuple[float, float]] = []
    autocast = device.type == "cuda"
    t_train = time.perf_counter()
    with progress_bar(cfg.epochs * steps_per_epoch, f"training {cfg.arch} on {data.name}", cfg.progress,
                      "step") as bar:
        epoch = 0
        while epoch < planned[0]:
            epoch += 1
            net.train()
            order = torch.randperm(len(tx), generator=gen, device=device)
            total_loss = 0.0
            for step in range(steps_per_epoch):
                idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
                xb = _augment(normalise_rgb(tx[idx], data.mean, data.std), crop_pad, gen)
                if device.type == "cuda":
                    xb = xb.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    loss = loss_fn(net(xb), ty[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total_loss += float(loss.detach()) if step % 20 == 0 else 0.0
                bar.update(1)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                acc = evaluate(net, vx, vy, data.mean, data.std)
            mean_loss = total_loss / math.ceil(steps_per_epoch / 20)
            history.append((mean_loss, acc))
            bar.write(f"epoch {epoch}/{planned[0]}: loss {mean_loss:.4f}  val acc {acc:.4f}  "
                      f"({time.perf_counter() - t0:.0f}s)")
            if acc > best_acc:
                best_acc, best_epoch = acc, epoch
                best_state = {k: v.detach().to("cpu", copy=True).contiguous()
                              for k, v in net.state_dict().items()}
            if cfg.max_seconds and epoch == 1:
                per_epoch = time.perf_counter() - t_train
                fits = max(1, int(cfg.max_seconds // per_epoch))
                if fits < planned[0]:
                    bar.write(f"{per_epoch:.1f}s per epoch: {fits} epochs fit in "
                              f"--max-seconds {cfg.max_seconds:g}")
                    planned[0] = fits
    assert best_state is not None
    # the best epoch's accuracy in full float32, the way the exported model computes
    net.load_state_dict(best_state)
    net = net.float().to(memory_format=torch.contiguous_format)
    best_acc = evaluate(net, vx, vy, data.mean, data.std)
    ckpt = Checkpoint(arch=cfg.arch, labels=data.labels, state_dict=best_state, mean=data.mean,
                      std=data.std, dataset=data.name, val_accuracy=round(best_acc, 6))
    save_checkpoint(ckpt, out)
    return TrainResult(checkpoint=out, arch=cfg.arch, dataset=data.name, val_accuracy=best_acc,
                       best_epoch=best_epoch, epochs=epoch, seconds=time.perf_counter() - t0,
                       device=str(device), n_train=len(tx), n_val=len(vx), history=tuple(history))
