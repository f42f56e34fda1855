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
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
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
    out.split_whitespace().next().unwrap_or_default().to_string()
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
    assert_eq!(shas.len(), sizes.len(), "make_data: two files with the same content");
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
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        Writer { child: ChildGuard::spawn(c, "hub writer"), out }
    }
    fn output(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }
    fn done(&self) -> usize {
        self.output().lines().filter(|l| l.starts_with("DONE ")).count()
    }
    /// Wait for the exit; panics (after killing it) if it is still running after `timeout`.
    fn finish(&mut self, timeout: Duration, what: &str) -> (i32, String) {
        let st = self.child.wait_timeout(timeout);
        let Some(st) = st else {
            self.child.kill(libc::SIGKILL);
            panic!("{what}: writer still running after {timeout:?} (hung?); output:\n{}", self.output());
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
/// holds exactly the content its name promises, every snapshot symlink resolves to such a
/// blob. Returns (final blobs, snapshot links, leftover .incomplete files).
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
        assert_eq!(got, name, "{}: a final blob name holds other (partial or corrupt) content", blobs.join(&name).display());
        n_blobs += 1;
    }
    let snaps = repo.join("snapshots/c0ffee");
    let mut n_links = 0;
    for name in names(&snaps).unwrap_or_default() {
        let link = snaps.join(&name);
        let target = readlink(&link).unwrap_or_else(|e| panic!("readlink {}: {e}", link.display()));
        let sha = target.rsplit('/').next().unwrap().to_string();
        assert!(
            !sha.ends_with(".incomplete") && target.starts_with("../../blobs/"),
            "{} points at {target}",
            link.display()
        );
        let resolved = snaps.join(&target);
        assert!(resolved.exists(), "{} -> {target} does not resolve", link.display());
        assert_eq!(sha256(&resolved), sha, "{} -> {target}: content does not match", link.display());
        n_links += 1;
    }
    (n_blobs, n_links, incomplete)
}

