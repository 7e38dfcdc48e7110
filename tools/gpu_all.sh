#!/usr/bin/env bash
# Every GPU-host check and benchmark, from the repository root, in as few device calls as the time limit of one
# call allows:   STEPS="check nvdec" bash tools/gpu_all.sh      then   STEPS="view multi" bash tools/gpu_all.sh
#   check   tools/gpu_check.sh: the GPU tests of the executors and backends, `tools/bench.py engine`, a CLI smoke
#   before  `tools/bench.py engine` of another checkout (BEFORE=dir, e.g. the commit before a redesign), for a
#           before/after comparison in the same call
#   nvdec   tools/gpu_nvdec.sh: the NVDEC tests and `tools/bench.py nvdec`
#   view    tools/gpu_view.sh: --annotate / --preview cost
#   multi   tools/gpu_multi.sh: two GPUs vs one (needs a 2-GPU host)
# Carry [".whl", "media/nvdec", "media/vtest_1080p.mp4", "media/vtest_1080p_x3.mp4"] (and the BEFORE folder).
# Each step's own knobs pass through (BENCH_ARGS_<STEP>, e.g. BENCH_ARGS_NVDEC="--concurrency 1,8").
# Everything under $OUT/<step>/ is packed into $OUT/<step>.tgz (the device tool brings back few files).
set -uo pipefail
OUT=${OUT:-$PWD/out/gpu_all}
STEPS=${STEPS:-check nvdec view multi}
BEFORE=${BEFORE:-.before}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
status=0
t0=$(date +%s)
for step in $STEPS; do
  echo "=================== $step ($(( $(date +%s) - t0 )) s so far) ==================="
  dir="$OUT/$step"
  mkdir -p "$dir"
  case $step in
    check)  OUT=$dir BENCH_ARGS=${BENCH_ARGS_CHECK:-} bash "$here/gpu_check.sh" ;;
    before) (cd "$BEFORE" && PYTHONPATH=/tmp/site:$PWD timeout 300 python3 tools/bench.py engine \
               --json-out "$dir/bench_engine.json" --work-dir /tmp/before_work ${BENCH_ARGS_BEFORE:-}) 2>&1 \
               | grep -v "torchvision is not installed" | tee "$dir/bench_engine.log"
            [ "${PIPESTATUS[0]}" -eq 0 ] ;;
    nvdec)  OUT=$dir SKIP_INSTALL=${SKIP_INSTALL:-} BENCH_ARGS=${BENCH_ARGS_NVDEC:-} bash "$here/gpu_nvdec.sh" ;;
    view)   OUT=$dir BENCH_ARGS=${BENCH_ARGS_VIEW:-} bash "$here/gpu_view.sh" ;;
    multi)  OUT=$dir BENCH_ARGS=${BENCH_ARGS_MULTI:-} bash "$here/gpu_multi.sh" ;;
    *)      echo "gpu_all: unknown step $step" >&2; false ;;
  esac
  rc=$?
  [ "$rc" -eq 0 ] || { echo "gpu_all: step $step exited $rc"; status=1; }
  export SKIP_INSTALL=1  # the wheels are in /tmp/site after the first step
  tar czf "$OUT/$step.tgz" -C "$dir" . && rm -rf "$dir"
done
echo "gpu_all: status $status after $(( $(date +%s) - t0 )) s"
exit $status
