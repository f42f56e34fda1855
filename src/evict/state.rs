//! hfcachefs's own state in the store, under `.hfcachefs/` (hidden by the mount, root's
//! and 0700): what eviction needs to know that the cache itself does not say.
//!
//! - `open/<host>-<pid>`: the inodes a daemon has open now, one per line, rewritten when
//!   they change and refreshed every few seconds; a record not refreshed for
//!   [`OPEN_RECORD_TTL`] belongs to a daemon that stopped and is ignored.
//! - `access/<host>-<pid>`: the access record of the same daemon, lines `<inode> <unix
//!   seconds>` appended in batches; the newest time of an inode wins. One file per daemon
//!   ([`instance_name`]), so no file has two writers: two mounts of one store on a host, or
//!   hosts of one name, never append to the same file nor lose lines to another's
//!   compaction (cluster filesystems give no atomic read-and-replace). The record of a
//!   daemon that stopped (no fresh open record) is folded into a running daemon's and
//!   removed ([`StateDir::fold_stopped`]), so the records stay bounded across restarts.
//! - `pins`: `repo` or `repo@revision`, one per line (`hfcachefs pin`).
//! - `trash/`: what an eviction took out of the cache and has not deleted yet.
//! - `last-eviction`: one line about the last eviction, for `stats` and `doctor`.
//! - `removed/<host>-<pid>-<time>`: what an eviction removed, as lines `<inode of the
//!   directory> <name in hex>`, for every daemon to drop from its kernel's caches; kept
//!   for [`OPEN_RECORD_TTL`].
//! - `evict.lock`: flock'ed by whoever evicts, so that two never run at once.
//!
//! Everything is an `*at()` call on handles opened without following symlinks.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cache::layout::STATE_DIR;
use crate::claim;
use crate::sys::{self, Name, SysResult};

pub const ACCESS_DIR: &str = "access";
pub const OPEN_DIR: &str = "open";
pub const PINS: &str = "pins";
pub const TRASH_DIR: &str = "trash";
pub const LAST_EVICTION: &str = "last-eviction";
pub const REMOVED_DIR: &str = "removed";
const LOCK: &str = "evict.lock";

/// How long an open-file record counts without being refreshed.
pub const OPEN_RECORD_TTL: Duration = Duration::from_secs(60);

/// Seconds since the epoch, now.
pub fn now_secs() -> u64 {
    secs(SystemTime::now())
}

pub fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn name(s: &str) -> SysResult<Name> {
    Name::new(OsStr::new(s))
}

/// `.hfcachefs/` of one store.
pub struct StateDir {
    fd: OwnedFd,
}

/// Held while evicting; dropping it unlocks.
pub struct EvictLock {
    _fd: OwnedFd,
}

