"""The ``streamer`` command as a user runs it (a subprocess): outputs, exit codes, errors, signals."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from streamer_helpers import (
    REPO,
    color_sequence,
    make_color_model,
    read_jsonl,
    run_cli,
    stderr_lines,
    write_video,
)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("cli") / "clip.avi", color_sequence(33, seed=9))


def test_file_to_jsonl_exit_0_with_summary(tmp_path: Path, clip: Path, color_model: Path) -> None:
    out = tmp_path / "preds.jsonl"
    summary = tmp_path / "summary.json"
    r = run_cli("--source", str(clip), "--model", str(color_model), "--output", str(out), "--bind", "none",
                "--batch", "4", "--topk", "2", "--summary-json", str(summary))
    assert r.returncode == 0, r.stderr
    lines = read_jsonl(out)
    assert [d["frame"] for d in lines] == list(range(33))
    assert [d["topk"][0]["label"] for d in lines] == color_sequence(33, seed=9)
    assert all(len(d["topk"]) == 2 for d in lines)
    assert "33 frames in" in r.stdout and "frames/s" in r.stdout and "p95" in r.stdout
    assert "Traceback" not in r.stderr
    s = json.loads(summary.read_text())
    assert s["frames"] == 33 and s["sources"][0]["name"] == "clip" and s["backend"] == "onnxruntime"


def test_config_file_and_python_dash_m_streamer(tmp_path: Path, clip: Path, color_model: Path) -> None:
    out = tmp_path / "cfg.jsonl"
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'[input]\nsources = ["{clip}"]\n[model]\npath = "{color_model}"\n'
                   f'[output]\nbind = "none"\njsonl = "{out}"\n')
    r = subprocess.run([sys.executable, "-m", "streamer", "--config", str(cfg), "--quiet"], cwd=REPO,
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert len(read_jsonl(out)) == 33
    assert r.stdout == ""  # --quiet


@pytest.fixture(scope="module")
def unfit_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_color_model(tmp_path_factory.mktemp("unfit") / "four.onnx", classes=4)


ERROR_CASES = {
    "no source": ([], "no source given"),
    "unknown flag": (["--source", "{clip}", "--bogus"], "unrecognized arguments: --bogus"),
    "bad int": (["--source", "{clip}", "--batch", "many"], "argument --batch: invalid int value: 'many'"),
    "batch 0": (["--source", "{clip}", "--batch", "0"], "--batch / [batching] batch: 0 is out of range"),
    "bad choice": (["--source", "{clip}", "--backend", "tpu"], "argument --backend: invalid choice: 'tpu'"),
    "missing file": (["--source", "/no/such/clip.mp4"], "no such file or directory: /no/such/clip.mp4"),
    "not a video": (["--source", "{text}"], "cannot decode video file"),
    "camera": (["--source", "webcam9"], "camera webcam9 (/dev/video9) did not open"),
    "missing model": (["--source", "{clip}", "--model", "/no/model.onnx"],
                      "model file not found: /no/model.onnx"),
    "unfit model": (["--source", "{clip}", "--model", "{unfit}"], "but the manifest lists 3 labels"),
    "missing config": (["--config", "/no/streamer.toml"], "config file not found: /no/streamer.toml"),
    "bad output dir": (["--source", "{clip}", "--output", "/no/dir/x.jsonl"], "cannot write --output"),
    "bad endpoint": (["--source", "{clip}", "--bind", "tcp://127.0.0.1:99999"],
                     "cannot bind ZeroMQ endpoint"),
    "tensorrt absent": (["--source", "{clip}", "--backend", "tensorrt"],
                        "backend 'tensorrt' cannot run here"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES), ids=list(ERROR_CASES))
def test_errors_exit_2_with_one_line(case: str, tmp_path: Path, clip: Path, color_model: Path,
                                     unfit_model: Path) -> None:
    args, message = ERROR_CASES[case]
    text = tmp_path / "notes.mp4"
    text.write_text("hello\n")
    fill = {"{clip}": str(clip), "{unfit}": str(unfit_model), "{text}": str(text)}
    argv = [fill.get(a, a) for a in args]
    if "--model" not in argv:
        argv += ["--model", str(color_model)]
    if case == "tensorrt absent":
        from streamer.backends.select import probe

        if probe("tensorrt") is None:
            pytest.skip("TensorRT is usable here")
    if "--bind" not in argv:
        argv += ["--bind", "tcp://127.0.0.1:*"]
    r = run_cli(*argv)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("streamer: error: ") and message in lines[0], lines[0]
    assert r.stdout == ""


def test_endpoint_in_use_exits_2(clip: Path, color_model: Path) -> None:
    from zmq_helpers import pub_socket, zmq_context

    with zmq_context() as ctx:
        _, endpoint = pub_socket(ctx)
        r = run_cli("--source", str(clip), "--model", str(color_model), "--bind", endpoint)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"streamer: error: cannot bind ZeroMQ endpoint {endpoint}: address already in use (hint: another "
        "streamer or program is using it: stop it, or choose another --bind, e.g. tcp://127.0.0.1:5556)"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_file_drains_publishes_and_exits_0(sig: signal.Signals, tmp_path: Path, color_model: Path,
                                                      vtest: Path) -> None:
    """--realtime plays vtest.avi at 10 fps (80 s), so the signal surely lands mid-file."""
    from zmq_helpers import recv_message, sub_socket, zmq_context

    out = tmp_path / "sig.jsonl"
    summary = tmp_path / "sig.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamer.cli", "--source", str(vtest), "--realtime",
         "--model", str(color_model), "--bind", "tcp://127.0.0.1:*", "--wait-subscribers", "1",
         "--output", str(out), "--summary-json", str(summary), "--log-level", "info"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        lines = stderr_lines(proc)
        endpoint = None
        while endpoint is None:
            line = lines.get(timeout=30)
            if m := re.search(r"publishing on (tcp://\S+)", line):
                endpoint = m.group(1)
        with zmq_context() as ctx:
            sock = sub_socket(ctx, endpoint, ("pred.", "eos."))
            first = [recv_message(sock) for _ in range(3)]
            proc.send_signal(sig)
            msgs = list(first)
            while not msgs[-1][0].startswith("eos."):
                msgs.append(recv_message(sock))
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    preds = [d for t, d in msgs if t == "pred.vtest"]
    eos = msgs[-1][1]
    written = read_jsonl(out)
    n = len(written)
    assert 3 <= n < 795
    assert [d["frame"] for d in preds] == [d["frame"] for d in written]  # everything processed was published
    frames = [d["frame"] for d in written]
    assert frames == sorted(frames) and frames[0] == 0
    assert (eos["source"], eos["frames"], eos["reason"]) == ("vtest", n, "stopped")
    s = json.loads(summary.read_text())
    assert s["frames"] == n and s["stopped_by_signal"]


def test_a_second_signal_exits_at_once(clip: Path, color_model: Path) -> None:
    """While it waits for a subscriber that never comes, the first SIGINT asks for a drain and the second
    ends the process without one."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamer.cli", "--source", str(clip), "--model", str(color_model),
         "--bind", "tcp://127.0.0.1:*", "--wait-subscribers", "1"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        lines = stderr_lines(proc)
        while "waiting up to" not in lines.get(timeout=30):
            pass
        proc.send_signal(signal.SIGINT)
        while "finishing the frames in flight" not in lines.get(timeout=30):
            pass
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 128 + signal.SIGINT
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rest = []
    while not lines.empty():
        rest.append(lines.get())
    assert any("SIGINT again: exiting without draining" in line for line in rest)


