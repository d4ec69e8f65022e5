#!/usr/bin/env bash
# Every GPU number in one call (issue 19): bench/gpu.sh [--smoke] [--out DIR] [--budget-s S] [--only STEP...]
#
# Installs the wheels carried in .whl/ (bench/gpu_wheels.sh downloads them; AGFSYNC_WHEELS names
# another folder) into a temporary site folder put on PYTHONPATH, then runs bench/gpu.py: kernels,
# generation, DPO step and VQA, each with its own time budget. PYTHON picks the interpreter
# (default python3, the one holding torch on the GPU image). bench/README.md has the command for
# the GPU machine and how to read DIR/gpu.json and DIR/gpu.md.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-python3}"
wheels="${AGFSYNC_WHEELS:-$root/.whl}"
for arg in "$@"; do
  case "$arg" in -h|--help) exec "$py" "$root/bench/gpu.py" --help ;; esac
done
if compgen -G "$wheels/*.whl" >/dev/null; then
  site="$(mktemp -d)/site"
  echo "gpu.sh: installing $(ls "$wheels"/*.whl | wc -l) wheels from $wheels into $site"
  "$py" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
    --upgrade --target "$site" "$wheels"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" AGFSYNC_GPU_SITE="$site"
else
  echo "gpu.sh: no wheels in $wheels: using the installed packages"
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$py" "$root/bench/gpu.py" "$@"
