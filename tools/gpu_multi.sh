#!/usr/bin/env bash
# Two GPUs vs one on the 2-GPU host, in one command from the repository root (no Ray there: two plain
# streamer processes, --device cuda:0 and --device cuda:1, as --workers 2 would shard the sources):
#   bash tools/gpu_multi.sh                 # JSON + logs under $OUT (default: out/gpu_multi)
# What it needs in the tree (the `run` tool's carry: [".whl", "media"]):
#   .whl/          the wheels (.whl/install.sh: pyzmq, pycuda, PyNvVideoCodec ...)
#   media/         vtest_1080p.mp4 (python tools/make_bench_media.py); each source plays it three times
#                  (vtest_1080p_x3.mp4, 2,385 frames: made by the bench with ffmpeg -stream_loop, or carried;
#                  without ffmpeg and without it, once: shorter, noisier runs)
# Steps: install → environment (both GPUs, NVDEC) → `tools/bench.py multigpu`: 8 sources of 1080p H.264 with
# --decode nvdec, one process on cuda:0 vs two at once on cuda:0 + cuda:1, 2 interleaved rounds; every
# (source, frame) checked once in every --output. About 2-3 minutes. Knobs: BENCH_ARGS (e.g. "--decode cpu"
# or "--rounds 3"), BENCH_LIMIT (s).
set -uo pipefail
OUT=${OUT:-$PWD/out/gpu_multi}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
BENCH_LIMIT=${BENCH_LIMIT:-500}
BENCH_ARGS=${BENCH_ARGS:-}
WORK=${WORK:-/tmp/gpu_multi_work}
mkdir -p "$WORK"
t0=$(date +%s)

# shellcheck source=tools/gpu_install.sh
source "$(dirname "$0")/gpu_install.sh"
gpu_install gpu_multi

echo "== environment =="
{
  nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader || echo "no GPU"
  echo "cores: $(nproc); CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-(unset)}"
  python3 - <<'PY'
import importlib
for name in ("torch", "pycuda", "PyNvVideoCodec", "cv2", "zmq"):
    try:
        m = importlib.import_module(name)
        print(name, getattr(m, "VERSION_TEXT", None) or getattr(m, "__version__", "?"))
    except Exception as exc:
        print(name, "-", type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
from streamer.devices import visible_gpus
from streamer.sources.nvdec import nvdec_reason
print("GPUs visible:", visible_gpus(), "| NVDEC:", nvdec_reason() or "available")
PY
} 2>&1 | tee "$OUT/env.log"

clip=media/vtest_1080p.mp4 loops=3  # the bench makes the 3x clip itself where ffmpeg is
[ -f media/vtest_1080p_x3.mp4 ] && clip=media/vtest_1080p_x3.mp4 loops=1
[ -f "$clip" ] || { echo "gpu_multi: no $clip (python tools/make_bench_media.py, then carry media/)" >&2; exit 2; }

echo "== bench ($(( $(date +%s) - t0 )) s so far) =="
# shellcheck disable=SC2086
timeout "$BENCH_LIMIT" python3 tools/bench.py multigpu --clip "$clip" --loops "$loops" --work-dir "$WORK" \
  --json-out "$OUT/multigpu.json" $BENCH_ARGS 2>&1 | tee "$OUT/multigpu.log"
rc=${PIPESTATUS[0]}
mkdir -p "$OUT/logs"
cp "$WORK"/*.log "$WORK"/*.json "$OUT/logs/" 2>/dev/null
echo "gpu_multi: bench exit $rc after $(( $(date +%s) - t0 )) s (results in $OUT)"
exit "$rc"
