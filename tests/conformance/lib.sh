# Shared helpers for the conformance scripts (pjdfstest.sh, fsx.sh, stress.sh, run.sh).
# Sourced, not run. Everything here runs as root and is bounded in time.
#
#   conf_init             root check, repo paths, cleanup trap
#   conf_tools            Debian packages + pinned cargo tools in $CONF_TOOLS (cached)
#   conf_bin              the hfcachefs binary ($HFCACHEFS_BIN or a fresh `cargo build`)
#   conf_users            a unique group and two member users (primary group = that group)
#   conf_mount MODE       a fresh store + mountpoint, mounted with passthrough=MODE
#   conf_umount           unmount it (falls back to abort + umount -l) and check the daemon ended
#   conf_as_u1 CMD...     run CMD as member user 1 (umask 022, cwd $CONF_CWD or /) via setpriv
#   conf_result NAME ok|fail [detail]   record one check; conf_summary prints the totals

CONF_HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONF_REPO="$(cd "$CONF_HERE/../.." && pwd)"
# Pinned tools, installed with `cargo install --root` into a cache directory every user can run.
CONF_TOOLS="${HFCACHEFS_TOOLS:-/opt/hfcachefs-tools}"
PJDFSTEST_VERSION=0.2.2
FSX_VERSION=0.3.2
PJDFSTEST="$CONF_TOOLS/bin/pjdfstest"
FSX="$CONF_TOOLS/bin/fsx"

CONF_PASS=0
CONF_FAIL=0
CONF_FAILED_NAMES=()

conf_log() { echo "[$(date +%H:%M:%S)] $*"; }

conf_init() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "conformance: must run as root (mounts FUSE filesystems, creates users)" >&2
        exit 2
    fi
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
    export RUST_BACKTRACE=0
    CONF_MNT=""
    CONF_BASE=""
    CONF_GROUP=""
    trap conf_cleanup EXIT
    trap 'exit 130' INT TERM
}

# --- results ------------------------------------------------------------------------------

conf_result() {
    local name="$1" status="$2" detail="${3:-}"
    if [ "$status" = ok ]; then
        CONF_PASS=$((CONF_PASS + 1))
        echo "RESULT ok   $name${detail:+ ($detail)}"
    else
        CONF_FAIL=$((CONF_FAIL + 1))
        CONF_FAILED_NAMES+=("$name")
        echo "RESULT FAIL $name${detail:+ ($detail)}"
    fi
    if [ -n "${CONF_RESULTS:-}" ]; then
        echo "$status $name" >>"$CONF_RESULTS"
    fi
}

# Prints "<label>: N passed, M failed" and returns non-zero if anything failed.
conf_summary() {
    local label="$1"
    if [ "$CONF_FAIL" -gt 0 ]; then
        echo "failed checks: ${CONF_FAILED_NAMES[*]}"
    fi
    echo "$label: $CONF_PASS passed, $CONF_FAIL failed"
    [ "$CONF_FAIL" -eq 0 ]
}

# --- tools --------------------------------------------------------------------------------

conf_tools() {
    # Debian packages through the project's own idempotent installer (extra packages as args):
    # libacl1-dev to build pjdfstest, stress-ng, acl, util-linux (setpriv, flock), psmisc.
    bash "$CONF_REPO/scripts/deps.sh" libacl1-dev acl stress-ng || return 1
    local want="pjdfstest $PJDFSTEST_VERSION" got=""
    [ -x "$PJDFSTEST" ] && got="$("$PJDFSTEST" --version 2>/dev/null)"
    if [ "$got" != "$want" ]; then
        conf_log "installing pjdfstest $PJDFSTEST_VERSION into $CONF_TOOLS"
        cargo install --quiet --locked --force --root "$CONF_TOOLS" "pjdfstest@$PJDFSTEST_VERSION" || return 1
    fi
    want="fsx $FSX_VERSION"
    got=""
    [ -x "$FSX" ] && got="$("$FSX" --version 2>/dev/null)"
    if [ "$got" != "$want" ]; then
        conf_log "installing fsx $FSX_VERSION into $CONF_TOOLS"
        cargo install --quiet --locked --force --root "$CONF_TOOLS" "fsx@$FSX_VERSION" || return 1
    fi
    chmod 0755 "$CONF_TOOLS" "$CONF_TOOLS/bin"
    [ "$("$PJDFSTEST" --version)" = "pjdfstest $PJDFSTEST_VERSION" ] || return 1
    [ "$("$FSX" --version)" = "fsx $FSX_VERSION" ] || return 1
}

conf_bin() {
    if [ -n "${HFCACHEFS_BIN:-}" ] && [ -x "$HFCACHEFS_BIN" ]; then
        return 0
    fi
    (cd "$CONF_REPO" && cargo build --quiet) || return 1
    HFCACHEFS_BIN="$CONF_REPO/target/debug/hfcachefs"
    export HFCACHEFS_BIN
}

# --- users --------------------------------------------------------------------------------

