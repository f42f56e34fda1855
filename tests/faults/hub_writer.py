"""A writer that stores files the way huggingface_hub does, for the fault tests (tests/faults.rs).

usage: hub_writer.py REPO_DIR DATA_DIR DELAY_SECONDS

For every file in DATA_DIR (named by the sha256 of its content, like an LFS etag), in name
order: skip it if REPO_DIR/blobs/<sha> already exists; else write it to
blobs/<sha>.incomplete in 256 KiB chunks (sleeping DELAY_SECONDS after each, so a test can
hit it mid-file), close, rename it to blobs/<sha>, then replace the pointer
snapshots/c0ffee/file<i> with a relative symlink ../../blobs/<sha>.

Prints "DONE <sha>" after each file and "ALL DONE" at the end (exit 0). On the first failing
call it prints "ERRNO <name> <operation>" and exits 3, leaving the .incomplete behind as the
Hub does (it resumes or rewrites it next time). Standard library only: it runs under the
system /usr/bin/python3 as an unprivileged test user.
"""
import errno
import os
import sys
import time


def main():
    repo, data, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    blobs = os.path.join(repo, "blobs")
    snaps = os.path.join(repo, "snapshots", "c0ffee")
    op = "makedirs"
    try:
        os.makedirs(blobs, exist_ok=True)
        os.makedirs(snaps, exist_ok=True)
        for i, sha in enumerate(sorted(os.listdir(data))):
            final = os.path.join(blobs, sha)
            op = "stat"
            if os.path.exists(final):
                continue
            inc = final + ".incomplete"
            with open(os.path.join(data, sha), "rb") as src:
                op = "open"
                fd = os.open(inc, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    while True:
                        chunk = src.read(256 * 1024)
                        if not chunk:
                            break
                        view = memoryview(chunk)
                        while view:
                            op = "write"
                            n = os.write(fd, view)
                            view = view[n:]
                        if delay:
                            time.sleep(delay)
                except OSError:
                    try:
                        os.close(fd)
                    except OSError:
                        pass  # report the write's error, not the close's
                    raise
                op = "close"
                os.close(fd)
            op = "rename"
            os.replace(inc, final)
            link = os.path.join(snaps, "file%d" % i)
            op = "unlink"
            try:
                os.unlink(link)
            except FileNotFoundError:
                pass
            op = "symlink"
            os.symlink(os.path.join("..", "..", "blobs", sha), link)
            print("DONE %s" % sha, flush=True)
    except OSError as e:
        print("ERRNO %s %s" % (errno.errorcode.get(e.errno, str(e.errno)), op), flush=True)
        sys.exit(3)
    print("ALL DONE", flush=True)


if __name__ == "__main__":
    main()
