#!/usr/bin/env python3
"""Scale-out over GlusterFS (issue 4, section 5): two "hosts" share one store.

    /opt/hfcachefs-e2e/venv-new/bin/python tests/cluster/run_cluster.py    (as root; see run.sh)

scripts/gluster-up.sh brings up a single-node GlusterFS on loopback, mounts its volume twice
(client A and client B, zero attribute/entry/negative timeouts, no open keep-cache) and one
hfcachefs over each (HF_A over A's store, HF_B over B's). Every step bounded in time:

 with hfcachefs entry_timeout=0,attr_timeout=0 (the setting DEPLOYMENT.md recommends):
  1. gc across hosts (step_gc_two_hosts), on the still empty store: four revisions made
     through A, read through B in the opposite order; both clients give a file the same
     st_ino; B's reads are in B's own access record and set gc's least-recently-used order
     on A (a dry run would remove d, c); a member on B holds d open: B's open record lists it
     within a tick, gc on A keeps d and removes c, b, a in that order, exits 1 saying why;
     the reader finishes with the right sha256; closed, d leaves B's record within a tick
     and the next gc on A removes it. A third daemon on B killed (SIGKILL) with a file open:
     its record protects the file until it is OPEN_RECORD_TTL (60 s) old, not after; a
     daemon starting then folds the killed one's access record into its own;
  2. concurrent downloads: 8 members, every other one on host A / host B, run
     `snapshot_download` of 20 repos (two with a 200 MB file), each asked for from both hosts:
     zero errors, one blob per etag with the right sha256, every snapshot symlink resolving,
     one GET per file (the lock files' flocks exclude across hosts), ownership and modes on
     the brick as on one host;
  3. flock across hosts: LOCK_EX through A blocks LOCK_NB (and LOCK_SH) through B and back, a
     blocking waiter on the other host gets the lock when the holder lets go or is killed,
     shared locks coexist;
  4. ownership and modes of what members create on either host, checked on the brick; opens
     through host B of lock files the store itself refuses the member (just made by host A's
     daemon and not yet handed over; another member's 0644 one): no EIO (the kernel's
     passthrough open of the backing file is made as the caller); and fix-store moving an old shared `token` into its owner's private place (GlusterFS has no
     renameat2 flags);
 remounted with entry_timeout=attr_timeout=CLUSTER_TIMEOUT (default 1 s):
  5. cross-host visibility of creations, size changes and deletions within the timeouts;
  6. the download scenario again (CLUSTER_BIG_MB2 MB big files);
  7. ESTALE: readers on B while A replaces files by rename-over (through hfcachefs and
     directly on the gluster client) and removes directories B holds open: only
     ENOENT/ESTALE, never a torn read or another errno (but readers' EIO with BUG_D's
     signature, a kernel limit), both daemons stay up;
 and
  8. root squash (gluster `server.root-squash on`): what hfcachefs does when root cannot
     chown in the store, recorded precisely (mount refused; running daemons: every operation
     fails), nothing half-made left behind, daemons up, recovery when squash is off.

Checks that a known daemon bug or kernel limit breaks (BUG_A/B/C/D below) are XFAIL, printed but not counted,
unless HF_STRICT_KNOWN=1. Closing line: `cluster: N passed, M failed`; exit 1 on any failure.
Environment: CLUSTER_BIG_MB (200), CLUSTER_BIG_MB2 (20), CLUSTER_TIMEOUT (1),
CLUSTER_RACE_SECS (10), CLUSTER_KEEP=1 (leave gluster up), CLUSTER_HF_EXTRA_OPTS (more -o
options for both hfcachefs mounts, e.g. passthrough=off), HFCACHEFS_BIN.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests" / "load"))
import scenario as S  # noqa: E402

L = S.L
UP = REPO_ROOT / "scripts" / "gluster-up.sh"
DOWN = REPO_ROOT / "scripts" / "gluster-down.sh"


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def run(cmd, timeout=120, check=True, **kw) -> subprocess.CompletedProcess:
    cp = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and cp.returncode != 0:
        raise L.E2EError(f"{cmd} exited {cp.returncode}\n{cp.stdout[-3000:]}\n{cp.stderr[-3000:]}")
    return cp


def gl(*args, timeout=60) -> subprocess.CompletedProcess:
    return run(["gluster", "--mode=script", *args], timeout=timeout)


def as_user(user, umask: str, script: str, timeout: float = 60, check: bool = False, bg: bool = False):
    """Run a shell snippet as a user (setpriv, own umask)."""
    cmd = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups", "--",
           "/bin/sh", "-c", f"umask {umask}; {script}"]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    if bg:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                cwd="/", start_new_session=True)
    cp = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd="/")
    if check and cp.returncode != 0:
        raise L.E2EError(f"as {user.name}: {script}\nrc={cp.returncode}\n{cp.stdout}\n{cp.stderr}")
    return cp


def kill_bg(p) -> None:
    if p.poll() is None:
        try:
            os.killpg(p.pid, 9)
        except ProcessLookupError:
            pass
    try:
        p.communicate(timeout=10)
    except Exception:  # noqa: BLE001
        pass


def errname(e: int | None) -> str:
    return "ok" if not e else errno.errorcode.get(e, str(e))


GLUSTER_LOGS = {"A": Path("/var/log/glusterfs/hfgl-client-a.log"), "B": Path("/var/log/glusterfs/hfgl-client-b.log")}


def gluster_log_offsets() -> dict[str, int]:
    return {k: (p.stat().st_size if p.exists() else 0) for k, p in GLUSTER_LOGS.items()}


def gluster_open_failures(since: dict[str, int]) -> dict[str, dict[str, int]]:
    """The OPEN failures each gluster client logged since `since` (gluster_log_offsets):
    host -> "PATH => -1 (ERROR)" (PATH inside the volume, e.g. /store/stale/target) -> count.
    With passthrough these are also the kernel's opens of backing files, made as the caller."""
    import re
    out: dict[str, dict[str, int]] = {}
    for k, p in GLUSTER_LOGS.items():
        found: dict[str, int] = {}
        try:
            with open(p, "rb") as f:
                f.seek(since.get(k, 0))
                text = f.read().decode(errors="replace")
        except OSError:
            text = ""
        for line in text.splitlines():
            m = re.search(r"fuse_fd_cbk\] 0-glusterfs-fuse: \d+: OPEN\(\) (.* => -1 \([^)]*\))", line)
            if m:
                n = re.search(r"repeated (\d+) times", line) if line.startswith("The message") else None
                found[m.group(1)] = found.get(m.group(1), 0) + (int(n.group(1)) if n else 1)
        out[k] = found
    return out


