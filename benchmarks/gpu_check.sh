#!/usr/bin/env bash
# One call on a lent GPU machine that has Python, NumPy, CuPy and most of the package's
# dependencies but no network: make the checkout importable with what the machine lacks
# (pure-Python wheels carried in .whl/, unpacked into .deps/, no pip needed), build the
# compiled CPU kernel in place if the machine can (else the CPU baseline uses NumPy, and the
# JSON says so), then run benchmarks/gpu_check.py with the arguments given, e.g.
#
#   bash benchmarks/gpu_check.sh --budget 150 --json "$OUT/gpu_check.json"
#
# PYTHON picks the interpreter (default: the first of python3, python, python3.12 that
# imports CuPy, else python3).
set -u
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    for candidate in python3 python python3.12; do
        if command -v "$candidate" >/dev/null && "$candidate" -c "import cupy" 2>/dev/null; then
            PY=$candidate
            break
        fi
    done
    PY=${PY:-$(command -v python3 || command -v python)}
fi
echo "gpu_check.sh: $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])'))"
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -c '
import glob, zipfile
for wheel in sorted(glob.glob(".whl/*.whl")):
    zipfile.ZipFile(wheel).extractall(".deps")
    print("gpu_check.sh: unpacked", wheel)
'
fi
export PYTHONPATH="$PWD/.deps:$PWD${PYTHONPATH:+:$PYTHONPATH}"
suffix=$("$PY" -c 'import importlib.machinery as m; print(m.EXTENSION_SUFFIXES[0])')
if [ ! -e "xyz2image_gpu/pipeline/kernels/_splat$suffix" ]; then
    log=$(mktemp)
    if timeout 60 "$PY" setup.py -q build_ext --inplace >"$log" 2>&1; then
        echo "gpu_check.sh: built the compiled CPU kernel"
    else
        echo "gpu_check.sh: compiled CPU kernel not built (the CPU baseline uses NumPy):"
        tail -n 3 "$log"
    fi
    rm -f "$log"
fi
exec "$PY" benchmarks/gpu_check.py "$@"
