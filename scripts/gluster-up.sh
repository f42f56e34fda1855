#!/usr/bin/env bash
# Bring up a single-node GlusterFS on loopback standing in for a cluster filesystem shared by
# two hosts, and (optionally) one hfcachefs over each of its two client mounts. Idempotent:
# every step checks whether it is already done. Run as root. Undo with scripts/gluster-down.sh.
#
#   glusterd        started directly (no systemd), bound to 127.0.0.1
#   host name       $HFGL_HOST (default hfcachefs-gluster) -> 127.0.0.1 in /etc/hosts
#                   (bricks refuse localhost/127.0.0.1 as their host name)
#   volume          $HFGL_VOLUME (default hfcachefs), one brick in $HFGL_BRICK,
#                   performance.stat-prefetch off
#   client mounts   $HFGL_CLIENT_A and $HFGL_CLIENT_B ("host A" and "host B"), each by
#                   /usr/sbin/glusterfs directly with zero attribute/entry/negative timeouts
#                   and --fopen-keep-cache=off (Debian's mount.glusterfs mangles that option)
#   store           $HFGL_STORE_SUBDIR (default store) inside the volume, 0700 root
#   hfcachefs       only with --group NAME (or HFGL_GROUP): `hfcachefs CLIENT_X/store HF_X
#                   -o group=NAME,$HFGL_HF_OPTS` for X = A and B, at $HFGL_HF_A / $HFGL_HF_B
#
# Options: --group NAME, --hf-opts OPTS (extra -o options, default entry_timeout=1,attr_timeout=1),
#          --bin PATH (hfcachefs binary; default target/debug/hfcachefs, else PATH),
#          --no-hfcachefs (gluster only, even if HFGL_GROUP is set), --install (apt-get the
#          Debian packages if missing; otherwise a missing package is an error).
# On success the last lines are KEY=VALUE pairs (also written to $HFGL_STATE, default
# /run/hfcachefs-gluster.env) that tests source.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOSTNAME_GL="${HFGL_HOST:-hfcachefs-gluster}"
VOLUME="${HFGL_VOLUME:-hfcachefs}"
BRICK="${HFGL_BRICK:-/var/lib/hfcachefs-gluster/brick}"
CLIENT_A="${HFGL_CLIENT_A:-/mnt/hfgl-client-a}"
CLIENT_B="${HFGL_CLIENT_B:-/mnt/hfgl-client-b}"
HF_A="${HFGL_HF_A:-/mnt/hfgl-hf-a}"
HF_B="${HFGL_HF_B:-/mnt/hfgl-hf-b}"
STORE_SUBDIR="${HFGL_STORE_SUBDIR:-store}"
STATE="${HFGL_STATE:-/run/hfcachefs-gluster.env}"
GLUSTERD_PID=/run/hfcachefs-glusterd.pid
GROUP="${HFGL_GROUP:-}"
HF_OPTS="${HFGL_HF_OPTS:-entry_timeout=1,attr_timeout=1}"
BIN="${HFCACHEFS_BIN:-}"
INSTALL=0
WITH_HF=1

while [ $# -gt 0 ]; do
    case "$1" in
        --group) GROUP="$2"; shift 2 ;;
        --hf-opts) HF_OPTS="$2"; shift 2 ;;
        --bin) BIN="$2"; shift 2 ;;
        --no-hfcachefs) WITH_HF=0; shift ;;
        --install) INSTALL=1; shift ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "gluster-up.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

