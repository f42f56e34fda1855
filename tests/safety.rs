//! Root-daemon safety: nothing outside the store may be created, modified, chowned, chmodded
//! or read through the mount, even when the store changes underneath the daemon (a directory
//! or file swapped for a symlink between two requests, as another host could do).
//!
//! The stale-handle tests hold a file descriptor opened through the mount BEFORE the swap and
//! act relative to it (`*at()` calls, `/proc/self/fd/N/...`): the kernel then never resolves
//! the new symlink itself, every request goes to the daemon for the old node, so whatever
//! happens outside the store is the daemon's doing. The outside tree's atimes are set far in
//! the past, so (relatime) even a read or readdir by the daemon would show.

mod common;

use common::*;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const OUTSIDE_SECRET: &[u8] = b"outside-original: must never change\n";

/// Create a root-owned tree outside the store:
/// outside/{secret, onlyoutside, subdir/{inner}} with atime/mtime in 2001.
fn make_outside(m: &Mount) -> PathBuf {
    let out = m.base.fresh("outside");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("secret"), OUTSIDE_SECRET).unwrap();
    fs::write(out.join("onlyoutside"), b"only outside\n").unwrap();
    fs::create_dir(out.join("subdir")).unwrap();
    fs::write(out.join("subdir/inner"), b"inner outside\n").unwrap();
    for (rel, mode) in [
        ("", 0o755),
        ("secret", 0o644),
        ("onlyoutside", 0o644),
        ("subdir", 0o755),
        ("subdir/inner", 0o644),
    ] {
        let p = if rel.is_empty() {
            out.clone()
        } else {
            out.join(rel)
        };
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        lchown(&p, 0, 0).unwrap();
    }
    for rel in ["secret", "onlyoutside", "subdir/inner", "subdir", ""] {
        let p = if rel.is_empty() {
            out.clone()
        } else {
            out.join(rel)
        };
        utimensat(
            libc::AT_FDCWD,
            &p,
            ts(978_307_200, 0),
            ts(978_307_200, 0),
            libc::AT_SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }
    out
}

/// Outcome log of the attack operations (for the failure message only: errors are fine,
/// touching the outside is not).
#[derive(Default)]
struct Log(Vec<String>);
impl Log {
    fn note<T: std::fmt::Debug>(&mut self, what: &str, r: io::Result<T>) -> Option<T> {
        match r {
            Ok(v) => {
                self.0.push(format!("{what}: ok {v:?}"));
                Some(v)
            }
            Err(e) => {
                self.0.push(format!(
                    "{what}: {}",
                    errno_name(e.raw_os_error().unwrap_or(-1))
                ));
                None
            }
        }
    }
}

fn c(s: &str) -> std::ffi::CString {
    cs(s)
}

fn r0(r: libc::c_int) -> io::Result<()> {
    cvt(r).map(|_| ())
}

