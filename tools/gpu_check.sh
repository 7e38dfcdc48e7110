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

# shellcheck source=tools/gpu_install.sh
source "$(dirname "$0")/gpu_install.sh"
gpu_install gpu_check

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
WORK=${WORK:-/tmp/gpu_check_work}
mkdir -p "$WORK"
timeout "$BENCH_LIMIT" python3 tools/bench.py engine --json-out "$OUT/bench_engine.json" --work-dir "$WORK" \
  $BENCH_ARGS 2>&1 \
  | grep -v "torchvision is not installed" | tee "$OUT/bench_engine.log"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] || { echo "gpu_check: bench exited $rc"; status=1; }

echo "== pipeline smoke: the CLI on the demo clip, torch (CUDA executor) vs onnxruntime =="
MODEL=engines/shapes_cnn.onnx
[ -f "$MODEL" ] || MODEL=$WORK/seed_cnn_random.onnx
{
  for backend in torch onnxruntime; do
    timeout 120 python3 -m streamer.cli --source engines/demo/shapes_demo.mp4 --model "$MODEL" \
      --backend "$backend" --bind none --output "$WORK/preds_$backend.jsonl" \
      --summary-json "$WORK/summary_$backend.json" -q
    echo "streamer --backend $backend: exit $?"
  done
  python3 - "$WORK" <<'PY'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
top1 = {}
for b in ("torch", "onnxruntime"):
    s = json.loads((work / f"summary_{b}.json").read_text())
    print(f"{b:12} frames {s['frames']} fps {s['fps']} batches {s['batches']} failed {s['failed_batches']} "
          f"latency p50 {s['latency_ms']['p50']} ms, model {s['model']}")
    rows = [json.loads(line) for line in (work / f"preds_{b}.jsonl").read_text().splitlines()]
    top1[b] = {(r["source"], r["frame"]): r["topk"][0]["index"] for r in rows if r.get("type") == "pred"}
same = sum(top1["torch"].get(k) == v for k, v in top1["onnxruntime"].items())
print(f"top-1 agreement torch vs onnxruntime: {same}/{len(top1['onnxruntime'])} frames")
PY
} 2>&1 | tee "$OUT/pipeline_smoke.log"

echo "== summary =="
grep -E "(test_cuda|test_torch_cuda|test_tensorrt)\.py::.*(PASSED|FAILED|ERROR|SKIPPED)|^(FAILED|ERROR) " \
  "$OUT/gpu_tests.log" | cut -c1-220
grep -oE "(top-1 agreement|host RSS) .*" "$OUT/gpu_tests.log"
grep -E "^=+ .*(passed|failed|error).* =+$" "$OUT/gpu_tests.log" | tail -n 1
grep -E "^(torch|onnxruntime) |top-1 agreement torch" "$OUT/pipeline_smoke.log"
echo "gpu_check: status $status (logs in $OUT)"
exit $status
