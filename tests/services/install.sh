#!/usr/bin/env bash
# Install a real OpenStack Ironic and Keystone (and gunicorn to serve Keystone) into a virtualenv
# of their own, so that their pins never meet the project's. The real-service tests find it at
# ${SOVEREIGN_SERVICES_VENV:-$HOME/.cache/sovereign-tui/services-venv}.
#
# Idempotent: an up-to-date venv is left alone; run it again after requirements.txt or
# constraints.txt change. Needs no root. Uses pip's own configuration for where packages come from.
#
#   PYTHON=/path/to/python3.11        interpreter for the venv (default: the project's .venv Python)
#   SOVEREIGN_SERVICES_UNPINNED=1     ignore constraints.txt (to refresh it)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${SOVEREIGN_SERVICES_VENV:-$HOME/.cache/sovereign-tui/services-venv}"
marker="$venv/.sovereign-services-installed"

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$root/.venv/bin/python" ]]; then
        PYTHON="$root/.venv/bin/python"
    else
        PYTHON="$(command -v python3)"
    fi
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "install.sh: $PYTHON is older than Python 3.11, which Ironic and Keystone need; set PYTHON=" >&2
    exit 1
fi

version() { "$1" -c 'import sys; print(sys.version.split()[0])'; }

constraints=(-c "$here/constraints.txt")
if [[ "${SOVEREIGN_SERVICES_UNPINNED:-0}" == "1" ]]; then
    constraints=()
fi
# What this venv was built from: the interpreter's version and both input files.
wanted="$(version "$PYTHON") ${SOVEREIGN_SERVICES_UNPINNED:-0}
$(cat "$here/requirements.txt" "$here/constraints.txt")"

if [[ -f "$marker" && "$(cat "$marker")" == "$wanted" ]]; then
    echo "services venv up to date: $venv"
    exit 0
fi

if [[ -e "$venv" && ! -f "$venv/pyvenv.cfg" && -n "$(ls -A "$venv")" ]]; then
    echo "install.sh: $venv exists and is not a virtualenv; point SOVEREIGN_SERVICES_VENV elsewhere" >&2
    exit 1
fi
rm -f "$marker"
if [[ -f "$venv/pyvenv.cfg" && "$(version "$venv/bin/python" || true)" != "$(version "$PYTHON")" ]]; then
    rm -rf "$venv"  # built by another interpreter: start again
fi
if [[ ! -x "$venv/bin/python" ]]; then
    mkdir -p "$(dirname "$venv")"
    "$PYTHON" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet -r "$here/requirements.txt" "${constraints[@]}"
# Fails here, not in the tests, if a dependency is broken.
"$venv/bin/python" -W ignore -c 'import ironic.command.singleprocess, keystone.server.wsgi, gunicorn'
for tool in ironic ironic-dbsync keystone-manage gunicorn; do
    [[ -x "$venv/bin/$tool" ]] || { echo "install.sh: $venv/bin/$tool is missing" >&2; exit 1; }
done
printf '%s' "$wanted" > "$marker"
echo "installed real Ironic and Keystone into $venv ($(du -sh "$venv" | cut -f1))"
