#!/usr/bin/env bash
# One call on a lent GPU machine that has Python, NumPy, CuPy and most of the package's
# dependencies but no network: make the checkout importable with what the machine lacks
# (pure-Python wheels carried in .whl/, unpacked into .deps/, no pip needed), build the
# compiled CPU kernel in place if the machine can (else the CPU baseline uses NumPy, and the
# JSON says so), then run benchmarks/gpu_check.py with the arguments given, e.g.
#
#   bash benchmarks/gpu_check.sh --budget 150 --json "$OUT/gpu_check.json"
#
# PYTHON picks the interpreter (default: python3, else python).
set -u
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-$(command -v python3 || command -v python)}
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -c '
import glob, zipfile
for wheel in sorted(glob.glob(".whl/*.whl")):
    zipfile.ZipFile(wheel).extractall(".deps")
    print("gpu_check.sh: unpacked", wheel)
'
fi
export PYTHONPATH="$PWD/.deps:$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import xyz2image_gpu.pipeline.kernels._splat" 2>/dev/null; then
    log=$(mktemp)
    if timeout 120 "$PY" setup.py -q build_ext --inplace >"$log" 2>&1; then
        echo "gpu_check.sh: built the compiled CPU kernel"
    else
        echo "gpu_check.sh: compiled CPU kernel not built (the CPU baseline uses NumPy):"
        tail -n 3 "$log"
    fi
    rm -f "$log"
fi
exec "$PY" benchmarks/gpu_check.py "$@"
