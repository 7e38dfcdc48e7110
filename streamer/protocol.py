"""The wire protocol shared by the publisher and every subscriber (documented in docs/protocol.md).

Messages are ZeroMQ multipart ``[topic, payload]``:

- ``pred.<source>``   one prediction (one frame of one source)
- ``eos.<source>``    a source ended (end of file, or a live source given up)
- ``health.<source>`` a source changed state (up / down / reconnecting)
- ``stats``           periodic pipeline metrics

Payload: UTF-8 JSON object (default) or msgpack map; both carry ``"v": PROTOCOL_VERSION`` and ``"type"``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_VERSION = 1
TOPIC_PRED = "pred"
TOPIC_EOS = "eos"
TOPIC_HEALTH = "health"
TOPIC_STATS = "stats"
ENCODINGS = ("json", "msgpack")


@dataclass(frozen=True)
class TopK:
    index: int
    label: str
    score: float

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"class index {self.index} < 0")
        if not (0.0 <= self.score <= 1.0 + 1e-6) or math.isnan(self.score):
            raise ValueError(f"score {self.score} outside [0, 1]")


@dataclass(frozen=True)
class Prediction:
    """One classified frame. Times are UNIX epoch seconds (float)."""

    source: str
    frame_index: int
    capture_time: float
    topk: tuple[TopK, ...]
    model_id: str
    dropped: int = 0  # frames this source dropped since its previous published prediction
    publish_time: float = 0.0  # set by the publisher just before sending
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.source:
            raise ValueError("empty source name")
        if self.frame_index < 0:
            raise ValueError(f"frame_index {self.frame_index} < 0")
        if self.dropped < 0:
            raise ValueError(f"dropped {self.dropped} < 0")

    @property
    def topic(self) -> str:
        return f"{TOPIC_PRED}.{self.source}"

    def to_dict(self) -> dict[str, Any]:
        latency_ms = (self.publish_time - self.capture_time) * 1e3 if self.publish_time else None
        d: dict[str, Any] = {
            "v": PROTOCOL_VERSION,
            "type": TOPIC_PRED,
            "source": self.source,
            "frame": self.frame_index,
            "capture_ts": self.capture_time,
            "publish_ts": self.publish_time,
            "latency_ms": None if latency_ms is None else round(latency_ms, 3),
            "topk": [{"index": t.index, "label": t.label, "score": round(t.score, 6)} for t in self.topk],
            "dropped": self.dropped,
            "model": self.model_id,
        }
        d.update(self.extra)
        return d


def encode(payload: dict[str, Any], encoding: str = "json") -> bytes:
    if encoding == "json":
        return json.dumps(payload, separators=(",", ":")).encode()
    if encoding == "msgpack":
        import msgpack

        return msgpack.packb(payload, use_bin_type=True)
    raise ValueError(f"unknown encoding {encoding!r}; choose one of {ENCODINGS}")


def decode(data: bytes) -> dict[str, Any]:
    """Decode a payload of either encoding (JSON objects start with '{'; msgpack maps never do)."""
    if data[:1] == b"{":
        return json.loads(data)
    import msgpack

    return msgpack.unpackb(data, raw=False)
