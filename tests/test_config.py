"""Settings: one declaration per setting; defaults, then --config FILE, then flags; every value validated."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
from streamer_helpers import REPO

from streamer import config
from streamer.config import KEYS, SECTIONS, SETTINGS, Settings, load_defaults, load_settings, to_toml
from streamer.errors import ConfigError
from streamer.paths import DATA_DIR, DEFAULT_MODEL, resolve_data_path

CONFIG_DIR = REPO / "config"
REFERENCE = CONFIG_DIR / "default.toml"


def test_defaults_come_from_the_declarations_not_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_file(path: object) -> dict[str, object]:
        raise AssertionError(f"read {path}")

    monkeypatch.setattr(config, "read_toml", no_file)
    s = load_settings()
    assert s == Settings() and dataclasses.asdict(s) == load_defaults()
    assert set(load_defaults()) == set(KEYS.values()) == set(SETTINGS)
    assert s.bind == "tcp://127.0.0.1:5555"
    assert s.model == "engines/shapes_cnn.onnx" and s.backend == "auto"
    assert s.sources == () and s.slots >= 2 and s.batch >= 1


def test_committed_default_toml_is_generated_from_the_declarations() -> None:
    assert REFERENCE.read_text() == to_toml(), (
        "config/default.toml differs from the settings declared in streamer/config.py: "
        "regenerate it with `python -m streamer.config > config/default.toml`")


def test_declarations_are_consistent() -> None:
    hints = typing.get_type_hints(Settings)
    flags = [s.flag for s in SETTINGS.values() if s.flag]
    assert len(flags) == len(set(flags)) and not {"--config", "--print-config", "--quiet", "--progress",
                                                  "--version", "--help"} & set(flags)
    assert len(KEYS) == len(SETTINGS)  # no (section, key) twice
    for s in SETTINGS.values():
        assert s.section in SECTIONS and s.help, s
        assert (typing.get_origin(hints[s.name]) or hints[s.name]) is s.kind, s.name
        assert not (s.choices and s.lo is not None) and (s.hi is None or s.lo is not None), s.name
        assert s.kind in (str, int, float, bool, tuple), s.name
        assert s.kind in (bool, tuple) or s.choices or s.flag is None or s.metavar, f"{s.name}: no metavar"
    sections = [s.section for s in SETTINGS.values()]
    assert sections == sorted(sections, key=list(SECTIONS).index), "declare the settings section by section"


def test_settings_print_as_a_config_file_that_reads_back(tmp_path: Path) -> None:
    s = load_settings(None, {"sources": ("demo", 'a "quoted" path.mp4'), "batch": 4, "realtime": True,
                             "batch_timeout_ms": 2, "output": "x.jsonl", "log_level": "debug"})
    text = to_toml(s)
    assert all(len(line) <= 110 for line in text.splitlines() if "#" in line)
    config.tomllib.loads(text)
    cfg = tmp_path / "printed.toml"
    cfg.write_text(text)
    assert load_settings(cfg) == s


def test_default_model_resolves_from_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert DEFAULT_MODEL.is_file() and DEFAULT_MODEL == DATA_DIR / "engines" / "shapes_cnn.onnx"
    assert load_settings().model_path() == DEFAULT_MODEL
    assert resolve_data_path("engines/demo/shapes_demo.mp4") == DATA_DIR / "engines/demo/shapes_demo.mp4"
    (tmp_path / "mine.onnx").write_bytes(b"x")
    assert load_settings(None, {"model": "mine.onnx"}).model_path() == tmp_path / "mine.onnx"
    (tmp_path / "engines").mkdir()
    (tmp_path / "engines" / "shapes_cnn.onnx").write_bytes(b"x")  # the working directory comes first
    assert load_settings().model_path() == tmp_path / "engines" / "shapes_cnn.onnx"


def test_config_file_layers_over_defaults_and_flags_win(tmp_path: Path) -> None:
    cfg = tmp_path / "my.toml"
    cfg.write_text('[input]\nsources = ["webcam0", "clip.mp4"]\n[batching]\nbatch = 4\ntimeout_ms = 2\n'
                   '[output]\ntopk = 1\n')
    s = load_settings(cfg)
    assert s.sources == ("webcam0", "clip.mp4") and s.batch == 4 and s.batch_timeout_ms == 2.0 and s.topk == 1
    assert s.slots == load_settings().slots  # untouched keys keep their defaults
    s = load_settings(cfg, {"batch": 32, "sources": ("demo",), "topk": None})
    assert (s.batch, s.sources, s.topk) == (32, ("demo",), 1)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[input]\nsorces = []\n", "unknown key 'sorces' in \\[input\\]"),
        ("[inptu]\nsources = []\n", "unknown section \\[inptu\\]"),
        ("batch = 3\n", "'batch' is outside any section"),
        ("[batching]\nbatch = 'big'\n", "\\[batching\\] batch = 'big' should be a int"),
        ("[batching]\nbatch = true\n", "should be a int"),
        ("[input]\nsources = [1, 2]\n", "must be a list of strings"),
        ("[batching]\nbatch = 0\n", "--batch / \\[batching\\] batch: 0 is out of range"),
        ("[model]\nbackend = 'tpu'\n", "invalid choice 'tpu'"),
        ("[output]\nencoding = 'xml'\n", "invalid choice 'xml'"),
        ("[batching]\ntimeout_ms = -1\n", "out of range"),
        ("[input]\nfile_queue = 0\n", "^\\[input\\] file_queue: 0 is out of range"),
        ("[live]\ntimeout_s = inf\n", "--live-timeout / \\[live\\] timeout_s: inf is not a finite number"),
        ("[batching\n", "is not valid TOML"),
    ],
)
def test_bad_config_files_are_one_line_errors(tmp_path: Path, text: str, match: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=match) as err:
        load_settings(cfg)
    assert "\n" not in str(err.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml")


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.toml")), ids=lambda p: p.name)
def test_worked_configs_load(path: Path) -> None:
    s = load_settings(path)
    assert isinstance(s, Settings)
    if path != REFERENCE:
        assert path.read_text().lstrip().startswith("#"), "a worked config starts with how to use it"


def test_worked_configs_exist() -> None:
    assert {p.name for p in CONFIG_DIR.glob("*.toml")} >= {"default.toml", "webcam.toml", "offline.toml",
                                                            "multicam.toml"}


def test_publish_can_be_turned_off() -> None:
    assert load_settings().publish
    assert not load_settings(None, {"bind": "none"}).publish
