"""snapshot_download of one repo from the fake hub, for tests/faults.rs (run as a test user
under the e2e venv's python with HF_HOME on the mount and HF_ENDPOINT on the fake hub).

Prints "OK <snapshot path>" (exit 0) or "FAIL <exception type> <errno name of the first
OSError in the exception chain, or None> <message>" (exit 3).
"""
import errno
import sys

from huggingface_hub import snapshot_download


def main():
    try:
        path = snapshot_download(sys.argv[1], max_workers=4)
    except BaseException as e:  # noqa: BLE001 - report whatever ended the download
        found, x, seen = None, e, set()
        while x is not None and id(x) not in seen:
            seen.add(id(x))
            if isinstance(x, OSError) and x.errno:
                found = x
                break
            x = x.__cause__ or x.__context__
        name = errno.errorcode.get(found.errno, str(found.errno)) if found else None
        print("FAIL %s %s %s" % (type(e).__name__, name, str(e).replace("\n", " ")[:300]), flush=True)
        sys.exit(3)
    print("OK %s" % path, flush=True)


if __name__ == "__main__":
    main()
