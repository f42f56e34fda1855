"""The concurrent-download scenario shared by tests/load and tests/cluster.

Many members (each with their own umask, some on the old library generation) run
`snapshot_download` of many repos from the fake hub at the same time, every repo asked for
by at least three users, a few repos holding 200 MB files. Afterwards the cache is checked
as root: one blob per etag, every blob's sha256 right, every snapshot symlink resolving to
its blob, refs right, nothing temporary left, every file downloaded exactly once.

Builds on tests/e2e (imported, not copied): e2e_lib (FakeHub, UserProc, backends, helpers),
fake_hub (the server), hf_user (what a user runs; our load_user.py wraps its act_snapshot).
Everything runs as root in /opt/hfcachefs-e2e/venv-new; user code runs through setpriv.
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import secrets
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
E2E = REPO_ROOT / "tests" / "e2e"
sys.path.insert(0, str(E2E))

import e2e_lib as L  # noqa: E402

MB = 1 << 20
# Per-user umasks and library generations, by user index.
UMASKS = ["022", "077", "002", "022", "077", "002", "022", "077"]
# All on huggingface_hub 2.x by default (run_downloads(xet=True): with hf_xet, else HF_HUB_DISABLE_XET=1). HF_LOAD_OLD_USERS=N puts the last N users on hub
# 0.20/filelock 3.13: that hub creates a missing snapshot pointer (remove + symlink) outside
# the lock when the blob exists, so a concurrent reader can transiently miss the pointer
# (ENOENT, or a snapshot listing without it) on any filesystem: a library race, not ours.
_OLD = int(os.environ.get("HF_LOAD_OLD_USERS", "0"))
GENERATIONS = ["new"] * (8 - _OLD) + ["old"] * _OLD


# ----------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------
class Report:
    """Named checks; prints PASS/FAIL lines and the closing `<name>: N passed, M failed`."""

    def __init__(self, name: str):
        self.name = name
        self.passed: list[str] = []
        self.failed: list[str] = []
        self.xfailed: list[str] = []
        self.notes: dict = {}

    def check(self, what: str, ok: bool, detail: str = "") -> bool:
        if ok:
            self.passed.append(what)
            print(f"PASS {what}" + (f"  ({detail})" if detail and len(detail) < 300 else ""), flush=True)
        else:
            self.failed.append(what)
            print(f"FAIL {what}\n     " + (detail or "").replace("\n", "\n     ")[:20000], flush=True)
        return ok

    def problems(self, what: str, problems: list[str], ok_detail: str = "") -> bool:
        return self.check(what, not problems, ok_detail if not problems else
                          f"{len(problems)} problem(s):\n" + "\n".join(problems[:60]))

    def guard(self, what: str, fn, *a, **kw):
        """Run fn; an exception is a failed check (and returns None)."""
        try:
            return fn(*a, **kw)
        except BaseException as e:  # noqa: BLE001
            if isinstance(e, KeyboardInterrupt):
                raise
            import traceback

            self.check(what, False, f"{type(e).__name__}: {e}\n{traceback.format_exc()[-4000:]}")
            return None

    def known(self, what: str, ok: bool, bug: str, detail: str = "") -> bool:
        """A check that a known daemon bug makes fail: reported as XFAIL and not counted,
        unless HF_STRICT_KNOWN=1 (then it is an ordinary check). Passing is a plain PASS."""
        if ok or os.environ.get("HF_STRICT_KNOWN") == "1":
            return self.check(what if ok else f"{what} [known bug: {bug}]", ok, detail)
        self.xfailed.append(f"{what}: {bug}")
        print(f"XFAIL {what}\n     known daemon bug: {bug}\n     "
              + (detail or "").replace("\n", "\n     ")[:8000], flush=True)
        return False

    def closing(self) -> int:
        if self.xfailed:
            print(f"# {len(self.xfailed)} known failure(s), not counted (HF_STRICT_KNOWN=1 counts them):", flush=True)
            for x in self.xfailed:
                print(f"#   XFAIL {x}", flush=True)
        print(f"{self.name}: {len(self.passed)} passed, {len(self.failed)} failed", flush=True)
        return 1 if self.failed or not self.passed else 0


# ----------------------------------------------------------------------------------------
# Users
# ----------------------------------------------------------------------------------------
NAME_PREFIX = "zhfld"  # zhfld<creator pid hex>x<tag>_...: unlikely, and stale ones are findable


@dataclass
class Members:
    group: str
    gid: int
    users: list  # list[L.User], members of `group` (supplementary)
    others: dict = field(default_factory=dict)  # extra non-members by role
    created_users: list = field(default_factory=list)
    created_groups: list = field(default_factory=list)

    def remove(self) -> None:
        for u in self.created_users:
            subprocess.run(["userdel", u], capture_output=True, timeout=60)
        for g in self.created_groups + list(self.created_users):
            subprocess.run(["groupdel", g], capture_output=True, timeout=60)


def _cleanup_stale_accounts() -> None:
    """Remove accounts of earlier runs whose creating process is gone."""

    def owner(name: str):
        if not name.startswith(NAME_PREFIX):
            return None
        try:
            return int(name[len(NAME_PREFIX):].split("x", 1)[0], 16)
        except ValueError:
            return None

    for pw in pwd.getpwall():
        pid = owner(pw.pw_name)
        if pid is not None and pid != os.getpid() and not os.path.exists(f"/proc/{pid}"):
            subprocess.run(["userdel", pw.pw_name], capture_output=True, timeout=60)
    for g in grp.getgrall():
        pid = owner(g.gr_name)
        if pid is not None and pid != os.getpid() and not os.path.exists(f"/proc/{pid}"):
            subprocess.run(["groupdel", g.gr_name], capture_output=True, timeout=60)


def create_members(base: Path, n: int, extra_roles: tuple[str, ...] = ()) -> Members:
    """A fresh group and n members (the group is supplementary; each has a private primary
    group), plus one non-member per extra role. Homes under base/home (0700, their own)."""
    _cleanup_stale_accounts()
    tag = f"{NAME_PREFIX}{os.getpid():x}x{secrets.token_hex(2)}"
    group = f"{tag}_g"
    m = Members(group, -1, [])
    try:
        L.sh(["groupadd", group])
        m.created_groups.append(group)
        m.gid = grp.getgrnam(group).gr_gid
        homes = base / "home"
        homes.mkdir(mode=0o755, exist_ok=True)
        os.chmod(homes, 0o755)

        def mk(suffix: str, member: bool) -> L.User:
            name = f"{tag}_{suffix}"
            cmd = ["useradd", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin",
                   "--home-dir", str(homes / name)]
            if member:
                cmd += ["--groups", group]
            L.sh(cmd + [name])
            m.created_users.append(name)
            pw = pwd.getpwnam(name)
            home = homes / name
            home.mkdir(mode=0o700, exist_ok=True)
            os.chown(home, pw.pw_uid, pw.pw_gid)
            u = L.User(name, pw.pw_uid, pw.pw_gid, home)
            if u.gid == m.gid:
                raise L.E2EError(f"{name}: primary group must not be the shared group")
            return u

        for i in range(n):
            m.users.append(mk(f"u{i}", True))
        for role in extra_roles:
            m.others[role] = mk(role, False)
        return m
    except BaseException:
        m.remove()
        raise


def root_user(home: Path) -> L.User:
    home.mkdir(mode=0o700, exist_ok=True)
    return L.User("root", 0, 0, home)


# ----------------------------------------------------------------------------------------
# The repos
# ----------------------------------------------------------------------------------------
def make_spec(n_repos: int = 20, big_mb: int = 200, n_big: int = 2, org: str = "hfload", xet: bool = False) -> dict:
    """n_repos repos; the first n_big hold one big_mb MB LFS file each; the others a config,
    a tokenizer (plain git file), one or two LFS shards of 1-12 MB and sometimes a subdir.
    xet: the repos are Xet-enabled (their LFS files Xet-backed, of non-repeating content so
    Xet really transfers them); plain-HTTP clients still GET them from /resolve."""
    repos = []
    for j in range(n_repos):
        rid = f"{org}/repo-{j:02d}"
        files = [
            {"path": "config.json", "text": json.dumps({"model_type": "bert", "repo": j, "hidden_size": 32 + j}) + "\n"},
            {"path": "README.md", "text": f"# {rid}\n\nload test repo {j}\n"},
            {"path": "tokenizer.json", "size": 20_000 + 7_919 * j, "seed": 1000 + j},
        ]
        if j < n_big:
            files.append({"path": "model.safetensors", "size": big_mb * MB, "seed": 9000 + j, "lfs": True})
        else:
            files.append({"path": "model-00001-of-00002.bin", "size": (1 + (j * 7) % 12) * MB, "seed": 2000 + j,
                          "lfs": True})
            if j % 2:
                files.append({"path": "model-00002-of-00002.bin", "size": (j % 5 + 1) * 300_000, "seed": 3000 + j,
                              "lfs": True})
            if j % 3 == 0:
                files.append({"path": f"sub/dir-{j}/extra.txt", "size": 5_000 + j, "seed": 4000 + j})
        if xet:
            for f in files:
                if f.get("lfs"):
                    f["unique"] = True
        repos.append({"id": rid, "files": files, "xet": xet})
    return {"repos": repos}


def assign(repo_ids: list[str], n_users: int, n_big: int) -> dict[int, list[str]]:
    """Which user asks for which repo: every repo by 3 users (j, j+3, j+5 mod n), the big
    ones by a 4th too; each user's list starts with its big repos (so they collide)."""
    want: dict[int, list[str]] = {i: [] for i in range(n_users)}
    for j, rid in enumerate(repo_ids):
        who = {j % n_users, (j + 3) % n_users, (j + 5) % n_users}
        if j < n_big:
            who.add((j + 1) % n_users)
        for i in who:
            want[i].append(rid)
    return want


