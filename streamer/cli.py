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
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from streamer import __version__
from streamer.config import SECTIONS, SETTINGS, Setting, Settings, load_settings, to_toml
from streamer.errors import ConfigError, StreamerError
from streamer.outputs import write_file

log = logging.getLogger("streamer")

EPILOG = """\
sources: webcam<N> (camera N), a video file, a directory or glob of images ('frames/*.png'),
an rtsp:// or http(s):// URL, or demo (the bundled shapes clip with ground truth).
Append #policy=latest|block|drop-oldest to one source to choose its backpressure policy
(e.g. --source 'rtsp://cam1/live#policy=drop-oldest'); --policy sets it for all of them.
Cameras and streams that drop out are reconnected with backoff ([live] in the config).
Every setting has a key in a --config TOML file, layered over the defaults; flags win.
streamer --print-config lists them all, with the values a command line runs with.
Subscribe with: streamer-sub tcp://127.0.0.1:5555

exit status: 0 done (every source ended, or stopped by SIGINT/SIGTERM after draining); 1 it ran, but a
source failed or was given up, or batches failed; 2 a one-line error (bad argument or config, missing or
unreadable input, an output path that would destroy a file, a model that does not fit, an endpoint in
use, an output that could not be written); 128+N a second signal N (no drain).
"""


PRINTED_HEADER = """\
# The settings this streamer command line runs with (streamer ... --print-config): defaults, then --config,
# then flags. Use it as a config file: streamer --config FILE (flags still win).
"""


class _Parser(argparse.ArgumentParser):
    """argparse that raises ConfigError (one line, exit 2) instead of printing usage."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message, "see streamer --help")


def _flag_kwargs(s: Setting) -> dict[str, Any]:
    """argparse keywords for a declared setting; its default stays None (= not given: config/defaults win)."""
    shown = "" if s.default in ("", (), False) else f" (default {s.default})"
    kw: dict[str, Any] = {"dest": s.name, "help": (s.help + shown).replace("%", "%%")}
    if s.kind is bool:
        kw["action"] = argparse.BooleanOptionalAction
    elif s.kind is tuple:
        kw.update(action="append", metavar=s.metavar)
    elif s.choices:
        kw["choices"] = s.choices
    else:
        kw.update(type=s.kind, metavar=s.metavar)
    return kw


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="streamer", description="Real-time video classification published over ZeroMQ.",
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                argument_default=None)
    p.add_argument("--config", metavar="FILE", help="TOML file of settings layered over the defaults")
    p.add_argument("--print-config", action="store_true", default=False,
                   help="print the settings this command line runs with (a --config file) and exit")
    groups = {section: p.add_argument_group(f"[{section}] {about}") for section, about in SECTIONS.items()}
    for s in SETTINGS.values():
        if s.flag is not None:
            groups[s.section].add_argument(s.flag, **_flag_kwargs(s))
    terminal = groups["log"]  # --quiet and --progress set [log] progress (and --quiet the log level)
    terminal.add_argument("--quiet", "-q", action="store_true", default=False,
                          help="no progress bar, no summary, warnings and errors only")
    terminal.add_argument("--progress", action="store_true", default=False, help="always show a progress bar")
    p.add_argument("--version", action="version", version=f"streamer {__version__}")
    return p


def settings_from_args(args: argparse.Namespace) -> Settings:
    flags = vars(args)
    overrides: dict[str, Any] = {s.name: flags[s.name] for s in SETTINGS.values()
                                 if s.flag is not None and flags[s.name] is not None}
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


FFMPEG_LOGLEVEL_ENV = "OPENCV_FFMPEG_LOGLEVEL"
_ffmpeg_quieted: list[bool] = []  # [True] once quiet_native_logs set FFMPEG_LOGLEVEL_ENV itself


def quiet_native_logs(level: str) -> None:
    """OpenCV and FFmpeg print their own warnings (a missing camera, a refused URL) unless told not to;
    the source reports those as one-line errors instead. FFmpeg's verbose output prints stream URLs with
    their credentials: it stays quiet until :func:`route_ffmpeg_logs` takes its errors into the log. Must
    run before cv2 is imported. A user's own OPENCV_FFMPEG_LOGLEVEL wins."""
    if FFMPEG_LOGLEVEL_ENV not in os.environ:
        os.environ[FFMPEG_LOGLEVEL_ENV] = "-8"  # AV_LOG_QUIET
        _ffmpeg_quieted[:] = [True]
    if level != "debug":
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")


