"""``prediction_json``, the publisher's and the JSONL sink's fast path, against the generic path it stands in
for (``encode(pred.to_dict(t) + seq, "json")``): the same bytes for every prediction, the generic path taken
wherever the fast one could differ, and the same errors."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import random
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from streamer import protocol
from streamer.protocol import Prediction, TopK, encode, prediction_json

NAMES = ["cam0", "door-1", "x" * 300, "カメラ☃", "📷 porch", 'say "hi"', "back\\slash",
         "ctl\x00\x01\x1f\x7f\n\t", "</script>", "\u2028\u2029", "é" * 70, "lone \ud800 surrogate", " "]
SPECIAL_SCORES = [0.0, 1.0, 1e-07, 4.9999999e-07, 5e-07, 5.000001e-07, 1.5e-06, 1e-05, 9.99999e-05, 0.0001,
                  0.1234565, 0.1234567, 0.5, 0.9999995, 0.99999949, 1.0000005, 1 + 1e-6, 0.3, 2.5e-06]


def generic(pred: Prediction, publish_time: float | None, seq: int | None) -> bytes:
    d = pred.to_dict(publish_time)
    if seq is not None:
        d["seq"] = seq
    return encode(d, "json")


def random_score(rng: random.Random) -> float | int:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.choice(SPECIAL_SCORES)
    if kind == 1:
        return float(np.float32(rng.random()))  # what a float32 model's softmax turns into
    if kind == 2:
        return 10 ** -rng.uniform(0, 9)  # tiny values: exponent notation after rounding, or 0.0
    if kind == 3:
        return rng.choice([0, 1])  # an int score is allowed and rounds to an int
    return rng.random()


def random_predictions(seed: int, n: int) -> Iterator[tuple[Prediction, float | None, int | None]]:
    rng = random.Random(seed)
    now = time.time()
    for _ in range(n):
        capture = rng.choice([now - rng.random(), now, 0.0, 1.5, rng.uniform(0, 1e10), int(now)])
        pred = Prediction(
            source=rng.choice(NAMES),
            frame_index=rng.choice([rng.randrange(1000), 2**31 + 7, 2**63 + 1, 10**30]),
            capture_time=capture,
            topk=tuple(TopK(rng.randrange(2000), rng.choice(NAMES), random_score(rng))
                       for _ in range(rng.choice([1, 1, 2, 5, 5]))),
            model_id=rng.choice(["model-a1b2", "ré\"s\\net", "m" * 200]),
            dropped=rng.choice([0, 0, rng.randrange(10**6)]),
            publish_time=rng.choice([0.0, now + rng.random()]),
            file=rng.choice(["", "", "day1/img0007.png", 'we"ird\\ fïle\n.png']),
        )
        publish_time = rng.choice([None, 0.0, 0, capture, capture + rng.random(), capture + 1e-9,
                                   int(capture) + 1, now + rng.uniform(0, 10)])
        yield pred, publish_time, rng.choice([None, 0, rng.randrange(10**6), 2**40])


@pytest.fixture
def generic_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The payloads that went the generic way (json.dumps) from here on."""
    calls: list[dict[str, Any]] = []
    real = protocol._encode_json

    def counting(payload: dict[str, Any]) -> bytes:
        calls.append(payload)
        return real(payload)

    monkeypatch.setattr(protocol, "_encode_json", counting)
    return calls


def test_the_same_bytes_as_the_generic_path_for_many_predictions(generic_calls: list[dict[str, Any]]) -> None:
    n = 0
    for pred, publish_time, seq in random_predictions(seed=20240610, n=5000):
        fast = prediction_json(pred, publish_time, seq)
        calls = len(generic_calls)
        assert fast == generic(pred, publish_time, seq), (pred, publish_time, seq)
        assert calls == 0, f"took the generic path for {pred}"  # nothing here needs it
        generic_calls.clear()
        n += 1
    assert n == 5000


def test_the_corpus_covers_what_it_claims() -> None:
    """The random corpus above really contains rounding, exponents, tiny scores, no-latency messages and
    escaped names: otherwise byte equality over it would prove little."""
    payloads = [prediction_json(*args) for args in random_predictions(seed=20240610, n=5000)]
    text = b"\n".join(payloads)
    for needle in (b'"latency_ms":null', b'"score":0.0}', b'"score":1.0}', b'"score":1e-06}', b'"score":1}',
                   b'e-05}', b'"score":0.123456}', b'"score":0.123457}', b'"file":', b'\\u30ab', b'\\ud83d',
                   b'\\"', b"\\\\", b"\\u0000", b"\\n", b'"seq":', b'"frame":' + str(10**30).encode()):
        assert needle in text, needle
    assert sum(b'"seq":' not in p for p in payloads) > 500
    assert any(p.count(b'"index"') == 5 for p in payloads) and any(p.count(b'"index"') == 1 for p in payloads)


