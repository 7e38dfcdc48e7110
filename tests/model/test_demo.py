"""The demo clip: deterministic, readable by OpenCV, classified by the default model as the pipeline would."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from streamer.model import demo, shapes
from streamer.preprocess import resize_into

MODEL = Path(__file__).resolve().parents[2] / "engines" / "shapes_cnn.onnx"


def read_resized(video: Path, hw: tuple[int, int]) -> np.ndarray:
    """Every frame through cv2.VideoCapture and streamer.preprocess.resize_into, like the batcher does."""
    cap = cv2.VideoCapture(str(video))
    assert cap.isOpened()
    frames = []
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            out = np.empty((*hw, 3), np.uint8)
            resize_into(frame, out)
            frames.append(out)
    finally:
        cap.release()
    return np.stack(frames)


def test_default_model_classifies_the_demo_clip():
    video, truth = demo.ensure_demo_clip()
    assert video.parent == demo.DEFAULT_DIR and video.stat().st_size < 3e6
    labels = np.array(demo.load_truth(truth))
    frames = read_resized(video, (32, 32))
    assert len(frames) == len(labels) == demo.DemoSpec().frames
    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    predicted = session.run(["scores"], {"images": frames})[0].argmax(1)
    accuracy = float((predicted == labels).mean())
    assert accuracy >= 0.95, f"demo accuracy {accuracy:.3f}"


def test_truth_file_matches_the_schedule():
    _, truth = demo.ensure_demo_clip()
    labels = demo.load_truth(truth)
    assert labels == demo.label_schedule(demo.DemoSpec())
    assert set(labels) == set(range(len(shapes.LABELS)))  # every class appears
    segment = demo.DemoSpec().segment
    assert all(len(set(labels[i:i + segment])) == 1 for i in range(0, len(labels), segment))


def test_rendering_is_deterministic_and_moves():
    spec = demo.DemoSpec(frames=12, size=96, segment=6)
    first = list(demo.render_frames(spec))
    second = list(demo.render_frames(spec))
    assert [lab for lab, _ in first] == [lab for lab, _ in second]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(first, second, strict=True))
    assert first[0][1].shape == (96, 96, 3) and first[0][1].dtype == np.uint8
    assert not np.array_equal(first[0][1], first[1][1])  # the shape (or texture) moves between frames


def test_ensure_renders_a_missing_clip(tmp_path):
    video, truth = demo.ensure_demo_clip(tmp_path)
    assert video.is_file() and truth.is_file()
    cap = cv2.VideoCapture(str(video))
    try:
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == demo.DemoSpec().frames
        assert int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == demo.DemoSpec().size
    finally:
        cap.release()
    assert not list(tmp_path.glob(".*tmp*"))
