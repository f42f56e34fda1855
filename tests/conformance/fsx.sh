#!/usr/bin/env bash
# fsx (fsx-rs) through a real hfcachefs mount: random read, write, truncate, mmap read and
# write, msync invalidate, fsync, fdatasync, posix_fallocate, punch hole, sendfile,
# posix_fadvise, copy_file_range and close/reopen on one file, every read verified against
# fsx's model. Runs every seed in fsx-seeds.txt with passthrough=auto and passthrough=off
# (FSX_MODES), as a group member with umask 022. After each run the file seen through the
# mount must equal the file in the store byte for byte.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
conf_init

MODES="${FSX_MODES:-auto off}"
if [ -z "${CONF_SKIP_SETUP:-}" ]; then
    conf_tools || { echo "fsx.sh: installing tools failed"; exit 1; }
fi
conf_bin || { echo "fsx.sh: build failed"; exit 1; }
conf_users || { echo "fsx.sh: creating users failed"; exit 1; }

mapfile -t runs < <(sed -e 's/#.*//' "$CONF_HERE/fsx-seeds.txt" | awk 'NF == 2')
[ "${#runs[@]}" -gt 0 ] || { echo "fsx.sh: no runs in fsx-seeds.txt"; exit 1; }

for mode in $MODES; do
    conf_log "== fsx with passthrough=$mode"
    if ! conf_mount "$mode"; then
        conf_result "fsx[passthrough=$mode]" fail "mount failed"
        continue
    fi
    cfg="$CONF_BASE/fsx.toml"
    cp "$CONF_HERE/fsx.toml" "$cfg"
    chmod 0644 "$cfg"
    mkdir "$CONF_MNT/fsx" && chown "$CONF_U1" "$CONF_MNT/fsx"
    total_ops=0
    for run in "${runs[@]}"; do
        read -r seed nops <<<"$run"
        name="fsx[passthrough=$mode,seed=$seed]"
        art="$CONF_BASE/artifacts-$seed"
        mkdir -m 0755 "$art" && chown "$CONF_U1" "$art"
        log="$CONF_BASE/fsx-$seed.log"
        f="$CONF_MNT/fsx/file-$seed"
        start=$SECONDS
        conf_as_u1 timeout -k 10 240 "$FSX" -v -f "$cfg" -N "$nops" -S "$seed" -P "$art" "$f" >"$log" 2>&1
        rc=$?
        secs=$((SECONDS - start))
        # One log line per executed operation: "[INFO  fsx] <step> <op> ..." (operations that
        # are no-ops at the current size, e.g. reading an empty file, are skipped silently).
        ops="$(awk '$1 == "[INFO" && $3 ~ /^[0-9]+$/ {n = $3} END {print n + 0}' "$log")"
        logged="$(awk '$1 == "[INFO" && $3 ~ /^[0-9]+$/ {n++} END {print n + 0}' "$log")"
        mix="$(awk '$1 == "[INFO" && $3 ~ /^[0-9]+$/ {sub(/\(.*/, "", $4); c[$4]++} END {for (k in c) printf "%s=%d ", k, c[k]}' "$log")"
        problems=()
        [ "$rc" -eq 0 ] || problems+=("fsx exit $rc")
        grep -q "All operations completed A-OK" "$log" || problems+=("no A-OK")
        [ "$ops" -eq "$nops" ] || problems+=("stopped at operation $ops of $nops")
        if [ -f "$f" ] || [ -f "$CONF_STORE/fsx/file-$seed" ]; then
            cmp -s "$f" "$CONF_STORE/fsx/file-$seed" || problems+=("mount and store contents differ")
        fi
        if [ "${#problems[@]}" -eq 0 ]; then
            total_ops=$((total_ops + ops))
            conf_result "$name" ok "$ops ops ($logged non-trivial) in ${secs}s: $mix"
        else
            CONF_KEEP=1
            echo "-- last lines of $log:"
            tail -n 25 "$log"
            ls -la "$art"
            conf_result "$name" fail "$(IFS=';'; echo "${problems[*]}")"
        fi
    done
    echo "fsx passthrough=$mode: $total_ops operations verified"
    if grep -Eq "panicked|ERROR" "$CONF_LOG"; then
        echo "-- daemon log has errors:"
        grep -E "panicked|ERROR" "$CONF_LOG" | head
        conf_result "fsx[passthrough=$mode] daemon log" fail "errors in the daemon log"
    fi
    conf_umount || conf_result "fsx[passthrough=$mode] unmount" fail "unclean unmount"
done

conf_summary fsx
