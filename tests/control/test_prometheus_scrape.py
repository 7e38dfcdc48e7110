"""A real Prometheus (Debian's package) scrapes a running ``streamer --http`` with the documented scrape
config: its own query API shows ``streamer_frames_total`` rising for each source, and every query of the
documented Grafana dashboard runs on what it scraped."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest
from prometheus_server import Prometheus, prometheus_missing
from servers import MjpegServer, free_port
from service_helpers import StreamerProcess, colour_jpegs
from streamer_helpers import REPO, color_sequence

DOCS = REPO / "docs" / "control"
SCRAPE_S = 1  # the test's scrape interval (the documented one is 5 s)
RISES = 3  # increases of streamer_frames_total each source must show


def scrape_config(target: str) -> str:
    """docs/control/prometheus.yml, pointed at ``target`` and scraping every second."""
    text = (DOCS / "prometheus.yml").read_text()
    assert '["127.0.0.1:8090"]' in text and "scrape_interval: 5s" in text
    return text.replace("127.0.0.1:8090", target).replace("5s", f"{SCRAPE_S}s")


@pytest.mark.timeout(240)
def test_prometheus_scrapes_frames_rising_for_each_source(color_model: Path, tmp_path: Path) -> None:
    if (missing := prometheus_missing()) is not None:
        pytest.skip(missing)
    frames = colour_jpegs(color_sequence(50, seed=4))
    http_port = free_port()
    with MjpegServer(frames, fps=25.0) as cam1, MjpegServer(frames, fps=25.0) as cam2:
        streamer = StreamerProcess("--source", cam1.url(), "--source", cam2.url(), "--model",
                                   str(color_model), "--backend", "onnxruntime", "--threads", "1",
                                   "--bind", "none", "--http", f"127.0.0.1:{http_port}",
                                   "--stats-interval", "0")
        try:
            with Prometheus(scrape_config(f"127.0.0.1:{http_port}"), tmp_path) as prom:
                seen: dict[str, list[float]] = {}
                deadline = time.monotonic() + 90.0
                pause = threading.Event()
                while not (len(seen) == 2 and all(len(v) > RISES for v in seen.values())):
                    assert time.monotonic() < deadline, f"frames seen by Prometheus: {seen}; {prom.log()}"
                    for row in prom.query("streamer_frames_total"):
                        values = seen.setdefault(row["metric"]["source"], [])
                        value = float(row["value"][1])
                        if not values or value != values[-1]:
                            values.append(value)
                    pause.wait(SCRAPE_S / 2)
                for source, values in seen.items():
                    assert values == sorted(values) and values[-1] > values[0], (source, values)
                up = prom.query('up{job="streamer"}')
                assert [float(r["value"][1]) for r in up] == [1.0]
                rates = {r["metric"]["source"]: float(r["value"][1])
                         for r in prom.query("rate(streamer_frames_total[5s])")}
                assert sorted(rates) == sorted(seen) and all(rate > 5 for rate in rates.values()), rates
                p99 = prom.query("histogram_quantile(0.99, sum by (le) "
                                 "(rate(streamer_capture_to_publish_seconds_bucket[10s])))")
                assert p99 and 0 < float(p99[0]["value"][1]) < 1.0
                print(f"\nPrometheus saw streamer_frames_total: {seen}")
                print(f"rate(streamer_frames_total[5s]) = {rates}; capture→publish p99 "
                      f"{1e3 * float(p99[0]['value'][1]):.1f} ms")
                check_dashboard(prom)
                print(scraped_excerpt(streamer.url))
        finally:
            code = streamer.interrupt()
            assert code == 0, "".join(streamer.stderr)


def check_dashboard(prom: Prometheus) -> None:
    """Every query of docs/control/grafana-dashboard.json runs; those about frames return data."""
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "10s")
            result = prom.query(expr)
            if re.search(r"streamer_(frames_total|capture_to|stage|batch_size|source_up|info)", expr):
                assert result, f"panel {panel['title']!r}: {expr} returned nothing"


def scraped_excerpt(url: str) -> str:
    """The streamer_* lines of one /metrics scrape, without the per-bucket lines (for the test's output)."""
    import urllib.request

    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    keep = [line for line in text.splitlines()
            if line.startswith("streamer_") and "_bucket{" not in line]
    return "scraped /metrics (buckets left out):\n" + "\n".join(keep)
