#!/usr/bin/env python3
"""What the soak's deleting member runs (bench/soak.py): huggingface_hub's
`scan_cache_dir().delete_revisions(...)` of every revision of each given repo, one repo after
the other in one process, through tests/e2e/hf_user.act_delete_revisions (copied beside this
file by the driver, like tests/load/load_user.py).

    soak_user.py --who NAME delete REPO [REPO ...]

The last stdout line is `HFE2E_RESULT {json}` (read by tests/e2e/e2e_lib.UserProc): ok (every
repo deleted, no revision left), result = {"repos": {repo: {ok, seconds, ... | exc_type,
exc_message, errno, filename, traceback}}}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_user  # noqa: E402  (copied beside this file by the driver)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--who", required=True)
    sub = ap.add_subparsers(dest="action", required=True)
    p = sub.add_parser("delete")
    p.add_argument("repos", nargs="+")
    args = ap.parse_args()
    out = {"ok": False, "uid": os.getuid(), "start": time.time()}
    repos = {}
    for repo in args.repos:
        t0 = time.time()
        try:
            res = hf_user.act_delete_revisions(SimpleNamespace(repo=repo, who=args.who))
            repos[repo] = {"ok": not res["revisions_left"], "seconds": time.time() - t0, **res}
        except BaseException as e:  # noqa: BLE001 - report everything
            repos[repo] = {"ok": False, "seconds": time.time() - t0, "exc_type": type(e).__name__,
                           "exc_message": str(e)[:3000], "errno": getattr(e, "errno", None),
                           "filename": getattr(e, "filename", None),
                           "traceback": "".join(traceback.format_exception(e))[-4000:]}
    out["result"] = {"repos": repos}
    out["ok"] = all(r["ok"] for r in repos.values())
    out["end"] = time.time()
    sys.stdout.write("\n" + hf_user.MARK + json.dumps(out, default=str) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
