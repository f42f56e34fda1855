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
                               user_agent=_ua(args))
    files = {}
    for root, _dirs, names in os.walk(folder):
        for n in names:
            p = os.path.join(root, n)
            files[os.path.relpath(p, folder)] = sha256_file(p)
    return {"folder": folder, "files": files}


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


def act_cli(args):
    """`hf ARGS...` (hub >= 1.0 CLI) in this process, so its exceptions reach the result."""
    import contextlib
    import io

    from huggingface_hub.cli.hf import app

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = app(args=list(args.cli_args), standalone_mode=False, prog_name="hf")
        except SystemExit as e:
            code = e.code
    res = {"exit": code or 0, "stdout": out.getvalue()[-6000:], "stderr": err.getvalue()[-6000:]}
    if code:
        raise RuntimeError(f"hf {' '.join(args.cli_args)} exited {code}: {res}")
    return res


def act_read(args):
    """Plain read of a path (used to check an outsider cannot read a cached file)."""
    return {"sha256": sha256_file(args.path)}


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
    p = sub.add_parser("cli")
    p.add_argument("cli_args", nargs=argparse.REMAINDER)
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
            "delete-revisions": act_delete_revisions,
            "dataset": act_dataset,
            "transformers": act_transformers,
            "safe-open": act_safe_open,
            "read": act_read,
            "cli": act_cli,
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
    sys.stdout.write("\n" + MARK + json.dumps(out, default=str) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
