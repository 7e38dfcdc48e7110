#!/usr/bin/env python3
"""A live MPEG-TS stream over HTTP, as an IP camera or an encoder's HTTP output serves one: a .ts file sent
frame by frame at its frame rate, looping, to every client of ``/live.ts`` (on 127.0.0.1 only).

    python tools/ts_live_server.py --file clip.ts --port 8090 --fps 30   # prints "ready PORT" once listening

Frames are found from the transport stream itself: a video PES start (payload unit start, stream id 0xE0–0xEF)
begins a frame; every 188-byte packet up to the next one belongs to it. Each frame's packets go out together
when the frame is due, so a client reads a picture as soon as it is "captured", not ahead of time. Used by the
live NVDEC tests (killed and restarted on the same port) and by ``tools/bench.py nvdec`` (live 1080p30).
"""

from __future__ import annotations

import argparse
import http.server
import sys
import threading
import time
from pathlib import Path

TS_PACKET = 188
SYNC = 0x47


def ts_frames(data: bytes) -> list[bytes]:
    """The stream cut into frames: each a run of whole TS packets starting at a video PES start."""
    if len(data) < TS_PACKET or data[0] != SYNC:
        raise ValueError("not an MPEG transport stream (no sync byte at 0)")
    frames: list[bytearray] = []
    head = bytearray()  # packets before the first picture (PAT/PMT)
    for at in range(0, len(data) - TS_PACKET + 1, TS_PACKET):
        packet = data[at:at + TS_PACKET]
        if packet[0] != SYNC:
            raise ValueError(f"lost TS sync at byte {at}")
        unit_start = bool(packet[1] & 0x40)
        adaptation = (packet[3] >> 4) & 0x3
        payload = 4 + (1 + packet[4] if adaptation in (2, 3) else 0)
        pes = packet[payload:payload + 4]
        video_start = unit_start and adaptation in (1, 3) and pes[:3] == b"\x00\x00\x01" and len(pes) == 4 \
            and 0xE0 <= pes[3] <= 0xEF
        if video_start:
            frames.append(bytearray(head) if not frames else bytearray())
            head = bytearray()
        if frames:
            frames[-1] += packet
        else:
            head += packet
    if not frames:
        raise ValueError("no video picture found in the transport stream")
    return [bytes(f) for f in frames]


class Handler(http.server.BaseHTTPRequestHandler):
    frames: list[bytes] = []  # noqa: RUF012 - set once before serving
    fps = 30.0

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/live.ts":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "video/mp2t")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        period = 1.0 / self.fps
        start = time.monotonic()
        k = 0
        try:
            while True:
                self.wfile.write(self.frames[k % len(self.frames)])
                self.wfile.flush()
                k += 1
                delay = start + k * period - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # the frame period: this is a paced source, not a synchronisation
        except (OSError, ValueError):
            return  # the client went away, or the server is shutting down


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--file", type=Path, required=True,
                   help="an MPEG-TS file (H.264/HEVC; no B-frames, as cameras encode)")
    p.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    p.add_argument("--fps", type=float, default=30.0)
    a = p.parse_args(argv)
    Handler.frames = ts_frames(a.file.read_bytes())
    Handler.fps = a.fps
    deadline = time.monotonic() + 20.0
    while True:  # a restarted server's port may linger a moment
        try:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    server.daemon_threads = True
    print(f"ready {server.server_address[1]} {len(Handler.frames)} frames", flush=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        thread.join()
    except KeyboardInterrupt:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
