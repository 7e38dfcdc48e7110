"""Real stream servers on 127.0.0.1 for the live tests: an HTTP MJPEG server (a thread of this process),
ffmpeg serving HTTP MJPEG, and GStreamer's RTSP server (a subprocess of the system Python, which has
PyGObject).

Each can be killed and restarted on the same port, and the MJPEG server can also stall (keep its connections
open and send nothing) to play a camera that hangs without closing. Import as ``from servers import ...``.
Every server is stopped by its context manager / fixture; nothing listens beyond loopback.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

HOST = "127.0.0.1"
TESTS = Path(__file__).resolve().parent
GST_SERVER = TESTS / "gst_rtsp_server.py"
START_TIMEOUT_S = 20.0
SYSTEM_PYTHON = "/usr/bin/python3"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def jpeg_frames(video: Path, n: int, size: tuple[int, int]) -> list[bytes]:
    """The first ``n`` frames of a real video, resized to ``size`` (w, h), as JPEG files."""
    cap = cv2.VideoCapture(str(video))
    frames: list[bytes] = []
    try:
        while len(frames) < n:
            ok, image = cap.read()
            if not ok:
                break
            ok, data = cv2.imencode(".jpg", cv2.resize(image, size, interpolation=cv2.INTER_AREA),
                                    [cv2.IMWRITE_JPEG_QUALITY, 80])
            assert ok
            frames.append(data.tobytes())
    finally:
        cap.release()
    assert frames, f"no frame decoded from {video}"
    return frames


# -- an HTTP MJPEG server (multipart/x-mixed-replace), like an IP camera's --------------------------------
class MjpegServer:
    """Serves ``frames`` (JPEG bytes) in a loop at ``fps`` to every client of ``/video``.

    ``kill()`` closes the listening socket and every connection (like a camera losing power); ``start()``
    listens again on the same port; ``stall()`` keeps connections open but sends nothing (and does not
    answer new requests) until ``resume()``. ``auth``: (user, password) required as HTTP basic auth.
    """

    BOUNDARY = "frameboundary"

    def __init__(self, frames: list[bytes], fps: float = 25.0, auth: tuple[str, str] | None = None) -> None:
        self.frames = frames
        self.fps = fps
        self.port = free_port()
        self.auth = auth
        self.sent = 0
        self.requests = 0
        self.unauthorized = 0
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._alive = threading.Event()
        self._flowing = threading.Event()
        self._flowing.set()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo + '@' if userinfo else ''}{HOST}:{self.port}/video"

    def start(self) -> MjpegServer:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                owner._serve(self)

        deadline = time.monotonic() + START_TIMEOUT_S
        while True:  # the old socket of a restart may linger a moment
            try:
                server = http.server.ThreadingHTTPServer((HOST, self.port), Handler)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                threading.Event().wait(0.05)
        server.daemon_threads = True
        self._server = server
        self._alive.set()
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"mjpeg-server-{self.port}", daemon=True)
        self._thread.start()
        return self

    def kill(self) -> None:
        """Stop listening and drop every connection at once."""
        self._alive.clear()
        self._flowing.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        if self._thread is not None:
            self._thread.join(5.0)

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def __enter__(self) -> MjpegServer:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def _authorized(self, handler: http.server.BaseHTTPRequestHandler) -> bool:
        if self.auth is None:
            return True
        want = "Basic " + base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
        return handler.headers.get("Authorization") == want

    def _serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        self.requests += 1
        self._flowing.wait()  # a stalled server does not even answer
        if not self._alive.is_set():
            return
        if not self._authorized(handler):
            self.unauthorized += 1
            handler.send_response(401)
            handler.send_header("WWW-Authenticate", 'Basic realm="camera"')
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        if handler.path.split("?")[0] != "/video":
            handler.send_error(404)
            return
        sock = handler.connection
        with self._lock:
            self._conns.add(sock)
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={self.BOUNDARY}")
            handler.send_header("Cache-Control", "no-cache")
            handler.end_headers()
            period = 1.0 / self.fps
            pace = threading.Event()  # never set: its wait() is the frame period
            next_at = time.monotonic()
            i = 0
            while self._alive.is_set():
                self._flowing.wait()
                if not self._alive.is_set():
                    break
                jpeg = self.frames[i % len(self.frames)]
                head = (f"--{self.BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                        f"Content-Length: {len(jpeg)}\r\n\r\n").encode()
                handler.wfile.write(head + jpeg + b"\r\n")
                handler.wfile.flush()
                self.sent += 1
                i += 1
                next_at = max(next_at + period, time.monotonic() - period)
                pace.wait(max(0.0, next_at - time.monotonic()))
        except (OSError, ValueError):
            pass  # the client went away, or kill() closed the socket
        finally:
            with self._lock:
                self._conns.discard(sock)


# -- a plain static file server (progressive download, HLS playlists and segments) ----------------------
class StaticHttpServer:
    """Serves the files of ``folder`` over HTTP on 127.0.0.1 (a thread of this process)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._server: http.server.ThreadingHTTPServer | None = None

    def url(self, name: str) -> str:
        assert self._server is not None
        return f"http://{HOST}:{self._server.server_address[1]}/{name}"

    def __enter__(self) -> StaticHttpServer:
        folder = str(self.folder)

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: object, **kwargs: object) -> None:
                super().__init__(*args, directory=folder, **kwargs)  # type: ignore[arg-type]

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def make_hls(src: Path, folder: Path, frames: int, size: tuple[int, int] = (160, 120)) -> Path:
    """An HLS VOD playlist (H.264 in MPEG-TS segments of 2 s) of the first ``frames`` frames of ``src``."""
    folder.mkdir(parents=True, exist_ok=True)
    playlist = folder / "play.m3u8"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-r", "25", "-i", str(src),
                    "-frames:v", str(frames), "-vf", f"scale={size[0]}:{size[1]}", "-c:v", "libx264",
                    "-preset", "ultrafast", "-g", "25", "-f", "hls", "-hls_time", "2",
                    "-hls_playlist_type", "vod", str(playlist)],
                   check=True, timeout=120, stdin=subprocess.DEVNULL)
    return playlist


