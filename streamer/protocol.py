"""The wire protocol shared by the publisher and every subscriber (documented in docs/protocol.md).

Messages are ZeroMQ multipart ``[topic, payload]``:

- ``pred.<source>``   one prediction (one frame of one source)
- ``eos.<source>``    a source ended (end of file, or a live source given up)
- ``health.<source>`` a source changed state (up / down / reconnecting)
- ``stats``           periodic pipeline metrics

Payload: UTF-8 JSON object (default) or msgpack map; both carry ``"v": PROTOCOL_VERSION``,
``"minor": PROTOCOL_MINOR`` and ``"type"``. Versioning: adding a field keeps ``v`` and bumps ``minor``;
removing or renaming a field, or changing its type, unit or meaning, bumps ``v``. Subscribers ignore fields,
topics and types they do not know.

Minor versions of protocol 1: 0 (no ``minor`` field) the first; 1 adds ``minor``, ``file`` to predictions
from image sources and ``skipped`` to ``eos``.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _json_string  # the escaping json.dumps uses
from types import ModuleType
from typing import Any

from streamer.errors import ConfigError

PROTOCOL_VERSION = 1
PROTOCOL_MINOR = 1  # fields added since protocol 1 came out (see the module docstring)
TOPIC_PRED = "pred"
TOPIC_EOS = "eos"
TOPIC_HEALTH = "health"
TOPIC_STATS = "stats"
ENCODINGS = ("json", "msgpack")
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"

HEALTH_STATES = ("up", "down", "reconnecting")
# Documented eos reasons; others are allowed (subscribers treat unknown reasons as "ended").
EOS_REASONS = ("end", "error", "stopped", "removed")  # removed: DELETE /sources/<name> (control plane)

# Keys a Prediction's ``extra`` may not overwrite.
PRED_FIELDS = ("v", "minor", "type", "source", "frame", "capture_ts", "publish_ts", "latency_ms", "topk",
               "dropped", "model", "seq", "file")


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
    file: str = ""  # image sources: the image's path relative to its folder (the payload has it only then)

    def __post_init__(self) -> None:
        if not self.source:
            raise ValueError("empty source name")
        if self.frame_index < 0:
            raise ValueError(f"frame_index {self.frame_index} < 0")
        if self.dropped < 0:
            raise ValueError(f"dropped {self.dropped} < 0")
        clash = sorted(set(self.extra) & set(PRED_FIELDS))
        if clash:
            raise ValueError(f"extra fields {clash} would overwrite protocol fields")

    @property
    def topic(self) -> str:
        return f"{TOPIC_PRED}.{self.source}"

    @property
    def latency_ms(self) -> float | None:
        """Capture to publish in milliseconds, unrounded; None without a publish time."""
        return _latency_ms(self.capture_time, self.publish_time)

    def to_dict(self, publish_time: float | None = None) -> dict[str, Any]:
        """The wire payload; ``publish_time`` (if given) stands in for the field, so a publisher stamping the
        send time need not copy (and re-validate) the frozen dataclass per message."""
        publish_time = self.publish_time if publish_time is None else publish_time
        latency_ms = _latency_ms(self.capture_time, publish_time)
        d: dict[str, Any] = {
            "v": PROTOCOL_VERSION,
            "minor": PROTOCOL_MINOR,
            "type": TOPIC_PRED,
            "source": self.source,
            "frame": self.frame_index,
            "capture_ts": self.capture_time,
            "publish_ts": publish_time,
            "latency_ms": None if latency_ms is None else round(latency_ms, 3),
            "topk": [{"index": t.index, "label": t.label, "score": round(t.score, 6)} for t in self.topk],
            "dropped": self.dropped,
            "model": self.model_id,
        }
        if self.file:
            d["file"] = self.file
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Prediction:
        """The inverse of ``to_dict`` (for Python subscribers); unknown fields land in ``extra``."""
        return cls(
            source=d["source"],
            frame_index=int(d["frame"]),
            capture_time=float(d["capture_ts"]),
            topk=tuple(TopK(int(t["index"]), str(t["label"]), float(t["score"])) for t in d["topk"]),
            model_id=str(d["model"]),
            dropped=int(d.get("dropped", 0)),
            publish_time=float(d.get("publish_ts") or 0.0),
            extra={k: v for k, v in d.items() if k not in PRED_FIELDS},
            file=str(d.get("file") or ""),
        )


def _latency_ms(capture_time: float, publish_time: float) -> float | None:
    # prediction_json computes the same inline (its hot path), rounded as to_dict rounds it
    return (publish_time - capture_time) * 1e3 if publish_time else None


def topic_for(kind: str, source: str | None = None) -> str:
    """``pred.<source>``, ``eos.<source>``, ``health.<source>`` or ``stats``."""
    if kind == TOPIC_STATS:
        return TOPIC_STATS
    if kind not in (TOPIC_PRED, TOPIC_EOS, TOPIC_HEALTH):
        raise ValueError(f"unknown message kind {kind!r}")
    if not source:
        raise ValueError(f"{kind} message needs a source name")
    return f"{kind}.{source}"


def eos_payload(source: str, frames: int, reason: str, publish_time: float, skipped: int = 0
                ) -> dict[str, Any]:
    """``frames``: the source's frames that were classified; ``skipped``: frames it could not decode."""
    if frames < 0 or skipped < 0:
        raise ValueError(f"frames {frames} or skipped {skipped} < 0")
    return {"v": PROTOCOL_VERSION, "minor": PROTOCOL_MINOR, "type": TOPIC_EOS, "source": source,
            "frames": int(frames), "skipped": int(skipped), "reason": reason, "publish_ts": publish_time}


