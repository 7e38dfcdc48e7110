#!/usr/bin/env bash
# The end-to-end pipeline benchmark on the GPU host, in one command from the repository root:
#   bash tools/gpu_pipeline.sh                  # JSON, PNG, logs under $OUT (default: out/gpu_pipeline)
# What it needs in the tree (the `run` tool's carry: [".whl", "media"]):
#   .whl/          the wheels (.whl/install.sh: pyzmq, pycuda, ...); the H100 host already has matplotlib
#                  3.11.2 (checked) — a host without it takes wheels from .whl/bench/ if present
#                  (pip download matplotlib --only-binary=:all: --python-version 3.12 ...; ~24 MB, which
#                  with media/ and the tree passes the 64 MiB carry limit), else the chart is skipped
#   media/         vtest.avi and vtest_1080p.mp4 (python tools/make_bench_media.py); the clip is made here
#                  with ffmpeg when it is missing and ffmpeg exists
# Steps: install → environment → media → `tools/bench.py pipeline` (default: vtest, 1080p ×1/4/8/16, live
# 180 s in 60 s windows; optional $VARIANTS). About 6 minutes on the H100 host.
# BENCH_ARGS adds/overrides bench options;
# BENCH_LIMIT (s) bounds the bench (the JSON of what finished is kept in pipeline.partial.json).
set -uo pipefail
OUT=${OUT:-$PWD/out/gpu_pipeline}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
BENCH_LIMIT=${BENCH_LIMIT:-470}
BENCH_ARGS=${BENCH_ARGS:-}
# extra runs with environment overrides, e.g. the OpenCV threading the pipeline had before NativeThreads
# (issue 5 note): VARIANTS=1080p:OPENCV_FOR_THREADS_NUM=16,16x1080p:OPENCV_FFMPEG_THREADS=16+OPENCV_FOR_THREADS_NUM=16
# (each adds ~20-40 s: keep the whole call inside the 9-minute budget)
VARIANTS=${VARIANTS-}
WORK=${WORK:-/tmp/gpu_pipeline_work}
mkdir -p "$WORK"
t0=$(date +%s)

# shellcheck source=tools/gpu_install.sh
source "$(dirname "$0")/gpu_install.sh"
gpu_install gpu_pipeline
if python3 -c 'import matplotlib' 2>/dev/null; then
  echo "matplotlib: already on the host ($(python3 -c 'import matplotlib; print(matplotlib.__version__)'))"
elif ls .whl/bench/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/bench/*.whl \
    >>"$OUT/install.log" 2>&1 && echo "matplotlib: installed from .whl/bench" \
    || echo "matplotlib: install failed (no chart; redraw it with tools/bench.py pipeline --chart-from)"
else
  echo "matplotlib: not on the host and no .whl/bench wheels: no chart"
fi

echo "== environment =="
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || echo "no GPU"
  echo "cores: $(nproc); ffmpeg: $(command -v ffmpeg || echo none)"
  python3 - <<'EOF'
import importlib, platform
print("python", platform.python_version())
for name in ("torch", "pycuda", "onnxruntime", "numpy", "cv2", "zmq", "matplotlib"):
    try:
        m = importlib.import_module(name)
        print(name, getattr(m, "VERSION_TEXT", None) or getattr(m, "__version__", "?"))
    except Exception as exc:
        print(name, "-", type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
import cv2
print("cv2 threads", cv2.getNumThreads(), "| videoio ffmpeg:",
      "FFMPEG:" in cv2.getBuildInformation() and "YES" in cv2.getBuildInformation().split("FFMPEG:")[1][:40])
from streamer.backends import select
sel = select.choose("auto")
print("backend auto ->", sel.name, "| skipped:", "; ".join(f"{n}: {r}" for n, r in sel.skipped))
EOF
} 2>&1 | tee "$OUT/env.log"

echo "== media =="
python3 tools/make_bench_media.py --out-dir media 2>&1 | tee "$OUT/media.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "gpu_pipeline: no bench media" >&2; exit 2; }

echo "== bench ($(( $(date +%s) - t0 )) s so far) =="
# shellcheck disable=SC2086
timeout "$BENCH_LIMIT" python3 tools/bench.py pipeline --json-out "$OUT/pipeline.json" --work-dir "$WORK" \
  --concurrency 1,4,8,16 --live-seconds 180 --live-window 60 --engine-seconds 2 --variants "$VARIANTS" \
  $BENCH_ARGS 2>&1 \
  | tee "$OUT/pipeline.log"
rc=${PIPESTATUS[0]}
mkdir -p "$OUT/logs"
cp "$WORK"/*.log "$OUT/logs/" 2>/dev/null
ls "$WORK"/*.summary.json >/dev/null 2>&1 && cp "$WORK"/*.summary.json "$OUT/logs/"
echo "gpu_pipeline: bench exit $rc after $(( $(date +%s) - t0 )) s (results in $OUT)"
exit "$rc"
