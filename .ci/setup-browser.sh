#!/usr/bin/env bash
# System packages for the preview page's browser test (tests/control/test_preview_browser.py) and the view bench:
#   chromium + chromium-driver   a real headless Chromium, driven by selenium (pip: the dev extra)
# Installs only what is missing; without them that test skips and says which packages to install.
set -euo pipefail

need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  echo "setup-browser: $(/usr/bin/chromium --version 2>/dev/null | head -1) and its driver are ready"
else
  echo "setup-browser: chromium/chromium-driver still not installed; the browser test will skip"
fi
