"""``--annotate``: real clips made here, the real CLI, the videos decoded again by OpenCV and by ffprobe."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from servers import MjpegServer
from service_helpers import colour_jpegs
from streamer_helpers import COLOR_LABELS, color_sequence, read_jsonl, run_cli, write_video

from media import ffprobe_count, require_ffmpeg
from streamer.outputs import ANNOTATION_MARK, is_own_annotation
from streamer.protocol import Prediction, TopK
from streamer.view import draw
from streamer.view.annotate import CODECS, SourceVideo, trailer


def decode(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def first_frame(path: Path) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    ok, frame = cap.read()
    cap.release()
    assert ok, path
    return frame


def region_diff(a: np.ndarray, b: np.ndarray, box: tuple[int, int, int, int]) -> float:
    x0, y0, x1, y1 = box
    return float(np.abs(a[y0:y1, x0:x1].astype(np.int16) - b[y0:y1, x0:x1].astype(np.int16)).mean())


def summary_of(path: Path) -> dict:
    return json.loads(path.read_text())


def test_one_source_one_video_a_frame_per_prediction_with_its_label_drawn(tmp_path: Path,
                                                                        color_model: Path) -> None:
    require_ffmpeg()
    colors = color_sequence(60, seed=3)
    clip = write_video(tmp_path / "clip.avi", colors, size=(64, 48))
    out, preds, summary = tmp_path / "annotated.mp4", tmp_path / "preds.jsonl", tmp_path / "summary.json"
    r = run_cli("--source", str(clip), "--model", str(color_model), "--bind", "none", "--annotate", str(out),
                "--output", str(preds), "--summary-json", str(summary))
    assert r.returncode == 0, r.stderr
    rows = read_jsonl(preds)
    assert [row["frame"] for row in rows] == list(range(60))
    frames = decode(out)
    assert len(frames) == len(rows)  # one video frame per prediction
    count = ffprobe_count(out)
    assert count is not None and count.frames == len(rows)  # FFmpeg's own decoder agrees
    assert is_own_annotation(out) and out.read_bytes().endswith(ANNOTATION_MARK)
    report = summary_of(summary)["extra"]["annotate"]
    assert [(v["source"], v["frames"], v["dropped"]) for v in report] == [("clip", 60, 0)]
    assert "--annotate: clip → " in r.stderr and report[0]["codec"] in r.stderr

    # the first frame: the clip's own first frame (scaled as annotation scales it) plus the overlay
    annotated = frames[0]
    plain = draw.fit(first_frame(clip))
    assert annotated.shape == plain.shape == (48 * 8, 64 * 8, 3)  # 64 px wide → ×8 for the text
    pred = Prediction.from_dict(rows[0])
    assert pred.topk[0].label == colors[0]
    layout = draw.Layout(plain.shape[1], len(pred.topk))
    label_box = layout.label_box(0)
    h, w = plain.shape[:2]
    away = (w // 2, h // 2, w, h)  # the lower right quarter: no overlay there
    assert region_diff(annotated, plain, away) < 6, "not the clip's first frame"
    assert region_diff(annotated, plain, label_box) > 25, "nothing drawn where the label goes"
    expected, wrong = plain.copy(), plain.copy()
    draw.draw(expected, pred, None, None)
    other = next(label for label in COLOR_LABELS if label != pred.topk[0].label)
    renamed = (TopK(pred.topk[0].index, other, pred.topk[0].score), *pred.topk[1:])
    misnamed = Prediction(pred.source, pred.frame_index, pred.capture_time, renamed, pred.model_id)
    draw.draw(wrong, misnamed, None, None)
    # where the two labels' pixels differ, the video has the right one's (up to the codec's loss)
    x0, y0, x1, y1 = label_box
    box = (slice(y0, y1), slice(x0, x1))
    a, e, m = (im[box].astype(np.int16) for im in (annotated, expected, wrong))
    text = np.abs(e - m).max(axis=2) > 60
    assert text.sum() > 50, "the two labels look alike"
    right_diff = float(np.abs(a - e)[text].mean())
    wrong_diff = float(np.abs(a - m)[text].mean())
    print(f"label pixels: {int(text.sum())}; mean difference to the right label {right_diff:.1f}, to a wrong "
          f"one {wrong_diff:.1f}")
    assert right_diff < 40 and wrong_diff > 2 * right_diff, (right_diff, wrong_diff)


def test_several_sources_of_every_kind_one_video_each_in_a_directory(tmp_path: Path,
                                                                    color_model: Path) -> None:
    """A live MJPEG camera on loopback, two files (one of them dropping frames by its policy, as a live
    source does) and an image folder with pictures of two sizes; the directory is made by the run."""
    a = write_video(tmp_path / "a.avi", color_sequence(40, seed=1))
    b = write_video(tmp_path / "b.avi", color_sequence(200, seed=2), size=(320, 240))
    images = tmp_path / "imgs"
    images.mkdir()
    for i, name in enumerate(color_sequence(7, seed=4)):
        image = np.empty((48, 64, 3) if i % 2 else (96, 100, 3), np.uint8)
        image[:] = {"blue": (255, 0, 0), "green": (0, 255, 0), "red": (0, 0, 255)}[name]
        cv2.imwrite(str(images / f"{i:03d}.png"), image)
    out, preds, summary = tmp_path / "annotated", tmp_path / "preds.jsonl", tmp_path / "summary.json"
    with MjpegServer(colour_jpegs(color_sequence(30, seed=9)), fps=25.0) as camera:
        r = run_cli("--source", camera.url(), "--source", str(a), "--source", f"{b}#policy=latest",
                    "--source", str(images), "--max-frames", "40", "--model", str(color_model), "--bind",
                    "none", "--annotate", str(out), "--output", str(preds), "--summary-json", str(summary))
    assert r.returncode == 0, r.stderr
    rows = read_jsonl(preds)
    cam = next(row["source"] for row in rows if row["source"] not in ("a", "b", "imgs"))
    per_source = {name: [row for row in rows if row["source"] == name] for name in (cam, "a", "b", "imgs")}
    assert len(per_source["a"]) == 40 and len(per_source["imgs"]) == 7 and per_source[cam]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{name}.mp4" for name in per_source)
    report = {v["source"]: v for v in summary_of(summary)["extra"]["annotate"]}
    for name, source_rows in per_source.items():
        frames = decode(out / f"{name}.mp4")
        assert report[name]["frames"] == len(frames), name
        if name in ("b", cam):  # live policies: frames the encoder could not take are dropped, and counted
            assert len(frames) + report[name]["dropped"] == len(source_rows), name
        else:  # policy block: lossless
            assert len(frames) == len(source_rows) and report[name]["dropped"] == 0, name
    sizes = {f.shape for f in decode(out / "imgs.mp4")}
    assert len(sizes) == 1  # the folder's pictures, scaled to the first one's size


def run_refused(*args: str) -> str:
    r = run_cli(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamer: error: "), r.stderr
    return lines[0]


def test_a_users_file_is_never_overwritten_and_its_own_video_is(tmp_path: Path, color_model: Path) -> None:
    clip = write_video(tmp_path / "clip.avi", color_sequence(12, seed=5))
    other = write_video(tmp_path / "other.avi", color_sequence(12, seed=6))
    base = ["--model", str(color_model), "--bind", "none"]
    precious = tmp_path / "holiday.mp4"
    precious.write_bytes(b"not made by streamer")
    line = run_refused("--source", str(clip), *base, "--annotate", str(precious))
    assert "exists and is not a video streamer annotated" in line
    assert precious.read_bytes() == b"not made by streamer"
    before = clip.read_bytes()
    assert "is the input" in run_refused("--source", str(clip), *base, "--annotate", str(clip))
    assert clip.read_bytes() == before
    line = run_refused("--source", str(clip), "--source", str(other), *base, "--annotate",
                       str(tmp_path / "both.mp4"))
    assert "the run has 2 sources" in line and "give a directory" in line
    assert "not a video container" in run_refused("--source", str(clip), *base, "--annotate",
                                                  str(tmp_path / "out.txt"))
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "clip.mp4").write_bytes(b"someone else's")
    line = run_refused("--source", str(clip), "--source", str(other), *base, "--annotate", str(folder))
    assert "--annotate (clip)" in line and "exists and is not" in line
    assert not (folder / "other.mp4").exists()
    assert "does not exist" in run_refused("--source", str(clip), *base, "--annotate",
                                           str(tmp_path / "no" / "such" / "dir") + "/")

    # its own video is replaced by the next run (and only at the end: the old one stays until then)
    out = tmp_path / "annotated.mp4"
    for _ in range(2):
        r = run_cli("--source", str(clip), *base, "--annotate", str(out))
        assert r.returncode == 0, r.stderr
        assert len(decode(out)) == 12 and is_own_annotation(out)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left


@pytest.mark.parametrize("suffix", sorted(CODECS))
def test_the_trailer_keeps_every_container_valid(tmp_path: Path, suffix: str) -> None:
    """The mark appended to a finished video: FFmpeg still reads every frame, without complaint."""
    require_ffmpeg()
    path = tmp_path / f"v{suffix}"
    fourcc = CODECS[suffix][-1]  # the fallback codec, which every OpenCV build has
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25, (64, 48))
    assert writer.isOpened()
    for i in range(10):
        writer.write(np.full((48, 64, 3), i * 20, np.uint8))
    writer.release()
    assert not is_own_annotation(path)
    with open(path, "ab") as f:
        f.write(trailer(suffix))
    assert is_own_annotation(path)
    count = ffprobe_count(path)
    assert count is not None and count.frames == 10
    assert len(decode(path)) == 10


def test_a_live_sources_video_drops_what_the_encoder_cannot_take_and_counts_it(tmp_path: Path) -> None:
    image = np.random.default_rng(0).integers(0, 255, (1080, 1920, 3), np.uint8)
    pred = Prediction("cam", 0, time.time(), (TopK(0, "blue", 0.9),), "m", publish_time=time.time())
    live = SourceVideo("cam", tmp_path / "cam.mp4", ("mp4v",), 30.0, lossless=False, copy_frames=False,
                       queue_frames=1)
    for _ in range(60):  # far faster than 1080p frames encode: most find the queue full
        live.put(pred, image)
    report = live.finish()
    assert report.frames + report.dropped == 60 and report.dropped > 0 and not report.error
    assert len(decode(tmp_path / "cam.mp4")) == report.frames

    lossless = SourceVideo("clip", tmp_path / "clip.mp4", ("mp4v",), 30.0, lossless=True, copy_frames=True,
                           queue_frames=1)
    for _ in range(20):
        lossless.put(pred, image)
    report = lossless.finish()
    assert (report.frames, report.dropped) == (20, 0)
    assert len(decode(tmp_path / "clip.mp4")) == 20


@pytest.mark.timeout(180)
def test_sources_added_to_a_service_get_their_own_video_unless_their_file_is_taken(tmp_path: Path,
                                                                                   color_model: Path) -> None:
    """``--keep-running --annotate DIR``: a camera given at start and one added over HTTP each get a video;
    one added whose ``<name>.mp4`` is someone else's file is streamed but not annotated, and the file kept."""
    import urllib.request

    from servers import free_port
    from service_helpers import Collector, StreamerProcess

    out = tmp_path / "annotated"
    out.mkdir()
    (out / "door.mp4").write_bytes(b"someone else's")
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    frames = colour_jpegs(color_sequence(30, seed=12))
    with MjpegServer(frames, fps=25.0) as cam1, MjpegServer(frames, fps=25.0) as cam2, \
            MjpegServer(frames, fps=25.0) as cam3:
        collector = Collector(endpoint)
        streamer = StreamerProcess("--keep-running", "--source", cam1.url(), "--model", str(color_model),
                                   "--bind", endpoint, "--http", "127.0.0.1:0", "--annotate", str(out),
                                   "--stats-interval", "0")
        try:
            collector.wait("the first camera's predictions", lambda: collector.select("pred"))
            for name, cam in (("yard", cam2), ("door", cam3)):
                body = json.dumps({"source": cam.url(), "name": name}).encode()
                request = urllib.request.Request(streamer.url + "/sources", method="POST", data=body,
                                                 headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=30) as r:
                    assert r.status == 201
            collector.wait("predictions of every camera",
                           lambda: all(len(collector.preds(n)) >= 20 for n in ("yard", "door"))
                           and len(collector.select("pred")) >= 60)
            streamer.wait_line(r"source door is not annotated: .*door\.mp4.* exists and is not")
        finally:
            assert streamer.interrupt() == 0
            collector.close()
    assert (out / "door.mp4").read_bytes() == b"someone else's"
    first = next(m.payload["source"] for m in collector.select("pred") if m.payload["source"] not in
                 ("yard", "door"))
    for name in (first, "yard"):
        frames_written = len(decode(out / f"{name}.mp4"))
        published = len(collector.preds(name))
        assert 0 < frames_written <= published, name
