#!/usr/bin/env bash
# The --annotate / --preview cost benchmark on the GPU host, in one command from the repository root:
#   bash tools/gpu_view.sh                      # JSON and logs under $OUT (default: out/gpu_view)
# What it needs in the tree (the `run` tool's carry: [".whl", "media"]): the wheels (.whl/install.sh, as
# tools/gpu_pipeline.sh) and media/ (vtest.avi, vtest_1080p.mp4; made here with ffmpeg when missing).
# The host has no Chromium: "preview open" is measured with a plain HTTP client keeping the page's stream
# (/preview/feed) open and reading every JPEG (tools/preview_client.py); the browser variant is skipped and
# says so. The 1080p clip is played 4 times over (one stream-copied file) so that each run lasts seconds.
# BENCH_ARGS adds/overrides bench options (e.g. "--rounds 5 --preview-fps 10"). About 4 minutes.
set -uo pipefail
OUT=${OUT:-$PWD/out/gpu_view}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
BENCH_ARGS=${BENCH_ARGS:-}
WORK=${WORK:-/tmp/gpu_view_work}
mkdir -p "$WORK"
t0=$(date +%s)

# shellcheck source=tools/gpu_install.sh
source "$(dirname "$0")/gpu_install.sh"
gpu_install gpu_view

echo "== environment =="
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no GPU"
  echo "cores: $(nproc); ffmpeg: $(command -v ffmpeg || echo none); chromium: $(command -v chromium || echo none)"
} 2>&1 | tee "$OUT/env.log"

echo "== media =="
python3 tools/make_bench_media.py --out-dir media 2>&1 | tee "$OUT/media.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "gpu_view: no bench media" >&2; exit 2; }

echo "== bench ($(( $(date +%s) - t0 )) s so far) =="
# shellcheck disable=SC2086
timeout 520 python3 tools/bench.py view --repeat 4 --rounds 3 --work-dir "$WORK" --json-out "$OUT/view.json" \
  $BENCH_ARGS 2>&1 | tee "$OUT/view.log"
rc=${PIPESTATUS[0]}
mkdir -p "$OUT/logs"
cp "$WORK"/*.log "$WORK"/*.summary.json "$OUT/logs/" 2>/dev/null
echo "gpu_view: bench exit $rc after $(( $(date +%s) - t0 )) s (results in $OUT)"
exit "$rc"
