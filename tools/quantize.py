#!/usr/bin/env python3
"""Quantize an exported fp32 ONNX model to int8 (QDQ), refusing it when it loses accuracy.

    python tools/quantize.py engines/shapes_cnn.onnx --calib shapes          # → engines/shapes_cnn.int8.onnx
    python tools/quantize.py model.onnx --calib 'frames/*.jpg' --eval data/val   # val/<class>/*.png
    python tools/quantize.py model.onnx --calib clip.mp4 --calib-samples 1024 --eval clip.mp4 --max-drop 0.5

--calib and --eval: shapes[:train|val|test], demo, a video file (labels for --eval from <stem>.json beside
it), a folder or glob of images (labels for --eval: one subfolder per class). Samples are resized as the
pipeline resizes frames. The gate compares top-1 of fp32 and int8 on --eval (default: the shapes validation
split for shapes models); more than --max-drop points lost: exit 2, one line with both accuracies, nothing
written. Otherwise <stem>.int8.onnx and <stem>.int8.json (with both accuracies) are written atomically.
Run it with: streamer --precision int8. An INT8 TensorRT plan: tools/build_engine.py --precision int8.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from streamer.errors import StreamerError
from streamer.model.quantize import CALIB_SAMPLES, MAX_DROP_POINTS, QuantizeResult, quantize_model


def add_quantize_arguments(p: argparse._ActionsContainer, calib_required: bool) -> None:
    """The options (on a parser or an argument group) tools/build_engine.py shares for --precision int8."""
    p.add_argument("--calib", metavar="SRC", required=calib_required, default=None,
                   help="calibration images: shapes, demo, a video, a folder or glob of images")
    p.add_argument("--calib-samples", type=int, default=CALIB_SAMPLES, metavar="N",
                   help=f"calibration samples, spread over the source (default {CALIB_SAMPLES})")
    p.add_argument("--eval", metavar="SRC", default=None,
                   help="labelled held-out images for the accuracy gate (shapes models: shapes:val)")
    p.add_argument("--eval-samples", type=int, default=None, metavar="N",
                   help="evaluate on N of them, spread evenly (default: all; shapes: 10,000)")
    p.add_argument("--max-drop", type=float, default=MAX_DROP_POINTS, metavar="POINTS",
                   help=f"refuse the int8 model when it loses more top-1 points than this "
                        f"(default {MAX_DROP_POINTS:g})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("onnx", type=Path, help="the fp32 .onnx written by tools/export_onnx.py")
    add_quantize_arguments(p, calib_required=True)
    p.add_argument("--out", type=Path, default=None, help="default: <stem>.int8.onnx beside the model")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def run(a: argparse.Namespace, out: Path | None = None) -> QuantizeResult:
    return quantize_model(a.onnx, a.calib, eval_source=a.eval, calib_samples=a.calib_samples,
                          eval_samples=a.eval_samples, max_drop=a.max_drop, out=out)


def report(r: QuantizeResult) -> None:
    g = r.gate
    print(f"wrote {r.onnx} ({r.onnx_bytes / 1e6:.2f} MB) and {r.manifest_json.name} in {r.seconds:.1f}s; "
          f"calibrated on {r.calibration_samples} samples of {r.calibration}")
    kernels = ", ".join(f"{n} {op}" for op, n in r.kernels.items()) or "none"
    print(f"gate passed: top-1 int8 {g.int8_top1:.2%} vs fp32 {g.fp32_top1:.2%} on {g.samples} images of "
          f"{g.eval_source} ({g.drop_points:.2f} points lost, max {g.max_drop_points:g}; agreement "
          f"{g.agreement:.2%}); ONNX Runtime int8 kernels: {kernels}")


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(message)s")
    try:
        r = run(a, a.out)
    except StreamerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    report(r)
    print(json.dumps({"onnx": str(r.onnx), "bytes": r.onnx_bytes, "gate": r.gate.to_dict(),
                      "kernels": r.kernels}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
