"""The naive loop of the seed notebook, as a user writes it: one frame at a time, no threads, no batching.

    read a frame → cv2.resize → model(x) → copy the scores back → top-k → JSON → ZeroMQ PUB

Same model and backend family as the pipeline: ONNX Runtime on the CPU (a plain ``InferenceSession`` with
its default options), PyTorch on CUDA (the same exported model, fp32 eager, ``model(x.cuda()).cpu()``).
Messages follow the protocol (``pred.<source>`` with ``seq``, then ``eos.<source>``), so the same subscriber
process counts them. Runs in the benchmark's own process.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import zmq
from bench_pipeline_records import NaiveRun

from streamer.model.manifest import ModelManifest
from streamer.protocol import Prediction, TopK

SUBSCRIBE_WAIT_S = 20.0


def _cpu_model(model_path: Path) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {name: x[None]})[0][0]

    return run


def _cuda_model(model_path: Path) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    from streamer.model.torch_load import load_torch_model

    model = load_torch_model(model_path, precision="fp32", device="cuda").model.to("cuda")

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)[None].cuda()).cpu().numpy()[0]

    return run


def _wait_subscription(sock: zmq.Socket[bytes], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sock.poll(100, zmq.POLLIN):
            msg = sock.recv()
            if msg[:1] == b"\x01":
                return True
    return False


def run_naive(video: Path, model_path: Path, device: Literal["cpu", "cuda"], endpoint: str,
              source: str = "naive", max_frames: int = 0, topk: int = 3) -> NaiveRun:
    """Run the loop over ``video``, publishing on ``endpoint`` (bound here); returns frames and seconds (what
    the subscriber counted is the caller's to add)."""
    manifest = ModelManifest.from_onnx(model_path)
    h, w = manifest.input_hw
    infer = _cuda_model(model_path) if device == "cuda" else _cpu_model(model_path)
    infer(np.zeros((h, w, 3), np.uint8))  # the first call allocates; a user's loop would pay it once too
    ctx = zmq.Context()
    sock = ctx.socket(zmq.XPUB)
    sock.setsockopt(zmq.LINGER, 5000)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.bind(endpoint)
    try:
        if not _wait_subscription(sock, SUBSCRIBE_WAIT_S):
            raise RuntimeError(f"naive loop: no subscriber on {endpoint} within {SUBSCRIBE_WAIT_S:.0f} s")
        cap = cv2.VideoCapture(str(video))
        topic = f"pred.{source}".encode()
        labels = manifest.labels
        k = min(topk, len(labels))
        n = 0
        t0 = time.perf_counter()
        while not max_frames or n < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            capture = time.time()
            x = cv2.resize(frame, (w, h))
            scores = infer(x)
            top = np.argsort(-scores)[:k]
            pred = Prediction(source, n, capture,
                              tuple(TopK(int(i), labels[i], float(np.clip(scores[i], 0, 1))) for i in top),
                              manifest.model_id, publish_time=time.time())
            payload = pred.to_dict()
            payload["seq"] = n
            sock.send_multipart([topic, json.dumps(payload).encode()])
            n += 1
        elapsed = time.perf_counter() - t0
        cap.release()
        eos = {"v": 1, "type": "eos", "source": source, "frames": n, "reason": "end",
               "publish_ts": time.time(), "seq": 0}
        sock.send_multipart([f"eos.{source}".encode(), json.dumps(eos).encode()])
    finally:
        sock.close()
        ctx.term()
    return NaiveRun(n, round(elapsed, 4), device)
