//! Fault tests (issue 4, section 3): the daemon killed mid-write, the store's filesystem full,
//! the store gone or unreadable underneath, lock holders and waiters (and the daemon) killed.
//!
//! Every operation that could hang runs in a child process or thread with a deadline, so a
//! hang fails the test. Writers are real processes of a member user: `faults/hub_writer.py`
//! stores files the way huggingface_hub does (`blobs/<sha>.incomplete`, rename to
//! `blobs/<sha>`, then a relative `snapshots/...` symlink), and the checks assert that no
//! final name or snapshot ever points at partial or corrupt content.
//!
//! What is supported, as these tests show:
//! * daemon killed: clients get ENOTCONN (ECONNABORTED for a call in flight), never a hang;
//!   `umount -l MNT` and mounting again over the same store recovers, and a re-run of the
//!   interrupted writer completes.
//! * store full: ENOSPC reaches the writer, the daemon keeps serving, and once space is freed
//!   writes succeed again without any remount.
//! * store filesystem dead (ext4 shut down, as when its disk goes away): EIO to clients, the
//!   daemon stays up; recovery is `umount` of hfcachefs, repair/remount of the store
//!   filesystem, mount hfcachefs again.
//! * store root or a store directory chmod 000: members get EACCES (the modes are reported by
//!   the policy), restored at once by chmod back (after the attribute timeout).
//! * store directory renamed: the daemon is bound to the directory, not its path, and keeps
//!   serving it. Store directory deleted: ENOENT to clients; a new store needs a remount.
//! * store filesystem lazily unmounted (`umount -l`): the daemon keeps serving the detached
//!   filesystem through its open handles until hfcachefs is unmounted; mount the store's
//!   filesystem again before mounting hfcachefs again (nothing written meanwhile is lost).

mod common;

use common::*;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const WRITER_PY: &str = include_str!("faults/hub_writer.py");
const REPO: &str = "hub/models--fault--repo";
/// Errors a client may see once the daemon is gone: ENOTCONN for new calls, ECONNABORTED for
/// a call that was in flight when the connection was torn down.
const GONE: &[i32] = &[libc::ENOTCONN, libc::ECONNABORTED];

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn sha256(p: &Path) -> String {
    let out = run_ok(cmd("sha256sum", &[p.to_str().unwrap()]));
    out.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Files of the given sizes with pseudo-random content, each named by its sha256, in a fresh
/// world-readable directory under the base (outside the mount).
fn make_data(base: &Base, stem: &str, sizes: &[usize], seed: u64) -> (PathBuf, Vec<String>) {
    let dir = base.fresh(stem);
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let mut shas = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let tmp = dir.join(format!("tmp{i}"));
        // pattern() ORs its seed with 1: use odd seeds so that no two files are the same.
        write_file(&tmp, &pattern((seed * 1000 + i as u64) * 2 + 1, size)).unwrap();
        let sha = sha256(&tmp);
        let dst = dir.join(&sha);
        fs::rename(&tmp, &dst).unwrap();
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o644)).unwrap();
        shas.push(sha);
    }
    shas.sort();
    shas.dedup();
    assert_eq!(
        shas.len(),
        sizes.len(),
        "make_data: two files with the same content"
    );
    (dir, shas)
}

/// The writer script, world-readable under the base.
fn install_writer(base: &Base) -> PathBuf {
    let p = base.dir.join("hub_writer.py");
    if !p.exists() {
        fs::write(&p, WRITER_PY).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    }
    p
}

/// A hub-like writer process of `user` (umask 022), output captured in a file.
struct Writer {
    child: ChildGuard,
    out: PathBuf,
}

impl Writer {
    fn spawn(m: &Mount, user: &User, data: &Path, delay: f64) -> Writer {
        let script = install_writer(&m.base);
        let out = m.base.fresh("writer-out");
        fs::write(&out, b"").unwrap();
        fs::set_permissions(&out, fs::Permissions::from_mode(0o666)).unwrap();
        let sh = format!(
            "exec /usr/bin/python3 '{}' '{}' '{}' {delay} >>'{}' 2>&1",
            script.display(),
            m.p(REPO).display(),
            data.display(),
            out.display()
        );
        let mut c = sh_as_cmd(user, 0o022, &sh);
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Writer {
            child: ChildGuard::spawn(c, "hub writer"),
            out,
        }
    }
    fn output(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }
    fn done(&self) -> usize {
        self.output()
            .lines()
            .filter(|l| l.starts_with("DONE "))
            .count()
    }
    /// Wait for the exit; panics (after killing it) if it is still running after `timeout`.
    fn finish(&mut self, timeout: Duration, what: &str) -> (i32, String) {
        let st = self.child.wait_timeout(timeout);
        let Some(st) = st else {
            self.child.kill(libc::SIGKILL);
            panic!(
                "{what}: writer still running after {timeout:?} (hung?); output:\n{}",
                self.output()
            );
        };
        (st.code().unwrap_or(-1), self.output())
    }
}

/// "ERRNO <name> <op>" of a failed writer.
fn writer_error(out: &str) -> Option<(String, String)> {
    let l = out.lines().find(|l| l.starts_with("ERRNO "))?;
    let mut it = l.split_whitespace().skip(1);
    Some((it.next()?.to_string(), it.next().unwrap_or("").to_string()))
}