class Cluster:
    LOGS = {"A": Path("/var/log/hfcachefs-gluster-a.log"), "B": Path("/var/log/hfcachefs-gluster-b.log")}

    def __init__(self, group: str):
        self.group = group
        self.hf_timeout = 0.0
        self.state: dict[str, str] = {}
        self.log_offsets = {k: 0 for k in self.LOGS}

    def up(self, hf_timeout: float) -> None:
        """gluster-up.sh with hfcachefs entry/attr timeouts `hf_timeout` (idempotent)."""
        self.hf_timeout = hf_timeout
        opts = f"entry_timeout={hf_timeout:g},attr_timeout={hf_timeout:g}"
        if os.environ.get("CLUSTER_HF_EXTRA_OPTS"):
            opts += "," + os.environ["CLUSTER_HF_EXTRA_OPTS"]
        for k, p in self.LOGS.items():
            self.log_offsets[k] = p.stat().st_size if p.exists() else 0
        cp = run(["bash", str(UP), "--install", "--group", self.group, "--hf-opts", opts,
                  "--bin", str(L.hfcachefs_bin())], timeout=600)
        for line in cp.stdout.splitlines():
            k, _, v = line.partition("=")
            if k.startswith("HFGL_"):
                self.state[k] = v
        self.client_a, self.client_b = Path(self.state["HFGL_CLIENT_A"]), Path(self.state["HFGL_CLIENT_B"])
        self.hf_a, self.hf_b = Path(self.state["HFGL_HF_A"]), Path(self.state["HFGL_HF_B"])
        self.brick = Path(self.state["HFGL_BRICK"])
        self.volume = self.state["HFGL_VOLUME"]
        sub = self.state["HFGL_STORE_SUBDIR"]
        self.store_a, self.store_b = self.client_a / sub, self.client_b / sub
        self.brick_store = self.brick / sub
        self.pid_a = S.daemon_pids(self.hf_a)
        self.pid_b = S.daemon_pids(self.hf_b)

    def remount(self, hf_timeout: float) -> None:
        """Both hfcachefs mounts again with other timeouts (gluster stays up)."""
        for mnt in (self.hf_a, self.hf_b):
            for _ in range(50):
                if not S.is_mountpoint(mnt) or run(["umount", str(mnt)], check=False, timeout=30).returncode == 0:
                    break
                time.sleep(0.2)
            if S.is_mountpoint(mnt):
                raise L.E2EError(f"cannot unmount {mnt}")
        self.up(hf_timeout)

    def mounted(self) -> list[str]:
        return [str(p) for p in (self.client_a, self.client_b, self.hf_a, self.hf_b) if not S.is_mountpoint(p)]

    def daemons_alive(self) -> bool:
        return (len(self.pid_a) == 1 and S.daemon_pids(self.hf_a) == self.pid_a
                and len(self.pid_b) == 1 and S.daemon_pids(self.hf_b) == self.pid_b)

    def log_text(self) -> dict[str, str]:
        """What each daemon logged since the last (re)mount."""
        out = {}
        for k, p in self.LOGS.items():
            try:
                with open(p, "rb") as f:
                    f.seek(self.log_offsets[k])
                    out[k] = f.read().decode(errors="replace")
            except OSError:
                out[k] = ""
        return out

    def logs(self) -> str:
        return "\n".join(f"--- daemon {k} log (tail)\n{v[-2500:]}" for k, v in self.log_text().items())

    def passthrough_refusals(self) -> list[str]:
        return [f"{k}: {line}" for k, v in self.log_text().items() for line in v.splitlines()
                if "passthrough refused" in line]

    @staticmethod
    def down() -> None:
        run(["bash", str(DOWN)], timeout=300, check=False)


BUG_A = ("an ESTALE while opening the passthrough backing file (a file replaced on the other host) turns "
         "kernel passthrough off for the whole mount ('kernel passthrough refused for this store'); later "
         "opens of inodes that still have a passthrough open are answered without passthrough, which the "
         "kernel refuses: open() fails with EIO")
BUG_B = ("with entry_timeout > 0 a negative lookup cached on one host outlives the other host's creation: "
         "after taking the lock the other host released, hub still sees no blob and downloads it again; "
         "and os.makedirs(exist_ok=True) fails with FileExistsError (mkdir answers EEXIST while the cached "
         "negative entry still says ENOENT)")
BUG_D = ("kernel limit (DEPLOYMENT.md): with passthrough on, open() of a file that the other host replaces (rename "
         "over it) fails with EIO when the replacement lands between the daemon's OPEN reply and the kernel's own "
         "open of the backing file (fuse_passthrough_open -> backing_file_open: GlusterFS refuses to open the "
         "replaced inode, ESTALE, and fuse_file_io_open turns that into EIO); counted only when host B's gluster "
         "client logged at least as many OPEN() => Stale file handle of that very file")
BUG_C = ("when root's chown is squashed after mount, mkdir/symlink/mknod fail with EEXIST (EIO before 3d0d223) "
         "instead of EPERM: the new entry is not root's, so the daemon refuses to hand it over, and it stays in "
         "the store owned by the anonymous uid")


# ----------------------------------------------------------------------------------------
# 1. gc on host A respects what host B has open and what host B read
# ----------------------------------------------------------------------------------------
OPEN_RECORD_TTL = 60  # src/evict/state.rs
GC_SIZE = 1 << 20  # each revision: one 1 MiB blob, and refs/main (40 bytes; gc counts blocks)
READER = r"""
import hashlib, select, sys, time
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    size = int(sys.argv[2])
    h.update(f.read(4096))
    print("open", flush=True)
    go = False
    while True:
        if not go:
            if select.select([sys.stdin], [], [], 0.1)[0]:
                sys.stdin.readline()
                go = True
            elif f.tell() >= size - 4096:
                continue
        b = f.read(4096 if not go else 1 << 20)
        if not b:
            break
        h.update(b)
print("sha256", h.hexdigest(), flush=True)
"""


