"""``streamer``: classify video from cameras, files and streams; publish predictions over ZeroMQ.

Exit status: 0 done (all sources ended, or stopped by SIGINT/SIGTERM after draining); 1 it ran but a source
failed or batches failed along the way; 2 a one-line error (bad argument or config, missing file, camera
that does not open, model that does not fit, endpoint in use); 128+N a second signal N (no drain).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import logging.handlers
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from streamer import __version__
from streamer.config import BACKEND_CHOICES, ENCODINGS, LOG_LEVELS, POLICY_CHOICES, Settings, load_settings
from streamer.errors import ConfigError, StreamerError

log = logging.getLogger("streamer")

EPILOG = """\
sources: webcam<N> (camera N), a video file, a directory or glob of images ('frames/*.png'),
an rtsp:// or http(s):// URL, or demo (the bundled shapes clip with ground truth).
Append #policy=latest|block|drop-oldest to one source to choose its backpressure policy
(e.g. --source 'rtsp://cam1/live#policy=drop-oldest'); --policy sets it for all of them.
Cameras and streams that drop out are reconnected with backoff ([live] in the config).
Defaults are in config/default.toml; --config FILE layers a TOML file over them; flags win.
Subscribe with: streamer-sub tcp://127.0.0.1:5555
"""


class _Parser(argparse.ArgumentParser):
    """argparse that raises ConfigError (one line, exit 2) instead of printing usage."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message, "see streamer --help")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="streamer", description="Real-time video classification published over ZeroMQ.",
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                argument_default=None)
    p.add_argument("--config", metavar="FILE", help="TOML file layered over config/default.toml")
    p.add_argument("--source", dest="sources", action="append", metavar="SRC",
                   help="input (repeat for several): webcam<N>, file, folder/glob of images, URL, demo")
    p.add_argument("--model", metavar="PATH", help="exported ONNX model (default engines/shapes_cnn.onnx)")
    p.add_argument("--backend", choices=BACKEND_CHOICES, help="engine (default auto: the fastest usable)")
    p.add_argument("--batch", type=int, metavar="N", help="most frames per batch")
    p.add_argument("--topk", type=int, metavar="K", help="classes per prediction")
    p.add_argument("--bind", metavar="ENDPOINT", help="ZeroMQ PUB endpoint (default tcp://127.0.0.1:5555; "
                                                      "'none' = do not publish)")
    p.add_argument("--output", metavar="FILE.jsonl", help="write every prediction as one JSON line")
    p.add_argument("--realtime", action=argparse.BooleanOptionalAction,
                   help="play files at native FPS, keeping only the newest frame (like a camera)")
    p.add_argument("--policy", choices=POLICY_CHOICES,
                   help="when the pipeline is behind: latest = keep only the newest frame, drop-oldest = a "
                        "bounded queue, block = wait, lose nothing (default auto: latest for live sources, "
                        "block for files)")
    p.add_argument("--live-timeout", dest="live_timeout_s", type=float, metavar="S",
                   help="a camera or stream with no frame for S seconds is down and is reconnected")
    p.add_argument("--reconnect-attempts", type=int, metavar="N",
                   help="give a lost camera or stream up after N failed reconnects (0 = never)")
    g = p.add_argument_group("tuning")
    g.add_argument("--slots", type=int, metavar="N", help="batches in flight (2 = double-buffering)")
    g.add_argument("--batch-timeout-ms", type=float, metavar="MS",
                   help="close a partial batch this long after its first frame")
    g.add_argument("--threads", type=int, metavar="N", help="ONNX Runtime threads (0 = cores less one)")
    g.add_argument("--max-frames", type=int, metavar="N", help="stop each source after N frames")
    g.add_argument("--encoding", choices=ENCODINGS, help="message payload encoding")
    g.add_argument("--hwm", type=int, metavar="N", help="messages queued per subscriber before it loses some")
    g.add_argument("--stats-interval", dest="stats_interval_s", type=float, metavar="S",
                   help="seconds between 'stats' messages (0 = none)")
    g.add_argument("--wait-subscribers", type=int, metavar="N",
                   help="wait (up to 10 s) for N subscribers before reading frames")
    g.add_argument("--summary-json", metavar="FILE", help="write the end-of-run summary as JSON")
    o = p.add_argument_group("output on the terminal")
    o.add_argument("--quiet", "-q", action="store_true", default=False,
                   help="no progress bar, no summary, warnings and errors only")
    o.add_argument("--progress", action="store_true", default=False, help="always show a progress bar")
    o.add_argument("--log-level", choices=LOG_LEVELS, help="log detail on stderr (default info)")
    p.add_argument("--version", action="version", version=f"streamer {__version__}")
    return p


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        k: v for k, v in vars(args).items() if k not in ("config", "quiet", "progress") and v is not None
    }
    if args.quiet:
        overrides["progress"] = "off"
        overrides.setdefault("log_level", "warning")
    elif args.progress:
        overrides["progress"] = "on"
    return load_settings(args.config, overrides)


