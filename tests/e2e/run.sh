#!/usr/bin/env bash
# Run the hfcachefs end-to-end suite (as root) with the driver venv made by
# scripts/setup-e2e.sh. Extra arguments go to pytest (e.g. -k plain, -x).
# HFCACHEFS_BIN defaults to <repo>/target/debug/hfcachefs. Exit code: pytest's.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PY="${HFCACHEFS_E2E_PREFIX:-/opt/hfcachefs-e2e}/venv-new/bin/python"
export HFCACHEFS_BIN="${HFCACHEFS_BIN:-$REPO/target/debug/hfcachefs}"
if [ ! -x "$PY" ]; then
    echo "run.sh: $PY missing: run scripts/setup-e2e.sh first" >&2
    exit 2
fi
cd "$REPO"
# Bounded: SIGINT first so pytest still runs its teardown (unmount, remove users).
timeout -s INT -k 60 "${HFE2E_TIMEOUT:-900}" \
    "$PY" -m pytest tests/e2e -v -p no:cacheprovider -o console_output_style=classic "$@"
exit $?
