"""Fixtures for the hfcachefs end-to-end tests (run as root by tests/e2e/run.sh).

A missing prerequisite (not root, no venvs, no /dev/fuse, no hfcachefs binary) is a test
failure or error, never a skip.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

import pytest

import e2e_lib as L
import fake_hub

# The big file two users download at the same moment, and the per-connection rate of the
# fake hub: ~4 s for the big file, so the users overlap. Override for heavier runs.
BIG_SIZE = int(os.environ.get("HFE2E_BIG_MB", "64")) << 20
THROTTLE = int(os.environ.get("HFE2E_THROTTLE_MB", "16")) << 20


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    if rep.failed:
        be = item.funcargs.get("backend") if hasattr(item, "funcargs") else None
        if be is not None and hasattr(be, "log_tail"):
            rep.sections.append(("hfcachefs log", be.log_tail()))
    return rep


# ----------------------------------------------------------------------------------------
# Session-wide
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope="session", autouse=True)
def prerequisites():
    problems = []
    if os.geteuid() != 0:
        problems.append("the e2e tests must run as root (they create users and mount)")
    for gen, venv in L.VENVS.items():
        if not (venv / "bin" / "python").exists():
            problems.append(f"{venv} is missing: run scripts/setup-e2e.sh")
    for tool in ("/usr/bin/setpriv", "/usr/sbin/useradd", "/usr/sbin/groupadd"):
        if not os.access(tool, os.X_OK):
            problems.append(f"{tool} is missing")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def workbase():
    base = Path(f"/tmp/hfe2e-{secrets.token_hex(4)}")
    base.mkdir(mode=0o755)
    os.chmod(base, 0o755)  # test users must traverse it
    yield base
    if os.environ.get("HFE2E_KEEP"):
        print(f"\nkeeping {base}")
        return
    with open("/proc/self/mountinfo") as f:
        if any(f" {base}/" in line for line in f):
            print(f"\nnot removing {base}: something is still mounted under it")
            return
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def users(workbase):
    u = L.create_users(workbase)
    yield u
    u.remove()


@pytest.fixture(scope="session")
def user_script(workbase):
    # Root's home is 0700: copy what the users run to a world-readable place.
    return L.make_world_readable_copy(L.HERE / "hf_user.py", workbase / "bin")


@pytest.fixture(scope="session")
def safetensors_asset(workbase):
    """A real .safetensors file (made with the safetensors library) and what it holds."""
    import numpy as np
    from safetensors.numpy import save_file

    assets = workbase / "assets"
    assets.mkdir(mode=0o755)
    tensors = {
        "embeddings.word_embeddings.weight": (np.arange(158 * 32, dtype=np.float32).reshape(158, 32) / 1024),
        "encoder.big": np.linspace(0.0, 1.0, 1024 * 1024, dtype=np.float32).reshape(1024, 1024),
        "pooler.dense.bias": np.full((32,), 0.5, dtype=np.float32),
    }
    path = assets / "model.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    os.chmod(path, 0o644)
    expected = {
        k: {"shape": list(v.shape), "dtype": str(v.dtype), "sum": float(v.astype(np.float64).sum()),
            "last": float(v.reshape(-1)[-1])}
        for k, v in tensors.items()
    }
    return path, expected


@pytest.fixture(scope="session")
def data_files(workbase):
    d = workbase / "data"
    d.mkdir(mode=0o755)
    train = d / "train.jsonl"
    train.write_text("".join(json.dumps({"text": f"row {i}", "label": i % 2}) + "\n" for i in range(100)))
    other = d / "other.jsonl"
    other.write_text("".join(json.dumps({"text": f"other {i}", "n": i}) + "\n" for i in range(50)))
    for p in (train, other):
        os.chmod(p, 0o644)
    return {"train": train, "other": other}


REPO_FLAT = "hfe2e/shared-model"
REPO_NESTED = "hfe2e/nested-model"
REPO_BIG = "hfe2e/big-model"
REPO_BERT = "hfe2e/tiny-bert"
REPO_COPY = "hfe2e/model-copy"  # shares payloads with REPO_FLAT and REPO_NESTED
DATASET_REPO = "hfe2e/small-dataset"
REPO_GATED = "hfe2e/gated-model"  # only the hub account "alice" may read it (test_secrets.py)


@pytest.fixture(scope="session")
def hub(workbase, safetensors_asset):
    st_path, _ = safetensors_asset
    # Model repos are Xet-enabled as on today's Hub: their LFS files are Xet-backed (the
    # HEAD carries X-Xet-Hash). hub 2.x + hf_xet follows that; HF_HUB_DISABLE_XET=1 and hub
    # 0.20 ignore it and GET /resolve as before: one hub serves every transport.
    spec = {
        "repos": [
            {   # scenario 1 and 4: all files at the top level
                "id": REPO_FLAT,
                "xet": True,
                "files": [
                    {"path": "config.json", "text": json.dumps({"model_type": "bert", "hidden_size": 32}) + "\n"},
                    {"path": "README.md", "text": "# shared model\n\nFor the hfcachefs e2e tests.\n"},
                    {"path": "tokenizer.json", "size": 40_000, "seed": 5},
                    {"path": "model-00001-of-00002.bin", "size": 3_000_000, "seed": 6, "lfs": True},
                    {"path": "model-00002-of-00002.bin", "size": 1_000_000, "seed": 7, "lfs": True},
                ],
            },
            {   # scenario 3: subdirectories in the tree
                "id": REPO_NESTED,
                "xet": True,
                "files": [
                    {"path": "config.json", "text": '{"model_type": "bert"}\n'},
                    {"path": "weights/part-0.bin", "size": 1_500_000, "seed": 20, "lfs": True},
                    {"path": "weights/part-1.bin", "size": 700_000, "seed": 21, "lfs": True},
                    {"path": "tokenizer/vocab.txt", "text": "[PAD]\n[UNK]\nhello\n"},
                    {"path": "data/sub/deep.txt", "size": 5_000, "seed": 22},
                ],
            },
            # unique: no repeated 1 MiB block, so Xet really transfers BIG_SIZE bytes
            {"id": REPO_BIG, "xet": True,
             "files": [{"path": "big.bin", "size": BIG_SIZE, "seed": 1, "lfs": True, "unique": True}]},
            {   # scenario 6: a real (tiny) BERT config + WordPiece tokenizer + safetensors
                "id": REPO_BERT,
                "xet": True,
                "preset": "tiny-bert",
                "files": [{"path": "model.safetensors", "local": str(st_path), "lfs": True}],
            },
            {   # scenario 8: the same bytes as two files of REPO_FLAT and REPO_NESTED, other names
                "id": REPO_COPY,
                "xet": True,
                "files": [
                    {"path": "config.json", "text": json.dumps({"model_type": "bert", "copy": True}) + "\n"},
                    {"path": "model.bin", "size": 3_000_000, "seed": 6, "lfs": True},
                    {"path": "extra/part-0.bin", "size": 1_500_000, "seed": 20, "lfs": True},
                ],
            },
            {"id": DATASET_REPO, "type": "dataset", "files": [
                {"path": "data/train.jsonl", "text": '{"a": 1}\n{"a": 2}\n'},
                {"path": "data/test.jsonl", "text": '{"a": 3}\n'},
                {"path": "README.md", "text": "---\nlicense: mit\n---\n"},
            ]},
            {"id": REPO_GATED, "gated": ["alice"], "files": [
                {"path": "config.json", "text": '{"model_type": "bert", "gated": true}\n'},
                {"path": "weights.bin", "size": 200_000, "seed": 30, "lfs": True},
            ]},
        ],
        "accounts": ["alice", "bob"],
    }
    h = L.FakeHub(spec, workbase, THROTTLE)
    yield h
    h.stop()


# ----------------------------------------------------------------------------------------
# Per test
# ----------------------------------------------------------------------------------------
@pytest.fixture
def workdir(workbase):
    wd = workbase / f"t-{secrets.token_hex(4)}"
    wd.mkdir(mode=0o755)
    os.chmod(wd, 0o755)
    return wd


@pytest.fixture(params=["plain", "hfcachefs"])
def backend(request, workbase, users):
    wd = workbase / f"t-{secrets.token_hex(4)}"
    wd.mkdir(mode=0o755)
    os.chmod(wd, 0o755)
    if request.param == "plain":
        be = L.PlainBackend(wd, users)
    else:
        be = L.HfcachefsBackend(wd, users)
    yield be
    be.stop()


@pytest.fixture(params=list(L.TRANSPORTS))
def transport(request):
    """xet (hub 2.x + hf_xet), http (hub 2.x, HF_HUB_DISABLE_XET=1), old (hub 0.20)."""
    return request.param


@pytest.fixture
def generation(transport):
    return L.TRANSPORTS[transport][0]


class Ctx:
    """Everything one test needs: run code as a user, inspect the cache."""

    def __init__(self, users, hub, backend, transport, umask, script):
        self.users = users
        self.hub = hub
        self.backend = backend
        self.transport = transport
        self.generation, self.xet = L.TRANSPORTS[transport]
        self.umask = umask
        self.script = script
        self.hf_home = Path(backend.hf_home)
        self.hub_cache = self.hf_home / "hub"

    @property
    def plain(self) -> bool:
        return self.backend.name == "plain"

    def start(self, user, *args, umask=None, env=None) -> L.UserProc:
        env = L.user_env(user, str(self.hf_home), self.hub.url, env, xet=self.xet)
        return L.UserProc(user, self.generation, self.script, [str(a) for a in args], env, umask or self.umask)

    def run(self, user, *args, umask=None, env=None, timeout=180) -> L.Result:
        return self.start(user, *args, umask=umask, env=env).wait(timeout)

    def storage(self, repo_id: str, repo_type: str = "model") -> Path:
        return self.hub_cache / f"{repo_type}s--{repo_id.replace('/', '--')}"

    def lock_path(self, repo_id: str, etag: str, repo_type: str = "model") -> str:
        return str(self.hub_cache / ".locks" / f"{repo_type}s--{repo_id.replace('/', '--')}" / f"{etag}.lock")

    def payload(self, repo_id: str, path: str, repo_type: str = "model") -> Path:
        """Where a file's bytes end up: with Xet (hub 2.x shared blob store) the payload
        hub/blobs/<2 hex>/<xet hash>, which the repo's blobs/<etag> symlink points to;
        otherwise blobs/<etag> itself."""
        f = self.hub.repo(repo_id, repo_type)["files"][path]
        if self.xet and f["xet_hash"]:
            return self.hub_cache / "blobs" / f["xet_hash"][:2] / f["xet_hash"]
        return self.storage(repo_id, repo_type) / "blobs" / f["etag"]


@pytest.fixture
def make_ctx(users, hub, backend, transport, user_script):
    hub.reset_log()

    def make(umask: str) -> Ctx:
        return Ctx(users, hub, backend, transport, umask, user_script)

    return make


@pytest.fixture
def tiny_bert_vocab():
    for f in fake_hub.tiny_bert_files():
        if f["path"] == "vocab.txt":
            return f["text"].splitlines()
    raise AssertionError("no vocab")
