#!/usr/bin/env python3
"""Export a .pth checkpoint to ONNX (fp32 + fp16) with a manifest, and check it against PyTorch.

    python tools/export_onnx.py engines/shapes_cnn.pth    # → engines/shapes_cnn.{onnx,fp16.onnx,json,pt2}
    python tools/export_onnx.py runs/quick.pth --out-dir runs --name quick --no-pt2

Input ``images`` uint8 [N,H,W,3] BGR (dynamic N), output ``scores`` float32 softmax; normalisation and
layout are inside the graph. The self-check runs ONNX Runtime and PyTorch on the same images and prints the
max error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from streamer.errors import StreamerError
from streamer.model.export import export_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help=".pth written by tools/train.py")
    p.add_argument("--out-dir", type=Path, default=None, help="default: the checkpoint's folder")
    p.add_argument("--name", default=None, help="output stem (default: the checkpoint's stem)")
    p.add_argument("--no-fp16", action="store_true", help="skip the fp16 variant")
    p.add_argument("--no-pt2", action="store_true", help="skip the torch.export program")
    p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs PyTorch check")
    p.add_argument("--verbose", action="store_true", help="show the exporter's own output")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    try:
        r = export_model(a.checkpoint, a.out_dir or a.checkpoint.parent, a.name, fp16=not a.no_fp16,
                         pt2=not a.no_pt2, check=not a.no_check, verbose=a.verbose)
    except StreamerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    for path in (r.onnx, r.onnx_fp16, r.manifest_json, r.checkpoint, r.pt2):
        if path is not None:
            print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    if r.fp32_max_abs_err is not None:
        print(f"check fp32: ONNX Runtime vs PyTorch max abs error {r.fp32_max_abs_err:.3g}")
    if r.fp16_max_abs_err is not None:
        print(f"check fp16: max abs error vs PyTorch fp32 {r.fp16_max_abs_err:.3g}, "
              f"top-1 agreement {r.fp16_top1_agreement:.2%}")
    print(json.dumps({"onnx": str(r.onnx), "fp32_max_abs_err": r.fp32_max_abs_err,
                      "fp16_max_abs_err": r.fp16_max_abs_err, "fp16_top1_agreement": r.fp16_top1_agreement}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
