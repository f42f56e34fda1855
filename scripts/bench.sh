#!/usr/bin/env bash
# Benchmark: native store vs hfcachefs (passthrough on and off) vs bindfs, in one run, on the
# same files. Run as root on Debian 12:
#
#     sudo bash scripts/bench.sh
#
# Installs what it needs (idempotent): Debian bindfs, fio, fuse3, python3-venv, strace; a venv in
# /opt/hfcachefs-bench from /usr/bin/python3 with bench/requirements.txt (pinned numpy,
# safetensors, huggingface_hub). Builds hfcachefs with `cargo build --release`, lays out a
# store under $BENCH_DIR on the local disk (reused by later runs), mounts it three times and
# runs bench/run.py. Prints a table of medians with ratios to native and the issue-3 targets
# (PASS/MISS), and writes it to bench/results/latest.md (+ .json with every run).
#
# Environment (all optional):
#   BENCH_RUNS=3          measured runs per cell (median; at least 3 for a real result)
#   BENCH_QUICK=1         smoke run with small files (256 MiB instead of 2 GiB, ...), ~2 min;
#                         writes bench/results/quick.md
#   BENCH_ONLY=seq,mmap   only these workloads (seq,mmap,fio,st,meta,meta26,churn,churn26,dl,xet,
#                         scale); churn includes churn26, the 2026 layout's download churn
#   BENCH_XET_PYTHON=PY   python with huggingface_hub >= 1.33 and hf_xet for the xet row (default:
#                         the e2e venv from scripts/setup-e2e.sh; the row is skipped without one)
#   BENCH_FIO_RUNTIME=10  seconds per fio run
#   BENCH_DIR=/var/tmp/hfcachefs-bench   work directory (must not be tmpfs)
#   BENCH_GROUP=hfbench   group given to the mounts (created if missing)
#   BENCH_OUT=FILE        markdown output file
#   BENCH_CLEAN=1         delete the store's test data at the end
#   BENCH_NOFILE=N        RLIMIT_NOFILE (soft and hard) to start the daemons with, if root may
#                         raise it (CAP_SYS_RESOURCE); default fs.nr_open, `inherit` keeps the
#                         caller's. hfcachefs holds one O_PATH descriptor per inode the kernel
#                         remembers (about 36,000 for the 500x20 tree) and raises its soft limit
#                         only to the hard one it inherits (20,000 in our sandboxes, which
#                         cannot raise it): the results show where that runs out.
#   BENCH_SOAK=SECONDS    soak instead of the workloads (issue 4; default off; 600 = the
#                         10-minute soak): bench/soak.py mounts hfcachefs over a fresh store and
#                         repeats tests/load's scenario (8 members, mixed umasks, 20 repos, each
#                         by >= 3 users) in rounds -- download all, check, one member deletes all
#                         through the mount -- for SECONDS (the last round runs to its end),
#                         sampling the daemon's VmRSS/VmHWM and open fds every
#                         BENCH_SOAK_INTERVAL=5 s. Prints a per-minute table, rounds, errors
#                         (must be 0) and a verdict (flat: last third's max <= 1.25x the first
#                         third's max + 2 MiB RSS / + 16 fds), exits 1 on FAIL, and appends the
#                         summary to bench/results/soak.md (BENCH_SOAK_OUT). Runs scripts/setup-e2e.sh
#                         for the users' venvs. BENCH_DIR defaults to /var/tmp/hfcachefs-soak here,
#                         so that a soak and a benchmark run never unmount each other's mounts.
#                         Does not drop caches. A round takes ~15 s (2 x 200 MB files served at
#                         BENCH_SOAK_THROTTLE=16 MiB/s per connection; BENCH_SOAK_BIG_MB=200).
# Full run: about 20 minutes on 2 vCPUs (19.5 with the 2026-layout and xet rows). Drops the page cache (cold runs): other work on
# the machine slows down meanwhile.
set -euo pipefail

BENCH_T0="$(date +%s.%N)"
export BENCH_T0
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
[ "$(id -u)" -eq 0 ] || { echo "bench.sh: must run as root" >&2; exit 1; }
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

BENCH_SOAK="${BENCH_SOAK:-0}"
case "$BENCH_SOAK" in *[!0-9]*) echo "bench.sh: BENCH_SOAK must be a number of seconds" >&2; exit 2 ;; esac
export BENCH_SOAK
if [ "$BENCH_SOAK" -gt 0 ]; then export BENCH_DIR="${BENCH_DIR:-/var/tmp/hfcachefs-soak}"; fi
export BENCH_DIR="${BENCH_DIR:-/var/tmp/hfcachefs-bench}"
export BENCH_GROUP="${BENCH_GROUP:-hfbench}"
VENV="${BENCH_VENV:-/opt/hfcachefs-bench}"
PY=/usr/bin/python3