/// Check a repo directory (through the mount or in the store): every blob with a final name
/// holds exactly the content its name promises, every snapshot entry (any commit, any
/// depth) is a symlink resolving to such a blob. Returns (final blobs, snapshot links,
/// leftover .incomplete files).
fn verify_repo(repo: &Path) -> (usize, usize, Vec<String>) {
    let blobs = repo.join("blobs");
    let mut n_blobs = 0;
    let mut incomplete = Vec::new();
    for name in names(&blobs).unwrap_or_default() {
        if name.ends_with(".incomplete") {
            incomplete.push(name);
            continue;
        }
        let got = sha256(&blobs.join(&name));
        assert_eq!(
            got,
            name,
            "{}: a final blob name holds other (partial or corrupt) content",
            blobs.join(&name).display()
        );
        n_blobs += 1;
    }
    // snapshots/<commit>/<path>: a symlink ../../blobs/<sha> (one more ../ per directory level)
    fn walk(dir: &Path, depth: usize, n: &mut usize) {
        for name in names(dir).unwrap_or_default() {
            let p = dir.join(&name);
            if lst(&p).map(|s| s.is_dir()).unwrap_or(false) {
                walk(&p, depth + 1, n);
                continue;
            }
            let target =
                readlink(&p).unwrap_or_else(|e| panic!("{}: not a symlink ({e})", p.display()));
            let sha = target.rsplit('/').next().unwrap().to_string();
            let prefix = format!("{}blobs/", "../".repeat(depth));
            assert!(
                target.starts_with(&prefix) && !sha.contains('.'),
                "{} -> {target}",
                p.display()
            );
            let resolved = dir.join(&target);
            assert!(
                resolved.exists(),
                "{} -> {target} does not resolve",
                p.display()
            );
            assert_eq!(
                sha256(&resolved),
                sha,
                "{} -> {target}: wrong content",
                p.display()
            );
            *n += 1;
        }
    }
    let mut n_links = 0;
    for commit in names(&repo.join("snapshots")).unwrap_or_default() {
        walk(&repo.join("snapshots").join(&commit), 2, &mut n_links);
    }
    (n_blobs, n_links, incomplete)
}

fn kill_daemon(m: &Mount) {
    assert!(
        !m.daemon_pids.is_empty(),
        "no daemon pid known for {}",
        m.mnt.display()
    );
    for &p in &m.daemon_pids {
        unsafe {
            libc::kill(p, libc::SIGKILL);
        }
    }
    let gone = wait_until(Duration::from_secs(10), || {
        m.daemon_pids.iter().all(|p| !pid_alive(*p))
    });
    assert!(gone, "daemon {:?} survived SIGKILL for 10 s", m.daemon_pids);
}

fn daemon_alive(m: &Mount) -> bool {
    !m.daemon_pids.is_empty() && m.daemon_pids.iter().all(|p| pid_alive(*p))
}

/// A syscall through the mount with a deadline (a hang fails the test).
fn timed_op<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    in_thread(Duration::from_secs(10), what, f)
}

fn daemon_log(m: &Mount, logfile: &Path) -> String {
    format!(
        "{}{}",
        m.log_text(),
        fs::read_to_string(logfile).unwrap_or_default()
    )
}

#[track_caller]
fn assert_no_panic(m: &Mount, logfile: &Path) {
    let log = daemon_log(m, logfile);
    assert!(!log.contains("panicked"), "the daemon panicked:\n{log}");
}

/// A small ext4 filesystem in a sparse image, loop-mounted on `dir` (root 0700, no reserved
/// blocks: the daemon is root and would otherwise get 5% more than anyone).
struct LoopFs {
    img: PathBuf,
    dir: PathBuf,
    mounted: bool,
}

impl LoopFs {
    fn new(base: &Base, dir: &Path, mib: u64) -> LoopFs {
        let img = base.fresh("store-img");
        run_ok(cmd(
            "truncate",
            &["-s", &format!("{mib}M"), img.to_str().unwrap()],
        ));
        run_ok(cmd(
            "mkfs.ext4",
            &["-q", "-F", "-m", "0", img.to_str().unwrap()],
        ));
        let mut l = LoopFs {
            img,
            dir: dir.to_path_buf(),
            mounted: false,
        };
        l.mount();
        let _ = fs::remove_dir(dir.join("lost+found"));
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap();
        l
    }
    fn mount(&mut self) {
        run_ok(cmd(
            "mount",
            &[
                "-o",
                "loop",
                self.img.to_str().unwrap(),
                self.dir.to_str().unwrap(),
            ],
        ));
        self.mounted = true;
    }
    fn umount(&mut self) {
        let d = self.dir.to_str().unwrap().to_string();
        let ok = wait_until(Duration::from_secs(10), || {
            run_timeout(cmd("umount", &[&d]), OP_TIMEOUT)
                .status
                .success()
                || !is_mounted(&self.dir)
        });
        assert!(ok, "could not unmount the store filesystem {d}");
        self.mounted = false;
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted && is_mounted(&self.dir) {
            let d = self.dir.to_str().unwrap().to_string();
            let ok = wait_until(Duration::from_secs(10), || {
                let _ = std::process::Command::new("umount")
                    .arg(&d)
                    .stderr(Stdio::null())
                    .status();
                !is_mounted(&self.dir)
            });
            if !ok {
                let _ = std::process::Command::new("umount")
                    .args(["-l", &d])
                    .status();
            }
        }
        let _ = fs::remove_file(&self.img);
    }
}

/// A base whose store is a fresh small ext4 filesystem, and the daemon's log file.
fn base_on_loopfs(mib: u64) -> (Arc<Base>, LoopFs) {
    let base = Base::new();
    let lfs = LoopFs::new(&base, &base.store, mib);
    (base, lfs)
}

fn opts(base: &Base, mode: &str) -> (String, PathBuf) {
    let logfile = base.fresh("daemon-log");
    (
        format!("passthrough={mode},logfile={}", logfile.display()),
        logfile,
    )
}

// ---------------------------------------------------------------------------------------------
// kill -9 of the daemon while a member writes
// ---------------------------------------------------------------------------------------------

