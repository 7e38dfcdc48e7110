#!/usr/bin/env python3
"""Build a TensorRT / TensorRT-RTX plan from an exported ONNX model (TensorRT-RTX builds on a CPU).

    python tools/build_engine.py engines/shapes_cnn.onnx --precision fp16
    python tools/build_engine.py engines/shapes_cnn.onnx --min-batch 1 --opt-batch 32 --max-batch 64 --cc 8.6
    python tools/build_engine.py engines/shapes_cnn.onnx --precision int8 --calib shapes   # quantize first

Writes ``engines/plans/<stem>.<sha12>.<backend><ver>.<sm..>.<prec>.b<min>-<opt>-<max>.plan`` atomically,
and ``<plan>.json`` (its identity: model sha256, backend + version, targets, precision, profile, build time,
sizes).
Networks are strongly typed: ``--precision fp16`` builds from ``<stem>.fp16.onnx``, ``--precision int8`` from
``<stem>.int8.onnx`` (explicit quantization). With ``--calib SRC`` that int8 ONNX is made first by
tools/quantize.py's calibration and accuracy gate (same options: --calib-samples, --eval, --eval-samples,
--max-drop); a model that loses more than --max-drop top-1 points exits 2 and nothing is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from quantize import add_quantize_arguments, report
from quantize import run as quantize

from streamer.engine.build import DEFAULT, build_engine
from streamer.engine.identity import BatchProfile
from streamer.errors import ConfigError, StreamerError
from streamer.model.variants import PRECISIONS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("onnx", type=Path, help="exported model (.onnx, .fp16.onnx or .int8.onnx)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="default: the ONNX's own; another one uses the sibling ONNX")
    p.add_argument("--min-batch", type=int, default=1)
    p.add_argument("--opt-batch", type=int, default=None, help="default: min(32, --max-batch)")
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--cc", nargs="+", default=None, metavar="CC",
                   help="TensorRT-RTX compute-capability targets, e.g. 8.6 12.0 (default: 8.0 8.6 8.9 12.0)")
    p.add_argument("--backend", choices=("auto", "tensorrt", "tensorrt-rtx"), default="auto")
    p.add_argument("--out", type=Path, default=None, help="plan path (default: named by its identity)")
    p.add_argument("--out-dir", type=Path, default=None, help="default: <onnx folder>/plans")
    cache = p.add_mutually_exclusive_group()
    cache.add_argument("--timing-cache", type=Path, default=None,
                       help="TensorRT timing cache file (default: <out-dir>/trt<ver>.timing.cache; "
                            "TensorRT-RTX has none)")
    cache.add_argument("--no-timing-cache", action="store_true")
    p.add_argument("--force", action="store_true", help="rebuild even if an identical plan exists")
    int8 = p.add_argument_group("--precision int8 --calib SRC: quantize first (see tools/quantize.py)")
    add_quantize_arguments(int8, calib_required=False)
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(message)s")
    timing_cache = None if a.no_timing_cache else (a.timing_cache or DEFAULT)
    opt = a.opt_batch if a.opt_batch is not None else max(a.min_batch, min(32, a.max_batch))
    try:
        onnx = a.onnx
        if a.calib is not None:
            if a.precision != "int8":
                raise ConfigError("--calib calibrates an int8 model", "add --precision int8, or drop --calib")
            quantized = quantize(a)
            report(quantized)
            onnx = quantized.onnx
        result = build_engine(onnx, precision=a.precision,
                              profile=BatchProfile(a.min_batch, opt, a.max_batch), out=a.out,
                              out_dir=a.out_dir, compute_capabilities=tuple(a.cc) if a.cc else None,
                              timing_cache=timing_cache, backend=a.backend, force=a.force)
    except StreamerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    ident = result.identity
    verb = "up to date" if result.reused else f"built in {ident.build_seconds:.2f}s"
    print(f"{result.plan} ({verb})")
    sizes = f"plan {ident.plan_bytes / 1e6:.2f} MB, onnx {ident.onnx_bytes / 1e6:.2f} MB"
    if ident.pth_bytes:
        sizes += f", pth {ident.pth_bytes / 1e6:.2f} MB (plan/pth {ident.plan_bytes / ident.pth_bytes:.2f})"
    print(f"{ident.backend} {ident.backend_version}, {ident.precision}, targets "
          f"{' '.join(ident.compute_capabilities) or 'this GPU'}, batch {ident.profile.tag}; {sizes}")
    print(json.dumps({"plan": str(result.plan), "reused": result.reused, **ident.to_dict()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
