#!/usr/bin/env bash
# Runs the whole hfcachefs test suite as root: unit tests, integration tests through real
# FUSE mounts with real users, and end-to-end tests with the real Hugging Face libraries.
# Installs what it needs first (Debian packages, pinned Python venvs), idempotently.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/deps.sh || exit 1
bash scripts/setup-e2e.sh || exit 1

failed=()
cargo build --locked || exit 1
export HFCACHEFS_BIN="$PWD/target/debug/hfcachefs"

echo "== cargo test (unit + integration through real mounts)"
cargo test --locked -- --test-threads="${HFCACHEFS_TEST_THREADS:-4}" || failed+=("cargo test")

echo "== end-to-end with huggingface_hub / filelock / datasets / transformers"
bash tests/e2e/run.sh || failed+=("e2e")

if [ "${#failed[@]}" -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "all test suites passed"