fn daemon_killed_mid_write(mode: &str) {
    let base = Base::new();
    let (o, logfile) = opts(&base, mode);
    let mut m = Mount::on_base(base.clone(), &o);
    let u = m.users;
    let (data, shas) = make_data(&base, "data", &[8 << 20; 6], 1);

    // 256 KiB every 10 ms: about 0.4 s per 8 MiB file.
    let mut w = Writer::spawn(&m, &u.a, &data, 0.01);
    let store_blobs = m.s(&format!("{REPO}/blobs"));
    let mid_file = wait_until(Duration::from_secs(30), || {
        w.done() >= 2
            && names(&store_blobs).unwrap_or_default().iter().any(|n| {
                n.ends_with(".incomplete")
                    && lst(&store_blobs.join(n))
                        .map(|s| s.size > 0)
                        .unwrap_or(false)
            })
    });
    assert!(
        mid_file,
        "writer never got two files done and a third one started:\n{}",
        w.output()
    );
    let done_before = w.done();
    kill_daemon(&m);
    let t = Instant::now();

    // The writer gets an error, promptly, and stops.
    let (code, out) = w.finish(
        Duration::from_secs(15),
        "writer after the daemon was killed",
    );
    let (err, op) = writer_error(&out)
        .unwrap_or_else(|| panic!("writer did not report an error (exit {code}):\n{out}"));
    assert_eq!(code, 3, "writer exit status:\n{out}");
    assert!(
        err == "ENOTCONN" || err == "ECONNABORTED",
        "writer saw {err} on {op}, expected ENOTCONN/ECONNABORTED"
    );
    eprintln!(
        "[{mode}] writer stopped {:?} after the kill with {err} on {op} ({done_before} files done)",
        t.elapsed()
    );

    // New calls fail at once with ENOTCONN, for root and for members.
    let p = m.p(REPO);
    assert_errno(
        timed_op("stat after kill", move || lst(&p)),
        GONE,
        "stat through a dead daemon",
    );
    let p = m.p("new-file");
    let r = as_user(&u.b, 0o022, move || {
        open(&p, libc::O_CREAT | libc::O_WRONLY, 0o644).map(|_| ())
    });
    assert_errno(r, GONE, "create through a dead daemon");

    // Nothing partial under a final name, no snapshot pointing at a partial blob.
    let (blobs, links, incomplete) = verify_repo(&m.s(REPO));
    assert_eq!(
        (blobs, links),
        (done_before, done_before),
        "store after the crash"
    );
    assert!(
        incomplete.len() <= 1,
        "leftover .incomplete files: {incomplete:?}"
    );

    // umount -l, remount over the same store, and the re-run completes.
    let o = run_timeout(cmd("umount", &["-l", m.mnt.to_str().unwrap()]), OP_TIMEOUT);
    assert!(
        o.status.success(),
        "umount -l after the crash: {}",
        out_str(&o)
    );
    m.remount_same();
    let mut w2 = Writer::spawn(&m, &u.a, &data, 0.0);
    let (code, out) = w2.finish(Duration::from_secs(90), "re-run after remount");
    assert_eq!(code, 0, "re-run after remount failed:\n{out}");
    assert!(out.contains("ALL DONE"), "{out}");
    let (blobs, links, incomplete) = verify_repo(&m.p(REPO));
    assert_eq!(
        (blobs, links),
        (shas.len(), shas.len()),
        "through the new mount after the re-run; writer said:\n{out}"
    );
    assert!(incomplete.is_empty(), "the re-run left {incomplete:?}");
    assert_no_panic(&m, &logfile);
}

#[test]
fn daemon_killed_mid_write_passthrough() {
    daemon_killed_mid_write("auto");
}

#[test]
fn daemon_killed_mid_write_no_passthrough() {
    daemon_killed_mid_write("off");
}

// ---------------------------------------------------------------------------------------------
// Store full
// ---------------------------------------------------------------------------------------------

fn store_full(mode: &str) {
    let (base, _lfs) = base_on_loopfs(64);
    let (o, logfile) = opts(&base, mode);
    let m = Mount::on_base(base.clone(), &o);
    let u = m.users;
    let (big, big_shas) = make_data(&base, "big", &[80 << 20], 2);
    let (small, small_shas) = make_data(&base, "small", &[20 << 20], 3);
    sh_as_ok(
        &u.a,
        0o022,
        &format!("echo before > '{}'", m.p("before.txt").display()),
    );

    // 80 MiB into a ~55 MiB filesystem: ENOSPC on the way, and no final name.
    let mut w = Writer::spawn(&m, &u.a, &big, 0.0);
    let (code, out) = w.finish(Duration::from_secs(60), "writer filling the store");
    let (err, op) =
        writer_error(&out).unwrap_or_else(|| panic!("writer did not fail (exit {code}):\n{out}"));
    assert_eq!(
        err, "ENOSPC",
        "the writer got {err} on {op}, expected ENOSPC:\n{out}"
    );
    eprintln!("[{mode}] writer got ENOSPC on {op}");
    let big_final = format!("{REPO}/blobs/{}", big_shas[0]);
    assert!(
        lst(&m.s(&big_final)).is_err(),
        "a partial blob was published under its final name"
    );
    let p = m.p(&big_final);
    assert_errno(
        timed_op("stat final", move || lst(&p)),
        &[libc::ENOENT],
        "final name through the mount",
    );
    let incomplete = format!("{big_final}.incomplete");
    assert!(
        lst(&m.s(&incomplete)).is_ok(),
        "the .incomplete should stay (the Hub resumes it)"
    );
    let (blobs, links, _) = verify_repo(&m.p(REPO));
    assert_eq!((blobs, links), (0, 0));

    // The daemon is still up and serving while the store is full.
    assert!(daemon_alive(&m), "daemon died when the store filled up");
    let mnt = m.mnt.clone();
    let (free, content) = timed_op("ops while full", move || {
        names(&mnt).ctx("readdir while full");
        let s = statvfs(&mnt).ctx("statfs while full");
        (
            s.f_bavail * s.f_frsize,
            fs::read_to_string(mnt.join("before.txt")).ctx("read while full"),
        )
    });
    assert_eq!(content, "before\n");
    assert!(free < (1 << 20), "store not full? {free} bytes free");

    // Free the space (through the mount, as the user would), then the download succeeds.
    sh_as_ok(
        &u.a,
        0o022,
        &format!("rm -f '{}'", m.p(&incomplete).display()),
    );
    let mut w = Writer::spawn(&m, &u.a, &small, 0.0);
    let (code, out) = w.finish(Duration::from_secs(60), "writer after freeing space");
    assert_eq!(code, 0, "write after freeing space failed:\n{out}");
    let (blobs, links, incomplete) = verify_repo(&m.p(REPO));
    assert_eq!((blobs, links, incomplete.len()), (1, 1, 0));
    assert_eq!(
        sha256(&m.p(&format!("{REPO}/blobs/{}", small_shas[0]))),
        small_shas[0]
    );
    assert!(daemon_alive(&m));
    assert_no_panic(&m, &logfile);
}

