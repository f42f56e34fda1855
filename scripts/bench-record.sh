#!/usr/bin/env bash
# What eviction's access record costs: open/read/close of 10,000 small cached files through
# two mounts of the same store, one with record=on (the default) and one with record=off,
# in alternating rounds. Prints the median time of each and the ratio (issue 11: within 2%).
# Run as root:
#
#     sudo bash scripts/bench-record.sh
#
# Environment: BENCH_FILES=10000, BENCH_ROUNDS=15, HFCACHEFS_BIN (default: a release build
# made here), BENCH_DIR=/var/tmp/hfcachefs-bench-record (must not be tmpfs),
# BENCH_OUT=bench/results/record.md (the result, with the commit and the machine's load),
# BENCH_CPU=N: run both daemons and the workload on CPU N only (taskset), which takes the
# scheduler's placement, the main source of noise on a small VM, out of the comparison;
# BENCH_AA=1: both mounts with record=on (an A/A run: how far apart two identical mounts
# measure on this machine, the noise any on/off difference must stand out from).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ "$(id -u)" -eq 0 ] || { echo "bench-record.sh: must run as root" >&2; exit 1; }
FILES="${BENCH_FILES:-10000}"
ROUNDS="${BENCH_ROUNDS:-15}"
OUT="${BENCH_OUT:-$REPO/bench/results/record.md}"
PIN=()
[ -n "${BENCH_CPU:-}" ] && PIN=(taskset -c "$BENCH_CPU")
DIR="${BENCH_DIR:-/var/tmp/hfcachefs-bench-record}"
if [ -z "${HFCACHEFS_BIN:-}" ]; then
    (cd "$REPO" && cargo build --release -q)
    HFCACHEFS_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/hfcachefs"
fi
getent group hfbench >/dev/null || groupadd hfbench
mkdir -p "$DIR/store" "$DIR/on" "$DIR/off"
chmod 700 "$DIR/store"
snap="$DIR/store/hub/models--bench--small/snapshots/0000000000000000000000000000000000000000"
if [ ! -d "$snap" ]; then
    python3 - "$DIR/store/hub/models--bench--small" "$FILES" <<'PY'
import os, sys
repo, n = sys.argv[1], int(sys.argv[2])
snap = os.path.join(repo, "snapshots", "0" * 40)
os.makedirs(os.path.join(repo, "blobs")); os.makedirs(snap)
for i in range(n):
    etag = f"{i:064x}"
    with open(os.path.join(repo, "blobs", etag), "wb") as f:
        f.write(os.urandom(4096))
    os.symlink(f"../../blobs/{etag}", os.path.join(snap, f"f{i}.bin"))
PY
fi
cleanup() { umount "$DIR/on" 2>/dev/null || true; umount "$DIR/off" 2>/dev/null || true; }
trap cleanup EXIT
cleanup
"${PIN[@]}" "$HFCACHEFS_BIN" "$DIR/store" "$DIR/on" -o group=hfbench,record=on,logfile="$DIR/on.log"
OFF=off
[ -n "${BENCH_AA:-}" ] && OFF=on
"${PIN[@]}" "$HFCACHEFS_BIN" "$DIR/store" "$DIR/off" -o group=hfbench,record=$OFF,logfile="$DIR/off.log"
load0="$(cut -d" " -f1 /proc/loadavg)"
"${PIN[@]}" python3 - "$DIR" "$ROUNDS" <<'PY' | tee "$OUT.tmp"
import os, statistics, sys, time
d, rounds = sys.argv[1], int(sys.argv[2])
rel = "hub/models--bench--small/snapshots/" + "0" * 40
names = sorted(os.listdir(os.path.join(d, "on", rel)))
def run(mnt):
    base = os.path.join(d, mnt, rel)
    t = time.perf_counter()
    for n in names:
        with open(os.path.join(base, n), "rb") as f:
            f.read()
    return time.perf_counter() - t
for m in ("on", "off"):
    run(m)  # warm the kernel's caches
times = {"on": [], "off": []}
for r in range(rounds):
    for m in (("on", "off") if r % 2 == 0 else ("off", "on")):
        times[m].append(run(m))
on, off = statistics.median(times["on"]), statistics.median(times["off"])
print(f"files: {len(names)}, rounds: {rounds}")
print(f"record=on : median {on:.3f} s  ({[round(x, 3) for x in times['on']]})")
print(f"record=off: median {off:.3f} s  ({[round(x, 3) for x in times['off']]})")
ratio = on / off
best = min(times["on"]) / min(times["off"])
print(f"ratio on/off of the medians: {ratio:.4f} ({(ratio - 1) * 100:+.2f}%) -> {'PASS' if ratio <= 1.02 else 'MISS'} (target within 2%)")
print(f"ratio on/off of the fastest rounds (less noise on a busy machine): {best:.4f} ({(best - 1) * 100:+.2f}%)")
PY
{
    echo "# Access record overhead (issue 11)"
    echo
    echo "\`scripts/bench-record.sh\`, $(date -u '+%Y-%m-%d %H:%M UTC'), hfcachefs $(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD -- src || echo ' (src modified)'), kernel $(uname -r), $(nproc) CPUs; load average $load0 at start, $(cut -d" " -f1 /proc/loadavg) at end."
    [ -n "${BENCH_AA:-}" ] && echo "A/A run (\`BENCH_AA=1\`): the mount labelled record=off runs with record=on too."
    [ -n "${BENCH_CPU:-}" ] && echo "Daemons and workload pinned to CPU $BENCH_CPU (\`BENCH_CPU\`)."
    echo "Open/read/close of each small cached file through a mount with \`record=on\` and one with \`record=off\` of the same store, alternating rounds:"
    echo
    echo '```'
    cat "$OUT.tmp"
    echo '```'
} > "$OUT"
rm -f "$OUT.tmp"
echo "written: $OUT"
