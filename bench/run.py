#!/usr/bin/env python3
"""Benchmark driver for scripts/bench.sh: native vs hfcachefs vs bindfs, same run, same files.

Run it through scripts/bench.sh (which installs packages, builds hfcachefs, creates the
venv and group, and guarantees that no mount outlives it). Environment:

  HFCACHEFS_BIN      release binary (set by bench.sh)
  BENCH_DIR          work directory on the local disk   (/var/tmp/hfcachefs-bench)
  BENCH_GROUP        group the mounts share             (hfbench)
  BENCH_RUNS         measured runs per cell, median     (3)
  BENCH_QUICK=1      small files, short fio: a smoke run of a minute or two
  BENCH_FIO_RUNTIME  seconds per fio run                (10; 3 quick)
  BENCH_ONLY         comma list of workloads to run: seq,mmap,fio,st,meta,meta26,churn
                     (churn and churn26; or churn26 alone),dl,xet,scale
  BENCH_XET_PYTHON   python of a venv with huggingface_hub >= 1.33 and hf_xet, for the xet
                     row (default: the e2e venv, /opt/hfcachefs-e2e{-xet,}/venv-new)
  BENCH_OUT          markdown result file (bench/results/latest.md; quick.md if quick)
  BENCH_PROFILE=0    skip the closing strace pass that counts FUSE requests per operation

Each cell is the median of BENCH_RUNS runs. In every run the targets are measured one
after another in a rotating order, so that load from other processes on the machine
falls on all of them alike. Cold runs sync and drop the page cache (and dentries and
inodes) right before the timed part; warm cells get one untimed pass per target first.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PY = sys.executable
WORKER = os.path.join(HERE, "worker.py")
FAKE_HUB = os.path.join(REPO, "tests", "e2e", "fake_hub.py")
XET_PYTHON = os.environ.get("BENCH_XET_PYTHON") or next(
    (p for p in ("/opt/hfcachefs-e2e-xet/venv-new/bin/python", "/opt/hfcachefs-e2e/venv-new/bin/python")
     if os.path.exists(p)), "")

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
CLK_TCK = os.sysconf("SC_CLK_TCK")


def env_int(name, default):
    v = os.environ.get(name, "")
    return int(v) if v.strip() else default


QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
BENCH_DIR = os.environ.get("BENCH_DIR") or "/var/tmp/hfcachefs-bench"
GROUP = os.environ.get("BENCH_GROUP") or "hfbench"
RUNS = env_int("BENCH_RUNS", 3)
BIN = os.environ.get("HFCACHEFS_BIN") or os.path.join(REPO, "target", "release", "hfcachefs")
ONLY = {w for w in os.environ.get("BENCH_ONLY", "").split(",") if w}
PROFILE = os.environ.get("BENCH_PROFILE", "1") not in ("", "0")
OUT = os.environ.get("BENCH_OUT") or os.path.join(HERE, "results", "quick.md" if QUICK else "latest.md")

SIZES = {
    "seq_bytes": 256 * MiB if QUICK else 2 * GiB,
    "st_bytes": 128 * MiB if QUICK else 1 * GiB,
    "dl_bytes": 128 * MiB if QUICK else 1 * GiB,
    "meta_repos": 50 if QUICK else 500,
    # a second, smaller tree that hfcachefs can hold under a 20,000-descriptor limit
    "meta_small_repos": 20 if QUICK else 200,
    "meta_blobs": 20,
    # the scale check: >= 200,000 entries (73 per repo), walked twice through hfcachefs
    "scale_repos": 300 if QUICK else 2800,
    "churn_files": 500 if QUICK else 5000,
    # 2026 layout (shared payload store): a tree of the meta-small size, small-file churn
    "meta26_repos": 20 if QUICK else 200,
    "churn26_files": 200 if QUICK else 1000,
    # hf_xet snapshot_download: total bytes over two Xet-backed files
    "xet_bytes": 32 * MiB if QUICK else 200 * MiB,
    "churn_size": 4 * KiB,
    "fio_runtime": env_int("BENCH_FIO_RUNTIME", 3 if QUICK else 10),
    "fio_jobs": 4,
}
WARM_MIN_S = 1.0  # warm sequential/mmap cells repeat whole passes for at least this long
STORE = os.path.join(BENCH_DIR, "store-quick" if QUICK else "store")
ST_REPO, ST_FILE = "bench-org/st-model", "model.safetensors"
XET_REPO = "bench-org/xet-model"
DL_REPO, DL_FILE = "bench-org/dl-model", "model.safetensors"


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def human(n):
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} B"


def sh(*cmd, check=True, **kw):
    return subprocess.run(cmd, check=check, text=True, capture_output=True, **kw)


def drop_caches(what=3):
    """3: page cache, dentries and inodes; 2: dentries and inodes (with their pages)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write(f"{what}\n")


