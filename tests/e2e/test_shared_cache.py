"""End-to-end: real Hugging Face libraries, several Unix users, one HF_HOME.

Matrix: backend x transport x umask
  backend     plain      the blog's recipe: HF_HOME a setgid dir, root:GROUP 2770
              hfcachefs  HF_HOME the mount point of hfcachefs over a fresh 0700 store
  transport   xet        huggingface_hub 2.x + hf_xet + filelock 4.x (+ datasets 5, transformers 5):
                         CAS reconstructions + xorb ranges, shared blob store hub/blobs/<2hex>/<hash>
              http       the same venv with HF_HUB_DISABLE_XET=1: plain GET of /resolve
              old        huggingface_hub 0.20.3 + filelock 3.13.1 (+ datasets 2.16, transformers 4.36)
  ("generation" new = xet or http, old = old)
  umask       022        a user who never set `umask 002` (the common case)
              002        the blog's advice

Users A and B are members of the shared group (supplementary group only; their primary
group is their own), O is not. Each runs real library code in its own process (setpriv).

hfcachefs must pass every scenario. For `plain`, each test asserts what really happens
(observed and explained below); where plain works legitimately the test asserts that too.
What breaks `plain` (root causes, found on this machine):
  * umask 022: every directory and file a user creates is 0755/0644 (setgid keeps the group
    but gives no write bit), so the next user cannot add a lock file to
    `hub/.locks/models--org--name/`, a blob to `blobs/`, rewrite `refs/main`, add a
    `datasets/*.lock`, or unlink anything. hub swallows unlink errors in
    `delete_revisions().execute()`, so there the failure is silent: nothing is deleted.
  * old generation, any umask: filelock 3.13 fchmods every lock file to 0644, so a lock
    file created by A can never be opened O_RDWR by B -> the blog's
    `PermissionError: [Errno 13] ... .locks/models--.../<sha256>.lock` whenever B needs a
    lock A has used (concurrent download of the same blob; datasets' builder lock).
  * new generation with umask 002 works on plain (hub >= 1.4 asks filelock for 0o664).
    With umask 022 the lock files are still 0664 (filelock 4 applies the mode hub asks
    for, whatever the umask), so B can wait on A's lock while A downloads and then use
    A's file; but anything B must create in A's 2755 directories fails as above.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

import e2e_lib as L
from conftest import BIG_SIZE, DATASET_REPO, REPO_BERT, REPO_BIG, REPO_COPY, REPO_FLAT, REPO_NESTED, Ctx

UMASKS = pytest.mark.parametrize("umask", ["022", "002"])


def ok(r: L.Result) -> dict:
    assert r.ok, "expected success, got:\n" + r.describe()
    return r.data["result"]


def failed_with_permission_error(r: L.Result) -> dict:
    assert not r.ok, "expected a PermissionError, but it succeeded:\n" + r.describe()
    pe = r.perm
    assert pe is not None, "expected a PermissionError in the exception chain:\n" + r.describe()
    assert pe["errno"] == 13, r.describe()
    return pe


def check_policy(ctx, root: Path | None = None):
    """hfcachefs only: everything visible through the mount follows the group policy."""
    if ctx.plain:
        return
    root = root or ctx.hf_home
    st = os.stat(root)
    assert st.st_gid == ctx.users.gid and stat.S_IMODE(st.st_mode) == 0o2770, \
        f"mount root: mode {stat.S_IMODE(st.st_mode):04o} gid {st.st_gid}"
    assert L.walk(root), "nothing visible through the mount"
    bad = L.policy_violations(root, ctx.users.gid)
    assert not bad, "entries violating the hfcachefs policy:\n" + "\n".join(bad[:50])


def blob_names(ctx, repo_id) -> list[str]:
    d = ctx.storage(repo_id) / "blobs"
    return sorted(os.listdir(d)) if d.is_dir() else []


def file_log(ctx, repo_id, path, repo_type="model") -> dict:
    """The fake hub's requests for one file, by kind: HEADs and GETs of its /resolve URL,
    and (Xet) CAS reconstructions of its hash and range GETs of its xorbs."""
    f = ctx.hub.repo(repo_id, repo_type)["files"][path]
    prefix = {"model": "", "dataset": "/datasets"}[repo_type]
    res = re.compile(re.escape(f"{prefix}/{repo_id}/resolve/") + r"[^/]+/" + re.escape(path) + "$")
    out = {"head": [], "get": [], "recon": [], "xorb": []}
    for e in ctx.hub.log():
        p = e["path"].split("?")[0]
        if res.match(p):
            out["head" if e["method"] == "HEAD" else "get"].append(e)
        elif f["xet_hash"] and "/reconstructions/" in p and p.endswith(f["xet_hash"]):
            out["recon"].append(e)
        elif f["xet_hash"] and p.startswith("/cas/xorbs/") and xorb_range_of(f, e):
            out["xorb"].append(e)
    return out


def xorb_range_of(f, e) -> bool:
    """Whether a xorb GET fetched bytes of file f (xorbs hold chunks of many files: match the
    byte range against the ranges of f's reconstruction)."""
    m = re.fullmatch(r"bytes=(\d+)-(\d+)", e.get("range") or "")
    xorb = e["path"].split("?")[0].rsplit("/", 1)[-1]
    return bool(m) and any(x == xorb and a <= int(m.group(1)) and int(m.group(2)) <= b
                           for x, a, b in f["xet_ranges"])


def check_fetched_once(ctx, repo_id, path, who=None):
    """The file's bytes crossed the wire exactly once, by the transport under test: one full
    GET of /resolve (http, old), or (xet) no GET of /resolve, reconstructions and exactly the
    xorb bytes of one download."""
    f = ctx.hub.repo(repo_id)["files"][path]
    log = file_log(ctx, repo_id, path)
    if ctx.xet and f["xet_hash"]:
        assert not log["get"], f"{path}: plain GET with Xet enabled: {log['get']}"
        assert log["recon"] and log["xorb"], f"{path}: no Xet transfer: {log}"
        assert all(e["status"] == 200 for e in log["recon"]), log
        assert all(e["status"] == 206 and e["bytes"] > 0 for e in log["xorb"]), log
        # one download: every xorb range fetched once, by one user, within the file's plan
        ranges = [(e["path"], e["range"]) for e in log["xorb"]]
        assert len(ranges) == len(set(ranges)), f"{path}: a xorb range fetched twice: {log}"
        assert sum(e["bytes"] for e in log["xorb"]) <= f["xet_transfer"], log
        users = {re.search(r"hfe2e-user/(\S+?);", e["ua"] + ";").group(1) for e in log["recon"] + log["xorb"]}
        assert len(users) == 1, f"{path}: fetched by {users}: {log}"
        if who is not None:
            assert users == {who}, log
    else:
        assert not log["recon"] and not log["xorb"], f"{path}: Xet requests without Xet: {log}"
        gets = log["get"]
        assert len(gets) == 1 and gets[0]["bytes"] == f["size"], f"{path}: expected exactly one GET: {log}"
        if who is not None:
            assert who in gets[0]["ua"], log
    return log


def check_payloads(ctx, repo_id, paths=None, strict=True) -> list[str]:
    """Every snapshot file resolves to its payload (ctx.payload); with Xet, blobs/<etag> is
    a relative symlink into the shared store hub/blobs/<2 hex>/<xet hash>.

    strict=False tolerates Xet files left as a regular repo-local blob, which hub 2.4.0
    does when two threads publish the first payloads into a fresh store at once (one
    removes the other's marker temporary in _ensure_shared_blobs_dir, or refuses the
    store it just marked): a library race, on any filesystem. Returns those files."""
    man = ctx.hub.repo(repo_id)
    unshared = []
    for p in paths or man["files"]:
        f = man["files"][p]
        link = ctx.storage(repo_id) / "snapshots" / man["sha"] / p
        blob = ctx.storage(repo_id) / "blobs" / f["etag"]
        if ctx.xet and f["xet_hash"] and not strict and stat.S_ISREG(os.lstat(blob).st_mode):
            unshared.append(p)
            assert os.path.realpath(link) == str(blob) and os.lstat(blob).st_size == f["size"], p
            continue
        assert os.path.realpath(link) == str(ctx.payload(repo_id, p)), (p, os.path.realpath(link))
        if ctx.xet and f["xet_hash"]:
            assert os.readlink(blob) == f"../../blobs/{f['xet_hash'][:2]}/{f['xet_hash']}", p
            st = os.lstat(ctx.payload(repo_id, p))
            assert stat.S_ISREG(st.st_mode) and st.st_size == f["size"], p
        else:
            assert stat.S_ISREG(os.lstat(blob).st_mode), p
    return unshared


def no_incomplete(ctx):
    left = [p for p in L.walk(ctx.hf_home) if p.endswith(".incomplete") or "/tmp_" in p]
    assert not left, f"leftover temporary files: {left}"


# ----------------------------------------------------------------------------------------
# 1. A downloads one file, then B snapshot_downloads the rest
# ----------------------------------------------------------------------------------------
@UMASKS
def test_1_download_then_snapshot(make_ctx, umask):
    ctx = make_ctx(umask)
    man = ctx.hub.repo(REPO_FLAT)
    a = ok(ctx.run(ctx.users.a, "download", REPO_FLAT, "config.json"))
    assert a["sha256"] == man["files"]["config.json"]["sha256"]

    rb = ctx.run(ctx.users.b, "snapshot", REPO_FLAT)

    if ctx.plain and umask == "022":
        pe = failed_with_permission_error(rb)
        if ctx.generation == "new":
            # hub 2.x: the storage folder exists (A's, 2755); B's first write is the lock file
            # of a blob it still needs, in A's .locks/models--... directory: the blog's error.
            missing = {f["etag"] for p, f in man["files"].items() if p != "config.json"}
            m = re.fullmatch(re.escape(ctx.lock_path(REPO_FLAT, "")[: -len(".lock")]) + r"([0-9a-f]+)\.lock",
                             pe["filename"] or "")
            # With Xet, the thread downloading a Xet file may come first: its symlink probe
            # for the shared blob store (mkdtemp in A's hub/, 2755) fails the same way.
            probe = ctx.xet and re.fullmatch(re.escape(str(ctx.hub_cache)) + r"/tmp\w+", pe["filename"] or "")
            assert (m and m.group(1) in missing) or probe, rb.describe()
        else:
            # hub 0.20 snapshot_download rewrites refs/main (A's file, 0644) before any download.
            assert pe["filename"] == str(ctx.storage(REPO_FLAT) / "refs" / "main"), rb.describe()
        # A's file is intact, nothing else got in
        assert blob_names(ctx, REPO_FLAT) == [man["files"]["config.json"]["etag"]]
        # The root cause: the directories A made are not group-writable. (A's own lock file
        # is 0664 with hub 1.x, which asks filelock 4 for that mode whatever the umask, and
        # 0644 with filelock 3.13, which forces it.)
        locks_dir = Path(ctx.lock_path(REPO_FLAT, "x")).parent
        assert stat.S_IMODE(os.stat(locks_dir).st_mode) == 0o2755
        a_lock = ctx.lock_path(REPO_FLAT, man["files"]["config.json"]["etag"])
        assert stat.S_IMODE(os.stat(a_lock).st_mode) == (0o664 if ctx.generation == "new" else 0o644)
        return

    # hfcachefs (any umask), plain with umask 002 (legitimately works for both generations)
    b = ok(rb)
    assert b["files"] == {p: f["sha256"] for p, f in man["files"].items()}
    assert Path(b["folder"]) == ctx.storage(REPO_FLAT) / "snapshots" / man["sha"]
    assert blob_names(ctx, REPO_FLAT) == sorted(f["etag"] for f in man["files"].values())
    assert (ctx.storage(REPO_FLAT) / "refs" / "main").read_text() == man["sha"]
    # and a dataset repo (/datasets/... URLs, datasets--org--name folder) the same way
    dman = ctx.hub.repo(DATASET_REPO, "dataset")
    ok(ctx.run(ctx.users.a, "download", DATASET_REPO, "data/train.jsonl", "--repo-type", "dataset"))
    d = ok(ctx.run(ctx.users.b, "snapshot", DATASET_REPO, "--repo-type", "dataset"))
    assert d["files"] == {p: f["sha256"] for p, f in dman["files"].items()}
    assert Path(d["folder"]) == ctx.storage(DATASET_REPO, "dataset") / "snapshots" / dman["sha"]
    no_incomplete(ctx)
    check_policy(ctx)


# ----------------------------------------------------------------------------------------
# 2. A and B download the same large file at the same moment
# ----------------------------------------------------------------------------------------
def check_single_download(ctx, ra, rb):
    """Both succeeded, with one blob, one GET, and B's request during A's download."""
    man = ctx.hub.repo(REPO_BIG)["files"]["big.bin"]
    blob = ctx.payload(REPO_BIG, "big.bin")
    a, b = ok(ra), ok(rb)
    assert a["sha256"] == b["sha256"] == man["sha256"]
    assert a["realpath"] == b["realpath"] == str(blob)
    assert blob_names(ctx, REPO_BIG) == [man["etag"]], "exactly one blob, no temporary file"
    check_payloads(ctx, REPO_BIG)
    assert os.stat(blob).st_size == BIG_SIZE
    assert L.sha256_path(blob) == man["sha256"]
    log = file_log(ctx, REPO_BIG, "big.bin")
    heads = log["head"]
    fetches = log["recon"] + log["xorb"] if ctx.xet else log["get"]
    # Both asked for the file while it was being downloaded...
    assert len(heads) == 2 and fetches, log
    assert max(h["start"] for h in heads) < max(g["end"] for g in fetches), f"no overlap: {log}"
    # ...and the lock made the second one wait for the first instead of downloading again.
    check_fetched_once(ctx, REPO_BIG, "big.bin")
    no_incomplete(ctx)
    check_policy(ctx)


@UMASKS
def test_2_concurrent_same_large_file(make_ctx, umask):
    """B asks for the file while A is downloading it (A holds the lock): the blog's test."""
    ctx = make_ctx(umask)
    man = ctx.hub.repo(REPO_BIG)["files"]["big.bin"]
    # A's GET stalls after 1 MiB until B's HEAD arrives: B surely asks mid-download.
    ctx.hub.hold("/big.bin", heads=2)
    pa = ctx.start(ctx.users.a, "download", REPO_BIG, "big.bin")
    # A takes the lock before its GET (Xet: before its xorb GETs): once that is under way, start B.
    def a_fetching(e):
        p = e["path"].split("?")[0]
        hit = xorb_range_of(man, e) if ctx.xet else p.endswith("/big.bin")
        return e["method"] == "GET" and hit and ctx.users.a.name in e["ua"]

    ctx.hub.wait_for(a_fetching, procs=[pa])
    pb = ctx.start(ctx.users.b, "download", REPO_BIG, "big.bin")
    ra, rb = pa.wait(), pb.wait()
    log = file_log(ctx, REPO_BIG, "big.bin")
    b_head = [e for e in log["head"] if ctx.users.b.name in e["ua"]]
    a_fetch = [e for e in log["get"] + log["xorb"] if ctx.users.a.name in e["ua"]]
    assert b_head and a_fetch and b_head[0]["start"] < max(e["end"] for e in a_fetch), \
        f"B did not ask during A's download: {log}"

    if ctx.plain and ctx.xet and umask == "022":
        # hub 2.x with Xet first probes symlink support for its shared blob store: a mkdtemp
        # in the cache root, A's hub/ (2755). B fails before it even reaches the lock.
        pe = failed_with_permission_error(rb)
        assert re.fullmatch(re.escape(str(ctx.hub_cache)) + r"/tmp\w+", pe["filename"] or ""), rb.describe()
        assert ok(ra)["sha256"] == man["sha256"]
        assert L.sha256_path(ctx.payload(REPO_BIG, "big.bin")) == man["sha256"]
        check_fetched_once(ctx, REPO_BIG, "big.bin", who=ctx.users.a.name)
        return
    if ctx.plain and ctx.generation == "old":
        # filelock 3.13 made A's lock file 0644 (whatever the umask): B cannot open it
        # O_RDWR. Exactly the seed's error; A's download is unaffected.
        pe = failed_with_permission_error(rb)
        assert pe["filename"] == ctx.lock_path(REPO_BIG, man["etag"]), rb.describe()
        assert stat.S_IMODE(os.stat(pe["filename"]).st_mode) == 0o644  # even with umask 002
        assert ok(ra)["sha256"] == man["sha256"]
        assert L.sha256_path(ctx.storage(REPO_BIG) / "blobs" / man["etag"]) == man["sha256"]
        return
    # hfcachefs (any generation, any umask). On plain, hub 1.x + filelock 4.x also get
    # through, even with umask 022: A already made every directory, and B (which only
    # needs to wait on A's lock, then finds the file) never writes.
    check_single_download(ctx, ra, rb)


@pytest.mark.parametrize("umask", ["022"])
def test_2b_simultaneous_start(make_ctx, umask):
    """A and B start at the very same moment into an empty cache: they race on mkdir too."""
    ctx = make_ctx(umask)
    man = ctx.hub.repo(REPO_BIG)["files"]["big.bin"]
    # The first GET waits for both HEADs (at most 20 s: a loser may fail before its HEAD).
    ctx.hub.hold("/big.bin", heads=2, timeout=20)
    pa = ctx.start(ctx.users.a, "download", REPO_BIG, "big.bin")
    pb = ctx.start(ctx.users.b, "download", REPO_BIG, "big.bin")
    ra, rb = pa.wait(), pb.wait()
    if ctx.plain:
        # Race-dependent: whoever creates hub/, the repo folder or .locks/... first owns it
        # 0755, and the other one fails on its first mkdir/create there (or, old generation,
        # on A's 0644 lock file). With hub 1.x the second one may also get through, when the
        # first already made every directory it needs. Never both fail; the blob is right.
        results = [ra, rb]
        winners = [r for r in results if r.ok]
        assert winners, "\n\n".join(r.describe() for r in results)
        for r in results:
            if not r.ok:
                pe = failed_with_permission_error(r)
                assert (pe["filename"] or "").startswith(str(ctx.hub_cache) + "/"), r.describe()
        if ctx.generation == "old":
            assert len(winners) == 1, "\n\n".join(r.describe() for r in results)
        for w in winners:
            assert ok(w)["sha256"] == man["sha256"]
        return
    check_single_download(ctx, ra, rb)


# ----------------------------------------------------------------------------------------
# 3. B deletes the revisions A downloaded
# ----------------------------------------------------------------------------------------
@UMASKS
def test_3_delete_revisions_of_another_user(make_ctx, umask):
    ctx = make_ctx(umask)
    man = ctx.hub.repo(REPO_NESTED)
    a = ok(ctx.run(ctx.users.a, "snapshot", REPO_NESTED))
    assert a["files"] == {p: f["sha256"] for p, f in man["files"].items()}
    assert "data/sub/deep.txt" in a["files"]
    snap = ctx.storage(REPO_NESTED) / "snapshots" / man["sha"]
    assert snap.is_dir()
    unshared = check_payloads(ctx, REPO_NESTED, strict=False)  # A's snapshot made the store
    payloads = [ctx.payload(REPO_NESTED, p) for p, f in man["files"].items()
                if ctx.xet and f["xet_hash"] and p not in unshared]
    assert all(p.is_file() for p in payloads)
    check_policy(ctx)

    rb = ctx.run(ctx.users.b, "delete-revisions", REPO_NESTED)
    # scan_cache_dir/delete_revisions().execute() log and swallow OSErrors: B's call
    # "succeeds" in every case; what matters is what is left on disk.
    b = ok(rb)
    assert b["deleted"] == [man["sha"]]

    if ctx.plain and umask == "022":
        # Documented silent failure: A's 0755 directories -> B can unlink nothing.
        assert b["revisions_left"] == [man["sha"]], rb.describe()
        assert snap.is_dir()
        assert blob_names(ctx, REPO_NESTED) == sorted(f["etag"] for f in man["files"].values())
        return

    assert b["revisions_left"] == [], rb.describe()
    assert not snap.exists()
    assert blob_names(ctx, REPO_NESTED) == []
    assert not (ctx.storage(REPO_NESTED) / "refs" / "main").exists()
    # hub 2.x also sweeps the shared payloads nothing links to any more
    assert not [p for p in payloads if os.path.lexists(p)], payloads
    check_policy(ctx)


# ----------------------------------------------------------------------------------------
# 4. The outsider is refused and writes nothing
# ----------------------------------------------------------------------------------------
def test_4_outsider_is_refused(make_ctx):
    ctx = make_ctx("022")
    man = ctx.hub.repo(REPO_FLAT)
    a = ok(ctx.run(ctx.users.a, "download", REPO_FLAT, "config.json"))
    before = {p: (st.st_uid, st.st_gid, st.st_mode) for p, st in L.walk(ctx.hf_home).items()}

    ro = ctx.run(ctx.users.outsider, "download", REPO_FLAT, "README.md")
    pe = failed_with_permission_error(ro)
    assert (pe["filename"] or "").startswith(str(ctx.hf_home)), ro.describe()
    rr = ctx.run(ctx.users.outsider, "read", a["realpath"])
    failed_with_permission_error(rr)

    after = {p: (st.st_uid, st.st_gid, st.st_mode) for p, st in L.walk(ctx.hf_home).items()}
    assert after == before, "the outsider changed the cache"
    roots = [ctx.hf_home] + ([ctx.backend.store] if not ctx.plain else [])
    for root in roots:
        owned = [p for p, st in L.walk(root).items() if st.st_uid == ctx.users.outsider.uid]
        assert not owned, f"entries owned by the outsider under {root}: {owned}"
    # and the member's file is still there and right
    assert L.sha256_path(a["realpath"]) == man["files"]["config.json"]["sha256"]
    check_policy(ctx)


# ----------------------------------------------------------------------------------------
# 5. datasets: A builds a cache from local JSON, B loads it and builds another
# ----------------------------------------------------------------------------------------
@UMASKS
@pytest.mark.parametrize("transport", ["http", "old"])  # local JSON: no download, Xet adds nothing
def test_5_datasets_cache_shared(make_ctx, umask, data_files):
    ctx = make_ctx(umask)
    a = ok(ctx.run(ctx.users.a, "dataset", data_files["train"]))
    assert a["num_rows"] == 100 and a["first"] == {"text": "row 0", "label": 0}
    assert all(p.startswith(str(ctx.hf_home / "datasets") + "/") for p in a["cache_files"]), a

    rb1 = ctx.run(ctx.users.b, "dataset", data_files["train"])
    rb2 = ctx.run(ctx.users.b, "dataset", data_files["other"])

    # datasets takes a builder lock `$HF_HOME/datasets/<escaped cache dir>.lock` first.
    def is_datasets_lock(r):
        pe = failed_with_permission_error(r)
        f = pe["filename"] or ""
        assert f.startswith(str(ctx.hf_home / "datasets") + "/_") and f.endswith(".lock"), r.describe()
        assert "/" not in f[len(str(ctx.hf_home / "datasets")) + 1:], r.describe()

    if ctx.plain and (umask == "022" or ctx.generation == "old"):
        # Loading A's dataset: A's builder lock is 0644 (umask 022; or filelock 3.13 forces it).
        is_datasets_lock(rb1)
    else:
        b1 = ok(rb1)
        assert b1["num_rows"] == 100
        assert b1["cache_files"] == a["cache_files"], "B should reuse A's arrow files"

    if ctx.plain and umask == "022":
        # Building a new one: A's datasets/ directory is 2755, B cannot create its lock there.
        is_datasets_lock(rb2)
    else:
        b2 = ok(rb2)
        assert b2["num_rows"] == 50 and b2["first"] == {"text": "other 0", "n": 0}
        assert b2["cache_files"] != a["cache_files"]
    check_policy(ctx)


# ----------------------------------------------------------------------------------------
# 6. transformers Auto*.from_pretrained and safetensors safe_open (mmap) through the cache
# ----------------------------------------------------------------------------------------
@UMASKS
def test_6_transformers_and_safetensors(make_ctx, umask, safetensors_asset, tiny_bert_vocab):
    ctx = make_ctx(umask)
    _, expected = safetensors_asset
    man = ctx.hub.repo(REPO_BERT)
    a = ok(ctx.run(ctx.users.a, "transformers", REPO_BERT, "--what", "config"))
    assert a["config"] == {"model_type": "bert", "hidden_size": 32, "vocab_size": len(tiny_bert_vocab)}
    sa = ok(ctx.run(ctx.users.a, "safe-open", REPO_BERT, "model.safetensors"))
    assert sa["tensors"] == expected
    # B reads (mmaps) A's blob: needs no write, fine on every backend.
    sb = ok(ctx.run(ctx.users.b, "safe-open", REPO_BERT, "model.safetensors"))
    assert sb["tensors"] == expected
    assert os.path.realpath(sb["path"]) == str(ctx.payload(REPO_BERT, "model.safetensors"))
    check_fetched_once(ctx, REPO_BERT, "model.safetensors", who=ctx.users.a.name)

    rt = ctx.run(ctx.users.b, "transformers", REPO_BERT, "--what", "tokenizer")
    if ctx.plain and umask == "022":
        # The tokenizer's first download (tokenizer_config.json) needs a lock file in A's
        # .locks/models--hfe2e--tiny-bert (2755). transformers 5 wraps it in an OSError.
        pe = failed_with_permission_error(rt)
        assert pe["filename"] == ctx.lock_path(REPO_BERT, man["files"]["tokenizer_config.json"]["etag"]), rt.describe()
        return
    t = ok(rt)
    words = ["[CLS]", "hello", "shared", "cache", "world", "[SEP]"]
    assert t["tokenizer"]["ids"] == [tiny_bert_vocab.index(w) for w in words]
    check_policy(ctx)


# ----------------------------------------------------------------------------------------
# 7. hfcachefs adopts an existing (broken) cache: store entries are reported by the policy
# ----------------------------------------------------------------------------------------
class _Dir:
    def __init__(self, path, name):
        self.hf_home = path
        self.name = name


@pytest.mark.parametrize("transport", ["xet", "old"])  # http's cache is old's layout with hub 2.x files
def test_7_existing_cache_is_adopted(users, hub, transport, user_script, workdir):
    """A filled a private-style cache with umask 022 (dirs 0755, files 0644, tree cache
    0600, lock files 0644). Copied into a store and mounted, B can use, extend and prune
    it. hfcachefs only: on `plain` this is scenario 1/3 with umask 022, which fail."""
    hub.reset_log()
    legacy = workdir / "legacy-hf-home"
    legacy.mkdir(mode=0o755)
    os.chown(legacy, users.a.uid, users.a.gid)
    old = Ctx(users, hub, _Dir(legacy, "plain"), transport, "022", user_script)
    man = hub.repo(REPO_FLAT)
    a = ok(old.run(users.a, "snapshot", REPO_FLAT))
    assert a["files"] == {p: f["sha256"] for p, f in man["files"].items()}
    # Sanity: the legacy cache really has the modes that break sharing.
    modes = {p: stat.S_IMODE(st.st_mode) for p, st in L.walk(legacy).items() if not stat.S_ISLNK(st.st_mode)}
    assert modes["hub"] == 0o755 and modes[f"hub/models--{REPO_FLAT.replace('/', '--')}/refs/main"] == 0o644, modes

    store = workdir / "store"
    L.sh(["cp", "-a", str(legacy), str(store)])  # keeps owners, modes, symlinks
    os.chown(store, 0, 0)
    be = L.HfcachefsBackend(workdir, users, store=store)
    try:
        ctx = Ctx(users, hub, be, transport, "022", user_script)
        check_policy(ctx)
        b = ok(ctx.run(users.b, "snapshot", REPO_FLAT))
        assert b["files"] == a["files"]
        nested = hub.repo(REPO_NESTED)
        b2 = ok(ctx.run(users.b, "snapshot", REPO_NESTED))
        assert b2["files"] == {p: f["sha256"] for p, f in nested["files"].items()}
        d = ok(ctx.run(users.b, "delete-revisions", REPO_FLAT))
        assert d["revisions_left"] == [], d
        assert blob_names(ctx, REPO_FLAT) == []
        ro = ctx.run(users.outsider, "snapshot", REPO_NESTED)
        failed_with_permission_error(ro)
        check_policy(ctx)
    except BaseException as e:
        raise AssertionError(f"{e}\n{be.log_tail()}") from e
    finally:
        be.stop()


# ----------------------------------------------------------------------------------------
# 8. Repos sharing payloads; proof that the Xet path is the one used
# ----------------------------------------------------------------------------------------
@UMASKS
@pytest.mark.parametrize("transport", ["xet", "http"])  # old downloads like http here
def test_8_repos_sharing_payloads(make_ctx, umask):
    """A snapshots REPO_FLAT; B snapshots REPO_COPY, whose model.bin has the bytes of A's
    model-00001 under another name. With Xet, hub 2.x links B's blob to the payload A's
    download put in the shared store (no transfer at all); over plain HTTP B downloads it
    again. Then B deletes REPO_FLAT: the shared payload must survive (REPO_COPY links it)."""
    ctx = make_ctx(umask)
    flat, copy = ctx.hub.repo(REPO_FLAT), ctx.hub.repo(REPO_COPY)
    shared = flat["files"]["model-00001-of-00002.bin"]
    assert copy["files"]["model.bin"]["sha256"] == shared["sha256"]
    assert copy["files"]["model.bin"]["xet_hash"] == shared["xet_hash"] is not None
    # One file first, so the shared store exists before the snapshot's parallel downloads
    # publish into it (see check_payloads: hub 2.4.0 races on a fresh store).
    ok(ctx.run(ctx.users.a, "download", REPO_FLAT, "model-00002-of-00002.bin"))
    a = ok(ctx.run(ctx.users.a, "snapshot", REPO_FLAT))
    assert a["files"] == {p: f["sha256"] for p, f in flat["files"].items()}
    # The transport really used, file by file: LFS files over Xet (reconstruction + exactly
    # one download's xorb bytes, no GET of /resolve) or one plain GET each.
    for p, f in flat["files"].items():
        check_fetched_once(ctx, REPO_FLAT, p, who=ctx.users.a.name)
    check_payloads(ctx, REPO_FLAT)
    log = ctx.hub.log()
    tokens = [e for e in log if "/xet-read-token/" in e["path"]]
    assert bool(tokens) == ctx.xet, tokens
    if ctx.xet:
        xh = shared["xet_hash"]
        store = ctx.hub_cache / "blobs"
        assert (store / ".huggingface-shared-blobs").is_file()
        assert sorted(os.listdir(store / xh[:2])) == sorted([xh, f"{xh}.lock", f"{xh}.refs"]) or \
            xh in os.listdir(store / xh[:2])
    ctx.hub.reset_log()

    rb = ctx.run(ctx.users.b, "snapshot", REPO_COPY)
    if ctx.plain and umask == "022":
        # B must create hub/models--hfe2e--model-copy in A's hub/ (2755).
        pe = failed_with_permission_error(rb)
        assert (pe["filename"] or "").startswith(str(ctx.hub_cache) + "/"), rb.describe()
        assert not ctx.storage(REPO_COPY).exists()
        return
    b = ok(rb)
    assert b["files"] == {p: f["sha256"] for p, f in copy["files"].items()}
    check_payloads(ctx, REPO_COPY)
    model_log = file_log(ctx, REPO_COPY, "model.bin")
    if ctx.xet:
        # shared: the very file A's download made, fetched by nobody
        assert ctx.payload(REPO_COPY, "model.bin") == ctx.payload(REPO_FLAT, "model-00001-of-00002.bin")
        assert not model_log["get"] and not model_log["recon"] and not model_log["xorb"], model_log
        check_fetched_once(ctx, REPO_COPY, "extra/part-0.bin", who=ctx.users.b.name)
    else:
        check_fetched_once(ctx, REPO_COPY, "model.bin", who=ctx.users.b.name)
        assert ctx.payload(REPO_COPY, "model.bin") != ctx.payload(REPO_FLAT, "model-00001-of-00002.bin")
    check_policy(ctx)

    # B removes A's repo: REPO_COPY still links the shared payload, which must stay.
    d = ok(ctx.run(ctx.users.b, "delete-revisions", REPO_FLAT))
    assert d["revisions_left"] == [], d
    assert not ctx.storage(REPO_FLAT).joinpath("snapshots", flat["sha"]).exists()
    payload = ctx.payload(REPO_COPY, "model.bin")
    assert L.sha256_path(payload) == shared["sha256"]
    r = ok(ctx.run(ctx.users.a, "download", REPO_COPY, "model.bin"))
    assert r["sha256"] == shared["sha256"] and r["realpath"] == str(payload)
    if ctx.xet:  # the payload only REPO_FLAT used is gone
        other = ctx.payload(REPO_FLAT, "model-00002-of-00002.bin")
        assert not os.path.lexists(other), other
    no_incomplete(ctx)
    check_policy(ctx)


# ----------------------------------------------------------------------------------------
# 9. `hf cache ls / verify / prune / rm` by another member (hub 2.x CLI)
# ----------------------------------------------------------------------------------------
@UMASKS
@pytest.mark.parametrize("transport", ["xet", "http"])  # the `hf` CLI is hub >= 1.0
def test_9_hf_cache_cli_by_another_member(make_ctx, umask):
    """A snapshots REPO_NESTED (refs/main) and downloads two files of REPO_FLAT by commit
    hash (a detached revision: no ref). B lists, verifies, prunes (the detached revision)
    and removes (REPO_NESTED) A's downloads with the `hf` CLI."""
    ctx = make_ctx(umask)
    nested, flat = ctx.hub.repo(REPO_NESTED), ctx.hub.repo(REPO_FLAT)
    ok(ctx.run(ctx.users.a, "snapshot", REPO_NESTED))
    for p in ("config.json", "model-00002-of-00002.bin"):
        ok(ctx.run(ctx.users.a, "download", REPO_FLAT, p, "--revision", flat["sha"]))
    assert not (ctx.storage(REPO_FLAT) / "refs").exists() or not os.listdir(ctx.storage(REPO_FLAT) / "refs")
    unshared = check_payloads(ctx, REPO_NESTED, strict=False)
    payloads = [ctx.payload(r, p) for r, p in ((REPO_NESTED, "weights/part-0.bin"),
                                               (REPO_FLAT, "model-00002-of-00002.bin"))
                if not (r == REPO_NESTED and p in unshared)]
    payloads += [ctx.storage(REPO_NESTED) / "blobs" / nested["files"][p]["etag"] for p in unshared]
    assert all(p.is_file() for p in payloads)

    import json as _json

    ls = ok(ctx.run(ctx.users.b, "cli", "cache", "ls", "--revisions", "--format", "json"))
    listed = _json.loads(ls["stdout"])
    assert {e["repo_id"] for e in listed} == {REPO_NESTED, REPO_FLAT}, ls
    v = ok(ctx.run(ctx.users.b, "cli", "cache", "verify", REPO_NESTED))
    assert f"Verified {len(nested['files'])} file(s)" in v["stdout"], v

    rp = ctx.run(ctx.users.b, "cli", "cache", "prune", "--yes")
    rr = ctx.run(ctx.users.b, "cli", "cache", "rm", f"model/{REPO_NESTED}", "--yes")
    if ctx.plain and umask == "022":
        # A's directories are 2755: B can unlink nothing. Whatever the CLI says, all stays.
        assert (ctx.storage(REPO_FLAT) / "snapshots" / flat["sha"]).is_dir(), rp.describe()
        assert (ctx.storage(REPO_NESTED) / "snapshots" / nested["sha"]).is_dir(), rr.describe()
        assert all(p.is_file() for p in payloads)
        return
    ok(rp)
    ok(rr)
    for rid, man in ((REPO_FLAT, flat), (REPO_NESTED, nested)):
        assert not (ctx.storage(rid) / "snapshots" / man["sha"]).exists(), rid
    left = [p for p in payloads if os.path.lexists(p)]
    assert not left, f"payloads left behind: {left}"
    ls2 = ok(ctx.run(ctx.users.b, "cli", "cache", "ls", "--format", "json"))
    assert _json.loads(ls2["stdout"]) == [], ls2
    no_incomplete(ctx)
    check_policy(ctx)
