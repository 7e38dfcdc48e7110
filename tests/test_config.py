"""Settings layering: config/default.toml, then --config FILE, then flags; every value validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.config import KEYS, Settings, load_defaults, load_settings
from streamer.errors import ConfigError
from streamer.paths import CONFIG_DIR, DEFAULT_CONFIG, DEFAULT_MODEL, REPO_ROOT, resolve_data_path


def test_default_toml_holds_every_setting() -> None:
    defaults = load_defaults()
    assert set(defaults) == set(KEYS.values())
    s = load_settings()
    assert s.bind == "tcp://127.0.0.1:5555"
    assert s.model == "engines/shapes_cnn.onnx" and s.backend == "auto"
    assert s.sources == () and s.slots >= 2 and s.batch >= 1


def test_default_model_resolves_to_the_repository_from_anywhere(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    if DEFAULT_MODEL.is_file():
        assert load_settings().model_path() == DEFAULT_MODEL
    assert resolve_data_path("config/default.toml") == REPO_ROOT / "config" / "default.toml"
    (tmp_path / "mine.onnx").write_bytes(b"x")
    assert load_settings(None, {"model": "mine.onnx"}).model_path() == tmp_path / "mine.onnx"


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
    if path != DEFAULT_CONFIG:
        assert path.read_text().lstrip().startswith("#"), "a worked config starts with how to use it"


def test_worked_configs_exist() -> None:
    assert {p.name for p in CONFIG_DIR.glob("*.toml")} >= {"default.toml", "webcam.toml", "offline.toml",
                                                            "multicam.toml"}


def test_publish_can_be_turned_off() -> None:
    assert load_settings().publish
    assert not load_settings(None, {"bind": "none"}).publish