def hf_gc(mnt: Path, *args: str) -> tuple[int, dict | None, str]:
    """`hfcachefs gc MNT ARGS --json` as root: exit status, the report, all output."""
    cp = run([str(L.hfcachefs_bin()), "gc", str(mnt), *args, "--json"], check=False, timeout=120)
    try:
        report = json.loads(cp.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        report = None
    return cp.returncode, report, f"exit {cp.returncode}\n{cp.stdout[-2000:]}\n{cp.stderr[-2000:]}"


def names(items) -> list[str]:
    return [i["repo"].removeprefix("models--hfgc--") for i in items or []]


def record_lines(path: Path) -> set[str]:
    try:
        return set(path.read_text().split())
    except OSError:
        return set()


def record_of(dirpath: Path, pid: int) -> Path:
    """The record of the daemon `pid` (`<host>-<pid>`) in `dirpath`."""
    for p in (dirpath.iterdir() if dirpath.is_dir() else []):
        if p.name.endswith(f"-{pid}") and not p.name.startswith("."):  # not write_file's temporaries
            return p
    return dirpath / f"none-{pid}"


def wait_until(pred, limit: float, step: float = 0.05) -> float | None:
    t0 = time.monotonic()
    while True:
        if pred():
            return time.monotonic() - t0
        if time.monotonic() - t0 > limit:
            return None
        time.sleep(step)


class Reader:
    """A member's process reading a file slowly through a mount: open, 4 KiB every 0.1 s,
    the last 4 KiB only once told to finish."""

    def __init__(self, user, path: Path, size: int, script: Path):
        self.p = subprocess.Popen(
            ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups", "--",
             "/usr/bin/python3", str(script), str(path), str(size)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, cwd="/", start_new_session=True)

    def opened(self, limit: float = 10) -> bool:
        import select
        if not select.select([self.p.stdout], [], [], limit)[0]:
            return False
        return self.p.stdout.readline().strip() == "open"

    def finish(self) -> str:
        try:
            out, err = self.p.communicate("go\n", timeout=60)
        except subprocess.TimeoutExpired:
            kill_bg(self.p)
            return "timed out"
        return out.strip() + err.strip()[-500:]

    def kill(self) -> None:
        kill_bg(self.p)


def step_gc_two_hosts(rep: S.Report, cl: Cluster, members, base: Path, summary: dict) -> None:
    """On the fresh store: revisions made through host A, read through host B in another
    order, one held open on host B while gc runs on host A; then a daemon on host B killed
    with a file open. Exact sizes: every expected plan below is the only right one."""
    a, b = members.users[0], members.users[1]
    data_dir = base / "gcdata"
    data_dir.mkdir(mode=0o755)
    script = data_dir / "reader.py"
    script.write_text(READER)
    os.chmod(script, 0o644)
    state = cl.store_a / ".hfcachefs"
    hub_brick = cl.brick_store / "hub"
    revs = {}

    def make(tag: str) -> dict:
        """Revision `tag` of models--hfgc--TAG made through host A by member a, as a
        download leaves it (old layout): blobs/<sha256>, the snapshot's link, refs/main."""
        content = os.urandom(GC_SIZE)
        src = data_dir / f"{tag}.bin"
        src.write_bytes(content)
        os.chmod(src, 0o644)
        sha = hashlib.sha256(content).hexdigest()
        commit = hashlib.sha1(tag.encode()).hexdigest()
        repo = f"models--hfgc--{tag}"
        r = f"{cl.hf_a}/hub/{repo}"
        as_user(a, "022", f"set -e; mkdir -p '{r}/blobs' '{r}/refs' '{r}/snapshots/{commit}'; "
                          f"cp '{src}' '{r}/blobs/{sha}'; ln -s ../../blobs/{sha} '{r}/snapshots/{commit}/model.bin'; "
                          f"printf %s {commit} > '{r}/refs/main'", check=True)
        rev = {"repo": repo, "commit": commit, "sha": sha, "file": f"hub/{repo}/snapshots/{commit}/model.bin",
               "blob": f"hub/{repo}/blobs/{sha}"}
        st = os.stat(cl.store_a / rev["blob"])
        rev["ino"] = st.st_ino
        # What gc counts: what the files take on disk (st_blocks, as du), as host A sees them.
        rev["disk"] = 512 * (st.st_blocks + os.stat(cl.store_a / "hub" / repo / "refs" / "main").st_blocks)
        revs[tag] = rev
        return rev

    def present(tag: str) -> bool:
        r = revs[tag]
        return exists(cl.brick_store / r["blob"]) and exists(hub_brick / r["repo"] / "snapshots" / r["commit"])

    # Made through A in the order a, b, c, d (and named so): by A's records, files' times
    # and names alike, "a" is the least recently used and "d" the most.
    for tag in ("a", "b", "c", "d"):
        make(tag)
    x = revs["d"]
    ino_b = os.stat(cl.store_b / x["blob"]).st_ino
    rep.check("gc: the two gluster clients report the same st_ino for a store file (GFID-derived; the "
              "open and access records name files by it)", ino_b == x["ino"], f"A {x['ino']}, B {ino_b}")
    # B reads them in the opposite order, a second apart: d, c, b, a (d least recent).
    time.sleep(1.1)
    files = " ".join(f"'{cl.hf_b}/{revs[t]['file']}'" for t in ("d", "c", "b", "a"))
    as_user(b, "077", f"for f in {files}; do cat \"$f\" > /dev/null || exit 1; sleep 1.1; done", check=True, timeout=60)
    pid_b = cl.pid_b[0]
    access_b = lambda: record_lines(record_of(state / "access", pid_b))  # noqa: E731
    waited = wait_until(lambda: {str(r["ino"]) for r in revs.values()} <= access_b(), 10)
    rep.check("gc: host B's reads are in host B's own access record (access/<host>-<pid of B>)",
              waited is not None, f"B's record: {sorted(access_b())[:20]}; "
                                  f"records: {sorted(p.name for p in (state / 'access').iterdir())}")
    probe = hf_gc(cl.hf_a, "--max-size", "1P", "--dry-run")
    total = probe[1]["store_bytes"] if probe[1] else -1
    disk = {r["disk"] for r in revs.values()}
    rep.check("gc: the store holds exactly the four revisions, each the same on disk (1 MiB blob + refs/main)",
              len(disk) == 1 and total == sum(r["disk"] for r in revs.values()) and min(disk) > GC_SIZE,
              f"revisions on disk: {sorted(disk)}; {probe[2]}")
    one_and_a_bit = str(total - max(disk) - 1)  # more than one revision must go, two suffice

    # The negative case: nothing open, gc on A would remove d first (B's reads count).
    rc, r, out = hf_gc(cl.hf_a, "--max-size", one_and_a_bit, "--dry-run")
    rep.check("gc: without B's reader, gc on A would remove d then c: least recently used by B's reads "
              "(A's creations and names say the opposite)",
              rc == 0 and r is not None and names(r["removed"]) == ["d", "c"] and not r["kept"], out)

    # B holds d open (reading slowly).
    open_b = lambda: record_lines(record_of(state / "open", pid_b))  # noqa: E731
    reader = Reader(b, cl.hf_b / x["file"], GC_SIZE, script)
    try:
        rep.check("gc: the reader on B opened d", reader.opened(), reader.p.stderr.read() if reader.p.poll() is not None else "")
        t_open = wait_until(lambda: str(x["ino"]) in open_b(), 3)
        summary["gc open record lists the inode s"] = t_open and round(t_open, 2)
        rep.check("gc: B's open record (open/<host>-<pid of B>) lists d's blob within a tick and a margin",
                  t_open is not None, f"B's open record: {open_b()}")
        rc, r, out = hf_gc(cl.hf_a, "--max-size", one_and_a_bit, "--dry-run")
        rep.check("gc: with d open on B, a dry run on A would keep d and remove c then b instead",
                  rc == 0 and r is not None and names(r["removed"]) == ["c", "b"]
                  and names(r["kept"]) == ["d"] and "open through a mount" in r["kept"][0]["reason"], out)
        rc, r, out = hf_gc(cl.hf_a, "--max-size", str(GC_SIZE))
        summary["gc with d open on B"] = out.splitlines()[1][:600] if out.count("\n") > 1 else out
        rep.check("gc: gc on A with d open on B exits 1: d kept as open, c, b, a removed in that order, the goal "
                  "not met and why",
                  rc == 1 and r is not None and names(r["removed"]) == ["c", "b", "a"] and names(r["kept"]) == ["d"]
                  and "open through a mount" in r["kept"][0]["reason"] and r["met"] is False
                  and "kept" in (r["reason"] or ""), out)
        rep.check("gc: d's snapshot and blob are still in the store; a, b, c are gone (on the brick)",
                  present("d") and not any(exists(hub_brick / revs[t]["repo"]) for t in ("a", "b", "c")),
                  f"on the brick: {sorted(p.name for p in hub_brick.iterdir())}")
        res = reader.finish()
        rep.check("gc: the reader on B finishes d with the right sha256", f"sha256 {x['sha']}" in res, res)
    finally:
        reader.kill()
    t_closed = wait_until(lambda: str(x["ino"]) not in open_b(), 3)
    summary["gc open record drops the inode s"] = t_closed and round(t_closed, 2)
    rep.check("gc: once the reader closed d, B's open record drops it within a tick and a margin",
              t_closed is not None, f"B's open record: {open_b()}")
    rc, r, out = hf_gc(cl.hf_a, "--max-size", str(GC_SIZE))
    rep.check("gc: gc on A again: now d goes (exit 0, goal met)",
              rc == 0 and r is not None and names(r["removed"]) == ["d"] and not r["kept"] and r["met"]
              and not present("d") and not exists(hub_brick / x["repo"]), out)

    # A daemon on host B killed with SIGKILL while a member has a file open through it: its
    # open record protects the file until it is OPEN_RECORD_TTL old, then no longer.
    k = make("e")
    mnt_c = Path("/mnt/hfgl-gc-c")
    c = S.HfMount(cl.store_b, mnt_c, members.group, "entry_timeout=0,attr_timeout=0",
                  log=Path("/var/log/hfcachefs-gluster-c.log"))
    reader = None
    try:
        reader = Reader(b, mnt_c / k["file"], GC_SIZE, script)
        ok = reader.opened()
        listed = wait_until(lambda: str(k["ino"]) in record_lines(record_of(state / "open", c.pid)), 3)
        # (and its access record has the open: it outlives the daemon)
        flushed = wait_until(lambda: str(k["ino"]) in record_lines(record_of(state / "access", c.pid)), 5)
        open_c, access_c = record_of(state / "open", c.pid), record_of(state / "access", c.pid)
        rep.check("gc: a third daemon (on host B) lists the file a member opened through it", ok and listed is not None
                  and flushed is not None, f"{open_c}: {record_lines(open_c)}; {access_c}: {record_lines(access_c)}")
        os.kill(c.pid, 9)
        reader.kill()
        written = os.stat(open_c).st_mtime
        rc, r, out = hf_gc(cl.hf_a, "--max-size", "0", "--dry-run")
        rep.check("gc: just after that daemon was killed (SIGKILL), its open record still protects e",
                  r is not None and names(r["kept"]) == ["e"] and time.time() < written + OPEN_RECORD_TTL - 2, out)
        free_at = None
        deadline = written + OPEN_RECORD_TTL + 10
        while time.time() < deadline:
            rc, r, out = hf_gc(cl.hf_a, "--max-size", "0", "--dry-run")
            if r is not None and names(r["removed"]) == ["e"]:
                free_at = time.time()
                break
            time.sleep(1)
        age = None if free_at is None else free_at - written
        summary["gc killed daemon's record protected for s"] = age and round(age, 1)
        rep.check(f"gc: the killed daemon's open record stops protecting e once it is {OPEN_RECORD_TTL} s old",
                  age is not None and OPEN_RECORD_TTL - 1 <= age <= OPEN_RECORD_TTL + 5,
                  f"unprotected {age} s after its last write; {out}")
        rc, r, out = hf_gc(cl.hf_a, "--max-size", "0")
        rep.check("gc: then gc on A removes e (exit 0)", rc == 0 and r is not None and names(r["removed"]) == ["e"]
                  and not present("e"), out)
    finally:
        if reader:
            reader.kill()
        run(["umount", "-l", str(mnt_c)], check=False)
    # A daemon starting folds the stopped daemon's access record into its own and removes
    # its stale open record: the records stay bounded across crashes and restarts.
    lines_c = record_lines(access_c)
    d_mnt = S.HfMount(cl.store_a, Path("/mnt/hfgl-gc-d"), members.group, "entry_timeout=0,attr_timeout=0",
                      log=Path("/var/log/hfcachefs-gluster-d.log"))
    try:
        folded = wait_until(lambda: not exists(access_c) and not exists(open_c)
                            and lines_c <= record_lines(record_of(state / "access", d_mnt.pid)), 5)
        rep.check("gc: a daemon starting folds the killed daemon's access record into its own and drops its stale "
                  "open record", bool(lines_c) and folded is not None,
                  f"killed daemon's lines {sorted(lines_c)}; records now: "
                  f"{sorted(p.name for p in (state / 'access').iterdir())} / {sorted(p.name for p in (state / 'open').iterdir())}")
    finally:
        d_mnt.stop()
    for m in (mnt_c, Path("/mnt/hfgl-gc-d")):
        try:
            m.rmdir()
        except OSError:
            pass
    rep.check("gc: both daemons still up", cl.daemons_alive(), cl.logs())


# ----------------------------------------------------------------------------------------
# 2. Concurrent downloads across the two hosts
# ----------------------------------------------------------------------------------------
def step_downloads(rep: S.Report, cl: Cluster, members, base: Path, summary: dict, label: str, big_mb: int,
                   org: str, strict: bool) -> None:
    """The concurrent-download scenario across the hosts. `strict`: every check is plain;
    otherwise the checks known daemon bugs break are XFAIL (BUG_A, BUG_B)."""
    spec = S.make_spec(20, big_mb, 2, org=org)
    repo_ids = [r["id"] for r in spec["repos"]]
    n = len(members.users)
    want = S.assign(repo_ids, n, 2)
    homes = [str(cl.hf_a if i % 2 == 0 else cl.hf_b) for i in range(n)]
    both = all({i % 2 for i, repos in want.items() if r in repos} == {0, 1} for r in repo_ids)
    rep.check(f"{label}: every repo asked for from both hosts", both)
    wd = base / org
    wd.mkdir(mode=0o755)
    gl_since = gluster_log_offsets()
    hub = L.FakeHub(spec, wd, env_int("CLUSTER_THROTTLE", 64 << 20))
    try:
        script = S.install_scripts(wd)
        hub.reset_log()
        r = S.run_downloads(members.users, homes, want, hub, script, timeout=env_int("CLUSTER_DL_TIMEOUT", 600))
        summary[f"{label} s"] = round(r.seconds, 1)
        summary[f"{label} unique MB"] = round(sum(f["size"] for x in hub.manifest.values() for f in x["files"].values()) / S.MB)
        summary[f"{label} contended files"] = S.contention(hub)
        errors = S.result_problems(r, hub, want)
        what = f"{label}: zero errors, right sha256 for every file as read by its users"
        detail = f"{sum(len(v) for v in want.values())} snapshot_downloads from 2 hosts in {r.seconds:.1f} s"
        refusals = cl.passthrough_refusals()
        errnos = set(S.failed_errnos(r))
        # An EIO is BUG_D only with its signature: that host's gluster client logged an OPEN of
        # that very file failing with ESTALE (the kernel's open of the backing file). A
        # snapshot's file is its blob (the symlink resolved); a blob is replaced when it was
        # downloaded twice (BUG_B).
        opens = gluster_open_failures(gl_since)
        eio_files = re.findall(r"errno=5 file=(\S+)", "\n".join(errors))
        sub = cl.state["HFGL_STORE_SUBDIR"]

        def stale_open(f: str) -> bool:
            host, mnt = ("A", cl.hf_a) if f.startswith(f"{cl.hf_a}/") else ("B", cl.hf_b)
            return any(opens[host].get(f"/{sub}/{os.path.relpath(p, mnt)} => -1 (Stale file handle)")
                       for p in {f, os.path.realpath(f)})
        stale = all(stale_open(f) for f in eio_files)
        if strict or not errors or not errnos <= {errno.EIO, errno.EEXIST, errno.ENOENT} \
                or (errno.EIO in errnos and not refusals and not stale):
            rep.problems(what, errors, detail + ("\ngluster clients' OPEN failures: " + json.dumps(opens)[:3000]
                                                 if errno.EIO in errnos else ""))
        else:
            bugs = [b for b, hit in ((BUG_A, errno.EIO in errnos and refusals), (BUG_D, errno.EIO in errnos and not refusals),
                                     (BUG_B, errnos & {errno.EEXIST, errno.ENOENT})) if hit]
            rep.known(what, False, " / ".join(bugs), "\n".join(errors[:5]) + "\n" + "\n".join(refusals))
        probs = S.cache_problems(cl.brick_store, hub, repo_ids, check_nlink=False)
        rep.problems(f"{label}: exactly one blob per etag (on the brick)", probs["blobs"])
        rep.problems(f"{label}: every blob's sha256 correct (on the brick)", probs["sha256"])
        rep.problems(f"{label}: every snapshot symlink resolves (on the brick)", probs["symlinks"] + probs["refs"])
        rep.problems(f"{label}: no temporary files left", probs["leftovers"])
        for host, mnt in (("A", cl.hf_a), ("B", cl.hf_b)):
            p2 = S.cache_problems(mnt, hub, repo_ids, hash_blobs=False)
            rep.problems(f"{label}: blobs and symlinks right through host {host}'s mount",
                         p2["blobs"] + p2["symlinks"] + p2["refs"])
        dup = S.gets_per_file(hub, repo_ids)
        summary[f"{label} files downloaded more than once"] = len(dup)
        what = f"{label}: every file downloaded exactly once (flock excluded across hosts)"
        if strict or not dup:
            rep.problems(what, dup)
        else:
            rep.known(what, False, BUG_B, f"{len(dup)} files fetched twice:\n" + "\n".join(dup[:8]))
        rep.problems(f"{label}: ownership and modes on the brick as on one host",
                     S.owner_problems(cl.brick_store / "hub", members.gid, {u.uid for u in members.users}))
        rep.check(f"{label}: both daemons still up", cl.daemons_alive(), cl.logs())
    finally:
        hub.stop()


# ----------------------------------------------------------------------------------------
# 3. flock across hosts
# ----------------------------------------------------------------------------------------
def step_flock(rep: S.Report, cl: Cluster, a, b) -> None:
    name = "locks-test/model.lock"
    as_user(a, "022", f"mkdir -p '{cl.hf_a}/locks-test' && : > '{cl.hf_a}/{name}'", check=True)
    fa, fb = cl.hf_a / name, cl.hf_b / name
    if not S.L.sh(["sh", "-c", f"for i in $(seq 50); do [ -e '{fb}' ] && exit 0; sleep 0.1; done; exit 1"],
                  check=False).returncode == 0:
        rep.check("flock: the lock file is visible on host B", False)
        return
    for holder_host, hp, wp, holder, waiter in (("A", fa, fb, a, b), ("B", fb, fa, b, a)):
        other = "B" if holder_host == "A" else "A"
        # holder takes LOCK_EX and signals (by creating a marker) then sleeps
        marker = cl.hf_a / f"locks-test/held-{holder_host}"
        hold = as_user(holder, "022",
                       f"exec flock -x '{hp}' sh -c 'echo held; : > \"{marker}\"; sleep 4'", bg=True)
        try:
            ok = S.L.sh(["sh", "-c", f"for i in $(seq 100); do [ -e '{marker}' ] && exit 0; sleep 0.05; done; exit 1"],
                        check=False).returncode == 0
            rep.check(f"flock: LOCK_EX taken through host {holder_host}", ok)
            t0 = time.monotonic()
            nb = as_user(waiter, "077", f"flock -n -x '{wp}' true; echo rc=$?", timeout=30)
            rep.check(f"flock: LOCK_EX through {holder_host} makes LOCK_NB through {other} fail (EWOULDBLOCK)",
                      "rc=1" in nb.stdout, nb.stdout + nb.stderr)
            sh = as_user(waiter, "077", f"flock -n -s '{wp}' true; echo rc=$?", timeout=30)
            rep.check(f"flock: LOCK_EX through {holder_host} also excludes LOCK_SH|LOCK_NB through {other}",
                      "rc=1" in sh.stdout, sh.stdout + sh.stderr)
            # a blocking waiter on the other host gets the lock once the holder is done
            w = as_user(waiter, "077", f"flock -w 30 -x '{wp}' true; echo rc=$?", timeout=60)
            waited = time.monotonic() - t0
            rep.check(f"flock: a blocking LOCK_EX through {other} waits for {holder_host}'s and then gets it",
                      "rc=0" in w.stdout and waited >= 2.5, f"{w.stdout.strip()} after {waited:.1f} s")
        finally:
            kill_bg(hold)
            try:
                marker.unlink()
            except OSError:
                pass
    # shared locks coexist across hosts
    hold = as_user(a, "022", f"exec flock -s '{fa}' sleep 3", bg=True)
    try:
        time.sleep(0.5)
        s = as_user(b, "022", f"flock -n -s '{fb}' true; echo rc=$?", timeout=30)
        rep.check("flock: LOCK_SH through A and LOCK_SH|LOCK_NB through B coexist", "rc=0" in s.stdout, s.stdout + s.stderr)
    finally:
        kill_bg(hold)
    # the lock goes with the holder's death (no stale lock on the other host)
    hold = as_user(a, "022", f"exec flock -x '{fa}' sleep 30", bg=True)
    try:
        time.sleep(0.5)
        kill_bg(hold)
        t0 = time.monotonic()
        w = as_user(b, "022", f"flock -w 10 -x '{fb}' true; echo rc=$?", timeout=30)
        rep.check("flock: killing the holder on A releases the lock for B",
                  "rc=0" in w.stdout, f"{w.stdout.strip()} after {time.monotonic() - t0:.1f} s")
    finally:
        kill_bg(hold)


# ----------------------------------------------------------------------------------------
# 4. Ownership and modes, created on either host, checked on the brick
# ----------------------------------------------------------------------------------------
def step_ownership(rep: S.Report, cl: Cluster, members) -> None:
    a, b = members.users[0], members.users[1]
    gid = members.gid
    as_user(a, "022", f"mkdir -p '{cl.hf_a}/own/a-dir' && echo x > '{cl.hf_a}/own/a-file' && "
                      f"ln -s a-file '{cl.hf_a}/own/a-link' && mkfifo '{cl.hf_a}/own/a-fifo' && "
                      f"chmod 4755 '{cl.hf_a}/own/a-file'", check=True)
    as_user(b, "077", f"for i in $(seq 50); do [ -d '{cl.hf_b}/own' ] && break; sleep 0.1; done; "
                      f"mkdir '{cl.hf_b}/own/b-dir' && echo y > '{cl.hf_b}/own/b-file' && "
                      f"echo more >> '{cl.hf_b}/own/a-file' && chgrp {members.group} '{cl.hf_b}/own/b-file'", check=True)
    want = {
        "own": (a.uid, 0o2770, stat.S_IFDIR),
        "own/a-dir": (a.uid, 0o2770, stat.S_IFDIR),
        "own/a-file": (a.uid, 0o770, stat.S_IFREG),
        "own/a-fifo": (a.uid, 0o660, stat.S_IFIFO),
        "own/b-dir": (b.uid, 0o2770, stat.S_IFDIR),
        "own/b-file": (b.uid, 0o660, stat.S_IFREG),
    }
    bad = []
    for rel, (uid, mode, kind) in want.items():
        st = os.lstat(cl.brick_store / rel)
        got = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), stat.S_IFMT(st.st_mode))
        if got != (uid, gid, mode, kind):
            bad.append(f"{rel}: (uid, gid, mode, type) {got[0]}, {got[1]}, {got[2]:o}, {got[3]:o}; "
                       f"expected {uid}, {gid}, {mode:o}, {kind:o}")
    st = os.lstat(cl.brick_store / "own/a-link")
    if (st.st_uid, st.st_gid) != (a.uid, gid):
        bad.append(f"own/a-link: owner {st.st_uid}:{st.st_gid}")
    rep.problems("ownership: entries made on host A and host B have the caller's uid, the group, "
                 "mirrored modes, setgid dirs, no setuid (on the brick)", bad)
    r = as_user(b, "022", f"chgrp root '{cl.hf_b}/own/b-file' 2>&1; echo rc=$?")
    rep.check("ownership: chgrp to a foreign group through host B is refused", "rc=1" in r.stdout, r.stdout)