def route_ffmpeg_logs() -> bool:
    """Once cv2 is loaded: FFmpeg's errors (a damaged file's decoder complaints) go to the log, counted per
    source (``streamer.sources.ffmpeg_log``), instead of being silenced. False when that is not possible
    here or the user set OPENCV_FFMPEG_LOGLEVEL (FFmpeg then stays as it was)."""
    from streamer.sources import ffmpeg_log

    if not _ffmpeg_quieted or not ffmpeg_log.install():
        return False
    os.environ.pop(FFMPEG_LOGLEVEL_ENV, None)  # set, it makes OpenCV install its own printer on each open
    return True


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
def run(settings: Settings) -> int:
    quiet_native_logs(settings.log_level)
    held = setup_logging(settings.log_level)

    from streamer.control.api import serve
    from streamer.pipeline import Pipeline, StopRequested
    from streamer.sources import ffmpeg_log

    route_ffmpeg_logs()
    pipeline: Any
    serve_control: Any
    if settings.workers:  # a driver over Ray workers, each running a pipeline (docs/scale-out.md)
        from streamer.scale.control import serve_driver
        from streamer.scale.driver import Driver

        pipeline, serve_control = Driver(settings), serve_driver
    else:
        pipeline, serve_control = Pipeline(settings), serve
    control = None  # the HTTP control plane (--http), bound before the pipeline opens
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
            control = serve_control(settings, pipeline)
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
        except StopRequested:  # a signal while it waited for subscribers: nothing was read
            print("streamer: stopped before the first frame", file=sys.stderr)
            return 0
        finally:
            pipeline.close()
    finally:
        if control is not None:
            control.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        ffmpeg_log.uninstall()
    if unattributed := ffmpeg_log.count_for(""):
        log.info("FFmpeg reported %d more decoding errors, from decoder threads of several sources "
                 "(--log-level debug shows them)", unattributed)
    if settings.progress != "off" or settings.log_level in ("debug", "info"):
        print("\n".join(summary.lines()), flush=True)
    if settings.summary_json:  # after the summary is shown: a full disk here loses nothing else
        write_file(settings.summary_json, summary.to_json().encode(), "--summary-json")
    failed = pipeline.failed_sources
    if failed or summary.failed_batches:
        what = (f"source(s) failed: {', '.join(failed)}" if failed
                else f"{summary.failed_batches} batches failed")
        print(f"streamer: finished with errors: {what}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        settings = settings_from_args(args)
    except StreamerError as exc:  # nothing has started yet: one line and out
        return _error(exc)
    if args.print_config:
        with _stdout_may_close():
            print(to_toml(settings, header=PRINTED_HEADER), end="", flush=True)
        return 0
    code = 0
    try:
        with _stdout_may_close():
            code = run(settings)
    except StreamerError as exc:
        code = _error(exc)
    return exit_past_stuck_captures(code)


@contextlib.contextmanager
def _stdout_may_close() -> Iterator[None]:
    """stdout closed early (`streamer ... | head -1`) is not an error of ours: stop writing to it."""
    try:
        yield
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _error(exc: StreamerError) -> int:
    logging.shutdown()
    print(f"streamer: error: {exc}".replace("\n", " "), file=sys.stderr, flush=True)
    return exc.exit_code


def exit_past_stuck_captures(code: int, wait_s: float = 0.5) -> int:
    """A camera or stream read can be stuck inside FFmpeg or a driver (its thread was abandoned). Running the
    interpreter's normal exit under it can abort in C++ destructors, so then end the process at once, with
    ``code``, once everything is flushed. Otherwise return ``code``."""
    # imported here, not at the top: it loads OpenCV, which must come after quiet_native_logs (the pipeline
    # has loaded it by now)
    from streamer.sources import busy_captures

    if not busy_captures(wait_s):
        return code
    log.debug("a capture thread is still inside a native read: exiting without waiting for it")
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
