"""Run metrics: the bulk histograms the control plane exports, and per-source frame rates."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from streamer.metrics import Histogram, HistogramSnapshot, Metrics


def test_histogram_buckets_are_inclusive_upper_bounds_like_prometheus() -> None:
    h = Histogram((0.1, 1.0, 10.0))
    h.observe_many([0.05, 0.1, 0.5, 1.0, 3.0])
    h.observe(10.0)
    h.observe(11.0)
    snap = h.snapshot()
    assert snap.cumulative == (2, 4, 6, 7) and snap.count == 7
    assert snap.sum == pytest.approx(0.05 + 0.1 + 0.5 + 1.0 + 3.0 + 10.0 + 11.0)
    h.observe_many([])
    assert h.snapshot() == snap
    with pytest.raises(ValueError, match="increase"):
        Histogram((1.0, 0.5))
    with pytest.raises(ValueError, match="one count per bound"):
        HistogramSnapshot((1.0,), (1,), 0.0, 1)


def test_histogram_bulk_and_single_observations_agree_across_threads() -> None:
    rng = np.random.default_rng(0)
    values = rng.exponential(0.01, 4000).tolist()
    bulk, single = Histogram((0.001, 0.005, 0.01, 0.05)), Histogram((0.001, 0.005, 0.01, 0.05))
    chunks = [values[i:i + 16] for i in range(0, len(values), 16)]
    threads = [threading.Thread(target=lambda part=chunks[k::4]: [bulk.observe_many(c) for c in part])
               for k in range(4)]
    for t in threads:
        t.start()
    for v in values:
        single.observe(v)
    for t in threads:
        t.join(10)
    a, b = bulk.snapshot(), single.snapshot()
    assert a.cumulative == b.cumulative and a.count == 4000 and a.sum == pytest.approx(b.sum)


def test_rates_are_frames_per_second_since_the_oldest_sample_that_knew_the_source() -> None:
    m = Metrics(["a"])
    assert m.rates(now=0.0) == {"a": 0.0}  # no sample yet
    m.sample_rates(now=100.0)
    for _ in range(50):
        m.record("a", 0.01, 0, 0)
    m.add_source("b")
    m.sample_rates(now=102.0)
    for _ in range(20):
        m.record("b", 0.01, 0, 0)
    m.sample_rates(now=102.5)  # within a second of the previous sample: not kept
    assert m.rates(now=104.0) == {"a": 12.5, "b": 10.0}
    m.record_failed(["b", "b"])
    assert m.counts()["b"].failed == 2 and m.counts()["b"].frames == 20
