//! Shared fixtures for the hfcachefs integration tests.
//!
//! These tests need root and /dev/fuse: they mount real hfcachefs daemons over temporary
//! stores and act as real Unix users. A machine without root or /dev/fuse makes them FAIL
//! (never skip), because CI always has both.
//!
//! * [`Mount`]: temporary store (0700, inside a 0700 directory) + mountpoint under /tmp,
//!   mounted through the real binary; a watchdog aborts the FUSE connection if a test hangs;
//!   `Drop` unmounts (`umount`, then abort + `umount -l`) and removes the directories.
//! * [`users()`]: once per process, a unique group and three users: member A, member B (the
//!   group is their *supplementary* group), outsider C.
//! * [`as_user`]: run a closure on a fresh thread that carries the user's credentials and umask
//!   (per-thread `setresuid`/`setgroups` syscalls and a private `fs_struct`), so the test gets
//!   the exact errno of every syscall. [`sh_as`]: run a shell snippet through `setpriv`.
//! * [`lst`] & co: stat helpers for the on-disk truth in the store.
#![allow(dead_code)]

pub mod gc;

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsStr};
use std::fmt::Debug;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_hfcachefs");

/// Default limit for one helper operation (a user closure, a command).
pub const OP_TIMEOUT: Duration = Duration::from_secs(30);

fn watchdog_limit() -> Duration {
    let secs = std::env::var("HFIT_WATCHDOG_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(45u64);
    Duration::from_secs(secs)
}

// ---------------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------------

/// Root and /dev/fuse are mandatory: fail loudly, never skip.
pub fn require_env() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "hfcachefs integration tests must run as root (they mount FUSE filesystems and create users); \
             CI runs them as root. Refusing to skip."
        );
        assert!(
            Path::new("/dev/fuse").exists(),
            "/dev/fuse is missing: hfcachefs integration tests need FUSE. Refusing to skip."
        );
        ensure_fusectl();
    });
}

/// Mount the FUSE control filesystem if needed, so hung connections can be aborted.
fn ensure_fusectl() {
    let mounted = mountinfo().iter().any(|e| e.fstype == "fusectl");
    if !mounted && Path::new("/sys/fs/fuse/connections").is_dir() {
        let _ = Command::new("mount")
            .args(["-t", "fusectl", "fusectl", "/sys/fs/fuse/connections"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if let Ok(mut f) = fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    static CTR: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    u64::from_ne_bytes(b)
        ^ t.rotate_left(17)
        ^ CTR.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------------------
// mountinfo
// ---------------------------------------------------------------------------------------------

/// One mount of this namespace, as the daemon's admin commands parse it.
pub use hfcachefs::admin::mounts::MountInfo as MountEntry;

pub fn mountinfo() -> Vec<MountEntry> {
    hfcachefs::admin::mounts::mounts()
}

pub fn mount_entry(mnt: &Path) -> Option<MountEntry> {
    mountinfo().into_iter().rfind(|e| e.mountpoint == mnt)
}

pub fn is_mounted(mnt: &Path) -> bool {
    mount_entry(mnt).is_some()
}

// ---------------------------------------------------------------------------------------------
// Processes and commands with timeouts
// ---------------------------------------------------------------------------------------------

/// Run `f` on a new thread; panic if it does not finish within `timeout` (a hung FUSE op must
/// fail the test, not hang it). Panics inside `f` are propagated.
pub fn in_thread<T: Send + 'static>(
    timeout: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel::<()>();
    let h = thread::Builder::new()
        .name(what.chars().take(15).collect())
        .spawn(move || {
            let r = f();
            let _ = tx.send(());
            r
        })
        .expect("spawn thread");
    match rx.recv_timeout(timeout) {
        Ok(()) | Err(RecvTimeoutError::Disconnected) => match h.join() {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e),
        },
        Err(RecvTimeoutError::Timeout) => {
            panic!("{what}: still blocked after {timeout:?} (hung FUSE operation?)")
        }
    }
}

/// Like [`in_thread`] with the default timeout.
pub fn timed<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    in_thread(OP_TIMEOUT, what, f)
}

pub fn pid_alive(pid: i32) -> bool {
    // A zombie counts as dead.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => match s.rfind(')') {
            Some(i) => !s[i + 1..].trim_start().starts_with('Z'),
            None => true,
        },
        Err(_) => false,
    }
}

pub fn kill_group(pgid: i32, sig: i32) {
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// A child process in its own process group; killed (whole group) on drop.
pub struct ChildGuard {
    pub child: Child,
    pub what: String,
    status: Option<ExitStatus>,
}

impl ChildGuard {
    pub fn spawn(mut cmd: Command, what: &str) -> ChildGuard {
        cmd.process_group(0);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        ChildGuard {
            child,
            what: what.to_string(),
            status: None,
        }
    }
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }
    pub fn running(&mut self) -> bool {
        self.try_status().is_none()
    }
    /// Wait up to `timeout` for exit; None if still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
    pub fn kill(&mut self, sig: i32) {
        kill_group(self.pid(), sig);
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.running() {
            self.kill(libc::SIGKILL);
            if self.wait_timeout(Duration::from_secs(5)).is_none() {
                eprintln!(
                    "warning: child {} (pid {}) did not die after SIGKILL",
                    self.what,
                    self.pid()
                );
            }
        }
    }
}

/// Run a command with a timeout, capturing stdout/stderr. Panics on timeout (after killing
/// the command's whole process group).
pub fn run_timeout(mut cmd: Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut g = ChildGuard::spawn(cmd, &what);
    let mut so = g.child.stdout.take().unwrap();
    let mut se = g.child.stderr.take().unwrap();
    let ho = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let he = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let status = g.wait_timeout(timeout);
    let Some(status) = status else {
        g.kill(libc::SIGKILL);
        let _ = g.wait_timeout(Duration::from_secs(5));
        panic!("command timed out after {timeout:?}: {what}");
    };
    // The group may still hold the pipes (a background grandchild): kill it so readers end.
    kill_group(g.pid(), libc::SIGKILL);
    let stdout = ho.join().unwrap();
    let stderr = he.join().unwrap();
    Output {
        status,
        stdout,
        stderr,
    }
}

