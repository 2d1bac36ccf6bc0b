#!/usr/bin/env bash
# The wheelhouse (no root): the project's wheel and every dependency, as wheels for the image's
# Python (Debian 12: CPython 3.11, x86_64, glibc 2.36), so the image installs with --no-index.
# Uses pip's own configuration, like any other install on this machine.
#
#   appliance/iso/wheelhouse.sh [OUT_DIR]      (default appliance/iso/out/wheelhouse)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$here/out/wheelhouse}"
python="${PYTHON:-$root/.venv/bin/python}"
[ -x "$python" ] || python="$(command -v python3)"

want="3.11"
have="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
arch="$("$python" -c 'import platform; print(platform.machine())')"
if [ "$have" != "$want" ] || [ "$arch" != "x86_64" ]; then
    echo "wheelhouse: $python is Python $have on $arch; the image runs Python $want on x86_64." >&2
    echo "wheelhouse: run it with PYTHON=/path/to/python3.11 on an x86_64 machine" >&2
    exit 2
fi

start=$(date +%s)
rm -rf "$out"
mkdir -p "$out"
# The project's own wheel and its dependencies' wheels; an sdist-only dependency is built here,
# with this same interpreter, so the result still matches the image.
"$python" -m pip wheel --quiet --wheel-dir "$out" "$root"
# pip itself, so the image's venv installs with the same pip version, offline.
"$python" -m pip download --quiet --only-binary=:all: --dest "$out" pip

# Everything must be pure Python or built for this interpreter and platform.
bad=$(find "$out" -name '*.whl' | grep -v -E -- '-(py3|py2\.py3|cp311|cp37|cp38|cp39|abi3)[^/]*-(none-any|manylinux[^/]*x86_64|linux_x86_64)\.whl$' || true)
if [ -n "$bad" ]; then
    echo "wheelhouse: wheels that may not install on the image:" >&2
    echo "$bad" >&2
fi
count=$(find "$out" -name '*.whl' | wc -l)
size=$(du -sh "$out" | cut -f1)
echo "wheelhouse: $count wheels, $size in $out ($(( $(date +%s) - start ))s)"
