//! `hfcachefs doctor [MOUNTPOINT]`: checks a shared cache the way a user or an
//! administrator would debug it, and says for each problem the exact command that fixes it.
//! Exit status 0 when healthy, 1 with findings.
//!
//! Everything that touches the mount runs on a helper thread with a time limit, so a hung
//! daemon makes doctor report it instead of hanging too. The group comes from the mount
//! itself (hfcachefs reports every entry, the root included, with its configured group);
//! the other options from the daemon's command line.

use std::ffi::{OsStr, OsString};
use std::fs::OpenOptions;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::admin::{self, AdminError, AdminResult, Parsed};
use crate::fixstore;
use crate::format::human_bytes;
use crate::mounts::{self, FSTYPE, MountInfo};
use crate::options::{DEFAULT_LOGFILE, MountOptions, Passthrough};
use crate::policy::{Others, Policy};
use crate::sys;
use crate::tree::{self, Node, Visit};

const USAGE: &str = "\
Usage: hfcachefs doctor [MOUNTPOINT]

Checks the shared Hugging Face cache at MOUNTPOINT (default /huggingface) and prints each
check as OK, WARN, FAIL or SKIP, with the command that fixes each problem:
  mounted as fuse.hfcachefs and answering (a hung daemon is reported, not waited for);
  the group exists and you are in it, in the group database and in this login session;
  HF_HOME / HF_HUB_CACHE point at the mount; the store is 0700 root;
  kernel FUSE passthrough; flock through the mount; free space (warns under 10%);
  temporary files older than a day; directories nested too deep to scan; as root, store
  entries whose group or mode do not follow the policy (a sample of the store).
Exit status 0 when healthy, 1 with findings.
";

/// How long the mount may take to answer one probe.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the scans of the tree may take.
const SCAN_TIMEOUT: Duration = Duration::from_secs(60);
/// How many entries the scans look at, at most.
const SCAN_CAP: u64 = 200_000;
/// How many stale temporary files a scan names (it counts them all).
const STALE_NAMED: usize = 10;
/// Free space below this share of the filesystem is reported.
const MIN_FREE_PERCENT: u64 = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
    Skip,
}

/// One check's verdict.
#[derive(Clone, Debug)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

fn check(name: &'static str, status: Status, detail: impl Into<String>) -> Check {
    Check {
        name,
        status,
        detail: detail.into(),
        fix: None,
    }
}

impl Check {
    fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }
}

/// The report and the exit status of a list of checks.
pub fn render(mnt: &Path, checks: &[Check]) -> (String, u8) {
    let mut s = format!("hfcachefs doctor {}\n", mnt.display());
    for c in checks {
        let tag = match c.status {
            Status::Ok => "[ OK ]",
            Status::Warn => "[WARN]",
            Status::Fail => "[FAIL]",
            Status::Skip => "[SKIP]",
        };
        s += &format!("{tag} {}: {}\n", c.name, c.detail);
        if let Some(f) = &c.fix {
            s += &format!("       fix: {f}\n");
        }
    }
    let fails = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warns = checks.iter().filter(|c| c.status == Status::Warn).count();
    if fails + warns == 0 {
        s += "healthy: no problems found\n";
        (s, 0)
    } else {
        s += &format!(
            "{} problem(s) found: {fails} failed, {warns} warning(s)\n",
            fails + warns
        );
        (s, 1)
    }
}

/// The hidden first argument that makes `doctor` run one probe and print its result.
const PROBE: &str = "--probe";

/// Runs `hfcachefs doctor --probe ARGS...` and returns what it printed; `None` if it did
/// not finish within `limit`. Work that touches the mount runs in a child process because a
/// request the daemon has taken but never answers cannot be interrupted: a thread stuck in
/// it would keep doctor from exiting, while a stuck child is simply left behind.
fn in_child(args: &[&OsStr], limit: Duration) -> Option<String> {
    let mut child = Command::new("/proc/self/exe")
        .arg("doctor")
        .arg(PROBE)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    // Read while it runs: a child whose output fills the pipe would block and seem hung.
    let mut stdout = child.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let _ = tx.send(stdout.read_to_string(&mut out).ok().map(|_| out));
    });
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                // Ends it if its request is still queued; else it stays until the mount
                // answers or is aborted.
                let _ = child.kill();
                return None;
            }
        }
    }
    // It has exited: its output ends now.
    rx.recv_timeout(ANSWER_TIMEOUT).ok().flatten()
}

/// The group the hfcachefs mount at `mnt` reports for its root, which is the group it was
/// configured with; `None` if it does not answer within [`ANSWER_TIMEOUT`].
pub fn mount_root_gid(mnt: &Path) -> Option<u32> {
    let reply = in_child(&[OsStr::new("answer"), mnt.as_os_str()], ANSWER_TIMEOUT)?;
    Probe::decode(&reply)?.ok().map(|p| p.root_gid)
}

/// How a probe reports a failed syscall.
fn encode_err(e: &io::Error) -> String {
    format!("errno {}\n", e.raw_os_error().unwrap_or(libc::EIO))
}

