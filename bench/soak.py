#!/usr/bin/env python3
"""Soak (issue 4, section 2): the load test's concurrent-download scenario, in rounds, for a
fixed time through one hfcachefs mount, while the daemon's RSS and open fds are sampled.

Run it through scripts/bench.sh with BENCH_SOAK=SECONDS (as root; bench.sh builds the release
binary, runs scripts/setup-e2e.sh for the users' venvs, and unmounts $BENCH_DIR/mnt-* on exit).

The scenario is tests/load's (imported, not copied: tests/load/scenario.py and run_load.py):
8 fresh Unix users, members of a fresh group, umasks 022/077/002 in turn, `snapshot_download`
of 20 repos from the fake hub all at once, every repo asked for by >= 3 users. Each round:

  1. everyone downloads (cold cache): zero errors, every file's sha256 right as read by its
     user; in the store one blob per etag, snapshot symlinks resolving, refs/main, nothing
     temporary left; every file fetched exactly once (the locks worked);
  2. one member (a different one each round, with its umask) deletes every repo through the
     mount with huggingface_hub's scan_cache_dir().delete_revisions (tests/e2e/hf_user.py);
     afterwards no repo is left, through the mount and in the store.

Rounds start until BENCH_SOAK seconds have passed (the last round runs to its end). A sampler
thread reads /proc/PID/status (VmRSS, VmHWM, Threads), /proc/PID/fd and the CPU time of the
daemon every BENCH_SOAK_INTERVAL seconds; an extra sample is taken at the end of each round
(after the delete: the "idle" values).

Verdict: the samples are split by time into thirds. RSS is flat when
max(VmRSS in the last third) <= 1.25 x max(VmRSS in the first third) + 2 MiB; fds are flat when
max(fds in the last third) <= 1.25 x max(fds in the first third) + 16, and the same holds for
the idle values (rounds split into thirds). PASS needs both flat, zero errors and the daemon up
at the end; otherwise FAIL and exit status 1. The summary (per minute: first/last/min/max) is
printed and appended to bench/results/soak.md (BENCH_SOAK_OUT).

Environment: BENCH_SOAK (seconds, required), BENCH_SOAK_INTERVAL (5), BENCH_SOAK_BIG_MB (200:
the two big files, as in tests/load; the others are its 1-12 MB shards), BENCH_SOAK_THROTTLE
(bytes/s per hub connection, 16 MiB/s: a 200 MB file takes ~12 s, so a round takes ~15 s and
the waiting users hold their lock files and lookups meanwhile), BENCH_SOAK_OUT, BENCH_DIR,
HFCACHEFS_BIN.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests" / "load"))
import run_load  # noqa: E402  (tests/load/run_load.py: prerequisites)
import scenario as S  # noqa: E402  (tests/load/scenario.py: users, spec, downloads, checks)

L = S.L  # tests/e2e/e2e_lib.py

MiB = 1 << 20
RSS_FACTOR, RSS_SLACK_MIB = 1.25, 2
FD_FACTOR, FD_SLACK = 1.25, 16


def env_int(name: str, default: int) -> int:
    v = os.environ.get(name, "")
    return int(v) if v.strip() else default


SECONDS = env_int("BENCH_SOAK", 0)
INTERVAL = env_int("BENCH_SOAK_INTERVAL", 5)
BIG_MB = env_int("BENCH_SOAK_BIG_MB", 200)
THROTTLE = env_int("BENCH_SOAK_THROTTLE", 16 << 20)
N_USERS, N_REPOS, N_BIG = 8, 20, 2
ROUND_TIMEOUT = 300
BENCH_DIR = Path(os.environ.get("BENCH_DIR") or "/var/tmp/hfcachefs-soak")
OUT = Path(os.environ.get("BENCH_SOAK_OUT") or HERE / "results" / "soak.md")


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Stopping on a signal (bench.sh sends SIGTERM and waits 10 s before SIGKILL)
# ---------------------------------------------------------------------------------------
STOP: list[int] = []


def kill_my_sessions() -> None:
    """SIGKILL the process groups of this driver's own children that lead a session: the
    users' processes (e2e_lib.UserProc starts each in a new session), nothing else."""
    me = os.getpid()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            f = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(f[1]) == me and int(f[3]) == int(d):
            try:
                os.killpg(int(d), signal.SIGKILL)
            except ProcessLookupError:
                pass