fn kill_daemon(m: &Mount) {
    assert!(!m.daemon_pids.is_empty(), "no daemon pid known for {}", m.mnt.display());
    for &p in &m.daemon_pids {
        unsafe {
            libc::kill(p, libc::SIGKILL);
        }
    }
    let gone = wait_until(Duration::from_secs(10), || m.daemon_pids.iter().all(|p| !pid_alive(*p)));
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
    format!("{}{}", m.log_text(), fs::read_to_string(logfile).unwrap_or_default())
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
        run_ok(cmd("truncate", &["-s", &format!("{mib}M"), img.to_str().unwrap()]));
        run_ok(cmd("mkfs.ext4", &["-q", "-F", "-m", "0", img.to_str().unwrap()]));
        let mut l = LoopFs { img, dir: dir.to_path_buf(), mounted: false };
        l.mount();
        let _ = fs::remove_dir(dir.join("lost+found"));
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap();
        l
    }
    fn mount(&mut self) {
        run_ok(cmd("mount", &["-o", "loop", self.img.to_str().unwrap(), self.dir.to_str().unwrap()]));
        self.mounted = true;
    }
    fn umount(&mut self) {
        let d = self.dir.to_str().unwrap().to_string();
        let ok = wait_until(Duration::from_secs(10), || {
            run_timeout(cmd("umount", &[&d]), OP_TIMEOUT).status.success() || !is_mounted(&self.dir)
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
                let _ = std::process::Command::new("umount").arg(&d).stderr(Stdio::null()).status();
                !is_mounted(&self.dir)
            });
            if !ok {
                let _ = std::process::Command::new("umount").args(["-l", &d]).status();
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
    (format!("passthrough={mode},logfile={}", logfile.display()), logfile)
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
            && names(&store_blobs)
                .unwrap_or_default()
                .iter()
                .any(|n| n.ends_with(".incomplete") && lst(&store_blobs.join(n)).map(|s| s.size > 0).unwrap_or(false))
    });
    assert!(mid_file, "writer never got two files done and a third one started:\n{}", w.output());
    let done_before = w.done();
    kill_daemon(&m);
    let t = Instant::now();

    // The writer gets an error, promptly, and stops.
    let (code, out) = w.finish(Duration::from_secs(15), "writer after the daemon was killed");
    let (err, op) = writer_error(&out).unwrap_or_else(|| panic!("writer did not report an error (exit {code}):\n{out}"));
    assert_eq!(code, 3, "writer exit status:\n{out}");
    assert!(err == "ENOTCONN" || err == "ECONNABORTED", "writer saw {err} on {op}, expected ENOTCONN/ECONNABORTED");
    eprintln!("[{mode}] writer stopped {:?} after the kill with {err} on {op} ({done_before} files done)", t.elapsed());

    // New calls fail at once with ENOTCONN, for root and for members.
    let p = m.p(REPO);
    assert_errno(timed_op("stat after kill", move || lst(&p)), GONE, "stat through a dead daemon");
    let p = m.p("new-file");
    let r = as_user(&u.b, 0o022, move || open(&p, libc::O_CREAT | libc::O_WRONLY, 0o644).map(|_| ()));
    assert_errno(r, GONE, "create through a dead daemon");

    // Nothing partial under a final name, no snapshot pointing at a partial blob.
    let (blobs, links, incomplete) = verify_repo(&m.s(REPO));
    assert_eq!((blobs, links), (done_before, done_before), "store after the crash");
    assert!(incomplete.len() <= 1, "leftover .incomplete files: {incomplete:?}");

    // umount -l, remount over the same store, and the re-run completes.
    let o = run_timeout(cmd("umount", &["-l", m.mnt.to_str().unwrap()]), OP_TIMEOUT);
    assert!(o.status.success(), "umount -l after the crash: {}", out_str(&o));
    m.remount_same();
    let mut w2 = Writer::spawn(&m, &u.a, &data, 0.0);
    let (code, out) = w2.finish(Duration::from_secs(90), "re-run after remount");
    assert_eq!(code, 0, "re-run after remount failed:\n{out}");
    assert!(out.contains("ALL DONE"), "{out}");
    let (blobs, links, incomplete) = verify_repo(&m.p(REPO));
    assert_eq!((blobs, links), (shas.len(), shas.len()), "through the new mount after the re-run; writer said:\n{out}");
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
    sh_as_ok(&u.a, 0o022, &format!("echo before > '{}'", m.p("before.txt").display()));

    // 80 MiB into a ~55 MiB filesystem: ENOSPC on the way, and no final name.
    let mut w = Writer::spawn(&m, &u.a, &big, 0.0);
    let (code, out) = w.finish(Duration::from_secs(60), "writer filling the store");
    let (err, op) = writer_error(&out).unwrap_or_else(|| panic!("writer did not fail (exit {code}):\n{out}"));
    assert_eq!(err, "ENOSPC", "the writer got {err} on {op}, expected ENOSPC:\n{out}");
    eprintln!("[{mode}] writer got ENOSPC on {op}");
    let big_final = format!("{REPO}/blobs/{}", big_shas[0]);
    assert!(lst(&m.s(&big_final)).is_err(), "a partial blob was published under its final name");
    let p = m.p(&big_final);
    assert_errno(timed_op("stat final", move || lst(&p)), &[libc::ENOENT], "final name through the mount");
    let incomplete = format!("{big_final}.incomplete");
    assert!(lst(&m.s(&incomplete)).is_ok(), "the .incomplete should stay (the Hub resumes it)");
    let (blobs, links, _) = verify_repo(&m.p(REPO));
    assert_eq!((blobs, links), (0, 0));

    // The daemon is still up and serving while the store is full.
    assert!(daemon_alive(&m), "daemon died when the store filled up");
    let mnt = m.mnt.clone();
    let (free, content) = timed_op("ops while full", move || {
        names(&mnt).ctx("readdir while full");
        let s = statvfs(&mnt).ctx("statfs while full");
        (s.f_bavail * s.f_frsize, fs::read_to_string(mnt.join("before.txt")).ctx("read while full"))
    });
    assert_eq!(content, "before\n");
    assert!(free < (1 << 20), "store not full? {free} bytes free");

    // Free the space (through the mount, as the user would), then the download succeeds.
    sh_as_ok(&u.a, 0o022, &format!("rm -f '{}'", m.p(&incomplete).display()));
    let mut w = Writer::spawn(&m, &u.a, &small, 0.0);
    let (code, out) = w.finish(Duration::from_secs(60), "writer after freeing space");
    assert_eq!(code, 0, "write after freeing space failed:\n{out}");
    let (blobs, links, incomplete) = verify_repo(&m.p(REPO));
    assert_eq!((blobs, links, incomplete.len()), (1, 1, 0));
    assert_eq!(sha256(&m.p(&format!("{REPO}/blobs/{}", small_shas[0]))), small_shas[0]);
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
