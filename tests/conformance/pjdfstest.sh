#!/usr/bin/env bash
# pjdfstest (the Rust rewrite, pinned in lib.sh) through a real hfcachefs mount, as root,
# once per passthrough mode (PJDFSTEST_MODES, default "auto off").
#
# The mount's group is a fresh, uniquely named group; pjdfstest's two dummy users have it as
# their primary group, so they are members (pjdfstest switches users with setgroups([primary])).
# The cases that cannot pass under hfcachefs' ownership policy are listed, one reason each, in
# pjdfstest-expected-failures.txt. The run FAILS if a case outside the list fails, if a listed
# case passes (or is skipped, or no longer exists): the list must stay exact.
#
# EROFS cases remount the filesystem read-only with `mount -o remount,ro`. mount.fuse would hand
# a remount to hfcachefs (which has no remount support), so pjdfstest gets a `mount` shim
# that adds -i (no helper): the kernel remounts the FUSE superblock itself.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
conf_init

EXPECTED="$CONF_HERE/pjdfstest-expected-failures.txt"
MODES="${PJDFSTEST_MODES:-auto off}"

if [ -z "${CONF_SKIP_SETUP:-}" ]; then
    conf_tools || { echo "pjdfstest.sh: installing tools failed"; exit 1; }
fi
conf_bin || { echo "pjdfstest.sh: build failed"; exit 1; }
conf_users || { echo "pjdfstest.sh: creating users failed"; exit 1; }

# Listed names (first field of each non-comment line).
mapfile -t listed < <(sed -e 's/#.*//' -e 's/[[:space:]]*$//' "$EXPECTED" | awk 'NF {print $1}' | sort)
dups="$(printf '%s\n' "${listed[@]}" | uniq -d)"
if [ -n "$dups" ]; then
    echo "pjdfstest-expected-failures.txt lists these twice: $dups"
    exit 1
fi

for mode in $MODES; do
    name="pjdfstest[passthrough=$mode]"
    conf_log "== $name"
    if ! conf_mount "$mode"; then
        conf_result "$name" fail "mount failed"
        continue
    fi
    work="$CONF_BASE/pjd"
    mkdir -p "$work/secondary" "$work/bin"
    chmod 0755 "$work" "$work/bin"
    printf '#!/bin/sh\nexec /usr/bin/mount -i "$@"\n' >"$work/bin/mount"
    chmod 0755 "$work/bin/mount"
    # Two invocations: every case with remounts disallowed (its EROFS cases skip), then the
    # EROFS cases alone in a fresh process: pjdfstest leaks descriptors open for writing, and
    # with those a later `remount,ro` fails with EBUSY (on tmpfs too).
    for remount in false true; do
        {
            echo '[features]'
            echo 'posix_fallocate = {}'
            echo 'rename_ctime = {}'
            echo 'utime_now = {}'
            echo 'utimensat = {}'
            echo '[settings]'
            echo 'naptime = 0.01'
            echo "allow_remount = $remount"
            echo 'expected_failures = ['
            for t in "${listed[@]}"; do echo "  \"$t\","; done
            echo ']'
            echo '[dummy_auth]'
            echo "entries = [ [\"$CONF_U1\", \"$CONF_GROUP\"], [\"$CONF_U2\", \"$CONF_GROUP\"] ]"
        } >"$work/pjdfstest-remount-$remount.toml"
        pattern=()
        [ "$remount" = true ] && pattern=(erofs)
        (cd "$CONF_MNT" && PATH="$work/bin:$PATH" NO_COLOR=1 timeout -k 10 300 \
            "$PJDFSTEST" -c "$work/pjdfstest-remount-$remount.toml" -p "$CONF_MNT" -s "$work/secondary" \
            "${pattern[@]}") >"$work/output-remount-$remount.txt" 2>&1
        echo "pjdfstest (allow_remount=$remount${pattern:+, only ${pattern[*]}}) exit $?: $(grep -a '^Summary:' "$work/output-remount-$remount.txt" | sed 's/\x1b\[[0-9;]*m//g')"
    done
    out="$work/output.txt"
    cat "$work/output-remount-false.txt" "$work/output-remount-true.txt" >"$out"
    sed 's/\x1b\[[0-9;]*m//g' "$out" >"$out.plain"
    # Status lines: "<name> <padding> ok|FAILED|skipped|failed as expected|PASSED UNEXPECTEDLY"
    st() { awk -v s="$1" '$1 ~ /::/ && substr($0, length($0) - length(s) + 1) == s {print $1}' "$out.plain" | sort -u; }
    ran="$(st ' ok'; st ' FAILED'; st ' PASSED UNEXPECTEDLY'; st ' failed as expected')"
    passed="$(st ' ok' | wc -l)"
    mapfile -t failed < <(st ' FAILED')
    mapfile -t unexpected < <(st ' PASSED UNEXPECTEDLY')
    mapfile -t xfail < <(st ' failed as expected')
    mapfile -t skipped < <(comm -23 <(st ' skipped') <(echo "$ran" | sort -u) | sed '/^$/d')
    total="$(echo "$ran" | sed '/^$/d' | sort -u | wc -l)"
    total=$((total + ${#skipped[@]}))
    missing="$(comm -23 <(printf '%s\n' "${listed[@]}") <(printf '%s\n' "${xfail[@]}") | sed '/^$/d')"
    problems=()
    for r in false true; do
        grep -aq '^Summary:' "$work/output-remount-$r.txt" ||
            problems+=("no summary line from the allow_remount=$r run (timed out or crashed?)")
    done
    if [ "${#failed[@]}" -gt 0 ]; then
        problems+=("${#failed[@]} unexpected failure(s)")
        echo "-- cases that failed and are not in pjdfstest-expected-failures.txt:"
        for t in "${failed[@]}"; do
            echo "   $t"
            awk -v t="$t" '$1 == t {f = 1; next} f && $1 !~ /::/ && !/^Summary/ {print "      " $0; next} {f = 0}' "$out.plain" | head -n 6
        done
    fi
    if [ "${#unexpected[@]}" -gt 0 ]; then
        problems+=("${#unexpected[@]} listed case(s) passed")
        echo "-- listed as expected failures but passed (remove them from the list):"
        printf '   %s\n' "${unexpected[@]}"
    fi
    if [ -n "$missing" ]; then
        problems+=("listed case(s) not failing as expected")
        echo "-- listed but not reported as 'failed as expected' (skipped, renamed or passed):"
        echo "$missing" | sed 's/^/   /'
    fi
    if [ "${#skipped[@]}" -gt 0 ]; then
        echo "-- skipped by pjdfstest itself: ${skipped[*]}"
    fi
    detail="${passed} passed, ${#failed[@]} failed, ${#xfail[@]} expected failures, ${#skipped[@]} skipped, $total total"
    [ "${#problems[@]}" -eq 0 ] || CONF_KEEP=1
    if ! conf_umount; then problems+=("unclean unmount"); fi
    if [ "${#problems[@]}" -eq 0 ]; then
        conf_result "$name" ok "$detail"
    else
        echo "-- full output kept in $out"
        conf_result "$name" fail "$detail; $(IFS=';'; echo "${problems[*]}")"
    fi
done

conf_summary pjdfstest
