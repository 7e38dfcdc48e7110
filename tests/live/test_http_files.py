"""Recordings over HTTP through OpenCV's FFmpeg backend: a progressive download (an AVI from a static web
server) and an HLS VOD playlist. With ``#policy=block`` every frame arrives, in order, and the source ends
at the recording's announced length with eos ``end`` — it is not taken for a camera that dropped out."""

from __future__ import annotations

from pathlib import Path

import pytest
from recording_sink import RecordingSink
from servers import StaticHttpServer, ffmpeg_available, make_hls, make_mjpeg_clip

from streamer.config import load_settings
from streamer.pipeline import Pipeline


def play(model: Path, url: str) -> tuple[RecordingSink, Pipeline]:
    s = load_settings(None, {"sources": (f"{url}#policy=block",), "model": str(model), "bind": "none",
                             "backend": "onnxruntime", "threads": 1, "batch": 8, "stats_interval_s": 0.0,
                             "live_timeout_s": 5.0})
    sink = RecordingSink()
    pipeline = Pipeline(s, sinks=[sink])
    try:
        pipeline.run()
    finally:
        pipeline.close()
    return sink, pipeline


@pytest.mark.parametrize("kind", ["progressive", "hls"])
def test_a_recording_over_http_plays_to_its_end(kind: str, color_model: Path, vtest: Path,
                                                tmp_path: Path) -> None:
    if why := ffmpeg_available():
        pytest.skip(why)
    www = tmp_path / "www"
    www.mkdir()
    if kind == "progressive":
        name = make_mjpeg_clip(vtest, www / "clip.avi", (160, 120), frames=120).name
    else:
        name = make_hls(vtest, www / "hls", frames=120).relative_to(www).as_posix()
    with StaticHttpServer(www) as server:
        sink, pipeline = play(color_model, server.url(name))
    source = pipeline.sources[0]
    frames = [e.frame for e in sink.preds(source.name)]
    assert frames == list(range(120))
    (end,) = sink.select("end", source.name)
    assert (end.frame, end.state) == (120, "end")
    assert source.reconnects == 0 and source.losses == 0 and source.kind == "stream"
    assert sink.health_states(source.name) == ["up"]