# -- ffmpeg serving HTTP ---------------------------------------------------------------------------------
def ffmpeg_available() -> str | None:
    """None if ffmpeg is usable, else why not."""
    return None if shutil.which("ffmpeg") else "ffmpeg is not installed (apt-get install ffmpeg)"


def make_mjpeg_clip(src: Path, dst: Path, size: tuple[int, int], fps: float = 25.0,
                    frames: int | None = None) -> Path:
    """Transcode a real video with ffmpeg to MJPEG in AVI (baseline JPEG with the standard Huffman tables,
    which RTP/JPEG needs), resized to ``size``, retimed to ``fps``."""
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-r", str(fps), "-i", str(src),
           "-vf", f"scale={size[0]}:{size[1]}", "-c:v", "mjpeg", "-huffman", "default", "-q:v", "6",
           "-pix_fmt", "yuvj420p"]
    if frames:
        cmd += ["-frames:v", str(frames)]
    subprocess.run([*cmd, str(dst)], check=True, timeout=120, stdin=subprocess.DEVNULL)
    return dst


class FfmpegHttpServer:
    """``ffmpeg -re -i clip -f mpjpeg -listen 1 http://127.0.0.1:PORT/``: one client, real-time, looped.
    ffmpeg exits when its client leaves; ``start()`` again serves the next one on the same port."""

    def __init__(self, clip: Path) -> None:
        self.clip = clip
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    def start(self) -> FfmpegHttpServer:
        self.kill()
        self.proc = subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1",
             "-i", str(self.clip), "-c:v", "copy", "-f", "mpjpeg", "-listen", "1", self.url],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(self.port, self.proc)
        return self

    def kill(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def __enter__(self) -> FfmpegHttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


# -- GStreamer's RTSP server -----------------------------------------------------------------------------
def gst_rtsp_available() -> str | None:
    """None if the GStreamer RTSP server can run here, else why not (the test skips with that reason)."""
    if not Path(SYSTEM_PYTHON).is_file():
        return f"{SYSTEM_PYTHON} not found (the RTSP test server runs on the system Python with PyGObject)"
    probe = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
             "missing = [e for e in ('avidemux', 'jpegparse', 'rtpjpegpay', 'filesrc') "
             "if Gst.ElementFactory.find(e) is None]; print(' '.join(missing))")
    try:
        r = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot probe GStreamer: {e}"
    if r.returncode != 0 or r.stdout.strip():
        why = r.stdout.strip() or (r.stderr.strip().splitlines() or ["?"])[-1]
        return ("GStreamer RTSP server not usable (" + why + "): run .ci/setup-live.sh (apt-get install "
                "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-base)")
    return None


class RtspServer:
    """GStreamer's gst-rtsp-server serving an MJPEG clip (made by ffmpeg) as RTP/JPEG at
    ``rtsp://127.0.0.1:PORT/live``, in real time, from the start for each new session."""

    def __init__(self, clip: Path) -> None:
        self.clip = clip
        self.port = free_port()
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://{HOST}:{self.port}/live"

    def start(self, clip: Path | None = None) -> RtspServer:
        self.kill()
        self.clip = clip or self.clip
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(GST_SERVER), str(self.port), str(self.clip)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, text=True, env=env)
        wait_listening(self.port, self.proc)
        return self

    def kill(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


# -- process helpers -------------------------------------------------------------------------------------
def is_listening(port: int) -> bool:
    """Something listens on 127.0.0.1:port, or has already accepted a client there (ffmpeg's ``-listen 1``
    closes its listening socket once its one client connects, which a reconnecting source may do at once).
    Read from /proc/net/tcp: probing with a connection of our own would use up ffmpeg's one client."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        next(f)
        return any(cols[1] == want and cols[3] in ("0A", "01") for cols in (line.split() for line in f))


def wait_listening(port: int, proc: subprocess.Popen | None = None,
                   timeout_s: float = START_TIMEOUT_S) -> None:
    """Until the server listens on 127.0.0.1:port (its process must not exit meanwhile)."""
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while not is_listening(port):
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server process exited with {proc.returncode} before listening on {port}")
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing listens on {HOST}:{port} after {timeout_s} s")
        pause.wait(0.02)


def stop_process(proc: subprocess.Popen | None) -> None:
    """SIGKILL (a server that dies, not one that says goodbye) and reap."""
    if proc is None or proc.poll() is not None:
        return
    proc.kill()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:  # pragma: no cover - the kernel reaps a SIGKILLed process
        print(f"server pid {proc.pid} did not die", file=sys.stderr)


@contextlib.contextmanager
def running(server: MjpegServer | FfmpegHttpServer | RtspServer) -> Iterator:
    server.start()
    try:
        yield server
    finally:
        server.kill()


def solid_jpegs(size: tuple[int, int], n: int = 4) -> list[bytes]:
    """Small synthetic JPEGs (for servers whose picture does not matter)."""
    out = []
    for i in range(n):
        img = np.full((size[1], size[0], 3), 40 * i, np.uint8)
        out.append(cv2.imencode(".jpg", img)[1].tobytes())
    return out