def on_signal(signum, frame) -> None:
    # scenario.run_downloads turns an exception in its waits into a user's result and goes on
    # waiting for the others: kill them first, so that it returns at once, then check STOP.
    if not STOP:
        STOP.append(signum)
        kill_my_sessions()
    raise SystemExit(128 + signum)


def check_stop() -> None:
    if STOP:
        raise SystemExit(128 + STOP[0])


# ---------------------------------------------------------------------------------------
# Sampling the daemon
# ---------------------------------------------------------------------------------------
def probe(pid: int) -> dict | None:
    """VmRSS/VmHWM in MiB, threads, open fds and CPU seconds of the daemon, or None if gone."""
    try:
        d = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                d[k.lower()] = int(v.split()[0]) / 1024
            elif k == "Threads":
                d["threads"] = int(v)
        d["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        d["cpu"] = (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        return d
    except (OSError, ValueError):
        return None


class Sampler(threading.Thread):
    def __init__(self, pid: int, interval: float, t0: float):
        super().__init__(daemon=True)
        self.pid, self.interval, self.t0 = pid, interval, t0
        self.samples: list[dict] = []
        self.round = 0
        self.stopped = threading.Event()
        self.lock = threading.Lock()

    def take(self, kind: str = "tick") -> dict | None:
        d = probe(self.pid)
        if d is not None:
            d.update(t=time.monotonic() - self.t0, round=self.round, kind=kind)
            with self.lock:
                self.samples.append(d)
        return d

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.take()

    def stop(self) -> None:
        self.stopped.set()
        self.join(10)


# ---------------------------------------------------------------------------------------
# One round
# ---------------------------------------------------------------------------------------
def download_problems(run: S.Run, hub, want, repo_ids, store: Path) -> list[str]:
    probs = list(S.result_problems(run, hub, want))
    cp = S.cache_problems(store, hub, repo_ids, hash_blobs=False)  # users hashed what they read
    for k in ("blobs", "symlinks", "refs", "leftovers"):
        probs += [f"store {k}: {p}" for p in cp[k]]
    probs += [f"fetched more than once: {p}" for p in S.gets_per_file(hub, repo_ids)]
    return probs


def repos_left(hf_home: Path) -> list[str]:
    try:
        return sorted(n for n in os.listdir(hf_home / "hub") if n.startswith("models--"))
    except FileNotFoundError:
        return []


def delete_all(member, umask: str, script: Path, mnt: Path, store: Path, hub, repo_ids) -> tuple[float, list[str]]:
    t = time.monotonic()
    probs = []
    env = L.user_env(member, str(mnt), hub.url)
    try:
        res = L.UserProc(member, "new", script, ["delete"] + repo_ids, env, umask).wait(ROUND_TIMEOUT)
        if not res.ok:
            bad = {k: v for k, v in ((res.data.get("result") or {}).get("repos") or {}).items() if not v.get("ok")}
            probs.append(f"delete_revisions as {member.name} (umask {umask}) failed: "
                         + (json.dumps(bad, default=str)[:4000] if bad else res.describe()[:4000]))
    except L.E2EError as e:
        probs.append(f"delete_revisions as {member.name}: {str(e)[:4000]}")
    for where, root in (("mount", mnt), ("store", store)):
        left = repos_left(root)
        if left:
            probs.append(f"after delete_revisions, {where} still holds {left}")
    if repos_left(mnt):  # start the next round clean anyway (as root, through the mount)
        for n in repos_left(mnt):
            shutil.rmtree(mnt / "hub" / n, ignore_errors=True)
    return time.monotonic() - t, probs


# ---------------------------------------------------------------------------------------
# Summary and verdict
# ---------------------------------------------------------------------------------------
def stats(vals: list[float]) -> tuple:
    return (vals[0], vals[-1], min(vals), max(vals)) if vals else (None,) * 4


def f_mib(v) -> str:
    return "—" if v is None else f"{v:.1f}"


def f_int(v) -> str:
    return "—" if v is None else f"{v:.0f}"


def flat(first: list[float], last: list[float], factor: float, slack: float) -> tuple[bool, str]:
    if not first or not last:
        return False, "too few samples for thirds"
    a, b = max(first), max(last)
    bound = factor * a + slack
    return b <= bound, f"last third max {b:.1f} vs first third max {a:.1f} (bound {bound:.1f})"


def slope(samples: list[dict], key: str) -> float:
    xs, ys = [s["round"] for s in samples], [s[key] for s in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def thirds(items: list[dict], key) -> tuple[list[dict], list[dict]]:
    if not items:
        return [], []
    lo, hi = key(items[0]), key(items[-1])
    span = hi - lo
    if span <= 0:
        return [], []
    return ([x for x in items if key(x) <= lo + span / 3], [x for x in items if key(x) >= lo + 2 * span / 3])


def summarize(samples, rounds, errors, alive, runtime, config) -> tuple[bool, list[str]]:
    ticks = [s for s in samples if s["kind"] in ("tick", "start", "end")]
    idle = [s for s in samples if s["kind"] == "idle"]
    first, last = thirds(ticks, lambda s: s["t"])
    rss_ok, rss_why = flat([s["vmrss"] for s in first], [s["vmrss"] for s in last], RSS_FACTOR, RSS_SLACK_MIB)
    fd_ok, fd_why = flat([s["fds"] for s in first], [s["fds"] for s in last], FD_FACTOR, FD_SLACK)
    ifirst, ilast = thirds(idle, lambda s: s["round"])
    ifd_ok, ifd_why = flat([s["fds"] for s in ifirst], [s["fds"] for s in ilast], FD_FACTOR, FD_SLACK)
    irss_ok, irss_why = flat([s["vmrss"] for s in ifirst], [s["vmrss"] for s in ilast], RSS_FACTOR, RSS_SLACK_MIB)
    if len(idle) < 3:  # too few rounds for thirds: the idle check does not apply
        ifd_ok, irss_ok = True, True
        ifd_why = irss_why = f"n/a ({len(idle)} rounds)"
    ok = rss_ok and fd_ok and ifd_ok and irss_ok and not errors and alive and rounds

    R = []
    R.append(f"## {config['date']}: BENCH_SOAK={SECONDS} — {'PASS' if ok else 'FAIL'}")
    R.append("")
    R.append(f"hfcachefs {config['commit']}, {config['machine']}; {config['scenario']}; samples every "
             f"{INTERVAL} s; load average {config['load_start']:.2f} at start, {os.getloadavg()[0]:.2f} at end "
             f"(1 min; other work shares this machine).")
    R.append("")
    R.append(f"- runtime {runtime:.0f} s, rounds {len(rounds)}, snapshot_downloads "
             f"{len(rounds) * config['downloads_per_round']}, errors {len(errors)}, daemon "
             f"{'up and mounted' if alive else 'GONE'} at the end")
    if rounds:
        dl = sorted(r["download_s"] for r in rounds)
        de = sorted(r["delete_s"] for r in rounds)
        R.append(f"- round: downloads {dl[0]:.1f}/{dl[len(dl) // 2]:.1f}/{dl[-1]:.1f} s (min/median/max), "
                 f"delete {de[0]:.1f}/{de[len(de) // 2]:.1f}/{de[-1]:.1f} s")
    if ticks:
        s0, s1 = ticks[0], ticks[-1]
        R.append(f"- VmRSS MiB first/last/max {s0['vmrss']:.1f}/{s1['vmrss']:.1f}/{max(s['vmrss'] for s in ticks):.1f}; "
                 f"VmHWM at the end {s1['vmhwm']:.1f}; fds first/last/max {s0['fds']}/{s1['fds']}/"
                 f"{max(s['fds'] for s in ticks)}; threads max {max(s['threads'] for s in ticks)}; daemon CPU "
                 f"{s1['cpu'] - s0['cpu']:.1f} s")
    if idle:
        R.append(f"- idle (after each round's delete): VmRSS MiB first/last/max {idle[0]['vmrss']:.1f}/"
                 f"{idle[-1]['vmrss']:.1f}/{max(s['vmrss'] for s in idle):.1f}; fds first/last/max "
                 f"{idle[0]['fds']}/{idle[-1]['fds']}/{max(s['fds'] for s in idle)}"
                 + (f"; trend (least squares over rounds) {slope(idle, 'vmrss') * 1024:+.1f} KiB and "
                    f"{slope(idle, 'fds'):+.2f} fds per round" if len(idle) >= 2 else ""))
    R.append(f"- RSS {'flat' if rss_ok and irss_ok else 'NOT FLAT'}: {rss_why}; idle: {irss_why} "
             f"(bound: {RSS_FACTOR}× + {RSS_SLACK_MIB} MiB)")
    R.append(f"- fds {'flat' if fd_ok and ifd_ok else 'NOT FLAT'}: {fd_why}; idle: {ifd_why} "
             f"(bound: {FD_FACTOR}× + {FD_SLACK})")
    R.append("")
    R.append("| minute | samples | rounds done | VmRSS MiB first / last / min / max | VmHWM MiB | "
             "fds first / last / min / max | threads max |")
    R.append("| --- | --- | --- | --- | --- | --- | --- |")
    by_min: dict[int, list[dict]] = {}
    for s in ticks:
        by_min.setdefault(int(s["t"] // 60), []).append(s)
    for m in sorted(by_min):
        ss = by_min[m]
        done = sum(1 for r in rounds if m * 60 <= r["end_t"] < (m + 1) * 60)
        rs = stats([s["vmrss"] for s in ss])
        fs = stats([s["fds"] for s in ss])
        R.append(f"| {m} | {len(ss)} | {done} | {' / '.join(f_mib(v) for v in rs)} | {f_mib(ss[-1]['vmhwm'])} | "
                 f"{' / '.join(f_int(v) for v in fs)} | {max(s['threads'] for s in ss)} |")
    if errors:
        R.append("")
        R.append(f"Errors ({len(errors)}, first 20):")
        R.append("")
        for e in errors[:20]:
            R.append("- " + e.replace("\n", " ")[:600])
    R.append("")
    R.append(f"Verdict: **{'PASS' if ok else 'FAIL'}**" + ("" if ok else " (" + ", ".join(
        w for w, bad in (("errors", bool(errors)), ("daemon gone", not alive), ("no round", not rounds),
                         ("RSS not flat", not (rss_ok and irss_ok)), ("fds not flat", not (fd_ok and ifd_ok)))
        if bad) + ")"))
    R.append("")
    return bool(ok), R


OUT_HEADER = """# hfcachefs soak (issue 4)

`BENCH_SOAK=SECONDS bash scripts/bench.sh` (bench/soak.py): tests/load's concurrent-download
scenario (8 members, umasks 022/077/002, 20 repos each asked for by >= 3 users) in rounds through
one hfcachefs mount over a fresh store; each round downloads everything, checks it, and one member
deletes every repo through the mount with `scan_cache_dir().delete_revisions`. The daemon's VmRSS,
VmHWM and open fds (/proc/PID/fd) are sampled every few seconds. Flat: the last third's max is at
most 1.25× the first third's max + 2 MiB (RSS) or + 16 (fds), for all samples and for the idle
samples taken after each round's delete. Newest run last.

"""


# ---------------------------------------------------------------------------------------
def main() -> int:
    if SECONDS <= 0:
        sys.exit("soak.py: set BENCH_SOAK=SECONDS")
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_signal)
    rep = S.Report("soak-prerequisites")
    if not run_load.prerequisites(rep):
        return 1
    load_start = os.getloadavg()[0]
    base = BENCH_DIR / "soak"
    mnt = BENCH_DIR / "mnt-soak"  # bench.sh unmounts $BENCH_DIR/mnt-* whatever happens
    if mnt.exists() and S.is_mountpoint(mnt):  # left over by a killed run
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)
    (BENCH_DIR / "soak-hfcachefs.log").unlink(missing_ok=True)
    base.mkdir(mode=0o755, parents=True)
    os.chmod(base, 0o755)
    members = hub = backend = sampler = None
    samples, rounds, errors = [], [], []
    alive = False
    t0 = time.monotonic()
    try:
        members = S.create_members(base, N_USERS)
        spec = S.make_spec(N_REPOS, BIG_MB, N_BIG, org="hfsoak")
        repo_ids = [r["id"] for r in spec["repos"]]
        want = S.assign(repo_ids, N_USERS, N_BIG)
        req = S.requesters(want)
        assert min(req.values()) >= 3 and len(req) == N_REPOS, req
        hub = L.FakeHub(spec, base, THROTTLE)
        unique = sum(f["size"] for r in hub.manifest.values() for f in r["files"].values())
        downloads = sum(len(v) for v in want.values())
        script = S.install_scripts(base)
        del_script = L.make_world_readable_copy(HERE / "soak_user.py", script.parent)
        store = base / "store"
        store.mkdir(mode=0o700)
        backend = S.HfMount(store, mnt, members.group, log=BENCH_DIR / "soak-hfcachefs.log")
        if backend.pid is None:
            raise RuntimeError(f"cannot identify the daemon of {mnt}: {S.daemon_pids(mnt)}")
        limits = [l for l in Path(f"/proc/{backend.pid}/limits").read_text().splitlines()
                  if l.startswith("Max open files")]
        nofile = limits[0].split()[3] if limits else "?"
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "src", "Cargo.toml",
                                "Cargo.lock"], capture_output=True, text=True).stdout.strip()
        config = {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": rev + (" (src modified)" if dirty else ""),
            "machine": f"{os.cpu_count()} CPUs, kernel {platform.release()}, store on "
                       + subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", str(store)], capture_output=True,
                                        text=True).stdout.strip()
                       + f", daemon RLIMIT_NOFILE {nofile}",
            "scenario": f"{N_USERS} users × {N_REPOS} repos, {downloads} snapshot_downloads per round, "
                        f"{unique / MiB:.0f} MiB unique per round (2 × {BIG_MB} MB + shards), hub throttle "
                        f"{THROTTLE / MiB:.0f} MiB/s per connection",
            "downloads_per_round": downloads,
            "load_start": load_start,
        }
        log(f"{config['scenario']}; daemon pid {backend.pid} on {mnt}; soak for {SECONDS} s")
        t0 = time.monotonic()
        sampler = Sampler(backend.pid, INTERVAL, t0)
        sampler.take("start")
        sampler.start()
        deadline = t0 + SECONDS
        r = 0
        while r == 0 or time.monotonic() < deadline:
            r += 1
            sampler.round = r
            hub.reset_log()
            run = S.run_downloads(members.users, [str(mnt)] * N_USERS, want, hub, script, timeout=ROUND_TIMEOUT)
            check_stop()
            probs = download_problems(run, hub, want, repo_ids, store)
            k = r % N_USERS
            del_s, dprobs = delete_all(members.users[k], S.UMASKS[k], del_script, mnt, store, hub, repo_ids)
            probs += dprobs
            check_stop()
            idle = sampler.take("idle")
            rounds.append({"round": r, "download_s": run.seconds, "delete_s": del_s, "errors": len(probs),
                           "end_t": time.monotonic() - t0})
            errors += [f"round {r}: {p}" for p in probs]
            log(f"round {r}: downloads {run.seconds:.1f} s, delete {del_s:.1f} s, errors {len(probs)}; "
                + (f"VmRSS {idle['vmrss']:.1f} MiB, VmHWM {idle['vmhwm']:.1f} MiB, fds {idle['fds']}, "
                   f"threads {idle['threads']}" if idle else "daemon gone"))
            if not backend.alive():
                errors.append(f"round {r}: the daemon is gone or the mount is lost: {backend.log_tail()}")
                break
        sampler.stop()
        sampler.take("end")
        alive = backend.alive()
        samples = sampler.samples
    except BaseException as e:  # noqa: BLE001
        import traceback

        errors.append(f"harness: {type(e).__name__}: {e}\n{traceback.format_exc()[-3000:]}")
        if sampler is not None:
            sampler.stop()
            samples = sampler.samples
        if isinstance(e, (KeyboardInterrupt, SystemExit)) or STOP:
            log(f"interrupted ({type(e).__name__}): cleaning up, no summary")
            kill_my_sessions()
            cleanup(members, hub, backend, base)
            raise
    runtime = time.monotonic() - t0
    cleanup(members, hub, backend, base)
    if "config" not in locals():
        print("\n".join(errors), flush=True)
        print("soak: FAIL (setup failed)", flush=True)
        return 1
    ok, lines = summarize(samples, rounds, errors, alive, runtime, config)
    text = "\n".join(lines)
    print("\n" + text, flush=True)
    for e in errors[20:]:
        print("- " + e, flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    new = not OUT.exists() or OUT.stat().st_size == 0
    with open(OUT, "a") as f:
        if new:
            f.write(OUT_HEADER)
        f.write(text + "\n")
    log(f"summary appended to {OUT}")
    print(f"soak: {'PASS' if ok else 'FAIL'}: {len(rounds)} rounds, {len(errors)} errors", flush=True)
    return 0 if ok else 1


def cleanup(members, hub, backend, base: Path) -> None:
    if backend is not None:
        try:
            backend.stop()
        except Exception as e:  # noqa: BLE001
            log(f"unmount: {e}")
    if hub is not None:
        hub.stop()
    if members is not None:
        members.remove()
    if not any(f" {base}/" in line or f" {base} " in line for line in open("/proc/self/mountinfo")):
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