#[test]
fn store_full_passthrough() {
    store_full("auto");
}

#[test]
fn store_full_no_passthrough() {
    store_full("off");
}

// ---------------------------------------------------------------------------------------------
// The store gone or unreadable underneath
// ---------------------------------------------------------------------------------------------

/// EXT4_IOC_SHUTDOWN (`_IOR('X', 125, __u32)`) with EXT4_GOING_FLAGS_NOLOGFLUSH: the
/// filesystem behaves as if its disk vanished (every call fails with EIO), as in fstests.
fn shut_down_ext4(dir: &Path) {
    let fd = open(dir, libc::O_RDONLY | libc::O_DIRECTORY, 0).ctx("open the store filesystem root");
    let flags: u32 = 2;
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), 0x8004_587D, &flags as *const u32) };
    assert_eq!(
        r,
        0,
        "EXT4_IOC_SHUTDOWN: {}",
        std::io::Error::last_os_error()
    );
}

fn store_fs_dies(mode: &str) {
    let (base, mut lfs) = base_on_loopfs(32);
    let (o, logfile) = opts(&base, mode);
    let mut m = Mount::on_base(base.clone(), &o);
    let u = m.users;
    let (data, shas) = make_data(&base, "data", &[1 << 20, 2 << 20], 4);
    let (code, out) = Writer::spawn(&m, &u.a, &data, 0.0).finish(Duration::from_secs(60), "writer");
    assert_eq!(code, 0, "{out}");
    run_ok(cmd("sync", &[]));
    // An open file, as a long-running reader would have.
    let held = m.p(&format!("{REPO}/blobs/{}", shas[0]));
    let held_fd =
        as_user(&u.b, 0o022, move || open(&held, libc::O_RDONLY, 0)).ctx("open before the failure");

    shut_down_ext4(&lfs.dir);
    thread::sleep(Duration::from_millis(1200)); // past the attribute/entry timeouts

    // Clear errors, promptly, for new and for already-open files.
    let blob = m.p(&format!("{REPO}/blobs/{}", shas[1]));
    let r = as_user(&u.b, 0o022, move || fs::read(&blob));
    assert_errno(r, &[libc::EIO], "read a blob of a dead store");
    let raw = held_fd.as_raw_fd();
    assert_errno(
        timed_op("pread", move || pread_fd(raw, 4096, 0)),
        &[libc::EIO],
        "read on a descriptor opened before",
    );
    drop(held_fd);
    let p = m.p("new-file");
    let r = as_user(&u.a, 0o022, move || {
        open(&p, libc::O_CREAT | libc::O_WRONLY, 0o644).map(|_| ())
    });
    assert_errno(r, &[libc::EIO], "create in a dead store");
    let p = m.p(REPO);
    // (ext4 may still answer a directory listing from its caches after the shutdown)
    let r = timed_op("readdir", move || list_dir_raw(&p, false));
    assert!(
        matches!(errno_of(&r), None | Some(libc::EIO)),
        "readdir of a dead store: {r:?}"
    );
    let p = m.p("hub/not-there");
    assert_errno(
        timed_op("lookup", move || lst(&p)),
        &[libc::EIO, libc::ENOENT],
        "lookup in a dead store",
    );
    assert!(daemon_alive(&m), "the daemon died with its store");
    let mnt = m.mnt.clone();
    timed_op("statfs", move || statvfs(&mnt).map(|_| ())).ctx("statfs still answers");
    let log_after_failure = daemon_log(&m, &logfile);

    // Recovery: unmount hfcachefs, repair/remount the store filesystem, mount again.
    m.unmount()
        .expect("hfcachefs unmounts cleanly with a dead store");
    lfs.umount();
    let fsck = run_timeout(
        cmd("e2fsck", &["-f", "-y", lfs.img.to_str().unwrap()]),
        OP_TIMEOUT,
    );
    assert!(
        matches!(fsck.status.code(), Some(0 | 1)),
        "e2fsck: {}",
        out_str(&fsck)
    ); // 1: errors fixed
    lfs.mount();
    let m2 = Mount::on_base(base.clone(), &o);
    let (blobs, links, incomplete) = verify_repo(&m2.p(REPO));
    assert_eq!(
        (blobs, links, incomplete.len()),
        (2, 2, 0),
        "the store after recovery"
    );
    sh_as_ok(
        &u.b,
        0o022,
        &format!(
            "echo after > '{}' && cat '{}'",
            m2.p("after").display(),
            m2.p("after").display()
        ),
    );
    assert_no_panic(&m2, &logfile);

    // The daemon must say what happened in its log, not only to the clients.
    let l = log_after_failure.to_lowercase();
    assert!(
        l.contains("input/output error") || l.contains("eio") || l.contains("os error 5"),
        "the store failed with EIO but the daemon logged nothing about it:\n{log_after_failure}"
    );
}

#[test]
fn store_fs_dies_eio_then_recovers_passthrough() {
    store_fs_dies("auto");
}

#[test]
fn store_fs_dies_eio_then_recovers_no_passthrough() {
    store_fs_dies("off");
}

