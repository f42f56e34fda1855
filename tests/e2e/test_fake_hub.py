"""The fake hub itself: headers and JSON that huggingface_hub relies on (no users, no mounts)."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request

import pytest

import e2e_lib as L

SPEC = {
    "repos": [
        {"id": "org/m", "files": [
            {"path": "a.txt", "text": "hello\n"},
            {"path": "sub/dir/big.bin", "size": 3_000_000, "seed": 3, "lfs": True},
        ]},
        {"id": "org/s", "type": "space", "files": [{"path": "app.py", "text": "print(1)\n"}]},
    ]
}


@pytest.fixture(scope="module")
def fhub(workbase):
    d = workbase / "fake-hub-selftest"
    d.mkdir()
    h = L.FakeHub(SPEC, d, 0)
    yield h
    h.stop()


def req(h, path, method="GET", headers=None):
    r = urllib.request.Request(h.url + path, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_regular_file_head_and_get(fhub):
    m = fhub.repo("org/m")
    st, h, body = req(fhub, "/org/m/resolve/main/a.txt", "HEAD")
    assert st == 200 and body == b""
    sha1 = hashlib.sha1(b"blob 6\0hello\n").hexdigest()
    assert h["ETag"] == f'"{sha1}"' and h["X-Repo-Commit"] == m["sha"] and h["Content-Length"] == "6"
    assert "X-Linked-Etag" not in h
    st, h, body = req(fhub, f"/org/m/resolve/{m['sha']}/a.txt")
    assert (st, body) == (200, b"hello\n")


def test_lfs_file_headers_and_ranges(fhub):
    f = fhub.repo("org/m")["files"]["sub/dir/big.bin"]
    st, h, _ = req(fhub, "/org/m/resolve/main/sub/dir/big.bin", "HEAD")
    assert h["X-Linked-Etag"] == f'"{f["sha256"]}"' and h["X-Linked-Size"] == "3000000"
    assert h["Accept-Ranges"] == "bytes"
    st, _, full = req(fhub, "/org/m/resolve/main/sub/dir/big.bin")
    assert st == 200 and hashlib.sha256(full).hexdigest() == f["sha256"]
    st, h, part = req(fhub, "/org/m/resolve/main/sub/dir/big.bin", headers={"Range": "bytes=1048570-"})
    assert st == 206 and part == full[1048570:] and h["Content-Range"] == "bytes 1048570-2999999/3000000"
    st, _, part = req(fhub, "/org/m/resolve/main/sub/dir/big.bin", headers={"Range": "bytes=10-19"})
    assert st == 206 and part == full[10:20]


def test_errors_carry_hub_error_codes(fhub):
    m = fhub.repo("org/m")
    st, h, _ = req(fhub, "/org/m/resolve/main/nope.txt", "HEAD")
    assert st == 404 and h["X-Error-Code"] == "EntryNotFound" and h["X-Repo-Commit"] == m["sha"]
    st, h, _ = req(fhub, "/org/nope/resolve/main/a.txt")
    assert st == 404 and h["X-Error-Code"] == "RepoNotFound"
    st, h, _ = req(fhub, "/org/m/resolve/v9/a.txt")
    assert st == 404 and h["X-Error-Code"] == "RevisionNotFound"


def test_api_info_and_tree(fhub):
    m = fhub.repo("org/m")
    for path in ("/api/models/org/m", "/api/models/org/m/revision/main"):
        st, _, body = req(fhub, path)
        info = json.loads(body)
        assert info["id"] == "org/m" and info["sha"] == m["sha"]
        assert sorted(s["rfilename"] for s in info["siblings"]) == ["a.txt", "sub/dir/big.bin"]
    st, _, body = req(fhub, f"/api/models/org/m/tree/{m['sha']}?recursive=True")
    tree = json.loads(body)
    assert {e["path"]: e["type"] for e in tree} == {
        "sub": "directory", "sub/dir": "directory", "a.txt": "file", "sub/dir/big.bin": "file"}
    lfs = [e for e in tree if e["path"] == "sub/dir/big.bin"][0]["lfs"]
    assert lfs["oid"] == m["files"]["sub/dir/big.bin"]["sha256"] and lfs["size"] == 3_000_000
    st, _, body = req(fhub, "/api/models/org/m/tree/main/sub")
    assert [e["path"] for e in json.loads(body)] == ["sub/dir"]
    st, h, _ = req(fhub, "/api/models/org/m/tree/main/missing")
    assert st == 404 and h["X-Error-Code"] == "EntryNotFound"


def test_space_prefix(fhub):
    st, _, body = req(fhub, "/spaces/org/s/resolve/main/app.py")
    assert (st, body) == (200, b"print(1)\n")
    st, _, body = req(fhub, "/api/spaces/org/s")
    assert json.loads(body)["id"] == "org/s"
    st, _, _ = req(fhub, "/org/s/resolve/main/app.py")  # not a model repo
    assert st == 404


# ----------------------------------------------------------------------------------------
# Accounts and gated repos
# ----------------------------------------------------------------------------------------
GATED_SPEC = {
    "repos": [{"id": "org/gated", "gated": ["alice"], "files": [{"path": "w.bin", "text": "secret weights\n"}]},
              {"id": "org/open", "files": [{"path": "a.txt", "text": "hi\n"}]}],
    "accounts": ["alice", "bob"],
}


@pytest.fixture(scope="module")
def ghub(workbase):
    d = workbase / "fake-hub-gated-selftest"
    d.mkdir()
    h = L.FakeHub(GATED_SPEC, d, 0)
    yield h
    h.stop()


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_whoami_names_the_tokens_account(ghub):
    st, _, body = req(ghub, "/api/whoami-v2", headers=bearer("hf_alice_work_0123"))
    info = json.loads(body)
    assert st == 200 and info["name"] == "alice" and info["orgs"] == []
    assert info["auth"]["accessToken"] == {"displayName": "alice-work", "role": "write",
                                           "createdAt": info["auth"]["accessToken"]["createdAt"]}
    st, _, body = req(ghub, "/api/whoami-v2", headers=bearer("hf_bob_read_99"))
    assert st == 200 and json.loads(body)["auth"]["accessToken"]["role"] == "read"
    for h in ({}, bearer("hf_carol_work_1"), bearer("nonsense")):
        st, _, _ = req(ghub, "/api/whoami-v2", headers=h)
        assert st == 401, h


def test_gated_repo_answers_only_its_accounts(ghub):
    for path, method in (("/org/gated/resolve/main/w.bin", "HEAD"), ("/org/gated/resolve/main/w.bin", "GET"),
                         ("/api/models/org/gated", "GET"), ("/api/models/org/gated/tree/main", "GET")):
        st, h, _ = req(ghub, path, method, bearer("hf_alice_work_1"))
        assert st == 200, (path, method)
        st, h, _ = req(ghub, path, method, bearer("hf_bob_work_1"))
        assert st == 403 and h["X-Error-Code"] == "GatedRepo" and "authorized list" in h["X-Error-Message"]
        st, h, _ = req(ghub, path, method)
        assert st == 401 and h["X-Error-Code"] == "GatedRepo"
        st, h, _ = req(ghub, path, method, bearer("hf_mallory_x_1"))
        assert st == 401 and h["X-Error-Message"] == "Invalid credentials in Authorization header"
    st, _, body = req(ghub, "/org/gated/resolve/main/w.bin", headers=bearer("hf_alice_read_2"))
    assert body == b"secret weights\n"
    st, _, body = req(ghub, "/api/models/org/gated", headers=bearer("hf_alice_read_2"))
    assert json.loads(body)["gated"] == "manual"
    st, _, _ = req(ghub, "/org/open/resolve/main/a.txt", headers=bearer("hf_bob_work_1"))
    assert st == 200
    accounts = {e["account"] for e in ghub.log() if e["path"].startswith("/org/gated/")}
    assert accounts == {"alice", "bob", None, "?"}
