#!/usr/bin/env bash
# Fuzz the relay's HTTP API against its own OpenAPI document with schemathesis (issue 12, part 8).
#
#   scripts/schemathesis.sh [RELAY_BINARY] [-- EXTRA_SCHEMATHESIS_ARGS...]
#
# RELAY_BINARY defaults to target/debug/relay. The run:
#   * starts localstripe (the card rail, so invoices can be created and the stateful phase can
#     follow their links) and `relay serve` on free loopback ports, with a fresh data directory
#     and webhook_allow_private off, and creates one merchant;
#   * runs schemathesis (tools/venv, pinned in tools/requirements.txt) against /openapi.json
#     with the checks below and the stateful phase, bounded in time;
#   * exits non-zero on any failure, and always stops what it started.
#
# No webhook can leave the machine: the whole run happens in a private network namespace that
# has only a loopback interface (`unshare --net`, as root or through a user namespace). Where
# no namespace can be made, the operation that registers webhook endpoints is left out and the
# run says so.
#
# Environment:
#   SCHEMATHESIS              the schemathesis executable (default tools/venv/bin/schemathesis)
#   SCHEMATHESIS_MAX_TIME     seconds schemathesis may spend in all (default 150)
#   SCHEMATHESIS_MAX_EXAMPLES test cases per operation and phase (default 50)
#   SCHEMATHESIS_SEED         a seed, to replay a run
#   SCHEMATHESIS_SCHEMA       a local OpenAPI file to test instead of the served one (to try
#                             annotation changes before a rebuild)
#   SCHEMATHESIS_REPORT_DIR   where the JUnit report goes (default target/schemathesis)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SELF="$ROOT/scripts/schemathesis.sh"
CHECKS=not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance,response_headers_conformance

fail() { printf 'schemathesis.sh: ERROR: %s\n' "$*" >&2; exit 1; }
say() { printf 'schemathesis.sh: %s\n' "$*" >&2; }

RELAY_BIN="$ROOT/target/debug/relay"
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
  RELAY_BIN="$1"
  shift
fi
[ "${1:-}" = "--" ] && shift
RELAY_BIN="$(readlink -f "$RELAY_BIN" 2>/dev/null || echo "$RELAY_BIN")"
[ -x "$RELAY_BIN" ] || fail "no relay binary at $RELAY_BIN (build it first: cargo build -p relay)"

SCHEMATHESIS="${SCHEMATHESIS:-$ROOT/tools/venv/bin/schemathesis}"
if [ ! -x "$SCHEMATHESIS" ]; then
  fail "schemathesis is missing at $SCHEMATHESIS: run scripts/setup.sh (it installs tools/requirements.txt into tools/venv), or set SCHEMATHESIS"
fi
ST_VERSION="$("$SCHEMATHESIS" --version 2>&1)" || fail "$SCHEMATHESIS does not run: $ST_VERSION"
PINNED="$(sed -n 's/^schemathesis==//p' "$ROOT"/tools/requirements*.txt 2>/dev/null | head -n1)"
if [ -n "$PINNED" ] && [ "${ST_VERSION##* }" != "$PINNED" ]; then
  fail "$SCHEMATHESIS is $ST_VERSION, the pin is $PINNED: run scripts/setup.sh"
fi
LOCALSTRIPE_PY="${LOCALSTRIPE_PYTHON:-$ROOT/tools/venv/bin/python}"
"$LOCALSTRIPE_PY" -c 'import localstripe' 2>/dev/null ||
  fail "localstripe is missing ($LOCALSTRIPE_PY cannot import it): run scripts/setup.sh"
command -v curl >/dev/null 2>&1 || fail "curl not found"

# ------------------------------------------------------- a network namespace with only loopback
if [ "${RELAY_ST_IN_NETNS:-}" = "" ]; then
  for how in "unshare --net" "unshare --net --map-root-user"; do
    if $how true 2>/dev/null; then
      export RELAY_ST_IN_NETNS=1
      exec $how -- "$BASH" "$SELF" "$RELAY_BIN" -- "$@"
    fi
  done
  say "WARNING: cannot make a private network namespace (unshare --net): POST /v1/webhook_endpoints is left out so that no webhook can reach another host"
  RELAY_ST_IN_NETNS=0
fi
if [ "$RELAY_ST_IN_NETNS" = 1 ]; then
  # A new namespace's loopback starts down.
  if command -v ip >/dev/null 2>&1; then
    ip link set lo up
  else
    "$LOCALSTRIPE_PY" - <<'PY'
import fcntl, socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
req = struct.pack('16sH14x', b'lo', 0)
flags = struct.unpack('16sH14x', fcntl.ioctl(s, 0x8913, req))[1]  # SIOCGIFFLAGS
fcntl.ioctl(s, 0x8914, struct.pack('16sH14x', b'lo', flags | 1))  # SIOCSIFFLAGS, IFF_UP
PY
  fi
fi

