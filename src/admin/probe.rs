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
use crate::cache::walk::{self, Node, Visit};
use crate::error::{CmdResult, Error};
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
#[derive(Default)]
pub struct Scan {
    pub entries: u64,
    pub capped: bool,
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
    let walked = walk::walk(&node, &mut |rel, n, place| {
        s.entries += 1;
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
    s.too_deep = walked.too_deep;
    if let Some(p) = walked.first_too_deep {
        s.first_too_deep = p.display().to_string();
    }
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
            stale: vec![("a b.incomplete".into(), 5)],
            stale_count: 12,
            stale_bytes: 60,
            stray: vec!["x (group 0, mode 0644)".into()],
            stray_count: 3,
            too_deep: 2,
            first_too_deep: "d/d d".into(),
            exposed: vec!["token of uid 7".into()],
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
        assert_eq!(d.exposed, s.exposed);
        assert!(
            Scan::decode("entries 3\n").is_none(),
            "a cut-off reply is no reply"
        );
        let cut = s.encode().replace("end\n", "");
        assert!(Scan::decode(&cut).is_none(), "a reply without its end");
    }
}