/// Everything one can do relative to a directory fd `dfd` (and its subdir fd `sfd`) that the
/// daemon still knows as the old directory. `root_fd` is an fd of the mount root.
fn attack_dir(
    dfd: RawFd,
    sfd: RawFd,
    root_fd: RawFd,
    as_root: bool,
    uid: u32,
    gid: u32,
) -> (Vec<String>, Vec<String>) {
    let mut log = Log::default();
    let mut violations = Vec::new();
    let proc_d = format!("/proc/self/fd/{dfd}");

    // lookups / reads first
    let cn = c("onlyoutside");
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let r = r0(unsafe { libc::fstatat(dfd, cn.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) });
    if r.is_ok() {
        violations.push("lookup of `onlyoutside` in the swapped dir succeeded: the daemon resolved through the symlink".into());
    }
    log.note("fstatat onlyoutside", r);
    if let Some(fd) = log.note(
        "openat secret O_RDONLY",
        openat(dfd, "secret", libc::O_RDONLY, 0),
    ) {
        let data = read_fd_all(fd.as_raw_fd());
        if let Ok(d) = &data {
            if d.as_slice() == OUTSIDE_SECRET {
                violations.push(
                    "reading `secret` in the swapped dir returned the OUTSIDE file's content"
                        .into(),
                );
            }
        }
        log.note("read secret", data.map(|d| d.len()));
    }
    if let Some(fd) = log.note(
        "openat . (readdir)",
        openat(dfd, ".", libc::O_RDONLY | libc::O_DIRECTORY, 0),
    ) {
        if let Some(names) = log.note("readdir", list_fd(fd)) {
            if names.iter().any(|n| n == "onlyoutside") {
                violations.push(format!(
                    "readdir of the swapped dir listed the OUTSIDE dir: {names:?}"
                ));
            }
        }
    }

    // writes
    if let Some(fd) = log.note(
        "create newfile",
        openat(
            dfd,
            "newfile",
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
            0o644,
        ),
    ) {
        log.note("write newfile", write_fd(fd.as_raw_fd(), b"pwned"));
    }
    if let Some(fd) = log.note(
        "open secret O_WRONLY",
        openat(dfd, "secret", libc::O_WRONLY, 0),
    ) {
        log.note("write secret", write_fd(fd.as_raw_fd(), b"pwned"));
        log.note("fsync secret", r0(unsafe { libc::fsync(fd.as_raw_fd()) }));
        log.note("fallocate secret", fallocate(fd.as_raw_fd(), 0, 0, 1 << 16));
        log.note(
            "ftruncate secret",
            r0(unsafe { libc::ftruncate(fd.as_raw_fd(), 1) }),
        );
    }
    log.note(
        "open onlyoutside O_WRONLY|O_TRUNC",
        openat(dfd, "onlyoutside", libc::O_WRONLY | libc::O_TRUNC, 0),
    );
    log.note(
        "open secret O_TRUNC",
        openat(dfd, "secret", libc::O_WRONLY | libc::O_TRUNC, 0),
    );
    log.note(
        "truncate via /proc path",
        truncate(Path::new(&format!("{proc_d}/secret")), 0),
    );
    log.note(
        "truncate onlyoutside via /proc path",
        truncate(Path::new(&format!("{proc_d}/onlyoutside")), 0),
    );

    // metadata
    let name = c("secret");
    log.note(
        "fchmodat secret 0777",
        r0(unsafe { libc::fchmodat(dfd, name.as_ptr(), 0o777, 0) }),
    );
    log.note(
        "fchownat secret",
        r0(unsafe {
            libc::fchownat(
                dfd,
                name.as_ptr(),
                if as_root { 65534 } else { uid },
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        }),
    );
    let t = [ts(0, libc::UTIME_NOW), ts(0, libc::UTIME_NOW)];
    log.note(
        "utimensat secret NOW",
        r0(unsafe { libc::utimensat(dfd, name.as_ptr(), t.as_ptr(), 0) }),
    );
    let t2 = [ts(1, 0), ts(2, 0)];
    log.note(
        "utimensat secret explicit",
        r0(unsafe { libc::utimensat(dfd, name.as_ptr(), t2.as_ptr(), 0) }),
    );
    log.note(
        "setxattr secret",
        lsetxattr(Path::new(&format!("{proc_d}/secret")), "user.pwn", b"1", 0),
    );
    log.note(
        "setxattr onlyoutside",
        lsetxattr(
            Path::new(&format!("{proc_d}/onlyoutside")),
            "user.pwn",
            b"1",
            0,
        ),
    );
    log.note(
        "removexattr secret",
        lremovexattr(Path::new(&format!("{proc_d}/secret")), "user.x"),
    );
    // on the swapped directory node itself
    log.note("fchmod dir", r0(unsafe { libc::fchmod(dfd, 0o777) }));
    log.note(
        "fchown dir",
        r0(unsafe { libc::fchown(dfd, if as_root { 65534 } else { uid }, gid) }),
    );
    log.note(
        "fsetxattr dir",
        r0(unsafe {
            let n = c("user.pwn");
            libc::fsetxattr(dfd, n.as_ptr(), b"1".as_ptr().cast(), 1, 0)
        }),
    );
    log.note("futimens dir", futimens(dfd, ts(3, 0), ts(4, 0)));
    log.note("fsync dir", r0(unsafe { libc::fsync(dfd) }));

    // namespace changes
    log.note(
        "mkdirat newdir",
        r0(unsafe { libc::mkdirat(dfd, c("newdir").as_ptr(), 0o755) }),
    );
    log.note(
        "symlinkat newlink",
        r0(unsafe { libc::symlinkat(c("/etc/passwd").as_ptr(), dfd, c("newlink").as_ptr()) }),
    );
    log.note(
        "mknodat fifo",
        r0(unsafe { libc::mknodat(dfd, c("newfifo").as_ptr(), libc::S_IFIFO | 0o644, 0) }),
    );
    log.note(
        "renameat secret->renamed",
        r0(unsafe { libc::renameat(dfd, c("secret").as_ptr(), dfd, c("renamed").as_ptr()) }),
    );
    log.note(
        "renameat onlyoutside->x",
        r0(unsafe { libc::renameat(dfd, c("onlyoutside").as_ptr(), dfd, c("x").as_ptr()) }),
    );
    log.note(
        "renameat root/other/file -> dir/moved_in",
        r0(unsafe {
            libc::renameat(
                root_fd,
                c("other/file").as_ptr(),
                dfd,
                c("moved_in").as_ptr(),
            )
        }),
    );
    log.note(
        "renameat dir/onlyoutside -> root/stolen",
        r0(unsafe {
            libc::renameat(
                dfd,
                c("onlyoutside").as_ptr(),
                root_fd,
                c("stolen").as_ptr(),
            )
        }),
    );
    log.note(
        "renameat2 EXCHANGE onlyoutside<->root/other/file2",
        r0(unsafe {
            libc::renameat2(
                dfd,
                c("onlyoutside").as_ptr(),
                root_fd,
                c("other/file2").as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        }),
    );
    log.note(
        "linkat renamed->hardlink",
        r0(unsafe { libc::linkat(dfd, c("renamed").as_ptr(), dfd, c("hardlink").as_ptr(), 0) }),
    );
    log.note(
        "linkat root/other/file3 -> dir/linked_in",
        r0(unsafe {
            libc::linkat(
                root_fd,
                c("other/file3").as_ptr(),
                dfd,
                c("linked_in").as_ptr(),
                0,
            )
        }),
    );
    log.note(
        "linkat dir/onlyoutside -> root/stolen2",
        r0(unsafe {
            libc::linkat(
                dfd,
                c("onlyoutside").as_ptr(),
                root_fd,
                c("stolen2").as_ptr(),
                0,
            )
        }),
    );
    // nested: the subdir handle (its store dir was swapped as well)
    if let Some(fd) = log.note(
        "open subdir/inner O_WRONLY|O_TRUNC",
        openat(sfd, "inner", libc::O_WRONLY | libc::O_TRUNC, 0),
    ) {
        log.note("write inner", write_fd(fd.as_raw_fd(), b"pwned"));
    }
    log.note("fchmod subdir", r0(unsafe { libc::fchmod(sfd, 0o777) }));
    log.note(
        "create in subdir",
        openat(sfd, "new-in-sub", libc::O_CREAT | libc::O_WRONLY, 0o644),
    );
    log.note(
        "unlinkat subdir/inner",
        r0(unsafe { libc::unlinkat(sfd, c("inner").as_ptr(), 0) }),
    );
    // deletions last
    log.note(
        "unlinkat onlyoutside",
        r0(unsafe { libc::unlinkat(dfd, c("onlyoutside").as_ptr(), 0) }),
    );
    log.note(
        "unlinkat renamed",
        r0(unsafe { libc::unlinkat(dfd, c("renamed").as_ptr(), 0) }),
    );
    log.note(
        "unlinkat secret",
        r0(unsafe { libc::unlinkat(dfd, c("secret").as_ptr(), 0) }),
    );
    log.note(
        "rmdir subdir",
        r0(unsafe { libc::unlinkat(dfd, c("subdir").as_ptr(), libc::AT_REMOVEDIR) }),
    );
    log.note(
        "rmdir newdir",
        r0(unsafe { libc::unlinkat(dfd, c("newdir").as_ptr(), libc::AT_REMOVEDIR) }),
    );
    (log.0, violations)
}

/// Build the store layout through the mount, open the handles, then swap `d` (and
/// `d/subdir`) for symlinks to the outside tree directly in the store.
struct DirSwap {
    out: PathBuf,
    dfd: OwnedFd,
    sfd: OwnedFd,
    root_fd: OwnedFd,
}

fn setup_dir_swap(m: &Mount) -> DirSwap {
    let out = make_outside(m);
    // Through the mount as root: group-writable dirs/files members can use.
    fs::create_dir_all(m.p("d/subdir")).unwrap();
    fs::write(m.p("d/secret"), b"inside the store\n").unwrap();
    fs::write(m.p("d/subdir/inner"), b"inner inside\n").unwrap();
    fs::create_dir(m.p("other")).unwrap();
    for f in ["file", "file2", "file3"] {
        fs::write(m.p(&format!("other/{f}")), b"other").unwrap();
    }
    let dfd = open(&m.p("d"), libc::O_RDONLY | libc::O_DIRECTORY, 0).ctx("open d");
    let sfd = open(&m.p("d/subdir"), libc::O_RDONLY | libc::O_DIRECTORY, 0).ctx("open d/subdir");
    let root_fd = open(&m.mnt, libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
    // The swap, done in the store "by another host" between two requests.
    fs::rename(m.s("d/subdir"), m.s("d/subdir.old")).unwrap();
    std::os::unix::fs::symlink(out.join("subdir"), m.s("d/subdir")).unwrap();
    fs::rename(m.s("d"), m.s("d.old")).unwrap();
    std::os::unix::fs::symlink(&out, m.s("d")).unwrap();
    DirSwap {
        out,
        dfd,
        sfd,
        root_fd,
    }
}

fn check_dir_swap(m: &Mount, as_user_: Option<&User>) {
    let sw = setup_dir_swap(m);
    let before = snapshot(&sw.out, true);
    let (dfd, sfd, rfd) = (
        sw.dfd.as_raw_fd(),
        sw.sfd.as_raw_fd(),
        sw.root_fd.as_raw_fd(),
    );
    let g = m.users.gid;
    let (log, violations) = match as_user_ {
        None => timed("attack as root", move || {
            attack_dir(dfd, sfd, rfd, true, 0, g)
        }),
        Some(u) => {
            let uid = u.uid;
            as_user(u, 0o022, move || attack_dir(dfd, sfd, rfd, false, uid, g))
        }
    };
    let after = snapshot(&sw.out, true);
    let ctx = format!("operations:\n  {}", log.join("\n  "));
    assert!(violations.is_empty(), "{}\n{ctx}", violations.join("\n"));
    if before != after {
        assert_same_snapshot(&before, &after, &ctx);
    }
    // The daemon must not have followed the symlinks to create entries anywhere else either.
    assert!(lst(&sw.out.join("newfile")).is_err(), "{ctx}");
    eprintln!("{ctx}");
}

#[test]
fn swapped_dir_between_requests_as_root() {
    let m = Mount::new();
    check_dir_swap(&m, None);
}

#[test]
fn swapped_dir_between_requests_as_member() {
    let m = Mount::new();
    let a = m.users.a.clone();
    check_dir_swap(&m, Some(&a));
}

/// Swap a FILE for a symlink to an outside file while the daemon holds its node (an O_PATH fd
/// and an O_RDWR fd opened through the mount before the swap).
fn check_file_swap(m: &Mount, as_user_: Option<&User>) {
    let out = make_outside(m);
    fs::write(m.p("f"), b"inside the store\n").unwrap();
    let pfd = open(&m.p("f"), libc::O_PATH, 0).ctx("O_PATH f");
    let rwfd = open(&m.p("f"), libc::O_RDWR, 0).ctx("O_RDWR f");
    let root_fd = open(&m.mnt, libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
    fs::rename(m.s("f"), m.s("f.old")).unwrap();
    std::os::unix::fs::symlink(out.join("secret"), m.s("f")).unwrap();
    let before = snapshot(&out, true);

    let (p, rw, rfd) = (pfd.as_raw_fd(), rwfd.as_raw_fd(), root_fd.as_raw_fd());
    let is_root = as_user_.is_none();
    let g = m.users.gid;
    let uid = as_user_.map(|u| u.uid).unwrap_or(0);
    let attack = move || {
        let mut log = Log::default();
        let mut violations = Vec::new();
        let pp = PathBuf::from(format!("/proc/self/fd/{p}"));
        // re-open of the old node (the kernel sends OPEN for the old node id)
        if let Some(fd) = log.note("reopen O_RDONLY", open(&pp, libc::O_RDONLY, 0)) {
            if let Ok(d) = read_fd_all(fd.as_raw_fd()) {
                if d == OUTSIDE_SECRET {
                    violations
                        .push("re-opening the swapped file read the OUTSIDE file".to_string());
                }
            }
        }
        if let Ok(d) = pread_fd(rw, 4096, 0) {
            if d == OUTSIDE_SECRET {
                violations.push(
                    "reading the open fd of the swapped file returned the OUTSIDE file".to_string(),
                );
            }
        }
        if let Some(fd) = log.note(
            "reopen O_WRONLY|O_TRUNC",
            open(&pp, libc::O_WRONLY | libc::O_TRUNC, 0),
        ) {
            log.note("write", write_fd(fd.as_raw_fd(), b"pwned"));
        }
        log.note(
            "reopen O_RDWR|O_APPEND + write",
            open(&pp, libc::O_RDWR | libc::O_APPEND, 0)
                .and_then(|fd| write_fd(fd.as_raw_fd(), b"pwned")),
        );
        log.note("truncate /proc path", truncate(&pp, 0));
        log.note("chmod /proc path", chmod(&pp, 0o777));
        log.note("chown /proc path", {
            let cp = cs(&pp);
            r0(unsafe { libc::chown(cp.as_ptr(), if is_root { 65534 } else { uid }, g) })
        });
        log.note(
            "utimensat /proc path",
            utimensat(libc::AT_FDCWD, &pp, ts(1, 0), ts(2, 0), 0),
        );
        log.note("setxattr /proc path", {
            let (cp, cn) = (cs(&pp), cs("user.pwn"));
            r0(unsafe { libc::setxattr(cp.as_ptr(), cn.as_ptr(), b"1".as_ptr().cast(), 1, 0) })
        });
        log.note("pwrite old fd", pwrite_fd(rw, b"pwned", 0));
        log.note("ftruncate old fd", r0(unsafe { libc::ftruncate(rw, 3) }));
        log.note("fallocate old fd", fallocate(rw, 0, 0, 1 << 16));
        log.note("fsync old fd", r0(unsafe { libc::fsync(rw) }));
        log.note("fchmod old fd", r0(unsafe { libc::fchmod(rw, 0o777) }));
        log.note(
            "fchown old fd",
            r0(unsafe { libc::fchown(rw, if is_root { 65534 } else { uid }, g) }),
        );
        log.note(
            "fsetxattr old fd",
            r0(unsafe {
                let n = cs("user.pwn2");
                libc::fsetxattr(rw, n.as_ptr(), b"1".as_ptr().cast(), 1, 0)
            }),
        );
        log.note(
            "linkat AT_EMPTY_PATH old node -> root/stolen",
            r0(unsafe {
                libc::linkat(
                    p,
                    c("").as_ptr(),
                    rfd,
                    c("stolen").as_ptr(),
                    libc::AT_EMPTY_PATH,
                )
            }),
        );
        log.note("linkat via /proc (follow) -> root/stolen2", {
            let cp = cs(&pp);
            r0(unsafe {
                libc::linkat(
                    libc::AT_FDCWD,
                    cp.as_ptr(),
                    rfd,
                    c("stolen2").as_ptr(),
                    libc::AT_SYMLINK_FOLLOW,
                )
            })
        });
        // copy_file_range from the old node into a new file
        if let Some(dst) = log.note(
            "create copy dst",
            openat(
                rfd,
                "copy",
                libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC,
                0o644,
            ),
        ) {
            log.note(
                "copy_file_range old fd -> copy",
                copy_file_range(rw, Some(0), dst.as_raw_fd(), Some(0), 4096),
            );
        }
        (log.0, violations)
    };
    let (log, violations) = match as_user_ {
        None => timed("file attack as root", attack),
        Some(u) => as_user(u, 0o022, attack),
    };
    let after = snapshot(&out, true);
    let ctx = format!("operations:\n  {}", log.join("\n  "));
    assert!(violations.is_empty(), "{}\n{ctx}", violations.join("\n"));
    if let Ok(d) = fs::read(m.s("copy")) {
        assert_ne!(
            d, OUTSIDE_SECRET,
            "copy_file_range copied the OUTSIDE file\n{ctx}"
        );
    }
    for stolen in ["stolen", "stolen2"] {
        if let Ok(s) = lst(&m.s(stolen)) {
            let o = lst(&out.join("secret")).unwrap();
            assert!(
                !(s.ino == o.ino && s.dev == o.dev),
                "{stolen} in the store is a hard link to the OUTSIDE file\n{ctx}"
            );
        }
    }
    if before != after {
        assert_same_snapshot(&before, &after, &ctx);
    }
    eprintln!("{ctx}");
    drop((pfd, rwfd, root_fd));
}

#[test]
fn swapped_file_between_requests_as_root() {
    let m = Mount::new();
    check_file_swap(&m, None);
}

#[test]
fn swapped_file_between_requests_as_member() {
    let m = Mount::new();
    let a = m.users.a.clone();
    check_file_swap(&m, Some(&a));
}

#[test]
fn store_symlink_to_outside_is_only_a_link() {
    let m = Mount::new();
    let out = make_outside(&m);
    let u = m.users;
    // Placed directly in the store (another host, or a user on a shared store).
    std::os::unix::fs::symlink(&out, m.s("lnk")).unwrap();
    std::os::unix::fs::symlink(out.join("secret"), m.s("flnk")).unwrap();
    let before = snapshot(&out, true);

    // Only readable as a link.
    assert_eq!(
        readlink(&m.p("lnk")).ctx("readlink lnk"),
        out.display().to_string()
    );
    assert!(m.mst("lnk").is_symlink());
    assert!(m.mst("flnk").is_symlink());
    assert_errno(
        open(&m.p("lnk"), libc::O_RDONLY | libc::O_NOFOLLOW, 0),
        &[libc::ELOOP],
        "O_NOFOLLOW on lnk",
    );
    assert_errno(
        open(&m.p("flnk"), libc::O_WRONLY | libc::O_NOFOLLOW, 0),
        &[libc::ELOOP],
        "O_NOFOLLOW on flnk",
    );

    // Operations on the link node itself, as root, must act on the link (in the store), never
    // follow it (the daemon is root).
    let mut log = Log::default();
    log.note("lchown lnk", lchown(&m.p("lnk"), u.a.uid, u32::MAX));
    log.note("lchown flnk", lchown(&m.p("flnk"), u.a.uid, u.gid));
    log.note(
        "utimensat NOFOLLOW lnk",
        utimensat(
            libc::AT_FDCWD,
            &m.p("lnk"),
            ts(5, 0),
            ts(6, 0),
            libc::AT_SYMLINK_NOFOLLOW,
        ),
    );
    log.note(
        "utimensat NOFOLLOW flnk",
        utimensat(
            libc::AT_FDCWD,
            &m.p("flnk"),
            ts(5, 0),
            ts(6, 0),
            libc::AT_SYMLINK_NOFOLLOW,
        ),
    );
    log.note("lsetxattr lnk", lsetxattr(&m.p("lnk"), "user.pwn", b"1", 0));
    log.note("lremovexattr flnk", lremovexattr(&m.p("flnk"), "user.pwn"));
    log.note("link flnk -> flnk2", link(&m.p("flnk"), &m.p("flnk2")));
    log.note("rename flnk -> flnk3", rename(&m.p("flnk"), &m.p("flnk3")));
    let link_fd = log.note(
        "open flnk3 O_PATH|O_NOFOLLOW",
        open(&m.p("flnk3"), libc::O_PATH | libc::O_NOFOLLOW, 0),
    );
    let lfd = link_fd.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1);
    log.note(
        "fchownat(AT_EMPTY_PATH) on an O_PATH fd of the link",
        r0(unsafe { libc::fchownat(lfd, c("").as_ptr(), u.b.uid, u32::MAX, libc::AT_EMPTY_PATH) }),
    );
    let after = snapshot(&out, true);
    let ctx = format!("operations:\n  {}", log.0.join("\n  "));
    assert_same_snapshot(
        &before,
        &after,
        &format!("root acting on store symlinks\n{ctx}"),
    );

    // As a member, following the link happens in the kernel with the member's rights: reading
    // the world-readable outside file is the member's own business, writing is refused.
    let (mnt, outp) = (m.mnt.clone(), out.clone());
    let res = as_user(&u.a, 0o022, move || {
        let mut v = vec![
            (
                "create lnk/newfile",
                open(
                    &mnt.join("lnk/newfile"),
                    libc::O_CREAT | libc::O_WRONLY,
                    0o644,
                )
                .map(drop),
            ),
            (
                "open flnk3 O_WRONLY",
                open(&mnt.join("flnk3"), libc::O_WRONLY, 0).map(drop),
            ),
            ("truncate lnk/secret", truncate(&mnt.join("lnk/secret"), 0)),
            ("mkdir lnk/newdir", mkdir(&mnt.join("lnk/newdir"), 0o755)),
            ("unlink lnk/secret", unlink(&mnt.join("lnk/secret"))),
        ];
        let _ = fs::write(mnt.join("mine"), b"mine");
        v.push((
            "rename into lnk/",
            rename(&mnt.join("mine"), &mnt.join("lnk/x")),
        ));
        v.push((
            "rename into outside dir",
            rename(&mnt.join("mine"), &outp.join("y")),
        ));
        v
    });
    for (what, r) in res {
        assert!(
            r.is_err(),
            "member {what} through a store symlink to a root-owned outside dir succeeded"
        );
    }
    let after2 = snapshot(&out, false);
    let mut before_na = before.clone();
    for e in before_na.values_mut() {
        e.atime = None;
    }
    assert_same_snapshot(&before_na, &after2, "member following store symlinks");
    assert!(lst(&out.join("newfile")).is_err());
    drop(link_fd);
}

#[test]
fn dotdot_at_mount_root_stays_inside() {
    let m = Mount::new();
    let base = lst(&m.base.dir).unwrap();
    let private = lst(&m.base.dir.join("private")).unwrap();
    // `..` of the mount root is the mountpoint's parent (VFS), never the store's parent.
    let up = stf(&m.p("..")).ctx("stat mnt/..");
    assert_eq!(
        (up.dev, up.ino),
        (base.dev, base.ino),
        "mnt/.. must be the mountpoint's parent"
    );
    assert_ne!(
        (up.dev, up.ino),
        (private.dev, private.ino),
        "mnt/.. must not be the store's parent"
    );
    fs::create_dir_all(m.p("a/b")).unwrap();
    let up2 = stf(&m.p("a/b/../../..")).unwrap();
    assert_eq!((up2.dev, up2.ino), (base.dev, base.ino));
    let root_fd = open(&m.mnt, libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
    let upfd = openat(
        root_fd.as_raw_fd(),
        "..",
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
    )
    .unwrap();
    let s = fst(upfd.as_raw_fd()).unwrap();
    assert_eq!((s.dev, s.ino), (base.dev, base.ino));
    let listing = names(&m.p("..")).unwrap();
    assert!(!listing.contains(&"store".to_string()), "{listing:?}");
    // The `..` entry of the mount root as listed through readdir is not the store's parent's.
    let raw = list_dir_raw(&m.mnt, false).unwrap();
    assert!(raw.contains(&"..".to_string()));
    // A relative symlink in the store climbing out resolves in the caller's view (kernel side).
    std::os::unix::fs::symlink("../..", m.s("up")).unwrap();
    assert_eq!(readlink(&m.p("up")).unwrap(), "../..");
    let via = stf(&m.p("up")).unwrap();
    let base_parent = stf(&m.base.dir.join("..")).unwrap();
    assert_eq!(
        (via.dev, via.ino),
        (base_parent.dev, base_parent.ino),
        "store symlink ../.. resolves from the mountpoint"
    );
    // Names with `..`-like tricks are just names.
    assert_errno(lst(&m.p("a/b/...")), &[libc::ENOENT], "lookup of `...`");
}

#[test]
fn store_symlink_to_etc_resolves_in_the_callers_view() {
    let m = Mount::new();
    std::os::unix::fs::symlink("/etc", m.s("etclink")).unwrap();
    assert_eq!(readlink(&m.p("etclink")).unwrap(), "/etc");
    assert!(m.mst("etclink").is_symlink());
    let via = stf(&m.p("etclink/passwd")).ctx("stat through etclink");
    let real = stf(Path::new("/etc/passwd")).unwrap();
    assert_eq!(
        (via.dev, via.ino),
        (real.dev, real.ino),
        "kernel-side resolution to the caller's /etc"
    );
    // An outsider is refused at the mount root before anything is followed.
    let p = m.p("etclink/passwd");
    assert_errno(
        as_user(&m.users.c, 0o022, move || fs::read(p)),
        &[libc::EACCES],
        "outsider through etclink",
    );
}
