"""Networks (registry, the seed CNN's layout) and the procedural shapes dataset (deterministic, balanced)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from streamer.errors import ModelError
from streamer.model import shapes
from streamer.model.nets import ARCHS, SeedCNN, build_net


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_registry_builds_every_arch(arch):
    net = build_net(arch, 7).eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 7)


def test_seed_cnn_has_the_notebook_layout():
    net = SeedCNN(10)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 20
    widths = [(c.in_channels, c.out_channels) for c in convs]
    assert widths == [(3, 32)] + [(32, 32)] * 8 + [(32, 64)] + [(64, 64)] * 8 + [(64, 128), (128, 128)]
    fcs = [(m.in_features, m.out_features) for m in net.modules() if isinstance(m, nn.Linear)]
    assert fcs == [(2048, 512), (512, 128), (128, 10)]
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 3
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in build_net("seed_cnn_bn", 10).modules())


def test_unknown_arch_and_bad_class_count():
    with pytest.raises(ModelError, match="unknown network architecture 'resnet9'"):
        build_net("resnet9", 10)
    with pytest.raises(ModelError, match="at least 2 classes"):
        build_net("small_cnn", 1)


def test_shapes_are_deterministic_and_independent_of_count_and_workers():
    x1, y1 = shapes.make_shapes(600, seed=11)
    x2, y2 = shapes.make_shapes(700, seed=11, workers=2)
    assert x1.shape == (600, 32, 32, 3) and x1.dtype == np.uint8 and y1.dtype == np.int64
    np.testing.assert_array_equal(x1, x2[:600])
    np.testing.assert_array_equal(y1, y2[:600])
    x3, _ = shapes.make_shapes(600, seed=12)
    assert not np.array_equal(x1, x3)


def test_shapes_cover_every_class_with_varied_images():
    x, y = shapes.make_shapes(1000, seed=3)
    counts = np.bincount(y, minlength=len(shapes.LABELS))
    assert len(shapes.LABELS) == 10 and len(set(shapes.LABELS)) == 10
    assert counts.min() >= 60  # ~100 each
    assert len({img.tobytes() for img in x}) == len(x)
    assert 40 < x.mean() < 215 and x.std() > 40


def test_shape_mask_scales_with_the_canvas():
    p = shapes.ShapeParams(label=shapes.LABELS.index("square"), cx=0.5, cy=0.5, radius=0.3, angle=0.0,
                           aspect=1.0, color=(255, 0, 0))
    small, big = shapes.shape_mask(p, 64), shapes.shape_mask(p, 256)
    # same coverage at the training render size as at the demo's (no anti-aliasing fattening)
    assert abs(small.mean() - big.mean()) < 0.003
    assert abs(big.mean() - (0.92 * 0.3 * 2**0.5) ** 2) < 0.003
    ring = shapes.ShapeParams(**{**p.__dict__, "label": shapes.LABELS.index("ring")})
    assert shapes.shape_mask(ring, 64)[32, 32] == 0.0  # the hole is a hole
    with pytest.raises(ValueError, match="label 10"):
        shapes.ShapeParams(**{**p.__dict__, "label": 10})
