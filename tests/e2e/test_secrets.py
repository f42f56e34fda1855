"""End-to-end: members share the cache, never their credentials.

With HF_HOME on the shared cache, `hf auth login` (hub >= 1.0) writes `$HF_HOME/stored_tokens`
(INI, every named token) and `$HF_HOME/token` (the active one); `huggingface-cli login` (hub
0.20) writes `$HF_HOME/token` only. Two members, alice (umask 002) and bob (umask 022), each
with their own Hub account (the fake hub's "alice" and "bob"), log in in either order; alice
(new generation) has two named tokens and switches between them; then each asks who they
are, tries to read the other's token every way a member can, downloads a gated repo only
alice's account may read, and alice logs out.

hfcachefs (the intended behaviour): `token` and `stored_tokens` at the top of the mount are
per user. Each member sees, writes and deletes only their own copy, kept in the store at
STORE/.hfcachefs-private/<uid>/<name> (owner the user, mode 0600), an area never visible
through the mount. hub's chmod of HF_HOME to 0700 while saving a token locks nobody out: the
mount root stays 2770 for members.

plain (the blog's setgid directory, root:GROUP 2770), what really happens:
  new generation (hub 1.x `_write_secret`: open O_CREAT|O_TRUNC 0600, chmod 0600, chmod of
  HF_HOME to 0700, which fails for a member and is ignored): the first member's `token` and
  `stored_tokens` are 0600, so nothing leaks, but the second member cannot log in
  (PermissionError opening the first one's stored_tokens for writing) and from then on every
  hub call that looks for a token (whoami, auth list, logout, even a download) fails with a
  PermissionError reading `$HF_HOME/token`: the second member is locked out until the first
  logs out.
  old generation (hub 0.20 `Path.write_text`, the umask's mode): alice first -> her token is
  0664, bob's login rewrites it: alice is bob from then on, both read bob's token. bob first
  -> his token is 0644: alice's login fails with PermissionError, and alice is bob (she reads
  and uses his token). Either way alice's logout deletes the one shared token: bob is logged
  out too.
"""

from __future__ import annotations

import configparser
import errno
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

import e2e_lib as L
from conftest import REPO_GATED
from test_shared_cache import check_policy, ok

# The token is sent implicitly (as users have it); no PyPI update check (no network here).
SECRET_ENV = {"HF_HUB_DISABLE_IMPLICIT_TOKEN": "0", "HF_HUB_DISABLE_UPDATE_CHECK": "1"}
PRIVATE = ".hfcachefs-private"
GATED_FILE = "config.json"
CONTROL = '"gated": true'  # in GATED_FILE: what a search of the mount finds once alice has it
O_WRITE_TRUNC = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


@dataclass
class Member:
    user: L.User
    account: str
    umask: str
    tokens: dict  # label -> token, in login order

    def name(self, label: str) -> str:
        return f"{self.account}-{label}"  # the fake hub's displayName: what hub stores it under


def new_token(account: str, label: str) -> str:
    return f"hf_{account}_{label}_{secrets.token_hex(12)}"


