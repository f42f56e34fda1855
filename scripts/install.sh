#!/usr/bin/env bash
# Sets up hfcachefs on a Debian 12 machine (as root) and mounts the shared cache:
# installs fuse3, builds and installs /usr/local/bin/hfcachefs, creates the group and a
# root-only store, adds the fstab line (the old fstab is backed up first), mounts it, and
# installs /etc/profile.d/hfcachefs.sh, which sets HF_HOME to the mountpoint for members of
# the group. Running it again changes nothing. --uninstall reverses all of it (unmounts,
# removes the fstab line, the profile.d file and the binary) and keeps the store's data and
# the group.
#
#   bash scripts/install.sh [--group hf-users] [--store /var/lib/hfcachefs/store]
#                           [--mountpoint /huggingface] [--uninstall]
#
# Also: --fstab FILE and --profile FILE (default /etc/fstab, /etc/profile.d/hfcachefs.sh)
# for tests and chroots; HFCACHEFS_BIN=/path/to/hfcachefs installs that binary instead of
# building one with cargo.
set -euo pipefail

GROUP=hf-users
STORE=/var/lib/hfcachefs/store
MOUNTPOINT=/huggingface
FSTAB=/etc/fstab
PROFILE=/etc/profile.d/hfcachefs.sh
BIN=/usr/local/bin/hfcachefs
UNINSTALL=0
MARKER="# hfcachefs: shared Hugging Face cache (added by scripts/install.sh)"
while [ $# -gt 0 ]; do
    case "$1" in
        --group) GROUP="$2"; shift 2 ;;
        --store) STORE="$2"; shift 2 ;;
        --mountpoint) MOUNTPOINT="$2"; shift 2 ;;
        --fstab) FSTAB="$2"; shift 2 ;;
        --profile) PROFILE="$2"; shift 2 ;;
        --uninstall) UNINSTALL=1; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

