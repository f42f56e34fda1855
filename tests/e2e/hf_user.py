#!/usr/bin/env python3
"""What one unprivileged test user runs: one Hugging Face action, one JSON result line.

Run by tests/e2e/test_shared_cache.py as a throw-away user (setpriv, with its own umask)
under /opt/hfcachefs-e2e/venv-{new,old}/bin/python, with HF_HOME on the backend under
test and HF_ENDPOINT on the fake hub. Works with huggingface_hub 2.x (with or without
hf_xet: HF_HUB_DISABLE_XET) and 0.20.x; `cli` needs hub >= 1.0.

The last stdout line is `HFE2E_RESULT {json}` with at least:
  ok          bool: the action completed
  result      action-specific data (on success)
  exc_type, exc_message, errno, filename   the exception raised (on failure)
  permission_error   the first PermissionError found in the exception chain
                     (type, errno, filename, message), or null
  traceback   formatted traceback (on failure)
  versions    huggingface_hub / filelock versions
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import traceback

MARK = "HFE2E_RESULT "


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(4 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _ua(args) -> dict:
    return {"hfe2e-user": args.who}


def act_download(args):
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(args.repo, args.file, repo_type=args.repo_type, revision=getattr(args, "revision", None),
                           user_agent=_ua(args))
    return {"path": path, "realpath": os.path.realpath(path), "sha256": sha256_file(path)}


def act_snapshot(args):
    from huggingface_hub import snapshot_download

    folder = snapshot_download(args.repo, repo_type=args.repo_type, revision=getattr(args, "revision", None),
                               user_agent=_ua(args), local_files_only=args.local_files_only)
    files = {}
    for root, _dirs, names in os.walk(folder):
        for n in names:
            p = os.path.join(root, n)
            files[os.path.relpath(p, folder)] = sha256_file(p)
    return {"folder": folder, "files": files}


def act_scan(args):
    """scan_cache_dir() of HF_HOME's hub cache: its warnings, and per repo each revision
    with its refs and, per file, whether its snapshot link resolves to a file."""
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir()
    repos = {}
    for r in info.repos:
        repos[r.repo_id] = [
            {"commit": rev.commit_hash, "refs": sorted(rev.refs),
             "files": {str(f.file_path.relative_to(rev.snapshot_path)): os.path.isfile(os.path.realpath(f.file_path))
                       for f in rev.files}}
            for rev in r.revisions
        ]
    return {"warnings": [str(w) for w in info.warnings], "repos": repos}


def act_delete_revisions(args):
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir()
    repos = [r for r in info.repos if r.repo_id == args.repo]
    if not repos:
        raise LookupError(f"{args.repo} not found in cache; warnings={info.warnings!r}")
    revs = sorted(rev.commit_hash for r in repos for rev in r.revisions)
    strategy = info.delete_revisions(*revs)
    strategy.execute()
    after = scan_cache_dir()
    left = sorted(rev.commit_hash for r in after.repos if r.repo_id == args.repo for rev in r.revisions)
    return {
        "deleted": revs,
        "expected_freed_size": strategy.expected_freed_size,
        "revisions_left": left,
        "warnings": [str(w) for w in after.warnings],
    }


def act_dataset(args):
    import datasets

    ds = datasets.load_dataset("json", data_files=args.data_file, split="train")
    return {
        "num_rows": ds.num_rows,
        "columns": ds.column_names,
        "first": ds[0],
        "cache_files": [c["filename"] for c in ds.cache_files],
        "datasets_version": datasets.__version__,
    }


def act_transformers(args):
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    out = {"transformers_version": transformers.__version__}
    if args.what in ("config", "both"):
        cfg = AutoConfig.from_pretrained(args.repo)
        out["config"] = {"model_type": cfg.model_type, "hidden_size": cfg.hidden_size, "vocab_size": cfg.vocab_size}
    if args.what in ("tokenizer", "both"):
        tok = AutoTokenizer.from_pretrained(args.repo)
        out["tokenizer"] = {"class": type(tok).__name__, "ids": tok("hello shared cache world")["input_ids"]}
    return out


def act_safe_open(args):
    import numpy as np
    from huggingface_hub import hf_hub_download
    from safetensors import safe_open

    path = hf_hub_download(args.repo, args.file, user_agent=_ua(args))
    tensors = {}
    with safe_open(path, framework="numpy") as f:
        for k in sorted(f.keys()):
            t = f.get_tensor(k)
            tensors[k] = {
                "shape": list(t.shape),
                "dtype": str(t.dtype),
                "sum": float(np.asarray(t, dtype=np.float64).sum()),
                "last": float(t.reshape(-1)[-1]),
            }
    return {"path": path, "tensors": tensors}


def act_read(args):
    """Plain read of a path (used to check an outsider cannot read a cached file)."""
    return {"sha256": sha256_file(args.path)}


# ----------------------------------------------------------------------------------------
# Credentials: the CLI's login/whoami/switch/list/logout, the token a user ends up with,
# and what a user can see of other users' tokens
# ----------------------------------------------------------------------------------------
DETAIL: dict = {}  # merged into the result line, on success and on failure
AUDITED = {"open", "os.chmod", "os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.truncate",
           "os.chown", "os.symlink", "os.link"}


def _under(path, root: str) -> bool:
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, (str, os.PathLike)):
        return False
    p = os.path.abspath(os.fspath(path))
    return p == root or p.startswith(root + os.sep)


def _err(e: BaseException) -> dict:
    return {"type": type(e).__name__, "errno": getattr(e, "errno", None),
            "filename": getattr(e, "filename", None), "message": str(e)[:1000]}


def _mode_of(path: str):
    try:
        st = os.stat(path)
        return {"mode": oct(st.st_mode & 0o7777), "uid": st.st_uid, "gid": st.st_gid}
    except OSError as e:
        return {"errno": e.errno}


def act_cli(args):
    """Run the library's own CLI in this process: `hf ARGV` (hub >= 1.0) or `huggingface-cli
    ARGV` (0.x), with stdout/stderr captured at the fd level and every file system call the
    CLI makes under HF_HOME recorded (audit hook): open (with flags), chmod, rename, remove..."""
    import tempfile

    try:
        from huggingface_hub.cli.hf import main as cli_main
        prog = "hf"
    except ImportError:
        from huggingface_hub.commands.huggingface_cli import main as cli_main
        prog = "huggingface-cli"
    root = os.path.abspath(os.environ["HF_HOME"])
    events = []

    def hook(event, a):
        if event in AUDITED and a and _under(a[0], root):
            e = [event, os.fspath(a[0]) if not isinstance(a[0], bytes) else os.fsdecode(a[0])]
            if event == "open":
                e += [a[1], a[2]]  # mode ("r", "w", None for os.open), flags
            elif event in ("os.chmod", "os.mkdir"):
                e.append(oct(a[1]))
            elif event == "os.rename":
                e.append(os.fspath(a[1]))
            events.append(e)

    DETAIL.update(prog=prog, argv=args.argv, hf_home_before=_mode_of(root), events=events)
    sys.addaudithook(hook)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    rc = None
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
        os.dup2(fo.fileno(), 1)
        os.dup2(fe.fileno(), 2)
        sys.argv = [prog] + list(args.argv)
        try:
            cli_main()
            rc = 0
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            fo.seek(0)
            fe.seek(0)
            DETAIL.update(rc=rc, stdout=fo.read().decode(errors="replace")[-4000:],
                          stderr=fe.read().decode(errors="replace")[-4000:],
                          hf_home_after=_mode_of(root))
    if rc != 0:
        raise RuntimeError(f"{prog} {' '.join(args.argv)} exited {rc}")
    return {"rc": rc, "stdout": DETAIL["stdout"], "stderr": DETAIL["stderr"]}


def act_auth_state(args):
    """Who this user is to the library: get_token(), whoami() with it, the stored tokens."""
    import huggingface_hub
    from huggingface_hub import HfApi

    out = {}
    try:
        out["token"] = huggingface_hub.get_token()
    except Exception as e:  # noqa: BLE001
        out["token_error"] = _err(e)
    try:
        out["whoami"] = HfApi().whoami()["name"]
    except Exception as e:  # noqa: BLE001
        out["whoami_error"] = _err(e)
    try:
        from huggingface_hub.utils import get_stored_tokens
    except ImportError:  # hub 0.20 keeps one token only
        get_stored_tokens = None
    if get_stored_tokens is not None:
        try:
            out["stored"] = get_stored_tokens()
        except Exception as e:  # noqa: BLE001
            out["stored_error"] = _err(e)
    return out


def act_snoop(args):
    """What this user can read: given files, directory listings, stats, and every regular
    file under --search that contains one of the --needle strings."""
    res = {"read": {}, "list": {}, "stat": {}, "found": {n: [] for n in args.needle}, "unreadable": []}
    for p in args.read:
        try:
            with open(p, "rb") as f:
                res["read"][p] = {"ok": True, "text": f.read(4096).decode(errors="replace")}
        except OSError as e:
            res["read"][p] = {"ok": False, **_err(e)}
    for d in args.list:
        try:
            res["list"][d] = sorted(os.listdir(d))
        except OSError as e:
            res["list"][d] = _err(e)
    for p in args.stat:
        res["stat"][p] = _mode_of(p)
    if args.search:
        for dirpath, dirs, files in os.walk(args.search, onerror=lambda e: res["unreadable"].append(e.filename)):
            for n in files:
                p = os.path.join(dirpath, n)
                if os.path.islink(p):
                    continue  # snapshot pointers: their targets are searched as blobs
                try:
                    with open(p, "rb") as f:
                        data = f.read(64 << 20)
                except OSError:
                    res["unreadable"].append(p)
                    continue
                for needle in args.needle:
                    if needle.encode() in data:
                        res["found"][needle].append(p)
    return res


def _permission_error(exc):
    seen = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, PermissionError):
            return {"type": type(e).__name__, "errno": e.errno, "filename": e.filename, "message": str(e)}
        stack += [e.__cause__, e.__context__]
    return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--who", default="?")
    sub = ap.add_subparsers(dest="action", required=True)
    p = sub.add_parser("download")
    p.add_argument("repo")
    p.add_argument("file")
    p.add_argument("--repo-type", default=None)
    p.add_argument("--revision", default=None)
    p = sub.add_parser("snapshot")
    p.add_argument("repo")
    p.add_argument("--repo-type", default=None)
    p.add_argument("--revision", default=None)
    p.add_argument("--local-files-only", action="store_true")
    sub.add_parser("scan")
    p = sub.add_parser("delete-revisions")
    p.add_argument("repo")
    p = sub.add_parser("dataset")
    p.add_argument("data_file")
    p = sub.add_parser("transformers")
    p.add_argument("repo")
    p.add_argument("--what", choices=["config", "tokenizer", "both"], default="both")
    p = sub.add_parser("safe-open")
    p.add_argument("repo")
    p.add_argument("file")
    p = sub.add_parser("read")
    p.add_argument("path")
    p = sub.add_parser("cli")
    p.add_argument("argv", nargs=argparse.REMAINDER)
    sub.add_parser("auth-state")
    p = sub.add_parser("snoop")
    p.add_argument("--needle", action="append", default=[])
    p.add_argument("--read", action="append", default=[])
    p.add_argument("--list", action="append", default=[])
    p.add_argument("--stat", action="append", default=[])
    p.add_argument("--search")
    args = ap.parse_args()

    out = {"ok": False, "action": args.action, "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups()}
    out["umask"] = oct(os.umask(0o022))
    os.umask(int(out["umask"], 8))
    try:
        import filelock
        import huggingface_hub

        out["versions"] = {"huggingface_hub": huggingface_hub.__version__, "filelock": filelock.__version__}
        fn = {
            "download": act_download,
            "snapshot": act_snapshot,
            "scan": act_scan,
            "delete-revisions": act_delete_revisions,
            "dataset": act_dataset,
            "transformers": act_transformers,
            "safe-open": act_safe_open,
            "read": act_read,
            "cli": act_cli,
            "auth-state": act_auth_state,
            "snoop": act_snoop,
        }[args.action]
        out["result"] = fn(args)
        out["ok"] = True
    except BaseException as e:  # noqa: BLE001 - report everything to the driver
        out.update(
            exc_type=type(e).__name__,
            exc_message=str(e)[:4000],
            errno=getattr(e, "errno", None),
            filename=getattr(e, "filename", None),
            permission_error=_permission_error(e),
            traceback="".join(traceback.format_exception(e))[-8000:],
        )
    out.update(DETAIL)
    sys.stdout.write("\n" + MARK + json.dumps(out, default=str) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
