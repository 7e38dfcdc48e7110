"""Settings: config/default.toml, then an optional ``--config`` TOML file over it, then command-line flags.

Every setting has its default in config/default.toml (the one place to read them); this module only knows
each key's section, type and valid range, and turns the merged tables into a frozen, validated ``Settings``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamer.errors import ConfigError
from streamer.paths import DEFAULT_CONFIG, resolve_data_path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

BACKEND_CHOICES = ("auto", "tensorrt", "tensorrt-rtx", "torch", "onnxruntime")
LOG_LEVELS = ("debug", "info", "warning", "error")
PROGRESS_CHOICES = ("auto", "on", "off")
ENCODINGS = ("json", "msgpack")
POLICY_CHOICES = ("auto", "latest", "block", "drop-oldest")  # auto: latest for live sources, block for files
NO_BIND = ("", "none", "off")

# (section, key) in TOML → Settings field
KEYS: dict[tuple[str, str], str] = {
    ("input", "sources"): "sources",
    ("input", "realtime"): "realtime",
    ("input", "file_queue"): "file_queue",
    ("input", "live_queue"): "live_queue",
    ("input", "max_frames"): "max_frames",
    ("input", "policy"): "policy",
    ("live", "timeout_s"): "live_timeout_s",
    ("live", "reconnect_attempts"): "reconnect_attempts",
    ("live", "backoff_s"): "reconnect_backoff_s",
    ("live", "backoff_max_s"): "reconnect_backoff_max_s",
    ("model", "path"): "model",
    ("model", "backend"): "backend",
    ("model", "threads"): "threads",
    ("batching", "batch"): "batch",
    ("batching", "timeout_ms"): "batch_timeout_ms",
    ("batching", "slots"): "slots",
    ("output", "bind"): "bind",
    ("output", "topk"): "topk",
    ("output", "encoding"): "encoding",
    ("output", "hwm"): "hwm",
    ("output", "jsonl"): "output",
    ("output", "summary_json"): "summary_json",
    ("output", "stats_interval_s"): "stats_interval_s",
    ("output", "wait_subscribers"): "wait_subscribers",
    ("output", "wait_timeout_s"): "wait_timeout_s",
    ("log", "level"): "log_level",
    ("log", "progress"): "progress",
}
FIELD_KEYS = {field: f"[{section}] {key}" for (section, key), field in KEYS.items()}


@dataclass(frozen=True)
class Settings:
    sources: tuple[str, ...]
    realtime: bool
    file_queue: int
    live_queue: int
    max_frames: int
    policy: str
    live_timeout_s: float
    reconnect_attempts: int
    reconnect_backoff_s: float
    reconnect_backoff_max_s: float
    model: str
    backend: str
    threads: int
    batch: int
    batch_timeout_ms: float
    slots: int
    bind: str
    topk: int
    encoding: str
    hwm: int
    output: str
    summary_json: str
    stats_interval_s: float
    wait_subscribers: int
    wait_timeout_s: float
    log_level: str
    progress: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(self.sources))
        _choice("backend", self.backend, BACKEND_CHOICES)
        _choice("log_level", self.log_level, LOG_LEVELS)
        _choice("progress", self.progress, PROGRESS_CHOICES)
        _choice("encoding", self.encoding, ENCODINGS)
        _choice("policy", self.policy, POLICY_CHOICES)
        _range("live_timeout_s", self.live_timeout_s, 0.1, 3600.0)
        _range("reconnect_attempts", self.reconnect_attempts, 0, None)
        _range("reconnect_backoff_s", self.reconnect_backoff_s, 0.01, 3600.0)
        _range("reconnect_backoff_max_s", self.reconnect_backoff_max_s, 0.01, 3600.0)
        _range("batch", self.batch, 1, 4096)
        _range("slots", self.slots, 1, 64)
        _range("topk", self.topk, 1, 1000)
        _range("file_queue", self.file_queue, 1, 100_000)
        _range("live_queue", self.live_queue, 1, 100_000)
        _range("max_frames", self.max_frames, 0, None)
        _range("threads", self.threads, 0, 1024)
        _range("hwm", self.hwm, 1, None)
        _range("wait_subscribers", self.wait_subscribers, 0, 1000)
        _range("batch_timeout_ms", self.batch_timeout_ms, 0.0, 60_000.0)
        _range("stats_interval_s", self.stats_interval_s, 0.0, None)
        _range("wait_timeout_s", self.wait_timeout_s, 0.0, None)
        if any(not s.strip() for s in self.sources):
            raise ConfigError("an empty --source was given", "give a camera, file, folder, URL or demo")

    @property
    def publish(self) -> bool:
        return self.bind.strip().lower() not in NO_BIND

    def model_path(self) -> Path:
        return resolve_data_path(self.model)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


_FLAG_FOR_FIELD = {"sources": "--source", "jsonl": "--output", "stats_interval_s": "--stats-interval",
                   "live_timeout_s": "--live-timeout"}


def _name(field: str) -> str:
    flag = _FLAG_FOR_FIELD.get(field, f"--{field.replace('_', '-')}")
    return f"{flag} / {FIELD_KEYS.get(field, field)}"


def _choice(field: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{_name(field)}: invalid choice {value!r}", f"choose one of {', '.join(choices)}")


def _range(field: str, value: float, lo: float, hi: float | None) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{_name(field)}: {value} is not a finite number")
    if value < lo or (hi is not None and value > hi):
        bound = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ConfigError(f"{_name(field)}: {value} is out of range", f"use a value {bound}")


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
        raise ConfigError(f"config file {path} is not valid TOML: {exc}", "see config/default.toml") from None


def flatten(tables: dict[str, Any], origin: str) -> dict[str, Any]:
    """TOML tables → {field: value}; unknown sections or keys are errors (a typo must not be ignored)."""
    known_sections = {s for s, _ in KEYS}
    flat: dict[str, Any] = {}
    for section, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{origin}: {section!r} is outside any section",
                              "settings live in sections; see config/default.toml")
        if section not in known_sections:
            raise ConfigError(f"{origin}: unknown section [{section}]",
                              f"sections are {', '.join(sorted(known_sections))}")
        for key, value in table.items():
            field = KEYS.get((section, key))
            if field is None:
                keys = ", ".join(k for s, k in KEYS if s == section)
                raise ConfigError(f"{origin}: unknown key {key!r} in [{section}]", f"[{section}] has: {keys}")
            flat[field] = value
    return flat


def _check_types(values: dict[str, Any], defaults: dict[str, Any], origin: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field, value in values.items():
        want = type(defaults[field])
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if want is list and isinstance(value, (list, tuple)):
            if not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{origin}: {FIELD_KEYS[field]} must be a list of strings")
            value = list(value)
        elif not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise ConfigError(f"{origin}: {FIELD_KEYS[field]} = {value!r} should be a {want.__name__}",
                              "see config/default.toml")
        out[field] = value
    return out


def load_defaults(path: Path = DEFAULT_CONFIG) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"the default config {path} is missing",
                          "run from a checkout of the repository (pip install -e .)")
    flat = flatten(read_toml(path), str(path))
    missing = sorted(set(KEYS.values()) - set(flat))
    if missing:
        raise ConfigError(f"{path} lacks defaults for: {', '.join(FIELD_KEYS[m] for m in missing)}")
    return flat


def load_settings(config_file: str | Path | None = None, overrides: dict[str, Any] | None = None,
                  defaults_file: Path = DEFAULT_CONFIG) -> Settings:
    """Defaults, then ``config_file``, then ``overrides`` (command-line flags; None = not given)."""
    defaults = load_defaults(defaults_file)
    values = dict(defaults)
    if config_file is not None:
        values.update(_check_types(flatten(read_toml(config_file), str(config_file)), defaults,
                                   str(config_file)))
    for field, value in (overrides or {}).items():
        if field not in defaults:
            raise ValueError(f"unknown setting {field!r}")
        if value is not None:
            values[field] = value
    values["sources"] = tuple(values["sources"])
    return Settings(**values)
