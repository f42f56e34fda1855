#!/usr/bin/env bash
# Load test (issue 4, section 2): 8 members x 20 repos through one hfcachefs mount, then the
# same run by root in a native directory. As root. Prints `load: N passed, M failed` last
# and exits non-zero on any failure (a missing prerequisite is a failure, never a skip).
# Uses the venvs of scripts/setup-e2e.sh (run here, idempotent) and builds hfcachefs unless
# HFCACHEFS_BIN is set. Bounded by LOAD_RUN_TIMEOUT (default 900 s). See run_load.py.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PY="${HFCACHEFS_E2E_PREFIX:-/opt/hfcachefs-e2e}/venv-new/bin/python"
fail() { echo "load: $*" >&2; echo "load: 0 passed, 1 failed"; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "must run as root"
cd "$REPO"
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/setup-e2e.sh >/dev/null || fail "scripts/setup-e2e.sh failed"
[ -x "$PY" ] || fail "$PY missing"
if [ -z "${HFCACHEFS_BIN:-}" ]; then
    cargo build --locked -q || fail "cargo build failed"
    export HFCACHEFS_BIN="$REPO/target/debug/hfcachefs"
fi
start=$SECONDS
# SIGINT first so the driver unmounts and removes its users; SIGKILL 60 s later.
timeout -s INT -k 60 "${LOAD_RUN_TIMEOUT:-900}" "$PY" -u "$HERE/run_load.py"
rc=$?
echo "# tests/load/run.sh: $((SECONDS - start)) s"
[ "$rc" -eq 124 ] && { echo "load: timed out"; echo "load: 0 passed, 1 failed"; }
exit "$rc"