# --- cleanup: never leave a mount behind ----------------------------------------------
driver_pid=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [ -n "$driver_pid" ] && kill -0 "$driver_pid" 2>/dev/null; then
        kill -TERM "$driver_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$driver_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$driver_pid" 2>/dev/null || true
    fi
    unmount_all
    if [ "${BENCH_CLEAN:-0}" = 1 ]; then
        rm -rf "$BENCH_DIR/store" "$BENCH_DIR/store-quick"
    fi
    exit "$rc"
}
unmount_all() {
    local m
    for m in "$BENCH_DIR"/mnt-*; do
        [ -d "$m" ] || continue
        if mountpoint -q "$m"; then
            umount "$m" 2>/dev/null || { sleep 1; umount "$m" 2>/dev/null; } \
                || umount -l "$m" || echo "bench.sh: could not unmount $m" >&2
        fi
    done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

case "$BENCH_DIR" in
    /|/tmp|/var|/var/tmp|"") echo "bench.sh: refusing BENCH_DIR=$BENCH_DIR" >&2; exit 2 ;;
esac
mkdir -p "$BENCH_DIR"
if [ "$(findmnt -n -o FSTYPE -T "$BENCH_DIR")" = tmpfs ]; then
    echo "bench.sh: $BENCH_DIR is on tmpfs; set BENCH_DIR to a directory on a disk" >&2
    exit 2
fi
unmount_all   # leftovers of an interrupted earlier run

# --- Debian packages ------------------------------------------------------------------
need=()
for p in bindfs fio fuse3 python3-venv util-linux e2fsprogs strace; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
    echo "bench.sh: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${need[@]}" >/dev/null \
        || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; }
fi
[ -c /dev/fuse ] || modprobe fuse 2>/dev/null || true
[ -c /dev/fuse ] || { echo "bench.sh: /dev/fuse is missing" >&2; exit 1; }

# --- Python venv ----------------------------------------------------------------------
req="$REPO/bench/requirements.txt"
want="$(sha256sum "$req" | cut -d' ' -f1) $("$PY" -c 'import sys; print(sys.version.split()[0])')"
stamp="$VENV/.hfcachefs-bench-stamp"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
    && "$VENV/bin/python" -c 'import numpy, safetensors, huggingface_hub' 2>/dev/null; then
    :
else
    echo "bench.sh: building $VENV"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --no-input --only-binary=:all: -r "$req"
    "$VENV/bin/python" -m pip check
    echo "$want" > "$stamp"
fi

# --- build ----------------------------------------------------------------------------
command -v cargo >/dev/null || { echo "bench.sh: cargo not found (install Rust >= 1.85)" >&2; exit 1; }
echo "bench.sh: cargo build --release"
cargo build --release --locked --quiet
export HFCACHEFS_BIN="$REPO/target/release/hfcachefs"

# --- group ----------------------------------------------------------------------------
getent group "$BENCH_GROUP" >/dev/null || groupadd --system "$BENCH_GROUP"

# --- open-file limit of the daemons (inherited by everything started from here) ------------
export BENCH_NOFILE_INHERITED="$(ulimit -Hn)"
export BENCH_NOFILE_WANTED="${BENCH_NOFILE:-$(cat /proc/sys/fs/nr_open)}"
if [ "$BENCH_NOFILE_WANTED" != inherit ]; then
    if ! { ulimit -Hn "$BENCH_NOFILE_WANTED" && ulimit -Sn "$BENCH_NOFILE_WANTED"; } 2>/dev/null; then
        echo "bench.sh: cannot raise RLIMIT_NOFILE to $BENCH_NOFILE_WANTED (no CAP_SYS_RESOURCE?);" \
             "daemons keep the hard limit $(ulimit -Hn)"
    fi
fi

# --- run (in the background, so that a signal reaches the trap at once) ------------------
echo "bench.sh: load average now: $(cut -d' ' -f1-3 /proc/loadavg) (2 cores; others may be busy)"
if [ "$BENCH_SOAK" -gt 0 ]; then
    bash "$REPO/scripts/setup-e2e.sh" >/dev/null
    "${HFCACHEFS_E2E_PREFIX:-/opt/hfcachefs-e2e}/venv-new/bin/python" -u "$REPO/bench/soak.py" &
else
"$VENV/bin/python" "$REPO/bench/run.py" &
fi
driver_pid=$!
set +e
wait "$driver_pid"
rc=$?
set -e
driver_pid=""
t1="$(date +%s.%N)"
echo "bench.sh: done in $(awk -v a="$BENCH_T0" -v b="$t1" 'BEGIN{printf "%.1f", (b-a)/60}') min (exit $rc)"
exit "$rc"