def step_fix_store_secret(rep: S.Report, cl: Cluster, members) -> None:
    """fix-store moves an old shared `token` in the store root into its owner's private
    place on GlusterFS too, whose FUSE client has no renameat2 flags (RENAME_NOREPLACE
    answers EINVAL): the owner then reads it through either host, another member not."""
    a, b = members.users[0], members.users[1]
    secret = cl.store_a / "token"
    secret.write_text("hf_cluster_secret")
    os.chown(secret, a.uid, members.gid)
    os.chmod(secret, 0o644)
    r = run([str(L.hfcachefs_bin()), "fix-store", str(cl.store_a)], check=False, timeout=120)
    rep.check("fix-store on a gluster store exits 0", r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:])
    moved = cl.brick_store / ".hfcachefs-private" / str(a.uid) / "token"
    st = os.lstat(moved) if moved.exists() else None
    rep.check("fix-store moved the shared token into its owner's private place (brick: owner, 0600)",
              not (cl.brick_store / "token").exists() and st is not None
              and (st.st_uid, stat.S_IMODE(st.st_mode)) == (a.uid, 0o600),
              f"left in root: {(cl.brick_store / 'token').exists()}, moved: {st}")
    mine = as_user(a, "022", f"cat '{cl.hf_b}/token'")
    other = as_user(b, "022", f"cat '{cl.hf_b}/token' 2>&1; echo rc=$?")
    rep.check("the owner reads the moved token through host B, another member does not",
              mine.stdout == "hf_cluster_secret" and "hf_cluster_secret" not in other.stdout
              and "rc=0" not in other.stdout, f"owner: {mine.stdout!r} {mine.stderr!r}; other: {other.stdout!r}")