#[test]
fn store_made_unreadable_then_restored() {
    let base = Base::new();
    let (o, logfile) = opts(&base, "auto");
    let m = Mount::on_base(base.clone(), &o);
    let u = m.users;
    sh_as_ok(
        &u.a,
        0o022,
        &format!(
            "mkdir '{0}/d' && echo hello > '{0}/d/f' && echo x > '{0}/g'",
            m.mnt.display()
        ),
    );
    let member_reads = |path: PathBuf| as_user(&u.b, 0o022, move || fs::read_to_string(&path));

    // chmod 000 on the store root: members are refused (EACCES), promptly, root still works.
    fs::set_permissions(&m.store, fs::Permissions::from_mode(0o000)).unwrap();
    let refused = wait_until(Duration::from_secs(5), || {
        errno_of(&member_reads(m.p("g"))) == Some(libc::EACCES)
    });
    assert!(
        refused,
        "members still read the store after chmod 000 of its root: {:?}",
        member_reads(m.p("g"))
    );
    let p = m.p("");
    assert_errno(
        as_user(&u.b, 0o022, move || names(&p)),
        &[libc::EACCES],
        "list the root of a chmod-000 store",
    );
    assert_eq!(fs::read_to_string(m.p("g")).ctx("root reads"), "x\n");
    fs::set_permissions(&m.store, fs::Permissions::from_mode(0o700)).unwrap();
    let back = wait_until(Duration::from_secs(5), || {
        member_reads(m.p("g")).ok().as_deref() == Some("x\n")
    });
    assert!(
        back,
        "no recovery after chmod 0700 of the store root: {:?}",
        member_reads(m.p("g"))
    );

    // chmod 000 on a directory in the store: that subtree is refused, the rest works.
    fs::set_permissions(m.s("d"), fs::Permissions::from_mode(0o000)).unwrap();
    let refused = wait_until(Duration::from_secs(5), || {
        errno_of(&member_reads(m.p("d/f"))) == Some(libc::EACCES)
    });
    assert!(refused, "members still read d/f after chmod 000 of store/d");
    assert_eq!(member_reads(m.p("g")).ctx("the rest of the store"), "x\n");
    fs::set_permissions(m.s("d"), fs::Permissions::from_mode(0o2770)).unwrap();
    let back = wait_until(Duration::from_secs(5), || {
        member_reads(m.p("d/f")).ok().as_deref() == Some("hello\n")
    });
    assert!(back, "no recovery after restoring store/d");
    assert!(daemon_alive(&m));
    assert_no_panic(&m, &logfile);
}

#[test]
fn store_dir_moved_keeps_serving_deleted_needs_remount() {
    let base = Base::new();
    let (o, logfile) = opts(&base, "auto");
    let mut m = Mount::on_base(base.clone(), &o);
    let u = m.users;
    sh_as_ok(
        &u.a,
        0o022,
        &format!("mkdir '{0}/d' && echo hello > '{0}/d/f'", m.mnt.display()),
    );

    // Moved: the daemon holds the directory itself, not its path, and goes on serving it.
    let moved = m.store.with_extension("moved");
    fs::rename(&m.store, &moved).unwrap();
    thread::sleep(Duration::from_millis(1200));
    let out = sh_as_ok(
        &u.b,
        0o022,
        &format!(
            "cat '{0}/d/f' && echo more > '{0}/d/h' && ls '{0}/d'",
            m.mnt.display()
        ),
    );
    assert_eq!(out, "hello\nf\nh\n");
    assert_eq!(
        fs::read_to_string(moved.join("d/h")).unwrap(),
        "more\n",
        "written into the moved store"
    );
    fs::rename(&moved, &m.store).unwrap();

    // Deleted: clients get ENOENT (no hang, no crash); a new empty store directory at the
    // same path is only picked up by mounting again.
    run_ok(cmd("rm", &["-rf", m.store.to_str().unwrap()]));
    thread::sleep(Duration::from_millis(1200));
    let mnt = m.mnt.clone();
    let r = as_user(&u.b, 0o022, move || fs::read_to_string(mnt.join("d/f")));
    assert_errno(
        r,
        &[libc::ENOENT, libc::ESTALE],
        "read from a deleted store",
    );
    let mnt = m.mnt.clone();
    let r = as_user(&u.b, 0o022, move || fs::write(mnt.join("new"), b"x"));
    assert_errno(
        r,
        &[libc::ENOENT, libc::ESTALE],
        "create in a deleted store",
    );
    assert!(
        daemon_alive(&m),
        "the daemon died when its store was deleted"
    );
    fs::create_dir(&m.store).unwrap();
    fs::set_permissions(&m.store, fs::Permissions::from_mode(0o700)).unwrap();
    thread::sleep(Duration::from_millis(1200));
    let mnt = m.mnt.clone();
    let r = as_user(&u.b, 0o022, move || fs::write(mnt.join("new"), b"x"));
    assert_errno(
        r,
        &[libc::ENOENT, libc::ESTALE],
        "create before remounting over the new store",
    );
    assert_no_panic(&m, &logfile);
    m.unmount().expect("unmount with a deleted store");
    m.remount_same();
    sh_as_ok(
        &u.b,
        0o022,
        &format!("echo x > '{0}/new' && cat '{0}/new'", m.mnt.display()),
    );
    assert_eq!(fs::read_to_string(m.s("new")).unwrap(), "x\n");
}