def requesters(want: dict[int, list[str]]) -> dict[str, int]:
    count: dict[str, int] = {}
    for repos in want.values():
        for r in repos:
            count[r] = count.get(r, 0) + 1
    return count


# ----------------------------------------------------------------------------------------
# Running it
# ----------------------------------------------------------------------------------------
def install_scripts(workdir: Path) -> Path:
    """World-readable copies of what the users run (root's home is 0700)."""
    bindir = workdir / "bin"
    L.make_world_readable_copy(E2E / "hf_user.py", bindir)
    return L.make_world_readable_copy(HERE / "load_user.py", bindir)


@dataclass
class Run:
    seconds: float
    results: list  # list[L.Result | Exception]
    procs: list


def run_downloads(users: list, hf_homes: list[str], want: dict[int, list[str]], hub, script: Path,
                  umasks=UMASKS, generations=GENERATIONS, threads: int = 2, timeout: float = 600,
                  extra_env: dict | None = None, xet: bool = False) -> Run:
    """Start every user at once (user i: users[i], HF_HOME hf_homes[i]); wait for all."""
    procs = []
    t0 = time.monotonic()
    try:
        for i, u in enumerate(users):
            gen = generations[i % len(generations)]
            env = L.user_env(u, hf_homes[i], hub.url, extra_env, xet=xet and gen == "new")
            # tqdm's thread_map in hub 0.20 is not safe for two snapshot_downloads in one
            # process (AttributeError: ... tqdm ... '_lock'): old-generation users do one at a time.
            nthreads = threads if gen == "new" else 1
            procs.append(L.UserProc(u, gen, script,
                                    ["snapshots", "--threads", str(nthreads)] + want[i], env,
                                    umasks[i % len(umasks)]))
        results = []
        deadline = time.monotonic() + timeout
        for p in procs:
            try:
                results.append(p.wait(max(1.0, deadline - time.monotonic())))
            except BaseException as e:  # noqa: BLE001 - a timeout is a result too
                results.append(e)
    finally:
        for p in procs:  # never leave a user process behind
            if p.proc.poll() is None:
                try:
                    os.killpg(p.proc.pid, 9)
                except ProcessLookupError:
                    pass
                p.proc.wait()
    return Run(time.monotonic() - t0, results, procs)