# ---------------------------------------------------------------------------------------
# Targets: the store itself, and FUSE mounts of it
# ---------------------------------------------------------------------------------------
class Target:
    def __init__(self, key, label, path, argv=None, exe=None):
        self.key, self.label, self.path = key, label, path
        self.argv, self.exe = argv, exe
        self.pid = None
        self.note = ""

    @property
    def is_mount(self):
        return self.argv is not None

    def mount(self):
        os.makedirs(self.path, exist_ok=True)
        if is_mounted(self.path):
            unmount_path(self.path)
        r = subprocess.run(self.argv, text=True, capture_output=True, timeout=60)
        if r.returncode != 0 or not is_mounted(self.path):
            raise RuntimeError(f"mounting {self.label} failed ({r.returncode}): {r.stderr.strip()}")
        self.pid = find_daemon(self.exe, self.path)
        if self.pid is None:
            raise RuntimeError(f"cannot find the {self.label} daemon process")
        with open(f"/proc/{self.pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    HFC_NOFILE[self.key] = int(line.split()[3])
        log(f"mounted {self.label} on {self.path} (pid {self.pid})")

    def unmount(self):
        if is_mounted(self.path):
            unmount_path(self.path)
        if self.pid:
            deadline = time.time() + 15
            while time.time() < deadline and os.path.exists(f"/proc/{self.pid}"):
                time.sleep(0.05)
            self.pid = None

    def cpu(self):
        """utime+stime of the daemon (all its threads), seconds."""
        if not self.pid:
            return 0.0
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def reset_peak_rss(self):
        if self.pid:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5\n")

    def fds(self):
        try:
            return len(os.listdir(f"/proc/{self.pid}/fd")) if self.pid else None
        except OSError:
            return None

    def rss(self):
        """(VmHWM, VmRSS) in MiB."""
        if not self.pid:
            return None, None
        vals = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmHWM", "VmRSS"):
                    vals[k] = int(v.split()[0]) / 1024
        return vals.get("VmHWM"), vals.get("VmRSS")


def is_mounted(path):
    return subprocess.run(["mountpoint", "-q", path]).returncode == 0


def unmount_path(path):
    for cmd in (["umount", path], ["umount", "-l", path]):
        for _ in range(20):
            if subprocess.run(cmd, capture_output=True).returncode == 0 or not is_mounted(path):
                return
            time.sleep(0.25)


def find_daemon(exe, mountpoint):
    want = os.path.realpath(exe)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            real = os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if real == want and mountpoint.encode() in args:
            return int(pid)
    return None


# ---------------------------------------------------------------------------------------
# The store's contents (made once per size; reused by later runs)
# ---------------------------------------------------------------------------------------
CHILDREN: list[subprocess.Popen] = []
HFC_NOFILE: dict[str, int] = {}  # target key -> the daemon's soft RLIMIT_NOFILE


def kill_children():
    """Ends the workers this driver started (so that no open file keeps a mount busy)."""
    for p in CHILDREN:
        if p.poll() is None:
            p.kill()
            p.wait()
    CHILDREN.clear()


def worker(mode, args, env=None, python=PY):
    """Starts one worker; `finish` gives its JSON result (raises on failure)."""
    p = subprocess.Popen([python, WORKER, mode, json.dumps(args)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    CHILDREN.append(p)
    ready = p.stdout.readline()
    if ready.strip() != "READY":
        p.kill()
        _, err = p.communicate()
        raise RuntimeError(f"worker {mode} did not start: {err.strip()[-2000:]}")
    return p


def finish(p, mode, timeout=1800):
    try:
        out, err = p.communicate("go\n", timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise RuntimeError(f"worker {mode} timed out")
    if p.returncode != 0:
        raise RuntimeError(f"worker {mode} failed: {err.strip()[-2000:]}")
    CHILDREN.remove(p)
    return json.loads(out.strip().splitlines()[-1])


def run_worker(mode, args, env=None):
    return finish(worker(mode, args, env), mode)


def prepare_store():
    os.makedirs(STORE, exist_ok=True)
    os.chmod(BENCH_DIR, 0o755)
    os.chmod(STORE, 0o700)
    for d in ("data", "churn", "dl", "xet-dl"):
        os.makedirs(os.path.join(STORE, d), exist_ok=True)
    # leftovers of an interrupted run
    for d in ("churn", "dl", "xet-dl"):
        for e in os.listdir(os.path.join(STORE, d)):
            shutil.rmtree(os.path.join(STORE, d, e), ignore_errors=True)

    seq = os.path.join(STORE, "data", "seq.bin")
    if not (os.path.isfile(seq) and os.path.getsize(seq) == SIZES["seq_bytes"]):
        log(f"writing {human(SIZES['seq_bytes'])} of random data to {seq}")
        chunk = 16 * MiB
        with open(seq + ".tmp", "wb") as f:
            for _ in range(SIZES["seq_bytes"] // chunk):
                f.write(os.urandom(chunk))
            f.flush()
            os.fsync(f.fileno())
        os.rename(seq + ".tmp", seq)

    st_home = os.path.join(STORE, "st")
    st_stamp = os.path.join(st_home, ".bench-stamp")
    st_want = f"{SIZES['st_bytes']}"
    if not (os.path.exists(st_stamp) and open(st_stamp).read() == st_want):
        log(f"writing a {human(SIZES['st_bytes'])} .safetensors file in an HF_HOME layout")
        shutil.rmtree(st_home, ignore_errors=True)
        repo = os.path.join(st_home, "hub", "models--" + ST_REPO.replace("/", "--"))
        os.makedirs(os.path.join(repo, "blobs"))
        os.makedirs(os.path.join(repo, "refs"))
        tmp = os.path.join(repo, "blobs", "tmp.safetensors")
        run_worker("gen_safetensors", {"path": tmp, "bytes": SIZES["st_bytes"]})
        h = hashlib.sha256()
        with open(tmp, "rb") as f:
            while chunk := f.read(8 * MiB):
                h.update(chunk)
        etag = h.hexdigest()
        os.rename(tmp, os.path.join(repo, "blobs", etag))
        commit = hashlib.sha1(b"bench safetensors commit").hexdigest()
        os.makedirs(os.path.join(repo, "snapshots", commit))
        os.symlink(f"../../blobs/{etag}", os.path.join(repo, "snapshots", commit, ST_FILE))
        with open(os.path.join(repo, "refs", "main"), "w") as f:
            f.write(commit)
        with open(st_stamp, "w") as f:
            f.write(st_want)

    trees = [("meta", SIZES["meta_repos"], "gen_meta"), ("meta-small", SIZES["meta_small_repos"], "gen_meta")]
    if not ONLY or "meta26" in ONLY or "scan26" in ONLY:
        trees.append(("meta26", SIZES["meta26_repos"], "gen_meta26"))
    if not ONLY or "scale" in ONLY:
        trees.append(("meta-scale", SIZES["scale_repos"], "gen_meta"))
    for sub, repos, gen in trees:
        meta = os.path.join(STORE, sub)
        meta_stamp = os.path.join(meta, ".bench-stamp")
        meta_want = f"{repos}x{SIZES['meta_blobs']}"
        if not (os.path.exists(meta_stamp) and open(meta_stamp).read() == meta_want):
            log(f"laying out a Hugging Face cache tree of {meta_want} repos x blobs in {sub}/ ({gen})")
            shutil.rmtree(meta, ignore_errors=True)
            run_worker(gen, {"hub": os.path.join(meta, "hub"), "repos": repos,
                             "blobs": SIZES["meta_blobs"]})
            with open(meta_stamp, "w") as f:
                f.write(meta_want)
    os.sync()


# ---------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------
class Cell:
    def __init__(self):
        self.values, self.cpu, self.extra, self.error = [], [], [], None
        self.hwm = None
        self.fds = None

    def median(self):
        return statistics.median(self.values) if self.values and not self.error else None


class Workload:
    """One row of the table. `higher` tells whether the value is a rate (higher is
    better) or a time; ratios are always 'higher is better'."""

    def __init__(self, key, group, label, unit, higher, targets, run, cold=False, warm=False,
                 check=None, value=None):
        self.key, self.group, self.label, self.unit, self.higher = key, group, label, unit, higher
        self.targets, self.run_one, self.cold, self.warm = targets, run, cold, warm
        self.check = check
        self.value = value or (lambda res: res["seconds"])
        self.cells = {}

    def ratio(self, tkey):
        n = self.cells.get("native")
        x = self.cells.get(tkey)
        if not n or not x or n.median() is None or x.median() is None or x.median() == 0:
            return None
        return x.median() / n.median() if self.higher else n.median() / x.median()


def measure(w, t, r=None):
    """One measurement of workload w on target t; returns the worker/fio result dict."""
    if t.is_mount and not os.path.ismount(t.path):
        raise RuntimeError(f"{t.path} is no longer mounted")
    return w.run_one(t, r)


def run_workload(w, targets):
    tlist = [t for t in targets if t.key in w.targets]
    log(f"{w.label}: {', '.join(t.label for t in tlist)}; {RUNS} runs")
    # Same start for every workload and target: the kernel drops its dentries and inodes
    # (and so tells the FUSE daemons to forget theirs); warm cells are then warmed again.
    drop_caches(2)
    for t in tlist:
        w.cells[t.key] = Cell()
        t.reset_peak_rss()
    if callable(w.warm):
        w.warm(None)
    elif w.warm:
        for t in tlist:
            try:
                measure(w, t, None)
            except Exception as e:  # noqa: BLE001
                w.cells[t.key].error = str(e)
                log(f"  {t.label}: warm-up failed: {e}")
    for r in range(RUNS):
        order = tlist[r % len(tlist):] + tlist[: r % len(tlist)]
        for t in order:
            cell = w.cells[t.key]
            if cell.error:
                continue
            try:
                res = measure(w, t, r)
                if w.check:
                    w.check(res)
            except Exception as e:  # noqa: BLE001
                cell.error = str(e)
                log(f"  {t.label}: failed: {e}")
                continue
            cell.values.append(w.value(res))
            cell.cpu.append(res.get("cpu", 0.0))
            cell.extra.append(res)
    for t in tlist:
        w.cells[t.key].hwm = t.rss()[0]
        w.cells[t.key].fds = t.fds()
    summary = []
    for t in tlist:
        c = w.cells[t.key]
        v = c.median()
        summary.append(f"{t.label} {fmt(v)}" + ("" if v is not None else " ERR"))
    log(f"  {w.unit}: " + "; ".join(summary))


def timed_worker(t, mode, args, cold, env=None, python=PY):
    """cold: False (just sync), True (drop page cache, dentries, inodes) or a drop_caches
    level."""
    p = worker(mode, args, env, python)
    if cold:
        drop_caches(3 if cold is True else cold)
    else:
        os.sync()
    c0 = t.cpu()
    try:
        res = finish(p, mode)
    finally:
        c1 = t.cpu()
    # per pass over the file, where a warm cell repeated passes
    res["cpu"] = (c1 - c0) / res.get("passes", 1)
    return res


def fio(t, path, direct):
    args = ["fio", "--name=randread4k", f"--filename={path}", "--readonly", "--rw=randread",
            "--bs=4k", f"--numjobs={SIZES['fio_jobs']}", "--time_based",
            f"--runtime={SIZES['fio_runtime']}", "--ioengine=psync", "--group_reporting",
            "--invalidate=0", "--norandommap", "--randrepeat=0", "--output-format=json"]
    if direct:
        args.append("--direct=1")
        drop_caches()
    else:
        os.sync()
    c0 = t.cpu()
    r = subprocess.run(args, text=True, capture_output=True, timeout=SIZES["fio_runtime"] + 120)
    c1 = t.cpu()
    if r.returncode != 0:
        raise RuntimeError(f"fio failed: {(r.stderr or r.stdout).strip()[-1500:]}")
    out = json.loads(r.stdout[r.stdout.index("{"):])
    job = out["jobs"][0]
    if job.get("error"):
        raise RuntimeError(f"fio error {job['error']}")
    return {"iops": job["read"]["iops"], "cpu": c1 - c0, "seconds": SIZES["fio_runtime"]}


def build_workloads(hub_url, targets, xet_url=None):
    by_key = {t.key: t for t in targets}
    seq = lambda t: os.path.join(t.path, "data", "seq.bin")  # noqa: E731
    allt = ["native", "hfc", "hfc-nopt", "bindfs"]
    nopt = ["native", "hfc", "bindfs"]
    rate = lambda res: res["bytes"] / MiB / res["seconds"]  # noqa: E731
    sz = SIZES["seq_bytes"]

    def check_bytes(n):
        def c(res):
            if res["bytes"] != n * res.get("passes", 1):
                raise RuntimeError(f"read {res['bytes']} bytes, expected {n} per pass")
        return c

    def check_meta_scan(repos):
        def c(res):
            if res["repos"] != repos or res["files"] != repos * SIZES["meta_blobs"]:
                raise RuntimeError(f"scan_cache_dir saw {res['repos']} repos, {res['files']} files")
        return c

    def check_meta_walk(repos):
        def c(res):
            if res["symlinks"] != repos * SIZES["meta_blobs"]:
                raise RuntimeError(f"walk saw {res['symlinks']} symlinks")
        return c

    def meta_workloads(sub, repos, suffix):
        n = repos * SIZES["meta_blobs"]
        hub = lambda t: os.path.join(t.path, sub, "hub")  # noqa: E731
        return [
            Workload("scan" + suffix, "meta", f"5. scan_cache_dir, {repos}x{SIZES['meta_blobs']} tree, warm",
                     "s", False, nopt, lambda t, r: timed_worker(t, "scan", {"hub": hub(t)}, False),
                     warm=True, check=check_meta_scan(repos)),
            Workload("walk" + suffix, "meta", f"5. os.walk + stat of {n} symlinks ({repos}x{SIZES['meta_blobs']}), warm",
                     "s", False, nopt, lambda t, r: timed_worker(t, "walkstat", {"hub": hub(t)}, False),
                     warm=True, check=check_meta_walk(repos)),
        ]

    def prewarm_file(t):
        timed_worker(by_key["native"], "seqread", {"path": seq(by_key["native"])}, False)

    def st_env(t):
        env = dict(os.environ, HF_HOME=os.path.join(t.path, "st"), HF_HUB_OFFLINE="1",
                   HF_HUB_DISABLE_TELEMETRY="1")
        return env

    def st(cold):
        def run(t, r):
            return timed_worker(t, "stload", {"hf_home": os.path.join(t.path, "st"), "repo": ST_REPO,
                                              "file": ST_FILE}, cold, st_env(t))
        return run

    def dl(t, r):
        home = os.path.join(t.path, "dl", f"hf-home-{r if r is not None else 'warm'}")
        env = dict(os.environ, HF_HOME=home, HF_ENDPOINT=hub_url, HF_HUB_DISABLE_XET="1",
                   HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1",
                   HF_HUB_ETAG_TIMEOUT="60", HF_HUB_DOWNLOAD_TIMEOUT="60")
        env.pop("HF_HUB_OFFLINE", None)
        try:
            return timed_worker(t, "download", {"repo": DL_REPO, "file": DL_FILE}, False, env)
        finally:
            shutil.rmtree(home, ignore_errors=True)
            os.sync()
            time.sleep(1)  # let the freed 1 GiB settle (the store's ext4 discards freed blocks)

    def churn26(t, r):
        repo = os.path.join(t.path, "churn", f"models--bench--churn26-{r}-{os.getpid()}")
        try:
            # Same start as churn (see there).
            res = timed_worker(t, "churn26", {"repo": repo, "n": SIZES["churn26_files"],
                                              "size": SIZES["churn_size"]}, 1)
            res["seconds"] = res["publish_s"] + res["delete_s"]
            return res
        finally:
            shutil.rmtree(repo, ignore_errors=True)

    def xet_snapshot(t, r):
        home = os.path.join(t.path, "xet-dl", f"hf-home-{r if r is not None else 'warm'}")
        env = dict(os.environ, HF_HOME=home, HF_ENDPOINT=xet_url, HF_HUB_DISABLE_TELEMETRY="1",
                   HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_ETAG_TIMEOUT="60", HF_HUB_DOWNLOAD_TIMEOUT="60")
        for k in ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_XET"):
            env.pop(k, None)
        try:
            return timed_worker(t, "snapshot", {"repo": XET_REPO}, False, env, python=XET_PYTHON)
        finally:
            shutil.rmtree(home, ignore_errors=True)
            os.sync()
            time.sleep(1)

    def churn(t, r):
        d = os.path.join(t.path, "churn", f"run-{r}-{os.getpid()}")
        try:
            # Level 1 (clean pages and buffers, after sync): ext4 without a journal skips, when
            # it allocates an inode, every inode freed in the last 60 s (5 min while the
            # inode-table block is dirty) whose table block is still cached: right after
            # another run's 5,000 unlinks each create would scan past all of them
            # (recently_deleted() in fs/ext4/ialloc.c), and the order of the targets would
            # decide who pays. Without those cached blocks every run starts alike.
            return timed_worker(t, "churn", {"dir": d, "n": SIZES["churn_files"],
                                             "size": SIZES["churn_size"]}, 1)
        finally:
            shutil.rmtree(d, ignore_errors=True)

    W = [
        Workload("seq_cold", "seq", f"1. sequential read {human(sz)}, cold", "MiB/s", True, allt,
                 lambda t, r: timed_worker(t, "seqread", {"path": seq(t)}, True),
                 cold=True, check=check_bytes(sz), value=rate),
        Workload("seq_warm", "seq", f"1. sequential read {human(sz)}, warm", "MiB/s", True, allt,
                 lambda t, r: timed_worker(t, "seqread", {"path": seq(t), "min_seconds": WARM_MIN_S}, False),
                 warm=True, check=check_bytes(sz), value=rate),
        Workload("mmap_cold", "mmap", f"2. mmap read {human(sz)}, every page, cold", "MiB/s", True, allt,
                 lambda t, r: timed_worker(t, "mmapread", {"path": seq(t)}, True),
                 cold=True, check=check_bytes(sz), value=rate),
        Workload("mmap_warm", "mmap", f"2. mmap read {human(sz)}, every page, warm", "MiB/s", True, allt,
                 lambda t, r: timed_worker(t, "mmapread", {"path": seq(t), "min_seconds": WARM_MIN_S}, False),
                 warm=True, check=check_bytes(sz), value=rate),
        Workload("fio_warm", "fio", f"3. 4 KiB random read, {SIZES['fio_jobs']} jobs, warm", "IOPS", True, allt,
                 lambda t, r: fio(t, seq(t), False), value=lambda res: res["iops"], warm=prewarm_file),
        Workload("fio_direct", "fio", f"3. 4 KiB random read, {SIZES['fio_jobs']} jobs, O_DIRECT, cold",
                 "IOPS", True, allt, lambda t, r: fio(t, seq(t), True), value=lambda res: res["iops"]),
        Workload("st_cold", "st", f"4. safetensors load {human(SIZES['st_bytes'])} via HF_HOME, cold", "s",
                 False, allt, st(True), cold=True, check=check_bytes(SIZES["st_bytes"])),
        Workload("st_warm", "st", f"4. safetensors load {human(SIZES['st_bytes'])} via HF_HOME, warm", "s",
                 False, allt, st(False), warm=True, check=check_bytes(SIZES["st_bytes"])),
        *meta_workloads("meta-small", SIZES["meta_small_repos"], "_small"),
        Workload("churn", "churn", f"6. create+rename+unlink {SIZES['churn_files']} x {human(SIZES['churn_size'])}",
                 "s", False, nopt, churn),
        Workload("churn26", "churn", f"6b. {SIZES['churn26_files']} x {human(SIZES['churn_size'])} downloads "
                 "in the 2026 layout: .<8hex>.incomplete, rename, snapshot symlink; then delete", "s",
                 False, nopt, churn26),
        Workload("dl", "dl", f"7. hf_hub_download {human(SIZES['dl_bytes'])} from local hub", "s", False,
                 nopt, dl, check=check_bytes(SIZES["dl_bytes"])),
        Workload("xet", "xet", f"7b. hf_xet snapshot_download {human(SIZES['xet_bytes'])} from local hub "
                 "(hub 2.4.0, shared payload store)", "s", False, nopt, xet_snapshot,
                 check=check_bytes(SIZES["xet_bytes"] + 2)),
        Workload("scan26", "meta26", f"5b. scan_cache_dir, {SIZES['meta26_repos']}x{SIZES['meta_blobs']} tree, "
                 "2026 layout (payloads in hub/blobs/<2hex>/), warm", "s", False, nopt,
                 lambda t, r: timed_worker(t, "scan", {"hub": os.path.join(t.path, "meta26", "hub")}, False),
                 warm=True, check=check_meta_scan(SIZES["meta26_repos"])),
        # last: on hfcachefs this tree may need more descriptors than the daemon may open
        *meta_workloads("meta", SIZES["meta_repos"], ""),
    ]
    return [w for w in W if not ONLY or w.group in ONLY or w.key in ONLY]


def run_scale(targets):
    """The scale check of issue 3: a cache of >= 200,000 entries walked twice (os.walk +
    lstat of every entry, every snapshot symlink followed) through hfcachefs, with the
    daemon's RSS and descriptors after each walk, then after the kernel forgets (echo 2 >
    drop_caches sends FORGETs); native walks for comparison. Returns table rows."""
    if ONLY and "scale" not in ONLY:
        return []
    by = {t.key: t for t in targets}
    hfc, native = by["hfc"], by["native"]
    rows = []
    drop_caches(2)
    for t in (native, hfc):
        hub = os.path.join(t.path, "meta-scale", "hub")
        for walk in (1, 2):
            res = timed_worker(t, "walkstat", {"hub": hub}, False)
            hwm, rss = t.rss() if t.is_mount else (None, None)
            rows.append({"target": t.label, "walk": walk, "entries": res["entries"],
                         "symlinks": res["symlinks"], "seconds": res["seconds"], "cpu": res["cpu"],
                         "rss": rss, "hwm": hwm, "fds": t.fds() if t.is_mount else None})
            log(f"  scale: {rows[-1]}")
    drop_caches(2)
    time.sleep(2)
    hwm, rss = hfc.rss()
    rows.append({"target": hfc.label, "walk": "after echo 2 > drop_caches", "entries": None,
                 "symlinks": None, "seconds": None, "cpu": None, "rss": rss, "hwm": hwm, "fds": hfc.fds()})
    return rows


def scale_report(rows):
    nofile = HFC_NOFILE.get("hfc")
    L = ["", f"Scale (issue 3): a Hugging Face cache of {SIZES['scale_repos']} repos walked twice: `os.walk` + "
         "`lstat` of every file, `stat` through every snapshot symlink. The daemon's open file limit is "
         f"{nofile}, so it may keep {nofile // 2 if nofile else '?'} inode descriptors; RSS and descriptors "
         "are read after each walk.", "",
         "| target | walk | entries | seconds | daemon CPU s | daemon RSS MiB | peak RSS MiB | daemon fds |",
         "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        f = lambda v, spec="": "—" if v is None else format(v, spec)  # noqa: E731
        L.append(f"| {r['target']} | {r['walk']} | {f(r['entries'], ',')} | {f(r['seconds'], '.2f')} | "
                 f"{f(r['cpu'], '.2f')} | {f(r['rss'], '.0f')} | {f(r['hwm'], '.0f')} | {f(r['fds'])} |")
    return L


def run_profiles(targets):
    """One extra, untimed pass of some workloads under strace (bench/fuseprof.py): how many
    FUSE requests of which kind, and how many daemon syscalls, each unit of work costs."""
    sys.path.insert(0, HERE)
    import fuseprof

    by = {t.key: t for t in targets}
    nlinks = SIZES["meta_small_repos"] * SIZES["meta_blobs"]
    nchurn = min(1000, SIZES["churn_files"])
    items = [
        (f"sequential read {human(SIZES['seq_bytes'])}, warm", "pass", 1, ["hfc", "hfc-nopt", "bindfs"],
         "seqread", lambda t: {"path": os.path.join(t.path, "data", "seq.bin")}),
        ("os.walk + stat, warm", "symlink", nlinks, ["hfc", "bindfs"],
         "walkstat", lambda t: {"hub": os.path.join(t.path, "meta-small", "hub")}),
        ("scan_cache_dir, warm", "file", nlinks, ["hfc", "bindfs"],
         "scan", lambda t: {"hub": os.path.join(t.path, "meta-small", "hub")}),
        ("create+rename+unlink", "file", nchurn, ["hfc", "bindfs"],
         "churn", lambda t: {"dir": os.path.join(t.path, "churn", f"profile-{os.getpid()}"), "n": nchurn,
                             "size": SIZES["churn_size"]}),
        ("2026-layout download churn", "file", SIZES["churn26_files"], ["hfc", "bindfs"],
         "churn26", lambda t: {"repo": os.path.join(t.path, "churn", f"models--bench--profile-{os.getpid()}"),
                               "n": SIZES["churn26_files"], "size": SIZES["churn_size"]}),
        ("scan_cache_dir, 2026 layout, warm", "file", SIZES["meta26_repos"] * SIZES["meta_blobs"], ["hfc", "bindfs"],
         "scan", lambda t: {"hub": os.path.join(t.path, "meta26", "hub")}),
    ]
    rows = []
    env = dict(os.environ, BENCH_WORKER_NOWAIT="1")
    drop_caches(2)  # the daemons forget what the workloads left
    for label, unit, per, tkeys, mode, args in items:
        group = {"seqread": "seq", "walkstat": "meta", "scan": "meta", "churn": "churn", "churn26": "churn"}[mode]
        if "2026" in label:
            group = "meta26" if mode == "scan" else "churn"
        if ONLY and not any(k in ONLY for k in (mode, group)):
            continue
        for k in tkeys:
            t = by[k]
            log(f"profiling {label} on {t.label} (strace; counts only)")
            cmd = [PY, WORKER, mode, json.dumps(args(t))]
            try:
                if mode not in ("churn", "churn26"):
                    subprocess.run(cmd, env=env, check=True, capture_output=True)  # warm
                res = fuseprof.profile(t.path, cmd, env)
            except Exception as e:  # noqa: BLE001
                log(f"  failed: {e}")
                continue
            rows.append((label, unit, per, t.label, res))
    return rows


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------
def fmt(v, unit=None):
    if v is None:
        return "—"
    if unit == "IOPS" or (unit is None and v >= 1000):
        return f"{v:,.0f}"
    if unit == "MiB/s":
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def fmt_ratio(r):
    return "—" if r is None else f"{r:.2f}"


COLS = [("native", "native"), ("hfc", "hfcachefs"), ("hfc-nopt", "hfcachefs passthrough=off"),
        ("bindfs", "bindfs")]


def cell_text(w, key):
    c = w.cells.get(key)
    if c is None:
        return "—"
    if c.error:
        return "ERR"
    return fmt(c.median(), w.unit)


def targets_report(W, prof_rows=()):
    by = {w.key: w for w in W}
    lines = []

    def failed(w):
        errs = [f"{dict(COLS)[k]} failed: {c.error.strip().splitlines()[-1][:160]}"
                for k, c in w.cells.items() if c.error and k in ("native", "hfc", "bindfs")]
        return ("; " + "; ".join(errs)) if errs else ""

    def ratio_target(label, keys, need):
        for k in keys:
            if k not in by:
                continue
            r = by[k].ratio("hfc")
            ok = r is not None and r >= need
            lines.append((ok, f"{label} ≥ {need}: {fmt_ratio(r)}× native  ({by[k].label}){failed(by[k])}"))

    def vs_bindfs(label, key, need, need_b):
        if key not in by:
            return
        w = by[key]
        r = w.ratio("hfc")
        rb = w.ratio("bindfs")
        vb = r / rb if r is not None and rb else None
        ok = r is not None and r >= need and vb is not None and vb >= need_b
        lines.append((ok, f"{label} ≥ {need}× native and ≥ {need_b}× bindfs: "
                          f"{fmt_ratio(r)}× native, {fmt_ratio(vb)}× bindfs  ({w.label}){failed(w)}"))

    ratio_target("sequential read", ["seq_cold", "seq_warm"], 0.95)
    ratio_target("mmap read", ["mmap_cold", "mmap_warm"], 0.95)
    ratio_target("safetensors load", ["st_cold", "st_warm"], 0.95)
    ratio_target("hf_hub_download", ["dl"], 0.95)
    ratio_target("4 KiB random read", ["fio_warm"], 0.9)
    vs_bindfs("metadata walk", "walk", 0.5, 3)
    vs_bindfs("scan_cache_dir", "scan", 0.5, 3)
    vs_bindfs("metadata walk", "walk_small", 0.5, 3)
    vs_bindfs("scan_cache_dir", "scan_small", 0.5, 3)
    vs_bindfs("small-file churn", "churn", 0.35, 2)
    # issue 12: metadata at FUSE's floor
    for k in ("scan_small", "scan", "scan26"):
        ratio_target("scan_cache_dir (issue 12)", [k], 0.8)
    for k in ("churn", "churn26"):
        if k in by:
            w = by[k]
            r, rb = w.ratio("hfc"), w.ratio("bindfs")
            x = rb / r if r and rb else None
            lines.append((x is not None and x <= 0.5, f"small-file churn (issue 12) ≤ 0.5× bindfs's time: "
                                                      f"{fmt_ratio(x)}×  ({w.label}){failed(w)}"))
    ratio_target("hf_xet snapshot_download (issue 12)", ["xet"], 0.95)
    for label, unit, per, tlabel, res in prof_rows:
        if tlabel == "hfcachefs" and label == "create+rename+unlink":
            n = sum(res["requests"].values()) / per
            lines.append((n <= 8, f"FUSE requests per churned file (issue 12) ≤ 8: {n:.2f}  ({label})"))
    fds = [w.cells["hfc"].fds for w in W if "hfc" in w.cells and w.cells["hfc"].fds is not None]
    if fds and HFC_NOFILE.get("hfc"):
        limit = HFC_NOFILE["hfc"]
        peak = max(fds)
        emfile = [w.label for w in W if "hfc" in w.cells and "Too many open files" in (w.cells["hfc"].error or "")]
        lines.append((peak < limit - 100 and not emfile,
                      f"scale (issue 3): the daemon stays under its open-file limit ({limit}): peak {peak} fds "
                      f"after a workload" + (f"; EMFILE in: {'; '.join(emfile)}" if emfile else "")))
    for k in ("seq_cold", "seq_warm"):
        if k in by and "hfc" in by[k].cells and not by[k].cells["hfc"].error:
            c = by[k].cells["hfc"]
            cpu = statistics.median(c.cpu) if c.cpu else None
            ok = cpu is not None and cpu < 0.1
            lines.append((ok, f"daemon CPU, passthrough sequential read < 0.1 s: "
                              f"{cpu:.3f} s per {human(SIZES['seq_bytes'])} pass  ({by[k].label})"))
    return lines


def machine_info(targets):
    def read(p):
        try:
            with open(p) as f:
                return f.read().strip()
        except OSError:
            return "?"

    mem = "?"
    for line in read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem = f"{int(line.split()[1]) / (1 << 20):.1f} GiB"
    cpu = "?"
    for line in read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    fm = sh("findmnt", "-n", "-o", "SOURCE,FSTYPE,OPTIONS", "-T", STORE, check=False).stdout.strip()
    src = fm.split()[0] if fm else ""
    disk = ""
    dev = os.path.basename(os.path.realpath(src)) if src.startswith("/dev/") else ""
    if dev:
        base = dev
        while base and not os.path.exists(f"/sys/block/{base}"):
            base = base[:-1]
        if base:
            size = int(read(f"/sys/block/{base}/size") or 0) * 512
            disk = (f"{base}: {size / GiB:.0f} GiB, rotational={read(f'/sys/block/{base}/queue/rotational')}, "
                    f"scheduler {read(f'/sys/block/{base}/queue/scheduler')}, "
                    f"read_ahead_kb={read(f'/sys/block/{base}/queue/read_ahead_kb')}")
            model = read(f"/sys/block/{base}/device/model")
            if model != "?":
                disk += f", model {model}"
    if fm and fm.split()[1:2] == ["ext4"] and dev:
        journal = any(e.startswith(dev + "-") for e in (os.listdir("/proc/fs/jbd2")
                                                          if os.path.isdir("/proc/fs/jbd2") else []))
        fm += ", journal: " + ("yes" if journal else "none (no jbd2)")
    rev = sh("git", "-C", REPO, "rev-parse", "--short", "HEAD", check=False).stdout.strip()
    dirty = sh("git", "-C", REPO, "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock",
               check=False).stdout.strip()
    pkgs = {}
    for name in ("bindfs", "fio", "fuse3"):
        pkgs[name] = sh("dpkg-query", "-W", "-f=${Version}", name, check=False).stdout.strip() or "?"
    import importlib.metadata as md
    py = {n: md.version(n) for n in ("huggingface_hub", "safetensors", "numpy")}
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": f"{platform.node()}",
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "os": read("/etc/debian_version"),
        "store": f"{STORE} on {fm}",
        "disk": disk or "?",
        "hfcachefs": f"{rev}{' (src modified)' if dirty else ''}",
        "packages": ", ".join(f"{k} {v}" for k, v in pkgs.items()),
        "python": f"{platform.python_version()}, " + ", ".join(f"{k} {v}" for k, v in py.items()),
        "limits": f"RLIMIT_NOFILE of the hfcachefs daemon: {HFC_NOFILE.get('hfc', '?')} (bench.sh asks for "
                  f"{os.environ.get('BENCH_NOFILE_WANTED', '?')}; caller's hard limit "
                  f"{os.environ.get('BENCH_NOFILE_INHERITED', '?')}; raising it needs CAP_SYS_RESOURCE)",
        "mounts": "; ".join(f"{t.label}: `{' '.join(t.argv)}`{t.note}" for t in targets if t.is_mount),
    }


def profile_report(rows):
    L = ["", "FUSE requests and daemon syscalls per unit of work (one extra warm pass under "
         "`strace -f -C` of the daemon, `bench/fuseprof.py`; counts only, strace makes it slow):", "",
         "| workload | per | target | FUSE requests | of which | daemon syscalls | of which |",
         "| --- | --- | --- | --- | --- | --- | --- |"]
    for label, unit, per, tlabel, res in rows:
        req = res["requests"]
        sc = res["syscalls"]

        def top(d, n=7):
            return ", ".join(f"{k} {v / per:.2f}" for k, v in list(d.items())[:n] if v / per >= 0.005)

        errs = res["error_replies"]
        err = ("; errors: " + ", ".join(f"{k} {v / per:.2f}" for k, v in errs.items())) if errs else ""
        L.append(f"| {label} | {unit} | {tlabel} | {sum(req.values()) / per:.2f} | {top(req)}{err} | "
                 f"{sum(sc.values()) / per:.1f} | {top(sc, 8)} |")
    return L


def report(W, targets, info, started, load_start, prof_rows=(), scale_rows=()):
    L = []
    L.append("# hfcachefs benchmark" + (" (BENCH_QUICK smoke run: small files)" if QUICK else ""))
    L.append("")
    L.append(f"`scripts/bench.sh`, {info['date']}. Medians of {RUNS} runs per cell; the ratio (×) is to native "
             "in the same run, higher is better for every row (rates: x/native, times: native/x).")
    L.append("")
    L.append("| machine | |")
    L.append("| --- | --- |")
    for k in ("nproc", "cpu", "memory", "kernel", "os", "store", "disk", "hfcachefs", "packages", "python",
              "limits", "mounts"):
        L.append(f"| {k} | {info[k]} |")
    load_end = os.getloadavg()
    L.append(f"| load average | {load_start[0]:.2f} at start, {load_end[0]:.2f} at end (1 min; other users share this machine) |")
    L.append("")
    hdr = "| workload | unit | " + " | ".join(f"{lab} | ×" if k != "native" else lab for k, lab in COLS) + " |"
    L.append(hdr)
    L.append("|" + " --- |" * (2 + 1 + 2 * (len(COLS) - 1)))
    for w in W:
        row = [w.label, w.unit, cell_text(w, "native")]
        for k, _ in COLS[1:]:
            row += [cell_text(w, k), fmt_ratio(w.ratio(k)) if k in w.cells else "—"]
        L.append("| " + " | ".join(row) + " |")
    L.append("")
    L.append("Daemon cost per workload: CPU seconds (utime+stime of the whole daemon process, median per run; "
             "per pass for the repeated warm passes), peak RSS (VmHWM in MiB, reset before the workload) and "
             "open file descriptors after it.")
    L.append("")
    dcols = [c for c in COLS if c[0] != "native"]
    L.append("| workload | " + " | ".join(f"{lab} CPU s | peak MiB | fds" for _, lab in dcols) + " |")
    L.append("|" + " --- |" * (1 + 3 * len(dcols)))
    for w in W:
        row = [w.label]
        for k, _ in dcols:
            c = w.cells.get(k)
            if c is None or (c.error and not c.cpu):
                row += ["—", "—", "—"]
            else:
                row += [f"{statistics.median(c.cpu):.2f}" if c.cpu else "—",
                        f"{c.hwm:.0f}" if c.hwm is not None else "—",
                        f"{c.fds}" if c.fds is not None else "—"]
        L.append("| " + " | ".join(row) + " |")
    by = {w.key: w for w in W}
    if "churn" in by:
        L.append("")
        L.append("Small-file churn by phase (median seconds):")
        L.append("")
        L.append("| phase | " + " | ".join(lab for k, lab in COLS if k in by["churn"].cells) + " |")
        L.append("|" + " --- |" * (1 + len(by["churn"].cells)))
        for ph in ("create_s", "rename_s", "unlink_s"):
            row = [ph.replace("_s", "")]
            for k, _ in COLS:
                c = by["churn"].cells.get(k)
                if c is None:
                    continue
                row.append(f"{statistics.median(e[ph] for e in c.extra):.3f}" if c.extra else "—")
            L.append("| " + " | ".join(row) + " |")
    if "churn26" in by:
        L.append("")
        L.append("2026-layout download churn by phase (median seconds):")
        L.append("")
        L.append("| phase | " + " | ".join(lab for k, lab in COLS if k in by["churn26"].cells) + " |")
        L.append("|" + " --- |" * (1 + len(by["churn26"].cells)))
        for ph in ("publish_s", "delete_s"):
            row = [ph.replace("_s", "")]
            for k, _ in COLS:
                c = by["churn26"].cells.get(k)
                if c is None:
                    continue
                row.append(f"{statistics.median(e[ph] for e in c.extra):.3f}" if c.extra else "—")
            L.append("| " + " | ".join(row) + " |")
    errors = [(w, k, c.error) for w in W for k, c in w.cells.items() if c.error]
    if errors:
        L.append("")
        L.append("Errors:")
        L.append("")
        for w, k, e in errors:
            L.append(f"- {w.label}, {dict(COLS)[k]}: {e.splitlines()[-1][:300] if e else e}")
    if prof_rows:
        L += profile_report(prof_rows)
    if scale_rows:
        L += scale_report(scale_rows)
    L.append("")
    L.append("## Targets (issues 3 and 12), hfcachefs with passthrough")
    L.append("")
    tl = targets_report(W, prof_rows)
    for ok, text in tl:
        L.append(f"- {'PASS' if ok else 'MISS'}  {text}")
    L.append("")
    L.append(f"{sum(ok for ok, _ in tl)} of {len(tl)} targets met. Driver runtime "
             f"{(time.time() - started) / 60:.1f} min"
             + (f", whole script {(time.time() - float(os.environ['BENCH_T0'])) / 60:.1f} min"
                if os.environ.get("BENCH_T0") else "") + ".")
    L.append("")
    L.append("Notes: cold = `sync; echo 3 > /proc/sys/vm/drop_caches` right before the timed part (after the "
             "worker's imports). Warm = one untimed pass per target first; warm sequential and mmap cells repeat "
             f"whole passes for at least {WARM_MIN_S:g} s per run. Before each workload the kernel drops dentries "
             "and inodes (`echo 2`), so every daemon starts it having forgotten the last one. fio: psync, `--invalidate=0`, "
             "`--norandommap`, time-based; its O_DIRECT row reaches the disk only where O_DIRECT reaches the "
             "store (native, passthrough); bindfs and hfcachefs passthrough=off drop O_DIRECT on the store side, "
             "so there the daemon reads through the store's page cache. "
             "All workloads run as root; entry/attr timeouts are the defaults of each filesystem.")
    return "\n".join(L) + "\n"


# ---------------------------------------------------------------------------------------
def main():
    started = time.time()
    load_start = os.getloadavg()
    if os.geteuid() != 0:
        sys.exit("run.py: must run as root (through scripts/bench.sh)")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda s, f: sys.exit(128 + s))
    log(f"{'QUICK ' if QUICK else ''}run: {RUNS} runs per cell, store {STORE}")
    prepare_store()

    hopt = f"group={GROUP},logfile={BENCH_DIR}/hfcachefs-%s.log"
    targets = [
        Target("native", "native", STORE),
        Target("hfc", "hfcachefs", os.path.join(BENCH_DIR, "mnt-hfcachefs"),
               [BIN, STORE, os.path.join(BENCH_DIR, "mnt-hfcachefs"), "-o", hopt % "pt"], BIN),
        Target("hfc-nopt", "hfcachefs passthrough=off", os.path.join(BENCH_DIR, "mnt-hfcachefs-nopt"),
               [BIN, STORE, os.path.join(BENCH_DIR, "mnt-hfcachefs-nopt"), "-o",
                (hopt % "nopt") + ",passthrough=off"], BIN),
        Target("bindfs", "bindfs", os.path.join(BENCH_DIR, "mnt-bindfs"),
               [shutil.which("bindfs") or "/usr/bin/bindfs", f"--create-for-group={GROUP}",
                "--create-with-perms=g=u:o-rwx", STORE, os.path.join(BENCH_DIR, "mnt-bindfs")],
               shutil.which("bindfs") or "/usr/bin/bindfs"),
    ]
    hub = None
    xet_hub = None
    W = []
    prof_rows = []
    scale_rows = []
    try:
        for t in targets:
            if t.is_mount:
                t.mount()
        # did passthrough really engage?
        for t, name in ((targets[1], "pt"), (targets[2], "nopt")):
            try:
                logtext = open(f"{BENCH_DIR}/hfcachefs-{name}.log").read().splitlines()
                pt = [l for l in logtext if "passthrough" in l]
                if pt:
                    t.note = f" (log: {pt[-1].split('] ', 1)[-1]})"
            except OSError:
                pass
        hub_url = None
        if not ONLY or "dl" in ONLY:
            spec = {"repos": [{"id": DL_REPO, "files": [
                {"path": "config.json", "text": "{}"},
                {"path": DL_FILE, "size": SIZES["dl_bytes"], "seed": 1, "lfs": True}]}]}
            spec_path = os.path.join(BENCH_DIR, "fake-hub-spec.json")
            with open(spec_path, "w") as f:
                json.dump(spec, f)
            log("starting the fake hub (tests/e2e/fake_hub.py)")
            hub = subprocess.Popen(["/usr/bin/python3", FAKE_HUB, "--host", "127.0.0.1", "--port", "0",
                                    "--spec", spec_path], stdout=subprocess.PIPE, text=True)
            hub_url = json.loads(hub.stdout.readline())["url"]
            log(f"fake hub at {hub_url}")
        xet_url = None
        if (not ONLY or "xet" in ONLY) and XET_PYTHON:
            half = SIZES["xet_bytes"] // 2
            spec = {"repos": [{"id": XET_REPO, "files": [
                {"path": "config.json", "text": "{}"},
                *({"path": f"model-0000{i}-of-00002.safetensors", "size": half, "seed": 10 + i,
                   "unique": True, "lfs": True, "xet": True} for i in (1, 2))]}]}
            spec_path = os.path.join(BENCH_DIR, "fake-hub-xet-spec.json")
            with open(spec_path, "w") as f:
                json.dump(spec, f)
            log(f"starting a fake hub with Xet storage (hf_xet of {XET_PYTHON} uploads the fixtures)")
            xet_hub = subprocess.Popen(["/usr/bin/python3", FAKE_HUB, "--host", "127.0.0.1", "--port", "0",
                                        "--spec", spec_path, "--xet-python", XET_PYTHON],
                                       stdout=subprocess.PIPE, text=True)
            xet_url = json.loads(xet_hub.stdout.readline())["url"]
            log(f"Xet fake hub at {xet_url}")
        elif not XET_PYTHON:
            log("no venv with hf_xet (BENCH_XET_PYTHON): skipping the xet row")
        W = build_workloads(hub_url, targets, xet_url)
        if not xet_url:
            W = [w for w in W if w.key != "xet"]
        for w in W:
            run_workload(w, targets)
        scale_rows = run_scale(targets)
        prof_rows = run_profiles(targets) if PROFILE and shutil.which("strace") else []
        info = machine_info(targets)
    finally:
        kill_children()
        for h in (hub, xet_hub):
            if h:
                h.terminate()
                try:
                    h.wait(10)
                except subprocess.TimeoutExpired:
                    h.kill()
        for t in targets:
            if t.is_mount:
                t.unmount()
    text = report(W, targets, info, started, load_start, prof_rows, scale_rows)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        f.write(text)
    raw = {w.key: {"label": w.label, "unit": w.unit,
                   "cells": {k: {"values": c.values, "cpu": c.cpu, "hwm_mib": c.hwm, "error": c.error,
                                 "extra": c.extra} for k, c in w.cells.items()}} for w in W}
    with open(os.path.splitext(OUT)[0] + ".json", "w") as f:
        json.dump({"sizes": SIZES, "runs": RUNS, "machine": info, "results": raw,
                   "profiles": [{"workload": r[0], "per": r[1], "units": r[2], "target": r[3], **r[4]}
                                for r in prof_rows]}, f, indent=1)
    print(text)
    log(f"results written to {OUT}")


if __name__ == "__main__":
    main()
