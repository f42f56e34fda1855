#!/usr/bin/env python3
"""Which FUSE requests a command costs, and which syscalls the daemon makes for them.

    python3 bench/fuseprof.py MOUNTPOINT [--per N] [--json] -- COMMAND [ARGS...]

Attaches `strace -f -C` to the FUSE daemon serving MOUNTPOINT (hfcachefs, bindfs or any
other), runs COMMAND, and decodes the daemon's traffic on /dev/fuse: every request read
(opcode, and for errors the reply's errno) and every syscall the daemon made meanwhile.
`--per N` divides the counts by N (e.g. the number of files a workload touched). Run as
root. strace slows the daemon down a lot: use it for counts, never for times.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time

OPS = {
    1: "LOOKUP", 2: "FORGET", 3: "GETATTR", 4: "SETATTR", 5: "READLINK", 6: "SYMLINK", 8: "MKNOD",
    9: "MKDIR", 10: "UNLINK", 11: "RMDIR", 12: "RENAME", 13: "LINK", 14: "OPEN", 15: "READ",
    16: "WRITE", 17: "STATFS", 18: "RELEASE", 20: "FSYNC", 21: "SETXATTR", 22: "GETXATTR",
    23: "LISTXATTR", 24: "REMOVEXATTR", 25: "FLUSH", 26: "INIT", 27: "OPENDIR", 28: "READDIR",
    29: "RELEASEDIR", 30: "FSYNCDIR", 31: "GETLK", 32: "SETLK", 33: "SETLKW", 34: "ACCESS",
    35: "CREATE", 36: "INTERRUPT", 37: "BMAP", 38: "DESTROY", 39: "IOCTL", 40: "POLL",
    41: "NOTIFY_REPLY", 42: "BATCH_FORGET", 43: "FALLOCATE", 44: "READDIRPLUS", 45: "RENAME2",
    46: "LSEEK", 47: "COPY_FILE_RANGE", 51: "TMPFILE", 52: "STATX",
}
ERRNO = {2: "ENOENT", 13: "EACCES", 17: "EEXIST", 22: "EINVAL", 38: "ENOSYS", 61: "ENODATA",
         95: "EOPNOTSUPP", 25: "ENOTTY", 1: "EPERM"}

DATA = re.compile(r'(?:read\(\d+, |<\.\.\. read resumed>)"((?:\\x[0-9a-f]{2})+)')
REPLY = re.compile(r'writev?\(\d+, (?:\[\{iov_base=)?"((?:\\x[0-9a-f]{2})+)')
SUMMARY = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+(\d+)\s+(\d+)\s+(?:(\d+)\s+)?(\w+)\s*$")


def unhex(s: str) -> bytes:
    return bytes(int(h, 16) for h in s.split("\\x")[1:])


def mount_daemon(mountpoint: str) -> int:
    """The pid of the process serving a FUSE mount: the holder of a /dev/fuse fd whose
    command line names the mountpoint."""
    mp = os.path.realpath(mountpoint).encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
            if mp not in [os.path.realpath(a) if a.startswith(b"/") else a for a in args]:
                continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/fuse":
                    return int(pid)
        except OSError:
            continue
    raise SystemExit(f"fuseprof: no FUSE daemon found for {mountpoint}")


def parse(path: str) -> dict:
    ops = collections.Counter()
    errors = collections.Counter()
    pending = {}
    syscalls = {}
    in_summary = False
    with open(path, errors="replace") as f:
        for line in f:
            if "% time" in line:
                in_summary = True
                continue
            if in_summary:
                m = SUMMARY.match(line)
                if m and m.group(4) != "total":
                    syscalls[m.group(4)] = int(m.group(2))
                continue
            m = DATA.search(line)
            if m:
                b = unhex(m.group(1))
                if len(b) >= 16:
                    op = OPS.get(int.from_bytes(b[4:8], "little"), str(int.from_bytes(b[4:8], "little")))
                    ops[op] += 1
                    pending[int.from_bytes(b[8:16], "little")] = op
                continue
            m = REPLY.search(line)
            if m:
                b = unhex(m.group(1))
                if len(b) >= 16:
                    err = int.from_bytes(b[4:8], "little", signed=True)
                    op = pending.pop(int.from_bytes(b[8:16], "little"), "?")
                    if err < 0:
                        errors[f"{op} {ERRNO.get(-err, -err)}"] += 1
    return {"requests": dict(ops.most_common()), "error_replies": dict(errors.most_common()),
            "syscalls": dict(sorted(syscalls.items(), key=lambda kv: -kv[1]))}


def profile(mountpoint: str, cmd: list[str], env=None) -> dict:
    pid = mount_daemon(mountpoint)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "strace.txt")
        tracer = subprocess.Popen(["strace", "-f", "-C", "-xx", "-s", "24", "-o", out, "-p", str(pid)],
                                  stderr=subprocess.PIPE, text=True)
        # strace prints "attached" once it has every thread
        deadline = time.time() + 10
        while time.time() < deadline:
            line = tracer.stderr.readline()
            if "attached" in line or not line:
                break
        time.sleep(0.3)
        try:
            rc = subprocess.run(cmd, env=env).returncode
        finally:
            time.sleep(0.3)
            tracer.send_signal(2)
            tracer.wait(30)
        res = parse(out)
    res["command_status"] = rc
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mountpoint")
    ap.add_argument("--per", type=float, default=1.0, help="divide counts by this")
    ap.add_argument("--json", action="store_true")
    argv = sys.argv[1:]
    if "--" not in argv:
        ap.error("usage: fuseprof.py MOUNTPOINT [--per N] [--json] -- COMMAND [ARGS...]")
    i = argv.index("--")
    a = ap.parse_args(argv[:i])
    cmd = argv[i + 1:]
    if not cmd:
        ap.error("no command")
    res = profile(a.mountpoint, cmd)
    if a.json:
        print(json.dumps(res, indent=1))
        return 0
    per = a.per
    total = sum(res["requests"].values())
    print(f"FUSE requests: {total / per:.2f}" + (f" per unit (/{per:g})" if per != 1 else ""))
    for op, n in res["requests"].items():
        print(f"  {op:12s} {n / per:8.2f}")
    if res["error_replies"]:
        print("error replies:")
        for k, n in res["error_replies"].items():
            print(f"  {k:24s} {n / per:8.2f}")
    st = sum(res["syscalls"].values())
    print(f"daemon syscalls: {st / per:.2f}" + (" per unit" if per != 1 else ""))
    for k, n in res["syscalls"].items():
        print(f"  {k:16s} {n / per:8.2f}")
    return res["command_status"]


if __name__ == "__main__":
    sys.exit(main())
