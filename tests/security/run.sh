#!/usr/bin/env bash
# Security suite (issue 4, section 4): tests/security.rs through real mounts as real users,
# as root. Installs the Debian tools it drives if missing (strace, attr, libcap2-bin, acl).
# Prints the SECURITY-* report lines (attack counts, capabilities, strace), then
# `security: N passed, M failed` last; exits non-zero on any failure. HFSEC_RACE_SECS sets
# the length of each race loop (default 20 s). Bounded by HFSEC_TIMEOUT (default 600 s).
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
fail() { echo "security: $*" >&2; echo "security: 0 passed, 1 failed"; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "must run as root"
[ -c /dev/fuse ] || fail "/dev/fuse is missing"
cd "$REPO"
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo >/dev/null || fail "cargo not found"
need=()
for spec in strace:/usr/bin/strace attr:/usr/bin/setfattr libcap2-bin:/usr/sbin/setcap acl:/usr/bin/setfacl util-linux:/usr/bin/setpriv; do
    [ -x "${spec#*:}" ] || need+=("${spec%%:*}")
done
if [ "${#need[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
        || { apt-get update >/dev/null 2>&1; apt-get install -y --no-install-recommends "${need[@]}" >/dev/null 2>&1; } \
        || fail "cannot install ${need[*]}"
fi
log="$(mktemp /tmp/hfsec-XXXXXX.log)"
start=$SECONDS
timeout -s INT -k 30 "${HFSEC_TIMEOUT:-600}" \
    cargo test --locked --test security -- --test-threads="${HFSEC_THREADS:-2}" --nocapture >"$log" 2>&1
rc=$?
grep -E '^(SECURITY-|test |  )' "$log" | grep -v '^test result' | grep -vE '^\s+[0-9]+: |^\s+at ' || true
if [ "$rc" -ne 0 ]; then
    echo "---- failures (full log: $log)"
    sed -n '/^failures:/,$p' "$log" | grep -vE '^\s+[0-9]+: |^\s+at ' | head -150
fi
passed=0; failed=0
line="$(grep -E '^test result:' "$log" | tail -1)"
if [ -n "$line" ]; then
    passed="$(sed -E 's/.* ([0-9]+) passed.*/\1/' <<<"$line")"
    failed="$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")"
fi
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
    failed=1  # build failure, timeout or crash
    tail -30 "$log"
fi
[ "$rc" -eq 0 ] && rm -f "$log"
echo "# tests/security/run.sh: $((SECONDS - start)) s"
echo "security: $passed passed, $failed failed"
[ "$rc" -eq 0 ] && [ "$failed" -eq 0 ]