def failed_errnos(run: Run) -> list:
    """errno of every failed snapshot_download (None when it was not an OSError)."""
    out = []
    for r in run.results:
        if isinstance(r, BaseException):
            out.append(None)
            continue
        for v in ((r.data.get("result") or {}).get("repos") or {}).values():
            if not v.get("ok"):
                out.append(v.get("errno"))
        if not r.data.get("ok") and not (r.data.get("result") or {}).get("repos"):
            out.append(None)
    return out


def result_problems(run: Run, hub, want: dict[int, list[str]]) -> list[str]:
    """Every user process and every repo succeeded, with the right sha256 for every file."""
    bad = []
    for i, r in enumerate(run.results):
        if isinstance(r, BaseException):
            bad.append(f"user {i}: {type(r).__name__}: {str(r)[:3000]}")
            continue
        if not r.data.get("ok"):
            repos = (r.data.get("result") or {}).get("repos") or {}
            failed = {k: v for k, v in repos.items() if not v.get("ok")}
            if not failed:
                bad.append(f"user {i} ({r.user}) failed: {r.describe()[:4000]}")
            for repo, v in failed.items():
                bad.append(f"user {i} ({r.user}, umask {UMASKS[i % len(UMASKS)]}) {repo}: {v.get('exc_type')}: "
                           f"{v.get('exc_message')} errno={v.get('errno')} file={v.get('filename')}\n"
                           f"diagnosis: {v.get('diagnosis')}\n"
                           f"{(v.get('traceback') or '')[-2500:]}")
            continue
        repos = r.data["result"]["repos"]
        if sorted(repos) != sorted(want[i]):
            bad.append(f"user {i}: did {sorted(repos)}, wanted {sorted(want[i])}")
        for repo, v in repos.items():
            man = hub.repo(repo)
            expect = {p: f["sha256"] for p, f in man["files"].items()}
            if v["files"] != expect:
                diff = {p: (v["files"].get(p), expect.get(p)) for p in set(expect) | set(v["files"])
                        if v["files"].get(p) != expect.get(p)}
                bad.append(f"user {i} {repo}: wrong content (got, expected): {diff}")
    return bad


