#!/usr/bin/env bash
# Sets up hfcachefs on a Debian 12 machine (as root) and mounts the shared cache:
# installs fuse3, builds and installs /usr/local/bin/hfcachefs, creates the group and a
# root-only store, and mounts it on /huggingface. Running it again changes nothing.
#
#   bash scripts/install.sh [--group hf-users] [--store /var/lib/hfcachefs/store] [--mountpoint /huggingface]
set -euo pipefail

GROUP=hf-users
STORE=/var/lib/hfcachefs/store
MOUNTPOINT=/huggingface
while [ $# -gt 0 ]; do
    case "$1" in
        --group) GROUP="$2"; shift 2 ;;
        --store) STORE="$2"; shift 2 ;;
        --mountpoint) MOUNTPOINT="$2"; shift 2 ;;
        -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

[ "$(id -u)" -eq 0 ] || { echo "install.sh: must run as root" >&2; exit 1; }
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/deps.sh
cargo build --release --locked
install -m 0755 target/release/hfcachefs /usr/local/bin/hfcachefs.new
mv -f /usr/local/bin/hfcachefs.new /usr/local/bin/hfcachefs

getent group "$GROUP" >/dev/null || { groupadd "$GROUP"; echo "created group $GROUP"; }
if [ ! -d "$STORE" ]; then
    install -d -m 0700 -o root -g root "$STORE"
    echo "created store $STORE"
fi
mkdir -p "$MOUNTPOINT"

if findmnt -n -M "$MOUNTPOINT" -t fuse.hfcachefs >/dev/null 2>&1; then
    echo "$MOUNTPOINT is already mounted"
else
    mount -t fuse.hfcachefs "$STORE" "$MOUNTPOINT" -o "group=$GROUP"
    echo "mounted $STORE on $MOUNTPOINT"
fi
findmnt -M "$MOUNTPOINT"
echo "Add users with: usermod -aG $GROUP NAME (they log in again), then: export HF_HOME=$MOUNTPOINT"