def health_payload(source: str, state: str, detail: str, publish_time: float) -> dict[str, Any]:
    if state not in HEALTH_STATES:
        raise ValueError(f"health state {state!r} not one of {HEALTH_STATES}")
    return {"v": PROTOCOL_VERSION, "minor": PROTOCOL_MINOR, "type": TOPIC_HEALTH, "source": source,
            "state": state, "detail": detail, "publish_ts": publish_time}


def stats_payload(stats: dict[str, Any], publish_time: float) -> dict[str, Any]:
    """The caller's metrics (NaN/inf become null so any JSON parser accepts them) plus the envelope."""
    d = {k: _finite(v) for k, v in stats.items()}
    d.update({"v": PROTOCOL_VERSION, "minor": PROTOCOL_MINOR, "type": TOPIC_STATS,
              "publish_ts": publish_time})
    return d


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def msgpack_module() -> ModuleType:
    """Import msgpack or say how to install it (it is an optional extra)."""
    try:
        import msgpack
    except ImportError:
        raise ConfigError("msgpack encoding needs the msgpack package, which is not installed",
                          "pip install streamer[msgpack] (or: pip install msgpack), or use json") from None
    return msgpack


def encoder(encoding: str) -> Callable[[dict[str, Any]], bytes]:
    """``encode`` for one encoding, with the msgpack import resolved once (ConfigError if it is missing)."""
    if encoding == "json":
        return _encode_json
    if encoding == "msgpack":
        return functools.partial(msgpack_module().packb, use_bin_type=True)
    raise ConfigError(f"unknown encoding {encoding!r}", f"choose one of {', '.join(ENCODINGS)}")


def _encode_json(payload: dict[str, Any]) -> bytes:
    # allow_nan=False: NaN/Infinity are not JSON and break parsers in other languages.
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def encode(payload: dict[str, Any], encoding: str = "json") -> bytes:
    if encoding == "json":
        return _encode_json(payload)
    if encoding == "msgpack":
        return msgpack_module().packb(payload, use_bin_type=True)
    raise ValueError(f"unknown encoding {encoding!r}; choose one of {ENCODINGS}")


# ---- predictions as JSON without the dict: the publisher's and the JSONL sink's hot path ------------------

# JSON text of strings that repeat from frame to frame; each dict is emptied when it reaches this many entries
# (a bound on memory, e.g. with sources added one after another for days).
_TEXT_CACHE_ENTRIES = 4096
_PRED_HEADS: dict[str, str] = {}  # source -> '{"v":1,...,"source":"cam0","frame":'
_TOPK_HEADS: dict[tuple[int, str], str] = {}  # (index, label) -> '{"index":3,"label":"cat","score":'
_MODEL_TAILS: dict[str, str] = {}  # model id -> ',"model":"m"'
_isfinite = math.isfinite


def prediction_json(pred: Prediction, publish_time: float | None = None, seq: int | None = None) -> bytes:
    """``encode(d, "json")`` of ``d = pred.to_dict(publish_time)`` plus ``d["seq"] = seq`` unless ``seq`` is
    None, byte for byte, written straight from the fields (no dict, no generic encoder).

    What the direct writer cannot reproduce exactly (a non-empty ``extra``, a non-finite float, a field of
    another type, a bool) goes the generic way, which raises as it always did (ValueError for NaN)."""
    if publish_time is None:
        publish_time = pred.publish_time
    text = None if pred.extra else _prediction_text(pred, publish_time, seq)
    if text is not None:
        return text.encode()
    d = pred.to_dict(publish_time)
    if seq is not None:
        d["seq"] = seq
    return _encode_json(d)