impl StateDir {
    /// Opens the state directory in the store root `root` (made when `make`).
    pub fn open(root: BorrowedFd<'_>, make: bool) -> SysResult<Option<StateDir>> {
        Ok(claim::root_only_dir(root, STATE_DIR, make)?.map(|fd| StateDir { fd }))
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The subdirectory `n` (made when `make`).
    pub fn subdir(&self, n: &str, make: bool) -> SysResult<Option<OwnedFd>> {
        claim::root_only_dir(self.fd.as_fd(), n, make)
    }

    /// Takes the eviction lock; `None` if another eviction holds it.
    pub fn try_lock(&self) -> SysResult<Option<EvictLock>> {
        let fd = sys::open_at(
            self.fd.as_fd(),
            &name(LOCK)?,
            libc::O_RDWR | libc::O_CREAT,
            0o600,
        )?;
        match sys::flock(fd.as_fd(), libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => Ok(Some(EvictLock { _fd: fd })),
            Err(libc::EWOULDBLOCK) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The pins, sorted.
    pub fn pins(&self) -> SysResult<BTreeSet<String>> {
        let text = read_file(self.fd.as_fd(), PINS)?.unwrap_or_default();
        Ok(lines(&text).map(str::to_owned).collect())
    }

    pub fn set_pins(&self, pins: &BTreeSet<String>) -> SysResult<()> {
        let text: String = pins.iter().map(|p| format!("{p}\n")).collect();
        write_file(self.fd.as_fd(), PINS, text.as_bytes())
    }

    /// The access record of every host merged: inode -> last use.
    pub fn access(&self) -> SysResult<HashMap<u64, u64>> {
        let mut all = HashMap::new();
        let Some(dir) = self.subdir(ACCESS_DIR, false)? else {
            return Ok(all);
        };
        for n in list(dir.as_fd())? {
            if let Some(text) = read_file(dir.as_fd(), &n)? {
                merge_access(&mut all, &text);
            }
        }
        Ok(all)
    }

    /// The records in `dir`, each with whether it is fresh at `now` (written within
    /// [`OPEN_RECORD_TTL`]; for an open record: its daemon is running).
    fn records_by_age(
        &self,
        dir: BorrowedFd<'_>,
        now: SystemTime,
    ) -> SysResult<Vec<(String, bool)>> {
        let mut out = Vec::new();
        for n in list(dir)? {
            let Ok(st) = sys::stat_at(dir, &name(&n)?) else {
                continue;
            };
            let written = sys::system_time(st.st_mtime, st.st_mtime_nsec);
            let fresh = !now
                .duration_since(written)
                .is_ok_and(|age| age > OPEN_RECORD_TTL);
            out.push((n, fresh));
        }
        Ok(out)
    }

    /// The inodes open through any mount whose record is fresh at `now`.
    pub fn open_inodes(&self, now: SystemTime) -> SysResult<HashSet<u64>> {
        let mut open = HashSet::new();
        let Some(dir) = self.subdir(OPEN_DIR, false)? else {
            return Ok(open);
        };
        for (n, fresh) in self.records_by_age(dir.as_fd(), now)? {
            if !fresh {
                continue;
            }
            if let Some(text) = read_file(dir.as_fd(), &n)? {
                open.extend(lines(&text).filter_map(|l| l.parse::<u64>().ok()));
            }
        }
        Ok(open)
    }

    /// Folds the access records of daemons that stopped (no open record of theirs fresh at
    /// `now`; records from before per-daemon names have none) into the record `own`, then
    /// removes them and the stale open records. Appended before removed: a reader sees
    /// every line at all times, some twice. Returns how many records were folded.
    pub fn fold_stopped(&self, own: &str, now: SystemTime) -> SysResult<usize> {
        let (Some(access), Some(open)) = (
            self.subdir(ACCESS_DIR, false)?,
            self.subdir(OPEN_DIR, false)?,
        ) else {
            return Ok(0);
        };
        // Access records first: a daemon writes its open record before its access record,
        // so one listed here and running has a fresh open record below.
        let names = list(access.as_fd())?;
        let records = self.records_by_age(open.as_fd(), now)?;
        let running: HashSet<&str> = records
            .iter()
            .filter(|(_, fresh)| *fresh)
            .map(|(n, _)| n.as_str())
            .collect();
        let mut merged = HashMap::new();
        let mut folded = Vec::new();
        for n in names {
            if n == own || running.contains(n.as_str()) {
                continue;
            }
            if let Some(text) = read_file(access.as_fd(), &n)? {
                merge_access(&mut merged, &text);
            }
            folded.push(n);
        }
        if !merged.is_empty() {
            let text: String = merged.iter().map(|(i, s)| format!("{i} {s}\n")).collect();
            append_file(access.as_fd(), own, text.as_bytes())?;
        }
        let stale = records.iter().filter(|(n, fresh)| !fresh && n != own);
        for (dir, n) in folded
            .iter()
            .map(|n| (&access, n))
            .chain(stale.map(|(n, _)| (&open, n)))
        {
            match sys::unlink_at(dir.as_fd(), &name(n)?, false) {
                Ok(()) | Err(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(folded.len())
    }

    /// Publishes the entries an eviction removed (`(directory inode, name)`), and drops
    /// lists older than [`OPEN_RECORD_TTL`].
    pub fn publish_removed(&self, gone: &[(u64, OsString)], now: SystemTime) -> SysResult<()> {
        let dir = self.subdir(REMOVED_DIR, true)?.ok_or(libc::ENOENT)?;
        for (n, fresh) in self.records_by_age(dir.as_fd(), now)? {
            if !fresh {
                let _ = sys::unlink_at(dir.as_fd(), &name(&n)?, false);
            }
        }
        if gone.is_empty() {
            return Ok(());
        }
        let text: String = gone
            .iter()
            .map(|(ino, n)| {
                let hex: String = n.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
                format!("{ino} {hex}\n")
            })
            .collect();
        let nanos = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let file = format!("{}-{}-{nanos}", host_name(), std::process::id());
        write_file(dir.as_fd(), &file, text.as_bytes())
    }

    /// The removal lists not in `seen` (which they are added to), entries decoded.
    pub fn removed_since(&self, seen: &mut HashSet<String>) -> SysResult<Vec<(u64, OsString)>> {
        let mut out = Vec::new();
        let Some(dir) = self.subdir(REMOVED_DIR, false)? else {
            return Ok(out);
        };
        let names = list(dir.as_fd())?;
        seen.retain(|n| names.contains(n));
        for n in names {
            if seen.contains(&n) {
                continue;
            }
            let text = read_file(dir.as_fd(), &n)?.unwrap_or_default();
            seen.insert(n);
            for l in lines(&text) {
                let Some((ino, hex)) = l.split_once(' ') else {
                    continue;
                };
                let bytes: Option<Vec<u8>> = (0..hex.len() / 2)
                    .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
                    .collect();
                if let (Ok(ino), Some(b)) = (ino.parse(), bytes) {
                    out.push((ino, OsString::from(OsStr::from_bytes(&b))));
                }
            }
        }
        Ok(out)
    }

    pub fn last_eviction(&self) -> SysResult<Option<String>> {
        Ok(read_file(self.fd.as_fd(), LAST_EVICTION)?.map(|t| t.trim().to_owned()))
    }

    pub fn set_last_eviction(&self, line: &str) -> SysResult<()> {
        write_file(
            self.fd.as_fd(),
            LAST_EVICTION,
            format!("{line}\n").as_bytes(),
        )
    }
}

/// Merges access lines `<inode> <secs>` into `into`, the newest time winning.
pub fn merge_access(into: &mut HashMap<u64, u64>, text: &str) {
    for l in lines(text) {
        let mut f = l.split_ascii_whitespace();
        if let (Some(Ok(ino)), Some(Ok(t))) = (f.next().map(str::parse), f.next().map(str::parse)) {
            let e = into.entry(ino).or_insert(t);
            *e = (*e).max(t);
        }
    }
}

/// Non-empty lines without surrounding space.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(str::trim).filter(|l| !l.is_empty())
}

/// The names in a directory (not `.`, `..` or temporary files of [`write_file`]).
pub fn list(dir: BorrowedFd<'_>) -> SysResult<Vec<String>> {
    let mut stream = sys::DirStream::new(sys::open_dir(dir)?)?;
    let mut names = Vec::new();
    while let Some(e) = stream.next_entry()? {
        if !e.name.starts_with(b".") {
            names.push(String::from_utf8_lossy(&e.name).into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// The contents of the regular file `n` in `dir`, `None` if missing.
pub fn read_file(dir: BorrowedFd<'_>, n: &str) -> SysResult<Option<String>> {
    let fd = match sys::open_at(dir, &name(n)?, libc::O_RDONLY | libc::O_NONBLOCK, 0) {
        Ok(fd) => fd,
        Err(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    let st = sys::fstat(fd.as_fd())?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(libc::EIO);
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = sys::pread(fd.as_fd(), &mut buf, out.len() as u64)?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    Ok(Some(String::from_utf8_lossy(&out).into_owned()))
}

/// Replaces the file `n` in `dir` with `data` at once (a temporary name, then rename):
/// a reader sees the old contents or the new, never part.
pub fn write_file(dir: BorrowedFd<'_>, n: &str, data: &[u8]) -> SysResult<()> {
    let tmp = name(&format!(".{n}.tmp-{}", std::process::id()))?;
    let fd = sys::open_at(
        dir,
        &tmp,
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        0o600,
    )?;
    let written = write_all(fd.as_fd(), data, 0).and_then(|()| sys::fsync(fd.as_fd(), true));
    drop(fd);
    match written.and_then(|()| sys::rename_at(dir, &tmp, dir, &name(n)?, 0)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = sys::unlink_at(dir, &tmp, false);
            Err(e)
        }
    }
}

/// Appends `data` to the file `n` in `dir` (made if missing) in one write.
pub fn append_file(dir: BorrowedFd<'_>, n: &str, data: &[u8]) -> SysResult<u64> {
    let fd = sys::open_at(
        dir,
        &name(n)?,
        libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND,
        0o600,
    )?;
    // With O_APPEND, Linux writes at the end whatever the offset.
    write_all(fd.as_fd(), data, 0)?;
    Ok(sys::fstat(fd.as_fd())?.st_size as u64)
}

fn write_all(fd: BorrowedFd<'_>, data: &[u8], offset: u64) -> SysResult<()> {
    let mut done = 0;
    while done < data.len() {
        done += sys::pwrite(fd, &data[done..], offset + done as u64)?;
    }
    Ok(())
}

/// Removes the entry `n` of `dir` and everything below it, never following a symlink.
pub fn remove_tree(dir: BorrowedFd<'_>, n: &OsStr) -> SysResult<()> {
    let nm = Name::new(n)?;
    let st = match sys::stat_at(dir, &nm) {
        Ok(st) => st,
        Err(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        let sub = sys::open_path(dir, &nm)?;
        // A directory handle of its own: the tree is at most as deep as a cache.
        let mut stream = sys::DirStream::new(sys::open_dir(sub.as_fd())?)?;
        let mut names = Vec::new();
        while let Some(e) = stream.next_entry()? {
            if e.name != b"." && e.name != b".." {
                names.push(e.name);
            }
        }
        for c in names {
            remove_tree(sub.as_fd(), OsStr::from_bytes(&c))?;
        }
    }
    match sys::unlink_at(dir, &nm, st.st_mode & libc::S_IFMT == libc::S_IFDIR) {
        Ok(()) | Err(libc::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The name of this daemon's records, `<host>-<pid>`: its open record and its access
/// record.
pub fn instance_name() -> String {
    format!("{}-{}", host_name(), std::process::id())
}

/// This host's name, for naming its records.
pub fn host_name() -> String {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let h: String = h
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if h.is_empty() || h.starts_with('.') {
        format!("host{h}")
    } else {
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_lines_merge_newest_first() {
        let mut m = HashMap::new();
        merge_access(&mut m, "1 100\n2 50\n\n1 90\ngarbage\n3\n");
        merge_access(&mut m, "2 70\n");
        assert_eq!(m, HashMap::from([(1, 100), (2, 70)]));
    }

    #[test]
    fn records_of_stopped_daemons_are_folded() {
        let d = std::env::temp_dir().join(format!("hfc-fold-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let c = std::ffi::CString::new(d.as_os_str().as_bytes()).unwrap();
        let root = sys::open_root(&c).unwrap();
        let s = StateDir::open(root.as_fd(), true).unwrap().unwrap();
        let access = s.subdir(ACCESS_DIR, true).unwrap().unwrap();
        let open = s.subdir(OPEN_DIR, true).unwrap().unwrap();
        // h-1: this daemon; h-2: running; h-3: killed (its open record stale); h: a
        // record from before per-daemon names.
        for (n, text) in [
            ("h-1", "1 10\n"),
            ("h-2", "2 20\n"),
            ("h-3", "3 30\n1 40\n"),
            ("h", "4 5\n"),
        ] {
            append_file(access.as_fd(), n, text.as_bytes()).unwrap();
        }
        for n in ["h-1", "h-2", "h-3"] {
            write_file(open.as_fd(), n, b"").unwrap();
        }
        let before = s.access().unwrap();
        let old = SystemTime::now() - OPEN_RECORD_TTL - Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(d.join(".hfcachefs/open/h-3"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(s.fold_stopped("h-1", SystemTime::now()).unwrap(), 2);
        assert_eq!(list(access.as_fd()).unwrap(), ["h-1", "h-2"]);
        assert_eq!(
            list(open.as_fd()).unwrap(),
            ["h-1", "h-2"],
            "stale record gone"
        );
        assert_eq!(s.access().unwrap(), before, "no access lost");
        assert_eq!(s.fold_stopped("h-1", SystemTime::now()).unwrap(), 0);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn files_pins_and_trees() {
        let d = std::env::temp_dir().join(format!("hfc-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let c = std::ffi::CString::new(d.as_os_str().as_bytes()).unwrap();
        let root = sys::open_root(&c).unwrap();
        assert!(StateDir::open(root.as_fd(), false).unwrap().is_none());
        let s = StateDir::open(root.as_fd(), true).unwrap().unwrap();
        let pins = BTreeSet::from(["models--a".to_owned(), "models--b@main".to_owned()]);
        s.set_pins(&pins).unwrap();
        assert_eq!(s.pins().unwrap(), pins);
        let access = s.subdir(ACCESS_DIR, true).unwrap().unwrap();
        append_file(access.as_fd(), "h1", b"5 10\n").unwrap();
        append_file(access.as_fd(), "h1", b"5 20\n").unwrap();
        append_file(access.as_fd(), "h2", b"5 15\n6 1\n").unwrap();
        assert_eq!(s.access().unwrap(), HashMap::from([(5, 20), (6, 1)]));
        let open = s.subdir(OPEN_DIR, true).unwrap().unwrap();
        write_file(open.as_fd(), "h1-1", b"7\n8\n").unwrap();
        let now = SystemTime::now();
        assert_eq!(s.open_inodes(now).unwrap(), HashSet::from([7, 8]));
        let later = now + OPEN_RECORD_TTL + Duration::from_secs(5);
        assert!(s.open_inodes(later).unwrap().is_empty(), "expired");
        let mut seen = HashSet::new();
        let gone = [(7, OsString::from("a b\n")), (8, OsString::from("snap"))];
        s.publish_removed(&gone, now).unwrap();
        assert_eq!(s.removed_since(&mut seen).unwrap(), gone);
        assert!(
            s.removed_since(&mut seen).unwrap().is_empty(),
            "each list once"
        );
        let held = s.try_lock().unwrap().unwrap();
        assert!(s.try_lock().unwrap().is_none());
        drop(held);
        assert!(s.try_lock().unwrap().is_some());
        std::fs::create_dir_all(d.join(".hfcachefs/trash/x/y")).unwrap();
        std::os::unix::fs::symlink("/etc", d.join(".hfcachefs/trash/x/y/l")).unwrap();
        remove_tree(s.fd(), OsStr::new(TRASH_DIR)).unwrap();
        assert!(!d.join(".hfcachefs/trash").exists() && Path::new("/etc").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    use std::path::Path;
}