pub fn out_str(o: &Output) -> String {
    format!(
        "status={:?}\n--- stdout ---\n{}--- stderr ---\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Run a command, assert success, return stdout.
#[track_caller]
pub fn run_ok(cmd: Command) -> String {
    let what = format!("{cmd:?}");
    let o = run_timeout(cmd, OP_TIMEOUT);
    assert!(o.status.success(), "{what} failed:\n{}", out_str(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn cmd(prog: &str, args: &[&str]) -> Command {
    let mut c = Command::new(prog);
    c.args(args);
    c
}

// ---------------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub uid: u32,
    /// Primary group (the user's private group, NOT the shared group).
    pub gid: u32,
    /// Supplementary groups as `--init-groups` would set them (includes `gid`).
    pub groups: Vec<u32>,
}

#[derive(Debug)]
pub struct Users {
    /// Name of the shared group (mount with `group=<this>`).
    pub group: String,
    pub gid: u32,
    /// Member A (tests use umask 022 for A).
    pub a: User,
    /// Member B (tests use umask 077 for B).
    pub b: User,
    /// Outsider C (not in the group).
    pub c: User,
}

static USERS: OnceLock<Users> = OnceLock::new();

const NAME_PREFIX: &str = "hfit_";

/// Run an account-management command, retrying while another process holds the passwd lock.
/// Returns the exit code.
fn admin(prog: &str, args: &[&str]) -> i32 {
    for _ in 0..100 {
        let o = run_timeout(cmd(prog, args), OP_TIMEOUT);
        let code = o.status.code().unwrap_or(-1);
        // useradd: 1 = can't update password file, 10 = can't update group file (lock busy).
        // groupadd: 10 = can't update group file.
        if code == 1 || code == 10 {
            let err = String::from_utf8_lossy(&o.stderr);
            if err.contains("lock") || err.contains("try again") {
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        }
        if code != 0 && code != 9 {
            eprintln!("{prog} {args:?}: {}", out_str(&o));
        }
        return code;
    }
    -1
}

fn id_of(kind: &str, name: &str) -> u32 {
    let s = run_ok(cmd("id", &[kind, name]));
    s.trim()
        .parse()
        .unwrap_or_else(|_| panic!("id {kind} {name}: {s:?}"))
}

fn group_gid(name: &str) -> u32 {
    let s = run_ok(cmd("getent", &["group", name]));
    s.split(':')
        .nth(2)
        .and_then(|g| g.trim().parse().ok())
        .unwrap_or_else(|| panic!("getent group {name}: {s:?}"))
}

fn groups_of(name: &str) -> Vec<u32> {
    let s = run_ok(cmd("id", &["-G", name]));
    s.split_whitespace().map(|g| g.parse().unwrap()).collect()
}

/// Remove accounts left by earlier runs whose process is gone (names embed the creator pid).
fn cleanup_stale_accounts() {
    let owner_pid = |name: &str| -> Option<i32> {
        let rest = name.strip_prefix(NAME_PREFIX)?;
        let pid_hex = rest.split('_').next()?;
        i32::from_str_radix(pid_hex, 16).ok()
    };
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    for line in passwd.lines() {
        let name = line.split(':').next().unwrap_or("");
        if let Some(pid) = owner_pid(name) {
            if pid != std::process::id() as i32 && !Path::new(&format!("/proc/{pid}")).exists() {
                admin("userdel", &[name]);
            }
        }
    }
    let group = fs::read_to_string("/etc/group").unwrap_or_default();
    for line in group.lines() {
        let name = line.split(':').next().unwrap_or("");
        if let Some(pid) = owner_pid(name) {
            if pid != std::process::id() as i32 && !Path::new(&format!("/proc/{pid}")).exists() {
                admin("groupdel", &[name]);
            }
        }
    }
}

extern "C" fn cleanup_users_at_exit() {
    if let Some(u) = USERS.get() {
        for user in [&u.a, &u.b, &u.c] {
            let _ = Command::new("userdel")
                .arg(&user.name)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            // In case USERGROUPS_ENAB did not remove the private group.
            let _ = Command::new("groupdel")
                .arg(&user.name)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("groupdel")
            .arg(&u.group)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The users fixture, created once per test process (race-free across test threads).
pub fn users() -> &'static Users {
    require_env();
    USERS.get_or_init(|| {
        cleanup_stale_accounts();
        let prefix = format!(
            "{NAME_PREFIX}{:x}_{:04x}",
            std::process::id(),
            random_u64() & 0xffff
        );
        let group = format!("{prefix}_g");
        let code = admin("groupadd", &[&group]);
        assert!(code == 0 || code == 9, "groupadd {group} failed ({code})");
        let mk = |suffix: &str, member: bool| -> User {
            let name = format!("{prefix}_{suffix}");
            let mut args = vec!["-M", "-U", "-d", "/nonexistent", "-s", "/bin/sh"];
            if member {
                args.push("-G");
                args.push(&group);
            }
            args.push(&name);
            let code = admin("useradd", &args);
            assert!(code == 0 || code == 9, "useradd {name} failed ({code})");
            if code == 9 && member {
                admin("usermod", &["-a", "-G", &group, &name]);
            }
            User {
                uid: id_of("-u", &name),
                gid: id_of("-g", &name),
                groups: groups_of(&name),
                name,
            }
        };
        let a = mk("a", true);
        let b = mk("b", true);
        let c = mk("c", false);
        unsafe {
            libc::atexit(cleanup_users_at_exit);
        }
        let gid = group_gid(&group);
        for m in [&a, &b] {
            assert_ne!(
                m.gid, gid,
                "{}: the shared group must be supplementary, not primary",
                m.name
            );
            assert!(
                m.groups.contains(&gid),
                "{} is not a member of {group}: {:?}",
                m.name,
                m.groups
            );
        }
        assert!(!c.groups.contains(&gid));
        Users {
            group,
            gid,
            a,
            b,
            c,
        }
    })
}

/// Run `f` on a fresh thread that has `user`'s uid, primary gid, supplementary groups and the
/// given umask. Credentials are changed with raw per-thread syscalls and the thread gets its own
/// fs_struct (umask), so nothing leaks to other test threads. Times out after [`OP_TIMEOUT`].
pub fn as_user<T: Send + 'static>(
    user: &User,
    umask: u32,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (uid, gid, groups) = (user.uid, user.gid, user.groups.clone());
    in_thread(OP_TIMEOUT, &format!("as {}", user.name), move || {
        become_user(uid, gid, &groups, umask);
        f()
    })
}

/// Same as [`as_user`] but with an explicit timeout.
pub fn as_user_timeout<T: Send + 'static>(
    user: &User,
    umask: u32,
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (uid, gid, groups) = (user.uid, user.gid, user.groups.clone());
    in_thread(timeout, &format!("as {}", user.name), move || {
        become_user(uid, gid, &groups, umask);
        f()
    })
}

/// Run as root on a fresh thread with its own umask.
pub fn as_root_umask<T: Send + 'static>(umask: u32, f: impl FnOnce() -> T + Send + 'static) -> T {
    in_thread(OP_TIMEOUT, "as root", move || {
        unsafe {
            assert_eq!(libc::unshare(libc::CLONE_FS), 0, "unshare(CLONE_FS)");
            libc::umask(umask as libc::mode_t);
        }
        f()
    })
}

/// Change the calling thread's credentials only (never call on a thread that goes on running
/// other tests).
fn become_user(uid: u32, gid: u32, groups: &[u32], umask: u32) {
    unsafe {
        assert_eq!(
            libc::unshare(libc::CLONE_FS),
            0,
            "unshare(CLONE_FS): {}",
            io::Error::last_os_error()
        );
        libc::umask(umask as libc::mode_t);
        let r = libc::syscall(
            libc::SYS_setgroups,
            groups.len() as libc::c_long,
            groups.as_ptr(),
        );
        assert_eq!(r, 0, "setgroups: {}", io::Error::last_os_error());
        let r = libc::syscall(
            libc::SYS_setresgid,
            gid as libc::c_long,
            gid as libc::c_long,
            gid as libc::c_long,
        );
        assert_eq!(r, 0, "setresgid: {}", io::Error::last_os_error());
        let r = libc::syscall(
            libc::SYS_setresuid,
            uid as libc::c_long,
            uid as libc::c_long,
            uid as libc::c_long,
        );
        assert_eq!(r, 0, "setresuid: {}", io::Error::last_os_error());
        assert_eq!(libc::syscall(libc::SYS_geteuid) as u32, uid);
    }
}

/// Build the `setpriv` command that runs a shell snippet as `user` with `umask`.
pub fn sh_as_cmd(user: &User, umask: u32, script: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid",
        &user.uid.to_string(),
        "--regid",
        &user.gid.to_string(),
        "--init-groups",
        "--",
        "/bin/sh",
        "-c",
        &format!("umask {umask:03o}; {script}"),
    ]);
    c.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .current_dir("/");
    c
}

/// Run a shell snippet as `user` with `umask` (via `setpriv --init-groups`), with a timeout.
pub fn sh_as(user: &User, umask: u32, script: &str) -> Output {
    run_timeout(sh_as_cmd(user, umask, script), OP_TIMEOUT)
}

/// Like [`sh_as`] but asserts success and returns stdout.
#[track_caller]
pub fn sh_as_ok(user: &User, umask: u32, script: &str) -> String {
    let o = sh_as(user, umask, script);
    assert!(
        o.status.success(),
        "as {} (umask {umask:03o}): {script}\n{}",
        user.name,
        out_str(&o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Run a shell snippet as root with a timeout.
pub fn sh(script: &str) -> Output {
    run_timeout(cmd("/bin/sh", &["-c", script]), OP_TIMEOUT)
}

// ---------------------------------------------------------------------------------------------
// Mount fixture
// ---------------------------------------------------------------------------------------------

/// A temporary directory holding the store (inside a 0700 directory so users can never reach
/// it directly), mountpoints, and scratch space for tests. Removed when the last mount using
/// it is dropped (never while something is still mounted below it).
pub struct Base {
    pub dir: PathBuf,
    pub store: PathBuf,
    counter: AtomicU64,
}

impl Base {
    pub fn new() -> Arc<Base> {
        require_env();
        let tmp = fs::canonicalize(std::env::temp_dir()).unwrap_or_else(|_| PathBuf::from("/tmp"));
        let dir = tmp.join(format!(
            "hfit-{}-{:012x}",
            std::process::id(),
            random_u64() & 0xffff_ffff_ffff
        ));
        fs::create_dir(&dir).expect("create base dir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let private = dir.join("private");
        fs::create_dir(&private).unwrap();
        fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
        let store = private.join("store");
        fs::create_dir(&store).unwrap();
        fs::set_permissions(&store, fs::Permissions::from_mode(0o700)).unwrap();
        Arc::new(Base {
            dir,
            store,
            counter: AtomicU64::new(0),
        })
    }

    /// A fresh path under the base dir (not created).
    pub fn fresh(&self, stem: &str) -> PathBuf {
        self.dir.join(format!(
            "{stem}{}",
            self.counter.fetch_add(1, Ordering::Relaxed)
        ))
    }
}

impl Drop for Base {
    fn drop(&mut self) {
        let busy = mountinfo()
            .iter()
            .any(|e| e.mountpoint.starts_with(&self.dir));
        if busy {
            eprintln!(
                "warning: leaving {} in place: something is still mounted below it",
                self.dir.display()
            );
            return;
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("warning: removing {}: {e}", self.dir.display());
        }
    }
}

pub struct Mount {
    pub base: Arc<Base>,
    pub mnt: PathBuf,
    pub store: PathBuf,
    pub opts: String,
    pub users: &'static Users,
    pub log: PathBuf,
    pub daemon_pids: Vec<i32>,
    pub conn: u32,
    watchdog: Option<mpsc::Sender<()>>,
    unmounted: bool,
}

/// Spawn a thread that aborts the FUSE connection (and kills the daemon) if not cancelled
/// within `limit`: whatever syscall hangs in the test then fails with ENOTCONN.
fn start_watchdog(mnt: PathBuf, conn: u32, pids: Vec<i32>, limit: Duration) -> mpsc::Sender<()> {
    let (tx, rx) = mpsc::channel::<()>();
    thread::spawn(move || {
        if let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
            eprintln!(
                "WATCHDOG: test using {} still running after {limit:?}: aborting FUSE connection {conn}",
                mnt.display()
            );
            abort_connection(conn, &pids);
        }
    });
    tx
}

fn abort_connection(conn: u32, pids: &[i32]) {
    let p = format!("/sys/fs/fuse/connections/{conn}/abort");
    if fs::write(&p, b"1").is_err() {
        for &pid in pids {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// Find the daemon processes serving `mnt` (argv contains the mountpoint, argv[0] is hfcachefs).
pub fn find_daemon_pids(mnt: &Path) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut v = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return v;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let Some(argv0) = args.first() else { continue };
        if !argv0.ends_with(b"hfcachefs") {
            continue;
        }
        if args.iter().any(|a| *a == mnt.as_os_str().as_bytes()) && pid_alive(pid) {
            v.push(pid);
        }
    }
    v
}

impl Mount {
    /// Mount with `group=<test group>` (others=none).
    pub fn new() -> Mount {
        Self::with_opts("")
    }

    /// Mount with `group=<test group>,others=read`.
    pub fn others_read() -> Mount {
        Self::with_opts("others=read")
    }

    /// Mount with `group=<test group>` plus `extra` options (comma-separated, may be empty).
    pub fn with_opts(extra: &str) -> Mount {
        Self::mount_on(Base::new(), extra)
    }

    /// Mount with `extra` options and the daemon's open-file limit (soft and hard) set to
    /// `nofile`.
    pub fn with_nofile_limit(extra: &str, nofile: u32) -> Mount {
        Self::mount_with(Base::new(), extra, Some(nofile))
    }

    /// A second daemon over the SAME store at another mountpoint.
    pub fn second(&self) -> Mount {
        Self::mount_on(self.base.clone(), &self.opts)
    }

    fn mount_on(base: Arc<Base>, extra: &str) -> Mount {
        Self::mount_with(base, extra, None)
    }

    fn mount_with(base: Arc<Base>, extra: &str, nofile: Option<u32>) -> Mount {
        let users = users();
        let mnt = base.fresh("mnt");
        fs::create_dir(&mnt).unwrap();
        fs::set_permissions(&mnt, fs::Permissions::from_mode(0o755)).unwrap();
        let log = mnt.with_extension("log");
        let mut options = format!("group={}", users.group);
        if !extra.is_empty() {
            options.push(',');
            options.push_str(extra);
        }
        // e.g. HFIT_MOUNT_OPTS=passthrough=off to run the whole suite in another mode
        if let Ok(more) = std::env::var("HFIT_MOUNT_OPTS") {
            if !more.is_empty() {
                options.push(',');
                options.push_str(&more);
            }
        }
        let logf = fs::File::create(&log).unwrap();
        let mut c = match nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        c.arg(&base.store).arg(&mnt).arg("-o").arg(&options);
        c.stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf);
        let mut g = ChildGuard::spawn(c, "hfcachefs mount");
        let status = g.wait_timeout(Duration::from_secs(30));
        let logtext = || fs::read_to_string(&log).unwrap_or_default();
        let Some(status) = status else {
            panic!(
                "hfcachefs {} {} -o {options}: did not return within 30 s\n{}",
                base.store.display(),
                mnt.display(),
                logtext()
            );
        };
        assert!(
            status.success(),
            "hfcachefs {} {} -o {options} failed: {status:?}\n{}",
            base.store.display(),
            mnt.display(),
            logtext()
        );
        // It returns only once mounted; allow a short grace period anyway and report clearly.
        let deadline = Instant::now() + Duration::from_secs(10);
        let entry = loop {
            if let Some(e) = mount_entry(&mnt) {
                break e;
            }
            assert!(
                Instant::now() < deadline,
                "hfcachefs exited 0 but {} is not mounted\n{}",
                mnt.display(),
                logtext()
            );
            thread::sleep(Duration::from_millis(20));
        };
        let mut pids = find_daemon_pids(&mnt);
        let deadline = Instant::now() + Duration::from_secs(2);
        while pids.is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
            pids = find_daemon_pids(&mnt);
        }
        let conn = (entry.dev.0 << 20) | entry.dev.1;
        let watchdog = Some(start_watchdog(
            mnt.clone(),
            conn,
            pids.clone(),
            watchdog_limit(),
        ));
        Mount {
            store: base.store.clone(),
            base,
            mnt,
            opts: extra.to_string(),
            users,
            log,
            daemon_pids: pids,
            conn,
            watchdog,
            unmounted: false,
        }
    }

    /// Path through the mount.
    pub fn p(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.mnt.clone()
        } else {
            self.mnt.join(rel)
        }
    }

    /// Path in the store (the on-disk truth).
    pub fn s(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.store.clone()
        } else {
            self.store.join(rel)
        }
    }

    /// Stat (lstat) an entry in the store.
    #[track_caller]
    pub fn sst(&self, rel: &str) -> St {
        lst(&self.s(rel)).unwrap_or_else(|e| panic!("lstat store/{rel}: {e}"))
    }

    /// Stat (lstat) an entry through the mount, as root.
    #[track_caller]
    pub fn mst(&self, rel: &str) -> St {
        lst(&self.p(rel)).unwrap_or_else(|e| panic!("lstat mnt/{rel}: {e}"))
    }

    /// Unmount explicitly, reporting how it went.
    pub fn unmount(&mut self) -> Result<(), String> {
        if self.unmounted {
            return Ok(());
        }
        self.unmounted = true;
        if let Some(w) = self.watchdog.take() {
            let _ = w.send(());
        }
        let mut problems = Vec::new();
        let mut clean = false;
        for attempt in 0..30 {
            if !is_mounted(&self.mnt) {
                clean = true;
                break;
            }
            let mut c = Command::new("umount");
            c.arg(&self.mnt)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let mut g = ChildGuard::spawn(c, "umount");
            match g.wait_timeout(Duration::from_secs(5)) {
                Some(s) if s.success() => {}
                Some(s) => {
                    if attempt == 29 {
                        let mut err = String::new();
                        if let Some(mut e) = g.child.stderr.take() {
                            let _ = e.read_to_string(&mut err);
                        }
                        problems.push(format!("umount: {s:?} {err}"));
                    }
                    thread::sleep(Duration::from_millis(100));
                }
                None => {
                    problems.push("umount hung for 5 s".into());
                    break;
                }
            }
        }
        if !clean && is_mounted(&self.mnt) {
            abort_connection(self.conn, &self.daemon_pids);
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mnt)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            problems.push("needed abort + umount -l".into());
        }
        // `umount` must end the daemon.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.daemon_pids.iter().any(|p| pid_alive(*p)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let alive: Vec<i32> = self
            .daemon_pids
            .iter()
            .copied()
            .filter(|p| pid_alive(*p))
            .collect();
        if !alive.is_empty() {
            for p in &alive {
                unsafe {
                    libc::kill(*p, libc::SIGKILL);
                }
            }
            problems.push(format!(
                "daemon {alive:?} still alive 10 s after unmount (killed)"
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            eprintln!("warning: unmounting {}: {e}", self.mnt.display());
        }
        let _ = fs::remove_dir(&self.mnt);
        let _ = fs::remove_file(&self.log);
    }
}

// ---------------------------------------------------------------------------------------------
// Stat helpers
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct St {
    pub uid: u32,
    pub gid: u32,
    /// Full st_mode (type + permission bits).
    pub mode: u32,
    pub nlink: u64,
    pub size: u64,
    pub ino: u64,
    pub dev: u64,
    pub blocks: u64,
    pub atime: (i64, i64),
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl St {
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }
    pub fn kind(&self) -> u32 {
        self.mode & libc::S_IFMT
    }
    pub fn is_dir(&self) -> bool {
        self.kind() == libc::S_IFDIR
    }
    pub fn is_file(&self) -> bool {
        self.kind() == libc::S_IFREG
    }
    pub fn is_symlink(&self) -> bool {
        self.kind() == libc::S_IFLNK
    }
    pub fn is_fifo(&self) -> bool {
        self.kind() == libc::S_IFIFO
    }
}

fn st_from(m: &fs::Metadata) -> St {
    St {
        uid: m.uid(),
        gid: m.gid(),
        mode: m.mode(),
        nlink: m.nlink(),
        size: m.size(),
        ino: m.ino(),
        dev: m.dev(),
        blocks: m.blocks(),
        atime: (m.atime(), m.atime_nsec()),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    }
}

/// lstat (does not follow a final symlink).
pub fn lst(p: &Path) -> io::Result<St> {
    fs::symlink_metadata(p).map(|m| st_from(&m))
}

/// stat (follows symlinks).
pub fn stf(p: &Path) -> io::Result<St> {
    fs::metadata(p).map(|m| st_from(&m))
}

pub fn fst(fd: RawFd) -> io::Result<St> {
    let mut s: libc::stat = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::fstat(fd, &mut s) })?;
    Ok(St {
        uid: s.st_uid,
        gid: s.st_gid,
        mode: s.st_mode,
        nlink: s.st_nlink as u64,
        size: s.st_size as u64,
        ino: s.st_ino,
        dev: s.st_dev,
        blocks: s.st_blocks as u64,
        atime: (s.st_atime, s.st_atime_nsec),
        mtime: (s.st_mtime, s.st_mtime_nsec),
        ctime: (s.st_ctime, s.st_ctime_nsec),
    })
}

/// Assert the store entry has this owner, group and permission bits (mode & 07777).
#[track_caller]
pub fn assert_store(m: &Mount, rel: &str, uid: u32, gid: u32, perm: u32) {
    let s = m.sst(rel);
    assert_eq!(
        (s.uid, s.gid, format!("{:o}", s.perm())),
        (uid, gid, format!("{perm:o}")),
        "store/{rel}: (uid, gid, mode) on disk"
    );
}

// ---------------------------------------------------------------------------------------------
// errno helpers
// ---------------------------------------------------------------------------------------------

pub fn errno_name(e: i32) -> String {
    let names = [
        (libc::EPERM, "EPERM"),
        (libc::ENOENT, "ENOENT"),
        (libc::EIO, "EIO"),
        (libc::EBADF, "EBADF"),
        (libc::EAGAIN, "EAGAIN/EWOULDBLOCK"),
        (libc::EACCES, "EACCES"),
        (libc::EEXIST, "EEXIST"),
        (libc::EXDEV, "EXDEV"),
        (libc::ENOTDIR, "ENOTDIR"),
        (libc::EISDIR, "EISDIR"),
        (libc::EINVAL, "EINVAL"),
        (libc::ENOSPC, "ENOSPC"),
        (libc::ENOSYS, "ENOSYS"),
        (libc::ENOTEMPTY, "ENOTEMPTY"),
        (libc::ELOOP, "ELOOP"),
        (libc::ENODATA, "ENODATA"),
        (libc::EOPNOTSUPP, "EOPNOTSUPP"),
        (libc::ENOTCONN, "ENOTCONN"),
        (libc::ESTALE, "ESTALE"),
        (libc::ENXIO, "ENXIO"),
        (libc::EINTR, "EINTR"),
        (libc::EROFS, "EROFS"),
        (libc::EBUSY, "EBUSY"),
    ];
    match names.iter().find(|(n, _)| *n == e) {
        Some((_, s)) => s.to_string(),
        None => format!("errno {e}"),
    }
}

pub fn errno_of<T: Debug>(r: &io::Result<T>) -> Option<i32> {
    match r {
        Ok(_) => None,
        Err(e) => Some(e.raw_os_error().unwrap_or(-1)),
    }
}

/// Assert that `r` failed with one of `expected` errnos.
#[track_caller]
pub fn assert_errno<T: Debug>(r: io::Result<T>, expected: &[i32], what: &str) {
    match r {
        Ok(v) => panic!(
            "{what}: expected {}, but it succeeded ({v:?})",
            expected
                .iter()
                .map(|e| errno_name(*e))
                .collect::<Vec<_>>()
                .join(" or ")
        ),
        Err(e) => {
            let got = e.raw_os_error().unwrap_or(-1);
            assert!(
                expected.contains(&got),
                "{what}: expected {}, got {} ({e})",
                expected
                    .iter()
                    .map(|e| errno_name(*e))
                    .collect::<Vec<_>>()
                    .join(" or "),
                errno_name(got)
            );
        }
    }
}

/// Unwrap with a message that names the operation.
pub trait Ctx<T> {
    fn ctx(self, what: &str) -> T;
}
impl<T> Ctx<T> for io::Result<T> {
    #[track_caller]
    fn ctx(self, what: &str) -> T {
        match self {
            Ok(v) => v,
            Err(e) => panic!(
                "{what}: {e} ({})",
                errno_name(e.raw_os_error().unwrap_or(-1))
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Thin libc wrappers (io::Result, exact errno)
// ---------------------------------------------------------------------------------------------

pub fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub fn cvt_l(r: i64) -> io::Result<i64> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub fn cs(p: impl AsRef<OsStr>) -> CString {
    CString::new(p.as_ref().as_bytes()).expect("path with NUL")
}

pub fn open(p: &Path, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let c = cs(p);
    let fd = cvt(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn openat(dfd: RawFd, name: &str, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let c = cs(name);
    let fd = cvt(unsafe {
        libc::openat(
            dfd,
            c.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn file(fd: OwnedFd) -> fs::File {
    fs::File::from(fd)
}

pub fn write_fd(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    let r = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

pub fn pwrite_fd(fd: RawFd, data: &[u8], off: i64) -> io::Result<usize> {
    let r = unsafe { libc::pwrite(fd, data.as_ptr().cast(), data.len(), off) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

pub fn pread_fd(fd: RawFd, len: usize, off: i64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let r = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), len, off) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(r as usize);
    Ok(buf)
}

pub fn read_fd_all(fd: RawFd) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        if r == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..r as usize]);
    }
}

pub fn flock(fd: RawFd, op: i32) -> io::Result<()> {
    cvt(unsafe { libc::flock(fd, op) }).map(|_| ())
}

pub fn mknod(p: &Path, mode: u32, dev: u64) -> io::Result<()> {
    let c = cs(p);
    cvt(unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, dev as libc::dev_t) }).map(|_| ())
}

pub fn mkdir(p: &Path, mode: u32) -> io::Result<()> {
    let c = cs(p);
    cvt(unsafe { libc::mkdir(c.as_ptr(), mode as libc::mode_t) }).map(|_| ())
}

pub fn chmod(p: &Path, mode: u32) -> io::Result<()> {
    let c = cs(p);
    cvt(unsafe { libc::chmod(c.as_ptr(), mode as libc::mode_t) }).map(|_| ())
}

/// lchown; pass u32::MAX for "unchanged".
pub fn lchown(p: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let c = cs(p);
    cvt(unsafe { libc::lchown(c.as_ptr(), uid, gid) }).map(|_| ())
}

pub fn truncate(p: &Path, len: i64) -> io::Result<()> {
    let c = cs(p);
    cvt(unsafe { libc::truncate(c.as_ptr(), len) }).map(|_| ())
}

pub fn unlink(p: &Path) -> io::Result<()> {
    let c = cs(p);
    cvt(unsafe { libc::unlink(c.as_ptr()) }).map(|_| ())
}

pub fn rmdir(p: &Path) -> io::Result<()> {
    let c = cs(p);
    cvt(unsafe { libc::rmdir(c.as_ptr()) }).map(|_| ())
}

pub fn rename(a: &Path, b: &Path) -> io::Result<()> {
    let (ca, cb) = (cs(a), cs(b));
    cvt(unsafe { libc::rename(ca.as_ptr(), cb.as_ptr()) }).map(|_| ())
}

pub fn rename2(a: &Path, b: &Path, flags: u32) -> io::Result<()> {
    let (ca, cb) = (cs(a), cs(b));
    cvt(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            flags,
        )
    })
    .map(|_| ())
}

pub fn link(a: &Path, b: &Path) -> io::Result<()> {
    let (ca, cb) = (cs(a), cs(b));
    cvt(unsafe { libc::link(ca.as_ptr(), cb.as_ptr()) }).map(|_| ())
}

pub fn symlink(target: &str, p: &Path) -> io::Result<()> {
    let (ct, cp) = (cs(target), cs(p));
    cvt(unsafe { libc::symlink(ct.as_ptr(), cp.as_ptr()) }).map(|_| ())
}

pub fn readlink(p: &Path) -> io::Result<String> {
    fs::read_link(p).map(|t| t.to_string_lossy().into_owned())
}

pub fn ts(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

pub fn utimensat(
    dfd: RawFd,
    p: &Path,
    atime: libc::timespec,
    mtime: libc::timespec,
    flags: i32,
) -> io::Result<()> {
    let c = cs(p);
    let t = [atime, mtime];
    cvt(unsafe { libc::utimensat(dfd, c.as_ptr(), t.as_ptr(), flags) }).map(|_| ())
}

pub fn futimens(fd: RawFd, atime: libc::timespec, mtime: libc::timespec) -> io::Result<()> {
    let t = [atime, mtime];
    cvt(unsafe { libc::futimens(fd, t.as_ptr()) }).map(|_| ())
}

pub fn lsetxattr(p: &Path, name: &str, value: &[u8], flags: i32) -> io::Result<()> {
    let (cp, cn) = (cs(p), cs(name));
    cvt(unsafe {
        libc::lsetxattr(
            cp.as_ptr(),
            cn.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(|_| ())
}

pub fn lgetxattr(p: &Path, name: &str) -> io::Result<Vec<u8>> {
    let (cp, cn) = (cs(p), cs(name));
    let n = unsafe { libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), std::ptr::null_mut(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; n as usize + 1];
    let n =
        unsafe { libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// Size query (size 0) of an xattr.
pub fn lgetxattr_size(p: &Path, name: &str) -> io::Result<usize> {
    let (cp, cn) = (cs(p), cs(name));
    let n = unsafe { libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), std::ptr::null_mut(), 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

pub fn llistxattr(p: &Path) -> io::Result<Vec<String>> {
    let cp = cs(p);
    let n = unsafe { libc::llistxattr(cp.as_ptr(), std::ptr::null_mut(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; n as usize + 256];
    let n = unsafe { libc::llistxattr(cp.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

pub fn lremovexattr(p: &Path, name: &str) -> io::Result<()> {
    let (cp, cn) = (cs(p), cs(name));
    cvt(unsafe { libc::lremovexattr(cp.as_ptr(), cn.as_ptr()) }).map(|_| ())
}

pub fn fallocate(fd: RawFd, mode: i32, off: i64, len: i64) -> io::Result<()> {
    cvt(unsafe { libc::fallocate(fd, mode, off, len) }).map(|_| ())
}

pub fn lseek(fd: RawFd, off: i64, whence: i32) -> io::Result<i64> {
    cvt_l(unsafe { libc::lseek(fd, off, whence) })
}

pub fn copy_file_range(
    fd_in: RawFd,
    off_in: Option<i64>,
    fd_out: RawFd,
    off_out: Option<i64>,
    len: usize,
) -> io::Result<usize> {
    let mut oi = off_in.unwrap_or(0);
    let mut oo = off_out.unwrap_or(0);
    let pi = if off_in.is_some() {
        &mut oi as *mut i64
    } else {
        std::ptr::null_mut()
    };
    let po = if off_out.is_some() {
        &mut oo as *mut i64
    } else {
        std::ptr::null_mut()
    };
    let r = unsafe { libc::copy_file_range(fd_in, pi, fd_out, po, len, 0) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

pub fn statvfs(p: &Path) -> io::Result<libc::statvfs> {
    let c = cs(p);
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::statvfs(c.as_ptr(), &mut s) })?;
    Ok(s)
}

/// All names in a directory (including "." and ".."), read with getdents through libc.
/// With `noatime`, the directory is opened with O_NOATIME (root only) so reading it leaves
/// no trace.
pub fn list_dir_raw(p: &Path, noatime: bool) -> io::Result<Vec<String>> {
    let fl = libc::O_RDONLY | libc::O_DIRECTORY | if noatime { libc::O_NOATIME } else { 0 };
    let fd = open(p, fl, 0)?;
    list_fd(fd)
}

/// List the directory open on `fd` (consumes it).
pub fn list_fd(fd: OwnedFd) -> io::Result<Vec<String>> {
    use std::os::fd::IntoRawFd;
    let raw = fd.into_raw_fd();
    let dir = unsafe { libc::fdopendir(raw) };
    if dir.is_null() {
        let e = io::Error::last_os_error();
        unsafe { libc::close(raw) };
        return Err(e);
    }
    let mut names = Vec::new();
    loop {
        unsafe { *libc::__errno_location() = 0 };
        let ent = unsafe { libc::readdir(dir) };
        if ent.is_null() {
            let err = unsafe { *libc::__errno_location() };
            unsafe { libc::closedir(dir) };
            if err != 0 {
                return Err(io::Error::from_raw_os_error(err));
            }
            return Ok(names);
        }
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        names.push(name.to_string_lossy().into_owned());
    }
}

/// Names in a directory via std (no "." / "..").
pub fn names(p: &Path) -> io::Result<Vec<String>> {
    let mut v: Vec<String> = fs::read_dir(p)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<_>>()?;
    v.sort();
    Ok(v)
}

// ---------------------------------------------------------------------------------------------
// Data helpers
// ---------------------------------------------------------------------------------------------

/// Deterministic pseudo-random bytes (xorshift64*).
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        v.extend_from_slice(&s.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A fast 64-bit checksum (not cryptographic; detects any corruption we care about).
#[derive(Clone, Copy)]
pub struct Checksum(u64, u64);

impl Checksum {
    pub fn new() -> Self {
        Checksum(0xcbf2_9ce4_8422_2325, 0)
    }
    pub fn update(&mut self, data: &[u8]) {
        // Byte-exact regardless of how the stream is chunked: hash 8-byte words of the running
        // stream; `self.1` counts bytes so unaligned chunk boundaries are handled per byte.
        for &b in data {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3);
            self.1 += 1;
        }
    }
    pub fn value(&self) -> (u64, u64) {
        (self.0, self.1)
    }
}

pub fn checksum(data: &[u8]) -> (u64, u64) {
    let mut c = Checksum::new();
    c.update(data);
    c.value()
}

/// Checksum of a file read with `chunk`-sized reads.
pub fn checksum_file(p: &Path, chunk: usize) -> io::Result<(u64, u64)> {
    let mut f = fs::File::open(p)?;
    let mut c = Checksum::new();
    let mut buf = vec![0u8; chunk];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(c.value());
        }
        c.update(&buf[..n]);
    }
}

pub fn write_file(p: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(p)?;
    f.write_all(data)
}

/// Poll `f` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshots of directories outside the store (for the safety tests)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapEntry {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u64,
    pub ino: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    /// Only compared when the snapshot was taken `with_atime`.
    pub atime: Option<(i64, i64)>,
    pub content: Option<Vec<u8>>,
    pub link: Option<String>,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// Snapshot a tree without leaving a trace in it (O_NOATIME reads; root only).
pub fn snapshot(root: &Path, with_atime: bool) -> BTreeMap<String, SnapEntry> {
    let mut out = BTreeMap::new();
    snap_rec(root, root, with_atime, &mut out);
    out
}

/// hfcachefs's own directories in a store root: the daemons' records (written while a
/// mount runs, made when it starts) and members' private copies. Not cache content.
pub const HIDDEN: [&str; 2] = [".hfcachefs", ".hfcachefs-private"];

/// The names in a store directory, hfcachefs's own left out.
pub fn cache_names(p: &Path) -> io::Result<Vec<String>> {
    Ok(names(p)?
        .into_iter()
        .filter(|n| !HIDDEN.contains(&n.as_str()))
        .collect())
}

fn snap_rec(root: &Path, p: &Path, with_atime: bool, out: &mut BTreeMap<String, SnapEntry>) {
    let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
    // The daemons' records change on their own while a mount runs.
    if rel == HIDDEN[0] {
        return;
    }
    let st = lst(p).unwrap_or_else(|e| panic!("snapshot lstat {}: {e}", p.display()));
    let content = if st.is_file() {
        let fd = open(p, libc::O_RDONLY | libc::O_NOATIME, 0).expect("snapshot open");
        Some(read_fd_all(fd.as_raw_fd()).expect("snapshot read"))
    } else {
        None
    };
    let link = if st.is_symlink() {
        Some(readlink(p).unwrap())
    } else {
        None
    };
    let mut xattrs = Vec::new();
    for n in llistxattr(p).unwrap_or_default() {
        xattrs.push((n.clone(), lgetxattr(p, &n).unwrap_or_default()));
    }
    xattrs.sort();
    out.insert(
        if rel.is_empty() { ".".into() } else { rel },
        SnapEntry {
            mode: st.mode,
            uid: st.uid,
            gid: st.gid,
            size: st.size,
            nlink: st.nlink,
            ino: st.ino,
            mtime: st.mtime,
            ctime: st.ctime,
            atime: if with_atime { Some(st.atime) } else { None },
            content,
            link,
            xattrs,
        },
    );
    if st.is_dir() {
        let mut names = list_dir_raw(p, true).expect("snapshot list");
        names.retain(|n| n != "." && n != "..");
        names.sort();
        for n in names {
            snap_rec(root, &p.join(n), with_atime, out);
        }
    }
}

/// Assert two snapshots are identical, listing every difference.
#[track_caller]
pub fn assert_same_snapshot(
    before: &BTreeMap<String, SnapEntry>,
    after: &BTreeMap<String, SnapEntry>,
    what: &str,
) {
    let mut diffs = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            None => diffs.push(format!("{k}: removed")),
            Some(w) if w != v => {
                diffs.push(format!("{k}: changed\n   before {v:?}\n   after  {w:?}"))
            }
            _ => {}
        }
    }
    for k in after.keys() {
        if !before.contains_key(k) {
            diffs.push(format!("{k}: NEW entry {:?}", after[k]));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: the directory outside the store was touched:\n{}",
        diffs.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Fault-test helpers (tests/faults.rs)
// ---------------------------------------------------------------------------------------------

impl Mount {
    /// Mount over an existing base (e.g. one whose store directory is itself a mount of a
    /// small filesystem), with `group=<test group>` plus `extra`.
    pub fn on_base(base: Arc<Base>, extra: &str) -> Mount {
        Self::mount_on(base, extra)
    }

    /// Mount hfcachefs again on the SAME mountpoint over the same store, after the previous
    /// daemon died or was unmounted (the mountpoint must no longer be mounted; use `umount -l`
    /// first after a crash). Same options; the daemon's startup output is appended to `log`.
    pub fn remount_same(&mut self) {
        if let Some(w) = self.watchdog.take() {
            let _ = w.send(());
        }
        assert!(
            !is_mounted(&self.mnt),
            "remount_same: {} is still mounted",
            self.mnt.display()
        );
        let mut options = format!("group={}", self.users.group);
        if !self.opts.is_empty() {
            options.push(',');
            options.push_str(&self.opts);
        }
        if let Ok(more) = std::env::var("HFIT_MOUNT_OPTS") {
            if !more.is_empty() {
                options.push(',');
                options.push_str(&more);
            }
        }
        let logf = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut c = Command::new(BIN);
        c.arg(&self.store).arg(&self.mnt).arg("-o").arg(&options);
        c.stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf);
        let mut g = ChildGuard::spawn(c, "hfcachefs remount");
        let status = g.wait_timeout(Duration::from_secs(30));
        let status = status.unwrap_or_else(|| {
            panic!(
                "hfcachefs remount on {}: did not return within 30 s",
                self.mnt.display()
            )
        });
        assert!(
            status.success(),
            "hfcachefs remount on {} failed: {status:?}\n{}",
            self.mnt.display(),
            self.log_text()
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let entry = loop {
            if let Some(e) = mount_entry(&self.mnt) {
                break e;
            }
            assert!(
                Instant::now() < deadline,
                "remount: {} not mounted",
                self.mnt.display()
            );
            thread::sleep(Duration::from_millis(20));
        };
        let mut pids = find_daemon_pids(&self.mnt);
        let deadline = Instant::now() + Duration::from_secs(2);
        while pids.is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
            pids = find_daemon_pids(&self.mnt);
        }
        self.conn = (entry.dev.0 << 20) | entry.dev.1;
        self.daemon_pids = pids;
        self.watchdog = Some(start_watchdog(
            self.mnt.clone(),
            self.conn,
            self.daemon_pids.clone(),
            watchdog_limit(),
        ));
        self.unmounted = false;
    }
}
