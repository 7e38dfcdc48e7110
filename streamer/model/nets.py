"""Networks, and a registry so tools and the runtime rebuild a net from ``(arch, num_classes)``.

Every net takes float ``[N, 3, 32, 32]`` RGB, already normalised, and returns logits ``[N, num_classes]``;
uint8 BGR input, normalisation and softmax are added around it by :mod:`streamer.model.export`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from streamer.errors import ModelError

INPUT_HW = (32, 32)


def _conv(cin: int, cout: int, batch_norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return layers


class SeedCNN(nn.Module):
    """The seed notebook's 20-conv CIFAR network.

    conv 3→32, 8× conv 32→32, pool, conv 32→64, 8× conv 64→64, pool, conv 64→128, conv 128→128, pool,
    FC 2048→512→128→classes, ReLU after each, dropout after each pool and hidden FC. Differences from the
    notebook: the repeated convs have their own weights (the notebook applied one module 8 times), the init
    is Kaiming (ReLU) instead of Xavier, and ``batch_norm=True`` adds BatchNorm after every conv (off in the
    shipped model: it trains without it).
    """

    def __init__(self, num_classes: int = 10, dropout: float = 0.4, batch_norm: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for cin, cout, repeats in ((3, 32, 8), (32, 64, 8), (64, 128, 1)):
            layers += _conv(cin, cout, batch_norm)
            for _ in range(repeats):
                layers += _conv(cout, cout, batch_norm)
            layers += [nn.MaxPool2d(2), nn.Dropout(dropout)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(128 * 4 * 4, 512), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(512, 128), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(128, num_classes),
        )
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class SmallCNN(nn.Module):
    """A small, fast net (5 convs with BatchNorm, ~100k parameters) for quick runs, tests and CI."""

    def __init__(self, num_classes: int = 10, dropout: float = 0.1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv(3, 16, True), *_conv(16, 16, True), nn.MaxPool2d(2),
            *_conv(16, 32, True), *_conv(32, 32, True), nn.MaxPool2d(2),
            *_conv(32, 64, True), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(64 * 4 * 4, 64), nn.ReLU(inplace=True),
            nn.Linear(64, num_classes),
        )
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _init(net: nn.Module) -> None:
    """Kaiming (ReLU) for convs and hidden FCs; the last FC keeps PyTorch's small default init."""
    layers = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    for m in layers[:-1]:
        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        if m.bias is not None:
            nn.init.zeros_(m.bias)


# arch name → constructor(num_classes); names are what checkpoints and manifests record
ARCHS: dict[str, Callable[[int], nn.Module]] = {
    "seed_cnn": lambda n: SeedCNN(n),
    "seed_cnn_bn": lambda n: SeedCNN(n, batch_norm=True),
    "small_cnn": lambda n: SmallCNN(n),
}


def build_net(arch: str, num_classes: int) -> nn.Module:
    """A freshly initialised net of the registered ``arch``."""
    if arch not in ARCHS:
        raise ModelError(f"unknown network architecture {arch!r}", f"choose one of: {', '.join(ARCHS)}")
    if num_classes < 2:
        raise ModelError(f"{arch}: needs at least 2 classes, got {num_classes}")
    return ARCHS[arch](num_classes)
