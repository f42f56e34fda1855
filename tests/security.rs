//! Security of the root daemon (issue 4, section 4), through real mounts as real users.
//!
//! * `race_*`: a bounded-time loop in which root, acting directly in the store (as another
//!   host sharing it could), swaps directories and files for symlinks to a root-only
//!   directory outside the store (atomically with RENAME_EXCHANGE and by rename+symlink, and
//!   hijacks entries members just made), while members, through the mount, create, chmod,
//!   chown, rename, link, truncate, set xattrs, mkdir, unlink, symlink, utimens, read and
//!   list (by path and relative to directory descriptors held across the swaps). Proof that
//!   nothing outside was read, written, created, chowned or chmodded: a full snapshot (names,
//!   contents, modes, owners, sizes, inode numbers, mtimes, ctimes and atimes, the latter set
//!   to 2001 so that relatime would record any read) before and after, and inotify watches on
//!   every outside directory during the loop (any open, access, modify, attrib, create,
//!   delete or move event fails the test). Attempts are counted and printed.
//! * hard links to files the caller cannot write, setuid/setgid/sticky, file capabilities,
//!   device nodes and sockets, FIFOs, security./trusted./system. xattrs, names with newlines
//!   and invalid UTF-8, 255/256-byte names, a 200-deep tree: each with its right answer.
//! * outsiders and members of another group learn nothing (EACCES, never ENOENT).
//! * the daemon's capabilities (reported, and the proposed reduced set shown to suffice)
//!   and that it never executes anything (strace of the running daemon during a workload).
//!
//! Durations: HFSEC_RACE_SECS (default 20) for each race loop.

mod common;

use common::*;
use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Small syscall helpers (exact errno), bytes names
// ---------------------------------------------------------------------------------------------

fn cb(b: &[u8]) -> CString {
    CString::new(b).expect("NUL in name")
}

