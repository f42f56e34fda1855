"""Helpers for the hfcachefs end-to-end tests: users, the fake hub, backends, running code.

Everything here runs as root in the driver venv (/opt/hfcachefs-e2e/venv-new); the
Hugging Face code under test runs as throw-away users through `setpriv`.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
PREFIX = Path(os.environ.get("HFCACHEFS_E2E_PREFIX", "/opt/hfcachefs-e2e"))
VENVS = {"new": PREFIX / "venv-new", "old": PREFIX / "venv-old"}
# How a user's library fetches files: (venv generation, Xet enabled).
#   xet   huggingface_hub 2.x + hf_xet: CAS reconstructions and xorb ranges, shared blob store
#   http  huggingface_hub 2.x with HF_HUB_DISABLE_XET=1: plain GET of /resolve
#   old   huggingface_hub 0.20 (early 2024): plain GET, knows nothing of Xet
TRANSPORTS = {"xet": ("new", True), "http": ("new", False), "old": ("old", False)}
MARK = "HFE2E_RESULT "


class E2EError(AssertionError):
    """A prerequisite or harness failure: always a test failure, never a skip."""


def sh(cmd: list[str], check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    cp = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and cp.returncode != 0:
        raise E2EError(f"{cmd!r} exited {cp.returncode}\nstdout: {cp.stdout}\nstderr: {cp.stderr}")
    return cp


# ----------------------------------------------------------------------------------------
# Users
# ----------------------------------------------------------------------------------------
@dataclass
class User:
    name: str
    uid: int
    gid: int  # primary group (user-private, never the shared group)
    home: Path

    def __str__(self) -> str:
        return self.name


@dataclass
class Users:
    tag: str
    group: str
    gid: int
    a: User
    b: User
    outsider: User
    created_users: list[str] = field(default_factory=list)
    created_groups: list[str] = field(default_factory=list)

    def remove(self) -> None:
        for u in self.created_users:
            subprocess.run(["userdel", u], capture_output=True)
        for g in self.created_groups + [u for u in self.created_users]:
            # userdel removes a user-private group itself; groupdel of a missing group is harmless
            subprocess.run(["groupdel", g], capture_output=True)


def create_users(base: Path) -> Users:
    tag = secrets.token_hex(3)
    group = f"hfe2e_{tag}"
    for name in [group] + [f"hfe2e_{tag}_{s}" for s in "abo"]:
        try:
            pwd.getpwnam(name)
            raise E2EError(f"user {name} already exists")
        except KeyError:
            pass
    made_users: list[str] = []
    made_groups: list[str] = []
    users = None
    try:
        sh(["groupadd", group])
        made_groups.append(group)
        homes = base / "home"
        homes.mkdir(mode=0o755, exist_ok=True)
        os.chmod(homes, 0o755)
        out = {}
        for s in "abo":
            name = f"hfe2e_{tag}_{s}"
            cmd = ["useradd", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin",
                   "--home-dir", str(homes / name)]
            if s in "ab":
                cmd += ["--groups", group]
            sh(cmd + [name])
            made_users.append(name)
            pw = pwd.getpwnam(name)
            home = homes / name
            home.mkdir(mode=0o700, exist_ok=True)
            os.chown(home, pw.pw_uid, pw.pw_gid)
            out[s] = User(name, pw.pw_uid, pw.pw_gid, home)
        gid = grp.getgrnam(group).gr_gid
        users = Users(tag, group, gid, out["a"], out["b"], out["o"], made_users, made_groups)
        for u in (users.a, users.b, users.outsider):
            if u.gid == gid:
                raise E2EError(f"{u}: primary group must not be the shared group")
        return users
    except BaseException:
        Users(tag, group, -1, None, None, None, made_users, made_groups).remove()  # type: ignore[arg-type]
        raise


def add_member(users: Users, suffix: str) -> User:
    """One more member of the shared group (`hfe2e_<tag>_<suffix>`), removed with `users`."""
    name = f"hfe2e_{users.tag}_{suffix}"
    try:
        pwd.getpwnam(name)
        raise E2EError(f"user {name} already exists")
    except KeyError:
        pass
    home = users.a.home.parent / name
    sh(["useradd", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin",
        "--home-dir", str(home), "--groups", users.group, name])
    users.created_users.append(name)
    pw = pwd.getpwnam(name)
    home.mkdir(mode=0o700, exist_ok=True)
    os.chown(home, pw.pw_uid, pw.pw_gid)
    return User(name, pw.pw_uid, pw.pw_gid, home)


# ----------------------------------------------------------------------------------------
# Running code as a user
# ----------------------------------------------------------------------------------------
@dataclass
class Result:
    user: str
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    data: dict

    @property
    def ok(self) -> bool:
        return bool(self.data.get("ok"))

    @property
    def perm(self) -> dict | None:
        return self.data.get("permission_error")

    def describe(self) -> str:
        d = dict(self.data)
        tb = d.pop("traceback", "")
        return (f"user={self.user} argv={self.argv} rc={self.returncode}\n"
                f"data={json.dumps(d, indent=1, default=str)[:6000]}\ntraceback:\n{tb}\n"
                f"stderr (tail):\n{self.stderr[-3000:]}")


def user_env(user: User, hf_home: str, endpoint: str, extra: dict | None = None, xet: bool = False) -> dict:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(user.home),
        "USER": user.name,
        "LOGNAME": user.name,
        "XDG_CACHE_HOME": str(user.home / ".cache"),
        "TMPDIR": str(user.home),
        "HF_HOME": hf_home,
        "HF_ENDPOINT": endpoint,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
        "HF_HUB_ETAG_TIMEOUT": "30",
        "HF_HUB_DOWNLOAD_TIMEOUT": "60",
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONDONTWRITEBYTECODE": "1",
        "NO_PROXY": "*",
        "no_proxy": "*",
    }
    # The machine sets these for older OpenBLAS builds (numpy 1.26 in the old venv).
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if k in os.environ:
            env[k] = os.environ[k]
    if xet:
        del env["HF_HUB_DISABLE_XET"]
    env.update(extra or {})
    return env


class UserProc:
    """A user's hf_user.py run in the background (so two users can overlap)."""

    def __init__(self, user: User, generation: str, script: Path, args: list[str], env: dict,
                 umask: str = "022"):
        py = VENVS[generation] / "bin" / "python"
        self.user = user
        self.argv = [str(script), "--who", user.name] + list(args)
        cmd = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups", "--",
               "/bin/sh", "-c", f'umask {umask}; exec "$0" "$@"', str(py)] + self.argv
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env, cwd=str(user.home), start_new_session=True)

    def wait(self, timeout: float = 180) -> Result:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # our own child's session only
            except ProcessLookupError:
                pass
            out, err = self.proc.communicate()
            raise E2EError(f"{self.user}: {self.argv} timed out after {timeout}s\nstdout:{out[-3000:]}\n"
                           f"stderr:{err[-3000:]}")
        data = None
        for line in reversed(out.splitlines()):
            if line.startswith(MARK):
                data = json.loads(line[len(MARK):])
                break
        if data is None:
            raise E2EError(f"{self.user}: {self.argv} printed no result (rc={self.proc.returncode})\n"
                           f"stdout:{out[-3000:]}\nstderr:{err[-3000:]}")
        return Result(self.user.name, self.argv, self.proc.returncode, out, err, data)


