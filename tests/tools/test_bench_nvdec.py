"""tools/bench.py nvdec: its targets from records (the measuring needs a GPU host: tools/gpu_nvdec.sh)."""

from __future__ import annotations

import bench_nvdec as b
from bench_common import Machine
from bench_pipeline_records import Delivery, Histogram, Percentiles, StreamerRun


def streamer(fps: float, cpu_ms: float, frames: int = 1000) -> StreamerRun:
    delivery = Delivery(received=frames, unique=frames, missed=0, complete=True, duplicates=0, out_of_order=0,
                        eos_frames=frames, dropped_by_policy=0, latency_ms=Percentiles(1.0, 2.0, 3.0, 4.0),
                        recv_latency_ms=Percentiles(), latency_hist=Histogram.of([1.0]), fps=fps)
    return StreamerRun(label="x", sources=1, command="", env={}, rc=0, subscriber_rc=0, wall_s=1.0,
                       expected=frames, delivery=delivery, cpu_ms_per_frame=cpu_ms)


def test_targets_are_ratios_of_the_runs_side_by_side() -> None:
    one = b.Row("1080p", "clip", 1, 795, naive_fps=300.0,
                streamer=(b.Run("cpu", streamer(700, 2.0), {"cpu": 1}), b.Run("nvdec", streamer(1400, 0.4),
                                                                           {"nvdec": 1})))
    eight = b.Row("8x1080p", "clip", 8, 795,
                  streamer=(b.Run("cpu", streamer(1400, 2.0), {"cpu": 8}),
                            b.Run("nvdec", streamer(3600, 0.3), {"nvdec": 8})))
    up = b.Startup("torch", 6.0, 4.2, 3.5, 0.4, 0)
    result = b.NvdecResult(Machine.probe(()), "torch", 64, 3, rows=(one, eight), startup=(up,))
    got = {t.name: (round(t.value, 3) if t.value is not None else None, t.met) for t in b.targets(result)}
    assert got["nvdec_vs_cpu_streamer[1080p]"] == (2.0, True)
    assert got["nvdec_vs_naive[1080p]"] == (round(1400 / 300, 3), True)
    assert got["aggregate_fps[8x1080p]"] == (3600.0, True)
    assert got["nvdec_vs_cpu_streamer[8x1080p]"] == (round(3600 / 1400, 3), True)
    assert got["cpu_cost[1080p]"] == (0.2, True) and got["cpu_cost[8x1080p]"] == (0.15, True)
    assert got["first_prediction_s[torch]"] == (4.2, False)
    assert b.NvdecResult.from_dict(result.to_dict()) == result  # the JSON round-trips


def test_the_torch_start_up_target_is_the_bridged_run_and_notes_the_one_without() -> None:
    bridged = b.Startup("torch", 5.5, 1.4, 4.9, 0.3, 0, "auto", 4.9, "shapes_cnn@x/onnxruntime", 30)
    waited = b.Startup("torch", 5.6, 5.2, 5.1, 0.3, 0, "off")
    ort = b.Startup("onnxruntime", 1.5, 1.3, 1.1, 0.3, 0)
    result = b.NvdecResult(Machine.probe(()), "torch", 64, 3, startup=(waited, bridged, ort))
    (target,) = [t for t in b.targets(result) if t.name == "first_prediction_s[torch]"]
    assert (target.value, target.met) == (1.4, True)
    assert "hand-over at 4.90 s" in target.note and "--fast-start off: 5.20 s" in target.note
    assert b.NvdecResult.from_dict(result.to_dict()) == result
    b.print_tables(result)  # every record prints (ONNX Runtime without a bridge too)