#[test]
fn store_fs_lazily_unmounted_keeps_serving_until_remount() {
    let (base, mut lfs) = base_on_loopfs(32);
    let (o, logfile) = opts(&base, "auto");
    let mut m = Mount::on_base(base.clone(), &o);
    let u = m.users;
    sh_as_ok(
        &u.a,
        0o022,
        &format!("echo before > '{}'", m.p("before").display()),
    );

    // `umount -l` of the store's filesystem: the path now shows the empty directory below,
    // but the daemon's handles keep the detached filesystem alive and it goes on serving it.
    run_ok(cmd("umount", &["-l", lfs.dir.to_str().unwrap()]));
    lfs.mounted = false;
    assert!(
        names(&lfs.dir).unwrap().is_empty(),
        "the store path should show the empty mountpoint"
    );
    let out = sh_as_ok(
        &u.b,
        0o022,
        &format!(
            "cat '{0}/before' && echo during > '{0}/during' && cat '{0}/during'",
            m.mnt.display()
        ),
    );
    assert_eq!(out, "before\nduring\n");
    assert!(daemon_alive(&m));
    assert_no_panic(&m, &logfile);

    // Supported recovery: unmount hfcachefs (the detached filesystem then goes away, written
    // back), mount the store's filesystem again, mount hfcachefs again: nothing is lost.
    m.unmount()
        .expect("unmount hfcachefs over a detached store");
    let remounted = wait_until(Duration::from_secs(10), || {
        run_timeout(
            cmd(
                "mount",
                &[
                    "-o",
                    "loop",
                    lfs.img.to_str().unwrap(),
                    lfs.dir.to_str().unwrap(),
                ],
            ),
            OP_TIMEOUT,
        )
        .status
        .success()
    });
    assert!(remounted, "could not mount the store filesystem again");
    lfs.mounted = true;
    m.remount_same();
    let out = sh_as_ok(
        &u.b,
        0o022,
        &format!("cat '{0}/before' '{0}/during'", m.mnt.display()),
    );
    assert_eq!(out, "before\nduring\n");
}

// ---------------------------------------------------------------------------------------------
// Lock holders, waiters and the daemon killed
// ---------------------------------------------------------------------------------------------

/// A world-writable directory for marker files of the user processes.
/// The daemon runs out of descriptors while members keep creating files: each create
/// either succeeds in passthrough mode or fails with EMFILE. None may succeed with daemon
/// I/O instead (as one did when only the passthrough backing could not be opened): the
/// kernel would then answer EIO to every later passthrough open of that file while the
/// first open lasts, e.g. other users of a lock file.
#[test]
fn descriptor_exhaustion_fails_creates_without_poisoning_files() {
    let m = Mount::with_nofile_limit("threads=1", 64);
    let mut held: Vec<(PathBuf, fs::File)> = Vec::new();
    let mut failures = 0;
    for i in 0..400 {
        let p = m.p(&format!("f{i}"));
        match fs::OpenOptions::new().create_new(true).write(true).open(&p) {
            Ok(f) => held.push((p, f)),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "create f{i}: {e}");
                failures += 1;
                if failures == 8 {
                    break;
                }
                // Closing one file frees one daemon descriptor: the next creates meet the
                // limit at another point (store descriptor, inode handle or backing file).
                held.remove(0);
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
    assert_eq!(failures, 8, "the daemon never ran out of descriptors");
    assert!(held.len() > 8, "only {} files were created", held.len());
    // Free half of the daemon's file descriptors, then open each file still held a second
    // time, as another user of it would.
    let keep = held.split_off(held.len() / 2);
    drop(held);
    thread::sleep(Duration::from_millis(200));
    for (p, _first) in &keep {
        if let Err(e) = fs::OpenOptions::new().write(true).open(p) {
            panic!("second open of {} while the first lasts: {e}", p.display());
        }
    }
    assert!(daemon_alive(&m), "the daemon died");
}

fn marker_dir(base: &Base) -> PathBuf {
    let d = base.fresh("markers");
    fs::create_dir(&d).unwrap();
    fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).unwrap();
    d
}

/// `user` takes LOCK_EX on `path` and holds it (sleeping) until killed; waits until it has it.
fn spawn_holder(user: &User, path: &Path, markers: &Path, tag: &str) -> ChildGuard {
    let marker = markers.join(tag);
    let script = format!(
        "exec 3<>'{}' && flock -x 3 && touch '{}' && exec sleep 120",
        path.display(),
        marker.display()
    );
    let mut c = sh_as_cmd(user, 0o022, &script);
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let g = ChildGuard::spawn(c, tag);
    assert!(
        wait_until(Duration::from_secs(10), || marker.exists()),
        "{tag} never got the lock"
    );
    g
}

/// `user` blocks in `flock -x path touch marker`; checks that it is blocked.
fn spawn_waiter(user: &User, path: &Path, markers: &Path, tag: &str) -> ChildGuard {
    let script = format!(
        "exec flock -x '{}' touch '{}'",
        path.display(),
        markers.join(tag).display()
    );
    let mut c = sh_as_cmd(user, 0o022, &script);
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut g = ChildGuard::spawn(c, tag);
    thread::sleep(Duration::from_millis(500));
    assert!(g.running(), "{tag} did not block");
    g
}

fn lock_nb(fd: &std::os::fd::OwnedFd) -> std::io::Result<()> {
    let raw = fd.as_raw_fd();
    timed_op("flock LOCK_NB", move || {
        flock(raw, libc::LOCK_EX | libc::LOCK_NB)
    })
}

#[track_caller]
fn eventually_locked(fd: &std::os::fd::OwnedFd, what: &str) {
    let mut last = Ok(());
    let ok = wait_until(Duration::from_secs(5), || {
        last = lock_nb(fd);
        last.is_ok()
    });
    assert!(ok, "{what}: still not lockable after 5 s ({last:?})");
}