# Remove hfconf_* accounts of earlier runs whose process is gone (the names embed its pid).
conf_cleanup_stale_accounts() {
    local name pid
    for name in $(cut -d: -f1 /etc/passwd | grep '^hfconf_'); do
        pid=$((16#$(echo "$name" | cut -d_ -f2)))
        [ -d "/proc/$pid" ] || userdel "$name" >/dev/null 2>&1 || true
    done
    for name in $(cut -d: -f1 /etc/group | grep '^hfconf_'); do
        pid=$((16#$(echo "$name" | cut -d_ -f2)))
        [ -d "/proc/$pid" ] || groupdel "$name" >/dev/null 2>&1 || true
    done
}

# A unique group and two users whose PRIMARY group it is: pjdfstest switches users with
# setgroups([primary gid]) only, so this is how its dummy users become members of the
# mount's group (the supported case: hfcachefs is for members).
conf_users() {
    conf_cleanup_stale_accounts
    local prefix
    prefix="hfconf_$(printf %x $$)_$(printf %04x $((RANDOM % 65536)))"
    CONF_GROUP="${prefix}_g"
    CONF_U1="${prefix}_u1"
    CONF_U2="${prefix}_u2"
    groupadd "$CONF_GROUP" || return 1
    useradd -M -N -g "$CONF_GROUP" -d /nonexistent -s /usr/sbin/nologin "$CONF_U1" || return 1
    useradd -M -N -g "$CONF_GROUP" -d /nonexistent -s /usr/sbin/nologin "$CONF_U2" || return 1
}

conf_remove_users() {
    [ -n "$CONF_GROUP" ] || return 0
    userdel "$CONF_U1" >/dev/null 2>&1 || true
    userdel "$CONF_U2" >/dev/null 2>&1 || true
    groupdel "$CONF_GROUP" >/dev/null 2>&1 || true
    CONF_GROUP=""
}

# Run a command as member user 1 with umask 022 (a real process with its own credentials).
conf_as_u1() {
    setpriv --reuid "$CONF_U1" --regid "$CONF_GROUP" --init-groups -- \
        /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/nonexistent RUST_BACKTRACE=0 \
        /bin/sh -c 'umask 022; cd "$0" && exec "$@"' "${CONF_CWD:-/}" "$@"
}

# --- mounts -------------------------------------------------------------------------------

conf_fuse_conn() {
    # FUSE connection number of the mount (st_dev of the mountpoint).
    local mm
    mm="$(awk -v m="$1" '$5 == m {print $3}' /proc/self/mountinfo | tail -n1)"
    [ -n "$mm" ] || return 1
    echo $(( (${mm%%:*} << 20) | ${mm##*:} ))
}

# conf_mount MODE: fresh base dir (0755) with a 0700 private/store and mnt; mounts hfcachefs
# with group=$CONF_GROUP,passthrough=MODE; sets CONF_BASE, CONF_STORE, CONF_MNT, CONF_LOG.
conf_mount() {
    local mode="$1"
    CONF_BASE="$(mktemp -d /tmp/hfconf.XXXXXX)"
    chmod 0755 "$CONF_BASE"
    mkdir -m 0700 "$CONF_BASE/private"
    mkdir -m 0700 "$CONF_BASE/private/store"
    mkdir -m 0755 "$CONF_BASE/mnt"
    CONF_STORE="$CONF_BASE/private/store"
    CONF_MNT="$CONF_BASE/mnt"
    CONF_LOG="$CONF_BASE/daemon.log"
    if ! timeout -k 5 30 "$HFCACHEFS_BIN" "$CONF_STORE" "$CONF_MNT" \
        -o "group=$CONF_GROUP,passthrough=$mode,logfile=$CONF_LOG"; then
        echo "hfcachefs mount failed (passthrough=$mode)"
        cat "$CONF_LOG" 2>/dev/null
        return 1
    fi
    mountpoint -q "$CONF_MNT" || { echo "not mounted after hfcachefs returned 0"; return 1; }
    CONF_DAEMON_PIDS="$(conf_daemon_pids "$CONF_MNT")"
    if [ "$mode" = auto ] && ! grep -q "kernel passthrough enabled" "$CONF_LOG"; then
        echo "passthrough=auto but the daemon did not enable kernel passthrough:"
        cat "$CONF_LOG"
        return 1
    fi
}

conf_daemon_pids() {
    local p
    for p in /proc/[0-9]*; do
        { tr "\0" "\n" <"$p/cmdline"; } 2>/dev/null | grep -qxF "$1" || continue
        { tr "\0" "\n" <"$p/cmdline"; } 2>/dev/null | head -n1 | grep -q "hfcachefs$" || continue
        echo "${p#/proc/}"
    done
}

# Unmount the current mount; returns non-zero if that needed force or the daemon survived.
conf_umount() {
    [ -n "$CONF_MNT" ] || return 0
    local rc=0 i conn
    for i in $(seq 1 20); do
        mountpoint -q "$CONF_MNT" || break
        timeout -k 2 10 umount "$CONF_MNT" 2>/dev/null && break
        sleep 0.5
    done
    if mountpoint -q "$CONF_MNT"; then
        echo "umount $CONF_MNT failed: aborting the FUSE connection"
        conn="$(conf_fuse_conn "$CONF_MNT")" && echo 1 >"/sys/fs/fuse/connections/$conn/abort" 2>/dev/null
        umount -l "$CONF_MNT" 2>/dev/null
        rc=1
    fi
    for i in $(seq 1 100); do
        local alive=""
        for p in $CONF_DAEMON_PIDS; do [ -d "/proc/$p" ] && alive="$alive $p"; done
        [ -z "$alive" ] && break
        sleep 0.1
    done
    if [ -n "${alive:-}" ]; then
        echo "daemon$alive still alive after unmount: killing it"
        kill -9 $alive 2>/dev/null
        rc=1
    fi
    if [ "$rc" -eq 0 ] && [ -z "${CONF_KEEP:-}" ]; then
        rm -rf "$CONF_BASE"
    fi
    CONF_MNT=""
    return $rc
}

conf_cleanup() {
    if [ -n "$CONF_MNT" ]; then conf_umount >/dev/null 2>&1; fi
    conf_remove_users
}
