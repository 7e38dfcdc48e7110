#!/usr/bin/env bash
# The NVDEC path on the GPU host, in one command from the repository root:
#   bash tools/gpu_nvdec.sh                 # logs + JSON under $OUT (default: out/gpu_nvdec)
# What it needs in the tree (the `run` tool's carry: [".whl", "media"]):
#   .whl/          the wheels (.whl/install.sh: pyzmq, pycuda, PyNvVideoCodec's pre-installed tree)
#   media/         vtest_1080p.mp4 (tools/make_bench_media.py) and media/nvdec/ (tools/make_nvdec_media.py:
#                  live_1080p_nob.{mp4,ts}, uhd_hevc.mp4, damaged.mp4; ~7 MB) — made where ffmpeg is, carried
# Steps: install → environment → GPU tests (marker gpu: tests/gpu, tests/sources/test_nvdec_*.py, executors,
# backends; STREAMER_NVDEC_MEDIA points them at media/nvdec) → the kernel against OpenCV on NVDEC's NV12
# (tools/nv12_match.py) → `tools/bench.py nvdec` (1080p ×1/8/16 and 4K HEVC through CPU and NVDEC decoding, the
# naive loop, live 1080p30 over HTTP, start-up per backend).
# Default: about 7 minutes (tests ~1.5, bench ~5 with a 120 s live run). Knobs:
#   TEST_LIMIT / BENCH_LIMIT (s) bound each step; SKIP_TESTS=1 / SKIP_BENCH=1 leave one out;
#   BENCH_ARGS adds/overrides bench options, e.g. "--concurrency 1,8 --live-seconds 30 --live-cpu".
set -uo pipefail
OUT=${OUT:-$PWD/out/gpu_nvdec}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
TEST_LIMIT=${TEST_LIMIT:-240}
BENCH_LIMIT=${BENCH_LIMIT:-480}
BENCH_ARGS=${BENCH_ARGS:-}
MEDIA=${STREAMER_NVDEC_MEDIA:-$PWD/media/nvdec}
export STREAMER_NVDEC_MEDIA=$MEDIA
status=0
t0=$(date +%s)

# shellcheck source=tools/gpu_install.sh
source "$(dirname "$0")/gpu_install.sh"
gpu_install gpu_nvdec

echo "== environment =="
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "no GPU"
  echo "cores: $(nproc); media: $(ls "$MEDIA" 2>/dev/null | tr '\n' ' ')"
  python3 - <<'EOF'
import importlib
for name in ("torch", "pycuda", "PyNvVideoCodec", "cv2", "zmq"):
    try:
        m = importlib.import_module(name)
        print(name, getattr(m, "VERSION_TEXT", None) or getattr(m, "__version__", "?"))
    except Exception as exc:
        print(name, "-", type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
from streamer.sources.nvdec import nvdec_reason
print("NVDEC:", nvdec_reason() or "available")
EOF
} 2>&1 | tee "$OUT/env.log"

if [ -z "${SKIP_TESTS:-}" ]; then
  echo "== tests ($(( $(date +%s) - t0 )) s so far) =="
  # -m gpu: the GPU-host halves (the CPU halves need ffmpeg, which this host lacks; CI runs them)
  timeout "$TEST_LIMIT" python3 -m pytest -p no:cacheprovider -o addopts="" -v -rsfE --timeout 200 -s -m gpu \
    --junitxml="$OUT/nvdec_tests.xml" tests/gpu tests/sources/test_nvdec_choice.py \
    tests/sources/test_nvdec_gpu.py tests/executors tests/backends 2>&1 | tee "$OUT/nvdec_tests.log"
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { echo "gpu_nvdec: tests exited $rc"; status=1; }
  echo "== kernel vs OpenCV, NV12 from NVDEC =="
  demo=$(python3 -c "from streamer.paths import DEMO_DIR; print(DEMO_DIR / 'shapes_demo.mp4')")
  timeout 120 python3 tools/nv12_match.py media/vtest_1080p.mp4 "$demo" --nv12-from nvdec --kernel \
    --json-out "$OUT/nv12_match.json" 2>&1 | tee "$OUT/nv12_match.log" | grep -E "^[a-z_0-9]+\.mp4|x[0-9]+ +exact"
fi

if [ -z "${SKIP_BENCH:-}" ]; then
  echo "== bench ($(( $(date +%s) - t0 )) s so far) =="
  uhd=(); [ -f "$MEDIA/uhd_hevc.mp4" ] && uhd=(--uhd "$MEDIA/uhd_hevc.mp4")
  live=(); [ -f "$MEDIA/live_1080p_nob.ts" ] && live=(--live-ts "$MEDIA/live_1080p_nob.ts")
  # shellcheck disable=SC2086
  timeout "$BENCH_LIMIT" python3 tools/bench.py nvdec --json-out "$OUT/nvdec.json" --work-dir /tmp/gpu_nvdec_work \
    "${uhd[@]}" "${live[@]}" $BENCH_ARGS 2>&1 | tee "$OUT/bench_nvdec.log"
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { echo "gpu_nvdec: bench exited $rc"; status=1; }
  tar czf "$OUT/streamer_logs.tgz" -C /tmp/gpu_nvdec_work . 2>/dev/null || true  # one file: $OUT returns few
fi

echo "== summary =="
grep -E "^(PASSED|FAILED|ERROR)|(PASSED|FAILED|ERROR|SKIPPED)( |$)" "$OUT/nvdec_tests.log" 2>/dev/null | cut -c1-200
grep -E "top-1 agreement|live NVDEC|CPU [0-9]+ frames; NVDEC" "$OUT/nvdec_tests.log" 2>/dev/null
grep -E "^=+ .*(passed|failed|error).* =+$" "$OUT/nvdec_tests.log" 2>/dev/null | tail -n 1
echo "gpu_nvdec: status $status after $(( $(date +%s) - t0 )) s (logs in $OUT)"
exit $status