[ "$(id -u)" -eq 0 ] || { echo "install.sh: must run as root" >&2; exit 1; }
for p in "$STORE" "$MOUNTPOINT"; do
    case "$p" in
        /*) ;;
        *) echo "install.sh: $p: give an absolute path" >&2; exit 2 ;;
    esac
    case "$p" in
        *[[:space:]]*) echo "install.sh: $p: paths with spaces are not supported in fstab" >&2; exit 2 ;;
    esac
done
MOUNTPOINT="${MOUNTPOINT%/}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# mount(8) reads the given fstab instead of /etc/fstab.
mount_fstab() {
    if [ "$FSTAB" = /etc/fstab ]; then mount "$@"; else mount -T "$FSTAB" "$@"; fi
}

mounted() {
    findmnt -n -M "$MOUNTPOINT" -t fuse.hfcachefs >/dev/null 2>&1
}

# The fstab without our entry for $MOUNTPOINT (its marker comment included).
fstab_without_ours() {
    awk -v mnt="$MOUNTPOINT" -v marker="$MARKER" '
        $0 == marker { held = $0; next }
        !/^[[:space:]]*#/ && $2 == mnt && ($3 == "fuse.hfcachefs" || $1 ~ /^hfcachefs#/) { held = ""; next }
        { if (held != "") print held; held = ""; print }
        END { if (held != "") print held }
    ' "$FSTAB"
}

# Replaces the fstab with stdin, keeping a dated backup of the old one.
replace_fstab() {
    local new backup
    new="$(mktemp "$FSTAB.hfcachefs-new.XXXXXX")"
    cat >"$new"
    backup="$FSTAB.hfcachefs-backup.$(date +%Y%m%d-%H%M%S)"
    cp -p "$FSTAB" "$backup"
    chmod --reference="$FSTAB" "$new"
    mv -f "$new" "$FSTAB"
    echo "updated $FSTAB (previous version: $backup)"
}

if [ "$UNINSTALL" -eq 1 ]; then
    if mounted; then
        umount "$MOUNTPOINT" || {
            echo "install.sh: $MOUNTPOINT is busy: stop what uses it (fuser -vm $MOUNTPOINT) and re-run" >&2
            exit 1
        }
        echo "unmounted $MOUNTPOINT"
    fi
    if [ -f "$FSTAB" ] && ! fstab_without_ours | cmp -s - "$FSTAB"; then
        fstab_without_ours | replace_fstab
    fi
    if [ -f "$PROFILE" ] && grep -q "hfcachefs" "$PROFILE"; then
        rm -f "$PROFILE"
        echo "removed $PROFILE"
    fi
    # Other hfcachefs mounts or fstab lines still need the binary.
    others="$(findmnt -n -t fuse.hfcachefs -o TARGET 2>/dev/null || true)"
    users="$(cat /etc/fstab "$FSTAB" 2>/dev/null | grep -v '^[[:space:]]*#' | grep -E 'fuse\.hfcachefs|hfcachefs#' || true)"
    if [ -e "$BIN" ]; then
        if [ -n "$others" ] || [ -n "$users" ]; then
            echo "kept $BIN: still used by other hfcachefs mounts or fstab lines:"
            printf '  %s\n' $others
            [ -n "$users" ] && printf '  %s\n' "$users"
        else
            rm -f "$BIN"
            echo "removed $BIN"
        fi
    fi
    rmdir "$MOUNTPOINT" 2>/dev/null && echo "removed empty mountpoint $MOUNTPOINT" || true
    echo "kept the store $STORE (its data) and the group $GROUP; remove them by hand if wanted"
    exit 0
fi

bash scripts/deps.sh
if [ -n "${HFCACHEFS_BIN:-}" ]; then
    built="$HFCACHEFS_BIN"
else
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
    cargo build --release --locked
    built=target/release/hfcachefs
fi
[ -x "$built" ] || { echo "install.sh: $built is not an executable" >&2; exit 1; }
if ! cmp -s "$built" "$BIN"; then
    install -m 0755 "$built" "$BIN.new"
    mv -f "$BIN.new" "$BIN"
    echo "installed $BIN"
fi

getent group "$GROUP" >/dev/null || { groupadd "$GROUP"; echo "created group $GROUP"; }
if [ ! -d "$STORE" ]; then
    install -d -m 0700 -o root -g root "$STORE"
    echo "created store $STORE"
fi
[ -d "$MOUNTPOINT" ] || { mkdir -p "$MOUNTPOINT"; echo "created mountpoint $MOUNTPOINT"; }

LINE="$STORE $MOUNTPOINT fuse.hfcachefs group=$GROUP,nodev,nosuid,nofail,x-systemd.requires-mounts-for=$STORE 0 0"
[ -e "$FSTAB" ] || : >"$FSTAB"
if grep -qxF "$LINE" "$FSTAB"; then
    :
elif awk -v mnt="$MOUNTPOINT" '!/^[[:space:]]*#/ && $2 == mnt { found = 1 } END { exit !found }' "$FSTAB"; then
    echo "install.sh: $FSTAB already has another entry for $MOUNTPOINT; left it as it is:" >&2
    awk -v mnt="$MOUNTPOINT" '!/^[[:space:]]*#/ && $2 == mnt' "$FSTAB" >&2
else
    { cat "$FSTAB"; printf '%s\n%s\n' "$MARKER" "$LINE"; } | replace_fstab
fi

if mounted; then
    echo "$MOUNTPOINT is already mounted"
else
    mount_fstab "$MOUNTPOINT"
    echo "mounted $STORE on $MOUNTPOINT"
fi

profile="$(cat <<EOF
# Installed by hfcachefs scripts/install.sh: members of $GROUP share one Hugging Face
# cache at $MOUNTPOINT (log in again after: usermod -aG $GROUP NAME).
case " \$(id -Gn 2>/dev/null) " in
    *" $GROUP "*) export HF_HOME=$MOUNTPOINT ;;
esac
EOF
)"
if [ "$(cat "$PROFILE" 2>/dev/null)" != "$profile" ]; then
    mkdir -p "$(dirname "$PROFILE")"
    printf '%s\n' "$profile" >"$PROFILE.new"
    chmod 0644 "$PROFILE.new"
    mv -f "$PROFILE.new" "$PROFILE"
    echo "installed $PROFILE"
fi
findmnt -M "$MOUNTPOINT"
echo "Add users with: usermod -aG $GROUP NAME (they log in again); check with: hfcachefs doctor $MOUNTPOINT"