def user_seconds(run: Run) -> list[float]:
    out = []
    for r in run.results:
        if not isinstance(r, BaseException) and r.data.get("start") and r.data.get("end"):
            out.append(r.data["end"] - r.data["start"])
    return out


# ----------------------------------------------------------------------------------------
# Checking a cache (as root)
# ----------------------------------------------------------------------------------------
def sha256_path(p) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(8 * MB):
            h.update(chunk)
    return h.hexdigest()


def storage_dir(hf_home: Path, repo_id: str) -> Path:
    return Path(hf_home) / "hub" / f"models--{repo_id.replace('/', '--')}"


def cache_problems(hf_home: Path, hub, repo_ids: list[str], hash_blobs: bool = True,
                   check_nlink: bool = True) -> dict[str, list[str]]:
    """Problems by check: blobs (one per etag, nothing else), sha256 (of every blob),
    symlinks (every snapshot entry a symlink resolving to its blob), refs, leftovers."""
    out = {"blobs": [], "sha256": [], "symlinks": [], "refs": [], "leftovers": []}
    hf_home = Path(hf_home)
    for rid in repo_ids:
        man = hub.repo(rid)
        sd = storage_dir(hf_home, rid)
        etags = {f["etag"]: (p, f) for p, f in man["files"].items()}
        blobs_dir = sd / "blobs"
        try:
            names = sorted(os.listdir(blobs_dir))
        except OSError as e:
            out["blobs"].append(f"{rid}: cannot list blobs/: {e}")
            continue
        if sorted(names) != sorted(etags):
            out["blobs"].append(f"{rid}: blobs/ holds {names}, expected exactly {sorted(etags)}")
        for etag, (path, f) in etags.items():
            b = blobs_dir / etag
            try:
                st = os.lstat(b)
            except OSError as e:
                out["blobs"].append(f"{rid}: blob of {path}: {e}")
                continue
            xh = f.get("xet_hash")
            if stat.S_ISLNK(st.st_mode) and xh:
                # hub 2.x with Xet: blobs/<etag> -> ../../blobs/<2 hex>/<xet hash> (shared store)
                target = os.readlink(b)
                if target != f"../../blobs/{xh[:2]}/{xh}":
                    out["blobs"].append(f"{rid}: blob {etag} of {path} -> {target}, not its shared payload")
                    continue
                try:
                    st = os.stat(b)
                except OSError as e:
                    out["blobs"].append(f"{rid}: shared payload of {path}: {e}")
                    continue
            # (a GlusterFS brick keeps a second link of every file under .glusterfs/)
            if not stat.S_ISREG(st.st_mode) or (check_nlink and st.st_nlink != 1):
                out["blobs"].append(f"{rid}: blob {etag} of {path}: mode {st.st_mode:o} nlink {st.st_nlink}")
            if st.st_size != f["size"]:
                out["blobs"].append(f"{rid}: blob of {path}: size {st.st_size} != {f['size']}")
            if hash_blobs:
                got = sha256_path(b)
                if got != f["sha256"]:
                    out["sha256"].append(f"{rid}: blob {etag} of {path}: sha256 {got} != {f['sha256']}")
        snaps = sd / "snapshots"
        try:
            commits = sorted(os.listdir(snaps))
        except OSError as e:
            out["symlinks"].append(f"{rid}: cannot list snapshots/: {e}")
            commits = []
        if commits != [man["sha"]]:
            out["symlinks"].append(f"{rid}: snapshots/ holds {commits}, expected [{man['sha']}]")
        snap = snaps / man["sha"]
        seen = set()
        for dirpath, dirnames, filenames in os.walk(snap):
            for n in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                seen.add(os.path.relpath(os.path.join(dirpath, n), snap))
        if seen != set(man["files"]):
            out["symlinks"].append(f"{rid}: snapshot entries {sorted(seen)} != {sorted(man['files'])}")
        for path, f in man["files"].items():
            link = snap / path
            try:
                target = os.readlink(link)
            except OSError as e:
                out["symlinks"].append(f"{rid}: {path}: not a symlink: {e}")
                continue
            want_target = "../" * (path.count("/") + 2) + "blobs/" + f["etag"]
            if target != want_target:
                out["symlinks"].append(f"{rid}: {path} -> {target}, expected {want_target}")
            real = os.path.realpath(link)  # (with Xet, through the blob symlink into the store)
            if real != os.path.realpath(blobs_dir / f["etag"]) or not os.path.isfile(real):
                out["symlinks"].append(f"{rid}: {path} resolves to {real}, not to its blob")
        try:
            ref = (sd / "refs" / "main").read_text()
            if ref != man["sha"]:
                out["refs"].append(f"{rid}: refs/main = {ref!r}, expected {man['sha']}")
        except OSError as e:
            out["refs"].append(f"{rid}: refs/main: {e}")
    for dirpath, dirnames, filenames in os.walk(hf_home / "hub"):
        for n in filenames + dirnames:
            if n.endswith(".incomplete") or n.startswith("tmp"):
                out["leftovers"].append(os.path.join(dirpath, n))
    return out