fn decode_err(out: &str) -> Option<i32> {
    out.trim().strip_prefix("errno ")?.parse().ok()
}

/// How much of the end of the daemon's log doctor reads: the last mount is near the end.
const LOG_TAIL: u64 = 1 << 20;

/// The last `limit` bytes of a regular file (from the first whole line in them), so that a
/// large log is not read into memory whole.
fn read_tail(path: &Path, limit: u64) -> io::Result<String> {
    // Non-blocking, so that a FIFO there cannot hold doctor up.
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let start = meta.len().saturating_sub(limit);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(limit).read_to_end(&mut buf)?;
    if start > 0 {
        let first_line_end = buf
            .iter()
            .position(|&b| b == b'\n')
            .map_or(buf.len(), |i| i + 1);
        buf.drain(..first_line_end);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Whether a kernel release (`6.9.0-...`) has FUSE passthrough (6.9 and later).
pub fn kernel_has_passthrough(release: &str) -> Option<bool> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next()?.parse().ok()?;
    Some((major, minor) >= (6, 9))
}

/// What the daemon's log says about passthrough for its last mount of `store` on `mnt`:
/// `Some(Ok)` in use, `Some(Err(line))` not in use, `None` unknown. The capability is
/// logged while mounting (before the "mounted" line); a refusal at the first open, after.
pub fn passthrough_from_log(log: &str, store: &Path, mnt: &Path) -> Option<Result<(), String>> {
    let mounted = format!("mounted {} on {} ", store.display(), mnt.display());
    let mounting = format!("Mounting {}", mnt.display());
    let lines: Vec<&str> = log.lines().collect();
    let at = lines.iter().rposition(|l| l.contains(&mounted))?;
    let from = lines[..at]
        .iter()
        .rposition(|l| l.contains(&mounting))
        .unwrap_or(at.saturating_sub(10));
    let mut verdict = None;
    for l in &lines[from..at] {
        if l.contains("kernel passthrough enabled") {
            verdict = Some(Ok(()));
        } else if l.contains("offers no FUSE passthrough") {
            verdict = Some(Err(l.trim().to_owned()));
        }
    }
    let refused = lines[at + 1..]
        .iter()
        .take_while(|l| !l.contains("Mounting "))
        .find(|l| l.contains("passthrough refused"));
    match refused {
        Some(l) => Some(Err(l.trim().to_owned())),
        None => verdict,
    }
}

/// The environment check: `HF_HOME` (or at least the hub cache) must point at the mount.
pub fn env_check(
    mnt: &Path,
    hf_home: Option<&str>,
    hub_cache: Option<&str>,
    as_root: bool,
) -> Check {
    let norm = |s: &str| mounts::absolute(Path::new(s));
    let hub = mnt.join("hub");
    let export = format!("export HF_HOME={}", mnt.display());
    let hub_ok = hub_cache.is_none_or(|h| norm(h) == hub);
    match hf_home.filter(|s| !s.is_empty()) {
        Some(h) if norm(h) == mnt && hub_ok => {
            check("environment", Status::Ok, format!("HF_HOME={h}"))
        }
        Some(h) if norm(h) == mnt => check(
            "environment",
            Status::Fail,
            format!(
                "HF_HOME={h} but HF_HUB_CACHE={} sends hub downloads elsewhere",
                hub_cache.unwrap_or_default()
            ),
        )
        .fix(
            "unset HF_HUB_CACHE HUGGINGFACE_HUB_CACHE (or set it to MNT/hub)"
                .replace("MNT", &mnt.display().to_string()),
        ),
        Some(h) => check(
            "environment",
            Status::Fail,
            format!("HF_HOME={h}: downloads do not go to the shared cache"),
        )
        .fix(export),
        None if hub_cache.is_some_and(|h| norm(h) == hub) => check(
            "environment",
            Status::Warn,
            "only HF_HUB_CACHE points at the mount: datasets and xet caches stay private",
        )
        .fix(export),
        None if as_root => check(
            "environment",
            Status::Skip,
            "HF_HOME is not set for root (members get it from /etc/profile.d/hfcachefs.sh)",
        ),
        None => check(
            "environment",
            Status::Fail,
            "HF_HOME is not set: downloads go to ~/.cache/huggingface, not the shared cache",
        )
        .fix(format!(
            "{export} (members get it at login from /etc/profile.d/hfcachefs.sh: log in again)"
        )),
    }
}

/// The membership check from the group database and this process's groups.
pub fn membership_check(user: &str, group: &str, in_database: bool, in_session: bool) -> Check {
    match (in_database, in_session) {
        (true, true) => check(
            "membership",
            Status::Ok,
            format!("{user} is in group {group}, in this session too"),
        ),
        (true, false) => check(
            "membership",
            Status::Fail,
            format!("{user} was added to group {group} but this login session predates it"),
        )
        .fix(format!("log out and log in again (or run: newgrp {group})")),
        (false, true) => check(
            "membership",
            Status::Warn,
            format!(
                "{user} has group {group} in this session only; the group database does not list it"
            ),
        )
        .fix(format!("as root: usermod -aG {group} {user}")),
        (false, false) => check(
            "membership",
            Status::Fail,
            format!("{user} is not a member of group {group}: the cache refuses access"),
        )
        .fix(format!(
            "as root: usermod -aG {group} {user}, then log in again"
        )),
    }
}

/// What probing the mount found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Probe {
    total: u64,
    free: u64,
    root_gid: u32,
}