class Scenario:
    def __init__(self, ctx, order: str):
        self.ctx = ctx
        self.gen = ctx.generation
        self.home = ctx.hf_home
        labels = ["work", "read"] if self.gen == "new" else ["work"]
        self.alice = Member(ctx.users.a, "alice", "002", {lb: new_token("alice", lb) for lb in labels})
        self.bob = Member(ctx.users.b, "bob", "022", {"work": new_token("bob", "work")})
        self.order = [self.alice, self.bob] if order == "alice_first" else [self.bob, self.alice]
        self.r: dict[str, L.Result] = {}

    def other(self, m: Member) -> Member:
        return self.bob if m is self.alice else self.alice

    def run(self, key: str, m: Member, *args) -> L.Result:
        res = self.ctx.run(m.user, *args, umask=m.umask, env=SECRET_ENV, timeout=90)
        self.r[key] = res
        return res

    def cli(self, key: str, m: Member, *argv) -> L.Result:
        if self.gen == "old":  # huggingface-cli login/whoami/logout (no `auth` group)
            argv = argv[1:]
        return self.run(key, m, "cli", *argv)

    # -- the steps ---------------------------------------------------------------------
    def logins(self):
        for m in self.order:
            for label, tok in m.tokens.items():
                self.cli(f"login {m.account} {label}", m, "auth", "login", "--token", tok)

    def snoop(self, m: Member) -> L.Result:
        o = self.other(m)
        args = ["snoop", "--search", self.home, "--list", self.home,
                "--stat", self.home, "--stat", self.home / PRIVATE]
        for tok in list(o.tokens.values()) + list(m.tokens.values()) + [CONTROL]:
            args += ["--needle", tok]
        for p in (self.home / "token", self.home / "stored_tokens",
                  self.home / PRIVATE / str(o.user.uid) / "token", self.home / PRIVATE / str(m.user.uid) / "token"):
            args += ["--read", p]
        return self.run(f"snoop {m.account}", m, *args)

    def everything(self):
        a, b = self.alice, self.bob
        self.root_before = os.stat(self.home)
        self.logins()
        if self.gen == "new":
            self.cli("switch", a, "auth", "switch", "--token-name", a.name("work"))
            self.cli("list", a, "auth", "list")
        for m in (a, b):
            self.cli(f"whoami {m.account}", m, "auth", "whoami")
            self.run(f"state {m.account}", m, "auth-state")
        self.ctx.hub.reset_log()
        for m in (b, a):  # bob first: nothing cached yet when he asks
            self.run(f"gated {m.account}", m, "download", REPO_GATED, GATED_FILE)
        self.hub_log = self.ctx.hub.log()
        for m in (a, b):
            self.snoop(m)
        self.root_after_login = os.stat(self.home)
        # what root sees at the top of HF_HOME (plain: the one shared copy; hfcachefs: root's own)
        self.top_after_login = {n: os.lstat(self.home / n) for n in os.listdir(self.home)}
        tp = self.home / "token"
        self.token_text_after_login = tp.read_text() if tp.exists() else None
        # hfcachefs: the whole store as root sees it (regular files with their bytes)
        store = getattr(self.ctx.backend, "store", None)
        self.store_after_login = {} if store is None else {
            rel: (st, (store / rel).read_bytes() if stat.S_ISREG(st.st_mode) else None)
            for rel, st in L.walk(store).items()}
        self.cli("logout alice", a, "auth", "logout")
        for m in (a, b):
            self.run(f"state after logout {m.account}", m, "auth-state")

    # -- helpers for the assertions ------------------------------------------------------
    def active(self, m: Member) -> str:
        """The token m should end up with: the new generation switched alice back to "work"."""
        return m.tokens["work"]

    def whoami_printed(self, key: str) -> str | None:
        out = ok(self.r[key]) and self.r[key].data["stdout"]
        if self.gen == "new":
            found = re.search(r"^\s*user[:=] ?(\S+)$", out, re.M)
            return found.group(1) if found else None
        return out.splitlines()[0] if out else None

    def token_label(self, token: str | None) -> str | None:
        """"alice-work" for alice's work token (and so on), the token itself if unknown."""
        for m in (self.alice, self.bob):
            for label, t in m.tokens.items():
                if t == token:
                    return m.name(label)
        return token

    def gated_accounts(self, m: Member) -> set:
        return {e["account"] for e in self.hub_log
                if m.user.name in e["ua"] and "/" + REPO_GATED + "/" in e["path"]}


def describe_all(s: Scenario) -> str:
    return "\n\n".join(f"[{k}] " + v.describe() for k, v in s.r.items())


def events(r: L.Result, kind: str) -> list:
    return [e for e in r.data.get("events", []) if e[0] == kind]


def mode(st) -> int:
    return stat.S_IMODE(st.st_mode)


