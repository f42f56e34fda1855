#!/usr/bin/env bash
# Scale-out suite (issue 4, section 5): hfcachefs on two "hosts" over one single-node GlusterFS
# on loopback (scripts/gluster-up.sh, torn down by scripts/gluster-down.sh), as root.
# Installs glusterfs-server/-client if missing. Prints `cluster: N passed, M failed` last and
# exits non-zero on any failure. Bounded by CLUSTER_RUN_TIMEOUT (default 900 s).
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PY="${HFCACHEFS_E2E_PREFIX:-/opt/hfcachefs-e2e}/venv-new/bin/python"
fail() { echo "cluster: $*" >&2; echo "cluster: 0 passed, 1 failed"; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "must run as root"
cd "$REPO"
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/setup-e2e.sh >/dev/null || fail "scripts/setup-e2e.sh failed"
[ -x "$PY" ] || fail "$PY missing"
need=()
for spec in glusterfs-server:/usr/sbin/glusterd glusterfs-client:/usr/sbin/glusterfs attr:/usr/bin/setfattr util-linux:/usr/bin/flock; do
    [ -x "${spec#*:}" ] || need+=("${spec%%:*}")
done
if [ "${#need[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
        || { apt-get update >/dev/null 2>&1; apt-get install -y --no-install-recommends "${need[@]}" >/dev/null 2>&1; } \
        || fail "cannot install ${need[*]}"
fi
if [ -z "${HFCACHEFS_BIN:-}" ]; then
    cargo build --locked -q || fail "cargo build failed"
    export HFCACHEFS_BIN="$REPO/target/debug/hfcachefs"
fi
start=$SECONDS
timeout -s INT -k 90 "${CLUSTER_RUN_TIMEOUT:-900}" "$PY" -u "$HERE/run_cluster.py"
rc=$?
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    bash "$REPO/scripts/gluster-down.sh" || true
    echo "cluster: timed out"
    echo "cluster: 0 passed, 1 failed"
fi
echo "# tests/cluster/run.sh: $((SECONDS - start)) s"
exit "$rc"
