//! Probes of a mount run in a child process (`hfcachefs doctor --probe KIND ARGS`), each
//! with a time limit: a request the daemon has taken but never answers cannot be
//! interrupted, so a thread stuck in it would keep its caller from exiting, while a stuck
//! child is simply left behind. `doctor` runs all its checks that touch the mount this way,
//! and `mounts` asks a mount for its group so.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::cache::layout::{self, Place};
use crate::cache::links::{Dangling, Links, Missing, Orphan, Unlisted};
use crate::cache::walk::{self, Node, Visit};
use crate::error::{CmdResult, Error};
use crate::evict::scan::StoreBytes;
use crate::policy::{self, Others, Policy};
use crate::sys;

/// How long the mount may take to answer one probe.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the scans of the tree may take.
pub const SCAN_TIMEOUT: Duration = Duration::from_secs(60);
/// How many entries the scans look at, at most.
const SCAN_CAP: u64 = 200_000;
/// How many stale temporary files a scan names (it counts them all).
const STALE_NAMED: usize = 10;
/// How many findings of each other kind a scan names (it counts them all).
pub const NAMED: usize = 10;
/// How many levels of `xet/` a member's scan tries to create files in (`xet/<endpoint>/staging`).
const XET_TRY_DEPTH: usize = 3;
/// The hidden first argument that makes `doctor` run one probe and print its result.
pub const FLAG: &str = "--probe";