def assert_root_unchanged(s: Scenario):
    """The mount root (HF_HOME) stays root:GROUP 2770, for root and as the members see it,
    although hub >= 1.0 tried to chmod it 0700 while saving each token."""
    for st in (s.root_before, s.root_after_login, os.stat(s.home)):
        assert (mode(st), st.st_gid) == (0o2770, s.ctx.users.gid), f"HF_HOME: {mode(st):04o} gid {st.st_gid}"
    for key, r in s.r.items():
        if r.data.get("action") == "cli":
            for when in ("hf_home_before", "hf_home_after"):
                seen = r.data[when]
                assert seen.get("mode") == "0o2770" and seen.get("gid") == s.ctx.users.gid, f"[{key}] {when}: {seen}"
    if s.gen == "new":
        logins = [r for k, r in s.r.items() if k.startswith("login ") and r.ok]
        assert logins
        for r in logins:
            assert ["os.chmod", str(s.home), "0o700"] in events(r, "os.chmod"), \
                f"hub no longer chmods HF_HOME 0700: {r.data['events']}"


def assert_writes_as_documented(s: Scenario, r: L.Result):
    """What a successful login does under HF_HOME (recorded by hf_user's audit hook)."""
    home = str(s.home)
    writes = [(e[1], e[3] & O_WRITE_TRUNC) for e in events(r, "open") if e[3] & (os.O_WRONLY | os.O_RDWR)]
    if s.gen == "new":
        # _write_secret: O_CREAT|O_TRUNC (0600), chmod 0600, chmod HF_HOME 0700; stored_tokens first.
        assert writes == [(home + "/stored_tokens", O_WRITE_TRUNC), (home + "/token", O_WRITE_TRUNC)], r.data["events"]
        assert events(r, "os.chmod") == [["os.chmod", home + "/stored_tokens", "0o600"], ["os.chmod", home, "0o700"],
                                         ["os.chmod", home + "/token", "0o600"], ["os.chmod", home, "0o700"]], \
            "hub chmods each secret 0600, then HF_HOME 0700 (skipped when the first chmod fails): " \
            + repr(r.data["events"])
    else:
        # 0.20: Path.write_text (mode 0666 & ~umask), no chmod.
        assert writes == [(home + "/token", O_WRITE_TRUNC)] and not events(r, "os.chmod"), r.data["events"]
    assert not events(r, "os.rename") and not events(r, "os.remove"), r.data["events"]


def check_switch_and_list(s: Scenario):
    """alice logged in with "work" then "read" (active), switched back to "work"; `hf auth
    list` shows her two tokens, "work" active, and nobody else's."""
    a = s.alice
    r = ok(s.r["switch"]) and s.r["switch"]
    home = str(s.home)
    writes = [e[1] for e in events(r, "open") if e[3] & os.O_WRONLY]
    assert writes == [home + "/token"], r.data["events"]  # switch rewrites the token only
    listed = ok(s.r["list"]) and s.r["list"].data["stdout"]
    rows = {ln.split()[-2]: ln.lstrip().startswith("*") for ln in listed.splitlines()
            if len(ln.split()) >= 2 and ln.split()[-2].startswith(("alice-", "bob-"))}
    assert rows == {a.name("work"): True, a.name("read"): False}, listed


ORDERS = pytest.mark.parametrize("order", ["alice_first", "bob_first"])