# ----------------------------------------------------------------------------------------
# 5. Cross-host visibility within the configured timeouts
# ----------------------------------------------------------------------------------------
OPEN_AS_LOCK = r"""
import fcntl, os, sys
try:
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("ok", os.read(fd, 64).decode().strip(), flush=True)
    if len(sys.argv) > 2:  # hold it until told
        sys.stdin.readline()
    os.close(fd)
except OSError as e:
    print("errno", e.errno, e.strerror, flush=True)
"""


def step_store_refuses(rep: S.Report, cl: Cluster, members, base: Path) -> None:
    """Opens through host B of files the store itself would refuse the member, though the mount
    shows them open to the group: a lock file just made by host A's daemon and not yet handed
    over (root's, as between its create and its chown), and a 0644 lock file of another member
    (old filelock versions, an old cache). With passthrough, the kernel opens the store file
    again as the caller, GlusterFS refuses that (EACCES), and open(2) failed with EIO."""
    a, b = members.users[0], members.users[1]
    script = base / "open_as_lock.py"
    script.write_text(OPEN_AS_LOCK)
    os.chmod(script, 0o644)
    d = cl.store_a / "refused"
    d.mkdir(exist_ok=True)
    os.chown(d, 0, members.gid)
    os.chmod(d, 0o2770)
    files = {"fresh.lock": (0, 0, 0o660), "old.lock": (a.uid, members.gid, 0o644)}
    for name, (uid, gid, mode) in files.items():
        (d / name).write_text(name + "\n")
        os.chown(d / name, uid, gid)
        os.chmod(d / name, mode)
    for name in files:
        p = cl.hf_b / "refused" / name
        wait_visible(lambda: exists(p), 10)
        r = as_user(b, "022", f"/usr/bin/python3 '{script}' '{p}'", timeout=30)
        rep.check(f"store refuses: a member on host B opens (O_RDWR) and flocks {name}, which the store gives "
                  f"{oct(files[name][2])} to uid {files[name][0]} gid {files[name][1]} (not EIO)",
                  r.stdout.strip() == f"ok {name}", r.stdout + r.stderr)
    # Handed over while a member holds it open (served by the daemon): later opens get
    # passthrough, and both kinds of open coexist on the inode.
    p = cl.hf_b / "refused" / "fresh.lock"
    hold = subprocess.Popen(["setpriv", f"--reuid={b.uid}", f"--regid={b.gid}", "--init-groups", "--",
                             "/usr/bin/python3", str(script), str(p), "hold"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
                            start_new_session=True)
    try:
        first = hold.stdout.readline().strip()
        os.chown(d / "fresh.lock", a.uid, members.gid)
        r = as_user(members.users[3], "022", f"/usr/bin/python3 -c \"print(open('{p}').read().strip())\"", timeout=30)
        rep.check("store refuses: once handed over, another member reads the file while the first open lasts",
                  first == "ok fresh.lock" and r.stdout.strip() == "fresh.lock", f"{first}; {r.stdout}{r.stderr}")
        hold.communicate("\n", timeout=30)
    finally:
        kill_bg(hold)
    shutil.rmtree(d, ignore_errors=True)


def wait_visible(pred, limit: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.02)
    return None


def exists(p: Path) -> bool:
    try:
        os.lstat(p)
        return True
    except OSError:
        return False


def size_of(p: Path) -> int:
    try:
        return os.stat(p).st_size
    except OSError:
        return -1


def step_visibility(rep: S.Report, cl: Cluster, summary: dict) -> None:
    t = cl.hf_timeout
    bound = t + 1.5  # timeout + gluster round trips + polling
    (cl.hf_a / "vis").mkdir(exist_ok=True)
    results = {}
    for i in range(3):
        name = f"vis/new-{i}"
        pa, pb = cl.hf_a / name, cl.hf_b / name
        exists(pa)  # A looks it up first: a negative entry is now cached on A
        pb.write_bytes(b"1")
        results[f"create#{i}"] = wait_visible(lambda: exists(pa), bound + 5)
        with open(pb, "ab") as f:
            f.write(b"x" * 1000)
        size_of(pa)
        results[f"grow#{i}"] = wait_visible(lambda: size_of(pa) == 1001, bound + 5)
        pb.unlink()
        results[f"unlink#{i}"] = wait_visible(lambda: not exists(pa), bound + 5)
        (cl.hf_a / f"vis/dir-{i}").mkdir()
        results[f"mkdir A->B#{i}"] = wait_visible(lambda: exists(cl.hf_b / f"vis/dir-{i}"), bound + 5)
    summary["visibility_s"] = {k: (round(v, 2) if v is not None else None) for k, v in results.items()}
    late = {k: v for k, v in results.items() if v is None or v > bound}
    rep.check(f"visibility: creations, size changes and deletions on one host are seen on the other within "
              f"the timeouts ({t:g} s, bound {bound:g} s)", not late,
              f"worst {max((v or 99) for v in results.values()):.2f} s; late: {late}; all: {summary['visibility_s']}")


# ----------------------------------------------------------------------------------------
# 6. ESTALE
# ----------------------------------------------------------------------------------------
def step_estale(rep: S.Report, cl: Cluster, summary: dict) -> None:
    secs = env_float("CLUSTER_RACE_SECS", 10)
    d_a, d_b = cl.hf_a / "stale", cl.hf_b / "stale"
    d_a.mkdir(exist_ok=True)
    versions = {}
    for v in range(8):
        versions[v] = (f"version {v}\n" * (2000 + 97 * v)).encode()
    (d_a / "target").write_bytes(versions[0])
    wait_visible(lambda: exists(d_b / "target"), 10)
    stop = threading.Event()
    gl_since = gluster_log_offsets()
    out = {"reader": {}, "stat": {}, "writer": {}, "torn": 0, "dir": {}}
    lock = threading.Lock()

    def count(kind, e):
        with lock:
            out[kind][errname(e)] = out[kind].get(errname(e), 0) + 1

    def writer():
        i = 0
        while not stop.is_set():
            i += 1
            v = i % 8
            # alternately through hfcachefs on A, and directly on gluster client A ("another host"
            # without hfcachefs, as a store-side writer would)
            base = d_a if i % 2 else cl.store_a / "stale"
            try:
                tmp = base / f".tmp-{i}"
                tmp.write_bytes(versions[v])
                os.rename(tmp, base / "target")
                count("writer", 0)
            except OSError as e:
                count("writer", e.errno)

    def reader():
        while not stop.is_set():
            try:
                with open(d_b / "target", "rb") as f:
                    data = f.read()
                if data not in versions.values():
                    with lock:
                        out["torn"] += 1
                count("reader", 0)
            except OSError as e:
                count("reader", e.errno)
            try:
                os.stat(d_b / "target")
                count("stat", 0)
            except OSError as e:
                count("stat", e.errno)

    def dir_churn():
        # A removes and recreates a directory that B holds open and creates in.
        i = 0
        while not stop.is_set():
            i += 1
            sub_a = d_a / "sub"
            try:
                sub_a.mkdir()
            except OSError:
                pass
            wait_visible(lambda: exists(d_b / "sub"), 3)
            try:
                fd = os.open(d_b / "sub", os.O_RDONLY | os.O_DIRECTORY)
            except OSError as e:
                count("dir", e.errno)
                continue
            try:
                shutil.rmtree(cl.store_a / "stale" / "sub", ignore_errors=True)  # directly on client A
                for op in range(3):
                    try:
                        if op == 0:
                            os.close(os.open(f"f{i}", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
                        elif op == 1:
                            os.stat(".", dir_fd=fd)
                        else:
                            os.listdir(fd)
                        count("dir", 0)
                    except OSError as e:
                        count("dir", e.errno)
            finally:
                os.close(fd)

    threads = [threading.Thread(target=f, daemon=True) for f in (writer, reader, reader, dir_churn)]
    for th in threads:
        th.start()
    time.sleep(secs)
    stop.set()
    for th in threads:
        th.join(30)
    hung = [th.name for th in threads if th.is_alive()]
    summary["estale"] = out
    print(f"# ESTALE race {secs:g} s: {json.dumps(out)}", flush=True)
    rep.check("ESTALE: no reader, writer or directory operation hung", not hung, f"hung: {hung}")
    allowed = {"ok", "ENOENT", "ESTALE"}
    odd = {k: {e: n for e, n in v.items() if e not in allowed} for k, v in out.items() if isinstance(v, dict)}
    odd = {k: v for k, v in odd.items() if v}
    rep.check("ESTALE: readers on B see only whole versions (no torn reads)", out["torn"] == 0, f"{out['torn']} torn")
    what = "ESTALE: errors are passed on as ENOENT/ESTALE only (never EIO or others)"
    # Readers' EIO alone, and no more of them than host B's gluster client logged opens of
    # the target failing with ESTALE: BUG_D's signature (the kernel's open of the backing file).
    stale_opens = gluster_open_failures(gl_since)["B"].get("/store/stale/target => -1 (Stale file handle)", 0)
    detail = f"unexpected: {odd}; all: {out}; host B's gluster client: {stale_opens} OPEN() of the target => ESTALE"
    if cl.passthrough_refusals() and odd and all(set(v) == {"EIO"} for v in odd.values()):
        rep.known(what, False, BUG_A, detail)
    elif odd and set(odd) == {"reader"} and set(odd["reader"]) == {"EIO"} and odd["reader"]["EIO"] <= stale_opens:
        rep.known(what, False, BUG_D, detail)
    else:
        rep.check(what, not odd, detail)
    rep.check("ESTALE: races really happened (the readers saw some failures or many successes)",
              sum(out["reader"].values()) > 50 and sum(out["dir"].values()) > 5, json.dumps(out))
    rep.check("ESTALE: both daemons still up and both mounts answer", cl.daemons_alive() and not cl.mounted()
              and exists(cl.hf_a / "stale") and exists(cl.hf_b / "stale"), cl.logs())
    refusals = cl.passthrough_refusals()
    rep.known("ESTALE: a stale file does not turn kernel passthrough off for the whole mount", not refusals,
              BUG_A, "\n".join(refusals))


# ----------------------------------------------------------------------------------------
# 7. Root squash
# ----------------------------------------------------------------------------------------
OPS = [
    ("mkdir", "mkdir '{m}/sq/dir-{tag}'"),
    ("create file", "( : > '{m}/sq/file-{tag}' )"),
    ("symlink", "ln -s target '{m}/sq/link-{tag}'"),
    ("mkfifo", "mkfifo '{m}/sq/fifo-{tag}'"),
    ("read existing", "cat '{m}/sq-pre/file' >/dev/null"),
    ("write existing", "echo more >> '{m}/sq-pre/file'"),
    ("chmod existing", "chmod 600 '{m}/sq-pre/file'"),
    ("rename existing", "mv '{m}/sq-pre/file2' '{m}/sq-pre/file3' && mv '{m}/sq-pre/file3' '{m}/sq-pre/file2'"),
    ("hard link existing", "ln '{m}/sq-pre/file' '{m}/sq-pre/hard-{tag}'"),
    ("setxattr existing", "setfattr -n user.k -v v '{m}/sq-pre/file'"),
    ("flock existing lock file", "flock -n '{m}/sq-pre/.lock' true"),
    ("ls mount root", "ls '{m}' >/dev/null"),
]


def squash(cl: Cluster, on: bool) -> None:
    gl("volume", "set", cl.volume, "server.root-squash", "on" if on else "off")
    time.sleep(2)  # the graph switch reaches the clients


def squash_ops(cl: Cluster, user, tag: str) -> dict:
    out = {}
    for what, tmpl in OPS:
        r = as_user(user, "022", tmpl.format(m=cl.hf_a, tag=tag) + " 2>&1; echo rc=$?", timeout=30)
        text = r.stdout.strip().replace(str(cl.hf_a), "HF_A").replace("\n", " | ")
        out[what] = text[-200:]
    return out


def step_root_squash(rep: S.Report, cl: Cluster, members, summary: dict) -> None:
    """What hfcachefs does when root on the node is squashed by the cluster filesystem.
    Phase 1: the store as deployed (0700 root). Phase 2: an admin opened the store and a
    directory to everyone (0777), so creating works but chown to the member cannot."""
    a = members.users[0]
    m = cl.hf_a
    as_user(a, "022", f"mkdir -p '{m}/sq-pre' '{m}/sq' && echo x > '{m}/sq-pre/file' && : > '{m}/sq-pre/file2' "
                      f"&& : > '{m}/sq-pre/.lock'", check=True)
    observed: dict = {}
    alive = []
    try:
        squash(cl, True)
        probe = run(["sh", "-c", f"ls '{cl.store_a}' >/dev/null; echo rc=$?"], check=False, timeout=30)
        observed["root on the node: ls STORE"] = (probe.stdout.strip() + " " + probe.stderr.strip())[:200]
        observed["phase 1 (store 0700 root)"] = squash_ops(cl, a, "p1")
        tmp_mnt = Path("/mnt/hfgl-hf-squash")
        try:
            hm = S.HfMount(cl.store_a, tmp_mnt, members.group, "entry_timeout=1,attr_timeout=1")
            r = as_user(a, "022", f"ls '{tmp_mnt}' >/dev/null 2>&1; echo ls rc=$?; : > '{tmp_mnt}/sq/x' 2>&1; echo create rc=$?")
            observed["a new mount over the squashed store"] = "mounts (exit 0); " + r.stdout.strip().replace("\n", " | ")
            hm.stop()
        except Exception as e:  # noqa: BLE001
            observed["a new mount over the squashed store"] = f"refused: {str(e).strip()[:400]}"
        finally:
            if S.is_mountpoint(tmp_mnt):
                run(["umount", "-l", str(tmp_mnt)], check=False)
            try:
                tmp_mnt.rmdir()
            except OSError:
                pass
        alive.append(cl.daemons_alive())
        squash(cl, False)
        os.chmod(cl.store_a, 0o777)
        os.chmod(cl.store_a / "sq", 0o777)
        squash(cl, True)
        observed["phase 2 (store and sq/ 0777)"] = squash_ops(cl, a, "p2")
        alive.append(cl.daemons_alive())
    finally:
        squash(cl, False)
        os.chmod(cl.store_a, 0o700)
        os.chmod(cl.store_a / "sq", 0o2770)
    summary["root_squash"] = observed
    print("# root squash (gluster server.root-squash on), member (umask 022) through hfcachefs on host A:", flush=True)
    for k, v in observed.items():
        if isinstance(v, dict):
            print(f"#   {k}:", flush=True)
            for k2, v2 in v.items():
                print(f"#     {k2}: {v2}", flush=True)
        else:
            print(f"#   {k}: {v}", flush=True)
    rep.check("root squash: the daemons stay up", all(alive), cl.logs())
    refused = [k for k, v in observed["phase 1 (store 0700 root)"].items() if "rc=0" in v]
    rep.check("root squash, store 0700: every operation fails (nothing works without root in the store)",
              not refused, f"succeeded: {refused}")
    msg = observed["a new mount over the squashed store"]
    rep.check("root squash: a new mount over a squashed store is refused with a message naming the cause",
              msg.startswith("refused") and "chown" in msg and "root_squash" in msg, msg)
    # Nothing half-made (owned by the anonymous uid or by root) may be left behind.
    left = []
    for dirpath, dirnames, filenames in os.walk(cl.brick_store / "sq"):
        for n in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, n))
            left.append(f"{os.path.relpath(os.path.join(dirpath, n), cl.brick_store)} uid {st.st_uid} gid {st.st_gid}")
    rep.known("root squash: failed creations leave nothing behind in the store", not left, BUG_C, "\n".join(left))
    p2 = observed["phase 2 (store and sq/ 0777)"]
    creations = ("mkdir", "create file", "symlink", "mkfifo")
    wrong = {k: p2[k] for k in creations if "Operation not permitted" not in p2[k]}
    rep.known("root squash after mount: creations that cannot be given to the caller fail with EPERM",
              not wrong, BUG_C, f"other answers: {wrong}")
    for n in left:
        p = cl.store_a / n.split(" uid ")[0]
        try:
            p.rmdir() if p.is_dir() and not p.is_symlink() else p.unlink()
        except OSError:
            pass
    # recovery once root may chown again
    r = as_user(a, "022", f"mkdir '{m}/sq/after' && : > '{m}/sq/after/file' && echo ok", timeout=30)
    st = os.lstat(cl.brick_store / "sq/after/file") if exists(cl.brick_store / "sq/after/file") else None
    rep.check("root squash: creating works again once root squash is off",
              "ok" in r.stdout and st is not None and (st.st_uid, st.st_gid) == (a.uid, members.gid),
              r.stdout + r.stderr)


# ----------------------------------------------------------------------------------------
def prerequisites(rep: S.Report) -> bool:
    problems = []
    if os.geteuid() != 0:
        problems.append("must run as root")
    for gen, venv in L.VENVS.items():
        if not (venv / "bin" / "python").exists():
            problems.append(f"{venv} missing: run scripts/setup-e2e.sh")
    if not os.access(L.hfcachefs_bin(), os.X_OK):
        problems.append(f"hfcachefs binary {L.hfcachefs_bin()} missing")
    if not os.path.exists("/dev/fuse"):
        problems.append("/dev/fuse missing")
    for tool in ("/usr/bin/setpriv", "/usr/bin/flock", "/usr/bin/setfattr"):
        if not os.access(tool, os.X_OK):
            problems.append(f"{tool} missing")
    return rep.check("prerequisites", not problems, "; ".join(problems))


def main() -> int:
    rep = S.Report("cluster")
    if not prerequisites(rep):
        return rep.closing()
    base = Path(f"/tmp/hfcluster-{os.getpid()}-{os.urandom(3).hex()}")
    base.mkdir(mode=0o755)
    os.chmod(base, 0o755)
    members = None
    cl = None
    summary: dict = {}
    t_start = time.monotonic()
    try:
        members = rep.guard("create users", S.create_members, base, 8)
        if members is None:
            return rep.closing()
        Cluster.down()  # a clean slate (idempotent)
        cl = Cluster(members.group)
        t = time.monotonic()
        try:
            cl.up(0)
            rep.check("gluster-up.sh brings up gluster, two client mounts and two hfcachefs", True)
        except Exception as e:  # noqa: BLE001
            rep.check("gluster-up.sh brings up gluster, two client mounts and two hfcachefs", False, str(e)[-4000:])
            return rep.closing()
        summary["gluster_up_s"] = round(time.monotonic() - t, 1)
        # idempotent: a second run changes nothing and succeeds
        t = time.monotonic()
        again = run(["bash", str(UP), "--group", members.group, "--bin", str(L.hfcachefs_bin())], check=False,
                    timeout=300)
        rep.check("gluster-up.sh is idempotent (second run succeeds, same daemons)",
                  again.returncode == 0 and cl.daemons_alive(), again.stderr[-2000:])
        summary["gluster_up_again_s"] = round(time.monotonic() - t, 1)
        rep.check("all four mounts are mount points (mountpoint -q)", not cl.mounted(), f"not mounted: {cl.mounted()}")
        rep.check("one hfcachefs daemon per host", len(cl.pid_a) == 1 and len(cl.pid_b) == 1,
                  f"A {cl.pid_a} B {cl.pid_b}")
        timeout2 = env_float("CLUSTER_TIMEOUT", 1)
        steps = (
            # First, while the store holds only what it makes: exact sizes.
            ("gc across hosts", step_gc_two_hosts, (rep, cl, members, base, summary)),
            # The recommended cluster setting (DEPLOYMENT.md): no kernel caching of names/attributes.
            ("downloads, timeouts 0", step_downloads,
             (rep, cl, members, base, summary, "downloads (timeouts 0)", env_int("CLUSTER_BIG_MB", 200),
              "hfcluster0", True)),
            ("flock across hosts", step_flock, (rep, cl, members.users[0], members.users[1])),
            ("ownership on the brick", step_ownership, (rep, cl, members)),
            ("files the store refuses the caller", step_store_refuses, (rep, cl, members, base)),
            ("fix-store moves a shared token", step_fix_store_secret, (rep, cl, members)),
            (f"remount with timeouts {timeout2:g}", cl.remount, (timeout2,)),
            ("cross-host visibility", step_visibility, (rep, cl, summary)),
            (f"downloads, timeouts {timeout2:g}", step_downloads,
             (rep, cl, members, base, summary, f"downloads (timeouts {timeout2:g} s)",
              env_int("CLUSTER_BIG_MB2", 20), "hfcluster1", False)),
            ("ESTALE handling", step_estale, (rep, cl, summary)),
            ("root squash", step_root_squash, (rep, cl, members, summary)),
        )
        for name, fn, args in steps:
            t = time.monotonic()
            rep.guard(f"{name} (harness)", fn, *args)
            summary.setdefault("step_s", {})[name] = round(time.monotonic() - t, 1)
        rep.check("both daemons up at the end", cl.daemons_alive(), cl.logs())
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, KeyboardInterrupt):
            rep.check("completed within the time limit", False, "interrupted")
        else:
            import traceback

            rep.check("harness", False, f"{type(e).__name__}: {e}\n{traceback.format_exc()[-4000:]}")
    finally:
        if not os.environ.get("CLUSTER_KEEP"):
            t = time.monotonic()
            Cluster.down()
            still = [p for p in ("/mnt/hfgl-hf-a", "/mnt/hfgl-hf-b", "/mnt/hfgl-client-a", "/mnt/hfgl-client-b")
                     if S.is_mountpoint(p)]
            rep.check("gluster-down.sh tears everything down", not still, f"still mounted: {still}")
            summary["gluster_down_s"] = round(time.monotonic() - t, 1)
        if members is not None:
            members.remove()
        shutil.rmtree(base, ignore_errors=True)
    summary["total_s"] = round(time.monotonic() - t_start, 1)
    print("# summary " + json.dumps(summary), flush=True)
    return rep.closing()


if __name__ == "__main__":
    sys.exit(main())