/// Runs `hfcachefs doctor --probe ARGS...` and returns what it printed; `None` if it did
/// not finish within `limit`. Work that touches the mount runs in a child process because a
/// request the daemon has taken but never answers cannot be interrupted: a thread stuck in
/// it would keep doctor from exiting, while a stuck child is simply left behind.
pub fn in_child(args: &[&OsStr], limit: Duration) -> Option<String> {
    let mut child = Command::new("/proc/self/exe")
        .arg("doctor")
        .arg(FLAG)
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

pub fn decode_err(out: &str) -> Option<i32> {
    out.trim().strip_prefix("errno ")?.parse().ok()
}

/// What probing the mount found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub total: u64,
    pub free: u64,
    pub root_gid: u32,
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

    pub fn decode(out: &str) -> Option<Result<Probe, i32>> {
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

/// The caller's own secrets as the mount shows them: one line per private name,
/// `NAME absent`, `NAME private` (the caller's, owner-only) or `NAME exposed UID MODE`.
fn secrets_probe(mnt: &Path) -> String {
    let me = sys::real_uid();
    let mut out = String::new();
    for name in layout::PRIVATE_NAMES {
        let line = match std::fs::symlink_metadata(mnt.join(name)) {
            Err(_) => "absent".to_owned(),
            Ok(m) => {
                use std::os::unix::fs::MetadataExt;
                if m.uid() == me && m.mode() & 0o077 == 0 {
                    "private".to_owned()
                } else {
                    format!("exposed {} {:o}", m.uid(), m.mode() & 0o7777)
                }
            }
        };
        out += &format!("{name} {line}\n");
    }
    out
}

/// What a scan of the tree found.
#[derive(Debug, Default)]
pub struct Scan {
    pub entries: u64,
    pub capped: bool,
    /// What the store takes by a size goal's count (`evict::scan::StoreBytes`: its files on
    /// disk, each inode once), of what was scanned.
    pub store_bytes: u64,
    /// The first [`STALE_NAMED`] stale temporary files, by path relative to the scanned
    /// root, with their size; all of them counted in `stale_count` and `stale_bytes`.
    pub stale: Vec<(String, u64)>,
    pub stale_count: u64,
    pub stale_bytes: u64,
    pub stray: Vec<String>,
    pub stray_count: u64,
    /// Secrets lying shared in the store root ("token of alice (uid 1000)").
    pub exposed: Vec<String>,
    /// Directories nested too deep to scan below, and the first of them.
    pub too_deep: u64,
    pub first_too_deep: String,
    /// Links that lead nowhere (snapshot -> blob -> payload): the first [`NAMED`], all
    /// counted, and the (repo, revision) pairs to download again.
    pub dangling: Vec<Dangling>,
    pub dangling_count: u64,
    pub redownload: Vec<(String, String)>,
    /// Shared payloads no repo links to: the first [`NAMED`], all counted and summed, and
    /// how many of them `hf cache prune` deletes.
    pub orphans: Vec<Orphan>,
    pub orphan_count: u64,
    pub orphan_bytes: u64,
    pub orphan_prunable: u64,
    /// Repo links their payload's `.refs` does not list: the first [`NAMED`], all counted.
    pub unlisted: Vec<Unlisted>,
    pub unlisted_count: u64,
    /// Payloads `hf cache prune` would delete although repos link them.
    pub at_risk: u64,
    /// `.refs` lines naming no current link (harmless).
    pub stale_lines: u64,
    /// Directories of `xet/` members cannot create in ("xet/logs (group 0, mode 0755)"):
    /// against the policy as root, by trying as a member.
    pub xet_blocked: Vec<String>,
    pub xet_blocked_count: u64,
}

/// A path or text on one line of a scan's reply (it loses its rare newlines and tabs).
fn line(s: &str) -> String {
    s.replace(['\n', '\t'], "?")
}

/// A word of a scan's reply (repo names and commits have no spaces; odd ones lose them).
fn word(s: &str) -> String {
    line(s).replace(' ', "?")
}

impl Scan {
    /// Adds what the links of the cache show (not when the scan stopped at its cap: a
    /// part of the tree would show payloads as orphans and links as dangling).
    fn add_links(&mut self, links: &Links) {
        if self.capped {
            return;
        }
        let f = links.check();
        self.dangling_count = f.dangling.len() as u64;
        let mut pairs = std::collections::BTreeSet::new();
        for d in &f.dangling {
            if let Some(rev) = &d.revision {
                pairs.insert((d.repo.clone(), rev.clone()));
            }
        }
        self.redownload = pairs.into_iter().take(NAMED).collect();
        self.dangling = f.dangling.into_iter().take(NAMED).collect();
        self.orphan_count = f.orphans.len() as u64;
        self.orphan_bytes = f.orphans.iter().map(|o| o.size).sum();
        self.orphan_prunable = f.orphans.iter().filter(|o| o.prunable).count() as u64;
        self.orphans = f.orphans.into_iter().take(NAMED).collect();
        self.unlisted_count = f.unlisted.len() as u64;
        self.unlisted = f.unlisted.into_iter().take(NAMED).collect();
        self.at_risk = f.at_risk;
        self.stale_lines = f.stale_lines;
    }

    /// Notes a directory of `xet/` members cannot create in.
    fn xet_blocked(&mut self, what: String) {
        self.xet_blocked_count += 1;
        if self.xet_blocked.len() < NAMED {
            self.xet_blocked.push(what);
        }
    }

    /// One fact a line; paths lose their (rare) newlines.
    fn encode(&self) -> String {
        let mut out = format!(
            "entries {}\ncapped {}\nstore_bytes {}\nstale_count {}\nstale_bytes {}\nstray_count {}\n",
            self.entries,
            self.capped as u8,
            self.store_bytes,
            self.stale_count,
            self.stale_bytes,
            self.stray_count
        );
        for (p, size) in &self.stale {
            out += &format!("stale {size} {}\n", p.replace('\n', "?"));
        }
        for p in &self.stray {
            out += &format!("stray {}\n", p.replace('\n', "?"));
        }
        for p in &self.exposed {
            out += &format!("exposed {}\n", p.replace('\n', "?"));
        }
        if self.too_deep > 0 {
            out += &format!(
                "too_deep {} {}\n",
                self.too_deep,
                self.first_too_deep.replace('\n', "?")
            );
        }
        out += &format!(
            "dangling_count {}\norphan_count {}\norphan_bytes {}\norphan_prunable {}\nunlisted_count {}\nat_risk {}\nstale_lines {}\nxet_blocked_count {}\n",
            self.dangling_count,
            self.orphan_count,
            self.orphan_bytes,
            self.orphan_prunable,
            self.unlisted_count,
            self.at_risk,
            self.stale_lines,
            self.xet_blocked_count
        );
        for d in &self.dangling {
            out += &format!(
                "dangling {} {} {} {}\n",
                d.missing.as_str(),
                word(&d.repo),
                d.revision.as_deref().map_or("-".to_owned(), word),
                line(&d.rel.display().to_string())
            );
        }
        for (repo, rev) in &self.redownload {
            out += &format!("redownload {} {}\n", word(repo), word(rev));
        }
        for o in &self.orphans {
            out += &format!(
                "orphan {} {} {}\n",
                o.size,
                o.prunable as u8,
                line(&o.rel.display().to_string())
            );
        }
        for u in &self.unlisted {
            out += &format!(
                "unlisted {}\t{}\n",
                line(&u.refs.display().to_string()),
                line(&u.line)
            );
        }
        for x in &self.xet_blocked {
            out += &format!("xet {}\n", line(x));
        }
        out + "end\n"
    }

    pub fn decode(out: &str) -> Option<Result<Scan, i32>> {
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
                "store_bytes" => s.store_bytes = value.parse().ok()?,
                "stale_count" => s.stale_count = value.parse().ok()?,
                "stale_bytes" => s.stale_bytes = value.parse().ok()?,
                "stray_count" => s.stray_count = value.parse().ok()?,
                "stale" => {
                    let (size, path) = value.split_once(' ')?;
                    s.stale.push((path.to_owned(), size.parse().ok()?));
                }
                "stray" => s.stray.push(value.to_owned()),
                "exposed" => s.exposed.push(value.to_owned()),
                "too_deep" => {
                    let (n, path) = value.split_once(' ')?;
                    s.too_deep = n.parse().ok()?;
                    s.first_too_deep = path.to_owned();
                }
                "dangling_count" => s.dangling_count = value.parse().ok()?,
                "orphan_count" => s.orphan_count = value.parse().ok()?,
                "orphan_bytes" => s.orphan_bytes = value.parse().ok()?,
                "orphan_prunable" => s.orphan_prunable = value.parse().ok()?,
                "unlisted_count" => s.unlisted_count = value.parse().ok()?,
                "at_risk" => s.at_risk = value.parse().ok()?,
                "stale_lines" => s.stale_lines = value.parse().ok()?,
                "xet_blocked_count" => s.xet_blocked_count = value.parse().ok()?,
                "dangling" => {
                    let mut f = value.splitn(4, ' ');
                    let missing = Missing::parse(f.next()?)?;
                    let repo = f.next()?.to_owned();
                    let revision = Some(f.next()?).filter(|r| *r != "-").map(str::to_owned);
                    let rel = f.next()?.into();
                    s.dangling.push(Dangling {
                        repo,
                        revision,
                        rel,
                        missing,
                    });
                }
                "redownload" => {
                    let (repo, rev) = value.split_once(' ')?;
                    s.redownload.push((repo.to_owned(), rev.to_owned()));
                }
                "orphan" => {
                    let mut f = value.splitn(3, ' ');
                    let size = f.next()?.parse().ok()?;
                    let prunable = f.next()? == "1";
                    let rel = f.next()?.into();
                    s.orphans.push(Orphan {
                        rel,
                        size,
                        prunable,
                    });
                }
                "unlisted" => {
                    let (refs, line) = value.split_once('\t')?;
                    s.unlisted.push(Unlisted {
                        refs: refs.into(),
                        line: line.to_owned(),
                    });
                }
                "xet" => s.xet_blocked.push(value.to_owned()),
                _ => return None,
            }
        }
        complete.then_some(Ok(s))
    }
}

