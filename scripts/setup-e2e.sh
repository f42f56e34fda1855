#!/usr/bin/env bash
# Prepare a Debian 12 machine for the end-to-end tests in tests/e2e (run as root).
#
# Creates two virtualenvs from the SYSTEM interpreter (/usr/bin/python3) in a place
# every user can read and execute, because the tests run Hugging Face code as
# throw-away unprivileged users (root's home, and the pyenv python in it, is 0700):
#
#   /opt/hfcachefs-e2e/venv-new   tests/e2e/requirements-new.txt  (hub 2.x + hf_xet, filelock 4.x;
#                                 also runs the pytest driver as root and makes the Xet fixtures)
#   /opt/hfcachefs-e2e/venv-old   tests/e2e/requirements-old.txt  (hub 0.20.x, filelock 3.13)
#
# Idempotent: a venv whose stamp file matches the requirements file (sha256) and the
# interpreter version is left alone. Set HFCACHEFS_E2E_PREFIX to install elsewhere.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-e2e.sh: must run as root" >&2
    exit 1
fi

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${HFCACHEFS_E2E_PREFIX:-/opt/hfcachefs-e2e}"
PY=/usr/bin/python3
umask 022

# --- Debian packages -------------------------------------------------------------
# python3-venv: venvs from the system python; util-linux: setpriv; passwd: useradd,
# groupadd; mount: umount; coreutils: cp, timeout.
need_pkgs=()
for pkg in python3 python3-venv util-linux passwd mount coreutils; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        need_pkgs+=("$pkg")
    fi
done
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    echo "setup-e2e.sh: installing ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # apt-get update once, only when something is missing.
    apt-get update
    apt-get install -y --no-install-recommends "${need_pkgs[@]}"
fi

# --- virtualenvs --------------------------------------------------------------------
mkdir -p "$PREFIX"
chmod 0755 "$PREFIX"

make_venv() {
    local name="$1" req="$2"
    local venv="$PREFIX/$name"
    local stamp="$venv/.hfcachefs-e2e-stamp"
    local want
    want="$(sha256sum "$req" | cut -d' ' -f1) $("$PY" -c 'import sys; print(sys.version.split()[0])')"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/python" ] \
        && "$venv/bin/python" -c 'import huggingface_hub, filelock, datasets' >/dev/null 2>&1; then
        echo "setup-e2e.sh: $venv is up to date"
        return 0
    fi
    echo "setup-e2e.sh: building $venv from $req"
    rm -rf "$venv"
    "$PY" -m venv "$venv"
    # Binary wheels only: nothing here should ever need a compiler.
    PIP_FIND_LINKS= "$venv/bin/python" -m pip install --quiet --no-input --only-binary=:all: \
        -r "$req"
    "$venv/bin/python" -m pip check
    chmod -R a+rX "$venv"
    echo "$want" > "$stamp"
    chmod 0644 "$stamp"
}

make_venv venv-new "$REPO/tests/e2e/requirements-new.txt"
make_venv venv-old "$REPO/tests/e2e/requirements-old.txt"

for v in venv-new venv-old; do
    "$PREFIX/$v/bin/python" -c 'import huggingface_hub as h, filelock as f; print("'"$v"': huggingface_hub", h.__version__, "filelock", f.__version__)'
done
