#!/usr/bin/env python3
"""The README's preview screenshot (docs/preview.png): the streamer on the demo clip and vtest.avi played in
real time with ``--preview``, the page shot by a headless Chromium (Debian's ``chromium`` +
``chromium-driver``, through selenium) once both tiles show a picture.

    python tools/preview_screenshot.py                  # → docs/preview.png
    python tools/preview_screenshot.py --out /tmp/p.png --settle 5
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

READY = """return [...document.querySelectorAll('.tile')].filter(t => t.querySelector('.frame canvas')
    && t.querySelector('.topk li')).length;"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "docs" / "preview.png")
    p.add_argument("--media-dir", type=Path, default=REPO / "media")
    p.add_argument("--settle", type=float, default=3.0, help="seconds to let the page run before the shot")
    p.add_argument("--size", default="760,520", help="the page's viewport: WIDTH,HEIGHT")
    a = p.parse_args(argv)

    import make_bench_media as mbm
    from bench_pipeline_streamer import free_port
    from bench_view import BROWSER_FLAGS, chromium

    vtest = mbm.ensure_media(a.media_dir, need=("vtest",))["vtest"]
    port = free_port()
    cmd = [sys.executable, "-m", "streamer.cli", "--source", "demo", "--source", str(vtest), "--realtime",
           "--bind", "none", "--http", f"127.0.0.1:{port}", "--preview", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        with chromium() as driver:
            width, height = (int(x) for x in a.size.split(","))
            metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(Exception):
                    driver.get(f"http://127.0.0.1:{port}/")
                    break
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the streamer's preview page did not come up")
                time.sleep(0.2)  # polling period
            while driver.execute_script(READY) < 2:
                if time.monotonic() > deadline:
                    raise SystemExit("the page did not show both sources")
                time.sleep(0.1)  # polling period
            time.sleep(a.settle)  # let fps and latency figures settle: a picture, not a synchronisation
            a.out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(a.out))
    finally:
        proc.terminate()
        proc.wait(30)
    print(f"{a.out} ({a.out.stat().st_size // 1024} KiB; flags: {' '.join(BROWSER_FLAGS)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
