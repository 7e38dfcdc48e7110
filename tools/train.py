#!/usr/bin/env python3
"""Train a classifier on ``shapes`` (procedural, no download) or ``cifar10``; saves a .pth checkpoint.

    python tools/train.py --device cuda --export        # the default model: engines/shapes_cnn.{pth,onnx,...}
    python tools/train.py --arch small_cnn --epochs 2 --n-train 4000 --out runs/quick.pth   # a quick run

The defaults are the shipped model's settings (seed_cnn_bn on 150k shapes, 19 epochs; ~2.5 min on an H100).
``--export`` runs tools/export_onnx.py's export on the result (ONNX fp32 + fp16, manifest, .pt2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from streamer.errors import StreamerError
from streamer.model.nets import ARCHS
from streamer.model.train import DATASETS, TrainConfig, train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = TrainConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default=d.arch, choices=sorted(ARCHS))
    p.add_argument("--dataset", default=d.dataset, choices=DATASETS)
    p.add_argument("--data-dir", default=d.data_dir, help="CIFAR-10: folder holding cifar-10-batches-py")
    p.add_argument("--no-download", action="store_true", help="CIFAR-10: fail instead of downloading")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--n-train", type=int, default=d.n_train, help="shapes: training images")
    p.add_argument("--n-val", type=int, default=d.n_val, help="shapes: validation images")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="auto | cpu | cuda[:N]")
    p.add_argument("--workers", type=int, default=d.workers, help="shapes rendering processes (0: all cores)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="training time budget: after epoch 1, run only the epochs that fit")
    p.add_argument("--out", type=Path, default=Path("engines/shapes_cnn.pth"))
    p.add_argument("--export", action="store_true", help="then export ONNX + manifest beside the .pth")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    try:
        cfg = TrainConfig(arch=a.arch, dataset=a.dataset, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                          weight_decay=a.weight_decay, n_train=a.n_train, n_val=a.n_val, seed=a.seed,
                          device=a.device, data_dir=a.data_dir, download=not a.no_download, workers=a.workers,
                          progress=not a.no_progress, max_seconds=a.max_seconds)
        result = train(cfg, a.out)
    except StreamerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    summary = {
        "checkpoint": str(result.checkpoint), "arch": result.arch, "dataset": result.dataset,
        "val_accuracy": round(result.val_accuracy, 5), "best_epoch": result.best_epoch,
        "epochs": result.epochs, "seconds": round(result.seconds, 1), "device": result.device,
        "n_train": result.n_train, "n_val": result.n_val,
    }
    print(json.dumps(summary))
    if a.export:
        from export_onnx import main as export_main

        return export_main([str(result.checkpoint)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
