"""The preview page in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by
selenium) while the ``streamer`` command runs two live MJPEG cameras on loopback: both tiles are there, the
pictures move (two screenshots a second apart differ inside each tile), and the label a tile shows is the
one the streamer published over ZeroMQ for the frame it shows, checked at moments when that frame is the
source's last published one."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from servers import MjpegServer, free_port
from service_helpers import Collector, StreamerProcess
from streamer_helpers import COLORS, color_sequence

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CAMERA_FPS = 5.0
WAIT_S = 60.0
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1000,700", "--hide-scrollbars")
READ_TILES = """return [...document.querySelectorAll('.tile')].map(t => ({
    source: t.dataset.source,
    frame: t.querySelector('.index').textContent,
    label: (t.querySelector('.topk li .label') || {}).textContent || '',
    loaded: !!t.querySelector('.frame canvas')}));"""


@pytest.fixture
def chromium() -> Iterator[Any]:
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip("needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver "
                    "(.ci/setup-browser.sh)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("needs selenium: pip install -e '.[dev]'")
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER), log_output=subprocess.DEVNULL),
                              options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def poll(what: str, check: Any, timeout: float = WAIT_S, every: float = 0.05) -> Any:
    """``check()`` until it returns something truthy (returned), else AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)  # a polling period, not a synchronisation


def moving_frames(n: int, size: tuple[int, int] = (320, 240)) -> list[bytes]:
    """JPEG frames of solid colours (the colour model's classes) with a white bar that moves a step each
    frame, so any two different frames look different."""
    import cv2

    w, h = size
    out = []
    for i, name in enumerate(color_sequence(n, seed=11)):
        image = np.empty((h, w, 3), np.uint8)
        image[:] = COLORS[name]
        x = (i * w // n) % w
        image[:, x:x + w // 8] = 255
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        assert ok
        out.append(data.tobytes())
    return out


def png_pixels(png: bytes) -> np.ndarray:
    import cv2

    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image.astype(np.int16)


@pytest.mark.timeout(240)
def test_a_real_browser_shows_both_sources_moving_with_their_published_labels(
        tmp_path: Path, color_model: Path, chromium: Any) -> None:
    from selenium.webdriver.common.by import By

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    frames = moving_frames(60)
    with (MjpegServer(frames, fps=CAMERA_FPS) as cam1,
          MjpegServer(frames[7:] + frames[:7], fps=CAMERA_FPS) as cam2):
        collector = Collector(endpoint)
        streamer = StreamerProcess("--source", cam1.url(), "--source", cam2.url(), "--model",
                                   str(color_model), "--backend", "onnxruntime", "--threads", "1",
                                   "--bind", endpoint, "--wait-subscribers", "1", "--http", "127.0.0.1:0",
                                   "--preview", "--stats-interval", "0")
        try:
            chromium.get(streamer.url + "/")
            tiles = poll("two tiles with a picture and a label", lambda: (
                t if len(t := chromium.execute_script(READ_TILES)) == 2
                and all(x["loaded"] and x["label"] for x in t) else None))
            names = sorted(t["source"] for t in tiles)
            assert names == sorted({m.payload["source"] for m in collector.select("pred")})

            def pictures() -> dict[str, np.ndarray]:
                return {el.get_attribute("data-source"): png_pixels(
                    el.find_element(By.CSS_SELECTOR, ".frame").screenshot_as_png)
                    for el in chromium.find_elements(By.CSS_SELECTOR, ".tile")}

            first, t_first = pictures(), time.monotonic()
            poll("a second", lambda: time.monotonic() - t_first >= 1.0)
            second = pictures()
            for name in names:
                change = float(np.abs(first[name] - second[name]).mean())
                assert change > 3.0, f"{name}: the picture did not move ({change:.2f})"

            for name in names:
                def agreeing(name: str = name) -> tuple[str, str] | None:
                    before = collector.preds(name)[-1].payload
                    shown = next(t for t in chromium.execute_script(READ_TILES) if t["source"] == name)
                    after = collector.preds(name)[-1].payload
                    if before["frame"] != after["frame"] or shown["frame"] != f"#{after['frame']}":
                        return None  # a frame came meanwhile, or the page has not drawn the last one yet
                    return shown["label"], after["topk"][0]["label"]
                shown_label, published_label = poll(f"{name}: the page showing its last published frame",
                                                    agreeing, timeout=30)
                assert shown_label == published_label, name

            chromium.save_screenshot(str(tmp_path / "preview.png"))
            assert (tmp_path / "preview.png").stat().st_size > 10_000
        finally:
            assert streamer.interrupt() == 0
            collector.close()

