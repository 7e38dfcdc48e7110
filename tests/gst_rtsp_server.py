"""A real RTSP server for the live tests: GStreamer's gst-rtsp-server serving an MJPEG AVI as RTP/JPEG.

Run by the system Python (it needs PyGObject and gir1.2-gst-rtsp-server-1.0; see .ci/setup-live.sh):

    /usr/bin/python3 tests/gst_rtsp_server.py PORT CLIP.avi

Serves ``rtsp://127.0.0.1:PORT/live`` (loopback only), paced in real time; each new session starts at the
clip's beginning. Prints ``ready <url>`` once listening; exits on SIGTERM/SIGINT (tests SIGKILL it to play
a server that dies).
"""

import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    port, clip = sys.argv[1], sys.argv[2]
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f'( filesrc location="{clip}" ! avidemux ! jpegparse ! rtpjpegpay name=pay0 pt=26 )')
    factory.set_shared(True)
    server.get_mount_points().add_factory("/live", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{port}", file=sys.stderr, flush=True)
        return 3
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"ready rtsp://127.0.0.1:{server.get_bound_port()}/live", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
