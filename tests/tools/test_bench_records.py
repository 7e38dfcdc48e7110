"""The benchmarks' result records: validated when made, the same after a trip through JSON, and the targets
and tables computed from them alone."""

from __future__ import annotations

import json

import pytest
from bench_common import Machine, Target, ratio
from bench_engine import EXEC_UINT8, TORCH_EAGER, TORCH_FAST
from bench_engine import targets as engine_targets
from bench_engine_records import CopyRate, EngineResult, ModelInfo, Point
from bench_loop import LoopStats
from bench_pipeline_records import (
    DecodeRun,
    Delivery,
    EngineOnly,
    Histogram,
    LiveRun,
    NaiveRun,
    OfflineRow,
    Percentiles,
    PipelineResult,
    RssWindow,
    StreamerRun,
    Window,
)
from bench_pipeline_report import print_tables, targets

MACHINE = Machine(cpus=2, platform="test", cpu_model="a CPU", versions={"numpy": "2"})


def _loop(images_per_s: float, batch: int = 16, slots: int = 2, cpu_ms_per_image: float = 3.0) -> LoopStats:
    batches = 100
    seconds = batches * batch / images_per_s
    return LoopStats(batch, slots, batches, seconds, cpu_ms_per_image * batches * batch / 1e3, seconds, 0.0)


def _delivery(received: int, p99: float, fps: float, windows: tuple[Window, ...] = ()) -> Delivery:
    lat = Percentiles(p99 / 2, p99 * 0.9, p99, p99 * 1.1)
    return Delivery(received=received, unique=received, missed=0, complete=True, duplicates=0,
                    out_of_order=0, eos_frames=received, dropped_by_policy=0, latency_ms=lat,
                    recv_latency_ms=lat, latency_hist=Histogram.of([p99] * received), fps=fps,
                    windows=windows)


def _streamer(label: str, frames: int, fps: float, expected: int | None, rss: RssWindow | None = None,
              windows: tuple[Window, ...] = ()) -> StreamerRun:
    return StreamerRun(label=label, sources=1, command="-m streamer.cli", env={}, rc=0, subscriber_rc=0,
                       wall_s=2.0, expected=expected, delivery=_delivery(frames, 20.0, fps, windows), rss=rss)


def _decode(fps: float, cpu_ms: float = 1.0) -> DecodeRun:
    return DecodeRun(frames=795, seconds=795 / fps, threading="pipeline", decoder_threads=None,
                     per_source_fps=(fps,), cpu_ms_per_frame=cpu_ms, ms_per_frame_per_source=1e3 / fps)


def _pipeline_result() -> PipelineResult:
    windows = (Window(0, 0.0, 200, Percentiles(5.0, 8.0, 9.0, 10.0)),
               Window(1, 20.0, 200, Percentiles(5.0, 8.0, 10.0, 11.0)))
    live = LiveRun("vtest_1080p_live.ffconcat", 30.0, 60.0, 20.0,
                   _streamer("live", 1800, 30.0, None, RssWindow(500, 181.1, 180.0, 181.1, 1.006, 40.0),
                             windows))
    rows = (
        OfflineRow("vtest", "vtest.avi", 1, 795, decode=_decode(2000.0), naive=NaiveRun(795, 2.5, "cpu"),
                   streamer=_streamer("streamer-vtest", 795, 450.0, 795)),
        OfflineRow("1080p", "vtest_1080p.mp4", 1, 795, decode=_decode(260.0, 7.0),
                   naive=NaiveRun(795, 6.0, "cpu"), streamer=_streamer("streamer-1080p", 795, 190.0, 795)),
        OfflineRow("4x1080p", "vtest_1080p.mp4", 4, 795, decode=_decode(360.0, 5.0),
                   streamer=_streamer("streamer-4x1080p", 3180, 210.0, 3181)),
    )
    result = PipelineResult(machine=MACHINE, device="cpu", backend="onnxruntime", model="m.onnx", batch=16,
                            slots=2, threads=0, sections=("decode", "engine", "naive", "streamer", "live"),
                            media={"vtest": "vtest.avi"}, goals={"live_drift": 1.2},
                            engine=EngineOnly("onnxruntime", "m/onnxruntime", 2, 1, _loop(665.0)),
                            offline=rows, live=live)
    return result.replace(targets=tuple(targets(result)))


def test_pipeline_targets_come_from_the_records() -> None:
    result = _pipeline_result()
    by_name = {t.name: t for t in result.targets}
    vtest = by_name["streamer_vs_limit[vtest]"]
    assert vtest.value == pytest.approx(450.0 / 665.0) and vtest.met is False
    assert "2 cores shared" in vtest.note  # decode 1.0 + engine 3.0 CPU-ms per frame on 2 cores
    assert by_name["streamer_vs_limit[1080p]"].value == pytest.approx(190.0 / 260.0)
    naive = by_name["streamer_vs_naive[1080p]"]
    assert naive.value == pytest.approx(190.0 / 132.5) and naive.met is None and naive.verdict == "info"
    assert by_name["live_drift"].value == pytest.approx(10.0 / 9.0) and by_name["live_drift"].met is True
    assert by_name["live_p99_ms"].applies is False
    lost = by_name["zero_lost"]  # 4x1080p: one frame that never arrived
    assert lost.value == 1.0 and lost.met is False
    rss = by_name["rss_flat"]
    assert rss.value == pytest.approx(1.006) and rss.met is True and "live run" in rss.description


