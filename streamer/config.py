"""Settings: one declaration per setting; defaults, then an optional ``--config`` TOML file, then flags.

Each field of :class:`Settings` is declared once with :func:`setting` — its default, TOML section and key,
command-line flag, help and valid values. From those declarations come the defaults, the keys a ``--config``
file may set (and its one-line errors), the flags of ``streamer`` (:mod:`streamer.cli`) and the reference
file config/default.toml, which the program never reads: ``python -m streamer.config > config/default.toml``
writes it, and a test fails when the committed copy drifts. A new setting is one more field here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamer.devices import DECODE_CHOICES, parse_device
from streamer.errors import ConfigError
from streamer.model.variants import AUTO, PRECISIONS
from streamer.paths import resolve_data_path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

BACKEND_CHOICES = ("auto", "tensorrt", "tensorrt-rtx", "torch", "onnxruntime")
PRECISION_CHOICES = (AUTO, *PRECISIONS)
LOG_LEVELS = ("debug", "info", "warning", "error")
PROGRESS_CHOICES = ("auto", "on", "off")
ENCODINGS = ("json", "msgpack")
FAST_START_CHOICES = ("auto", "off")  # streamer.backends.fast_start
POLICY_CHOICES = ("auto", "latest", "block", "drop-oldest")  # auto: latest for live sources, block for files
NO_BIND = ("", "none", "off")
TOKEN_ENV = "STREAMER_HTTP_TOKEN"  # where --http-token (and streamer-ctl --token) comes from when not given

# TOML tables in the order of config/default.toml and of `streamer --help`, with what each holds
SECTIONS: dict[str, str] = {
    "input": "where frames come from, and what a source does when the pipeline is behind",
    "live": "cameras and network streams (rtsp://, http(s)://): watchdog and reconnects",
    "model": "the model and the engine that runs it",
    "batching": "frames into batches, batches into the engine",
    "output": "where predictions go",
    "control": "running as a service: HTTP metrics, health probes, sources added and removed",
    "scale": "past one GPU or host: the sources sharded over Ray workers (docs/scale-out.md)",
    "log": "what the terminal shows",
}


@dataclass(frozen=True)
class Setting:
    """How one :class:`Settings` field is set: TOML ``[section] key``, ``flag`` (None: config file only),
    ``help`` (flag help and config comment; ``note`` adds lines to the config comment only), valid values."""

    section: str
    key: str
    flag: str | None
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    lo: float | None = None
    hi: float | None = None
    note: str = ""
    name: str = ""  # the Settings field; filled in from the dataclass
    default: Any = None  # filled in from the dataclass

    @property
    def kind(self) -> type:
        return type(self.default)

    @property
    def where(self) -> str:
        """``--batch / [batching] batch``: how errors name it."""
        toml = f"[{self.section}] {self.key}"
        return f"{self.flag} / {toml}" if self.flag else toml

    def usage(self) -> str:
        """``--batch N``, ``--backend auto|torch|...``, ``--realtime / --no-realtime``."""
        assert self.flag is not None
        if self.kind is bool:
            return f"{self.flag} / --no-{self.flag[2:]}"
        if self.choices:
            return f"{self.flag} {'|'.join(self.choices)}"
        return f"{self.flag} {self.metavar}"


def setting(section: str, key: str, default: Any, flag: str | None, help: str, **more: Any) -> Any:
    """Declare a :class:`Settings` field (keywords: see :class:`Setting`). Its type is the default's: str,
    int, float, bool (a ``--flag / --no-flag`` pair) or a tuple of str (a repeatable flag, a TOML list)."""
    return dataclasses.field(default=default, metadata={"setting": Setting(section, key, flag, help, **more)})


@dataclass(frozen=True)
class Settings:
    # [input]
    sources: tuple[str, ...] = setting(
        "input", "sources", (), "--source",
        "input: webcam<N> (camera N), a video file, a folder or glob of images, an rtsp:// or http(s):// "
        "URL, or demo (the bundled shapes clip with ground truth); repeat for several", metavar="SRC")
    realtime: bool = setting("input", "realtime", False, "--realtime",
                             "play files at their native FPS, keeping only the newest frame (like a camera)")
    policy: str = setting(
        "input", "policy", "auto", "--policy",
        "when the pipeline is behind: latest = keep only the newest frame, drop-oldest = a bounded queue "
        "(live_queue frames, the oldest dropped), block = wait, lose nothing; auto = latest for live sources "
        "(cameras, streams, --realtime), block for files", choices=POLICY_CHOICES,
        note="Every drop is counted (stats, `dropped`). One source: --source "
             "'rtsp://cam/live#policy=drop-oldest' (the suffix wins).")
    decode: str = setting(
        "input", "decode", "auto", "--decode",
        "where video is decoded: nvdec = on the GPU (NVDEC through PyNvVideoCodec, pip install "
        "'streamer[nvdec]'; frames stay on the GPU), cpu = FFmpeg through OpenCV; auto = NVDEC when it is "
        "installed, a GPU is present and it supports the stream, else the CPU (the log says why)",
        choices=DECODE_CHOICES,
        note="A stream NVDEC cannot take (its codec, bit depth, size), cameras and images are decoded on the "
             "CPU. One source: --source 'clip.mp4#decode=cpu' (the suffix wins).")
    nvdec_decoders: int = setting(
        "input", "nvdec_decoders", 0, "--nvdec-decoders",
        "NVDEC sessions per video file (0 = auto: the GPU's decoder engines shared out among the NVDEC file "
        "sources, at most 4 each); a file is split at key frames and its segments decoded side by side",
        metavar="N", lo=0, hi=16,
        note="Frames still come out once each, in order. --realtime files, live streams and runs with "
             "--annotate/--preview use one session per source.")
    max_frames: int = setting("input", "max_frames", 0, "--max-frames",
                              "stop each source after N frames (0 = no limit)", metavar="N", lo=0)
    file_queue: int = setting("input", "file_queue", 8, None, "frames buffered per file source; its reader "
                              "waits when it is full (nothing is lost)", lo=1, hi=100_000)
    live_queue: int = setting("input", "live_queue", 8, None, "frames a drop-oldest source buffers; when "
                              "full the oldest is dropped and counted", lo=1, hi=100_000)
    # [live]
    live_timeout_s: float = setting(
        "live", "timeout_s", 5.0, "--live-timeout",
        "a camera or stream with no frame for S seconds is down and is reconnected (also the open timeout)",
        metavar="S", lo=0.1, hi=3600.0)
    reconnect_attempts: int = setting(
        "live", "reconnect_attempts", 0, "--reconnect-attempts",
        "give a lost camera or stream up after N failed reconnects in a row (0 = never)", metavar="N", lo=0,
        note="Given up: eos reason error. A source that does not open at start-up is an error at once.")
    reconnect_backoff_s: float = setting("live", "backoff_s", 0.5, None, "wait before the first reconnect "
                                         "attempt; doubles after each failed one ...", lo=0.01, hi=3600.0)
    reconnect_backoff_max_s: float = setting("live", "backoff_max_s", 10.0, None, "... up to this",
                                             lo=0.01, hi=3600.0)
    # [model]
    model: str = setting(
        "model", "path", "engines/shapes_cnn.onnx", "--model",
        "exported ONNX model (tools/export_onnx.py); a relative path is looked up in the working directory, "
        "then among streamer's own files", metavar="PATH")
    backend: str = setting("model", "backend", "auto", "--backend", "engine; auto = the fastest usable, "
                           "TensorRT → TensorRT-RTX → PyTorch CUDA → ONNX Runtime", choices=BACKEND_CHOICES)
    precision: str = setting(
        "model", "precision", "auto", "--precision",
        "the model variant to run: fp32 = <stem>.onnx, fp16 = <stem>.fp16.onnx, int8 = <stem>.int8.onnx "
        "(tools/quantize.py; ONNX Runtime and TensorRT); auto = ONNX Runtime the model as given, TensorRT "
        "and PyTorch fp16", choices=PRECISION_CHOICES)
    device: str = setting(
        "model", "device", "auto", "--device",
        "where the engine runs: cuda:N = GPU N of those visible (CUDA_VISIBLE_DEVICES counts), cpu = ONNX "
        "Runtime on the CPU, auto = the backend's choice (a GPU backend: the first visible GPU)",
        metavar="auto|cpu|cuda:N",
        note="One process uses one GPU: cuda:N narrows CUDA_VISIBLE_DEVICES to it before CUDA starts. Run "
             "one streamer per GPU, or --workers (one GPU each).")
    threads: int = setting("model", "threads", 0, "--threads",
                           "ONNX Runtime intra-op threads (0 = the usable cores less one)", metavar="N",
                           lo=0, hi=1024)
    fast_start: str = setting(
        "model", "fast_start", "auto", "--fast-start",
        "auto = while a backend that is slow to start (PyTorch) loads in the background, ONNX Runtime runs "
        "the same model (<stem>.onnx) on the CPU and classifies the first frames, then hands over; off = "
        "wait for the backend before the first frame", choices=FAST_START_CHOICES,
        note="Each prediction names the engine that made it (model). Skipped, and logged, without "
             "onnxruntime or an ONNX beside the model. A backend that fails to load still fails the run.")
    # [batching]
    batch: int = setting("batching", "batch", 16, "--batch",
                         "most frames per batch (also the engine's max batch)", metavar="N", lo=1, hi=4096)
    batch_timeout_ms: float = setting("batching", "timeout_ms", 5.0, "--batch-timeout-ms",
                                      "close a partial batch this long after its first frame", metavar="MS",
                                      lo=0.0, hi=60_000.0)
    slots: int = setting("batching", "slots", 2, "--slots",
                         "batches in flight (2 = double-buffering: one fills while the other runs)",
                         metavar="N", lo=1, hi=64)
    # [output]
    bind: str = setting("output", "bind", "tcp://127.0.0.1:5555", "--bind",
                        "ZeroMQ PUB endpoint ('none' = do not publish)", metavar="ENDPOINT")
    topk: int = setting("output", "topk", 3, "--topk", "classes per prediction", metavar="K", lo=1, hi=1000)
    output: str = setting("output", "jsonl", "", "--output",
                          "write every prediction as one JSON line ('' = no file)", metavar="FILE.jsonl")
    summary_json: str = setting("output", "summary_json", "", "--summary-json",
                                "write the end-of-run summary as JSON ('' = no file)", metavar="FILE")
    annotate: str = setting(
        "output", "annotate", "", "--annotate",
        "write annotated video (top-k, source, frame, fps, latency drawn on each classified frame): a file "
        "(.mp4 .m4v .mov .avi .mkv) for one source, a directory with one <source>.mp4 each for several "
        "('' = none)", metavar="PATH",
        note="Files: one video frame per prediction, in order (the run waits for the encoder); live sources: "
             "frames the encoder cannot keep up with are dropped and counted. H.264 where OpenCV has it, "
             "else MPEG-4 Part 2 / Motion JPEG (logged). docs/view.md")
    encoding: str = setting("output", "encoding", "json", "--encoding", "message payload encoding",
                            choices=ENCODINGS)
    hwm: int = setting("output", "hwm", 10000, "--hwm",
                       "messages queued per subscriber; a slower one loses messages", metavar="N", lo=1)
    stats_interval_s: float = setting("output", "stats_interval_s", 1.0, "--stats-interval",
                                      "seconds between 'stats' messages (0 = none)", metavar="S", lo=0.0)
    wait_subscribers: int = setting(
        "output", "wait_subscribers", 0, "--wait-subscribers",
        "wait (up to wait_timeout_s) until N subscriptions are active before reading frames: one per "
        "subscriber and topic prefix it subscribes to (streamer-sub: one)", metavar="N", lo=0, hi=1000,
        note="Each subscription counted receives every message from the first frame on; without it, "
             "subscribers already running are usually connected in time, but that is not guaranteed "
             "(docs/protocol.md).")
    wait_timeout_s: float = setting("output", "wait_timeout_s", 10.0, None,
                                    "how long to wait for them before starting anyway", lo=0.0)
    # [control]
    keep_running: bool = setting("control", "keep_running", False, "--keep-running",
                                 "keep running when the last source ends, or with none: a service that "
                                 "waits for sources added over --http (POST /sources)")
    http: str = setting("control", "http", "none", "--http",
                        "serve /metrics, /healthz, /readyz and /sources on HOST:PORT (PORT alone: "
                        "127.0.0.1:PORT; 0: a free port; 'none' = off)", metavar="HOST:PORT",
                        note="Off by default: a one-shot run needs no listening port, and two streamers on "
                             "one machine must not collide on one they did not ask for. docs/control.md")
    http_token: str = setting("control", "token", "", "--http-token",
                              f"bearer token that POST/DELETE /sources require ('' = ${TOKEN_ENV}); "
                              "without one they are refused when --http is not a loopback address",
                              metavar="TOKEN")
    preview: bool = setting("control", "preview", False, "--preview",
                            "serve a live preview page at / on the --http server: each source's current "
                            "frame, top-k, fps, latency, health and drops (docs/view.md)")
    preview_fps: float = setting("control", "preview_fps", 5.0, None,
                                 "frames per second per source the preview sends at most (frames are "
                                 "taken and encoded only while a browser watches)", lo=0.1, hi=120.0,
                                 note="5: a browser on a 2-core machine then costs the run under 5% of its "
                                      "frames/s (docs/view.md)")
    preview_width: int = setting("control", "preview_width", 480, None,
                                 "preview frames are scaled down to at most this many pixels wide",
                                 lo=16, hi=7680)
    # [scale]
    workers: int = setting(
        "scale", "workers", 0, "--workers",
        "run the sources over N Ray workers, each an ordinary pipeline on its share of them, with one "
        "ZeroMQ endpoint and one --output (pip install 'streamer[ray]'; 0 = this process runs them)",
        metavar="N", lo=0, hi=10_000,
        note="Source i goes to worker i mod N; sources added over --http go to the worker with the fewest "
             "running. A GPU backend takes one GPU per worker.")
    ray_address: str = setting(
        "scale", "ray", "", "--ray",
        "the Ray cluster the workers run on: HOST:PORT of its head, auto = the cluster this machine belongs "
        "to, '' = a local Ray started for this run", metavar="ADDRESS")
    max_restarts: int = setting("scale", "max_restarts", 3, None, "times Ray restarts a worker that died "
                                "(its sources resume there); -1 = without limit", lo=-1, hi=1_000_000)
    worker_cpus: float = setting("scale", "worker_cpus", 1.0, None, "CPUs Ray reserves for each worker",
                                 lo=0.0, hi=1024.0)
    driver_host: str = setting("scale", "driver_host", "", None, "the address workers reach the driver at "
                               "('' = this machine's address as Ray sees it)")
    # [log]
    log_level: str = setting("log", "level", "info", "--log-level", "log detail on stderr",
                             choices=LOG_LEVELS)
    progress: str = setting("log", "progress", "auto", None, "a progress bar: auto = for offline files on a "
                            "terminal, on = always (--progress), off = never (--quiet)",
                            choices=PROGRESS_CHOICES)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(self.sources))
        for s in SETTINGS.values():
            value = getattr(self, s.name)
            if s.kind is float and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, s.name, float(value))
            if s.choices:
                _choice(s, value)
            if s.lo is not None:
                _range(s, getattr(self, s.name))
        if any(not s.strip() for s in self.sources):
            raise ConfigError("an empty --source was given", "give a camera, file, folder, URL or demo")
        parse_device(self.device, SETTINGS["device"].where)

    @property
    def publish(self) -> bool:
        return self.bind.strip().lower() not in NO_BIND

    def model_path(self) -> Path:
        return resolve_data_path(self.model)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


SETTINGS: dict[str, Setting] = {
    f.name: dataclasses.replace(f.metadata["setting"], name=f.name, default=f.default)
    for f in dataclasses.fields(Settings)
}
# (section, key) in TOML → Settings field, and back
KEYS: dict[tuple[str, str], str] = {(s.section, s.key): s.name for s in SETTINGS.values()}
FIELD_KEYS = {s.name: f"[{s.section}] {s.key}" for s in SETTINGS.values()}


def _choice(s: Setting, value: str) -> None:
    if value not in s.choices:
        raise ConfigError(f"{s.where}: invalid choice {value!r}", f"choose one of {', '.join(s.choices)}")


def _range(s: Setting, value: float) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{s.where}: {value} is not a finite number")
    assert s.lo is not None
    if value < s.lo or (s.hi is not None and value > s.hi):
        bound = f"{s.lo}..{s.hi}" if s.hi is not None else f">= {s.lo}"
        raise ConfigError(f"{s.where}: {value} is out of range", f"use a value {bound}")


# -- --config files --------------------------------------------------------------------------------------
def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}", "check the path given to --config") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}",
                          "streamer --print-config shows a valid one") from None


def flatten(tables: dict[str, Any], origin: str) -> dict[str, Any]:
    """TOML tables → {field: value}; unknown sections or keys are errors (a typo must not be ignored)."""
    flat: dict[str, Any] = {}
    for section, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{origin}: {section!r} is outside any section",
                              "settings live in sections; see streamer --print-config")
        if section not in SECTIONS:
            raise ConfigError(f"{origin}: unknown section [{section}]", f"sections are {', '.join(SECTIONS)}")
        for key, value in table.items():
            field = KEYS.get((section, key))
            if field is None:
                keys = ", ".join(k for s, k in KEYS if s == section)
                raise ConfigError(f"{origin}: unknown key {key!r} in [{section}]", f"[{section}] has: {keys}")
            flat[field] = value
    return flat


def check_types(values: dict[str, Any], origin: str) -> dict[str, Any]:
    """{field: TOML value} → {field: value of the field's type} (ints are floats where a float is due)."""
    out: dict[str, Any] = {}
    for field, value in values.items():
        want = SETTINGS[field].kind
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if want is tuple and isinstance(value, (list, tuple)):
            if not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{origin}: {FIELD_KEYS[field]} must be a list of strings")
            value = tuple(value)
        elif not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise ConfigError(f"{origin}: {FIELD_KEYS[field]} = {value!r} should be a {want.__name__}",
                              "see streamer --print-config")
        out[field] = value
    return out


def read_config(path: str | Path) -> dict[str, Any]:
    """A ``--config`` file → {field: value} of the settings it sets."""
    return check_types(flatten(read_toml(path), str(path)), str(path))


def load_defaults() -> dict[str, Any]:
    """{field: default} of every setting."""
    return {s.name: s.default for s in SETTINGS.values()}


def load_settings(config_file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Defaults, then ``config_file``, then ``overrides`` (command-line flags; None = not given)."""
    values = read_config(config_file) if config_file is not None else {}
    for field, value in (overrides or {}).items():
        if field not in SETTINGS:
            raise ValueError(f"unknown setting {field!r}")
        if value is not None:
            values[field] = value
    return Settings(**values)


# -- the reference file ----------------------------------------------------------------------------------
HEADER = """\
# streamer's settings: every key, its default and the flag that overrides it.
# Generated from the declarations in streamer/config.py by `python -m streamer.config > config/default.toml`
# (edit those, not this file; the program never reads it). `streamer --config FILE` layers a TOML file over
# these defaults (only the keys it sets), flags win over both, and `streamer ... --print-config` prints the
# settings a command line runs with.
"""


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def to_toml(settings: Settings | None = None, header: str = HEADER, width: int = 110) -> str:
    """``settings`` (default: the defaults) as a commented TOML file that ``--config`` reads back."""
    values = dataclasses.asdict(settings) if settings is not None else load_defaults()
    lines = [header.rstrip("\n")] if header else []
    for section, about in SECTIONS.items():
        rows = [(f"{s.key} = {toml_value(values[s.name])}", s)
                for s in SETTINGS.values() if s.section == section]
        col = max(len(text) for text, _ in rows if len(text) <= 40) + 2  # comments beside, in one column
        lines += ["", f"[{section}]".ljust(col) + f"# {about}"]
        for text, s in rows:
            comment = f"{s.usage()}: {s.help}" if s.flag else s.help
            if s.note:
                comment += f". {s.note}"
            if len(text) + 2 > col:  # a long value (a list of sources): its comment goes above it
                lines += ["# " + line for line in textwrap.wrap(comment, width - 2)] + [text]
                continue
            wrapped = textwrap.wrap(comment, width - col - 4)
            lines.append(text.ljust(col) + "# " + wrapped[0])
            lines += [" " * col + "#   " + more for more in wrapped[1:]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(to_toml(), end="")