# ----------------------------------------------------------------------------------------
# hfcachefs: every member keeps their own credentials
# ----------------------------------------------------------------------------------------
def check_hfcachefs(s: Scenario):
    ctx, a, b = s.ctx, s.alice, s.bob
    store = ctx.backend.store
    for m in (a, b):
        for label in m.tokens:
            ok(s.r[f"login {m.account} {label}"])

    # Each member stays themselves: their token, their account, their stored tokens only.
    for m in (a, b):
        o = s.other(m)
        st = ok(s.r[f"state {m.account}"])
        seen = {"hf auth whoami": s.whoami_printed(f"whoami {m.account}"), "whoami()": st.get("whoami"),
                "get_token()": s.token_label(st.get("token"))}
        if s.gen == "new":
            seen["stored tokens"] = sorted(st["stored"])
        want = {"hf auth whoami": m.account, "whoami()": m.account, "get_token()": m.name("work")}
        if s.gen == "new":
            want["stored tokens"] = sorted(m.name(lb) for lb in m.tokens)
        assert seen == want, f"{m.account} after the logins ({', '.join(x.account for x in s.order)}): {seen}"
        assert st["stored" if s.gen == "new" else "token"] == \
            ({m.name(lb): t for lb, t in m.tokens.items()} if s.gen == "new" else s.active(m))

    # Nothing of the other member's is readable anywhere in the mount.
    for m in (a, b):
        o = s.other(m)
        sn = ok(s.r[f"snoop {m.account}"])
        reads = sn["read"]
        assert reads[str(s.home / "token")] == {"ok": True, "text": s.active(m)}
        if s.gen == "new":
            ini = configparser.ConfigParser(interpolation=None)
            ini.read_string(reads[str(s.home / "stored_tokens")]["text"])
            assert {sec: ini[sec]["hf_token"] for sec in ini.sections()} == \
                {m.name(lb): t for lb, t in m.tokens.items()}
        else:
            assert reads[str(s.home / "stored_tokens")]["errno"] == errno.ENOENT
        for uid in (o.user.uid, m.user.uid):
            assert reads[str(s.home / PRIVATE / str(uid) / "token")]["errno"] == errno.ENOENT, reads
        assert sn["stat"][str(s.home / PRIVATE)] == {"errno": errno.ENOENT}
        # The private names are reached by name, not listed (README): members and root list
        # the same root (root's taken right after the snoops), without the private area.
        listing = sn["list"][str(s.home)]
        assert PRIVATE not in listing and listing == sorted(s.top_after_login), \
            f"{m.account} lists {listing}, root {sorted(s.top_after_login)}"
        for tok in o.tokens.values():
            assert sn["found"][tok] == [], f"{m.account} found {o.account}'s token: {sn['found'][tok]}"
        # The search did read the cache: it found the gated file alice downloaded (shared content).
        blob = s.ctx.storage(REPO_GATED) / "blobs" / ctx.hub.repo(REPO_GATED)["files"][GATED_FILE]["etag"]
        assert sn["found"][CONTROL] == [str(blob)], sn["found"][CONTROL]
        assert not sn["unreadable"], sn["unreadable"]

    # On disk (before alice's logout): each member's copy, theirs alone, 0600, in their own
    # private directory; no other copy of any token anywhere in the store.
    disk = s.store_after_login
    for m in (a, b):
        d = f"{PRIVATE}/{m.user.uid}"
        names = ["stored_tokens", "token"] if s.gen == "new" else ["token"]
        assert sorted(rel[len(d) + 1:] for rel in disk if rel.startswith(d + "/")) == names, sorted(disk)
        for name in names:
            st, data = disk[f"{d}/{name}"]
            assert stat.S_ISREG(st.st_mode) and st.st_uid == m.user.uid and mode(st) == 0o600, \
                f"{d}/{name}: uid {st.st_uid} mode {mode(st):04o}"
        assert disk[f"{d}/token"][1].decode().strip() == s.active(m)
    for m in (a, b):
        for tok in m.tokens.values():
            holders = sorted(rel for rel, (st, data) in disk.items() if data is not None and tok.encode() in data)
            expected = [f"{PRIVATE}/{m.user.uid}/stored_tokens"] if s.gen == "new" else []
            if tok == s.active(m):
                expected = sorted(expected + [f"{PRIVATE}/{m.user.uid}/token"])
            assert holders == expected, f"{m.account}'s token {s.token_label(tok)} is in {holders}"
    # Each login wrote the member's own files, exactly as on a private HF_HOME: in particular
    # chmod 0600 of a secret succeeds (it is the caller's), so hub goes on to chmod HF_HOME.
    for m in (a, b):
        for label in m.tokens:
            assert_writes_as_documented(s, s.r[f"login {m.account} {label}"])
    if s.gen == "new":
        check_switch_and_list(s)
    # Root sees root's own (none), and nothing private.
    assert not os.path.lexists(s.home / "token") and PRIVATE not in os.listdir(s.home)

    # The gated repo: bob is refused as bob, alice downloads as alice.
    rb = s.r["gated bob"]
    assert not rb.ok and rb.data["exc_type"] == "GatedRepoError", rb.describe()
    assert "403" in rb.data["exc_message"]
    man = ctx.hub.repo(REPO_GATED)["files"][GATED_FILE]
    assert ok(s.r["gated alice"])["sha256"] == man["sha256"]
    assert s.gated_accounts(b) == {"bob"} and s.gated_accounts(a) == {"alice"}, s.hub_log

    assert_root_unchanged(s)

    # alice logs out: her copies are gone, bob is still bob.
    r = ok(s.r["logout alice"]) and s.r["logout alice"]
    removed = sorted(e[1] for e in events(r, "os.remove"))
    assert removed == ([str(s.home / "stored_tokens"), str(s.home / "token")] if s.gen == "new"
                       else [str(s.home / "token")]), r.data["events"]
    sa = ok(s.r["state after logout alice"])
    assert sa.get("token") is None and sa["whoami_error"]["type"] == "LocalTokenNotFoundError", sa
    sb = ok(s.r["state after logout bob"])
    assert sb["token"] == s.active(b) and sb["whoami"] == "bob", sb
    assert not (store / PRIVATE / str(a.user.uid) / "token").exists()
    assert not (store / PRIVATE / str(a.user.uid) / "stored_tokens").exists()
    assert (store / PRIVATE / str(b.user.uid) / "token").read_text().strip() == s.active(b)
    check_policy(ctx)


