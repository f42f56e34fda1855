#!/usr/bin/env bash
# Runs the whole hfcachefs test suite as root: unit tests, integration tests through real
# FUSE mounts with real users (ops, policy, locks, safety, security, faults, admin
# commands), public conformance suites (pjdfstest, fsx, stress-ng), a concurrent-download
# load test, two "hosts" over GlusterFS, and end-to-end tests with the real Hugging Face
# libraries. Installs what it needs first (Debian packages, pinned Python venvs, test
# tools), idempotently. Every suite runs even if an earlier one failed; the last line
# sums them up and the exit status is non-zero if any failed.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
start=$SECONDS

bash scripts/deps.sh || exit 1
bash scripts/setup-e2e.sh || exit 1
cargo build --locked || exit 1
export HFCACHEFS_BIN="$PWD/target/debug/hfcachefs"

passed=()
failed=()
suite() {
    local name="$1"
    shift
    local t=$SECONDS
    echo
    echo "================ $name"
    if "$@"; then passed+=("$name"); else failed+=("$name"); fi
    echo "================ $name: $((SECONDS - t)) s"
}

suite "cargo test" cargo test --locked -- --test-threads="${HFCACHEFS_TEST_THREADS:-4}"
suite "conformance" bash tests/conformance/run.sh
suite "load" bash tests/load/run.sh
suite "cluster" bash tests/cluster/run.sh
suite "e2e" bash tests/e2e/run.sh

echo
echo "total $((SECONDS - start)) s; passed: ${passed[*]:-none}; failed: ${failed[*]:-none}"
echo "suites: ${#passed[@]} passed, ${#failed[@]} failed"
[ "${#failed[@]}" -eq 0 ]
