"""The results stage: completed slots → top-k → :class:`~streamer.protocol.Prediction` → sinks, in order.

One thread consumes the batcher's ordered outbox: for each submitted slot it waits for the executor to
complete it (no polling), turns its scores into predictions, hands them to the sinks and releases the slot;
for each ``SourceEnd`` it publishes the end of that source — after the source's last prediction, since the
outbox is in order.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamer.batching import BatchEvent, SourceEnd
from streamer.errors import StreamerError
from streamer.executors.base import Executor
from streamer.executors.contract import Slot
from streamer.metrics import AccuracyCheck, Metrics
from streamer.protocol import Prediction, TopK
from streamer.sinks import Sinks

log = logging.getLogger(__name__)


def eos_reason(end: SourceEnd) -> str:
    """Buffer close reason → protocol eos reason: end | error | stopped | removed."""
    if end.failed:
        return "error"
    if end.reason == "removed":
        return "removed"
    if end.reason in ("stopped", "max frames reached"):
        return "stopped"
    return "end"


def top_k(scores: np.ndarray, k: int) -> tuple[list[list[int]], list[list[float]]]:
    """Per row, the ``k`` best class indices (best first; ties keep the lower index) and their scores."""
    scores = np.clip(scores, 0.0, 1.0)
    idx = scores.argmax(axis=1)[:, None] if k == 1 else np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return idx.tolist(), np.take_along_axis(scores, idx, axis=1).tolist()


@dataclass(frozen=True)
class Labelling:
    """How scores become predictions: the model's labels, how many to publish, the id that goes with them."""

    labels: tuple[str, ...]
    topk: int
    model_id: str

    def __post_init__(self) -> None:
        if not 1 <= self.topk <= len(self.labels):
            raise ValueError(f"topk {self.topk} outside 1..{len(self.labels)}")


class ResultsStage:
    """The results thread. ``ends`` maps each ended source to its SourceEnd; ``batch_error`` is the first
    batch the engine failed on (``on_batch_error`` is called then, to stop the run); ``error`` a failure of
    this stage itself (a sink that cannot write)."""

    def __init__(self, executor: Executor[Any], sinks: Sinks, metrics: Metrics, labelling: Labelling,
                 accuracy: AccuracyCheck | None = None,
                 on_batch_error: Callable[[], None] | None = None,
                 on_end: Callable[[SourceEnd], None] | None = None,
                 on_picture: Callable[[Prediction, np.ndarray], None] | None = None,
                 model_id_of: Callable[[Slot], str] | None = None) -> None:
        """``on_end``: called after each source's end-of-stream went to the sinks; ``on_picture``: each
        prediction whose frame a viewer took (FrameTag.picture), with that image, after the sinks;
        ``model_id_of``: the id of the engine that made a slot's results, when it is not always
        ``labelling.model_id`` (a fast start's bridge, :mod:`streamer.executors.handover`)."""
        self.executor = executor
        self.model_id_of = model_id_of
        self.on_end = on_end
        self.on_picture = on_picture
        self.sinks = sinks
        self.metrics = metrics
        self.labelling = labelling
        self.accuracy = accuracy
        self.on_batch_error = on_batch_error
        self.ends: dict[str, SourceEnd] = {}
        self.error: BaseException | None = None
        self.batch_error: BaseException | None = None
        self.engine_s = 0.0  # summed over batches: seconds in the engine
        self.results_s = 0.0  # this thread's own work per batch: top-k, predictions, sinks
        self.batches = 0
        self.done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, outbox: queue.Queue[BatchEvent],
              unfinished: Callable[[], list[SourceEnd]] | None = None) -> None:
        """Consume ``outbox`` until its closing None; ``unfinished()`` lists SourceEnds for sources the
        batcher never reported (it was aborted), published when the outbox closes."""
        self._thread = threading.Thread(target=self._run, args=(outbox, unfinished), name="results",
                                        daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self, outbox: queue.Queue[BatchEvent], unfinished: Callable[[], list[SourceEnd]] | None) -> None:
        try:
            while (event := outbox.get()) is not None:
                if isinstance(event, SourceEnd):
                    self.end(event)
                else:
                    self._finish(event)
        except StreamerError as exc:  # e.g. the output disk is full: the pipeline raises it (one line)
            self.error = exc
            log.debug("results thread stopped: %s", exc)
        except BaseException as exc:
            self.error = exc
            log.exception("results thread failed")
        finally:
            for end in unfinished() if unfinished else ():
                if end.source not in self.ends:
                    self.end(end)
            self.done.set()

    def _finish(self, slot: Slot) -> None:
        done = self.executor.collect()
        if done is not slot:
            raise RuntimeError(f"executor returned {done!r}, expected {slot!r} (out of order)")
        try:
            if done.error is not None:
                self.metrics.failed_batches += 1
                self.metrics.record_failed([tag.source for tag in done.tags])
                log.error("batch of %d frames failed: %s", done.count, done.error)
                if self.batch_error is None:
                    self.batch_error = done.error
                    if self.on_batch_error is not None:
                        self.on_batch_error()
                return
            self.engine_s += done.engine_s
            self.batches += 1
            t0 = time.perf_counter()
            self._emit(done)
            publish_s = time.perf_counter() - t0
            self.results_s += publish_s
            timings = self.metrics.timings
            timings.stages["engine"].observe(done.engine_s)
            timings.stages["publish"].observe(publish_s)
            timings.batch_size.observe(done.count)
        finally:
            self.executor.release(done)

    def _emit(self, slot: Slot) -> None:
        lab = self.labelling
        idx, top = top_k(slot.host_output[:slot.count], lab.topk)  # copied out: the slot is reused after
        labels, acc = lab.labels, self.accuracy
        model_id = lab.model_id if self.model_id_of is None else self.model_id_of(slot)
        now, now_mono = time.time(), time.monotonic()
        latencies: list[float] = []  # capture→publish of each row, in seconds
        for i, tag in enumerate(slot.tags):
            pred = Prediction(
                source=tag.source, frame_index=tag.frame_index, capture_time=tag.capture_time,
                topk=tuple(TopK(j, labels[j], sc) for j, sc in zip(idx[i], top[i], strict=True)),
                model_id=model_id, dropped=tag.dropped, publish_time=now, file=tag.file,
            )
            self.sinks.prediction(pred)
            if tag.picture is not None and self.on_picture is not None:
                self.on_picture(pred, tag.picture)
            latencies.append(now_mono - tag.capture_mono)
            self.metrics.record(tag.source, latencies[-1], tag.dropped, tag.frame_index)
            if acc is not None and tag.source == acc.source:
                acc.add(tag.frame_index, labels[idx[i][0]])
        self.sinks.flush()
        self.metrics.timings.capture_to_publish.observe_many(latencies)

    def end(self, end: SourceEnd) -> None:
        self.ends[end.source] = end
        self.metrics.ended(end.source, end.reason)
        log.info("source %s ended after %d frames: %s", end.source, end.frames, end.reason)
        self.sinks.end(end.source, end.frames, eos_reason(end), end.skipped)
        if self.on_end is not None:
            self.on_end(end)

    def stage_times(self, frames: int, resize_s: float) -> dict[str, float]:
        """Where a frame's time went, for the summary."""
        per = 1e3 / frames if frames else 0.0
        return {"resize_ms_per_frame": round(resize_s * per, 4),
                "engine_ms_per_frame": round(self.engine_s * per, 4),
                "engine_ms_per_batch": round(1e3 * self.engine_s / self.batches, 4) if self.batches else 0.0,
                "results_ms_per_frame": round(self.results_s * per, 4)}
