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
        {"id": "org/x", "xet": True, "files": [
            {"path": "README.md", "text": "# xet\n"},
            {"path": "w.bin", "size": 3_000_000, "seed": 3, "lfs": True},
            {"path": "u.bin", "size": 2_500_000, "seed": 4, "lfs": True, "unique": True},
        ]},
        {"id": "org/x2", "type": "dataset", "xet": True, "files": [
            {"path": "same.bin", "size": 3_000_000, "seed": 3, "lfs": True},
        ]},
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


# ----------------------------------------------------------------------------------------
# Xet: headers, token, CAS (checked with hf_xet itself, which this driver venv has)
# ----------------------------------------------------------------------------------------
def test_xet_resolve_headers_and_token(fhub):
    m = fhub.repo("org/x")
    w = m["files"]["w.bin"]
    assert w["xet_hash"] and len(w["xet_hash"]) == 64 and m["files"]["README.md"]["xet_hash"] is None
    assert fhub.repo("org/x2", "dataset")["files"]["same.bin"]["xet_hash"] == w["xet_hash"]  # same bytes
    st, h, _ = req(fhub, "/org/x/resolve/main/w.bin", "HEAD")
    assert st == 200 and h["X-Xet-Hash"] == w["xet_hash"] and h["ETag"] == f'"{w["sha256"]}"'
    assert h["X-Linked-Size"] == "3000000" and h["X-Linked-Etag"] == f'"{w["sha256"]}"'
    token_url = f"{fhub.url}/api/models/org/x/xet-read-token/{m['sha']}"
    assert h["Link"] == f'<{token_url}>; rel="xet-auth"'
    st, h, _ = req(fhub, "/org/x/resolve/main/README.md", "HEAD")
    assert "X-Xet-Hash" not in h
    st, h, body = req(fhub, token_url[len(fhub.url):])
    assert st == 200 and h["X-Xet-Cas-Url"] == fhub.url + "/cas" and h["X-Xet-Access-Token"]
    assert int(h["X-Xet-Token-Expiration"]) > 0 and json.loads(body)["accessToken"] == h["X-Xet-Access-Token"]
    st, _, _ = req(fhub, "/api/datasets/org/x2/xet-read-token/main")
    assert st == 200
    st, h, _ = req(fhub, "/api/models/org/nope/xet-read-token/main")
    assert st == 404 and h["X-Error-Code"] == "RepoNotFound"
    tree = json.loads(req(fhub, f"/api/models/org/x/tree/{m['sha']}")[2])
    assert {e["path"]: e.get("xetHash") for e in tree}["w.bin"] == w["xet_hash"]


def test_xet_cas_answers(fhub):
    import fake_hub

    f = fhub.repo("org/x")["files"]["u.bin"]
    auth = {"Authorization": f"Bearer {fake_hub.XET_TOKEN}"}
    path = f"/cas/v2/reconstructions/{f['xet_hash']}"
    assert req(fhub, path)[0] == 401
    st, _, body = req(fhub, path, headers={**auth, "Range": "bytes=0-2499999"})
    v2 = json.loads(body)
    assert st == 200 and v2["offset_into_first_range"] == 0
    assert sum(t["unpacked_length"] for t in v2["terms"]) == f["size"]
    st, _, body = req(fhub, f"/cas/v1/reconstructions/{f['xet_hash']}", headers={**auth, "Range": "bytes=1000000-1000009"})
    v1 = json.loads(body)
    assert st == 200 and len(v1["terms"]) >= 1 and v1["offset_into_first_range"] > 0
    assert sum(t["unpacked_length"] for t in v1["terms"]) - v1["offset_into_first_range"] >= 10
    assert req(fhub, path, headers={**auth, "Range": "bytes=2500000-"})[0] == 416
    xorb, infos = next(iter(v1["fetch_info"].items()))
    r = infos[0]["url_range"]
    st, h, part = req(fhub, f"/cas/xorbs/default/{xorb}", headers={"Range": f"bytes={r['start']}-{r['end']}"})
    assert st == 206 and len(part) == r["end"] - r["start"] + 1
    assert h["Content-Range"].startswith(f"bytes {r['start']}-{r['end']}/")
    assert part[0] == 0 and int.from_bytes(part[5:8], "little") > 0  # a chunk header starts the range
    assert req(fhub, f"/cas/xorbs/default/{xorb}")[0] == 416  # xorbs only by range
    assert req(fhub, f"/cas/xorbs/default/{'0' * 64}", headers={"Range": "bytes=0-1"})[0] == 404