# --------------------------------------------------------------------------- start everything
WORK="$(mktemp -d "${TMPDIR:-/tmp}/relay-schemathesis.XXXXXX")"
RELAY_PID=""
STRIPE_PID=""
ST_PID=""
cleanup() {
  local rc=$?
  for pid in $ST_PID $RELAY_PID $STRIPE_PID; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in $ST_PID $RELAY_PID $STRIPE_PID; do
    wait "$pid" 2>/dev/null || true
  done
  if [ "$rc" != 0 ] && [ -s "$WORK/relay.log" ]; then
    say "last lines of the relay's log:"
    tail -n 20 "$WORK/relay.log" >&2
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits until FILE has a line matching the extended regex RE (or PID exits), prints the match.
wait_for_line() { # file, regex, pid, what
  local i
  for i in $(seq 1 300); do
    if grep -Eo "$2" "$1" 2>/dev/null | head -n1 | grep .; then
      return 0
    fi
    kill -0 "$3" 2>/dev/null || { cat "$1" >&2; fail "$4 exited"; }
    sleep 0.1
  done
  cat "$1" >&2
  fail "$4 did not start within 30 s"
}

"$LOCALSTRIPE_PY" "$ROOT/tools/localstripe_serve.py" --host 127.0.0.1 --port 0 --quiet \
  >"$WORK/localstripe.log" 2>&1 &
STRIPE_PID=$!
STRIPE_URL="$(wait_for_line "$WORK/localstripe.log" 'http://127\.0\.0\.1:[0-9]+' "$STRIPE_PID" localstripe)"

# Only RELAY_* settings chosen here reach the relay.
for v in $(env | sed -n 's/^\(RELAY_[A-Z0-9_]*\)=.*/\1/p'); do
  [ "$v" = RELAY_ST_IN_NETNS ] || unset "$v"
done
export RELAY_DATA_DIR="$WORK/data"
export RELAY_LISTEN=127.0.0.1:0
export RELAY_WEBHOOK_ALLOW_PRIVATE=false
export RELAY_WEBHOOK_TIMEOUT_SECS=2
export RELAY_RATE_LIMIT_PER_SEC=0
# The fuzzer sends thousands of requests without a key from one address; with the throttle on,
# its valid key would be refused (429, documented) for most of the run.
export RELAY_AUTH_FAILURES_PER_MIN=0
export RELAY_RATES="BTC/USD=60000,ETH/USD=3000,EUR/USD=1.08"
export RELAY_STRIPE_API_BASE="$STRIPE_URL"
export RELAY_STRIPE_SECRET_KEY=sk_test_relay
export RELAY_STRIPE_WEBHOOK_SECRET="whsec_schemathesis_$RANDOM$RANDOM"
export RELAY_LOG=info,relay_api=warn
export RELAY_LOG_FORMAT=json

API_KEY="$("$RELAY_BIN" merchant create --name "Schemathesis shop" |
  "$LOCALSTRIPE_PY" -c 'import json, sys; print(json.load(sys.stdin)["api_key"])')" ||
  fail "relay merchant create failed"

"$RELAY_BIN" serve >"$WORK/relay.log" 2>&1 &
RELAY_PID=$!
RELAY_ADDR="$(wait_for_line "$WORK/relay.log" '"message":"listening","addr":"127\.0\.0\.1:[0-9]+"' "$RELAY_PID" "the relay")"
RELAY_ADDR="$(printf '%s\n' "$RELAY_ADDR" | grep -Eo '127\.0\.0\.1:[0-9]+')"
BASE="http://$RELAY_ADDR"
curl -fsS "$BASE/readyz" >/dev/null || fail "the relay at $BASE is not ready"
say "relay $BASE (card gateway $STRIPE_URL), $ST_VERSION"

# ------------------------------------------------------------------------------ run schemathesis
REPORT_DIR="${SCHEMATHESIS_REPORT_DIR:-$ROOT/target/schemathesis}"
mkdir -p "$REPORT_DIR"
MAX_TIME="${SCHEMATHESIS_MAX_TIME:-150}"
args=(
  run "${SCHEMATHESIS_SCHEMA:-$BASE/openapi.json}" --url "$BASE"
  --checks "$CHECKS"
  --phases examples,coverage,fuzzing,stateful
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-50}"
  --max-time "$MAX_TIME"
  --request-timeout 35
  --header "Authorization: Bearer $API_KEY"
  --generation-database none
  --continue-on-failure
  --no-color
  --report junit --report-junit-path "$REPORT_DIR/junit.xml"
)
[ -n "${SCHEMATHESIS_SEED:-}" ] && args+=(--seed "$SCHEMATHESIS_SEED")
# Rolling or revoking keys would take the run's own key away (every later request a 401); the
# API tests cover both.
args+=(--exclude-operation-id roll_api_key --exclude-operation-id revoke_api_key)
[ "$RELAY_ST_IN_NETNS" = 1 ] ||
  args+=(--exclude-by '/requestBody/content/application~1json/schema/$ref == #/components/schemas/CreateEndpointRequest')
# The hard bound: schemathesis' own budget, plus time to load the schema and shrink.
# In the background, so that a signal to this script stops the run at once (the trap kills it).
(cd "$WORK" && exec timeout --kill-after=10 "$((MAX_TIME + 120))" "$SCHEMATHESIS" "${args[@]}" "$@") &
ST_PID=$!
rc=0
wait "$ST_PID" || rc=$?
ST_PID=""
if ! kill -0 "$RELAY_PID" 2>/dev/null; then
  fail "the relay died during the run"
fi
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  fail "schemathesis ran past its time bound ($((MAX_TIME + 120)) s)"
fi
[ "$rc" = 0 ] || fail "schemathesis found failures (exit $rc); JUnit report in $REPORT_DIR"
say "schemathesis: no failures"