def gets_per_file(hub, repo_ids: list[str]) -> list[str]:
    """Every file was downloaded (GET) exactly once, in full: the locks worked across users."""
    counts: dict[tuple[str, str], list[dict]] = {}
    for e in hub.log():
        if e["method"] != "GET" or "/resolve/" not in e["path"]:
            continue
        repo, _, rest = e["path"].lstrip("/").partition("/resolve/")
        path = rest.split("/", 1)[1]
        from urllib.parse import unquote

        counts.setdefault((unquote(repo), unquote(path)), []).append(e)
    bad = []
    for rid in repo_ids:
        for path, f in hub.repo(rid)["files"].items():
            gets = counts.get((rid, path), [])
            full = [g for g in gets if g.get("status") == 200 and g.get("bytes") == f["size"]]
            if len(gets) != 1 or len(full) != 1:
                bad.append(f"{rid}/{path}: {len(gets)} GET(s) "
                           f"{[(g.get('status'), g.get('bytes'), g.get('range'), g.get('ua', '')[-40:]) for g in gets]}")
    return bad


def shared_store_problems(hf_home: Path, hub, repo_ids: list[str]) -> tuple[list[str], int]:
    """hub 2.x shared blob store: every payload hub/blobs/<2 hex>/<hash> is a regular file of
    a Xet file of these repos, with the right size; no stray entries. Returns the problems
    and how many repo blobs are symlinks into the store."""
    want = {}
    for rid in repo_ids:
        for f in hub.repo(rid)["files"].values():
            if f.get("xet_hash"):
                want[f["xet_hash"]] = f["size"]
    store = Path(hf_home) / "hub" / "blobs"
    bad, linked = [], 0
    for rid in repo_ids:
        d = storage_dir(hf_home, rid) / "blobs"
        for n in os.listdir(d) if d.is_dir() else []:
            linked += os.path.islink(d / n)
    if not store.is_dir():
        return (["no shared blob store hub/blobs"] if want else []), linked
    for prefix in os.listdir(store):
        p = store / prefix
        if prefix == ".huggingface-shared-blobs":
            continue
        if not p.is_dir() or len(prefix) != 2:
            bad.append(f"stray entry in the shared store: {prefix}")
            continue
        for n in os.listdir(p):
            h = n.split(".", 1)[0]
            if h not in want or not h.startswith(prefix):
                bad.append(f"{prefix}/{n}: not a Xet file of these repos")
            elif n == h:
                st = os.lstat(p / n)
                if not stat.S_ISREG(st.st_mode) or st.st_size != want[h]:
                    bad.append(f"{prefix}/{n}: mode {st.st_mode:o} size {st.st_size} (want {want[h]})")
            elif n not in (f"{h}.lock", f"{h}.refs"):
                bad.append(f"{prefix}/{n}: unexpected")
    return bad, linked