fn r0(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn openat_b(dfd: RawFd, name: &[u8], flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let c = cb(name);
    let fd = unsafe {
        libc::openat(
            dfd,
            c.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

fn mkdirat_b(dfd: RawFd, name: &[u8], mode: u32) -> io::Result<()> {
    let c = cb(name);
    r0(unsafe { libc::mkdirat(dfd, c.as_ptr(), mode as libc::mode_t) })
}

fn unlinkat_b(dfd: RawFd, name: &[u8], flags: i32) -> io::Result<()> {
    let c = cb(name);
    r0(unsafe { libc::unlinkat(dfd, c.as_ptr(), flags) })
}

fn renameat2_b(d1: RawFd, n1: &[u8], d2: RawFd, n2: &[u8], flags: u32) -> io::Result<()> {
    let (a, b) = (cb(n1), cb(n2));
    r0(unsafe { libc::renameat2(d1, a.as_ptr(), d2, b.as_ptr(), flags) })
}

fn symlinkat_b(target: &[u8], dfd: RawFd, name: &[u8]) -> io::Result<()> {
    let (t, n) = (cb(target), cb(name));
    r0(unsafe { libc::symlinkat(t.as_ptr(), dfd, n.as_ptr()) })
}

fn linkat_b(d1: RawFd, n1: &[u8], d2: RawFd, n2: &[u8], flags: i32) -> io::Result<()> {
    let (a, b) = (cb(n1), cb(n2));
    r0(unsafe { libc::linkat(d1, a.as_ptr(), d2, b.as_ptr(), flags) })
}

fn fchmodat_b(dfd: RawFd, name: &[u8], mode: u32) -> io::Result<()> {
    let c = cb(name);
    r0(unsafe { libc::fchmodat(dfd, c.as_ptr(), mode as libc::mode_t, 0) })
}

fn fchownat_b(dfd: RawFd, name: &[u8], uid: u32, gid: u32, flags: i32) -> io::Result<()> {
    let c = cb(name);
    r0(unsafe { libc::fchownat(dfd, c.as_ptr(), uid, gid, flags) })
}

fn fstatat_b(dfd: RawFd, name: &[u8], flags: i32) -> io::Result<libc::stat> {
    let c = cb(name);
    let mut s: libc::stat = unsafe { std::mem::zeroed() };
    r0(unsafe { libc::fstatat(dfd, c.as_ptr(), &mut s, flags) })?;
    Ok(s)
}

fn stat_errno(p: &Path) -> Option<i32> {
    errno_of(&lst(p))
}

fn setxattr_p(p: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let (cp, cn) = (cs(p), cs(name));
    r0(unsafe {
        libc::setxattr(
            cp.as_ptr(),
            cn.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

fn errno_str<T>(r: &io::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => errno_name(e.raw_os_error().unwrap_or(-1)),
    }
}

fn race_secs() -> u64 {
    std::env::var("HFSEC_RACE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

/// xorshift64* (deterministic per seed, seeds printed on failure).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut s = self.0;
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        self.0 = s;
        s.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Counters by operation and outcome (for the report; outcomes are free, touching outside is not).
#[derive(Default)]
struct Tally(BTreeMap<String, u64>);
impl Tally {
    fn add<T>(&mut self, op: &str, r: &io::Result<T>) {
        *self.0.entry(format!("{op}:{}", errno_str(r))).or_insert(0) += 1;
    }
    fn merge(&mut self, o: Tally) {
        for (k, v) in o.0 {
            *self.0.entry(k).or_insert(0) += v;
        }
    }
    fn total(&self) -> u64 {
        self.0.values().sum()
    }
    fn ops(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for (k, v) in &self.0 {
            *m.entry(k.split(':').next().unwrap().to_string())
                .or_insert(0) += v;
        }
        m
    }
}

// ---------------------------------------------------------------------------------------------
// The outside tree, its snapshot and inotify watches
// ---------------------------------------------------------------------------------------------

const T2001: i64 = 978_307_200;

/// A root-only tree outside the store: secret (0600 root), canary, sub/{inner, deeper/leaf}.
/// Times (atime too) are set to 2001 so any read would move the atime (relatime).
fn make_outside(m: &Mount, stem: &str) -> PathBuf {
    let out = m.base.fresh(stem);
    fs::create_dir(&out).unwrap();
    fs::write(
        out.join("secret"),
        b"root-owned secret: must never be read or changed\n",
    )
    .unwrap();
    fs::write(out.join("canary"), b"canary: its atime must never move\n").unwrap();
    fs::create_dir_all(out.join("sub/deeper")).unwrap();
    fs::write(out.join("sub/inner"), b"inner\n").unwrap();
    fs::write(out.join("sub/deeper/leaf"), b"leaf\n").unwrap();
    let modes = [
        ("sub/deeper/leaf", 0o644),
        ("sub/deeper", 0o755),
        ("sub/inner", 0o644),
        ("sub", 0o755),
        ("secret", 0o600),
        ("canary", 0o644),
        ("", 0o700), // members cannot even look inside: following a symlink here is EACCES for them
    ];
    for (rel, mode) in modes {
        let p = if rel.is_empty() {
            out.clone()
        } else {
            out.join(rel)
        };
        lchown(&p, 0, 0).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        utimensat(
            libc::AT_FDCWD,
            &p,
            ts(T2001, 0),
            ts(T2001, 0),
            libc::AT_SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }
    out
}

struct Inotify {
    fd: OwnedFd,
    wds: BTreeMap<i32, PathBuf>,
}

impl Inotify {
    /// Watch every directory of the tree for every event (events on the files in a watched
    /// directory are reported too).
    fn watch_tree(root: &Path) -> Inotify {
        // List the tree first (listing generates events), then watch every directory.
        let mut dirs = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            // O_NOATIME: the snapshot taken before must stay exact.
            for n in list_dir_raw(&d, true).unwrap() {
                if n != "." && n != ".." && lst(&d.join(&n)).unwrap().is_dir() {
                    stack.push(d.join(n));
                }
            }
            dirs.push(d);
        }
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(fd >= 0, "inotify_init1: {}", io::Error::last_os_error());
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut me = Inotify {
            fd,
            wds: BTreeMap::new(),
        };
        for d in dirs {
            let c = cs(&d);
            let wd = unsafe {
                libc::inotify_add_watch(
                    me.fd.as_raw_fd(),
                    c.as_ptr(),
                    libc::IN_ALL_EVENTS | libc::IN_DONT_FOLLOW,
                )
            };
            assert!(
                wd >= 0,
                "inotify_add_watch {}: {}",
                d.display(),
                io::Error::last_os_error()
            );
            me.wds.insert(wd, d);
        }
        let early = me.drain();
        assert!(
            early.is_empty(),
            "inotify events before the test started: {early:?}"
        );
        me
    }

    /// Every event so far, decoded.
    fn drain(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let mut off = 0usize;
            while off + 16 <= n as usize {
                let wd = i32::from_ne_bytes(buf[off..off + 4].try_into().unwrap());
                let mask = u32::from_ne_bytes(buf[off + 4..off + 8].try_into().unwrap());
                let len = u32::from_ne_bytes(buf[off + 12..off + 16].try_into().unwrap()) as usize;
                let name = String::from_utf8_lossy(&buf[off + 16..off + 16 + len])
                    .trim_end_matches('\0')
                    .to_string();
                let dir = self
                    .wds
                    .get(&wd)
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                out.push(format!("{dir}/{name}: {}", inotify_mask_names(mask)));
                off += 16 + len;
            }
        }
        out
    }
}

fn inotify_mask_names(mask: u32) -> String {
    let names = [
        (libc::IN_ACCESS, "ACCESS"),
        (libc::IN_MODIFY, "MODIFY"),
        (libc::IN_ATTRIB, "ATTRIB"),
        (libc::IN_CLOSE_WRITE, "CLOSE_WRITE"),
        (libc::IN_CLOSE_NOWRITE, "CLOSE_NOWRITE"),
        (libc::IN_OPEN, "OPEN"),
        (libc::IN_MOVED_FROM, "MOVED_FROM"),
        (libc::IN_MOVED_TO, "MOVED_TO"),
        (libc::IN_CREATE, "CREATE"),
        (libc::IN_DELETE, "DELETE"),
        (libc::IN_DELETE_SELF, "DELETE_SELF"),
        (libc::IN_MOVE_SELF, "MOVE_SELF"),
        (libc::IN_IGNORED, "IGNORED"),
        (libc::IN_ISDIR, "ISDIR"),
        (libc::IN_Q_OVERFLOW, "Q_OVERFLOW"),
    ];
    names
        .iter()
        .filter(|(b, _)| mask & b != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join("|")
}

// ---------------------------------------------------------------------------------------------
// The race loop
// ---------------------------------------------------------------------------------------------

const SLOTS: usize = 4;

fn dslot(i: usize) -> String {
    format!("d{i}")
}
fn fslot(i: usize) -> String {
    format!("f{i}")
}

/// Root acting directly in the store, never following anything: every call is relative to a
/// directory descriptor of a real store directory (O_NOFOLLOW), on single names.
fn attacker(store: PathBuf, outside: PathBuf, stop: Arc<AtomicBool>, seed: u64) -> Tally {
    let mut t = Tally::default();
    let mut rng = Rng(seed | 1);
    let root = open(
        &store,
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
    .expect("store root");
    let arena = openat(
        root.as_raw_fd(),
        "arena",
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
    .expect("arena");
    let (rfd, afd) = (root.as_raw_fd(), arena.as_raw_fd());
    let o = |rel: &str| -> Vec<u8> {
        let p = if rel.is_empty() {
            outside.clone()
        } else {
            outside.join(rel)
        };
        p.as_os_str().as_bytes().to_vec()
    };
    let dir_targets = [o(""), o("sub"), o("sub/deeper")];
    let file_targets = [o("secret"), o("canary"), o("sub/inner")];
    // Symlinks kept ready for atomic exchanges: ld<i> -> outside dir, lf<i> -> outside file.
    for i in 0..SLOTS {
        let _ = symlinkat_b(&dir_targets[i % 3], afd, format!("ld{i}").as_bytes());
        let _ = symlinkat_b(&file_targets[i % 3], afd, format!("lf{i}").as_bytes());
    }
    let _ = symlinkat_b(&dir_targets[0], rfd, b"arenalink");
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let i = rng.below(SLOTS as u64) as usize;
        let (d, f) = (dslot(i), fslot(i));
        let pause = Duration::from_micros(rng.below(1500));
        match rng.below(10) {
            // Atomic swap of a directory and a symlink to an outside directory, and back.
            0 | 1 => {
                let r = renameat2_b(
                    afd,
                    d.as_bytes(),
                    afd,
                    format!("ld{i}").as_bytes(),
                    libc::RENAME_EXCHANGE,
                );
                t.add("swap-dir-exchange", &r);
                if r.is_ok() {
                    thread::sleep(pause);
                    let r2 = renameat2_b(
                        afd,
                        d.as_bytes(),
                        afd,
                        format!("ld{i}").as_bytes(),
                        libc::RENAME_EXCHANGE,
                    );
                    t.add("swap-dir-exchange-back", &r2);
                }
            }
            // Atomic swap of a file and a symlink to an outside file, and back.
            2 | 3 => {
                let r = renameat2_b(
                    afd,
                    f.as_bytes(),
                    afd,
                    format!("lf{i}").as_bytes(),
                    libc::RENAME_EXCHANGE,
                );
                t.add("swap-file-exchange", &r);
                if r.is_ok() {
                    thread::sleep(pause);
                    let r2 = renameat2_b(
                        afd,
                        f.as_bytes(),
                        afd,
                        format!("lf{i}").as_bytes(),
                        libc::RENAME_EXCHANGE,
                    );
                    t.add("swap-file-exchange-back", &r2);
                }
            }
            // Non-atomic: move the directory away, put a symlink in its place, restore.
            4 => {
                let away = format!("{d}.away");
                let r = renameat2_b(
                    afd,
                    d.as_bytes(),
                    afd,
                    away.as_bytes(),
                    libc::RENAME_NOREPLACE,
                );
                t.add("swap-dir-rename", &r);
                if r.is_ok() {
                    let s = symlinkat_b(&dir_targets[rng.below(3) as usize], afd, d.as_bytes());
                    t.add("swap-dir-symlink", &s);
                    thread::sleep(pause);
                    let _ = unlinkat_b(afd, d.as_bytes(), 0);
                    if renameat2_b(
                        afd,
                        away.as_bytes(),
                        afd,
                        d.as_bytes(),
                        libc::RENAME_NOREPLACE,
                    )
                    .is_err()
                    {
                        // A member made a new one meanwhile: keep theirs, park ours.
                        let _ = renameat2_b(
                            afd,
                            away.as_bytes(),
                            afd,
                            format!("{d}.parked{n}").as_bytes(),
                            0,
                        );
                    }
                }
            }
            5 => {
                let away = format!("{f}.away");
                let r = renameat2_b(
                    afd,
                    f.as_bytes(),
                    afd,
                    away.as_bytes(),
                    libc::RENAME_NOREPLACE,
                );
                t.add("swap-file-rename", &r);
                if r.is_ok() {
                    let s = symlinkat_b(&file_targets[rng.below(3) as usize], afd, f.as_bytes());
                    t.add("swap-file-symlink", &s);
                    thread::sleep(pause);
                    let _ = unlinkat_b(afd, f.as_bytes(), 0);
                    let _ = renameat2_b(afd, away.as_bytes(), afd, f.as_bytes(), 0);
                }
            }
            // Hijack entries members made in a slot directory: replace them by symlinks out.
            6 | 7 => {
                let Ok(dfd) = openat_b(
                    afd,
                    d.as_bytes(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                ) else {
                    t.add::<()>(
                        "hijack-open-slot",
                        &Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
                    );
                    continue;
                };
                let names = list_fd(
                    openat_b(dfd.as_raw_fd(), b".", libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap(),
                )
                .unwrap_or_default();
                for name in names
                    .iter()
                    .filter(|n| !n.starts_with('.') && !n.starts_with("hj"))
                    .take(3)
                {
                    let nb = name.as_bytes();
                    let hj = format!("hj{n}-{name}");
                    let r = renameat2_b(
                        dfd.as_raw_fd(),
                        nb,
                        dfd.as_raw_fd(),
                        hj.as_bytes(),
                        libc::RENAME_NOREPLACE,
                    );
                    t.add("hijack-rename", &r);
                    if r.is_ok() {
                        let tgt = if rng.below(2) == 0 {
                            &dir_targets[rng.below(3) as usize]
                        } else {
                            &file_targets[rng.below(3) as usize]
                        };
                        let s = symlinkat_b(tgt, dfd.as_raw_fd(), nb);
                        t.add("hijack-symlink", &s);
                    }
                }
            }
            // Swap the arena itself (a parent of everything members use).
            8 => {
                let r = renameat2_b(rfd, b"arena", rfd, b"arenalink", libc::RENAME_EXCHANGE);
                t.add("swap-arena-exchange", &r);
                if r.is_ok() {
                    thread::sleep(pause);
                    let r2 = renameat2_b(rfd, b"arena", rfd, b"arenalink", libc::RENAME_EXCHANGE);
                    t.add("swap-arena-exchange-back", &r2);
                }
            }
            // Clean up hijacked leftovers now and then so directories stay small.
            _ => {
                if let Ok(dfd) = openat_b(
                    afd,
                    d.as_bytes(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                ) {
                    let names = list_fd(
                        openat_b(dfd.as_raw_fd(), b".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
                            .unwrap(),
                    )
                    .unwrap_or_default();
                    for name in names.iter().filter(|n| n.starts_with("hj")) {
                        let r = unlinkat_b(dfd.as_raw_fd(), name.as_bytes(), 0);
                        if r.is_err() {
                            let _ =
                                unlinkat_b(dfd.as_raw_fd(), name.as_bytes(), libc::AT_REMOVEDIR);
                        }
                    }
                }
                t.add::<()>("cleanup", &Ok(()));
            }
        }
        // Make sure the slots exist (members may have removed them): root creates directly
        // in the store only real directories/files of its own, never through a symlink.
        let _ = mkdirat_b(afd, d.as_bytes(), 0o2770);
        if let Ok(fd) = openat_b(
            afd,
            f.as_bytes(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_NOFOLLOW,
            0o660,
        ) {
            drop(fd);
        }
    }
    // Restore a sane layout: exchange back anything left swapped.
    let _ = fstatat_b(rfd, b"arena", libc::AT_SYMLINK_NOFOLLOW).map(|s| {
        if s.st_mode & libc::S_IFMT == libc::S_IFLNK {
            let _ = renameat2_b(rfd, b"arena", rfd, b"arenalink", libc::RENAME_EXCHANGE);
        }
    });
    t
}

/// One member acting through the mount until `stop`: by path and relative to directory
/// descriptors opened through the mount (held across the attacker's swaps).
fn member_loop(
    mnt: PathBuf,
    outside: PathBuf,
    me: User,
    gid: u32,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> Tally {
    let mut t = Tally::default();
    let mut rng = Rng(seed | 1);
    let arena = mnt.join("arena");
    let mut held: Vec<Option<OwnedFd>> = (0..SLOTS).map(|_| None).collect();
    let out_secret = outside.join("secret");
    let mut k = 0u64;
    while !stop.load(Ordering::Relaxed) {
        k += 1;
        let i = rng.below(SLOTS as u64) as usize;
        let j = rng.below(SLOTS as u64) as usize;
        if held[i].is_none() || rng.below(40) == 0 {
            held[i] = open(&arena.join(dslot(i)), libc::O_RDONLY | libc::O_DIRECTORY, 0).ok();
        }
        let name = format!("m{}-{}", me.uid, rng.below(6));
        let name2 = format!("m{}-{}", me.uid, rng.below(6));
        let dpath = arena.join(dslot(i));
        let p = dpath.join(&name);
        let fpath = arena.join(fslot(i));
        let hfd = held[i].as_ref().map(|f| f.as_raw_fd());
        let via_fd = hfd.is_some() && rng.below(2) == 0;
        let hfd = hfd.unwrap_or(libc::AT_FDCWD);
        let nb = name.as_bytes();
        match rng.below(17) {
            0 => {
                let r = if via_fd {
                    openat_b(hfd, nb, libc::O_WRONLY | libc::O_CREAT, 0o644)
                } else {
                    open(&p, libc::O_WRONLY | libc::O_CREAT, 0o644)
                };
                if let Ok(fd) = &r {
                    let _ = write_fd(fd.as_raw_fd(), b"member data\n");
                }
                t.add("create", &r);
            }
            1 => {
                let r = if via_fd {
                    mkdirat_b(hfd, nb, 0o755)
                } else {
                    mkdir(&p, 0o755)
                };
                t.add("mkdir", &r);
            }
            2 => {
                let mode = [0o600, 0o644, 0o755, 0o4755, 0o2755, 0o1777][rng.below(6) as usize];
                let r = match rng.below(3) {
                    0 => chmod(&fpath, mode),
                    1 if via_fd => fchmodat_b(hfd, nb, mode),
                    _ => chmod(&p, mode),
                };
                t.add("chmod", &r);
            }
            3 => {
                // chown to oneself / chgrp to the shared group (allowed), or to root (refused)
                let (u, g) = match rng.below(3) {
                    0 => (me.uid, gid),
                    1 => (u32::MAX, gid),
                    _ => (0, 0),
                };
                let r = match rng.below(3) {
                    0 => lchown(&fpath, u, g),
                    1 if via_fd => fchownat_b(hfd, nb, u, g, libc::AT_SYMLINK_NOFOLLOW),
                    _ => {
                        let c = cs(&p);
                        r0(unsafe { libc::chown(c.as_ptr(), u, g) })
                    }
                };
                t.add("chown", &r);
            }
            4 => {
                let r = if via_fd {
                    renameat2_b(
                        hfd,
                        nb,
                        libc::AT_FDCWD,
                        arena.join(dslot(j)).join(&name2).as_os_str().as_bytes(),
                        0,
                    )
                } else {
                    rename(&p, &arena.join(dslot(j)).join(&name2))
                };
                t.add("rename", &r);
            }
            5 => {
                let r = if via_fd {
                    linkat_b(libc::AT_FDCWD, fpath.as_os_str().as_bytes(), hfd, nb, 0)
                } else {
                    link(&fpath, &p)
                };
                t.add("link", &r);
            }
            6 => {
                let r = if rng.below(2) == 0 {
                    truncate(&fpath, 3)
                } else {
                    truncate(&p, 0)
                };
                t.add("truncate", &r);
            }
            7 => {
                let r = if rng.below(2) == 0 {
                    lsetxattr(&p, "user.race", b"v", 0)
                } else if via_fd {
                    setxattr_p(
                        &PathBuf::from(format!("/proc/self/fd/{hfd}/{name}")),
                        "user.race",
                        b"v",
                    )
                } else {
                    setxattr_p(&fpath, "user.race", b"v")
                };
                t.add("setxattr", &r);
            }
            8 => {
                let r = if via_fd {
                    unlinkat_b(hfd, nb, 0)
                } else {
                    unlink(&p)
                };
                t.add("unlink", &r);
            }
            9 => {
                let r = if via_fd {
                    unlinkat_b(hfd, nb, libc::AT_REMOVEDIR)
                } else {
                    rmdir(&p)
                };
                t.add("rmdir", &r);
            }
            10 => {
                // A member's own symlink to the outside, through the mount (another member may
                // then act on it).
                let r = if via_fd {
                    symlinkat_b(out_secret.as_os_str().as_bytes(), hfd, nb)
                } else {
                    symlink(&outside.join("sub").to_string_lossy(), &p)
                };
                t.add("symlink", &r);
            }
            11 => {
                let r = if via_fd {
                    let c = cb(nb);
                    let tt = [ts(1_000_000_000, 0), ts(1_000_000_000, 0)];
                    r0(unsafe { libc::utimensat(hfd, c.as_ptr(), tt.as_ptr(), 0) })
                } else {
                    utimensat(
                        libc::AT_FDCWD,
                        &fpath,
                        ts(0, libc::UTIME_NOW),
                        ts(0, libc::UTIME_NOW),
                        0,
                    )
                };
                t.add("utimens", &r);
            }
            12 => {
                let r = if via_fd {
                    openat_b(hfd, nb, libc::O_RDONLY, 0)
                } else {
                    open(&fpath, libc::O_RDONLY, 0)
                };
                let r = r.and_then(|fd| read_fd_all(fd.as_raw_fd()));
                t.add("read", &r);
            }
            13 => {
                let r = if via_fd {
                    openat_b(hfd, b".", libc::O_RDONLY | libc::O_DIRECTORY, 0).and_then(list_fd)
                } else {
                    list_dir_raw(&dpath, false)
                };
                t.add("readdir", &r);
            }
            14 => {
                let r = open(&fpath, libc::O_WRONLY | libc::O_TRUNC, 0)
                    .and_then(|fd| write_fd(fd.as_raw_fd(), b"w"));
                t.add("open-trunc-write", &r);
            }
            15 => {
                // mkdir/create inside a held directory at depth 2 (the held descriptor may now
                // name a directory the attacker moved away or exchanged)
                let r = if via_fd {
                    openat_b(hfd, nb, libc::O_RDONLY | libc::O_DIRECTORY, 0).and_then(|sub| {
                        openat_b(
                            sub.as_raw_fd(),
                            b"deep",
                            libc::O_WRONLY | libc::O_CREAT,
                            0o600,
                        )
                    })
                } else {
                    open(&p.join("deep"), libc::O_WRONLY | libc::O_CREAT, 0o600)
                };
                t.add("create-nested", &r);
            }
            _ => {
                let r = if via_fd {
                    fstatat_b(hfd, nb, libc::AT_SYMLINK_NOFOLLOW).map(|_| ())
                } else {
                    lst(&p).map(|_| ())
                };
                t.add("stat", &r);
            }
        }
    }
    let _ = k;
    t
}

/// Every entry below `root` (not following symlinks) that is not a symlink and not owned by a
/// member, or that is not in the shared group, or has setuid/setgid on a non-directory.
fn store_leaks(root: &Path, gid: u32, members: &[u32]) -> Vec<String> {
    let mut bad = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(s) = lst(&p) else { continue };
            if s.is_symlink() {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let attacker_made =
                d == root && (name.starts_with('d') || name.starts_with('f')) && s.uid == 0;
            if !attacker_made && !members.contains(&s.uid) {
                bad.push(format!("{}: uid {} (not a member)", p.display(), s.uid));
            }
            if !attacker_made && s.gid != gid {
                bad.push(format!("{}: gid {}", p.display(), s.gid));
            }
            if !s.is_dir() && s.perm() & 0o6000 != 0 {
                bad.push(format!("{}: mode {:o}", p.display(), s.perm()));
            }
            if s.is_dir() {
                stack.push(p);
            }
        }
    }
    bad
}

fn run_race(extra_opts: &str, label: &str) {
    let m = Mount::with_opts(extra_opts);
    let u = m.users;
    let outside = make_outside(&m, "outside");
    // The arena and the slots, made by a member through the mount.
    let arena = m.p("arena");
    {
        let arena = arena.clone();
        as_user(&u.a, 0o022, move || {
            mkdir(&arena, 0o755).ctx("mkdir arena");
            for i in 0..SLOTS {
                mkdir(&arena.join(dslot(i)), 0o755).ctx("mkdir slot");
                write_file(&arena.join(fslot(i)), b"slot file\n").ctx("slot file");
            }
        });
    }
    let before = snapshot(&outside, true);
    let watch = Inotify::watch_tree(&outside);
    let secs = race_secs();
    let stop = Arc::new(AtomicBool::new(false));
    let seed = random_u64();
    let att = {
        let (store, outside, stop) = (m.store.clone(), outside.clone(), stop.clone());
        thread::spawn(move || attacker(store, outside, stop, seed))
    };
    let mut members = Vec::new();
    for (n, (user, umask)) in [(&u.a, 0o022), (&u.b, 0o077), (&u.a, 0o002), (&u.b, 0o022)]
        .into_iter()
        .enumerate()
    {
        let (mnt, outside, stop, me) = (m.mnt.clone(), outside.clone(), stop.clone(), user.clone());
        let gid = u.gid;
        let s = seed.rotate_left(8 * (n as u32 + 1));
        let user = user.clone();
        members.push(thread::spawn(move || {
            as_user_timeout(&user, umask, Duration::from_secs(secs + 60), move || {
                member_loop(mnt, outside, me, gid, stop, s)
            })
        }));
    }
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let att_tally = att.join().expect("attacker thread");
    let mut mem_tally = Tally::default();
    for h in members {
        mem_tally.merge(h.join().expect("member thread"));
    }
    let events = watch.drain();
    let after = snapshot(&outside, true);
    let alive = m.daemon_pids.iter().all(|p| pid_alive(*p));
    let mount_ok = lst(&m.p("")).is_ok() && is_mounted(&m.mnt);
    let leaks = store_leaks(&m.s("arena"), u.gid, &[u.a.uid, u.b.uid]);
    println!(
        "SECURITY-RACE {label}: {secs} s, seed {seed:#x}: {} member operations through the mount {:?}; \
         {} store-side attacks {:?}; outside events {}; daemon alive {alive}",
        mem_tally.total(),
        mem_tally.ops(),
        att_tally.total(),
        att_tally.ops(),
        events.len()
    );
    println!("SECURITY-RACE {label} outcomes: {:?}", mem_tally.0);
    assert!(
        alive && mount_ok,
        "{label}: the daemon died or the mount broke during the race\n{}",
        m.log_text()
    );
    assert!(
        events.is_empty(),
        "{label}: inotify saw activity outside the store:\n{}",
        events.join("\n")
    );
    assert_same_snapshot(&before, &after, label);
    assert!(
        leaks.is_empty(),
        "{label}: store entries breaking the policy after the race:\n{}",
        leaks.join("\n")
    );
    assert!(
        mem_tally.total() >= 500,
        "{label}: only {} member operations ran",
        mem_tally.total()
    );
    assert!(
        att_tally.total() >= 100,
        "{label}: only {} attacks ran",
        att_tally.total()
    );
    // The swaps must really have happened (else the test proves nothing).
    let ops = att_tally.0;
    for op in [
        "swap-dir-exchange:ok",
        "swap-file-exchange:ok",
        "hijack-symlink:ok",
        "swap-arena-exchange:ok",
    ] {
        assert!(
            ops.get(op).copied().unwrap_or(0) > 0,
            "{label}: attack {op} never succeeded: {ops:?}"
        );
    }
    // Positive control: the detectors do see a real read outside. Root (not the daemon) reads
    // through a store symlink; the kernel follows it in root's own view, into the outside.
    symlinkat_b(
        outside.join("canary").as_os_str().as_bytes(),
        libc::AT_FDCWD,
        m.s("control").as_os_str().as_bytes(),
    )
    .unwrap();
    let _ =
        fs::read(m.p("control")).expect("root reads the outside canary through a store symlink");
    let seen = watch.drain();
    let control = snapshot(&outside, true);
    assert!(
        seen.iter()
            .any(|e| e.contains("canary") && e.contains("ACCESS")),
        "{label}: inotify missed the control read: {seen:?}"
    );
    assert_ne!(
        control.get("canary").unwrap().atime,
        before.get("canary").unwrap().atime,
        "{label}: atime missed the control read"
    );
}

#[test]
fn race_store_swaps_to_outside_symlinks_touch_nothing_outside() {
    run_race("", "race (passthrough=auto, entry/attr timeout 1 s)");
}

#[test]
fn race_store_swaps_no_kernel_caching_touch_nothing_outside() {
    // Zero timeouts: every path walk asks the daemon again, so the daemon sees the swapped
    // names (lookups of symlinks) far more often.
    run_race(
        "passthrough=off,entry_timeout=0,attr_timeout=0",
        "race (passthrough=off, timeouts 0)",
    );
}

// ---------------------------------------------------------------------------------------------
// Hard links
// ---------------------------------------------------------------------------------------------

#[test]
fn hardlink_to_file_caller_cannot_write_is_refused() {
    let m = Mount::new();
    let u = m.users;
    assert_eq!(
        fs::read_to_string("/proc/sys/fs/protected_hardlinks")
            .unwrap()
            .trim(),
        "1",
        "this test expects fs.protected_hardlinks=1 (the Debian default)"
    );
    let (ro, wr) = (m.p("ro"), m.p("rw"));
    {
        let (ro, wr) = (ro.clone(), wr.clone());
        as_user(&u.a, 0o022, move || {
            write_file(&ro, b"read-only for the group").ctx("create ro");
            chmod(&ro, 0o444).ctx("chmod 0444");
            write_file(&wr, b"writable").ctx("create rw");
        });
    }
    assert_store(&m, "ro", u.a.uid, u.gid, 0o440);
    // B can read ro but not write it: the kernel (protected_hardlinks) refuses the link.
    let (ro2, wr2, l1, l2) = (ro.clone(), wr.clone(), m.p("b-link-ro"), m.p("b-link-rw"));
    let (r1, r2, wopen) = as_user(&u.b, 0o022, move || {
        let w = errno_of(&open(&ro2, libc::O_WRONLY, 0));
        (link(&ro2, &l1), link(&wr2, &l2), w)
    });
    assert_eq!(wopen, Some(libc::EACCES), "B must not be able to write ro");
    assert_errno(r1, &[libc::EPERM], "member B: link to A's read-only file");
    r2.ctx("member B: link to A's group-writable file");
    assert!(lst(&m.s("b-link-ro")).is_err(), "no link made in the store");
    assert_eq!(m.sst("rw").nlink, 2);
    // A link keeps its target's owner and mode.
    assert_store(&m, "b-link-rw", u.a.uid, u.gid, 0o660);
    // The owner may link its own read-only file.
    let (ro3, l3) = (ro.clone(), m.p("a-link-ro"));
    as_user(&u.a, 0o022, move || link(&ro3, &l3)).ctx("owner links its own read-only file");
    // Outsider: cannot even reach it.
    let (ro4, l4) = (ro.clone(), m.base.fresh("outsider-link"));
    let r = as_user(&u.c, 0o022, move || link(&ro4, &l4));
    assert_errno(
        r,
        &[libc::EACCES, libc::EXDEV],
        "outsider: link out of the mount",
    );
    // Links out of / into the mount cross filesystems.
    let outside_file = m.base.fresh("plainfile");
    fs::write(&outside_file, b"x").unwrap();
    assert_errno(
        link(&outside_file, &m.p("linked-in")),
        &[libc::EXDEV],
        "root: link from outside into the mount",
    );
    // Directories cannot be hard-linked.
    fs::create_dir(m.p("dir")).unwrap();
    assert_errno(
        link(&m.p("dir"), &m.p("dirlink")),
        &[libc::EPERM],
        "link of a directory",
    );
}

// ---------------------------------------------------------------------------------------------
// setuid / setgid / sticky / file capabilities
// ---------------------------------------------------------------------------------------------

#[test]
fn setuid_setgid_sticky_never_stored_on_files() {
    let m = Mount::new();
    let u = m.users;
    let mi = mount_entry(&m.mnt).unwrap();
    let opts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = opts
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(m.mnt.to_str().unwrap()))
        .unwrap()
        .to_string();
    assert!(
        line.contains("nosuid") && line.contains("nodev"),
        "mount must be nosuid,nodev: {line} ({mi:?})"
    );
    let (f, g, d) = (m.p("suid"), m.p("sgid"), m.p("dir"));
    {
        let (f, g, d) = (f.clone(), g.clone(), d.clone());
        as_user(&u.a, 0o000, move || {
            let fd =
                open(&f, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o6755).ctx("create 06755");
            drop(fd);
            write_file(&g, b"#!/bin/sh\n").ctx("create g");
            chmod(&g, 0o2755).ctx("chmod g+s");
            mkdir(&d, 0o1777).ctx("mkdir 01777");
        });
    }
    assert_store(&m, "suid", u.a.uid, u.gid, 0o770);
    assert_store(&m, "sgid", u.a.uid, u.gid, 0o770);
    assert_store(&m, "dir", u.a.uid, u.gid, 0o2770);
    let (f2, d2) = (f.clone(), d.clone());
    as_user(&u.a, 0o022, move || {
        chmod(&f2, 0o4755).ctx("chmod u+s");
        chmod(&d2, 0o1755).ctx("chmod +t, g-s on dir");
    });
    assert_store(&m, "suid", u.a.uid, u.gid, 0o770);
    assert_store(&m, "dir", u.a.uid, u.gid, 0o2770);
    // Root through the mount: stripped too.
    chmod(&f, 0o6755).ctx("root chmod 6755");
    assert_store(&m, "suid", u.a.uid, u.gid, 0o770);
    assert_eq!(m.mst("suid").perm(), 0o770);
    // A setuid file put in the store by other means is reported without setuid.
    fs::write(m.s("planted"), b"#!/bin/sh\nid\n").unwrap();
    fs::set_permissions(m.s("planted"), fs::Permissions::from_mode(0o4755)).unwrap();
    assert_eq!(
        m.mst("planted").perm(),
        0o770,
        "planted 04755 file as reported (no setuid, owner bits mirrored)"
    );
}

#[test]
fn file_capabilities_refused() {
    let m = Mount::new();
    let u = m.users;
    let f = m.p("tool");
    {
        let f = f.clone();
        as_user(&u.a, 0o022, move || {
            write_file(&f, b"#!/bin/sh\n").ctx("create");
            chmod(&f, 0o755).ctx("chmod");
        });
    }
    // v2 capability blob: cap_net_raw (bit 13) permitted + effective flag.
    let mut cap = vec![0u8; 20];
    cap[0..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
    cap[4..8].copy_from_slice(&(1u32 << 13).to_le_bytes());
    assert_errno(
        lsetxattr(&f, "security.capability", &cap, 0),
        &[libc::EPERM, libc::EOPNOTSUPP],
        "root: setxattr security.capability",
    );
    let o = run_timeout(
        cmd(
            "setfattr",
            &[
                "-n",
                "security.capability",
                "-v",
                "0x0100000200200000000000000000000000000000",
                f.to_str().unwrap(),
            ],
        ),
        OP_TIMEOUT,
    );
    assert!(
        !o.status.success(),
        "setfattr -n security.capability through the mount must fail:\n{}",
        out_str(&o)
    );
    let o = run_timeout(
        cmd("setcap", &["cap_net_raw+ep", f.to_str().unwrap()]),
        OP_TIMEOUT,
    );
    assert!(
        !o.status.success(),
        "setcap through the mount must fail:\n{}",
        out_str(&o)
    );
    let (f2, cap2) = (f.clone(), cap.clone());
    let r = as_user(&u.a, 0o022, move || {
        lsetxattr(&f2, "security.capability", &cap2, 0)
    });
    assert_errno(
        r,
        &[libc::EPERM, libc::EOPNOTSUPP],
        "owner: setxattr security.capability",
    );
    assert!(
        lgetxattr(&m.s("tool"), "security.capability").is_err(),
        "no capability stored"
    );
    // A capability put on a store file by other means is hidden (and the mount is nosuid).
    fs::write(m.s("planted"), b"x").unwrap();
    lsetxattr(&m.s("planted"), "security.capability", &cap, 0).ctx("plant capability in the store");
    assert_errno(
        lgetxattr(&m.p("planted"), "security.capability"),
        &[libc::ENODATA, libc::EPERM, libc::EOPNOTSUPP],
        "getxattr of a planted capability",
    );
    let names = llistxattr(&m.p("planted")).unwrap_or_default();
    assert!(
        !names.iter().any(|n| n.starts_with("security.")),
        "listxattr shows {names:?}"
    );
}

/// With FUSE_HANDLE_KILLPRIV_V2 the kernel leaves killing setuid/setgid and capabilities to
/// the daemon (and fuser drops the kill flags of setattr and open): a file planted in the
/// store with them loses them once a member writes to it or anyone truncates it through the
/// mount, as on a local filesystem.
#[test]
fn writes_and_truncates_drop_planted_setid_and_capabilities() {
    let m = Mount::new();
    let u = m.users;
    let mut cap = vec![0u8; 20];
    cap[0..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
    cap[4..8].copy_from_slice(&(1u32 << 13).to_le_bytes());
    let plant = |name: &str| {
        fs::write(m.s(name), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(m.s(name), fs::Permissions::from_mode(0o6770)).unwrap();
        lsetxattr(&m.s(name), "security.capability", &cap, 0).ctx("plant capability");
    };
    let setid = |name: &str| m.sst(name).perm() & 0o6000;
    plant("written");
    plant("truncated");
    plant("root-truncated");
    let (w, t) = (m.p("written"), m.p("truncated"));
    as_user(&u.a, 0o022, move || {
        let fd = open(&w, libc::O_WRONLY | libc::O_APPEND, 0).ctx("open for writing");
        write_fd(fd.as_raw_fd(), b"echo hi\n").ctx("write");
        truncate(&t, 1).ctx("truncate");
    });
    truncate(&m.p("root-truncated"), 1).ctx("root truncate");
    for name in ["written", "truncated", "root-truncated"] {
        assert_eq!(setid(name), 0, "{name}: setuid/setgid left on disk");
        assert!(
            lgetxattr(&m.s(name), "security.capability").is_err(),
            "{name}: capability left on disk"
        );
    }
    assert_eq!(fs::read(m.s("written")).unwrap(), b"#!/bin/sh\necho hi\n");
}

// ---------------------------------------------------------------------------------------------
// Device nodes, sockets, FIFOs
// ---------------------------------------------------------------------------------------------

#[test]
fn device_nodes_and_sockets_refused_fifos_work() {
    let m = Mount::new();
    let u = m.users;
    // Root (has CAP_MKNOD) through the mount: refused by hfcachefs.
    for (what, mode, dev) in [
        (
            "char 1:3 (/dev/null)",
            libc::S_IFCHR | 0o666,
            libc::makedev(1, 3),
        ),
        (
            "char 1:1 (/dev/mem)",
            libc::S_IFCHR | 0o600,
            libc::makedev(1, 1),
        ),
        ("block 7:0", libc::S_IFBLK | 0o600, libc::makedev(7, 0)),
        ("socket", libc::S_IFSOCK | 0o666, 0),
    ] {
        assert_errno(
            mknod(&m.p("node"), mode, dev),
            &[libc::EPERM],
            &format!("root mknod {what}"),
        );
        assert!(
            lst(&m.s("node")).is_err(),
            "{what}: nothing left in the store"
        );
    }
    // bind() of a unix socket creates a socket node: refused.
    let sp = m.p("sock");
    let r = std::os::unix::net::UnixListener::bind(&sp);
    assert!(r.is_err(), "binding a unix socket in the mount must fail");
    assert!(lst(&m.s("sock")).is_err());
    // A member cannot either (the kernel already refuses without CAP_MKNOD).
    let p = m.p("node2");
    let r = as_user(&u.a, 0o022, move || {
        mknod(&p, libc::S_IFCHR | 0o666, libc::makedev(1, 3))
    });
    assert_errno(r, &[libc::EPERM], "member mknod char");
    // FIFO: fine, owned by the member, shared group, mirrored bits.
    let (fp, fp2) = (m.p("fifo"), m.p("fifo"));
    as_user(&u.a, 0o022, move || mknod(&fp, libc::S_IFIFO | 0o644, 0)).ctx("member mkfifo");
    let s = m.sst("fifo");
    assert!(s.is_fifo());
    assert_store(&m, "fifo", u.a.uid, u.gid, 0o660);
    // B can use it (O_RDWR|O_NONBLOCK never blocks on a FIFO).
    let got = as_user(&u.b, 0o077, move || -> io::Result<Vec<u8>> {
        let fd = open(&fp2, libc::O_RDWR | libc::O_NONBLOCK, 0)?;
        write_fd(fd.as_raw_fd(), b"through the fifo")?;
        pread_fd(fd.as_raw_fd(), 64, 0).or_else(|_| {
            let mut b = vec![0u8; 64];
            let n = unsafe { libc::read(fd.as_raw_fd(), b.as_mut_ptr().cast(), 64) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                b.truncate(n as usize);
                Ok(b)
            }
        })
    })
    .ctx("member B uses the FIFO");
    assert_eq!(got, b"through the fifo");
    // A device node put into the store by other means cannot be used (nodev).
    mknod(
        &m.s("planted-null"),
        libc::S_IFCHR | 0o666,
        libc::makedev(1, 3),
    )
    .ctx("plant /dev/null clone in the store");
    assert_errno(
        open(&m.p("planted-null"), libc::O_RDWR, 0),
        &[libc::EACCES, libc::EPERM],
        "open of a planted device node (nodev)",
    );
}

// ---------------------------------------------------------------------------------------------
// xattr namespaces
// ---------------------------------------------------------------------------------------------

#[test]
fn xattr_namespaces_security_trusted_system_refused_user_ok() {
    let m = Mount::new();
    let u = m.users;
    write_file(&m.p("f"), b"x").unwrap();
    fs::create_dir(m.p("d")).unwrap();
    for target in ["f", "d"] {
        let p = m.p(target);
        for name in [
            "security.capability",
            "security.selinux",
            "security.evil",
            "trusted.overlay.opaque",
            "trusted.x",
        ] {
            // (security.capability needs a well-formed value, or the kernel says EINVAL first)
            let mut cap = vec![0u8; 20];
            cap[0..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
            let value: &[u8] = if name == "security.capability" {
                &cap
            } else {
                b"1"
            };
            assert_errno(
                lsetxattr(&p, name, value, 0),
                &[libc::EPERM, libc::EOPNOTSUPP],
                &format!("root setxattr {name} on {target}"),
            );
            assert!(
                lgetxattr(&m.s(target), name).is_err(),
                "{name} on {target} reached the store"
            );
        }
        assert_errno(
            lsetxattr(&p, "system.posix_acl_access", &[2, 0, 0, 0], 0),
            &[libc::EPERM, libc::EOPNOTSUPP, libc::EINVAL],
            &format!("root set ACL on {target}"),
        );
        assert_errno(
            lsetxattr(&p, "system.evil", b"1", 0),
            &[libc::EPERM, libc::EOPNOTSUPP],
            &format!("root setxattr system.evil on {target}"),
        );
        lsetxattr(&p, "user.ok", b"fine", 0).ctx("user.* works");
        assert_eq!(lgetxattr(&m.s(target), "user.ok").unwrap(), b"fine");
    }
    // setfacl (a tool members might use to widen access): refused.
    let o = run_timeout(
        cmd(
            "sh",
            &[
                "-c",
                &format!(
                    "command -v setfacl >/dev/null || exit 77; setfacl -m u:nobody:rwx '{}'",
                    m.p("f").display()
                ),
            ],
        ),
        OP_TIMEOUT,
    );
    if o.status.code() != Some(77) {
        assert!(
            !o.status.success(),
            "setfacl through the mount must fail:\n{}",
            out_str(&o)
        );
    }
    // Members: user.* on their own files and on other members' group-writable files.
    let p = m.p("f");
    let (r_user, r_sec, r_tr) = as_user(&u.b, 0o022, move || {
        (
            lsetxattr(&p, "user.b", b"b", 0),
            lsetxattr(&p, "security.x", b"1", 0),
            lsetxattr(&p, "trusted.x", b"1", 0),
        )
    });
    r_user.ctx("member user.* on a group-writable file");
    assert_errno(r_sec, &[libc::EPERM, libc::EOPNOTSUPP], "member security.x");
    assert_errno(r_tr, &[libc::EPERM, libc::EOPNOTSUPP], "member trusted.x");
    // trusted.* put in the store by other means is not shown.
    lsetxattr(&m.s("f"), "trusted.hidden", b"1", 0).unwrap();
    let names = llistxattr(&m.p("f")).unwrap();
    assert!(
        names.iter().all(|n| n.starts_with("user.")),
        "listxattr through the mount: {names:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

#[test]
fn names_with_newlines_and_invalid_utf8() {
    let m = Mount::new();
    let u = m.users;
    let names: Vec<Vec<u8>> = vec![
        b"line\nbreak".to_vec(),
        b"\n".to_vec(),
        b"trailing\n".to_vec(),
        vec![0xff, 0xfe, b'x'],
        vec![b'a', 0xc3, 0x28, b'b'], // invalid 2-byte sequence
        vec![0xed, 0xa0, 0x80],       // UTF-16 surrogate encoded (invalid UTF-8)
        "caf\u{e9} \u{1F600}".as_bytes().to_vec(),
        b"tab\there".to_vec(),
        b"-rf".to_vec(),
        b" ".to_vec(),
        b"\x1b[31mred".to_vec(),
    ];
    let mnt = m.mnt.clone();
    let names2 = names.clone();
    as_user(&u.a, 0o022, move || {
        let dfd = open(&mnt, libc::O_RDONLY | libc::O_DIRECTORY, 0).ctx("open mount");
        for (i, n) in names2.iter().enumerate() {
            let fd = openat_b(
                dfd.as_raw_fd(),
                n,
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                0o644,
            )
            .unwrap_or_else(|e| panic!("create {n:?}: {e}"));
            write_fd(fd.as_raw_fd(), format!("{i}").as_bytes()).unwrap();
            let mut dn = n.clone();
            dn.extend_from_slice(b".d");
            mkdirat_b(dfd.as_raw_fd(), &dn, 0o755).unwrap_or_else(|e| panic!("mkdir {dn:?}: {e}"));
            let mut rn = n.clone();
            rn.extend_from_slice(b".renamed");
            let mut tmp = n.clone();
            tmp.extend_from_slice(b".tmp");
            let fd2 =
                openat_b(dfd.as_raw_fd(), &tmp, libc::O_WRONLY | libc::O_CREAT, 0o644).unwrap();
            drop(fd2);
            renameat2_b(dfd.as_raw_fd(), &tmp, dfd.as_raw_fd(), &rn, 0)
                .unwrap_or_else(|e| panic!("rename to {rn:?}: {e}"));
        }
    });
    // Exact bytes in the store and in readdir through the mount.
    let listed: Vec<Vec<u8>> = fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    for (i, n) in names.iter().enumerate() {
        let sp = m.store.join(std::ffi::OsStr::from_bytes(n));
        assert_eq!(
            fs::read(&sp).unwrap_or_else(|e| panic!("store lacks {n:?}: {e}")),
            format!("{i}").as_bytes()
        );
        assert!(listed.contains(n), "readdir through the mount lacks {n:?}");
        let s = lst(&sp).unwrap();
        assert_eq!((s.uid, s.gid, s.perm()), (u.a.uid, u.gid, 0o660), "{n:?}");
        let mut dn = n.clone();
        dn.extend_from_slice(b".d");
        assert!(listed.contains(&dn));
        let mut rn = n.clone();
        rn.extend_from_slice(b".renamed");
        assert!(listed.contains(&rn));
    }
    // Removal by the other member.
    let (mnt, names3) = (m.mnt.clone(), names.clone());
    as_user(&u.b, 0o022, move || {
        let dfd = open(&mnt, libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
        for n in &names3 {
            unlinkat_b(dfd.as_raw_fd(), n, 0).unwrap_or_else(|e| panic!("unlink {n:?}: {e}"));
            let mut dn = n.clone();
            dn.extend_from_slice(b".d");
            unlinkat_b(dfd.as_raw_fd(), &dn, libc::AT_REMOVEDIR)
                .unwrap_or_else(|e| panic!("rmdir {dn:?}: {e}"));
        }
    });
    for n in &names {
        assert!(lst(&m.store.join(std::ffi::OsStr::from_bytes(n))).is_err());
    }
}

#[test]
fn name_length_255_ok_256_enametoolong() {
    let m = Mount::new();
    let u = m.users;
    let n255 = "a".repeat(255);
    let n256 = "b".repeat(256);
    // 255 bytes of multi-byte UTF-8 (85 x 3 bytes)
    let n255u = "\u{20ac}".repeat(85);
    assert_eq!(n255u.len(), 255);
    let mnt = m.mnt.clone();
    let (a, b, c) = (n255.clone(), n256.clone(), n255u.clone());
    let res = as_user(&u.a, 0o022, move || {
        let mut v = Vec::new();
        v.push((
            "create 255",
            errno_of(&open(&mnt.join(&a), libc::O_WRONLY | libc::O_CREAT, 0o644)),
        ));
        v.push(("mkdir 255 (UTF-8)", errno_of(&mkdir(&mnt.join(&c), 0o755))));
        v.push((
            "symlink 255",
            errno_of(&symlink("target", &mnt.join("s".repeat(255)))),
        ));
        v.push((
            "link 255",
            errno_of(&link(&mnt.join(&a), &mnt.join("l".repeat(255)))),
        ));
        v.push((
            "rename to 255",
            errno_of(&{
                let _ = write_file(&mnt.join("short"), b"x");
                rename(&mnt.join("short"), &mnt.join("r".repeat(255)))
            }),
        ));
        v.push(("stat 255", errno_of(&lst(&mnt.join(&a)))));
        let long = [
            (
                "create 256",
                errno_of(&open(&mnt.join(&b), libc::O_WRONLY | libc::O_CREAT, 0o644)),
            ),
            ("mkdir 256", errno_of(&mkdir(&mnt.join(&b), 0o755))),
            ("symlink 256", errno_of(&symlink("target", &mnt.join(&b)))),
            ("link 256", errno_of(&link(&mnt.join(&a), &mnt.join(&b)))),
            (
                "rename to 256",
                errno_of(&rename(&mnt.join("r".repeat(255)), &mnt.join(&b))),
            ),
            (
                "mknod fifo 256",
                errno_of(&mknod(&mnt.join(&b), libc::S_IFIFO | 0o644, 0)),
            ),
            ("stat 256", errno_of(&lst(&mnt.join(&b)))),
            (
                "setxattr on 256",
                errno_of(&lsetxattr(&mnt.join(&b), "user.x", b"1", 0)),
            ),
        ];
        (v, long.to_vec())
    });
    let (ok, long) = res;
    for (what, e) in ok {
        assert_eq!(
            e,
            None,
            "{what}: expected success, got {}",
            errno_name(e.unwrap_or(0))
        );
    }
    for (what, e) in long {
        assert_eq!(
            e,
            Some(libc::ENAMETOOLONG),
            "{what}: expected ENAMETOOLONG, got {:?}",
            e.map(errno_name)
        );
    }
    assert!(lst(&m.s(&n255)).is_ok() && lst(&m.s(&n255u)).unwrap().is_dir());
    let in_store = names(&m.store).unwrap();
    assert!(
        in_store.iter().all(|n| n.len() <= 255),
        "a >255-byte name reached the store"
    );
}

#[test]
fn deep_tree_depth_200() {
    let m = Mount::new();
    let u = m.users;
    const DEPTH: usize = 200;
    let mnt = m.mnt.clone();
    // 24-byte components: the full path (~5,000 bytes) is longer than PATH_MAX, so it is
    // built and walked with *at() calls on descriptors.
    let comp = |i: usize| format!("level-{i:03}-xxxxxxxxxxxxxx");
    as_user_timeout(&u.a, 0o022, Duration::from_secs(120), move || {
        let mut fd = open(&mnt, libc::O_RDONLY | libc::O_DIRECTORY, 0).ctx("open mount");
        for i in 0..DEPTH {
            let c = comp(i);
            mkdirat_b(fd.as_raw_fd(), c.as_bytes(), 0o755)
                .unwrap_or_else(|e| panic!("mkdir depth {i}: {e}"));
            fd = openat_b(
                fd.as_raw_fd(),
                c.as_bytes(),
                libc::O_RDONLY | libc::O_DIRECTORY,
                0,
            )
            .unwrap_or_else(|e| panic!("open depth {i}: {e}"));
        }
        let f = openat_b(
            fd.as_raw_fd(),
            b"bottom",
            libc::O_RDWR | libc::O_CREAT,
            0o600,
        )
        .ctx("create at the bottom");
        write_fd(f.as_raw_fd(), b"deep").unwrap();
        assert_eq!(pread_fd(f.as_raw_fd(), 16, 0).unwrap(), b"deep");
    });
    // B walks it by path pieces and reads the file; the store holds it with the policy.
    let mnt = m.mnt.clone();
    let got = as_user_timeout(&u.b, 0o077, Duration::from_secs(120), move || {
        let mut fd = open(&mnt, libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
        for i in 0..DEPTH {
            fd = openat_b(
                fd.as_raw_fd(),
                comp(i).as_bytes(),
                libc::O_RDONLY | libc::O_DIRECTORY,
                0,
            )
            .unwrap();
        }
        let f = openat_b(fd.as_raw_fd(), b"bottom", libc::O_RDONLY, 0).unwrap();
        read_fd_all(f.as_raw_fd()).unwrap()
    });
    assert_eq!(got, b"deep");
    let mut dfd = open(&m.store, libc::O_PATH | libc::O_DIRECTORY, 0).unwrap();
    for i in 0..DEPTH {
        let s = fstatat_b(
            dfd.as_raw_fd(),
            comp(i).as_bytes(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
        .unwrap();
        assert_eq!(
            (s.st_uid, s.st_gid, s.st_mode & 0o7777),
            (u.a.uid, u.gid, 0o2770),
            "store depth {i}"
        );
        dfd = openat_b(
            dfd.as_raw_fd(),
            comp(i).as_bytes(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
        .unwrap();
    }
    let s = fstatat_b(dfd.as_raw_fd(), b"bottom", libc::AT_SYMLINK_NOFOLLOW).unwrap();
    assert_eq!(
        (s.st_uid, s.st_gid, s.st_mode & 0o7777),
        (u.a.uid, u.gid, 0o660)
    );
    // rm -rf of the whole tree through the mount by the other member.
    let top = m.p(&comp(0));
    let o = sh_as(&u.b, 0o022, &format!("rm -rf '{}'", top.display()));
    assert!(
        o.status.success(),
        "rm -rf of the deep tree: {}",
        out_str(&o)
    );
    assert!(
        lst(&m.s(&comp(0))).is_err(),
        "deep tree removed from the store"
    );
}

// ---------------------------------------------------------------------------------------------
// Outsiders and other groups
// ---------------------------------------------------------------------------------------------

static OTHER_GROUP_USER: std::sync::OnceLock<User> = std::sync::OnceLock::new();

extern "C" fn remove_other_group_user() {
    if let Some(u) = OTHER_GROUP_USER.get() {
        let _ = Command::new("userdel")
            .arg(&u.name)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("groupdel")
            .arg(&u.name)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("groupdel")
            .arg(format!("{}_g", u.name))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A user whose (supplementary) group is another one, not the mount's. Named like the
/// fixture's users (hfit_<pid hex>_...) so stale ones are cleaned up the same way.
fn other_group_user() -> &'static User {
    let _ = users();
    OTHER_GROUP_USER.get_or_init(|| {
        let name = format!(
            "hfit_{:x}_{:04x}_og",
            std::process::id(),
            random_u64() & 0xffff
        );
        let group = format!("{name}_g");
        run_ok(cmd("groupadd", &[&group]));
        run_ok(cmd(
            "useradd",
            &[
                "-M",
                "-U",
                "-d",
                "/nonexistent",
                "-s",
                "/bin/sh",
                "-G",
                &group,
                &name,
            ],
        ));
        unsafe {
            libc::atexit(remove_other_group_user);
        }
        let id = |flag: &str| {
            run_ok(cmd("id", &[flag, &name]))
                .trim()
                .parse::<u32>()
                .unwrap()
        };
        let groups = run_ok(cmd("id", &["-G", &name]))
            .split_whitespace()
            .map(|g| g.parse().unwrap())
            .collect();
        User {
            uid: id("-u"),
            gid: id("-g"),
            groups,
            name,
        }
    })
}

/// What a non-member can do to `rel` (existing) and `missing` (not existing), as errnos.
fn probe_nonmember(m: &Mount, who: &User) -> Vec<(String, Option<i32>)> {
    let mnt = m.mnt.clone();
    as_user(who, 0o022, move || {
        let f = mnt.join("dir/file");
        let mut v: Vec<(String, Option<i32>)> = Vec::new();
        v.push(("stat dir".into(), stat_errno(&mnt.join("dir"))));
        v.push(("stat dir/file".into(), stat_errno(&f)));
        v.push((
            "stat missing".into(),
            stat_errno(&mnt.join("no-such-entry")),
        ));
        v.push((
            "stat dir/missing".into(),
            stat_errno(&mnt.join("dir/no-such-entry")),
        ));
        v.push((
            "access(F_OK) dir/file".into(),
            errno_of(&{
                let c = cs(&f);
                r0(unsafe { libc::access(c.as_ptr(), libc::F_OK) })
            }),
        ));
        v.push((
            "readdir mount root".into(),
            errno_of(&list_dir_raw(&mnt, false)),
        ));
        v.push((
            "readdir dir".into(),
            errno_of(&list_dir_raw(&mnt.join("dir"), false)),
        ));
        v.push((
            "open dir/file O_RDONLY".into(),
            errno_of(&open(&f, libc::O_RDONLY, 0)),
        ));
        v.push((
            "open dir/file O_WRONLY".into(),
            errno_of(&open(&f, libc::O_WRONLY, 0)),
        ));
        v.push((
            "open dir/file O_PATH".into(),
            errno_of(&open(&f, libc::O_PATH, 0)),
        ));
        v.push((
            "create new".into(),
            errno_of(&open(
                &mnt.join("new"),
                libc::O_WRONLY | libc::O_CREAT,
                0o644,
            )),
        ));
        v.push((
            "mkdir new".into(),
            errno_of(&mkdir(&mnt.join("newdir"), 0o755)),
        ));
        v.push(("unlink dir/file".into(), errno_of(&unlink(&f))));
        v.push((
            "rename dir/file".into(),
            errno_of(&rename(&f, &mnt.join("stolen"))),
        ));
        v.push(("truncate dir/file".into(), errno_of(&truncate(&f, 0))));
        v.push(("chmod dir/file".into(), errno_of(&chmod(&f, 0o777))));
        v.push((
            "getxattr dir/file".into(),
            errno_of(&lgetxattr(&f, "user.k")),
        ));
        v.push(("listxattr dir/file".into(), errno_of(&llistxattr(&f))));
        v.push((
            "lock dir/file (open for flock)".into(),
            errno_of(
                &open(&f, libc::O_RDONLY, 0)
                    .and_then(|fd| flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB)),
            ),
        ));
        v.push((
            "lock file in .locks".into(),
            errno_of(
                &open(
                    &mnt.join(".locks/x.lock"),
                    libc::O_RDWR | libc::O_CREAT,
                    0o664,
                )
                .and_then(|fd| flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB)),
            ),
        ));
        v.push((
            "chdir dir".into(),
            errno_of(&{
                let c = cs(mnt.join("dir"));
                r0(unsafe { libc::chdir(c.as_ptr()) })
            }),
        ));
        v
    })
}

#[test]
fn outsider_and_other_group_learn_nothing() {
    let m = Mount::new();
    let u = m.users;
    let og = other_group_user();
    {
        let mnt = m.mnt.clone();
        as_user(&u.a, 0o022, move || {
            mkdir(&mnt.join("dir"), 0o755).unwrap();
            write_file(&mnt.join("dir/file"), b"members only").unwrap();
            lsetxattr(&mnt.join("dir/file"), "user.k", b"v", 0).unwrap();
            mkdir(&mnt.join(".locks"), 0o755).unwrap();
        });
    }
    let before = snapshot(&m.store, false);
    for who in [&u.c, og] {
        let res = probe_nonmember(&m, who);
        let bad: Vec<String> = res
            .iter()
            .filter(|(_, e)| *e != Some(libc::EACCES))
            .map(|(w, e)| {
                format!(
                    "{w}: {}",
                    e.map(errno_name).unwrap_or_else(|| "SUCCEEDED".into())
                )
            })
            .collect();
        assert!(
            bad.is_empty(),
            "{} (not a member): expected EACCES for everything, got:\n{}",
            who.name,
            bad.join("\n")
        );
    }
    let after = snapshot(&m.store, false);
    assert_same_snapshot(&before, &after, "store after the outsiders' attempts");
    // The mount root itself: visible as a directory (it is a mount point), closed.
    let st = m.mst("");
    assert_eq!(
        st.perm() & 0o007,
        0,
        "mount root gives others nothing: {:o}",
        st.perm()
    );
}

// ---------------------------------------------------------------------------------------------
// Capabilities and exec
// ---------------------------------------------------------------------------------------------

const CAP_NAMES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

fn cap_names(mask: u64) -> Vec<&'static str> {
    (0..CAP_NAMES.len())
        .filter(|b| mask & (1u64 << b) != 0)
        .map(|b| CAP_NAMES[b])
        .collect()
}

fn status_field(pid: i32, key: &str) -> String {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{key}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// The capabilities hfcachefs needs once mounted: CHOWN and FOWNER (give entries to the caller,
/// chmod/utimens/xattrs on members' files), FSETID (keep setgid on directories whose group
/// root is not in), DAC_OVERRIDE and DAC_READ_SEARCH (members' 0600/2770 entries, linkat
/// AT_EMPTY_PATH), SYS_ADMIN (passthrough backing ioctl, unmount on SIGTERM). The daemon drops
/// all others after mounting; `daemon_works_with_only_the_proposed_capabilities` shows these
/// suffice for everything.
const NEEDED_CAPS: [&str; 6] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "sys_admin",
];

#[test]
fn daemon_keeps_only_the_capabilities_it_needs() {
    let m = Mount::new();
    assert_eq!(m.daemon_pids.len(), 1, "one daemon: {:?}", m.daemon_pids);
    let pid = m.daemon_pids[0];
    let mut report = Vec::new();
    let mut sets = BTreeMap::new();
    for key in [
        "Uid",
        "Gid",
        "CapInh",
        "CapPrm",
        "CapEff",
        "CapBnd",
        "CapAmb",
        "NoNewPrivs",
        "Seccomp",
    ] {
        let v = status_field(pid, key);
        let names = if key.starts_with("Cap") {
            let n = cap_names(u64::from_str_radix(&v, 16).unwrap_or(0));
            sets.insert(key, n.clone());
            format!(" {n:?}")
        } else {
            String::new()
        };
        report.push(format!("{key}: {v}{names}"));
    }
    println!("SECURITY-CAPS daemon pid {pid}:\n  {}", report.join("\n  "));
    let mut want = NEEDED_CAPS.to_vec();
    want.sort();
    for key in ["CapPrm", "CapEff", "CapBnd"] {
        let mut have = sets[key].clone();
        have.sort();
        assert_eq!(
            have, want,
            "{key} of the mounted daemon: exactly the capabilities it needs"
        );
    }
    assert!(
        sets["CapInh"].is_empty() && sets["CapAmb"].is_empty(),
        "no inheritable/ambient capabilities"
    );
    assert_eq!(status_field(pid, "NoNewPrivs"), "1", "no_new_privs set");
}

/// Run the daemon with only NEEDED_CAPS (bounding set; root's effective set follows it) and
/// exercise everything: shows the reduced set suffices.
#[test]
fn daemon_works_with_only_the_proposed_capabilities() {
    let users = users();
    let base = Base::new();
    let mnt = base.fresh("mnt-caps");
    fs::create_dir(&mnt).unwrap();
    fs::set_permissions(&mnt, fs::Permissions::from_mode(0o755)).unwrap();
    let log = base.fresh("caps-log");
    let bset = format!(
        "-all,{}",
        NEEDED_CAPS
            .iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut c = cmd(
        "setpriv",
        &[
            "--bounding-set",
            &bset,
            "--",
            BIN,
            base.store.to_str().unwrap(),
            mnt.to_str().unwrap(),
            "-o",
            &format!("group={},logfile={}", users.group, log.display()),
        ],
    );
    c.env("RUST_LOG", "info");
    let o = run_timeout(c, Duration::from_secs(30));
    assert!(
        o.status.success(),
        "mount with reduced capabilities failed:\n{}\n{}",
        out_str(&o),
        fs::read_to_string(&log).unwrap_or_default()
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            for _ in 0..50 {
                if !is_mounted(&self.0) {
                    return;
                }
                let _ = Command::new("umount").arg(&self.0).status();
                thread::sleep(Duration::from_millis(100));
            }
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _g = Unmount(mnt.clone());
    let pids = find_daemon_pids(&mnt);
    assert_eq!(pids.len(), 1);
    let eff = u64::from_str_radix(&status_field(pids[0], "CapEff"), 16).unwrap();
    let mut have = cap_names(eff);
    have.sort();
    let mut want = NEEDED_CAPS.to_vec();
    want.sort();
    assert_eq!(have, want, "CapEff of the restricted daemon");
    let (m2, s) = (mnt.clone(), base.store.clone());
    let (a, b, gid) = (users.a.clone(), users.b.clone(), users.gid);
    as_user(&a, 0o022, move || {
        mkdir(&m2.join("d"), 0o755).ctx("mkdir");
        write_file(&m2.join("d/f"), &pattern(1, 300_000)).ctx("create+write");
        chmod(&m2.join("d/f"), 0o600).ctx("chmod");
        lsetxattr(&m2.join("d/f"), "user.x", b"1", 0).ctx("setxattr");
        utimensat(
            libc::AT_FDCWD,
            &m2.join("d/f"),
            ts(1_000_000_000, 0),
            ts(1_000_000_000, 0),
            0,
        )
        .ctx("utimens");
        symlink("f", &m2.join("d/l")).ctx("symlink");
        mknod(&m2.join("d/fifo"), libc::S_IFIFO | 0o644, 0).ctx("mkfifo");
    });
    let m3 = mnt.clone();
    as_user(&b, 0o077, move || {
        assert_eq!(
            fs::read(m3.join("d/f")).ctx("B reads A's file (passthrough open)"),
            pattern(1, 300_000)
        );
        link(&m3.join("d/f"), &m3.join("d/hard")).ctx("link (linkat AT_EMPTY_PATH)");
        rename(&m3.join("d/hard"), &m3.join("d/hard2")).ctx("rename");
        truncate(&m3.join("d/f"), 10).ctx("truncate A's file");
        let fd = open(&m3.join("d/f"), libc::O_RDWR, 0).ctx("open rw");
        flock(fd.as_raw_fd(), libc::LOCK_EX).ctx("flock");
        fs::write(m3.join("d/new"), b"b").ctx("B creates in A's dir");
        unlink(&m3.join("d/hard2")).ctx("unlink");
    });
    let st = lst(&s.join("d")).unwrap();
    assert_eq!(
        (st.uid, st.gid, st.perm()),
        (a.uid, gid, 0o2770),
        "setgid dir kept (needs CAP_FSETID)"
    );
    let st = lst(&s.join("d/new")).unwrap();
    assert_eq!((st.uid, st.gid, st.perm()), (b.uid, gid, 0o660));
    let log_text = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log_text.contains("passthrough enabled") && !log_text.contains("passthrough refused"),
        "kernel passthrough (FUSE_DEV_IOC_BACKING_OPEN needs CAP_SYS_ADMIN) must still work:\n{log_text}"
    );
    drop(_g);
    assert!(!is_mounted(&mnt), "umount with reduced capabilities");
}

/// The lines of a strace with each call another thread interrupted put back together:
/// strace writes "<tid> sys(args <unfinished ...>" and later "<tid> <... sys resumed>rest",
/// and the flags a rule needs (AT_EMPTY_PATH, O_NOFOLLOW) may be in the second half.
fn strace_joined(text: &str) -> Vec<String> {
    let mut pending: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let tid = line.split_whitespace().next().unwrap_or("").to_string();
        if let Some(head) = line.strip_suffix("<unfinished ...>") {
            pending.insert(tid, head.to_string());
            continue;
        }
        if let Some(i) = line.find(" resumed>") {
            if let Some(head) = pending.remove(&tid) {
                out.push(format!("{head}{}", &line[i + " resumed>".len()..]));
                continue;
            }
        }
        out.push(line.to_string());
    }
    // Never resumed (the trace ended): judged as they are.
    out.extend(pending.into_values());
    out
}

/// Store-relative discipline, from a strace of the daemon: (dirfd, name) pairs of every traced
/// file syscall. Returns the lines that break a rule.
fn strace_violations(text: &str) -> Vec<String> {
    let mut bad = Vec::new();
    for line in &strace_joined(text) {
        let line = line.as_str();
        // "<tid> syscall(args) = ret"
        let Some(rest) = line.split_once(' ').map(|(_, r)| r.trim_start()) else {
            continue;
        };
        let Some((sys, args)) = rest.split_once('(') else {
            continue;
        };
        if sys.starts_with("---") || sys.starts_with("+++") || sys.starts_with('<') {
            continue;
        }
        let dirfd = args.split(',').next().unwrap_or("").trim().to_string();
        let first_str = args.split('"').nth(1).unwrap_or("").to_string();
        let is_proc = |p: &str| {
            p.starts_with("/proc/self/fd/")
                || p.strip_prefix("/proc/")
                    .and_then(|r| r.split('/').next())
                    .is_some_and(|pid| !pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit()))
        };
        let mut why = None;
        match sys {
            "execve" | "execveat" | "fork" | "vfork" => why = Some("executes/forks"),
            "clone" | "clone3" if !args.contains("CLONE_THREAD") => why = Some("creates a process"),
            "getxattr" | "setxattr" | "listxattr" | "removexattr" | "lgetxattr" | "lsetxattr"
            | "llistxattr" | "lremovexattr" | "open" | "stat" | "lstat" | "chown" | "lchown"
            | "chmod" | "truncate" | "readlink"
                if !is_proc(&first_str) =>
            {
                why = Some("path outside /proc");
            }
            _ if (args.starts_with("AT_FDCWD, \"") || args.starts_with("AT_FDCWD,\""))
                && !is_proc(&first_str) =>
            {
                why = Some("AT_FDCWD path outside /proc");
            }
            _ if dirfd.chars().all(|c| c.is_ascii_digit())
                && !dirfd.is_empty()
                && args.contains('"') =>
            {
                let name = first_str.as_str();
                let empty_path = name.is_empty() && args.contains("AT_EMPTY_PATH");
                if sys != "symlinkat" && name.contains('/') {
                    why = Some("multi-component name");
                } else if sys == "openat" && !(name == "." || args.contains("O_NOFOLLOW")) {
                    why = Some("openat without O_NOFOLLOW");
                } else if matches!(
                    sys,
                    "fchownat"
                        | "utimensat"
                        | "newfstatat"
                        | "statx"
                        | "faccessat"
                        | "faccessat2"
                        | "fchmodat2"
                ) && !empty_path
                    && !args.contains("AT_SYMLINK_NOFOLLOW")
                {
                    why = Some("follows a final symlink");
                } else if sys == "fchmodat" && !name.is_empty() {
                    why = Some("fchmodat by name follows symlinks");
                } else if sys == "linkat" && args.contains("AT_SYMLINK_FOLLOW") {
                    why = Some("linkat follows");
                }
            }
            _ => {}
        }
        if let Some(w) = why {
            bad.push(format!("{w}: {line}"));
        }
    }
    bad
}

#[test]
fn daemon_never_executes_anything() {
    let m = Mount::new();
    let u = m.users;
    assert_eq!(m.daemon_pids.len(), 1);
    let pid = m.daemon_pids[0];
    let trace = m.base.fresh("strace.out");
    let mut c = Command::new("strace");
    c.args([
        "-f",
        "-qq",
        "-s",
        "4096",
        "-e",
        "trace=%file,%process,fchown,fchmod,fsetxattr,fgetxattr",
        "-o",
    ])
    .arg(&trace)
    .arg("-p")
    .arg(pid.to_string());
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut st = ChildGuard::spawn(c, "strace");
    // Wait until strace is attached (TracerPid of the daemon).
    assert!(
        wait_until(Duration::from_secs(10), || status_field(pid, "TracerPid")
            == st.pid().to_string()),
        "strace did not attach to the daemon (is ptrace allowed?)"
    );
    // A workload with executables in it: a member stores scripts and runs them from the mount;
    // members create, read, write, chmod, chgrp, touch, xattr, rename, link, symlink, lock, list.
    let script = format!(
        "set -e; cd '{mnt}'; mkdir -p w/sub; printf '#!/bin/sh\\necho ran\\n' > w/run.sh; chmod 755 w/run.sh; \
         ./w/run.sh; sh w/run.sh; cp w/run.sh w/copy; mv w/copy w/moved; ln w/moved w/hard; ln -s run.sh w/sym; \
         ln -s /etc/passwd w/abs; ls -lR . >/dev/null; cat w/run.sh >/dev/null; flock w/run.sh true; \
         chmod 4755 w/moved; chgrp {group} w/moved; touch -d 2001-01-01 w/moved; touch w/sym 2>/dev/null || true; \
         setfattr -n user.k -v v w/moved; getfattr -d w/moved >/dev/null; setfattr -x user.k w/moved; \
         mkfifo w/fifo; truncate -s 100 w/moved; rm -f w/hard w/sym; \
         for i in 1 2 3 4 5; do echo $i > w/sub/f$i; done; mv w/sub w/sub2; ./w/run.sh",
        mnt = m.mnt.display(),
        group = u.group
    );
    let out = sh_as(&u.a, 0o022, &script);
    let runs = String::from_utf8_lossy(&out.stdout).matches("ran").count();
    assert!(out.status.success(), "workload: {}", out_str(&out));
    let out = sh_as(
        &u.b,
        0o077,
        &format!(
            "cd '{}' && ./w/run.sh && cat w/sub2/f1 w/moved >/dev/null && rm -rf w",
            m.mnt.display()
        ),
    );
    assert!(out.status.success(), "workload B: {}", out_str(&out));
    thread::sleep(Duration::from_millis(300));
    st.kill(libc::SIGINT);
    let _ = st.wait_timeout(Duration::from_secs(10));
    let text = fs::read_to_string(&trace).unwrap_or_default();
    let calls = text.lines().filter(|l| l.contains('(')).count();
    let execs: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.contains("execve(")
                || l.contains("execveat(")
                || l.contains("fork(")
                || ((l.contains("clone(") || l.contains("clone3(")) && !l.contains("CLONE_THREAD"))
        })
        .collect();
    let bad = strace_violations(&text);
    let mut hist: BTreeMap<String, u32> = BTreeMap::new();
    for l in text.lines() {
        if let Some(sys) = l
            .split_once(' ')
            .and_then(|(_, r)| r.trim_start().split_once('('))
            .map(|(s, _)| s.to_string())
        {
            *hist.entry(sys).or_insert(0) += 1;
        }
    }
    println!("SECURITY-EXEC syscalls seen: {hist:?}");
    println!(
        "SECURITY-EXEC strace of daemon {pid}: {calls} file/process syscalls traced, {} exec/fork calls, {} discipline violations; the members ran {} programs from the mount",
        execs.len(),
        bad.len(),
        runs + 1
    );
    assert!(
        calls > 20,
        "strace recorded almost nothing: was it attached?\n{text}"
    );
    assert!(
        execs.is_empty(),
        "the daemon executed or forked:\n{}",
        execs.join("\n")
    );
    assert!(
        bad.is_empty(),
        "store access outside the *at()/O_NOFOLLOW discipline:\n{}",
        bad.join("\n")
    );
    assert!(
        m.daemon_pids.iter().all(|p| pid_alive(*p)),
        "daemon survived being traced"
    );
}
