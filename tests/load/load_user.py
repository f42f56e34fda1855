#!/usr/bin/env python3
"""What one load-test user runs: `snapshot_download` of several repos, a few at a time.

Run as an unprivileged user (setpriv, own umask) under a test venv's python, from a
world-readable directory that also holds a copy of tests/e2e/hf_user.py, whose
`act_snapshot` does the work (download + sha256 of every file of the snapshot).

    load_user.py --who NAME snapshots [--threads N] REPO [REPO ...]

The last stdout line is `HFE2E_RESULT {json}` (the format tests/e2e/e2e_lib.UserProc
reads) with: ok (every repo succeeded), result = {"repos": {repo: {ok, seconds, folder,
files | exc_type, exc_message, errno, filename, traceback}}}, start/end times.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_user  # noqa: E402  (copied beside this file by the driver)


def diagnose(path) -> dict | None:
    """What the failing path looks like right after the failure, and again 1 s later."""
    if not path or not isinstance(path, str):
        return None
    import threading

    out = {"tid": threading.get_native_id(), "time": time.time()}
    for when in ("now", "after 1 s"):
        d = {}
        for what, fn in (("lstat", lambda p: oct(os.lstat(p).st_mode)), ("readlink", os.readlink),
                         ("stat (followed)", lambda p: os.stat(p).st_size),
                         ("parent listing has it", lambda p: os.path.basename(p) in os.listdir(os.path.dirname(p)))):
            try:
                d[what] = fn(path)
            except OSError as e:
                d[what] = f"{type(e).__name__} errno {e.errno}"
        out[when] = d
        time.sleep(1)
    return out


def one(who: str, repo: str) -> dict:
    t0 = time.time()
    try:
        res = hf_user.act_snapshot(SimpleNamespace(repo=repo, repo_type=None, who=who, local_files_only=False))
        return {"ok": True, "seconds": time.time() - t0, **res}
    except BaseException as e:  # noqa: BLE001 - report everything
        diag = diagnose(getattr(e, "filename", None))
        return {
            "diagnosis": diag,
            "ok": False,
            "seconds": time.time() - t0,
            "exc_type": type(e).__name__,
            "exc_message": str(e)[:3000],
            "errno": getattr(e, "errno", None),
            "filename": getattr(e, "filename", None),
            "permission_error": hf_user._permission_error(e),
            "traceback": "".join(traceback.format_exception(e))[-6000:],
        }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--who", required=True)
    sub = ap.add_subparsers(dest="action", required=True)
    p = sub.add_parser("snapshots")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("repos", nargs="+")
    args = ap.parse_args()

    out = {"ok": False, "uid": os.getuid(), "umask": None, "start": time.time()}
    mask = os.umask(0o022)
    os.umask(mask)
    out["umask"] = oct(mask)
    try:
        import filelock
        import huggingface_hub

        out["versions"] = {"huggingface_hub": huggingface_hub.__version__, "filelock": filelock.__version__}
        with ThreadPoolExecutor(max_workers=max(1, args.threads)) as ex:
            futs = {r: ex.submit(one, args.who, r) for r in args.repos}
            repos = {r: f.result() for r, f in futs.items()}
        out["result"] = {"repos": repos}
        out["ok"] = all(r["ok"] for r in repos.values())
    except BaseException as e:  # noqa: BLE001
        out.update(exc_type=type(e).__name__, exc_message=str(e)[:3000],
                   traceback="".join(traceback.format_exception(e))[-6000:])
    out["end"] = time.time()
    sys.stdout.write("\n" + hf_user.MARK + json.dumps(out, default=str) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