/// Whether the caller can create a file in the directory behind `dir` (a member's check of
/// `xet/` through the mount): creates and removes an unused name. The error when it cannot.
fn can_create_in(dir: &Node) -> Result<(), i32> {
    let name = format!(
        ".hfcachefs-doctor.{}.{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    let name = sys::Name::new(std::ffi::OsStr::new(&name))?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
    drop(sys::open_at(dir.fd(), &name, flags, 0o600)?);
    sys::unlink_at(dir.fd(), &name, false)
}

fn scan(root: &Path, policy: Option<Policy>) -> io::Result<Scan> {
    let node = Node::open_trusted(root)?;
    let mut s = Scan::default();
    let now = SystemTime::now();
    // The hub cache is `hub/` of an HF_HOME, or the root itself.
    let hub = match node.child_opt(std::ffi::OsStr::new(layout::HUB)) {
        Ok(Some(h)) if h.is_dir() => Path::new(layout::HUB),
        _ => Path::new(""),
    };
    let mut links = Links::new(hub);
    let mut bytes = StoreBytes::default();
    let walked = walk::walk(&node, &mut |rel, n, place| {
        s.entries += 1;
        links.add(rel, n, place);
        bytes.add(n, place);
        if place == Place::Xet && n.is_dir() {
            let describe = || {
                format!(
                    "{} (group {}, mode {:04o})",
                    rel.display(),
                    n.st.st_gid,
                    n.st.st_mode & 0o7777
                )
            };
            match &policy {
                // As root, on the store: setgid, the group's, group rwx.
                Some(p) if policy::needed_at(&n.st, place, p).is_needed() => {
                    s.xet_blocked(describe());
                }
                Some(_) => {}
                // As a member, through the mount: try (never as root, which would create
                // in the store when the group is unknown).
                None if rel.components().count() <= XET_TRY_DEPTH && !sys::is_root() => {
                    if let Err(e) = can_create_in(n) {
                        let e = io::Error::from_raw_os_error(e);
                        s.xet_blocked(format!("{}: {e}", describe()));
                    }
                }
                None => {}
            }
        }
        // A secret in the store root (not in the private area): every member reads it.
        if policy.is_some()
            && place == Place::Loose
            && n.is_file()
            && layout::PRIVATE_NAMES.iter().any(|p| rel == Path::new(p))
        {
            s.exposed.push(format!(
                "{} of {}",
                rel.display(),
                sys::describe_user(n.st.st_uid)
            ));
        }
        let name = rel.file_name().map_or(&b""[..], |n| n.as_encoded_bytes());
        if n.is_file() && layout::is_stale_temporary(name, n.mtime(), now) {
            s.stale_count += 1;
            s.stale_bytes += n.size();
            if s.stale.len() < STALE_NAMED {
                s.stale.push((rel.display().to_string(), n.size()));
            }
        }
        if let Some(p) = &policy {
            let fix = policy::needed_at(&n.st, place, p);
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
    s.store_bytes = bytes.total;
    s.too_deep = walked.too_deep;
    if let Some(p) = walked.first_too_deep {
        s.first_too_deep = p.display().to_string();
    }
    s.add_links(&links);
    Ok(s)
}

/// The child side of [`in_child`]: runs one probe and prints its result.
pub fn main(args: &[String]) -> CmdResult {
    let out = match args {
        [kind, mnt] if kind == "answer" => match Probe::run(Path::new(mnt)) {
            Ok(p) => p.encode(),
            Err(e) => encode_err(&e),
        },
        [kind, mnt] if kind == "secrets" => secrets_probe(Path::new(mnt)),
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
                        .map_err(|_| Error::Usage(format!("bad gid {gid}")))?,
                    others: if others == Others::Read.as_str() {
                        Others::Read
                    } else {
                        Others::None
                    },
                }),
                _ => return Err(Error::Usage("bad probe arguments".into())),
            };
            match scan(Path::new(root), policy) {
                Ok(s) => s.encode(),
                Err(e) => encode_err(&e),
            }
        }
        _ => return Err(Error::Usage("bad probe arguments".into())),
    };
    print!("{out}");
    Ok(ExitCode::SUCCESS)
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
            store_bytes: 40960,
            stale: vec![("a b.incomplete".into(), 5)],
            stale_count: 12,
            stale_bytes: 60,
            stray: vec!["x (group 0, mode 0644)".into()],
            stray_count: 3,
            too_deep: 2,
            first_too_deep: "d/d d".into(),
            exposed: vec!["token of uid 7".into()],
            dangling: vec![
                Dangling {
                    repo: "models--o--m".into(),
                    revision: Some("c0ffee".into()),
                    rel: "hub/models--o--m/snapshots/c0ffee/a b.bin".into(),
                    missing: Missing::Payload,
                },
                Dangling {
                    repo: "models--o--m".into(),
                    revision: None,
                    rel: "hub/models--o--m/blobs/e".into(),
                    missing: Missing::Blob,
                },
            ],
            dangling_count: 4,
            redownload: vec![("models--o--m".into(), "c0ffee".into())],
            orphans: vec![Orphan {
                rel: "hub/blobs/ab/ab cd".into(),
                size: 9,
                prunable: true,
            }],
            orphan_count: 2,
            orphan_bytes: 99,
            orphan_prunable: 1,
            unlisted: vec![Unlisted {
                refs: "hub/blobs/ab/x y.refs".into(),
                line: "models--o--m/blobs/e f".into(),
            }],
            unlisted_count: 3,
            at_risk: 1,
            stale_lines: 5,
            xet_blocked: vec!["xet/logs (group 0, mode 0755)".into()],
            xet_blocked_count: 2,
        };
        let d = match Scan::decode(&s.encode()) {
            Some(Ok(d)) => d,
            other => panic!("decoded {:?}", other.map(|r| r.map(|s| s.entries))),
        };
        assert_eq!((d.entries, d.capped, d.stray_count), (9, true, 3));
        assert_eq!(d.store_bytes, 40960);
        assert_eq!(d.stale, s.stale);
        assert_eq!((d.stale_count, d.stale_bytes), (12, 60));
        assert_eq!((d.too_deep, d.first_too_deep.as_str()), (2, "d/d d"));
        assert_eq!(d.stray, s.stray);
        assert_eq!(d.exposed, s.exposed);
        assert_eq!((d.dangling_count, &d.dangling), (4, &s.dangling));
        assert_eq!(d.redownload, s.redownload);
        assert_eq!(d.orphans, s.orphans);
        let counts = (d.orphan_count, d.orphan_bytes, d.orphan_prunable);
        assert_eq!(counts, (2, 99, 1));
        assert_eq!((d.unlisted_count, &d.unlisted), (3, &s.unlisted));
        assert_eq!((d.at_risk, d.stale_lines), (1, 5));
        assert_eq!((d.xet_blocked_count, &d.xet_blocked), (2, &s.xet_blocked));
        assert!(
            Scan::decode("entries 3\n").is_none(),
            "a cut-off reply is no reply"
        );
        let cut = s.encode().replace("end\n", "");
        assert!(Scan::decode(&cut).is_none(), "a reply without its end");
    }
}
