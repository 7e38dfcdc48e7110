"""How the driver asks Ray for workers and what settings a worker's pipeline gets (the driver's logic alone;
Ray itself is tested in test_ray.py)."""

from __future__ import annotations

import pytest

from streamer.config import Settings
from streamer.scale.driver import Driver


class Cluster:
    """What the driver reads of a Ray cluster here: its resources."""

    def __init__(self, gpus: float) -> None:
        self.gpus = gpus

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": 16.0, "GPU": self.gpus}


@pytest.mark.parametrize("backend, device, gpus, wanted", [
    ("torch", "auto", 0, True),  # a GPU backend always asks for a GPU per worker
    ("tensorrt", "auto", 4, True),
    ("auto", "auto", 4, True),  # auto on a cluster with GPUs
    ("auto", "auto", 0, False),
    ("auto", "cpu", 4, False),
    ("onnxruntime", "auto", 4, False),
])
def test_a_gpu_backend_takes_one_gpu_per_worker(backend: str, device: str, gpus: float, wanted: bool) -> None:
    driver = Driver(Settings(workers=2, backend=backend, device=device))
    assert driver._wants_gpus(Cluster(gpus)) is wanted


def test_a_worker_runs_the_pipeline_less_what_the_driver_does() -> None:
    settings = Settings(workers=3, sources=("a.mp4", "b.mp4"), output="all.jsonl", summary_json="s.json",
                        http="8090", wait_subscribers=2, batch=8, worker_cpus=2.0, keep_running=True)
    driver = Driver(settings)
    cpu = Settings(**driver._worker_settings())
    driver_only = (cpu.sources, cpu.output, cpu.summary_json, cpu.bind, cpu.http, cpu.workers)
    assert driver_only == ((), "", "", "none", "none", 0)
    assert (cpu.batch, cpu.keep_running, cpu.threads, cpu.device) == (8, True, 2, "auto")
    driver.gpu_workers = True
    gpu = Settings(**driver._worker_settings())
    assert gpu.device == "cuda:0"  # the one GPU Ray made visible to that worker


def test_workers_must_be_at_least_one() -> None:
    from streamer.errors import ConfigError

    with pytest.raises(ConfigError, match="--workers N with N >= 1"):
        Driver(Settings())
