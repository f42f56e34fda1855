#!/usr/bin/env bash
# stress-ng (Debian) through a real hfcachefs mount, as a group member (umask 022): the flock,
# fcntl (incl. record locks), rename, dir and file-backed mmap stressors all at once, with
# --verify, for STRESS_SECS seconds (default 20) per passthrough mode (STRESS_MODES, default
# "auto off"). Passes when stress-ng reports a successful run with no failures, every stressor
# made progress, the daemon is still serving, and its log has no errors.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
conf_init

MODES="${STRESS_MODES:-auto off}"
SECS="${STRESS_SECS:-20}"
STRESSORS=(flock fcntl rename dir mmap)
if [ -z "${CONF_SKIP_SETUP:-}" ]; then
    conf_tools || { echo "stress.sh: installing tools failed"; exit 1; }
fi
conf_bin || { echo "stress.sh: build failed"; exit 1; }
conf_users || { echo "stress.sh: creating users failed"; exit 1; }

for mode in $MODES; do
    name="stress-ng[passthrough=$mode]"
    conf_log "== $name: ${STRESSORS[*]} x2 for ${SECS}s"
    if ! conf_mount "$mode"; then
        conf_result "$name" fail "mount failed"
        continue
    fi
    dir="$CONF_MNT/stress"
    mkdir "$dir" && chown "$CONF_U1" "$dir"
    log="$CONF_BASE/stress-ng.log"
    CONF_CWD="$dir" conf_as_u1 timeout -k 10 $((SECS + 90)) stress-ng \
        --flock 2 --fcntl 2 --rename 2 --dir 2 --mmap 2 --mmap-file --mmap-bytes 4M \
        --timeout "${SECS}s" --temp-path "$dir" --verify --metrics-brief --abort \
        >"$log" 2>&1
    rc=$?
    cat "$log"
    problems=()
    [ "$rc" -eq 0 ] || problems+=("stress-ng exit $rc")
    grep -q "successful run completed" "$log" || problems+=("no successful completion")
    # stress-ng tags its lines "stress-ng: info:", "metrc:", "fail:", "error:", "warn:".
    if awk '$2 == "fail:" || $2 == "error:" {f = 1} END {exit !f}' "$log"; then problems+=("failures reported"); fi
    for s in "${STRESSORS[@]}"; do
        n="$(awk -v s="$s" '$2 == "metrc:" && $4 == s && $5 ~ /^[0-9]+$/ {print $5; exit}' "$log")"
        if [ -z "$n" ] || [ "$n" -eq 0 ]; then problems+=("$s made no progress"); fi
    done
    left="$(find "$dir" -mindepth 1 2>/dev/null | wc -l)"
    [ "$left" -eq 0 ] || problems+=("$left entries left behind in the test dir")
    mountpoint -q "$CONF_MNT" && ls "$CONF_MNT" >/dev/null || problems+=("mount no longer usable")
    # Known noise, not a failure: fuser answers FUSE_INTERRUPT (sent when a process blocked
    # in a FUSE request gets a signal; stress-ng signals its workers) with ENOSYS, and with
    # clone_fd that answer often reaches a /dev/fuse clone that does not hold the request:
    # the kernel says ENOENT and fuser logs "Failed to send FUSE reply ... (os error 2)".
    noise="Failed to send FUSE reply: No such file or directory"
    n_noise="$(grep -c "$noise" "$CONF_LOG")"
    [ "$n_noise" -eq 0 ] || echo "daemon log: $n_noise x '$noise' (FUSE_INTERRUPT answered on another clone fd)"
    if grep -E "panicked|ERROR" "$CONF_LOG" | grep -vq "$noise"; then
        grep -E "panicked|ERROR" "$CONF_LOG" | grep -v "$noise" | head
        problems+=("errors in the daemon log")
    fi
    metrics="$(awk '$2 == "metrc:" && $5 ~ /^[0-9]+$/ && !seen[$4]++ {printf "%s=%s ", $4, $5}' "$log")"
    [ "${#problems[@]}" -eq 0 ] || CONF_KEEP=1
    conf_umount || problems+=("unclean unmount")
    if [ "${#problems[@]}" -eq 0 ]; then
        conf_result "$name" ok "${metrics}bogo ops in ${SECS}s"
    else
        conf_result "$name" fail "$(IFS=';'; echo "${problems[*]}")"
    fi
done

conf_summary stress-ng