def _xet_requests(log: list[dict], f: dict) -> tuple[list[dict], list[dict]]:
    """A Xet file's CAS reconstructions and the xorb GETs of its byte ranges (xorbs hold
    chunks of many files: a GET belongs to f when its range lies in one of f's ranges)."""
    import re

    recon = [e for e in log if "/reconstructions/" in e["path"] and e["path"].endswith(f["xet_hash"])]
    xorbs = []
    for e in log:
        m = re.fullmatch(r"bytes=(\d+)-(\d+)", e.get("range") or "")
        if m and e["path"].startswith("/cas/xorbs/"):
            x = e["path"].rsplit("/", 1)[-1]
            if any(x == xh and a <= int(m.group(1)) and int(m.group(2)) <= b for xh, a, b in f["xet_ranges"]):
                xorbs.append(e)
    return recon, xorbs


def xet_fetches_per_file(hub, repo_ids: list[str]) -> list[str]:
    """Xet path: every Xet file fetched by one user only (CAS reconstructions and xorb range
    GETs; no xorb range twice), and never by a plain GET of /resolve."""
    import re
    from urllib.parse import unquote

    log = hub.log()
    who = re.compile(r"hfe2e-user/([^;\s]+)")
    bad = []
    for rid in repo_ids:
        for path, f in hub.repo(rid)["files"].items():
            if not f.get("xet_hash"):
                continue
            gets = [e for e in log if e["method"] == "GET" and "/resolve/" in e["path"]
                    and unquote(e["path"]).startswith(f"/{rid}/resolve/") and unquote(e["path"]).endswith("/" + path)]
            recon, xorbs = _xet_requests(log, f)
            users = {(who.search(e["ua"]) or [None, "?"])[1] for e in recon + xorbs}
            ranges = [(e["path"], e["range"]) for e in xorbs]
            if gets or not recon or not xorbs or len(users) != 1 or len(ranges) != len(set(ranges)) \
                    or any(e.get("status") not in (200, 206) for e in recon + xorbs):
                bad.append(f"{rid}/{path}: {len(gets)} plain GET(s), {len(recon)} reconstruction(s), "
                           f"{len(xorbs)} xorb GET(s) ({len(set(ranges))} distinct), by {sorted(users)}")
    return bad


def xet_contention(hub, repo_ids: list[str]) -> int:
    """Xet path: how many Xet files had another user asking for their repo while one user was
    fetching them (reconstruction start to last xorb byte)."""
    import re

    log = hub.log()
    who = re.compile(r"hfe2e-user/([^;\s]+)")
    n = 0
    for rid in repo_ids:
        for f in hub.repo(rid)["files"].values():
            if not f.get("xet_hash"):
                continue
            recon, xorbs = _xet_requests(log, f)
            done = [e for e in recon + xorbs if e.get("end")]
            if not recon or not done:
                continue
            fetcher = (who.search(recon[0]["ua"]) or [None, "?"])[1]
            t0 = min(e["start"] for e in recon)
            t1 = max(e["end"] for e in done)
            others = [e for e in log if f"/{rid}/" in e["path"] and t0 <= e["start"] <= t1
                      and (who.search(e["ua"]) or [None, fetcher])[1] != fetcher]
            n += bool(others)
    return n


