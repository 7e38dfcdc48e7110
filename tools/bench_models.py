"""Models for the benchmarks: a compact ResNet-50 (random weights, no torchvision) and the seed CNN.

``seed_model(dir)`` returns the committed default model (engines/shapes_cnn.onnx with its .pth) when it is
there, else exports a random-weights SeedCNN on the spot, so the benchmarks and GPU checks run on a fresh
checkout too. ``export_model`` writes the pipeline contract (uint8 NHWC BGR in, softmax out, manifest in
the metadata and beside it) through the model side's exporter when present, else through its own minimal one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

from streamer.model.manifest import ModelManifest, manifest_path_for
from streamer.paths import DEFAULT_MODEL

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.down = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.down(x))


class ResNet50(nn.Module):
    """ResNet-50 v1.5 (stride on the 3×3), the torchvision layout: 25.6 M parameters, 4.1 GFLOPs at 224²."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                   nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
        cin = 64
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(blocks):
                layers.append(Bottleneck(cin, width, stride if i == 0 else 1))
                cin = width * Bottleneck.expansion
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def resnet50_manifest() -> ModelManifest:
    return ModelManifest(name="resnet50_random", labels=tuple(f"class{i}" for i in range(1000)),
                         input_hw=(224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD, arch="resnet50")


def seed_manifest(num_classes: int = 10) -> ModelManifest:
    from streamer.model.shapes import LABELS, MEAN, STD

    return ModelManifest(name="seed_cnn_random", labels=LABELS[:num_classes], input_hw=(32, 32), mean=MEAN,
                         std=STD, arch="seed_cnn")


def export_model(net: nn.Module, manifest: ModelManifest, onnx_path: Path) -> Path:
    """Export ``net`` (float NCHW RGB normalised → logits) under the pipeline contract (+ .pth beside)."""
    from streamer.model.checkpoint import Checkpoint, save_checkpoint
    from streamer.model.manifest import sha256_file
    from streamer.model.wrap import PipelineModel

    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    net = net.eval()
    pth = onnx_path.with_suffix(".pth")
    if manifest.arch in _registered_archs():
        save_checkpoint(Checkpoint(arch=manifest.arch, labels=manifest.labels, state_dict=net.state_dict(),
                                   mean=manifest.mean, std=manifest.std, input_hw=manifest.input_hw), pth)
        extra = {**manifest.extra, "checkpoint": pth.name}
        manifest = ModelManifest.from_dict({**json.loads(manifest.to_json()), "extra": extra,
                                            "checkpoint_sha256": sha256_file(pth)})
    model = PipelineModel(net, manifest.mean, manifest.std).eval()
    h, w = manifest.input_hw
    example = torch.zeros((2, h, w, 3), dtype=torch.uint8)
    torch.onnx.export(model, (example,), str(onnx_path), input_names=[manifest.input_name],
                      output_names=[manifest.output_name], dynamo=False, opset_version=17,
                      dynamic_axes={manifest.input_name: {0: "N"}, manifest.output_name: {0: "N"}})
    import onnx

    proto = onnx.load(str(onnx_path))
    from streamer.model.manifest import METADATA_KEY

    prop = proto.metadata_props.add()
    prop.key, prop.value = METADATA_KEY, manifest.to_json()
    onnx.save(proto, str(onnx_path))
    manifest_path_for(onnx_path).write_text(manifest.to_json())
    return onnx_path


def _registered_archs() -> set[str]:
    try:
        from streamer.model.nets import ARCHS
    except ImportError:
        return set()
    return set(ARCHS)


def seed_model(work_dir: Path, prefer_default: bool = True) -> tuple[Path, str]:
    """(path to a seed-CNN .onnx, where it came from). The committed default model when usable, else a
    random-weights SeedCNN exported on the spot through the model side's exporter (.onnx, .fp16.onnx,
    .json, .pth and .pt2, like the default model)."""
    if prefer_default and DEFAULT_MODEL.is_file():
        try:
            ModelManifest.from_onnx(DEFAULT_MODEL)
            return DEFAULT_MODEL, "engines/shapes_cnn.onnx (committed default model)"
        except Exception as exc:  # a broken default model should not stop a benchmark
            log.warning("default model unusable (%s); exporting a random-weights SeedCNN", exc)
    from streamer.model.nets import build_net

    torch.manual_seed(0)
    manifest = seed_manifest()
    path = work_dir / "seed_cnn_random.onnx"
    if not path.is_file():
        net = build_net("seed_cnn", manifest.num_classes)
        try:
            from streamer.model.checkpoint import Checkpoint, save_checkpoint
            from streamer.model.export import export_model as export_checkpoint
        except ImportError:  # the model side's exporter is not there: the minimal one here
            export_model(net, manifest, path)
        else:
            ckpt = work_dir / "seed_cnn_random.pth"
            save_checkpoint(Checkpoint(arch="seed_cnn", labels=manifest.labels, state_dict=net.state_dict(),
                                       mean=manifest.mean, std=manifest.std, input_hw=manifest.input_hw,
                                       dataset="random"), ckpt)
            export_checkpoint(ckpt, work_dir, "seed_cnn_random", check=False)
    return path, "random-weights SeedCNN exported on the spot (no engines/shapes_cnn.onnx)"


def resnet50_model(work_dir: Path) -> tuple[Path, ResNet50]:
    torch.manual_seed(0)
    net = ResNet50().eval()
    path = work_dir / "resnet50_random.onnx"
    if not path.is_file():
        export_model(net, resnet50_manifest(), path)
    return path, net