#[test]
fn lock_held_and_waited_for_when_the_daemon_is_killed() {
    let base = Base::new();
    let (o, _logfile) = opts(&base, "auto");
    let mut m1 = Mount::on_base(base.clone(), &o);
    let m2 = m1.second();
    let u = m1.users;
    let markers = marker_dir(&base);
    sh_as_ok(
        &u.a,
        0o022,
        &format!(
            "mkdir -p '{0}/hub/.locks' && : > '{0}/hub/.locks/x.lock'",
            m1.mnt.display()
        ),
    );
    let lock = "hub/.locks/x.lock";

    let mut holder = spawn_holder(&u.a, &m1.p(lock), &markers, "holder");
    let mut waiter = spawn_waiter(&u.b, &m1.p(lock), &markers, "waiter");
    let other = open(&m2.p(lock), libc::O_RDWR, 0).ctx("open through the second daemon");
    assert_errno(
        lock_nb(&other),
        &[libc::EWOULDBLOCK],
        "the other daemon sees the holder's lock",
    );

    kill_daemon(&m1);
    let st = waiter.wait_timeout(Duration::from_secs(10));
    let st = st.expect("blocked flock waiter still stuck 10 s after the daemon was killed");
    assert!(
        !st.success(),
        "the waiter must fail, not get the lock: {st:?}"
    );
    assert!(
        !markers.join("waiter").exists(),
        "the waiter ran its command"
    );
    holder.kill(libc::SIGKILL);
    assert!(
        holder.wait_timeout(Duration::from_secs(10)).is_some(),
        "the holder could not exit (close hung?)"
    );

    // The dead daemon's store descriptors are gone, and their locks with them.
    eventually_locked(
        &other,
        "lock through the second daemon after the first was killed",
    );

    // umount -l + remount: exclusion works again across the two daemons.
    let o = run_timeout(cmd("umount", &["-l", m1.mnt.to_str().unwrap()]), OP_TIMEOUT);
    assert!(o.status.success(), "umount -l: {}", out_str(&o));
    m1.remount_same();
    let mut next = spawn_waiter(&u.b, &m1.p(lock), &markers, "next user");
    flock(other.as_raw_fd(), libc::LOCK_UN).unwrap();
    let st = next
        .wait_timeout(Duration::from_secs(10))
        .expect("the next user is still waiting after the release");
    assert!(
        st.success() && markers.join("next user").exists(),
        "next user: {st:?}"
    );
}

#[test]
fn lock_waiter_and_holder_killed_release_everything() {
    let base = Base::new();
    let (o, logfile) = opts(&base, "auto");
    let m1 = Mount::on_base(base.clone(), &o);
    let m2 = m1.second();
    let u = m1.users;
    let markers = marker_dir(&base);
    sh_as_ok(
        &u.a,
        0o022,
        &format!(": > '{}'", m1.p("blob.lock").display()),
    );

    // A holds through daemon 1; B waits through daemon 2 and is killed while blocked.
    let mut holder = spawn_holder(&u.a, &m1.p("blob.lock"), &markers, "holder");
    let mut waiter = spawn_waiter(&u.b, &m2.p("blob.lock"), &markers, "waiter");
    waiter.kill(libc::SIGKILL);
    assert!(
        waiter.wait_timeout(Duration::from_secs(10)).is_some(),
        "killed blocked waiter is stuck"
    );
    assert!(!markers.join("waiter").exists());
    let probe = open(&m2.p("blob.lock"), libc::O_RDWR, 0).unwrap();
    assert_errno(
        lock_nb(&probe),
        &[libc::EWOULDBLOCK],
        "still the holder's after the waiter died",
    );

    // A is killed while holding: released for everybody, on both daemons.
    holder.kill(libc::SIGKILL);
    assert!(
        holder.wait_timeout(Duration::from_secs(10)).is_some(),
        "killed holder is stuck"
    );
    eventually_locked(&probe, "through daemon 2 after the holder was killed");
    let probe1 = open(&m1.p("blob.lock"), libc::O_RDWR, 0).unwrap();
    assert_errno(
        lock_nb(&probe1),
        &[libc::EWOULDBLOCK],
        "daemon 1 sees daemon 2's new lock",
    );

    // The next users proceed, on either daemon.
    let mut next1 = spawn_waiter(&u.b, &m1.p("blob.lock"), &markers, "next on daemon 1");
    let mut next2 = spawn_waiter(&u.a, &m2.p("blob.lock"), &markers, "next on daemon 2");
    flock(probe.as_raw_fd(), libc::LOCK_UN).unwrap();
    for (w, tag) in [
        (&mut next1, "next on daemon 1"),
        (&mut next2, "next on daemon 2"),
    ] {
        let st = w
            .wait_timeout(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{tag} still waiting"));
        assert!(st.success() && markers.join(tag).exists(), "{tag}: {st:?}");
    }
    eventually_locked(&probe1, "free again at the end");
    assert_no_panic(&m1, &logfile);
}

// ---------------------------------------------------------------------------------------------
// kill -9 of the daemon during a real huggingface_hub snapshot_download
// ---------------------------------------------------------------------------------------------

const HUB_CLIENT_PY: &str = include_str!("faults/hub_client.py");
const E2E_PY: &str = "/opt/hfcachefs-e2e/venv-new/bin/python";

/// The project's fake Hub (tests/e2e/fake_hub.py) serving `spec`, paced at `bps` per
/// connection. Returns the server (killed on drop) and its URL.
fn start_fake_hub(base: &Base, spec: &str, bps: u64) -> (ChildGuard, String) {
    let spec_path = base.fresh("hub-spec");
    fs::write(&spec_path, spec).unwrap();
    let server = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/fake_hub.py");
    let mut c = std::process::Command::new("/usr/bin/python3");
    c.args([
        server,
        "--port",
        "0",
        "--spec",
        spec_path.to_str().unwrap(),
        "--throttle",
        &bps.to_string(),
    ]);
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut g = ChildGuard::spawn(c, "fake hub");
    let stdout = g.child.stdout.take().unwrap();
    let first = in_thread(Duration::from_secs(20), "fake hub start", move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).map(|_| line)
    })
    .ctx("read the fake hub's first line");
    let url = first
        .split("\"url\": \"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("fake hub said {first:?}"))
        .to_string();
    (g, url)
}

/// snapshot_download as `user` (umask 022) with HF_HOME on the mount.
fn spawn_hub_client(m: &Mount, user: &User, url: &str, repo: &str) -> Writer {
    let script = m.base.dir.join("hub_client.py");
    if !script.exists() {
        fs::write(&script, HUB_CLIENT_PY).unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();
    }
    let out = m.base.fresh("hub-client-out");
    fs::write(&out, b"").unwrap();
    fs::set_permissions(&out, fs::Permissions::from_mode(0o666)).unwrap();
    let sh = format!(
        "HF_HOME='{home}' HF_ENDPOINT='{url}' HF_HUB_DISABLE_XET=1 HF_HUB_DISABLE_TELEMETRY=1 \
         HF_HUB_DISABLE_PROGRESS_BARS=1 HF_HUB_DISABLE_IMPLICIT_TOKEN=1 HF_HUB_ETAG_TIMEOUT=30 \
         HF_HUB_DOWNLOAD_TIMEOUT=60 exec {E2E_PY} '{script}' '{repo}' >>'{out}' 2>&1",
        home = m.mnt.display(),
        script = script.display(),
        out = out.display()
    );
    let mut c = sh_as_cmd(user, 0o022, &sh);
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Writer {
        child: ChildGuard::spawn(c, "snapshot_download"),
        out,
    }
}

