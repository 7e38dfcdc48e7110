"""A real Prometheus server (Debian's ``prometheus`` package) for the tests: started on 127.0.0.1 with a
scrape config and a storage folder of the test's own, queried through its HTTP API, stopped at the end.

Import as ``from prometheus_server import ...``. ``.ci/setup-live.sh`` installs the package; without it the
tests that need it skip and say so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from servers import free_port, stop_process

START_TIMEOUT_S = 60.0


def prometheus_missing() -> str | None:
    """None when the prometheus binary is here, else what to install."""
    if shutil.which("prometheus"):
        return None
    return "prometheus is not installed (apt-get install prometheus; .ci/setup-live.sh does it)"


class Prometheus:
    """``prometheus`` scraping ``config`` (YAML text), its API on a free loopback port."""

    def __init__(self, config: str, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.config_path = folder / "prometheus.yml"
        self.config_path.write_text(config)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = folder / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Prometheus:
        cmd = ["prometheus", f"--config.file={self.config_path}",
               f"--storage.tsdb.path={self.folder / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
               "--log.level=warn",
               "--storage.tsdb.retention.time=1h"]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        pause = threading.Event()
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.proc.returncode}: {self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus not ready within {START_TIMEOUT_S} s: {self.log()}")
            pause.wait(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:] if self.log_path.is_file() else ""

    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/<path>?params`` → its ``data`` (AssertionError unless status is success)."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read())
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector: [{"metric": {labels}, "value": [time, "value"]}, ...]."""
        return self.api("query", query=expr)["result"]

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def __enter__(self) -> Prometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
