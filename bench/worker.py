#!/usr/bin/env python3
"""One benchmark measurement, run in its own process by bench/run.py.

    worker.py MODE JSON_ARGS

Protocol: the worker imports what it needs and prepares, prints `READY`, waits for one
line on stdin (the driver drops the page cache in between for cold runs and samples the
daemon's CPU counters), runs the timed part, and prints one JSON line with the result.
Only the part between `go` and the result is timed, so interpreter start-up and imports
never count.

Modes (args in JSON):
  seqread   {"path", "min_seconds"}        read the file with 1 MiB read()s (whole passes
                                           until min_seconds have passed; at least one)
  mmapread  {"path", "min_seconds"}        mmap it read-only (MAP_PRIVATE), touch every page
  stload    {"hf_home", "repo", "file"}    resolve through HF_HOME (refs/main + snapshot
                                           symlink) and load every tensor with safe_open
  scan      {"hub"}                        huggingface_hub.scan_cache_dir(hub)
  walkstat  {"hub"}                        os.walk the tree, os.stat (follow) every symlink
  churn     {"dir", "n", "size"}           create+write n files, rename each, unlink each
  churn26   {"repo", "n", "size"}          n downloads in the 2026 layout's shape in repo dir
                                           `repo` (made, and removed after): write
                                           blobs/<etag>.<8hex>.incomplete, rename it to
                                           blobs/<etag>, symlink snapshots/<commit>/<file> ->
                                           ../../blobs/<etag>; then delete all (timed apart)
  snapshot  {"repo"}                       snapshot_download (HF_HOME, HF_ENDPOINT from env)
  download  {"hf_home", "endpoint", "repo", "file"}  hf_hub_download into HF_HOME
  gen_safetensors {"path", "bytes"}        write a real .safetensors file (not timed)
  gen_meta  {"hub", "repos", "blobs"}      lay out a Hugging Face-shaped cache (not timed)
  gen_meta26 {"hub", "repos", "blobs"}     the same in the 2026 layout: payloads in the
                                           shared store hub/blobs/<2hex>/<xet hash> (+ .lock,
                                           .refs), repo blobs/<etag> symlinks to them
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import sys
import time

MiB = 1 << 20


def repeat(a, one_pass):
    """Whole passes until `min_seconds` have gone by (at least one): a warm pass over a
    page-cached file can take a few milliseconds, too short to time alone."""
    t0 = time.perf_counter()
    total, passes, out = 0, 0, {}
    while True:
        out = one_pass(a)
        total += out["bytes"]
        passes += 1
        if time.perf_counter() - t0 >= a.get("min_seconds", 0):
            break
    out.update(bytes=total, passes=passes)
    return out


def seqread_pass(a):
    buf = bytearray(MiB)
    total = 0
    with open(a["path"], "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            total += n
    return {"bytes": total}


def mmapread_pass(a):
    import numpy as np

    fd = os.open(a["path"], os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        mm = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
        arr = np.frombuffer(mm, dtype=np.uint8)
        # one byte of every page, in C: every page faults in, the loop costs nothing
        checksum = int(arr[:: mmap.PAGESIZE].sum(dtype=np.uint64))
        del arr
        mm.close()
    finally:
        os.close(fd)
    return {"bytes": size, "checksum": checksum}


def seqread(a):
    return repeat(a, seqread_pass)


def mmapread(a):
    return repeat(a, mmapread_pass)


def stload(a):
    from huggingface_hub import try_to_load_from_cache
    from safetensors import safe_open

    path = try_to_load_from_cache(a["repo"], a["file"], cache_dir=os.path.join(a["hf_home"], "hub"))
    if not isinstance(path, str):
        raise RuntimeError(f"{a['repo']}/{a['file']} is not in the cache under {a['hf_home']}")
    total = 0
    n = 0
    with safe_open(path, framework="numpy") as f:
        for k in f.keys():
            t = f.get_tensor(k)
            total += t.nbytes
            n += 1
    return {"bytes": total, "tensors": n}


def scan(a):
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(a["hub"])
    if info.warnings:
        raise RuntimeError(f"scan_cache_dir warnings: {info.warnings[:3]}")
    files = sum(r.nb_files for r in info.repos)
    return {"repos": len(info.repos), "files": files, "size": info.size_on_disk}


def walkstat(a):
    links = 0
    entries = 0
    size = 0
    def fail(err):
        raise err

    for root, dirs, files in os.walk(a["hub"], onerror=fail):
        entries += len(dirs) + len(files)
        for name in files:
            p = os.path.join(root, name)
            if os.path.islink(p):
                size += os.stat(p).st_size
                links += 1
    return {"symlinks": links, "entries": entries, "bytes": size}


def churn(a):
    d = a["dir"]
    n = a["n"]
    data = os.urandom(a["size"])
    os.mkdir(d)
    t0 = time.perf_counter()
    for i in range(n):
        fd = os.open(f"{d}/f{i}.tmp", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data)
        os.close(fd)
    t1 = time.perf_counter()
    for i in range(n):
        os.rename(f"{d}/f{i}.tmp", f"{d}/f{i}")
    t2 = time.perf_counter()
    for i in range(n):
        os.unlink(f"{d}/f{i}")
    t3 = time.perf_counter()
    os.rmdir(d)
    return {"create_s": t1 - t0, "rename_s": t2 - t1, "unlink_s": t3 - t2}


def churn26(a):
    """What huggingface_hub does on disk per small file it downloads, as of 2026: the
    `.incomplete` name carries 8 random hex digits, the blob is published by rename and the
    snapshot entry is a relative symlink. Per file in that order, as the hub does."""
    repo, n = a["repo"], a["n"]
    data = os.urandom(a["size"])
    commit = hashlib.sha1(repo.encode()).hexdigest()
    blobs, snap = os.path.join(repo, "blobs"), os.path.join(repo, "snapshots", commit)
    os.makedirs(blobs)
    os.makedirs(snap)
    etags = [hashlib.sha256(f"{repo} {i}".encode()).hexdigest() for i in range(n)]
    t0 = time.perf_counter()
    for i, etag in enumerate(etags):
        tmp = f"{blobs}/{etag}.{os.urandom(4).hex()}.incomplete"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        os.write(fd, data)
        os.close(fd)
        os.replace(tmp, f"{blobs}/{etag}")
        os.symlink(f"../../blobs/{etag}", f"{snap}/file-{i}.json")
    t1 = time.perf_counter()
    for i, etag in enumerate(etags):
        os.unlink(f"{snap}/file-{i}.json")
        os.unlink(f"{blobs}/{etag}")
    t2 = time.perf_counter()
    os.rmdir(snap)
    os.rmdir(os.path.dirname(snap))
    os.rmdir(blobs)
    os.rmdir(repo)
    return {"publish_s": t1 - t0, "delete_s": t2 - t1}


def snapshot(a):
    from huggingface_hub import snapshot_download

    path = snapshot_download(a["repo"])
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return {"bytes": total}


def download(a):
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(a["repo"], a["file"])
    return {"bytes": os.path.getsize(path)}


def gen_safetensors(a):
    import numpy as np
    from safetensors.numpy import save_file

    total = a["bytes"]
    per = 16 * MiB if total >= 256 * MiB else 4 * MiB
    rng = np.random.default_rng(0)
    tensors = {}
    for i in range(total // per):
        tensors[f"model.layers.{i}.weight"] = rng.standard_normal((per // 4096, 1024), dtype=np.float32)
    save_file(tensors, a["path"], metadata={"format": "np"})
    return {"tensors": len(tensors)}


def gen_meta(a):
    """500 repos x 20 blobs by default: blobs/, snapshots/<commit>/ symlinks, refs/main,
    .no_exist markers, and the hub/.locks/ files a real cache keeps."""
    hub = a["hub"]
    os.makedirs(hub, exist_ok=True)
    for r in range(a["repos"]):
        name = f"models--bench-org--repo-{r:04d}"
        repo = os.path.join(hub, name)
        commit = hashlib.sha1(f"commit {r}".encode()).hexdigest()
        for sub in ("blobs", "refs", f"snapshots/{commit}", f"snapshots/{commit}/onnx",
                    f".no_exist/{commit}"):
            os.makedirs(os.path.join(repo, sub), exist_ok=True)
        locks = os.path.join(hub, ".locks", name)
        os.makedirs(locks, exist_ok=True)
        with open(os.path.join(repo, "refs", "main"), "w") as f:
            f.write(commit)
        for b in range(a["blobs"]):
            content = (f"repo {r} file {b}\n" * (1 + (b * 37) % 200)).encode()
            etag = hashlib.sha256(content).hexdigest()
            with open(os.path.join(repo, "blobs", etag), "wb") as f:
                f.write(content)
            open(os.path.join(locks, etag + ".lock"), "wb").close()
            if b % 5 == 4:
                rel = f"onnx/part-{b}.bin"
                target = f"../../../blobs/{etag}"
            else:
                rel = f"file-{b}.json"
                target = f"../../blobs/{etag}"
            os.symlink(target, os.path.join(repo, "snapshots", commit, rel))
        for m in ("added_tokens.json", "chat_template.jinja"):
            open(os.path.join(repo, ".no_exist", commit, m), "wb").close()
    return {"repos": a["repos"]}


def gen_meta26(a):
    """The gen_meta tree as huggingface_hub >= 1.33 lays out Xet files: each payload once in
    the shared store `hub/blobs/<2hex>/<xet hash>` (0444, with its `.lock` and a `.refs`
    manifest naming the repo link), the repo's `blobs/<etag>` a relative symlink to it, and
    snapshot entries symlinks to `../../blobs/<etag>` (two symlinks to the bytes)."""
    hub = a["hub"]
    store = os.path.join(hub, "blobs")
    os.makedirs(store, exist_ok=True)
    with open(os.path.join(store, ".huggingface-shared-blobs"), "w") as f:
        f.write("1\n")
    for r in range(a["repos"]):
        name = f"models--bench-org--repo-{r:04d}"
        repo = os.path.join(hub, name)
        commit = hashlib.sha1(f"commit {r}".encode()).hexdigest()
        for sub in ("blobs", "refs", "trees", f"snapshots/{commit}", f"snapshots/{commit}/onnx",
                    f".no_exist/{commit}"):
            os.makedirs(os.path.join(repo, sub), exist_ok=True)
        locks = os.path.join(hub, ".locks", name)
        os.makedirs(locks, exist_ok=True)
        with open(os.path.join(repo, "refs", "main"), "w") as f:
            f.write(commit)
        with open(os.path.join(repo, "trees", f"{commit}.json"), "w") as f:
            f.write("[]")
        for b in range(a["blobs"]):
            content = (f"repo {r} file {b}\n" * (1 + (b * 37) % 200)).encode()
            etag = hashlib.sha256(content).hexdigest()
            xet = hashlib.sha256(b"xet " + content).hexdigest()
            prefix = os.path.join(store, xet[:2])
            os.makedirs(prefix, exist_ok=True)
            payload = os.path.join(prefix, xet)
            with open(payload, "wb") as f:
                f.write(content)
            os.chmod(payload, 0o444)
            open(payload + ".lock", "wb").close()
            with open(payload + ".refs", "w") as f:
                f.write(f"{name}/blobs/{etag}\n")
            os.symlink(f"../../blobs/{xet[:2]}/{xet}", os.path.join(repo, "blobs", etag))
            open(os.path.join(locks, etag + ".lock"), "wb").close()
            if b % 5 == 4:
                rel = f"onnx/part-{b}.bin"
                target = f"../../../blobs/{etag}"
            else:
                rel = f"file-{b}.json"
                target = f"../../blobs/{etag}"
            os.symlink(target, os.path.join(repo, "snapshots", commit, rel))
        for m in ("added_tokens.json", "chat_template.jinja"):
            open(os.path.join(repo, ".no_exist", commit, m), "wb").close()
    return {"repos": a["repos"]}


MODES = {
    "seqread": seqread,
    "mmapread": mmapread,
    "stload": stload,
    "scan": scan,
    "walkstat": walkstat,
    "churn": churn,
    "churn26": churn26,
    "snapshot": snapshot,
    "download": download,
    "gen_safetensors": gen_safetensors,
    "gen_meta": gen_meta,
    "gen_meta26": gen_meta26,
}


def main() -> int:
    mode, args = sys.argv[1], json.loads(sys.argv[2])
    fn = MODES[mode]
    # import before READY so that imports are never timed
    if mode in ("mmapread", "gen_safetensors"):
        import numpy  # noqa: F401
    if mode == "stload":
        import huggingface_hub  # noqa: F401
        import safetensors.numpy  # noqa: F401
    if mode in ("scan", "download", "snapshot"):
        import huggingface_hub  # noqa: F401
        import huggingface_hub.file_download  # noqa: F401
    if not os.environ.get("BENCH_WORKER_NOWAIT"):  # set when profiling: no handshake
        print("READY", flush=True)
        if sys.stdin.readline().strip() != "go":
            return 1
    t0 = time.perf_counter()
    out = fn(args)
    out["seconds"] = time.perf_counter() - t0
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