impl Probe {
    fn run(mnt: &Path) -> io::Result<Probe> {
        let c = std::ffi::CString::new(mnt.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let fd = sys::open_root(&c).map_err(io::Error::from_raw_os_error)?;
        // statfs always reaches the daemon; getattr may be answered from the kernel's cache.
        let v = sys::fstatvfs(fd.as_fd()).map_err(io::Error::from_raw_os_error)?;
        let st = sys::fstat(fd.as_fd()).map_err(io::Error::from_raw_os_error)?;
        Ok(Probe {
            total: v.f_blocks * v.f_frsize,
            free: v.f_bavail * v.f_frsize,
            root_gid: st.st_gid,
        })
    }

    fn encode(&self) -> String {
        format!("ok {} {} {}\n", self.total, self.free, self.root_gid)
    }

    fn decode(out: &str) -> Option<Result<Probe, i32>> {
        if let Some(e) = decode_err(out) {
            return Some(Err(e));
        }
        let mut f = out.trim().strip_prefix("ok ")?.split(' ');
        let mut next = || f.next()?.parse::<u64>().ok();
        Some(Ok(Probe {
            total: next()?,
            free: next()?,
            root_gid: u32::try_from(next()?).ok()?,
        }))
    }
}

/// Takes a lock on a new file under the mount through one open, checks that a second open
/// is excluded, and releases it; true when the second open was excluded.
fn flock_probe(mnt: &Path) -> io::Result<bool> {
    let path = mnt.join(format!(
        ".hfcachefs-doctor.{}.{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    ));
    let a = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    let result = (|| {
        let b = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)?;
        let lock =
            |f: &std::fs::File, op| sys::flock(f.as_fd(), op).map_err(io::Error::from_raw_os_error);
        lock(&a, libc::LOCK_EX | libc::LOCK_NB)?;
        let excluded = matches!(
            lock(&b, libc::LOCK_EX | libc::LOCK_NB),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK)
        );
        lock(&a, libc::LOCK_UN)?;
        lock(&b, libc::LOCK_EX | libc::LOCK_NB)?;
        lock(&b, libc::LOCK_UN)?;
        Ok(excluded)
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// What a scan of the tree found.
#[derive(Default)]
struct Scan {
    entries: u64,
    capped: bool,
    /// The first [`STALE_NAMED`] stale temporary files, by path relative to the scanned
    /// root, with their size; all of them counted in `stale_count` and `stale_bytes`.
    stale: Vec<(String, u64)>,
    stale_count: u64,
    stale_bytes: u64,
    stray: Vec<String>,
    stray_count: u64,
    /// Directories nested too deep to scan below, and the first of them.
    too_deep: u64,
    first_too_deep: String,
}

impl Scan {
    /// One fact a line; paths lose their (rare) newlines.
    fn encode(&self) -> String {
        let mut out = format!(
            "entries {}\ncapped {}\nstale_count {}\nstale_bytes {}\nstray_count {}\n",
            self.entries, self.capped as u8, self.stale_count, self.stale_bytes, self.stray_count
        );
        for (p, size) in &self.stale {
            out += &format!("stale {size} {}\n", p.replace('\n', "?"));
        }
        for p in &self.stray {
            out += &format!("stray {}\n", p.replace('\n', "?"));
        }
        if self.too_deep > 0 {
            out += &format!(
                "too_deep {} {}\n",
                self.too_deep,
                self.first_too_deep.replace('\n', "?")
            );
        }
        out + "end\n"
    }

    fn decode(out: &str) -> Option<Result<Scan, i32>> {
        if let Some(e) = decode_err(out) {
            return Some(Err(e));
        }
        let mut s = Scan::default();
        let mut complete = false;
        for line in out.lines() {
            if line == "end" {
                complete = true;
                continue;
            }
            let (key, value) = line.split_once(' ')?;
            match key {
                "entries" => s.entries = value.parse().ok()?,
                "capped" => s.capped = value == "1",
                "stale_count" => s.stale_count = value.parse().ok()?,
                "stale_bytes" => s.stale_bytes = value.parse().ok()?,
                "stray_count" => s.stray_count = value.parse().ok()?,
                "stale" => {
                    let (size, path) = value.split_once(' ')?;
                    s.stale.push((path.to_owned(), size.parse().ok()?));
                }
                "stray" => s.stray.push(value.to_owned()),
                "too_deep" => {
                    let (n, path) = value.split_once(' ')?;
                    s.too_deep = n.parse().ok()?;
                    s.first_too_deep = path.to_owned();
                }
                _ => return None,
            }
        }
        complete.then_some(Ok(s))
    }
}

fn scan(root: &Path, policy: Option<Policy>) -> io::Result<Scan> {
    let node = Node::open_trusted(root)?;
    let mut s = Scan::default();
    let now = SystemTime::now();
    let walked = tree::walk(&node, &mut |rel, n| {
        s.entries += 1;
        let name = rel.file_name().map_or(&b""[..], |n| n.as_encoded_bytes());
        if tree::is_stale_temporary(name, n, now) {
            s.stale_count += 1;
            s.stale_bytes += n.size();
            if s.stale.len() < STALE_NAMED {
                s.stale.push((rel.display().to_string(), n.size()));
            }
        }
        if let Some(p) = &policy {
            let fix = fixstore::needed(&n.st, p);
            if fix.is_needed() {
                s.stray_count += 1;
                if s.stray.len() < 5 {
                    s.stray.push(format!(
                        "{} (group {}, mode {:04o})",
                        rel.display(),
                        n.st.st_gid,
                        n.st.st_mode & 0o7777
                    ));
                }
            }
        }
        if s.entries >= SCAN_CAP {
            s.capped = true;
            return Visit::Stop;
        }
        Visit::Descend
    })?;
    s.too_deep = walked.too_deep;
    if let Some(p) = walked.first_too_deep {
        s.first_too_deep = p.display().to_string();
    }
    Ok(s)
}

/// Everything the checks share.
struct Doctor {
    mnt: PathBuf,
    root: bool,
    mount: Option<MountInfo>,
    daemon: Option<MountOptions>,
    probe: Option<Probe>,
    checks: Vec<Check>,
}

impl Doctor {
    fn push(&mut self, c: Check) {
        self.checks.push(c);
    }

    fn mnt_s(&self) -> String {
        self.mnt.display().to_string()
    }

    fn check_mounted(&mut self) {
        let m = self.mnt_s();
        let c = match &self.mount {
            None => check("mounted", Status::Fail, format!("{m} is not mounted")).fix(format!(
                "mount {m} (given its fstab line; scripts/install.sh adds one), or: mount -t fuse.hfcachefs /var/lib/hfcachefs/store {m} -o group=hf-users"
            )),
            Some(mi) if mi.fstype == FSTYPE && !mi.is_hfcachefs() => check(
                "mounted",
                Status::Fail,
                format!(
                    "{m} is a {FSTYPE} mount made by uid {}, not by root: not the shared cache",
                    mi.fuse_user_id()
                        .map_or_else(|| "unknown".to_owned(), |u| u.to_string())
                ),
            )
            .fix(format!("umount {m}, then mount {m} as root")),
            Some(mi) if mi.fstype != FSTYPE => check(
                "mounted",
                Status::Fail,
                format!("{m} is a {} mount, not hfcachefs", mi.fstype),
            )
            .fix(format!("umount {m}, then mount {m} (hfcachefs)")),
            Some(mi) => check(
                "mounted",
                Status::Ok,
                format!("{m} is {FSTYPE}, store {}", mi.source.display()),
            ),
        };
        self.push(c);
    }

    fn check_answering(&mut self) {
        let Some(mi) = self.mount.clone().filter(MountInfo::is_hfcachefs) else {
            return;
        };
        let m = self.mnt_s();
        let conn = (mi.dev.0 << 20) | mi.dev.1;
        let start = Instant::now();
        let reply = in_child(
            &[OsStr::new("answer"), self.mnt.as_os_str()],
            ANSWER_TIMEOUT,
        );
        let c = match reply.as_deref().and_then(Probe::decode) {
            Some(Ok(p)) => {
                self.probe = Some(p);
                check(
                    "answering",
                    Status::Ok,
                    format!("answered in {} ms", start.elapsed().as_millis()),
                )
            }
            Some(Err(libc::ENOTCONN)) => check(
                "answering",
                Status::Fail,
                "the daemon is gone (transport endpoint is not connected)",
            )
            .fix(format!("umount {m} && mount {m}")),
            Some(Err(e)) => check(
                "answering",
                Status::Fail,
                format!("{m}: {}", io::Error::from_raw_os_error(e)),
            )
            .fix(format!("umount {m} && mount {m}")),
            None => check(
                "answering",
                Status::Fail,
                format!(
                    "no answer within {} s: the daemon is hung",
                    ANSWER_TIMEOUT.as_secs()
                ),
            )
            .fix(format!(
                "echo 1 > /sys/fs/fuse/connections/{conn}/abort; umount -l {m}; mount {m}"
            )),
        };
        self.push(c);
    }

    /// The group: as the mount reports it, else as the daemon was told.
    fn group(&mut self) -> Option<u32> {
        if let Some(p) = &self.probe {
            return Some(p.root_gid);
        }
        let spec = self.daemon.as_ref()?.group.clone();
        spec.resolve().ok()
    }

    fn check_group(&mut self) -> Option<(u32, String)> {
        let Some(gid) = self.group() else {
            self.push(check(
                "group",
                Status::Skip,
                "unknown: the mount did not answer and no daemon was found",
            ));
            return None;
        };
        match sys::group_by_gid(gid) {
            Ok(Some(g)) => {
                self.push(check(
                    "group",
                    Status::Ok,
                    format!("group {} (gid {gid}) exists", g.name),
                ));
                Some((gid, g.name))
            }
            Ok(None) => {
                self.push(
                    check(
                        "group",
                        Status::Fail,
                        format!("the mount's group id {gid} has no group"),
                    )
                    .fix(format!("groupadd -g {gid} hf-users")),
                );
                None
            }
            Err(e) => {
                self.push(check(
                    "group",
                    Status::Fail,
                    format!("cannot read the group database: {e}"),
                ));
                None
            }
        }
    }

    fn check_membership(&mut self, gid: u32, group: &str) {
        if self.root {
            self.push(check(
                "membership",
                Status::Skip,
                "running as root, which needs no membership (members: run doctor as yourself)",
            ));
            return;
        }
        let uid = sys::real_uid();
        let (user, primary) = match sys::user_by_uid(uid) {
            Ok(Some(u)) => u,
            _ => (uid.to_string(), u32::MAX),
        };
        let listed = sys::group_by_gid(gid)
            .ok()
            .flatten()
            .is_some_and(|g| g.members.contains(&user));
        let in_session = sys::process_groups().is_ok_and(|g| g.contains(&gid));
        self.push(membership_check(
            &user,
            group,
            listed || primary == gid,
            in_session,
        ));
    }

    fn check_env(&mut self) {
        let home = std::env::var("HF_HOME").ok();
        let hub = std::env::var("HF_HUB_CACHE")
            .or_else(|_| std::env::var("HUGGINGFACE_HUB_CACHE"))
            .ok();
        let c = env_check(&self.mnt, home.as_deref(), hub.as_deref(), self.root);
        self.push(c);
    }

    fn check_store(&mut self) {
        let Some(mi) = self.mount.clone().filter(MountInfo::is_hfcachefs) else {
            return;
        };
        let store = mi.source;
        let s = store.display().to_string();
        let meta = match std::fs::symlink_metadata(&store) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                self.push(check(
                    "store",
                    Status::Skip,
                    format!("{s}: cannot be read as this user (run doctor as root)"),
                ));
                return;
            }
            Err(e) => {
                self.push(check("store", Status::Fail, format!("{s}: {e}")));
                return;
            }
        };
        let mode = meta.mode() & 0o7777;
        if meta.uid() != 0 || mode & 0o077 != 0 || !meta.is_dir() {
            self.push(
                check(
                    "store",
                    Status::Fail,
                    format!(
                        "{s} is owned by uid {} with mode {mode:04o}: users could reach it without hfcachefs",
                        meta.uid()
                    ),
                )
                .fix(format!("chown root:root {s} && chmod 0700 {s}")),
            );
            return;
        }
        // A parent others can write to could have the store swapped underneath the daemon.
        let weak = store.ancestors().skip(1).find(|p| {
            std::fs::symlink_metadata(p).is_ok_and(|m| {
                let mode = m.mode();
                m.uid() != 0 || (mode & 0o022 != 0 && mode & 0o1000 == 0)
            })
        });
        let c = match weak {
            Some(p) => check(
                "store",
                Status::Warn,
                format!(
                    "{s} is 0700 root, but its parent {} can be changed by users",
                    p.display()
                ),
            )
            .fix(format!(
                "chown root:root {0} && chmod go-w {0}",
                p.display()
            )),
            None => check("store", Status::Ok, format!("{s} is 0700 root")),
        };
        self.push(c);
    }

    fn check_passthrough(&mut self) {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let release = release.trim().to_owned();
        if self
            .daemon
            .as_ref()
            .is_some_and(|o| o.passthrough == Passthrough::Off)
        {
            self.push(check(
                "passthrough",
                Status::Ok,
                "disabled by the mount's passthrough=off",
            ));
            return;
        }
        let c = match kernel_has_passthrough(&release) {
            Some(false) => check(
                "passthrough",
                Status::Warn,
                format!(
                    "kernel {release} has no FUSE passthrough (needs 6.9): file I/O goes through the daemon, slower"
                ),
            )
            .fix("upgrade the kernel to 6.9 or later"),
            None => check(
                "passthrough",
                Status::Skip,
                format!("cannot tell from kernel release '{release}'"),
            ),
            Some(true) => {
                let logfile = self
                    .daemon
                    .as_ref()
                    .map_or(PathBuf::from(DEFAULT_LOGFILE), |o| o.logfile.clone());
                let from_log = match (&self.mount, read_tail(&logfile, LOG_TAIL)) {
                    (Some(mi), Ok(log)) => passthrough_from_log(&log, &mi.source, &self.mnt),
                    _ => None,
                };
                match from_log {
                    Some(Ok(())) => check(
                        "passthrough",
                        Status::Ok,
                        format!("kernel {release}; the daemon's log says it is in use"),
                    ),
                    Some(Err(line)) => check(
                        "passthrough",
                        Status::Warn,
                        format!("kernel {release}, but the daemon does not use it: {line}"),
                    )
                    .fix(
                        "put the store on a plain local filesystem (not overlayfs or another FUSE mount), then remount",
                    ),
                    None => check(
                        "passthrough",
                        Status::Ok,
                        format!(
                            "kernel {release} supports it (the daemon's log {} did not confirm)",
                            logfile.display()
                        ),
                    ),
                }
            }
        };
        self.push(c);
    }

    fn check_flock(&mut self) {
        if self.probe.is_none() {
            return;
        }
        let m = self.mnt_s();
        let reply = in_child(&[OsStr::new("flock"), self.mnt.as_os_str()], ANSWER_TIMEOUT);
        let r = reply.map(|out| match out.trim() {
            "ok 1" => Ok(true),
            "ok 0" => Ok(false),
            other => Err(io::Error::from_raw_os_error(
                decode_err(other).unwrap_or(libc::EIO),
            )),
        });
        let c = match r {
            Some(Ok(true)) => check(
                "flock",
                Status::Ok,
                "a lock taken through the mount excludes another open and is released",
            ),
            Some(Ok(false)) => check(
                "flock",
                Status::Fail,
                "two opens through the mount did not exclude each other",
            )
            .fix(format!(
                "umount {m} && mount {m} with the installed hfcachefs"
            )),
            Some(Err(e)) if e.kind() == io::ErrorKind::PermissionDenied => check(
                "flock",
                Status::Fail,
                format!("cannot create a file in {m}: permission denied"),
            )
            .fix("see the membership check"),
            Some(Err(e)) => check("flock", Status::Fail, format!("flock through {m}: {e}")),
            None => check(
                "flock",
                Status::Fail,
                format!("no answer within {} s", ANSWER_TIMEOUT.as_secs()),
            )
            .fix(format!("umount -l {m}; mount {m}")),
        };
        self.push(c);
    }

    fn check_space(&mut self) {
        let Some(p) = &self.probe else { return };
        let (total, free) = (p.total, p.free);
        if total == 0 {
            return;
        }
        let pct = free * 100 / total;
        let detail = format!(
            "{} free of {} ({pct}%)",
            human_bytes(free),
            human_bytes(total)
        );
        let c = if pct < MIN_FREE_PERCENT {
            check("free space", Status::Warn, detail).fix(format!(
                "see what is large with: hfcachefs stats {0}; remove unused revisions with: HF_HOME={0} hf cache delete",
                self.mnt_s()
            ))
        } else {
            check("free space", Status::Ok, detail)
        };
        self.push(c);
    }

    /// Stale temporary files, and as root, entries that do not follow the policy.
    fn check_tree(&mut self, gid: Option<u32>) {
        let Some(mi) = self.mount.clone().filter(MountInfo::is_hfcachefs) else {
            return;
        };
        let (root, policy) = if self.root {
            let others = self.daemon.as_ref().map_or(Others::None, |o| o.others);
            (mi.source.clone(), gid.map(|gid| Policy { gid, others }))
        } else if self.probe.is_some() {
            (self.mnt.clone(), None)
        } else {
            return;
        };
        let mut args = vec![OsString::from("scan"), root.into_os_string()];
        if let Some(p) = &policy {
            args.push(p.gid.to_string().into());
            args.push(p.others.as_str().into());
        }
        let args: Vec<&OsStr> = args.iter().map(OsString::as_os_str).collect();
        let reply = in_child(&args, SCAN_TIMEOUT);
        let s = match reply.as_deref().and_then(Scan::decode) {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                self.push(check(
                    "temporary files",
                    Status::Skip,
                    format!("cannot read the cache: {}", io::Error::from_raw_os_error(e)),
                ));
                return;
            }
            None => {
                self.push(check(
                    "temporary files",
                    Status::Skip,
                    format!("the scan took over {} s", SCAN_TIMEOUT.as_secs()),
                ));
                return;
            }
        };
        let sample = if s.capped {
            format!(" (in the first {} entries)", s.entries)
        } else {
            String::new()
        };
        let c = if s.stale_count == 0 {
            check(
                "temporary files",
                Status::Ok,
                format!("none older than a day{sample}"),
            )
        } else {
            // Through the mount, as a member: root deleting by path in a tree members
            // control would follow the symlinks they put there.
            let quoted: Vec<String> = s
                .stale
                .iter()
                .map(|(rel, _)| {
                    let p = self.mnt.join(rel).display().to_string();
                    format!("'{}'", p.replace('\'', "'\\''"))
                })
                .collect();
            let more = s.stale_count.saturating_sub(s.stale.len() as u64);
            check(
                "temporary files",
                Status::Warn,
                format!(
                    "{} older than a day ({}){sample}: abandoned downloads",
                    s.stale_count,
                    human_bytes(s.stale_bytes)
                ),
            )
            .fix(format!(
                "if no download is running, as a member of the group (not as root): rm -f -- {}{}",
                quoted.join(" "),
                if more > 0 {
                    format!(" (and {more} more)")
                } else {
                    String::new()
                }
            ))
        };
        self.push(c);
        if s.too_deep > 0 {
            let first = self.mnt.join(&s.first_too_deep);
            let quoted = format!("'{}'", first.display().to_string().replace('\'', "'\\''"));
            self.push(
                check(
                    "nesting",
                    Status::Warn,
                    format!(
                        "{} directories {} levels down, e.g. {}: what is below them was not scanned",
                        s.too_deep,
                        tree::MAX_DEPTH,
                        first.display()
                    ),
                )
                .fix(format!(
                    "nesting that deep is no cache: as a member of the group (not as root), remove it: rm -r -- {quoted}"
                )),
            );
        }
        if policy.is_none() {
            if !self.root {
                self.push(check(
                    "store policy",
                    Status::Skip,
                    "run doctor as root to check the store's entries",
                ));
            }
            return;
        }
        let store = mi.source.display().to_string();
        let c = if s.stray_count == 0 {
            check(
                "store policy",
                Status::Ok,
                format!(
                    "{} entries follow the group and mode policy{sample}",
                    s.entries
                ),
            )
        } else {
            check(
                "store policy",
                Status::Fail,
                format!(
                    "{} of {} entries do not follow the group/mode policy{sample}, e.g. {}",
                    s.stray_count,
                    s.entries,
                    s.stray.join(", ")
                ),
            )
            .fix(format!(
                "hfcachefs fix-store {store} --dry-run, then: hfcachefs fix-store {store}"
            ))
        };
        self.push(c);
    }
}

/// The child side of [`in_child`]: runs one probe and prints its result.
fn probe_main(args: &[String]) -> AdminResult {
    let out = match args {
        [kind, mnt] if kind == "answer" => match Probe::run(Path::new(mnt)) {
            Ok(p) => p.encode(),
            Err(e) => encode_err(&e),
        },
        [kind, mnt] if kind == "flock" => match flock_probe(Path::new(mnt)) {
            Ok(excluded) => format!("ok {}\n", excluded as u8),
            Err(e) => encode_err(&e),
        },
        [kind, root, rest @ ..] if kind == "scan" => {
            let policy = match rest {
                [] => None,
                [gid, others] => Some(Policy {
                    gid: gid
                        .parse()
                        .map_err(|_| AdminError::Usage(format!("bad gid {gid}")))?,
                    others: if others == Others::Read.as_str() {
                        Others::Read
                    } else {
                        Others::None
                    },
                }),
                _ => return Err(AdminError::Usage("bad probe arguments".into())),
            };
            match scan(Path::new(root), policy) {
                Ok(s) => s.encode(),
                Err(e) => encode_err(&e),
            }
        }
        _ => return Err(AdminError::Usage("bad probe arguments".into())),
    };
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

pub fn main(args: &[String]) -> AdminResult {
    if let Some(rest) = args.strip_prefix(&[PROBE.to_owned()]) {
        return probe_main(rest);
    }
    let a = match admin::parse(args, &[], &[])? {
        Parsed::Help => {
            print!("{USAGE}");
            return Ok(ExitCode::SUCCESS);
        }
        Parsed::Run(a) => a,
    };
    let mnt = match a.positional.as_slice() {
        [] => PathBuf::from("/huggingface"),
        [m] => PathBuf::from(m),
        _ => return Err(AdminError::Usage("expected one MOUNTPOINT".into())),
    };
    let mnt = mounts::absolute(&mnt);
    let mut d = Doctor {
        mount: mounts::mount_at(&mnt),
        daemon: mounts::daemon_options(&mnt),
        mnt,
        root: sys::is_root(),
        probe: None,
        checks: Vec::new(),
    };
    d.check_mounted();
    d.check_answering();
    let group = d.check_group();
    if let Some((gid, name)) = &group {
        d.check_membership(*gid, name);
    }
    d.check_env();
    d.check_store();
    d.check_passthrough();
    d.check_flock();
    d.check_space();
    d.check_tree(group.map(|(gid, _)| gid));
    let (text, code) = render(&d.mnt, &d.checks);
    print!("{text}");
    Ok(ExitCode::from(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_results_cross_the_pipe() {
        let p = Probe {
            total: 100,
            free: 7,
            root_gid: 1003,
        };
        assert_eq!(Probe::decode(&p.encode()), Some(Ok(p)));
        let e = encode_err(&io::Error::from_raw_os_error(libc::ENOTCONN));
        assert_eq!(Probe::decode(&e), Some(Err(libc::ENOTCONN)));
        assert_eq!(Probe::decode("ok 1 2"), None);
        assert_eq!(Probe::decode(""), None);

        let s = Scan {
            entries: 9,
            capped: true,
            stale: vec![("a b.incomplete".into(), 5)],
            stale_count: 12,
            stale_bytes: 60,
            stray: vec!["x (group 0, mode 0644)".into()],
            stray_count: 3,
            too_deep: 2,
            first_too_deep: "d/d d".into(),
        };
        let d = match Scan::decode(&s.encode()) {
            Some(Ok(d)) => d,
            other => panic!("decoded {:?}", other.map(|r| r.map(|s| s.entries))),
        };
        assert_eq!((d.entries, d.capped, d.stray_count), (9, true, 3));
        assert_eq!(d.stale, s.stale);
        assert_eq!((d.stale_count, d.stale_bytes), (12, 60));
        assert_eq!((d.too_deep, d.first_too_deep.as_str()), (2, "d/d d"));
        assert_eq!(d.stray, s.stray);
        assert!(
            Scan::decode("entries 3\n").is_none(),
            "a cut-off reply is no reply"
        );
        let cut = s.encode().replace("end\n", "");
        assert!(Scan::decode(&cut).is_none(), "a reply without its end");
    }

    #[test]
    fn log_tail_starts_at_a_whole_line() {
        let dir = std::env::temp_dir().join(format!("hfcachefs-tail-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        std::fs::write(&dir, "first line\nsecond\nthird\n").unwrap();
        assert_eq!(
            read_tail(&dir, 1000).unwrap(),
            "first line\nsecond\nthird\n"
        );
        assert_eq!(read_tail(&dir, 10).unwrap(), "third\n");
        std::fs::remove_file(&dir).unwrap();
        assert!(read_tail(Path::new("/"), 10).is_err());
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_has_passthrough("6.18.44-fc-v669"), Some(true));
        assert_eq!(kernel_has_passthrough("6.9.0"), Some(true));
        assert_eq!(kernel_has_passthrough("6.8.12-amd64"), Some(false));
        assert_eq!(kernel_has_passthrough("5.15.0"), Some(false));
        assert_eq!(kernel_has_passthrough("garbage"), None);
    }

    #[test]
    fn passthrough_in_the_log() {
        let log = "[t INFO fuser::session] Mounting /m\n\
                   [t INFO hfcachefs::fuse] kernel passthrough enabled for file I/O\n\
                   [t INFO hfcachefs::daemon] mounted /s on /m (group 5, others None)\n";
        let (s, m) = (Path::new("/s"), Path::new("/m"));
        assert_eq!(passthrough_from_log(log, s, m), Some(Ok(())));
        assert_eq!(passthrough_from_log(log, s, Path::new("/other")), None);
        let refused = format!("{log}[t WARN hfcachefs::fuse] kernel passthrough refused (x)\n");
        assert!(
            matches!(passthrough_from_log(&refused, s, m), Some(Err(l)) if l.contains("refused"))
        );
        let none = log.replace(
            "kernel passthrough enabled for file I/O",
            "the kernel offers no FUSE passthrough; serving file I/O from the daemon",
        );
        assert!(matches!(passthrough_from_log(&none, s, m), Some(Err(_))));
        let later = format!("{refused}[t INFO fuser::session] Mounting /m\n{log}");
        assert_eq!(passthrough_from_log(&later, s, m), Some(Ok(())));
    }

    #[test]
    fn environment() {
        let m = Path::new("/huggingface");
        assert_eq!(
            env_check(m, Some("/huggingface/"), None, false).status,
            Status::Ok
        );
        assert_eq!(
            env_check(m, Some("/huggingface"), Some("/huggingface/hub"), false).status,
            Status::Ok
        );
        let c = env_check(m, Some("/huggingface"), Some("/home/a/hub"), false);
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.unwrap_or_default().contains("unset HF_HUB_CACHE"));
        let c = env_check(m, Some("/home/a/.cache/huggingface"), None, false);
        assert_eq!(c.status, Status::Fail);
        assert_eq!(c.fix.as_deref(), Some("export HF_HOME=/huggingface"));
        assert_eq!(env_check(m, None, None, false).status, Status::Fail);
        assert_eq!(env_check(m, None, None, true).status, Status::Skip);
        assert_eq!(
            env_check(m, None, Some("/huggingface/hub"), false).status,
            Status::Warn
        );
    }

    #[test]
    fn membership() {
        assert_eq!(membership_check("a", "g", true, true).status, Status::Ok);
        let c = membership_check("a", "g", true, false);
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.unwrap_or_default().contains("log in again"));
        let c = membership_check("a", "g", false, false);
        assert!(c.fix.unwrap_or_default().contains("usermod -aG g a"));
        assert_eq!(membership_check("a", "g", false, true).status, Status::Warn);
    }

    #[test]
    fn report_and_exit_status() {
        let ok = [
            check("mounted", Status::Ok, "fine"),
            check("x", Status::Skip, "n/a"),
        ];
        let (text, code) = render(Path::new("/m"), &ok);
        assert_eq!(code, 0);
        assert!(text.contains("[ OK ] mounted: fine") && text.contains("healthy"));
        let bad = [
            check("a", Status::Warn, "low"),
            check("b", Status::Fail, "broken").fix("do it"),
        ];
        let (text, code) = render(Path::new("/m"), &bad);
        assert_eq!(code, 1);
        assert!(text.contains("[FAIL] b: broken\n       fix: do it"));
        assert!(text.contains("2 problem(s) found: 1 failed, 1 warning(s)"));
    }
}
