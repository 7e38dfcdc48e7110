"""Frame sources: cameras, video files, image folders/globs, network streams and the demo clip.

``open_source(spec)`` makes one from a ``--source`` value; a ``SourceReader`` thread feeds its
``FrameBuffer``.
"""

from __future__ import annotations

from streamer.sources.base import Frame, FrameSource, Policy, SourceState
from streamer.sources.buffer import FrameBuffer
from streamer.sources.factory import make_source, open_source, redact_url, unique_names
from streamer.sources.live import busy_captures
from streamer.sources.reader import SourceReader

__all__ = [
    "Frame",
    "FrameBuffer",
    "FrameSource",
    "Policy",
    "SourceReader",
    "SourceState",
    "busy_captures",
    "make_source",
    "open_source",
    "redact_url",
    "unique_names",
]
