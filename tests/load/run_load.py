#!/usr/bin/env python3
"""Load test: 8 members download 20 repos at the same time through one hfcachefs mount.

    /opt/hfcachefs-e2e/venv-new/bin/python tests/load/run_load.py     (as root; see run.sh)

Scenario (tests/load/scenario.py): 8 Unix users, members of a fresh group (supplementary),
umasks 022/077/002 in turn, users 6 and 7 on huggingface_hub 0.20/filelock 3.13, the others
on hub 1.x/filelock 4; each runs `snapshot_download` of its repos (2 at a time) at the same
moment; 20 repos, each asked for by 3 users (the two with a 200 MB file by 4).

Checks on hfcachefs: zero errors, every file's sha256 as the users read it; in the store:
exactly one blob per etag, every blob's sha256, every snapshot symlink resolving to its blob
(in the store and through the mount), refs/main, nothing temporary left, every file fetched
exactly once (the lock files worked across users), the ownership policy on disk (members own
everything, shared group, group bits = owner bits, setgid dirs), the daemon still up.
Then the same 8 x 20 run through a fresh hfcachefs mount on the Xet path (hub 2.x + hf_xet:
CAS reconstructions and xorb ranges, the shared blob store hub/blobs/<2 hex>/<hash>): zero
errors, every Xet file fetched by one user only and never by a plain GET, the store's
payloads right, the ownership policy on disk. Then the same run by root in a native
directory (plain HTTP), with the same checks as the first, and the times.

Environment: LOAD_BIG_MB (200), LOAD_BIG_FILES (2), LOAD_REPOS (20), LOAD_USERS (8),
LOAD_THROTTLE (bytes/s per connection, default 64 MiB/s), LOAD_TIMEOUT (600 s per run),
LOAD_SKIP_NATIVE=1, LOAD_SKIP_XET=1, LOAD_KEEP=1 (keep the work directory), HFCACHEFS_BIN.
Closing line: `load: N passed, M failed`; exit status 1 on any failure.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scenario as S  # noqa: E402

L = S.L


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def prerequisites(rep: S.Report) -> bool:
    problems = []
    if os.geteuid() != 0:
        problems.append("must run as root")
    for gen, venv in L.VENVS.items():
        if not (venv / "bin" / "python").exists():
            problems.append(f"{venv} missing: run scripts/setup-e2e.sh")
    for tool in ("/usr/bin/setpriv", "/usr/sbin/useradd", "/usr/sbin/groupadd"):
        if not os.access(tool, os.X_OK):
            problems.append(f"{tool} missing")
    b = L.hfcachefs_bin()
    if not os.access(b, os.X_OK):
        problems.append(f"hfcachefs binary {b} missing (cargo build, or set HFCACHEFS_BIN)")
    if not os.path.exists("/dev/fuse"):
        problems.append("/dev/fuse missing")
    return rep.check("prerequisites", not problems, "; ".join(problems))


def check_run(rep: S.Report, label: str, run: S.Run, hub, want, repo_ids, hf_home: Path,
              through: Path | None = None) -> None:
    rep.problems(f"{label}: zero errors, every file's sha256 right as read by its users",
                 S.result_problems(run, hub, want),
                 f"{sum(len(v) for v in want.values())} snapshot_downloads in {run.seconds:.1f} s")
    probs = S.cache_problems(hf_home, hub, repo_ids)
    rep.problems(f"{label}: exactly one blob per etag", probs["blobs"])
    rep.problems(f"{label}: every blob's sha256 correct", probs["sha256"])
    rep.problems(f"{label}: every snapshot symlink resolves to its blob", probs["symlinks"])
    rep.problems(f"{label}: refs/main of every repo", probs["refs"])
    rep.problems(f"{label}: no temporary files left", probs["leftovers"])
    if through is not None:
        p2 = S.cache_problems(through, hub, repo_ids, hash_blobs=False)
        rep.problems(f"{label}: blobs and symlinks also right through the mount",
                     p2["blobs"] + p2["symlinks"] + p2["refs"])
    rep.problems(f"{label}: every file downloaded exactly once (locks held across users)",
                 S.gets_per_file(hub, repo_ids))


def is_xet_file(hub, problem: str) -> bool:
    """Whether a gets_per_file() problem line ("repo/path: ...") names a Xet-backed file."""
    name = problem.split(":", 1)[0]
    for rid in hub.manifest:
        repo = hub.manifest[rid]
        prefix = repo["id"] + "/"
        if name.startswith(prefix) and repo["files"].get(name[len(prefix):], {}).get("xet_hash"):
            return True
    return False


def main() -> int:
    rep = S.Report("load")
    if not prerequisites(rep):
        return rep.closing()
    n_users = env_int("LOAD_USERS", 8)
    n_repos = env_int("LOAD_REPOS", 20)
    big_mb = env_int("LOAD_BIG_MB", 200)
    n_big = env_int("LOAD_BIG_FILES", 2)
    throttle = env_int("LOAD_THROTTLE", 64 << 20)
    timeout = env_int("LOAD_TIMEOUT", 600)

    base = Path(f"/tmp/hfload-{os.getpid()}-{os.urandom(3).hex()}")
    base.mkdir(mode=0o755)
    os.chmod(base, 0o755)
    members = hub = backend = None
    summary: dict = {"users": n_users, "repos": n_repos, "big_mb": big_mb, "big_files": n_big,
                     "throttle_bps": throttle}
    try:
        members = rep.guard("create users", S.create_members, base, n_users)
        if members is None:
            return rep.closing()
        spec = S.make_spec(n_repos, big_mb, n_big, xet=True)
        repo_ids = [r["id"] for r in spec["repos"]]
        want = S.assign(repo_ids, n_users, n_big)
        req = S.requesters(want)
        rep.check("every repo asked for by at least 3 users", min(req.values()) >= 3 and len(req) == n_repos,
                  f"requesters per repo: min {min(req.values())}, max {max(req.values())}")
        t = time.monotonic()
        hub = rep.guard("fake hub starts", L.FakeHub, spec, base, throttle)
        if hub is None:
            return rep.closing()
        summary["hub_start_s"] = round(time.monotonic() - t, 1)
        total = sum(f["size"] for r in hub.manifest.values() for f in r["files"].values())
        summary["unique_bytes"] = total
        print(f"# {n_users} users, {n_repos} repos, {total / S.MB:.0f} MiB unique, "
              f"{sum(len(v) for v in want.values())} snapshot_downloads, throttle {throttle} B/s", flush=True)
        script = S.install_scripts(base)

        # ---- hfcachefs ------------------------------------------------------------------
        wd = base / "hfcachefs"
        wd.mkdir(mode=0o755)
        store = wd / "store"
        store.mkdir(mode=0o700)
        backend = rep.guard("mount hfcachefs", S.HfMount, store, wd / "mnt", members.group)
        if backend is None:
            return rep.closing()
        pids = S.daemon_pids(backend.mnt)
        rep.check("one daemon process serves the mount", len(pids) == 1, f"pids {pids}")
        before = S.daemon_health(pids[0]) if pids else {}
        hub.reset_log()
        run = S.run_downloads(members.users, [str(backend.mnt)] * n_users, want, hub, script, timeout=timeout)
        after = S.daemon_health(pids[0]) if pids else {}
        summary["hfcachefs_s"] = round(run.seconds, 2)
        summary["hfcachefs_user_s"] = [round(x, 1) for x in S.user_seconds(run)]
        summary["contended_files"] = S.contention(hub)
        summary["daemon_before"], summary["daemon_after"] = before, after
        rep.check("hfcachefs: daemon still up and mounted after the run",
                  bool(pids) and backend.alive(),
                  f"before {before} after {after}")
        check_run(rep, "hfcachefs", run, hub, want, repo_ids, backend.store, through=backend.mnt)
        uids = {u.uid for u in members.users}
        rep.problems("hfcachefs: on disk every entry is a member's, shared group, group bits = owner bits, "
                     "setgid dirs, nothing for others", S.owner_problems(backend.store / "hub", members.gid, uids))
        rep.check("hfcachefs: users overlapped on the same files (contention happened)",
                  summary["contended_files"] >= 2, f"{summary['contended_files']} files fetched while others asked")
        # Everyone again on the now warm cache: all hits, nothing downloaded.
        hub.reset_log()
        wrun = S.run_downloads(members.users, [str(backend.mnt)] * n_users, want, hub, script, timeout=timeout)
        summary["hfcachefs_warm_s"] = round(wrun.seconds, 2)
        rep.problems("hfcachefs warm cache: zero errors, right content", S.result_problems(wrun, hub, want),
                     f"{wrun.seconds:.1f} s")
        regets = [e["path"] for e in hub.log() if e["method"] == "GET" and "/resolve/" in e["path"]]
        rep.check("hfcachefs warm cache: nothing downloaded again", not regets, f"GETs: {regets[:20]}")
        summary["daemon_after_warm"] = S.daemon_health(pids[0]) if pids else {}
        rep.check("hfcachefs: daemon still up after the warm run", backend.alive(), backend.log_tail())
        backend.stop()
        backend = None
        shutil.rmtree(wd / "store", ignore_errors=True)

        # ---- hfcachefs, Xet path (hub 2.x + hf_xet, shared blob store) -----------------
        if os.environ.get("LOAD_SKIP_XET") != "1":
            xd = base / "hfcachefs-xet"
            xd.mkdir(mode=0o755)
            (xd / "store").mkdir(mode=0o700)
            backend = rep.guard("mount hfcachefs (Xet run)", S.HfMount, xd / "store", xd / "mnt", members.group)
            if backend is None:
                return rep.closing()
            xpids = S.daemon_pids(backend.mnt)
            hub.reset_log()
            # hf_xet fetches xorb ranges over several connections at once: a quarter of the
            # per-connection rate keeps a big file's download about as long as over HTTP,
            # so the users still overlap on it.
            hub._post(f"/_control/xet?xorb_bps={max(1, throttle // 4)}")
            xrun = S.run_downloads(members.users, [str(backend.mnt)] * n_users, want, hub, script, timeout=timeout,
                                   xet=True)
            summary["hfcachefs_xet_s"] = round(xrun.seconds, 2)
            summary["hfcachefs_xet_user_s"] = [round(x, 1) for x in S.user_seconds(xrun)]
            summary["xet_contended_files"] = S.xet_contention(hub, repo_ids)
            summary["daemon_after_xet"] = S.daemon_health(xpids[0]) if xpids else {}
            rep.check("hfcachefs Xet: daemon still up and mounted after the run", bool(xpids) and backend.alive(),
                      backend.log_tail())
            rep.problems("hfcachefs Xet: zero errors, every file's sha256 right as read by its users",
                         S.result_problems(xrun, hub, want),
                         f"{sum(len(v) for v in want.values())} snapshot_downloads in {xrun.seconds:.1f} s")
            probs = S.cache_problems(backend.store, hub, repo_ids)
            rep.problems("hfcachefs Xet: one blob per etag, sha256, symlinks, refs, no leftovers (store)",
                         probs["blobs"] + probs["sha256"] + probs["symlinks"] + probs["refs"] + probs["leftovers"])
            p2 = S.cache_problems(backend.mnt, hub, repo_ids, hash_blobs=False)
            rep.problems("hfcachefs Xet: blobs and symlinks also right through the mount",
                         p2["blobs"] + p2["symlinks"] + p2["refs"])
            store_bad, linked = S.shared_store_problems(backend.store, hub, repo_ids)
            summary["xet_blobs_linked_to_store"] = linked
            rep.problems("hfcachefs Xet: the shared blob store holds exactly these repos' Xet payloads", store_bad,
                         f"{linked} repo blobs are symlinks into hub/blobs/")
            rep.check("hfcachefs Xet: hub 2.x used the shared blob store", linked > 0, f"{linked} linked blobs")
            rep.problems("hfcachefs Xet: every Xet file fetched by one user over CAS/xorb ranges, never by a plain GET",
                         S.xet_fetches_per_file(hub, repo_ids))
            rep.problems("hfcachefs Xet: every other file downloaded exactly once",
                         [p for p in S.gets_per_file(hub, repo_ids) if not is_xet_file(hub, p)])
            rep.problems("hfcachefs Xet: on disk every entry is a member's, shared group, group bits = owner bits, "
                         "setgid dirs, nothing for others",
                         S.owner_problems(backend.store / "hub", members.gid, uids))
            rep.check("hfcachefs Xet: users overlapped on the same files (contention happened)",
                      summary["xet_contended_files"] >= 2,
                      f"{summary['xet_contended_files']} Xet files fetched while others asked for their repo")
            backend.stop()
            backend = None
            shutil.rmtree(xd / "store", ignore_errors=True)

        # ---- native, by root ------------------------------------------------------------
        if os.environ.get("LOAD_SKIP_NATIVE") != "1":
            nd = base / "native"
            nd.mkdir(mode=0o700)
            root = S.root_user(base / "roothome")
            hub.reset_log()
            nrun = S.run_downloads([root] * n_users, [str(nd)] * n_users, want, hub, script, timeout=timeout)
            summary["native_s"] = round(nrun.seconds, 2)
            summary["native_user_s"] = [round(x, 1) for x in S.user_seconds(nrun)]
            check_run(rep, "native (root)", nrun, hub, want, repo_ids, nd)
            summary["ratio_hfcachefs_to_native"] = round(run.seconds / nrun.seconds, 2) if nrun.seconds else None
            shutil.rmtree(nd, ignore_errors=True)
        print("# summary " + json.dumps(summary), flush=True)
        print(f"# total time: hfcachefs {summary.get('hfcachefs_s')} s, hfcachefs Xet {summary.get('hfcachefs_xet_s')} s, "
              f"native (root) {summary.get('native_s')} s, ratio {summary.get('ratio_hfcachefs_to_native')}", flush=True)
        (base.parent / f"{base.name}.summary.json").write_text(json.dumps(summary, indent=1))
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, KeyboardInterrupt):
            rep.check("completed within the time limit", False, "interrupted")
        else:
            import traceback

            rep.check("harness", False, f"{type(e).__name__}: {e}\n{traceback.format_exc()[-4000:]}")
    finally:
        if backend is not None:
            rep.guard("unmount hfcachefs", backend.stop)
        if hub is not None:
            hub.stop()
        if members is not None:
            members.remove()
        busy = any(f" {base}/" in line for line in open("/proc/self/mountinfo"))
        if os.environ.get("LOAD_KEEP") or busy:
            print(f"# keeping {base}" + (" (something is still mounted below it)" if busy else ""))
        else:
            shutil.rmtree(base, ignore_errors=True)
    return rep.closing()


if __name__ == "__main__":
    sys.exit(main())