def test_pipeline_result_survives_json() -> None:
    result = _pipeline_result()
    doc = json.loads(json.dumps(result.to_dict()))
    assert doc["offline"][0]["streamer_fps"] == pytest.approx(450.0)  # derived figures are in the JSON
    assert doc["offline"][2]["streamer"]["lost"] == 1
    assert doc["live"]["frames_total"] == 1800 and doc["engine"]["images_per_s"] == pytest.approx(665.0)
    assert doc["targets"][0]["met"] is False
    again = PipelineResult.from_dict(doc)
    assert again == result


def test_pipeline_tables_print_from_the_records(capsys: pytest.CaptureFixture[str]) -> None:
    print_tables(_pipeline_result())
    out = capsys.readouterr().out
    assert "== offline throughput" in out and "== targets (issue 5)" in out
    line = next(x for x in out.splitlines() if x.startswith("4x1080p "))
    assert line.split()[1:5] == ["360", "665", "-", "210"]  # decode, engine, naive (not run), streamer


@pytest.mark.parametrize("make", [
    lambda: Percentiles(p50=5.0, p95=4.0),
    lambda: Histogram((0.1, 1.0), (1, 2)),
    lambda: Target("t", "t", float("nan"), 1.0),
    lambda: Target("t", "t", 1.0, 1.0, op="=="),  # type: ignore[arg-type]
    lambda: _decode(100.0).replace(seconds=0.0),
    lambda: OfflineRow("x", "x", 0, 1),
    lambda: _delivery(10, 5.0, 1.0).replace(unique=11),
    lambda: Point("executor", "seed", EXEC_UINT8, 64, 1.0, 1.0),  # an executor point without loop figures
])
def test_bad_figures_are_refused_where_they_are_made(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        make()


def test_from_dict_checks_what_it_reads() -> None:
    doc = _pipeline_result().to_dict()
    doc["device"] = "tpu"
    with pytest.raises(ValueError, match="device"):
        PipelineResult.from_dict(doc)


def _engine_result() -> EngineResult:
    models = (ModelInfo("seed", "seed.onnx", "random", (32, 32), 10),)
    points = (
        Point("engine", "seed", TORCH_FAST, 64, 60000.0, 64 / 60.0, latency_ms_median=1.0),
        Point("engine", "seed", TORCH_FAST, 1, 5000.0, 0.2, latency_ms_median=0.2),
        Point("engine", "seed", TORCH_EAGER, 1, 1000.0, 1.0, latency_ms_median=1.0),
        Point.of_loop("seed", EXEC_UINT8, _loop(30000.0, 64, 1)),
        Point.of_loop("seed", EXEC_UINT8, _loop(57000.0, 64, 2)),
    )
    h2d = (CopyRate("64 MiB", 64 << 20, "H2D", "pinned", "async", 25.0, 24.0),
           CopyRate("64 MiB", 64 << 20, "H2D", "pageable", "sync", 10.0, 9.0),
           CopyRate("64 MiB", 64 << 20, "D2H", "pinned", "async", 26.0, 25.0))
    return EngineResult(MACHINE, 64, models, points, h2d, tuple(engine_targets(models, points, h2d, 64)))


def test_engine_targets_and_json() -> None:
    result = _engine_result()
    by_name = {t.name: t for t in result.targets}
    assert by_name["exec2_vs_engine[seed]"].value == pytest.approx(57000 / 60000)
    assert by_name["exec2_vs_exec1[seed]"].value == pytest.approx(1.9) and "copies" in by_name[
        "exec2_vs_exec1[seed]"].note
    assert by_name["graphs_fp16_vs_eager_fp32[seed]"].value == pytest.approx(5.0)
    assert by_name["pinned_vs_best_h2d"].value == pytest.approx(1.0)  # D2H does not count as the best H2D
    assert result.find("executor", "seed", EXEC_UINT8, 64, slots=2) is result.points[4]
    assert result.points[4].label == f"{EXEC_UINT8}, 2 slots"
    doc = json.loads(json.dumps(result.to_dict()))
    assert doc["points"][4]["loop"]["slots"] == 2 and doc["h2d"][0]["kind"] == "H2D pinned, async"
    assert EngineResult.from_dict(doc) == result


def test_ratio() -> None:
    assert ratio(2.0, 4.0) == 0.5
    assert ratio(None, 4.0) is None and ratio(1.0, 0.0) is None and ratio(1.0, None) is None
