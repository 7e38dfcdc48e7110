#!/usr/bin/env python3
"""Benchmarks: figures measured side by side in one run, printed as a table with ratios, and saved as JSON.

    python tools/bench.py engine                         # engine-level figures (GPU sections need CUDA)
    python tools/bench.py engine --models seed --json-out out/engine.json

Each subcommand lives in its own module beside this file (``bench_<name>.py``) exposing ``HELP``,
``add_arguments(parser)`` and ``run(args) -> dict`` (prints its own table, returns what goes to JSON).
Add a subcommand by adding its module and a line to ``SUBCOMMANDS``.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# subcommand → module (imported only when chosen, so --help stays fast and CPU-only machines never load CUDA)
SUBCOMMANDS: dict[str, str] = {
    "engine": "bench_engine",
    "pipeline": "bench_pipeline",
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

    started = time.time()
    try:
        result = args._module.run(args)
    except StreamerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    doc = {"command": args.command, "argv": sys.argv[1:] if argv is None else argv,
           "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
           "seconds": round(time.time() - started, 1), "python": platform.python_version(),
           "host": platform.node(), **result}
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(doc, indent=2, default=str))
        print(f"\nJSON: {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