def test_rounding_is_round_s_not_an_approximation() -> None:
    """Scores whose 7th decimal sits at a tie, latencies at a third-decimal tie: what round() gives."""
    topk = tuple(TopK(i, "c", s) for i, s in enumerate([0.0000005, 0.1234565, 0.9999995, 2.675e-06, 0.5]))
    pred = Prediction("cam0", 1, 1000.0, topk, "m")
    for publish_time in (1000.0012345, 1000.0000005, 1000.0026755, 1001.0):
        assert prediction_json(pred, publish_time, 3) == generic(pred, publish_time, 3)
    d = json.loads(prediction_json(pred, 1000.0012345))
    assert [t["score"] for t in d["topk"]] == [round(s.score, 6) for s in topk]
    assert d["latency_ms"] == round((1000.0012345 - 1000.0) * 1e3, 3)


def test_publish_time_zero_means_no_latency_and_none_means_the_prediction_s() -> None:
    pred = dataclasses.replace(Prediction("cam0", 1, 5.0, (TopK(1, "a", 0.5),), "m"), publish_time=6.25)
    assert json.loads(prediction_json(pred, 0.0))["latency_ms"] is None
    assert json.loads(prediction_json(pred))["publish_ts"] == 6.25
    assert json.loads(prediction_json(pred))["latency_ms"] == 1250.0
    assert b'"seq"' not in prediction_json(pred, 7.0)
    assert prediction_json(pred, 7.0, 0).endswith(b',"seq":0}')


class Count(enum.IntEnum):
    THREE = 3


class Name(str):
    pass


@pytest.mark.parametrize("change", [
    {"extra": {"note": "an extra field", "n": 1.5}},
    {"frame_index": True},
    {"frame_index": Count.THREE},
    {"dropped": True},
    {"capture_time": np.float64(1234.5)},
    {"publish_time": np.float64(1234.75)},
    {"source": Name("cam0")},
    {"model_id": Name("m")},
    {"file": Name("a.png")},
    {"topk": (TopK(True, "cat", 0.5),)},  # True == 1: must not reuse (1, "cat")'s cached text
    {"topk": (TopK(1, Name("cat"), 0.5),)},
    {"topk": (TopK(1, "cat", np.float64(0.25)),)},
])
def test_what_the_fast_path_cannot_vouch_for_goes_the_generic_way(
        change: dict[str, Any], generic_calls: list[dict[str, Any]]) -> None:
    base = Prediction("cam0", 3, 1234.0, (TopK(1, "cat", 0.5),), "m", publish_time=1234.5)
    assert prediction_json(base, None, 1) == generic(base, None, 1)  # caches (1, "cat"), "cam0", "m"
    generic_calls.clear()
    pred = dataclasses.replace(base, **change)
    fast = prediction_json(pred, None, 1)
    assert len(generic_calls) == 1
    assert fast == generic(pred, None, 1)
    if "topk" in change and change["topk"][0].index is True:
        assert b'"index":true' in fast


@pytest.mark.parametrize("where", ["capture_time", "publish_time", "score"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_number_fails_as_before(where: str, bad: float) -> None:
    """NaN/Infinity are not JSON: the generic path's ValueError, which the publisher counts as an error."""
    pred = Prediction("cam0", 3, 1234.0, (TopK(1, "cat", 0.5),), "m")
    publish_time = bad if where == "publish_time" else 1235.0
    if where == "score":
        with pytest.raises(ValueError, match="outside"):
            TopK(1, "cat", bad)  # a TopK refuses it up front ...
        object.__setattr__(pred.topk[0], "score", bad)  # ... so smuggle one past it
    elif where == "capture_time":
        pred = dataclasses.replace(pred, capture_time=bad)
    with pytest.raises(ValueError, match="JSON compliant") as generic_error:
        generic(pred, publish_time, 0)
    with pytest.raises(ValueError, match="JSON compliant") as fast_error:
        prediction_json(pred, publish_time, 0)
    assert str(fast_error.value) == str(generic_error.value)


def test_an_extra_json_cannot_encode_fails_as_before() -> None:
    pred = Prediction("cam0", 3, 1234.0, (TopK(1, "cat", 0.5),), "m", extra={"blob": object()})
    with pytest.raises(TypeError, match="not JSON serializable"):
        prediction_json(pred, 1235.0, 0)


def test_the_text_caches_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "_TEXT_CACHE_ENTRIES", 50)
    for i in range(500):
        pred = Prediction(f"cam{i}", i, 1.0, (TopK(i, f"label{i}", 0.5),), f"model{i}")
        assert prediction_json(pred, 2.0, i) == generic(pred, 2.0, i)
        caches = (protocol._PRED_HEADS, protocol._TOPK_HEADS, protocol._MODEL_TAILS)
        assert all(0 < len(cache) <= 50 for cache in caches)
