# Sourced by tools/gpu_check.sh and tools/gpu_pipeline.sh (not run alone): installs the carried wheels
# (.whl: pycuda, pyzmq, ...) into /tmp/site and puts it and the repo on PYTHONPATH.
# Needs $OUT (install.log goes there); SKIP_INSTALL=1 skips the install; exits 2 if it fails.
gpu_install() {
  local caller=$1
  echo "== install =="
  if [ -n "${SKIP_INSTALL:-}" ]; then
    echo "skipped (SKIP_INSTALL set)"
  elif ! bash .whl/install.sh .whl /tmp/site >"$OUT/install.log" 2>&1; then
    cat "$OUT/install.log"; echo "$caller: wheel install failed" >&2; exit 2
  else
    tail -n 1 "$OUT/install.log"
  fi
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
}
