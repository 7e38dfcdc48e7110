#!/usr/bin/env bash
# System packages for the live-source tests (tests/live/, tests/test_shutdown.py, tests/test_hostile.py):
#   ffmpeg                      encodes test clips and serves HTTP MJPEG (`ffmpeg -f mpjpeg -listen 1`)
#   GStreamer's RTSP server     a real RTSP server (tests/gst_rtsp_server.py), run by the system Python
#                               (/usr/bin/python3 with PyGObject) whatever Python the tests run on
#   prometheus                  a real Prometheus that scrapes the control plane (tests/prometheus_server.py)
# Installs only what is missing; the tests that need a missing tool skip and say which package to install.
set -euo pipefail

gst_ok() {
  [ -x /usr/bin/python3 ] && /usr/bin/python3 - >/dev/null 2>&1 <<'PY'
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer  # noqa: F401
Gst.init(None)
assert all(Gst.ElementFactory.find(e) for e in ("filesrc", "avidemux", "jpegparse", "rtpjpegpay"))
PY
}

need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
gst_ok || need+=(python3 python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base
                 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v prometheus >/dev/null 2>&1 \
  && echo "setup-live: prometheus $(prometheus --version 2>&1 | sed -n '1s/.*version \([^ ]*\).*/\1/p') is ready" \
  || echo "setup-live: prometheus still not installed; the Prometheus test will skip"
gst_ok && echo "setup-live: ffmpeg and the GStreamer RTSP server are ready" \
       || echo "setup-live: GStreamer RTSP server still not usable; the RTSP test will skip"
