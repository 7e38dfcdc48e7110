#!/usr/bin/env bash
# The GPU host check, in one command from the repository root:
#   bash tools/gpu_check.sh                 # logs + JSON under $OUT (default: out/gpu_check)
# 1. installs the carried wheels (.whl: pycuda, pyzmq, ...) into /tmp/site,
# 2. runs the GPU executor/backend tests (and their CPU-side checks) with pytest,
# 3. runs `tools/bench.py engine` (seed CNN + ResNet-50; JSON beside the log),
# then prints a short summary (the bench tables end the output).
# Each step has its own time limit; a failing step does not stop the next. Exit status: 0 only if all passed.
set -uo pipefail
OUT=${OUT:-$PWD/out/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
TEST_LIMIT=${TEST_LIMIT:-270}
BENCH_LIMIT=${BENCH_LIMIT:-270}
BENCH_ARGS=${BENCH_ARGS:-}
status=0

echo "== install =="
if [ -n "${SKIP_INSTALL:-}" ]; then
  echo "skipped (SKIP_INSTALL set)"
elif ! bash .whl/install.sh .whl /tmp/site >"$OUT/install.log" 2>&1; then
  cat "$OUT/install.log"; echo "gpu_check: wheel install failed" >&2; exit 2
else
  tail -n 1 "$OUT/install.log"
fi
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}

echo "== environment =="
{
  nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader \
    || echo "nvidia-smi: no GPU"
  python3 - <<'EOF'
import importlib, platform
print("python", platform.python_version())
for name in ("torch", "pycuda", "onnxruntime", "onnx", "numpy", "cv2", "zmq", "pytest", "tensorrt", "tensorrt_rtx"):
    try:
        m = importlib.import_module(name)
        print(name, getattr(m, "VERSION_TEXT", None) or getattr(m, "__version__", "?"))
    except Exception as exc:
        print(name, "-", type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
import torch
print("torch.cuda", torch.cuda.is_available(), torch.version.cuda,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
from streamer.backends import select
sel = select.choose("auto")
print("backend auto ->", sel.name, "| skipped:", "; ".join(f"{n}: {r}" for n, r in sel.skipped))
EOF
} 2>&1 | tee "$OUT/env.log"

echo "== tests =="
timeout "$TEST_LIMIT" python3 -m pytest -p no:cacheprovider -o addopts="" -v -rsfE --timeout 240 \
  --junitxml="$OUT/gpu_tests.xml" \
  tests/executors/test_cuda.py tests/backends/test_torch_cuda.py tests/backends/test_tensorrt.py \
  tests/backends/test_select.py -s 2>&1 | tee "$OUT/gpu_tests.log"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] || { echo "gpu_check: tests exited $rc"; status=1; }

echo "== bench =="
# shellcheck disable=SC2086
timeout "$BENCH_LIMIT" python3 tools/bench.py engine --json-out "$OUT/bench_engine.json" $BENCH_ARGS 2>&1 \
  | grep -v "torchvision is not installed" | tee "$OUT/bench_engine.log"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] || { echo "gpu_check: bench exited $rc"; status=1; }

echo "== summary =="
grep -E "(test_cuda|test_torch_cuda|test_tensorrt)\.py::.*(PASSED|FAILED|ERROR|SKIPPED)|^(FAILED|ERROR) " \
  "$OUT/gpu_tests.log" | cut -c1-220
grep -E "^=+ .*(passed|failed|error).* =+$" "$OUT/gpu_tests.log" | tail -n 1
echo "gpu_check: status $status (logs in $OUT)"
exit $status
