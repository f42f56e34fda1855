#!/usr/bin/env bash
# Installs the Debian packages hfcachefs and its test suite need (root, idempotent).
# Only packages that are missing are installed; `apt-get update` runs only if needed.
set -euo pipefail

[ "$(id -u)" -eq 0 ] || { echo "deps.sh: must run as root" >&2; exit 1; }

# fuse3: mount.fuse3 (mount -t fuse / fstab) and fusermount3; util-linux: setpriv, flock,
# findmnt; passwd: useradd/groupadd; procps: ps/pgrep; python3-venv: test virtualenvs;
# attr: getfattr/setfattr for xattr checks.
packages=(fuse3 util-linux passwd mount procps python3-venv attr "$@")
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "deps.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "${missing[@]}"; then
        apt-get update
        apt-get install -y --no-install-recommends "${missing[@]}"
    fi
fi

# The kernel's FUSE device must be there (CI and our machines have it).
[ -c /dev/fuse ] || modprobe fuse 2>/dev/null || true
[ -c /dev/fuse ] || { echo "deps.sh: /dev/fuse is missing (is the fuse module loaded?)" >&2; exit 1; }

# Rust toolchain: use the one on the machine (rustup installs it in ~/.cargo).
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || {
    echo "deps.sh: cargo not found: install Rust >= 1.85 (https://rustup.rs) and re-run" >&2
    exit 1
}
