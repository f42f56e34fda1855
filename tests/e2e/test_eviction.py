"""End-to-end: automatic eviction (`-o max_size=`) while four members download twelve repos.

Four members of the shared group, each with its own umask (022, 002, 027, 077), run real
`snapshot_download`s at once through one hfcachefs mount, three repos each, against this
module's own fake hub (12 Xet-enabled repos of REPO_SIZE bytes that deduplicate with
nothing). The mount's `max_size` holds about half of them. Two transports: `xet` (hub
2.4.0 + hf_xet, the shared payload store `hub/blobs/<2hex>/<hash>`) and `old` (hub 0.20.3,
the per-repo layout: every blob a file of its repo).

Asserted:
  * every download succeeds, with the right sha256 for every file;
  * the store's disk usage, counted as the daemon counts it (what its regular files take
    on disk, `st_blocks` x 512, each inode once; `.hfcachefs/` and members' private copies
    `.hfcachefs-private/` not counted; directories and symlinks not counted), sampled
    every 0.2 s during the run, never passes TRANSIENT_BOUND, and once the downloads are
    done and the daemon's eviction has run it is within max_size;
  * the daemon evicted (its log's `evicted REPO@COMMIT` lines, `.hfcachefs/last-eviction`
    naming `daemon: max_size=`), and what it evicted is what was used least recently:
    every evicted repo's download finished before every surviving one's (within a second
    and a half: the access record counts whole seconds, and a member's process ends a
    moment after its last read);
  * `scan_cache_dir` (run by a member) reports no warnings, every file of every revision
    resolves, and exactly the repos not evicted are there; `snapshot_download(...,
    local_files_only=True)` of every survivor works and gives the right sha256.

The transient bound: the daemon looks at the store after a download is published, at
most every 2 s (`EVICT_CHECK_GAP` in src/daemon.rs), and never removes a repo a download
is filling. Between two looks each member can finish the repo it was downloading and be
part way into the next (a repo takes at least 2 s to arrive at the hub's pace here), so
the store may pass max_size by at most two repos per member:
TRANSIENT_BOUND = max_size + 2 x USERS x REPO_DISK.

Not run on the `plain` backend (the blog's setgid directory): it has no eviction, so
there is nothing to keep under a limit.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import stat
import threading
import time
from pathlib import Path

import pytest

import e2e_lib as L
from conftest import Ctx

USERS = 4
UMASKS = ["022", "002", "027", "077"]
N_REPOS = 12
REPO_SIZE = 4 << 20  # the one big file of each repo
# What a repo takes on disk beyond its big file: config, README, ref, `.refs` hint, tree
# listing... a few blocks each, generously.
REPO_DISK = REPO_SIZE + (64 << 10)
MAX_SIZE = 6 * REPO_DISK + (REPO_DISK // 2)  # six repos fit, twelve do not
TRANSIENT_BOUND = MAX_SIZE + 2 * USERS * REPO_DISK
# Per-connection pace of the hub: a repo takes about 2 s to arrive.
THROTTLE = 2 << 20
# The access record counts whole seconds; a member's process ends a moment after its last read.
ORDER_SLACK = 1.5
REPOS = [f"hfe2e-ev/r{i:02d}" for i in range(N_REPOS)]


@pytest.fixture(scope="module")
def ev_hub(workbase):
    d = workbase / "ev-hub"
    d.mkdir(mode=0o755)
    spec = {"repos": [
        {"id": r, "xet": True, "files": [
            {"path": "config.json", "text": f'{{"model_type": "bert", "n": {i}}}\n'},
            {"path": "README.md", "text": f"# {r}\n"},
            {"path": "model.bin", "size": REPO_SIZE, "seed": 1000 + i, "lfs": True, "unique": True},
        ]}
        for i, r in enumerate(REPOS)
    ]}
    h = L.FakeHub(spec, d, THROTTLE)
    yield h
    h.stop()


@pytest.fixture(scope="module")
def members(users):
    """Four members of the shared group: a, b and two more."""
    return [users.a, users.b, L.add_member(users, "c"), L.add_member(users, "d")]


def store_bytes(store: Path) -> int:
    """What the store's regular files take on disk, each inode once, hfcachefs's own not
    counted (as the daemon counts a max_size). Tolerates entries vanishing mid-walk."""
    seen = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(store):
        if dirpath == str(store):
            dirnames[:] = [d for d in dirnames if d not in (".hfcachefs", ".hfcachefs-private")]
        for n in filenames:
            try:
                st = os.lstat(os.path.join(dirpath, n))
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def ok(r: L.Result) -> dict:
    assert r.ok, "expected success, got:\n" + r.describe()
    return r.data["result"]


def check_files(hub, repo_id: str, files: dict) -> None:
    man = hub.repo(repo_id)
    want = {p: f["sha256"] for p, f in man["files"].items()}
    assert files == want, f"{repo_id}: {files} != {want}"


@pytest.mark.parametrize("transport", ["xet", "old"])
def test_max_size_holds_while_four_members_download_twelve_repos(users, members, ev_hub, transport,
                                                                  user_script, workdir):
    be = L.HfcachefsBackend(workdir, users, options=f"group={users.group},max_size={MAX_SIZE}")
    try:
        ctx = Ctx(users, ev_hub, be, transport, "022", user_script)
        ev_hub.reset_log()
        samples: list[tuple[float, int]] = []
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                samples.append((time.monotonic(), store_bytes(be.store)))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        done: dict[str, float] = {}
        results: dict[str, L.Result] = {}
        lock = threading.Lock()

        def member(k: int):
            time.sleep(0.3 * k)  # staggered a little: the first publishes make the shared store
            for repo in REPOS[k::USERS]:
                r = ctx.run(members[k], "snapshot", repo, umask=UMASKS[k], timeout=240)
                with lock:
                    done[repo] = time.monotonic()
                    results[repo] = r

        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(USERS) as pool:
            for f in [pool.submit(member, k) for k in range(USERS)]:
                f.result()
        elapsed = time.monotonic() - t0

        # Every download succeeded, with the right bytes.
        for repo in REPOS:
            check_files(ev_hub, repo, ok(results[repo])["files"])

        # The daemon's eviction runs within EVICT_CHECK_GAP of the last download.
        deadline = time.monotonic() + 20
        while store_bytes(be.store) > MAX_SIZE and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # and any check still due has run
        stop.set()
        sampler.join()
        end = store_bytes(be.store)
        peak = max(b for _, b in samples)
        order = sorted(REPOS, key=done.get)
        print(f"\n{transport}: downloads took {elapsed:.1f} s; peak {peak} end {end} max_size {MAX_SIZE} "
              f"bound {TRANSIENT_BOUND}; completion order {[r[-3:] for r in order]}")
        assert end <= MAX_SIZE, f"store at {end} bytes after eviction, over max_size {MAX_SIZE}"
        assert peak <= TRANSIENT_BOUND, f"peak {peak} over the transient bound {TRANSIENT_BOUND}"
        assert len(samples) >= 10, f"only {len(samples)} samples of the store's size"

        # The daemon evicted, least recently used first.
        log = be.log_path.read_text(errors="replace")
        evicted = {}
        for m in re.finditer(r"evicted models--(hfe2e-ev)--(r\d\d)@([0-9a-f]{40}) ", log):
            evicted[f"{m.group(1)}/{m.group(2)}"] = m.group(3)
        last = (be.store / ".hfcachefs" / "last-eviction").read_text()
        assert f"daemon: max_size={MAX_SIZE}" in last, last
        assert evicted, f"nothing evicted:\n{log[-3000:]}"
        for repo, commit in evicted.items():
            assert commit == ev_hub.repo(repo)["sha"], (repo, commit)

        scan = ok(ctx.run(members[0], "scan"))
        assert not scan["warnings"], scan["warnings"]
        survivors = set(scan["repos"])
        assert survivors.isdisjoint(evicted), (survivors, evicted)
        assert survivors | set(evicted) == set(REPOS), (survivors, evicted)
        for repo, revs in scan["repos"].items():
            assert [r["commit"] for r in revs] == [ev_hub.repo(repo)["sha"]], (repo, revs)
            assert revs[0]["refs"] == ["main"], (repo, revs)
            assert revs[0]["files"] and all(revs[0]["files"].values()), (repo, revs)
        latest_evicted = max(done[r] for r in evicted)
        earliest_kept = min(done[r] for r in survivors)
        assert latest_evicted <= earliest_kept + ORDER_SLACK, (
            f"evicted {sorted(evicted)} but kept {sorted(survivors)}; finished: "
            + ", ".join(f"{r[-3:]}@{done[r] - t0:.1f}s" for r in order))

        # Every survivor loads offline, with the right bytes.
        for k, repo in enumerate(sorted(survivors)):
            u = k % USERS
            r = ctx.run(members[u], "snapshot", repo, "--local-files-only", umask=UMASKS[u],
                        env={"HF_HUB_OFFLINE": "1"})
            check_files(ev_hub, repo, ok(r)["files"])
    finally:
        be.stop()
