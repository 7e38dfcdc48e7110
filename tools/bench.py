#!/usr/bin/env python3
"""Benchmarks: figures measured side by side in one run, printed as a table with ratios, and saved as JSON.

    python tools/bench.py engine                         # engine-level figures (GPU sections need CUDA)
    python tools/bench.py engine --models seed --json-out out/engine.json
    python tools/bench.py pipeline --json-out out/pipeline.json   # end to end (see its --help)
    python tools/bench.py int8 --json-out out/int8.json           # int8 vs fp32 on the CPU
    python tools/bench.py view --json-out out/view.json           # --annotate, --preview vs neither
    python tools/bench.py scale --json-out out/scale.json         # the scale-out driver's forwarding cost
    python tools/bench.py multigpu --json-out out/multigpu.json   # two GPUs vs one (tools/gpu_multi.sh)

Each subcommand lives in its own module beside this file (``bench_<name>.py``) exposing ``HELP``,
``add_arguments(parser)`` and ``run(args)``, which prints its own tables and returns its result record
(:class:`bench_common.Report`: ``to_dict()`` is what goes to JSON). Add a subcommand by adding its module
and a line to ``SUBCOMMANDS``. Sibling modules import as top-level modules: ``python tools/bench.py`` puts
tools/ on ``sys.path``, and ``streamer`` is the installed package (``pip install -e .``; the GPU scripts put
the checkout on ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import platform
import sys
import time
from pathlib import Path

from bench_common import Report

# subcommand → module; the modules import nothing heavy at their top (--help stays fast, no CUDA on a CPU)
SUBCOMMANDS: dict[str, str] = {
    "engine": "bench_engine",
    "pipeline": "bench_pipeline",
    "int8": "bench_int8",
    "nvdec": "bench_nvdec",
    "view": "bench_view",
    "scale": "bench_scale",
    "multigpu": "bench_multigpu",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.add_argument("--json-out", type=Path, default=None, help="write every figure as JSON here")
        p.add_argument("-v", "--verbose", action="store_true")
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from streamer.errors import StreamerError

    started, t0 = time.time(), time.monotonic()
    try:
        result: Report = args._module.run(args)
    except StreamerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    doc = {"command": args.command, "argv": sys.argv[1:] if argv is None else argv,
           "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
           "seconds": round(time.monotonic() - t0, 1), "python": platform.python_version(),
           "host": platform.node(), **result.to_dict()}
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(doc, indent=2, default=str))
        print(f"\nJSON: {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