def xet_download(fhub, f, dest, start=None, end=None):
    import time

    import fake_hub
    import hf_xet

    s = hf_xet.XetSession()
    if start is None:
        with s.new_file_download_group(endpoint=fhub.url + "/cas", token=fake_hub.XET_TOKEN,
                                       token_expiry_unix_secs=int(time.time()) + 600) as g:
            g.start_download_file(hf_xet.XetFileInfo(f["xet_hash"], f["size"]), str(dest))
        return dest.read_bytes()
    g = s.new_download_stream_group(endpoint=fhub.url + "/cas", token=fake_hub.XET_TOKEN,
                                    token_expiry_unix_secs=int(time.time()) + 600)
    return b"".join(g.download_stream(hf_xet.XetFileInfo(f["xet_hash"], f["size"]), start=start, end=end))


@pytest.mark.parametrize("v2", [True, False])
def test_xet_hf_xet_downloads_from_the_fake_cas(fhub, tmp_path, v2):
    """hf_xet 1.8 itself reconstructs the files (whole and a range), over V2 or (V2 answering
    404) the V1 fallback; the bytes are the ones /resolve serves."""
    fhub._post(f"/_control/xet?v2={int(v2)}")
    try:
        fhub.reset_log()
        for name in ("w.bin", "u.bin"):
            f = fhub.repo("org/x")["files"][name]
            got = xet_download(fhub, f, tmp_path / name)
            assert hashlib.sha256(got).hexdigest() == f["sha256"], name
        f = fhub.repo("org/x")["files"]["u.bin"]
        full = req(fhub, "/org/x/resolve/main/u.bin")[2]
        assert xet_download(fhub, f, None, 1_234_567, 1_334_567) == full[1_234_567:1_334_567]
        log = fhub.log()
        recon = [e for e in log if "/reconstructions/" in e["path"]]
        assert recon and all(e["range"] for e in recon)
        if v2:
            assert all("/v2/" in e["path"] and e["status"] == 200 for e in recon)
        else:
            assert any("/v2/" in e["path"] and e["status"] == 404 for e in recon)
            assert any("/v1/" in e["path"] and e["status"] == 200 for e in recon)
        xorbs = [e for e in log if e["path"].startswith("/cas/xorbs/")]
        assert xorbs and all(e["status"] == 206 and e["range"] for e in xorbs)
        assert not [e for e in log if "/resolve/" in e["path"] and e["path"].endswith(("w.bin", "u.bin"))
                    and e["path"] != "/org/x/resolve/main/u.bin"]
    finally:
        fhub._post("/_control/xet?v2=1")


def test_xet_shard_parser_matches_hf_xet_hashes(fhub):
    """The shards parsed by the fake CAS name the same file hashes hf_xet computes locally."""
    import hf_xet

    import fake_hub

    store = fake_hub.XetStore(str(fhub.xet_dir))
    f = fhub.repo("org/x")["files"]["u.bin"]
    assert store.file_size(f["xet_hash"]) == f["size"]
    src = fake_hub.GeneratedSource(2_500_000, 4, unique=True)
    p = fhub.xet_dir.parent / "u.bin"
    p.write_bytes(src.read(0, src.size))
    assert hf_xet.hash_files([str(p)])[0].hash == f["xet_hash"]