say() { echo "gluster-up.sh: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root"

# Bounded waiting: run "$@" until it succeeds, at most $1 seconds.
wait_for() {
    local secs="$1"; shift
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}
gl() { timeout 60 gluster --mode=script "$@"; }

# --- packages ------------------------------------------------------------------------
missing=()
for p in glusterfs-server glusterfs-client; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    [ "$INSTALL" -eq 1 ] || die "missing Debian packages: ${missing[*]} (run with --install, or apt-get install them)"
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null \
        || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
fi
for exe in /usr/sbin/glusterd /usr/sbin/glusterfs /usr/sbin/gluster; do
    [ -x "$exe" ] || die "$exe is missing"
done
[ -c /dev/fuse ] || die "/dev/fuse is missing"

# --- a host name for the brick -----------------------------------------------------------
if ! awk -v h="$HOSTNAME_GL" '$1=="127.0.0.1" { for (i=2;i<=NF;i++) if ($i==h) f=1 } END { exit !f }' /etc/hosts; then
    say "adding 127.0.0.1 $HOSTNAME_GL to /etc/hosts"
    printf '127.0.0.1 %s # hfcachefs gluster test\n' "$HOSTNAME_GL" >> /etc/hosts
fi
[ "$(getent ahostsv4 "$HOSTNAME_GL" | awk 'NR==1{print $1}')" = 127.0.0.1 ] \
    || die "$HOSTNAME_GL does not resolve to 127.0.0.1"

# --- glusterd, bound to loopback -----------------------------------------------------------
VOLFILE=/etc/glusterfs/glusterd.vol
if ! grep -q 'option transport.socket.bind-address 127.0.0.1' "$VOLFILE"; then
    say "binding glusterd to 127.0.0.1 ($VOLFILE)"
    sed -i 's/^\(\s*\)option transport-type socket$/&\n\1option transport.socket.bind-address 127.0.0.1/' "$VOLFILE"
    grep -q 'option transport.socket.bind-address 127.0.0.1' "$VOLFILE" || die "could not edit $VOLFILE"
fi
glusterd_up() { gl pool list; }
if ! glusterd_up >/dev/null 2>&1; then
    say "starting glusterd"
    mkdir -p /var/log/glusterfs /var/run/gluster
    /usr/sbin/glusterd -p "$GLUSTERD_PID" --log-file=/var/log/glusterfs/glusterd.log
    wait_for 60 glusterd_up || die "glusterd did not answer within 60 s (see /var/log/glusterfs/glusterd.log)"
fi

# --- the volume -------------------------------------------------------------------------
if ! gl volume info "$VOLUME" >/dev/null 2>&1; then
    say "creating volume $VOLUME on $HOSTNAME_GL:$BRICK"
    mkdir -p "$BRICK"
    # `force`: the brick sits on the root filesystem, which gluster refuses otherwise.
    gl volume create "$VOLUME" "$HOSTNAME_GL:$BRICK" force >/dev/null
fi
if [ "$(gl volume get "$VOLUME" performance.stat-prefetch | awk '$1=="performance.stat-prefetch"{print $2}')" != off ]; then
    gl volume set "$VOLUME" performance.stat-prefetch off >/dev/null
fi
if ! gl volume info "$VOLUME" | grep -q '^Status: Started'; then
    say "starting volume $VOLUME"
    gl volume start "$VOLUME" force >/dev/null
fi
# (the brick's line may wrap: look for any line ending in "Y <pid>")
brick_online() { gl volume status "$VOLUME" | awk 'NF >= 2 && $(NF-1)=="Y" && $NF ~ /^[0-9]+$/ { ok=1 } END { exit !ok }'; }
wait_for 60 brick_online || die "the brick of $VOLUME is not online within 60 s"

# --- two client mounts: host A and host B ---------------------------------------------------
mount_client() {
    local dir="$1" log="$2"
    mkdir -p "$dir"
    if mountpoint -q "$dir"; then
        return 0
    fi
    say "mounting gluster volume $VOLUME on $dir"
    /usr/sbin/glusterfs --volfile-server="$HOSTNAME_GL" --volfile-id="$VOLUME" \
        --attribute-timeout=0 --entry-timeout=0 --negative-timeout=0 --fopen-keep-cache=off \
        --log-file="$log" "$dir"
    wait_for 30 mountpoint -q "$dir" || die "glusterfs client on $dir did not mount within 30 s (see $log)"
    wait_for 30 stat "$dir/." || die "glusterfs client on $dir does not answer"
}
mount_client "$CLIENT_A" /var/log/glusterfs/hfgl-client-a.log
mount_client "$CLIENT_B" /var/log/glusterfs/hfgl-client-b.log

# The store: root only, seen by both hosts.
mkdir -p "$CLIENT_A/$STORE_SUBDIR"
chown root:root "$CLIENT_A/$STORE_SUBDIR"
chmod 0700 "$CLIENT_A/$STORE_SUBDIR"
wait_for 10 test -d "$CLIENT_B/$STORE_SUBDIR" || die "$CLIENT_B does not see the store made on $CLIENT_A"

# --- hfcachefs over each client mount -------------------------------------------------------
if [ -n "$GROUP" ] && [ "$WITH_HF" -eq 1 ]; then
    if [ -z "$BIN" ]; then
        if [ -x "$REPO/target/debug/hfcachefs" ]; then BIN="$REPO/target/debug/hfcachefs"
        else BIN="$(command -v hfcachefs || true)"; fi
    fi
    [ -n "$BIN" ] && [ -x "$BIN" ] || die "no hfcachefs binary (build it, or give --bin)"
    mount_hf() {
        local client="$1" mnt="$2" log="$3"
        mkdir -p "$mnt"
        chmod 0755 "$mnt"
        if mountpoint -q "$mnt"; then
            local src
            src="$(findmnt -n -o SOURCE --mountpoint "$mnt" || true)"
            [ "$src" = "$client/$STORE_SUBDIR" ] || die "$mnt is already mounted from $src"
            return 0
        fi
        say "mounting hfcachefs $client/$STORE_SUBDIR on $mnt (group=$GROUP,$HF_OPTS)"
        local opts="group=$GROUP,logfile=$log"
        [ -n "$HF_OPTS" ] && opts="$opts,$HF_OPTS"
        timeout 60 "$BIN" "$client/$STORE_SUBDIR" "$mnt" -o "$opts" || die "hfcachefs on $mnt failed (see $log)"
        mountpoint -q "$mnt" || die "hfcachefs returned but $mnt is not a mount point"
    }
    mount_hf "$CLIENT_A" "$HF_A" /var/log/hfcachefs-gluster-a.log
    mount_hf "$CLIENT_B" "$HF_B" /var/log/hfcachefs-gluster-b.log
fi

cat > "$STATE" <<EOF
HFGL_HOST=$HOSTNAME_GL
HFGL_VOLUME=$VOLUME
HFGL_BRICK=$BRICK
HFGL_CLIENT_A=$CLIENT_A
HFGL_CLIENT_B=$CLIENT_B
HFGL_STORE_SUBDIR=$STORE_SUBDIR
HFGL_HF_A=$HF_A
HFGL_HF_B=$HF_B
HFGL_GROUP=$GROUP
EOF
cat "$STATE"
say "up"
