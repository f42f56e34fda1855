#!/usr/bin/env bash
# Tear down what scripts/gluster-up.sh brought up: the two hfcachefs mounts, the two
# GlusterFS client mounts, the volume and its brick data, and the glusterd it started.
# Idempotent; run as root. Same HFGL_* environment as gluster-up.sh.
#   --keep-glusterd   leave glusterd running (and the volume defined), only unmount
#   --keep-hosts      leave the /etc/hosts line in place
set -uo pipefail

HOSTNAME_GL="${HFGL_HOST:-hfcachefs-gluster}"
VOLUME="${HFGL_VOLUME:-hfcachefs}"
BRICK="${HFGL_BRICK:-/var/lib/hfcachefs-gluster/brick}"
CLIENT_A="${HFGL_CLIENT_A:-/mnt/hfgl-client-a}"
CLIENT_B="${HFGL_CLIENT_B:-/mnt/hfgl-client-b}"
HF_A="${HFGL_HF_A:-/mnt/hfgl-hf-a}"
HF_B="${HFGL_HF_B:-/mnt/hfgl-hf-b}"
STATE="${HFGL_STATE:-/run/hfcachefs-gluster.env}"
GLUSTERD_PID=/run/hfcachefs-glusterd.pid
KEEP_GLUSTERD=0
KEEP_HOSTS=0
for a in "$@"; do
    case "$a" in
        --keep-glusterd) KEEP_GLUSTERD=1 ;;
        --keep-hosts) KEEP_HOSTS=1 ;;
        *) echo "gluster-down.sh: unknown argument $a" >&2; exit 2 ;;
    esac
done
say() { echo "gluster-down.sh: $*" >&2; }
[ "$(id -u)" -eq 0 ] || { say "must run as root"; exit 1; }
rc=0

# Unmount, bounded; a FUSE mount that will not go is aborted through fusectl, then lazily
# unmounted, so teardown never hangs.
unmount() {
    local dir="$1"
    mountpoint -q "$dir" 2>/dev/null || return 0
    for _ in $(seq 1 25); do
        timeout 10 umount "$dir" 2>/dev/null && break
        sleep 0.2
    done
    if mountpoint -q "$dir" 2>/dev/null; then
        local dev
        dev="$(mountpoint -d "$dir" 2>/dev/null | cut -d: -f2)"
        [ -n "$dev" ] && [ -e "/sys/fs/fuse/connections/$dev/abort" ] && echo 1 > "/sys/fs/fuse/connections/$dev/abort"
        timeout 10 umount -l "$dir" 2>/dev/null
        say "$dir needed abort + lazy unmount"
    fi
    if mountpoint -q "$dir" 2>/dev/null; then
        say "ERROR: $dir is still mounted"
        rc=1
    fi
}
unmount "$HF_A"
unmount "$HF_B"
unmount "$CLIENT_A"
unmount "$CLIENT_B"
for d in "$HF_A" "$HF_B" "$CLIENT_A" "$CLIENT_B"; do
    mountpoint -q "$d" 2>/dev/null || rmdir "$d" 2>/dev/null
done

if [ "$KEEP_GLUSTERD" -eq 0 ]; then
    gl() { timeout 60 gluster --mode=script "$@"; }
    if [ -x /usr/sbin/gluster ] && gl pool list >/dev/null 2>&1; then
        if gl volume info "$VOLUME" >/dev/null 2>&1; then
            gl volume stop "$VOLUME" force >/dev/null 2>&1
            gl volume delete "$VOLUME" >/dev/null 2>&1 || { say "ERROR: cannot delete volume $VOLUME"; rc=1; }
        fi
    fi
    # The glusterd gluster-up.sh started (by its pid file only).
    if [ -f "$GLUSTERD_PID" ]; then
        pid="$(cat "$GLUSTERD_PID")"
        if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = glusterd ]; then
            kill "$pid"
            for _ in $(seq 1 50); do [ -d "/proc/$pid" ] || break; sleep 0.2; done
            [ -d "/proc/$pid" ] && kill -9 "$pid"
        fi
        rm -f "$GLUSTERD_PID"
    fi
    # Brick processes of our volume, if any survived (their pid files name the volume).
    for pf in /var/run/gluster/vols/"$VOLUME"/*.pid; do
        [ -f "$pf" ] || continue
        pid="$(cat "$pf")"
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = glusterfsd ] && kill -9 "$pid"
        rm -f "$pf"
    done
    rm -rf "$BRICK"
    rmdir "$(dirname "$BRICK")" 2>/dev/null
    if [ "$KEEP_HOSTS" -eq 0 ]; then
        # Remove only the line gluster-up.sh added (rewritten in place: /etc/hosts may be a bind mount).
        if grep -q "^127.0.0.1 $HOSTNAME_GL # hfcachefs gluster test$" /etc/hosts; then
            grep -v "^127.0.0.1 $HOSTNAME_GL # hfcachefs gluster test$" /etc/hosts > /etc/hosts.hfgl.tmp
            cat /etc/hosts.hfgl.tmp > /etc/hosts
            rm -f /etc/hosts.hfgl.tmp
        fi
    fi
fi
rm -f "$STATE"
[ "$rc" -eq 0 ] && say "down"
exit "$rc"