# -- terminal output -------------------------------------------------------------------------------------
class _TqdmHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Log lines that do not tear the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except ImportError:
            super().emit(record)
        except Exception:
            self.handleError(record)


def setup_logging(level: str) -> logging.handlers.MemoryHandler:
    """Log to stderr, but hold records back until start-up succeeds: a failed start prints one line."""
    handler = _TqdmHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"))
    held = logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1, target=handler)
    root = logging.getLogger()
    root.handlers[:] = [held]
    root.setLevel(getattr(logging, level.upper()))
    return held


def release_logs(held: logging.handlers.MemoryHandler, keep: bool) -> None:
    """After start-up: print what was held (keep) or drop it (the error line says enough), then log live."""
    target = held.target
    if not keep:
        held.buffer.clear()
    held.flush()
    root = logging.getLogger()
    root.handlers[:] = [target] if target is not None else []


def quiet_native_logs(level: str) -> None:
    """OpenCV and FFmpeg print their own warnings (a missing camera, a refused URL) unless told not to;
    the source reports those as one-line errors instead. FFmpeg stays quiet at every level: its verbose
    output prints stream URLs with their credentials. Must run before cv2 is imported."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    if level != "debug":
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")


def make_progress(mode: str) -> Any:
    def factory(total: int | None) -> Any:
        if mode == "off" or (mode == "auto" and (total is None or not sys.stderr.isatty())):
            return None
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        return tqdm(total=total, unit="frame", dynamic_ncols=True, file=sys.stderr, smoothing=0.1,
                    mininterval=0.25)

    return factory


# -- main ------------------------------------------------------------------------------------------------
def run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)
    quiet_native_logs(settings.log_level)
    held = setup_logging(settings.log_level)

    from streamer.pipeline import Pipeline, StopRequested

    pipeline = Pipeline(settings)
    signals: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        # Counted first: a second signal can arrive while this handler still runs (Python runs handlers
        # between bytecodes, also inside a handler), and must then exit, not ask for a drain again.
        signals.append(signum)
        if len(signals) > 1:
            os.write(2, f"streamer: {signal.Signals(signum).name} again: exiting without draining\n".encode())
            os._exit(128 + signum)
        pipeline.request_stop()
        os.write(2, f"streamer: {signal.Signals(signum).name}: finishing the frames in flight "
                    "(again to exit at once)\n".encode())

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            pipeline.open()
        except StopRequested:
            release_logs(held, keep=settings.log_level == "debug")
            print("streamer: stopped before the first frame", file=sys.stderr)
            return 0
        except StreamerError:
            release_logs(held, keep=settings.log_level == "debug")
            raise
        release_logs(held, keep=True)
        try:
            summary = pipeline.run(progress=make_progress(settings.progress))
        finally:
            pipeline.close()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if settings.summary_json:
        summary.write_json(settings.summary_json)
    if settings.progress != "off" or settings.log_level in ("debug", "info"):
        print("\n".join(summary.lines()), flush=True)
    failed = pipeline.failed_sources
    if failed or summary.failed_batches:
        what = (f"source(s) failed: {', '.join(failed)}" if failed
                else f"{summary.failed_batches} batches failed")
        print(f"streamer: finished with errors: {what}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = run(argv)
    except StreamerError as exc:
        logging.shutdown()
        print(f"streamer: error: {exc}".replace("\n", " "), file=sys.stderr, flush=True)
        code = exc.exit_code
    except BrokenPipeError:  # stdout closed early (`streamer ... | head -1`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    return exit_past_stuck_captures(code)


def exit_past_stuck_captures(code: int, wait_s: float = 0.5) -> int:
    """A camera or stream read can be stuck inside FFmpeg or a driver (its thread was abandoned). Running the
    interpreter's normal exit under it can abort in C++ destructors, so then end the process at once, with
    ``code``, once everything is flushed. Otherwise return ``code``."""
    live = sys.modules.get("streamer.sources.live")
    if live is None or not live.busy_captures(wait_s):
        return code
    log.debug("a capture thread is still inside a native read: exiting without waiting for it")
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