#[test]
fn hub_download_daemon_killed_then_rerun_completes() {
    assert!(
        Path::new(E2E_PY).exists(),
        "{E2E_PY} is missing: run `bash scripts/setup-e2e.sh` first (scripts/test.sh does). Refusing to skip."
    );
    let base = Base::new();
    let (o, logfile) = opts(&base, "auto");
    let mut m = Mount::on_base(base.clone(), &o);
    let u = m.users;
    let spec = r#"{"repos": [{"id": "fault/model", "type": "model", "files": [
        {"path": "a.bin", "size": 25165824, "seed": 11, "lfs": true},
        {"path": "b.bin", "size": 25165824, "seed": 12, "lfs": true},
        {"path": "sub/c.bin", "size": 25165824, "seed": 13, "lfs": true}]}]}"#;
    // 8 MiB/s per connection: each 24 MiB file takes 3 s, so the kill lands mid-download.
    let (_hub, url) = start_fake_hub(&base, spec, 8 << 20);
    let repo_dir = "hub/models--fault--model";

    let mut c = spawn_hub_client(&m, &u.a, &url, "fault/model");
    let store_blobs = m.s(&format!("{repo_dir}/blobs"));
    let started = wait_until(Duration::from_secs(30), || {
        names(&store_blobs).unwrap_or_default().iter().any(|n| {
            n.ends_with(".incomplete")
                && lst(&store_blobs.join(n))
                    .map(|s| s.size > (2 << 20))
                    .unwrap_or(false)
        })
    });
    assert!(started, "the download never got going:\n{}", c.output());
    kill_daemon(&m);
    let t = Instant::now();
    let (code, out) = c.finish(
        Duration::from_secs(60),
        "snapshot_download after the daemon was killed",
    );
    eprintln!(
        "snapshot_download ended {:?} after the kill: {}",
        t.elapsed(),
        out.trim()
    );
    assert_eq!(code, 3, "snapshot_download should fail:\n{out}");
    let fail = out
        .lines()
        .find(|l| l.starts_with("FAIL "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        fail.contains(" ENOTCONN ") || fail.contains(" ECONNABORTED "),
        "expected ENOTCONN: {fail}"
    );
    let (blobs, files, _) = verify_repo(&m.s(repo_dir));
    assert!(
        blobs < 3 && files <= blobs,
        "the download cannot have finished: {blobs} blobs, {files} snapshot files"
    );

    // umount -l, remount over the same store, download again: complete and correct.
    let o = run_timeout(cmd("umount", &["-l", m.mnt.to_str().unwrap()]), OP_TIMEOUT);
    assert!(o.status.success(), "umount -l: {}", out_str(&o));
    m.remount_same();
    let mut c = spawn_hub_client(&m, &u.b, &url, "fault/model");
    let (code, out) = c.finish(Duration::from_secs(120), "snapshot_download after remount");
    assert_eq!(code, 0, "the re-run failed:\n{out}");
    let (blobs, files, inc) = verify_repo(&m.p(repo_dir));
    let inc = inc.len();
    eprintln!(
        "after the re-run: {blobs} blobs, {files} snapshot files, {inc} .incomplete left from the crash"
    );
    assert_eq!((blobs, files), (3, 3));
    assert_no_panic(&m, &logfile);
}

#[test]
fn hub_download_store_full_then_succeeds() {
    assert!(
        Path::new(E2E_PY).exists(),
        "{E2E_PY} is missing: run `bash scripts/setup-e2e.sh` first (scripts/test.sh does). Refusing to skip."
    );
    let (base, _lfs) = base_on_loopfs(64);
    let (o, logfile) = opts(&base, "auto");
    let m = Mount::on_base(base.clone(), &o);
    let u = m.users;
    // Something else fills most of the store: 40 MiB of the ~55 MiB.
    sh_as_ok(
        &u.b,
        0o022,
        &format!("head -c 41943040 /dev/zero > '{}'", m.p("filler").display()),
    );
    let spec = r#"{"repos": [{"id": "fault/full", "type": "model", "files": [
        {"path": "w.bin", "size": 25165824, "seed": 21, "lfs": true}]}]}"#;
    let (_hub, url) = start_fake_hub(&base, spec, 0);
    let repo_dir = "hub/models--fault--full";

    let (code, out) = spawn_hub_client(&m, &u.a, &url, "fault/full")
        .finish(Duration::from_secs(60), "download into a full store");
    assert_eq!(code, 3, "the download should fail:\n{out}");
    let fail = out
        .lines()
        .find(|l| l.starts_with("FAIL "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(fail.contains(" ENOSPC "), "expected ENOSPC: {fail}");
    let (blobs, files, _) = verify_repo(&m.s(repo_dir));
    assert_eq!(
        (blobs, files),
        (0, 0),
        "nothing may be published from a failed download"
    );
    assert!(daemon_alive(&m), "the daemon died when the store filled up");

    // Space freed: the same download now succeeds.
    sh_as_ok(&u.b, 0o022, &format!("rm '{}'", m.p("filler").display()));
    let (code, out) = spawn_hub_client(&m, &u.a, &url, "fault/full")
        .finish(Duration::from_secs(60), "download after freeing space");
    assert_eq!(code, 0, "the download after freeing space failed:\n{out}");
    let (blobs, files, _) = verify_repo(&m.p(repo_dir));
    assert_eq!((blobs, files), (1, 1));
    assert_no_panic(&m, &logfile);
}
