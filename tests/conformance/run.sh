#!/usr/bin/env bash
# Conformance suite for hfcachefs (as root, with /dev/fuse): pjdfstest, fsx and stress-ng
# through real mounts, each with passthrough=auto and passthrough=off. Installs what it needs
# first (Debian packages through scripts/deps.sh; pjdfstest and fsx pinned, with
# `cargo install --root /opt/hfcachefs-tools`, skipped when the pinned version is there).
# HFCACHEFS_BIN selects the binary (default: `cargo build`, target/debug/hfcachefs).
# Ends with "conformance: N passed, M failed" (one per check) and exits non-zero on failure.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
conf_init
start=$SECONDS

results="$(mktemp /tmp/hfconf-results.XXXXXX)"
trap 'rm -f "$results"; conf_cleanup' EXIT
setup_ok=1
conf_log "== installing tools (cached in $CONF_TOOLS)"
conf_tools || { conf_result "setup: tools" fail; setup_ok=0; }
conf_bin || { conf_result "setup: build" fail; setup_ok=0; }

if [ "$setup_ok" -eq 1 ]; then
    for script in pjdfstest.sh fsx.sh stress.sh; do
        conf_log "== $script"
        before="$(wc -l <"$results")"
        # Each script bounds its own steps; this outer limit only guards against a wedged one.
        CONF_SKIP_SETUP=1 CONF_RESULTS="$results" HFCACHEFS_BIN="$HFCACHEFS_BIN" \
            timeout -k 30 600 bash "$CONF_HERE/$script"
        rc=$?
        after="$(wc -l <"$results")"
        if [ "$rc" -ne 0 ] && ! grep -q '^fail ' <(tail -n +$((before + 1)) "$results"); then
            # Exited non-zero without recording a failure (setup error, timeout, crash).
            echo "fail $script (exit $rc)" >>"$results"
        elif [ "$after" -eq "$before" ]; then
            echo "fail $script (ran no check)" >>"$results"
        fi
    done
fi

passed="$(grep -c '^ok ' "$results")"
failed="$(grep -c '^fail ' "$results")"
failed=$((failed + CONF_FAIL))
echo
echo "== conformance summary ($((SECONDS - start)) s)"
sed -e 's/^ok /  ok    /' -e 's/^fail /  FAIL  /' "$results"
echo "conformance: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