def _prediction_text(pred: Prediction, publish_time: float, seq: int | None) -> str | None:
    """The text ``json.dumps`` makes of ``pred.to_dict(publish_time)`` (+ ``seq``), or None where that is not
    certain. A number is written as json writes it (``repr`` of an exact int, or of an exact finite float:
    json calls ``int.__repr__``/``float.__repr__``); strings are exact ``str``. So a bool, a subclass of int,
    float or str, or NaN is left to json."""
    frame, dropped, capture_time = pred.frame_index, pred.dropped, pred.capture_time
    if type(frame) is not int or type(dropped) is not int or (seq is not None and type(seq) is not int):
        return None
    kind = type(capture_time)
    if not (kind is int or (kind is float and _isfinite(capture_time))):
        return None
    kind = type(publish_time)
    if not (kind is int or (kind is float and _isfinite(publish_time))):
        return None
    if publish_time:  # as to_dict: no latency without a publish time
        latency = round((publish_time - capture_time) * 1e3, 3)
        kind = type(latency)
        if not (kind is int or (kind is float and _isfinite(latency))):
            return None
        latency_text = repr(latency)
    else:
        latency_text = "null"
    topk = []
    for t in pred.topk:
        index, label = t.index, t.label
        if type(index) is not int or type(label) is not str:
            return None
        head = _TOPK_HEADS.get((index, label))
        if head is None:
            head = _cache(_TOPK_HEADS, (index, label),
                          f'{{"index":{index},"label":{_json_string(label)},"score":')
        score = round(t.score, 6)
        kind = type(score)
        if not (kind is int or (kind is float and _isfinite(score))):
            return None
        topk.append(f"{head}{score!r}}}")
    source, model, file = pred.source, pred.model_id, pred.file
    if type(source) is not str or type(model) is not str or type(file) is not str:
        return None
    pred_head = _PRED_HEADS.get(source)
    if pred_head is None:
        pred_head = _cache(_PRED_HEADS, source, f'{{"v":{PROTOCOL_VERSION},"minor":{PROTOCOL_MINOR},'
                                                f'"type":{_json_string(TOPIC_PRED)},"source":{_json_string(source)},"frame":')
    model_tail = _MODEL_TAILS.get(model)
    if model_tail is None:
        model_tail = _cache(_MODEL_TAILS, model, f',"model":{_json_string(model)}')
    file_field = f',"file":{_json_string(file)}' if file else ""
    seq_field = "" if seq is None else f',"seq":{seq}'
    return (f'{pred_head}{frame},"capture_ts":{capture_time!r},"publish_ts":{publish_time!r},'
            f'"latency_ms":{latency_text},"topk":[{",".join(topk)}],"dropped":{dropped}'
            f'{model_tail}{file_field}{seq_field}}}')


def _cache(cache: dict[Any, str], key: Any, text: str) -> str:
    if len(cache) >= _TEXT_CACHE_ENTRIES:
        cache.clear()
    cache[key] = text
    return text


def decode(data: bytes) -> dict[str, Any]:
    """Decode a payload of either encoding (JSON objects start with '{'; msgpack maps never do)."""
    obj = json.loads(data) if data[:1] == b"{" else msgpack_module().unpackb(data, raw=False)
    if not isinstance(obj, dict):
        raise ValueError(f"payload is a {type(obj).__name__}, not an object/map")
    return obj


def check_endpoint(endpoint: str, *, bind: bool) -> None:
    """Raise ValueError for an endpoint ZeroMQ would reject or silently misread.

    libzmq itself rejects most malformed endpoints, but it truncates a TCP port above 65535 to 16 bits
    (``tcp://127.0.0.1:99999`` binds port 34463), so the port is checked here.
    """
    transport, sep, address = endpoint.partition("://")
    if not sep or not transport or not address:
        raise ValueError("not of the form transport://address")
    if transport != "tcp":
        return
    host, colon, port = address.rpartition(":")
    if not colon or not host:
        raise ValueError("a tcp endpoint needs HOST:PORT")
    if port == "*" and bind:
        return
    if not port.isdigit() or not (0 < int(port) <= 65535):
        raise ValueError(f"port {port!r} is not 1-65535" + (" or *" if bind else ""))
