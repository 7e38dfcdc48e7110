"""``--device``: parsing, CUDA_VISIBLE_DEVICES narrowed to the chosen GPU, and the backends it allows."""

from __future__ import annotations

import pytest

from streamer import devices
from streamer.backends.select import choose
from streamer.config import Settings
from streamer.devices import Device, parse_device, use_device
from streamer.errors import BackendUnavailableError, ConfigError


def test_device_values() -> None:
    assert parse_device("auto") == Device("auto")
    assert parse_device("CPU") == Device("cpu")
    assert parse_device("cuda") == Device("cuda", 0)
    assert str(parse_device("cuda:3")) == "cuda:3"
    for bad in ("gpu", "cuda:", "cuda:-1", "cuda:x"):
        with pytest.raises(ConfigError, match="unknown device"):
            parse_device(bad)
    with pytest.raises(ConfigError, match=r"--device / \[model\] device"):
        Settings(device="gpu1")


@pytest.fixture
def no_cuda_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "cuda_started", lambda: False)


def test_cuda_n_counts_the_visible_gpus(monkeypatch: pytest.MonkeyPatch, no_cuda_yet: None) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert use_device(parse_device("cuda:1")) == "cuda:1 = GPU 3 (CUDA_VISIBLE_DEVICES=3)"
    assert devices.os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert use_device(parse_device("cuda:0")) == "cuda:0 = GPU 3 (CUDA_VISIBLE_DEVICES=3)"  # now the only one
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaaa,GPU-bbbb")
    use_device(parse_device("cuda:1"))
    assert devices.os.environ["CUDA_VISIBLE_DEVICES"] == "GPU-bbbb"
    assert use_device(parse_device("auto")) is None and use_device(parse_device("cpu")) is None


def test_a_gpu_that_is_not_there_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch,
                                                     no_cuda_yet: None) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(ConfigError, match=r"cuda:2: no such GPU \(2 visible \(CUDA_VISIBLE_DEVICES=0,1\)"):
        use_device(parse_device("cuda:2"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(devices, "visible_gpus", lambda: ["0", "1", "2"])  # the driver's list: 3 GPUs
    with pytest.raises(ConfigError, match=r"cuda:3: no such GPU \(3 visible\)"):
        use_device(parse_device("cuda:3"))


def test_on_a_machine_without_a_gpu_cuda_is_a_one_line_error(tmp_path) -> None:
    from streamer_helpers import run_cli

    done = run_cli("--device", "cuda:0", "--source", "demo", "--bind", "none", "--backend", "auto",
                   env={"CUDA_VISIBLE_DEVICES": ""} if devices.visible_gpus() else None)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamer: error: --device cuda:0"), done.stderr


def test_cuda_already_started_on_other_gpus_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setattr(devices, "cuda_started", lambda: True)
    with pytest.raises(ConfigError, match="CUDA has already started in this process"):
        use_device(parse_device("cuda:1"))


def test_the_device_decides_which_backends_may_run() -> None:
    assert choose("auto", device="cpu").name == "onnxruntime"
    with pytest.raises(ConfigError, match="runs on a GPU, not on --device cpu"):
        choose("torch", device="cpu")
    with pytest.raises(ConfigError, match="runs on the CPU, not on --device cuda:0"):
        choose("onnxruntime", device="cuda:0")


def test_a_gpu_device_never_falls_back_to_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamer.backends import select

    monkeypatch.setattr(select, "probe", lambda name: None if name == "onnxruntime" else "no GPU here")
    with pytest.raises(BackendUnavailableError, match="--device cuda:1: no GPU backend can run here"):
        choose("auto", device="cuda:1")
    assert choose("auto").name == "onnxruntime"


def test_a_device_written_in_capitals_is_still_a_gpu_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--device CUDA:0`` passes the settings' check (parse_device lower-cases it); the selection must read
    it the same way, not as an unknown kind that may fall back to ONNX Runtime on the CPU."""
    from streamer.backends import select

    assert Settings(device=" CUDA:1").device == " CUDA:1"  # the raw text reaches the selection
    monkeypatch.setattr(select, "probe", lambda name: None if name == "onnxruntime" else "no GPU here")
    with pytest.raises(BackendUnavailableError, match="--device  CUDA:1: no GPU backend can run here"):
        choose("auto", device=" CUDA:1")
    with pytest.raises(ConfigError, match="runs on the CPU, not on --device Cuda"):
        choose("onnxruntime", device="Cuda")
    assert choose("auto", device="CPU").name == "onnxruntime"
    with pytest.raises(ConfigError, match="runs on a GPU, not on --device cpu"):
        choose("torch", device="CPU")


def test_a_pycuda_context_counts_as_cuda_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """Making the primary context runs the cached driver probe first, which is what cuda_started reads."""
    from streamer import cuda_env
    from streamer.gpu import context

    def no_pycuda() -> None:
        raise BackendUnavailableError("no pycuda (test)", "pip install 'streamer[cuda]'")

    for module in ("torch", "pycuda.autoinit"):  # CUDA started by other means is not what this test is about
        monkeypatch.delitem(devices.sys.modules, module, raising=False)
    monkeypatch.setattr(context, "driver", no_pycuda)
    cuda_env.probe_cuda.cache_clear()
    assert not devices.cuda_started()
    with pytest.raises(BackendUnavailableError, match="no pycuda"):
        context.PrimaryContext(0)
    assert devices.cuda_started()