# ----------------------------------------------------------------------------------------
# Fake hub
# ----------------------------------------------------------------------------------------
class FakeHub:
    def __init__(self, spec: dict, workdir: Path, throttle: int):
        self.spec_path = workdir / "hub-spec.json"
        self.spec_path.write_text(json.dumps(spec, indent=1))
        self.log_path = workdir / "fake-hub.log"
        self._log = open(self.log_path, "w")
        # Xet fixtures: hf_xet (in this driver venv) uploads the spec's Xet files to local://xet-cas
        self.xet_dir = workdir / "xet-cas"
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "fake_hub.py"), "--port", "0", "--spec", str(self.spec_path),
             "--throttle", str(throttle), "--xet-dir", str(self.xet_dir), "--xet-python", sys.executable],
            stdout=subprocess.PIPE, stderr=self._log, text=True)
        line = self.proc.stdout.readline()
        if not line:
            raise E2EError(f"fake hub did not start: {self.log_path.read_text()[-3000:]}")
        self.url = json.loads(line)["url"]
        self.manifest = {(r["type"], r["id"]): r for r in self._get("/_control/manifest")["repos"]}

    def _get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def _post(self, path: str):
        req = urllib.request.Request(self.url + path, data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def repo(self, repo_id: str, repo_type: str = "model") -> dict:
        return self.manifest[(repo_type, repo_id)]

    def reset_log(self) -> None:
        self._post("/_control/reset-log")

    def hold(self, suffix: str, heads: int = 2, timeout: float = 60) -> None:
        """Pause GETs of paths ending with suffix after 1 MiB until `heads` HEADs came."""
        from urllib.parse import quote

        self._post(f"/_control/hold?suffix={quote(suffix)}&heads={heads}&timeout={timeout}")

    def log(self) -> list[dict]:
        return self._get("/_control/log")

    def wait_for(self, pred, timeout: float = 60, procs=()) -> dict:
        """Wait until a log entry satisfies pred (or a watched process has exited)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.log():
                if pred(e):
                    return e
            if any(p.proc.poll() is not None for p in procs):
                raise E2EError("a user process exited before the awaited request: "
                               + "; ".join(p.wait().describe() for p in procs if p.proc.poll() is not None))
            time.sleep(0.05)
        raise E2EError(f"no such request within {timeout}s; log: {self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# ----------------------------------------------------------------------------------------
# Backends
# ----------------------------------------------------------------------------------------
def hfcachefs_bin() -> Path:
    return Path(os.environ.get("HFCACHEFS_BIN") or REPO_ROOT / "target" / "debug" / "hfcachefs")


def mount_fstype(path: Path) -> str | None:
    """The filesystem type mounted on path (the last mount wins), or None."""
    target = os.path.realpath(path)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == target:
                found = fields[fields.index("-") + 1]
    return found


class PlainBackend:
    """The blog's recipe: a setgid directory owned by the shared group, mode 2770."""

    name = "plain"

    def __init__(self, workdir: Path, users: Users):
        self.root = workdir / "plain-hf-home"
        self.root.mkdir(mode=0o700)
        os.chown(self.root, 0, users.gid)
        os.chmod(self.root, 0o2770)
        self.hf_home = self.root

    def stop(self) -> None:
        pass


def pids_with_arg(arg: str) -> list[int]:
    """Processes whose command line contains `arg` (our unique store path: our daemon only)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if arg.encode() in argv:
            out.append(int(d))
    return out


class HfcachefsBackend:
    """HF_HOME is the mount point of hfcachefs over a fresh root-only store."""

    name = "hfcachefs"

    def __init__(self, workdir: Path, users: Users, options: str | None = None, store: Path | None = None):
        binary = hfcachefs_bin()
        if not binary.is_file() or not os.access(binary, os.X_OK):
            raise E2EError(f"hfcachefs binary not found at {binary} (build it, or set HFCACHEFS_BIN)")
        if not os.path.exists("/dev/fuse"):
            raise E2EError("/dev/fuse is missing")
        self.store = store or workdir / "store"
        if store is None:
            self.store.mkdir(mode=0o700)
        os.chmod(self.store, 0o700)
        self.mnt = workdir / "mnt"
        self.mnt.mkdir(mode=0o755)
        self.hf_home = self.mnt
        self.log_path = workdir / "hfcachefs.log"
        opts = options or f"group={users.group}"
        opts += f",logfile={self.log_path}"
        cmd = [str(binary), str(self.store), str(self.mnt), "-o", opts]
        with open(workdir / "hfcachefs.out", "w") as out:
            # Without -f it daemonizes and exits 0 once the mount is up.
            cp = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=60)
        if cp.returncode != 0:
            raise E2EError(f"{cmd} exited {cp.returncode}: {self.log_tail()}")
        fstype = mount_fstype(self.mnt)
        if fstype is None or not fstype.startswith("fuse"):
            if fstype is not None:
                subprocess.run(["umount", str(self.mnt)], capture_output=True)
            raise E2EError(f"{cmd} exited 0 but {self.mnt} is not a FUSE mount ({fstype}): {self.log_tail()}")
        self.mounted = True
        self.pids = pids_with_arg(str(self.store))

    def log_tail(self, n: int = 3000) -> str:
        text = ""
        for p in (self.log_path, self.log_path.with_suffix(".out")):
            if p.exists():
                text += f"\n--- {p}:\n" + p.read_text(errors="replace")[-n:]
        return text

    def stop(self) -> None:
        if not getattr(self, "mounted", False):
            return
        err = ""
        for _ in range(50):
            cp = subprocess.run(["umount", str(self.mnt)], capture_output=True, text=True)
            if cp.returncode == 0:
                break
            err = cp.stderr
            time.sleep(0.2)
        else:
            subprocess.run(["umount", "-l", str(self.mnt)], capture_output=True)
            self.mounted = False
            raise E2EError(f"umount {self.mnt} failed: {err}")
        self.mounted = False
        # The daemon exits once unmounted.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in self.pids):
            time.sleep(0.1)
        alive = [p for p in self.pids if os.path.exists(f"/proc/{p}")]
        if alive:
            raise E2EError(f"hfcachefs daemon {alive} still running 15 s after umount {self.mnt}")


# ----------------------------------------------------------------------------------------
# Inspecting a cache (as root)
# ----------------------------------------------------------------------------------------
def walk(root: Path) -> dict[str, os.stat_result]:
    """Every entry under root (not following symlinks), by path relative to root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, root)] = os.lstat(p)
    return out


def policy_violations(root: Path, gid: int) -> list[str]:
    """Entries that break the hfcachefs policy: group = shared group, group bits = owner bits,
    directories setgid, nothing for others (symlinks are exempt from mode checks)."""
    bad = []
    for rel, st in walk(root).items():
        mode = stat.S_IMODE(st.st_mode)
        problems = []
        if st.st_gid != gid:
            problems.append(f"gid {st.st_gid}")
        if not stat.S_ISLNK(st.st_mode):
            if ((mode >> 3) & 7) != ((mode >> 6) & 7):
                problems.append("group bits != owner bits")
            if mode & 0o007:
                problems.append("others have access")
            if stat.S_ISDIR(st.st_mode) and not mode & stat.S_ISGID:
                problems.append("dir not setgid")
        if problems:
            bad.append(f"{rel}: mode {mode:04o} uid {st.st_uid} gid {st.st_gid}: {', '.join(problems)}")
    return bad


def sha256_path(path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 << 20):
            h.update(chunk)
    return h.hexdigest()


def make_world_readable_copy(src: Path, dst_dir: Path) -> Path:
    dst_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    dst = dst_dir / src.name
    shutil.copyfile(src, dst)
    os.chmod(dst, 0o644)
    return dst