# -- flags: derived from the settings' declarations (in-process, fast) -------------------------------------
def test_every_declared_flag_sets_its_setting() -> None:
    from streamer.cli import build_parser
    from streamer.config import SETTINGS

    parser = build_parser()
    by_flag = {opt: a for a in parser._actions for opt in a.option_strings}
    for s in SETTINGS.values():
        if s.flag is None:  # config file only ([log] progress: --quiet / --progress)
            continue
        action = by_flag[s.flag]
        assert action.dest == s.name and action.default is None and action.help, s.flag
        assert list(action.choices or ()) == list(s.choices), s.flag
    assert {"--config", "--print-config", "--quiet", "-q", "--progress", "--version"} <= set(by_flag)


def test_flags_over_config_file_over_defaults(tmp_path: Path) -> None:
    from streamer.cli import build_parser, settings_from_args
    from streamer.config import Settings

    cfg = tmp_path / "c.toml"
    cfg.write_text('[batching]\nbatch = 4\nslots = 3\n[input]\nsources = ["a.mp4"]\n[log]\nlevel = "debug"\n')

    def settings(*argv: str) -> Settings:
        return settings_from_args(build_parser().parse_args(list(argv)))

    s = settings("--config", str(cfg), "--batch", "8", "--source", "x", "--source", "y", "--no-realtime",
                 "--batch-timeout-ms", "3")
    assert (s.batch, s.slots, s.sources, s.realtime, s.batch_timeout_ms) == (8, 3, ("x", "y"), False, 3.0)
    assert settings("--config", str(cfg), "--quiet").progress == "off"
    assert settings("--config", str(cfg), "--quiet").log_level == "warning"
    assert settings("--quiet", "--log-level", "error").log_level == "error"
    assert (settings("--quiet").progress, settings("--quiet").log_level) == ("off", "warning")
    assert settings("--progress").progress == "on" and settings().progress == "auto"
    assert settings("--realtime", "--live-timeout", "2", "--stats-interval", "0").realtime


def test_print_config_prints_a_config_file_of_the_command_line(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from streamer.cli import main
    from streamer.config import load_settings

    assert main(["--config", str(REPO / "config" / "webcam.toml"), "--topk", "5", "--print-config"]) == 0
    printed = tmp_path / "printed.toml"
    printed.write_text(capsys.readouterr().out)
    s = load_settings(printed)
    assert (s.topk, s.sources, s.batch, s.policy) == (5, ("webcam0",), 4, "latest")
    assert main(["--print-config"]) == 0
    assert capsys.readouterr().out.split("\n[", 1)[1] == (REPO / "config" / "default.toml").read_text().split(
        "\n[", 1)[1], "with no flags it prints the defaults, as config/default.toml has them"


def test_exit_past_stuck_captures_asks_the_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    import streamer.sources
    from streamer import cli

    exits: list[int] = []

    def fake_exit(code: int) -> None:
        exits.append(code)

    monkeypatch.setattr(cli.os, "_exit", fake_exit)
    monkeypatch.setattr(cli.logging, "shutdown", lambda: None)  # pytest's own log handlers stay open
    monkeypatch.setattr(streamer.sources, "busy_captures", lambda wait_s: 0)
    assert cli.exit_past_stuck_captures(3) == 3 and exits == []
    monkeypatch.setattr(streamer.sources, "busy_captures", lambda wait_s: 1)
    cli.exit_past_stuck_captures(1)
    assert exits == [1]