def contention(hub, min_overlap: int = 2) -> int:
    """How many files had several users asking (HEAD) while one was downloading (GET)."""
    log = hub.log()

    def key(e):  # repo and file, whatever the revision in the URL (HEAD main, GET <commit>)
        repo, _, rest = e["path"].partition("/resolve/")
        return repo, rest.split("/", 1)[-1]

    gets = [e for e in log if e["method"] == "GET" and "/resolve/" in e["path"] and e.get("end")]
    n = 0
    for g in gets:
        heads = [e for e in log if e["method"] == "HEAD" and "/resolve/" in e["path"] and key(e) == key(g)
                 and g["start"] <= e["start"] <= g["end"]]
        if len(heads) + 1 >= min_overlap:
            n += 1
    return n


def owner_problems(store_root: Path, gid: int, uids: set[int]) -> list[str]:
    """On-disk truth below the store root: policy modes, the shared group, member owners."""
    bad = L.policy_violations(store_root, gid)
    for rel, st in L.walk(store_root).items():
        if st.st_uid not in uids:
            bad.append(f"{rel}: owner uid {st.st_uid} is not one of the members {sorted(uids)}")
    return bad


# ----------------------------------------------------------------------------------------
# Mounting (kept here so this suite does not depend on the e2e backends' internals)
# ----------------------------------------------------------------------------------------
def is_mountpoint(path) -> bool:
    return subprocess.run(["mountpoint", "-q", str(path)], timeout=30).returncode == 0


class HfMount:
    """hfcachefs STORE MNT -o group=G[,opts], as the daemonizing mount command; stop() unmounts."""

    def __init__(self, store: Path, mnt: Path, group: str, opts: str = "", log: Path | None = None):
        self.store, self.mnt = Path(store), Path(mnt)
        self.mnt.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(self.mnt, 0o755)
        self.log = Path(log or f"{self.mnt}.log")
        options = f"group={group},logfile={self.log}" + (f",{opts}" if opts else "")
        cp = subprocess.run([str(L.hfcachefs_bin()), str(self.store), str(self.mnt), "-o", options],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")})
        if cp.returncode != 0:
            raise L.E2EError(f"hfcachefs {self.store} {self.mnt} -o {options}: exit {cp.returncode}\n"
                             f"{cp.stdout}{cp.stderr}\n{self.log_tail()}")
        if not is_mountpoint(self.mnt):
            raise L.E2EError(f"hfcachefs exited 0 but {self.mnt} is not a mount point")
        self.mounted = True
        pids = daemon_pids(self.mnt)
        self.pid = pids[0] if len(pids) == 1 else None

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.pid is not None and self.pid in daemon_pids(self.mnt) and is_mountpoint(self.mnt)

    def stop(self) -> None:
        if not getattr(self, "mounted", False):
            return
        self.mounted = False
        err = ""
        for _ in range(50):
            cp = subprocess.run(["umount", str(self.mnt)], capture_output=True, text=True, timeout=30)
            if cp.returncode == 0 or not is_mountpoint(self.mnt):
                return
            err = cp.stderr
            time.sleep(0.2)
        subprocess.run(["umount", "-l", str(self.mnt)], capture_output=True, timeout=30)
        raise L.E2EError(f"umount {self.mnt} failed: {err}")


# ----------------------------------------------------------------------------------------
# Daemon health
# ----------------------------------------------------------------------------------------
def daemon_pids(mnt: Path) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            args = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"hfcachefs") and str(mnt).encode() in args:
            try:
                state = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                out.append(int(d))
    return out


def daemon_health(pid: int) -> dict:
    info = {"pid": pid}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "Threads", "CapEff", "CapPrm", "CapBnd"):
                info[k] = v.strip()
        info["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError as e:
        info["error"] = str(e)
    return info


def summary_ns(**kw):
    return SimpleNamespace(**kw)
