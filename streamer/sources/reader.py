"""One thread per source: read frames (pacing realtime files at their FPS) into the source's buffer."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from streamer.errors import SourceError
from streamer.sources.base import FrameSource, SourceState
from streamer.sources.buffer import FrameBuffer

_DOWN = (SourceState.DOWN, SourceState.RECONNECTING)

log = logging.getLogger(__name__)


class SourceReader:
    """Runs ``source.read()`` in a daemon thread until the end, a failure, ``max_frames`` or ``stop()``.

    Always closes the buffer when it finishes (with the reason), so the batcher learns the source is over.
    """

    def __init__(self, source: FrameSource, buffer: FrameBuffer, max_frames: int = 0,
                 on_decode: Callable[[float], None] | None = None) -> None:
        """``on_decode(seconds)``: called after each read of a file or image source (its decode time; a live
        source's read waits for the camera, so it is not reported)."""
        self.source = source
        self.buffer = buffer
        self.max_frames = max_frames
        # a camera's or stream's read waits for its next frame: only file reads (paced or not) are decodes
        self.on_decode = on_decode if not source.is_live or source.realtime else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"source-{source.name}", daemon=True)
        source.add_listener(self._on_state)

    def start(self) -> None:
        self._thread.start()

    def stop(self, reason: str = "stopped") -> None:
        """Stop reading: frames already buffered are still processed; the buffer is closed at once, with
        ``reason`` (its end-of-stream reason unless the source had already ended)."""
        self._stop.set()
        self.source.stop(reason)
        self.buffer.close(reason)

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _on_state(self, source: FrameSource, state: SourceState, detail: str) -> None:
        down = state in _DOWN
        if down != self.buffer.down:
            with self.buffer.cond:
                self.buffer.down = down
                self.buffer.cond.notify_all()  # a batcher waiting on this source's frame can close now

    def _run(self) -> None:
        source, buffer = self.source, self.buffer
        pace = source.realtime and bool(source.fps) and not source.self_paced
        period = 1.0 / source.fps if pace and source.fps else 0.0
        start = 0.0
        on_decode = self.on_decode
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                frame = source.read()
                buffer.skipped = source.skipped  # for its end-of-stream
                if on_decode is not None and frame is not None:
                    on_decode(time.perf_counter() - t0)
                if frame is None:
                    buffer.close(source.detail or "end of input")
                    return
                if pace:
                    if not start:
                        start = time.monotonic() - frame.index * period
                    delay = start + frame.index * period - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        break
                    # a paced frame is "captured" when it is due, as a camera's would be
                    frame = dataclasses.replace(frame, capture_time=time.time(),
                                                capture_mono=time.monotonic())
                if not buffer.put(frame):
                    break
                if self.max_frames and source.frames_read >= self.max_frames:
                    source.stop("max frames reached")
                    buffer.close("max frames reached")
                    return
        except SourceError as exc:
            log.error("source %s failed: %s", source.name, exc)
            buffer.skipped = source.skipped
            buffer.close(f"failed: {exc}", failed=True)
        except Exception as exc:  # a bug in a source must end that source, not hang the pipeline
            log.exception("source %s crashed", source.name)
            source._set_state(SourceState.FAILED, f"{type(exc).__name__}: {exc}")
            buffer.close(f"failed: {type(exc).__name__}: {exc}", failed=True)
        finally:
            buffer.close("stopped")
            source.close()