@ORDERS
def test_secrets_two_members(make_ctx, order):
    ctx = make_ctx("022")  # each member's own umask is set per run (alice 002, bob 022)
    s = Scenario(ctx, order)
    s.everything()
    if ctx.plain:
        check_plain(s)
    else:
        check_hfcachefs(s)


# ----------------------------------------------------------------------------------------
# plain: what the setgid directory really does
# ----------------------------------------------------------------------------------------
def check_plain(s: Scenario):
    ctx, a, b = s.ctx, s.alice, s.bob
    home, gid = s.home, ctx.users.gid
    first, second = s.order
    top = s.top_after_login
    why = describe_all(s)

    def denied(key: str, path: Path):
        r = s.r[key]
        assert not r.ok and r.perm and r.perm["errno"] == errno.EACCES and r.perm["filename"] == str(path), \
            f"[{key}] expected PermissionError on {path}:\n" + r.describe()

    def state(key: str) -> dict:
        return ok(s.r[key])

    # hub's chmod of HF_HOME to 0700 fails for a member (root owns it) and is ignored.
    assert_root_unchanged(s)
    for label in first.tokens:
        r = s.r[f"login {first.account} {label}"]
        ok(r)
        assert_writes_as_documented(s, r)

    if s.gen == "new":
        # The first member's secrets are 0600: nothing leaks...
        for name in ("token", "stored_tokens"):
            st = top[name]
            assert (st.st_uid, st.st_gid, mode(st)) == (first.user.uid, gid, 0o600), f"{name}: {st}"
        for m in (a, b):
            sn = ok(s.r[f"snoop {m.account}"])
            for tok in s.other(m).tokens.values():
                assert sn["found"][tok] == [], why
        # ...but the second cannot log in: hub opens the first one's stored_tokens O_TRUNC for
        # writing (after reading it: configparser silently skips a file it cannot open).
        for label in second.tokens:
            key = f"login {second.account} {label}"
            denied(key, home / "stored_tokens")
            tried = [e[1] for e in events(s.r[key], "open") if e[3] & os.O_WRONLY]
            assert tried == [str(home / "stored_tokens")], s.r[key].data["events"]  # token untouched
        # From then on every hub call that looks for a token fails reading the first's token:
        # the second member is locked out, even of a download (here: the gated repo).
        denied(f"whoami {second.account}", home / "token")
        denied(f"gated {second.account}", home / "token")
        st2 = state(f"state {second.account}")
        assert st2["token_error"]["errno"] == errno.EACCES and st2["token_error"]["filename"] == str(home / "token")
        assert st2["stored"] == {}, st2  # unreadable stored_tokens reads as empty
        sn = ok(s.r[f"snoop {second.account}"])
        assert sorted(sn["unreadable"]) == sorted([str(home / "stored_tokens"), str(home / "token")]), sn
        assert sn["read"][str(home / "token")]["errno"] == errno.EACCES
        # The first member works normally.
        assert s.whoami_printed(f"whoami {first.account}") == first.account, why
        st1 = state(f"state {first.account}")
        assert st1["token"] == s.active(first) and st1["whoami"] == first.account
        assert st1["stored"] == {first.name(lb): t for lb, t in first.tokens.items()}
        if first is a:
            check_switch_and_list(s)
            assert ok(s.r["gated alice"])["sha256"] == ctx.hub.repo(REPO_GATED)["files"][GATED_FILE]["sha256"]
            assert s.gated_accounts(a) == {"alice"} and s.gated_accounts(b) == set(), s.hub_log
            # alice logs out (removes both files): bob is no longer locked out, but was never
            # logged in.
            r = s.r["logout alice"]
            assert sorted(e[1] for e in events(ok(r) and r, "os.remove")) == \
                [str(home / "stored_tokens"), str(home / "token")]
            assert state("state after logout alice")["token"] is None
            sb = state("state after logout bob")
            assert sb["token"] is None and sb["whoami_error"]["type"] == "LocalTokenNotFoundError", sb
        else:
            # alice (second) cannot switch (her names are not in bob's unreadable file),
            # list, or even log out.
            rs = s.r["switch"]
            assert not rs.ok and rs.data["rc"] == 1 and "alice-work not found" in rs.data["stderr"], rs.describe()
            denied("list", home / "token")
            denied("logout alice", home / "token")
            rb = s.r["gated bob"]
            assert not rb.ok and rb.data["exc_type"] == "GatedRepoError", rb.describe()
            assert s.gated_accounts(b) == {"bob"} and s.gated_accounts(a) == set(), s.hub_log
            assert state("state after logout alice")["token_error"]["errno"] == errno.EACCES
            sb = state("state after logout bob")
            assert sb["token"] == s.active(b) and sb["whoami"] == "bob", sb
        return

    # old generation: one `$HF_HOME/token`, written with the writer's umask, no stored_tokens.
    assert "stored_tokens" not in top
    tb = s.active(b)
    if first is a:
        # alice's token is 0664 (umask 002): bob's login rewrites it in place (O_TRUNC):
        # the file stays alice's, the token in it is bob's.
        ok(s.r["login bob work"])
        assert_writes_as_documented(s, s.r["login bob work"])
        st = top["token"]
        assert (st.st_uid, st.st_gid, mode(st)) == (a.user.uid, gid, 0o664), st
    else:
        # bob's token is 0644 (umask 022): alice's login is refused after validating hers...
        st = top["token"]
        assert (st.st_uid, st.st_gid, mode(st)) == (b.user.uid, gid, 0o644), st
        denied("login alice work", home / "token")
        assert "Token is valid" in s.r["login alice work"].data["stdout"]
    assert s.token_text_after_login == tb
    # ...either way alice is bob: she reads, shows and uses bob's token.
    for m in (a, b):
        assert s.whoami_printed(f"whoami {m.account}") == "bob", why
        st = state(f"state {m.account}")
        assert st["token"] == tb and st["whoami"] == "bob", st
        sn = ok(s.r[f"snoop {m.account}"])
        assert sn["read"][str(home / "token")] == {"ok": True, "text": tb}
        assert sn["found"][tb] == [str(home / "token")], sn
        assert sn["list"][str(home)] == ["hub", "token"], sn  # hub/: the refused downloads
    for m in (a, b):  # both are refused the gated repo, as bob
        r = s.r[f"gated {m.account}"]
        assert not r.ok and r.data["exc_type"] == "GatedRepoError", r.describe()
        assert s.gated_accounts(m) == {"bob"}, s.hub_log
    # alice's logout deletes the one token (any member may unlink in a 2770 dir): bob too
    # is logged out.
    r = s.r["logout alice"]
    assert [e[1] for e in events(ok(r) and r, "os.remove")] == [str(home / "token")]
    for m in (a, b):
        st = state(f"state after logout {m.account}")
        assert st["token"] is None and st["whoami_error"]["type"] == "LocalTokenNotFoundError", st
    assert not os.path.lexists(home / "token")
