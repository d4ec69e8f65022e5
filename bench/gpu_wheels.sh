#!/usr/bin/env bash
# Downloads exactly the wheels bench/gpu.sh needs on the GPU image (bench/gpu_wheels.txt, versions
# from requirements.lock; python 3.12, manylinux x86_64) into .whl/, builds deepspeed's pure-python
# wheel from its sdist, and fails if the wheels and the repository's files together exceed the
# 64 MiB that may travel to the GPU machine.
#   bench/gpu_wheels.sh [DIR]              download into DIR (default .whl, ignored by git)
#   bench/gpu_wheels.sh --check-only [DIR] only the size check
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-$root/.venv/bin/python}"
test -x "$py" || py=python3
check_only=0
if [ "${1:-}" = "--check-only" ]; then check_only=1; shift; fi
case "${1:-}" in -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
dir="${1:-$root/.whl}"
limit=$((64 * 1024 * 1024))

names=$(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$root/bench/gpu_wheels.txt" | grep -v '^$')
pin() {  # NAME -> NAME==VERSION from requirements.lock (names compared as PEP 503 normalises them)
  local want; want=$(echo "$1" | tr 'A-Z_.' 'a-z--')
  local line; line=$(grep -v '^#' "$root/requirements.lock" | while IFS= read -r l; do
    n=$(echo "${l%%==*}" | tr 'A-Z_.' 'a-z--'); [ "$n" = "$want" ] && echo "$l"; done)
  [ -n "$line" ] || { echo "gpu_wheels.sh: $1 is not in requirements.lock" >&2; exit 1; }
  echo "$line"
}

if [ $check_only = 0 ]; then
  mkdir -p "$dir"
  rm -f "$dir"/*.whl
  plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
  for name in $names; do
    spec=$(pin "$name")
    if [ "$name" = deepspeed ]; then
      DS_BUILD_OPS=0 "$py" -m pip wheel --quiet --no-deps --no-build-isolation --no-binary deepspeed -w "$dir" "$spec"
    else
      "$py" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${plat[@]}" -d "$dir" "$spec"
    fi
  done
  # bitsandbytes ships one binary per CUDA/ROCm/XPU version (41 MiB); the GPU image's torch is built for
  # CUDA 13, so only the CUDA 13 and CPU binaries travel (about 4 MiB), and RECORD is rewritten to match
  "$py" - "$dir"/bitsandbytes-*.whl <<'PY'
import re, sys, zipfile
from pathlib import Path

path = Path(sys.argv[1])
drop = re.compile(r"bitsandbytes/libbitsandbytes_(cuda1[0-2]\d|rocm\d+|xpu\d+)\.(so|dll|dylib)$")
tmp = path.with_suffix(".tmp")
with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
    for item in src.infolist():
        if drop.search(item.filename):
            continue
        data = src.read(item)
        if item.filename.endswith(".dist-info/RECORD"):
            data = "".join(line for line in data.decode().splitlines(keepends=True)
                           if not drop.search(line.split(",", 1)[0])).encode()
        dst.writestr(item, data)
tmp.replace(path)
PY
fi

# what travels: the wheels, tracked files and untracked files git does not ignore
"$py" - "$root" "$dir" "$limit" <<'PY'
import os, subprocess, sys
from pathlib import Path

root, wheels_dir, limit = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                       capture_output=True, check=True).stdout.decode().split("\0")
repo = sum(os.lstat(root / f).st_size for f in files if f and os.path.lexists(root / f))
wheels = sorted(wheels_dir.glob("*.whl"))
size = sum(w.stat().st_size for w in wheels)
total = repo + size
print(f"gpu_wheels.sh: {len(wheels)} wheels {size / 2**20:.1f} MiB + repository {repo / 2**20:.1f} MiB "
      f"= {total / 2**20:.1f} MiB (limit {limit / 2**20:.0f} MiB)")
if total > limit:
    sys.exit(f"gpu_wheels.sh: {total / 2**20:.1f} MiB is over the {limit / 2**20:.0f} MiB that may travel to the GPU machine")
PY
