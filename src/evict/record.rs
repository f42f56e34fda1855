//! The daemon's side of eviction: which store inodes were opened when (the access record)
//! and which are open now, kept in memory by the request threads and written to the
//! store's `.hfcachefs/` by one background thread.
//!
//! An open costs two map updates and no store write; reads and writes cost nothing. The
//! access record is appended in batches (at most every [`FLUSH_EVERY`], or sooner past
//! [`MAX_PENDING`] inodes) and compacted when it grows past [`COMPACT_AT`] bytes, so it
//! stays bounded however long the daemon runs; every [`FOLD_EVERY`] (and at start) the
//! records of daemons that stopped are folded into it, so they stay bounded across
//! restarts too.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;

use super::state::{self, ACCESS_DIR, OPEN_DIR, StateDir};
use crate::sys::SysResult;

/// How often pending accesses are appended to the record.
pub const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// Pending inodes past which the record is written at the next tick.
pub const MAX_PENDING: usize = 100_000;
/// How often the open-file record is rewritten though nothing changed, to show the daemon
/// is alive (well within [`state::OPEN_RECORD_TTL`]).
pub const REFRESH_OPEN_EVERY: Duration = Duration::from_secs(10);
/// How often the recorder thread looks for changes.
pub const TICK: Duration = Duration::from_millis(200);
/// How often the records of daemons that stopped are folded into this one's (besides at
/// start).
pub const FOLD_EVERY: Duration = Duration::from_secs(600);
/// Size of one daemon's access record past which it is rewritten with one line per inode.
const COMPACT_AT: u64 = 8 << 20;
/// Inodes a compacted record keeps (the most recently used).
const KEEP_AT_MOST: usize = 400_000;

/// What the request threads note.
#[derive(Default)]
pub struct Tracker {
    /// Inodes opened since the last flush, with the second of their last open.
    used: DashMap<u64, u64>,
    /// Inodes open now, with how many opens each.
    open: DashMap<u64, u32>,
    open_changed: AtomicBool,
    /// A download completed (a blob was published) since the flag was last taken.
    published: AtomicBool,
}

impl Tracker {
    /// An open (or a create: a download counts as use) of inode `ino`.
    pub fn opened(&self, ino: u64) {
        self.used.insert(ino, state::now_secs());
        *self.open.entry(ino).or_insert(0) += 1;
        self.open_changed.store(true, Ordering::Relaxed);
    }

    /// The release of one open of `ino`.
    pub fn closed(&self, ino: u64) {
        let gone = match self.open.get_mut(&ino) {
            Some(mut n) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => false,
        };
        if gone {
            self.open.remove_if(&ino, |_, n| *n == 0);
        }
        self.open_changed.store(true, Ordering::Relaxed);
    }

    /// A download finished: a file was renamed into a repo's `blobs/`.
    pub fn published(&self) {
        self.published.store(true, Ordering::Relaxed);
    }

    /// Whether a download finished since the last call.
    pub fn take_published(&self) -> bool {
        self.published.swap(false, Ordering::Relaxed)
    }

    fn take_used(&self) -> Vec<(u64, u64)> {
        let keys: Vec<u64> = self.used.iter().map(|e| *e.key()).collect();
        keys.into_iter()
            .filter_map(|k| self.used.remove(&k))
            .collect()
    }

    /// An open of inode `ino` noted as open only, not as a use (`record=off`: no access
    /// record, the open-file record still kept).
    pub fn held(&self, ino: u64) {
        *self.open.entry(ino).or_insert(0) += 1;
        self.open_changed.store(true, Ordering::Relaxed);
    }
}

/// Writes a daemon's records into its store.
pub struct Recorder {
    state: StateDir,
    access: OwnedFd,
    open: OwnedFd,
    /// The name of this daemon's records (open and access).
    name: String,
    last_flush: Instant,
    last_open_write: Instant,
    last_fold: Option<Instant>,
    /// The removal lists already passed on.
    removed_seen: HashSet<String>,
}

impl Recorder {
    /// The recorder of this daemon over the store root `root` (making `.hfcachefs/`).
    pub fn new(root: std::os::fd::BorrowedFd<'_>) -> SysResult<Recorder> {
        let state = StateDir::open(root, true)?.ok_or(libc::ENOENT)?;
        let access = state.subdir(ACCESS_DIR, true)?.ok_or(libc::ENOENT)?;
        let open = state.subdir(OPEN_DIR, true)?.ok_or(libc::ENOENT)?;
        let long_ago = Instant::now() - REFRESH_OPEN_EVERY;
        Ok(Recorder {
            state,
            access,
            open,
            name: state::instance_name(),
            last_flush: long_ago,
            last_open_write: long_ago,
            last_fold: None,
            removed_seen: HashSet::new(),
        })
    }

    /// One tick of the recorder thread: writes what is due, and hands each entry an
    /// eviction removed since the last tick (directory inode, name) to `removed`.
    pub fn tick(&mut self, t: &Tracker, removed: &mut dyn FnMut(u64, &OsStr)) -> SysResult<()> {
        for (dir, name) in self.state.removed_since(&mut self.removed_seen)? {
            removed(dir, &name);
        }
        let changed = t.open_changed.load(Ordering::Relaxed);
        if changed || self.last_open_write.elapsed() >= REFRESH_OPEN_EVERY {
            self.write_open(t)?;
        }
        // After the open record: this daemon's own is fresh by now.
        if self.last_fold.is_none_or(|f| f.elapsed() >= FOLD_EVERY) {
            self.last_fold = Some(Instant::now());
            self.state.fold_stopped(&self.name, SystemTime::now())?;
        }
        if self.last_flush.elapsed() >= FLUSH_EVERY || t.used.len() >= MAX_PENDING {
            self.flush(t)?;
        }
        Ok(())
    }

    fn write_open(&mut self, t: &Tracker) -> SysResult<()> {
        t.open_changed.store(false, Ordering::Relaxed);
        let text: String = t.open.iter().map(|e| format!("{}\n", e.key())).collect();
        self.last_open_write = Instant::now();
        state::write_file(self.open.as_fd(), &self.name, text.as_bytes())
    }

    /// Appends the pending accesses to this daemon's record (compacting it when big).
    pub fn flush(&mut self, t: &Tracker) -> SysResult<()> {
        self.last_flush = Instant::now();
        let used = t.take_used();
        if used.is_empty() {
            return Ok(());
        }
        let text: String = used.iter().map(|(i, s)| format!("{i} {s}\n")).collect();
        let size = state::append_file(self.access.as_fd(), &self.name, text.as_bytes())?;
        if size > COMPACT_AT {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites this daemon's record with one line per inode, the newest uses kept.
    fn compact(&self) -> SysResult<()> {
        let text = state::read_file(self.access.as_fd(), &self.name)?.unwrap_or_default();
        let mut all = HashMap::new();
        state::merge_access(&mut all, &text);
        let mut v: Vec<(u64, u64)> = all.into_iter().collect();
        v.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(KEEP_AT_MOST);
        let text: String = v.iter().map(|(i, s)| format!("{i} {s}\n")).collect();
        state::write_file(self.access.as_fd(), &self.name, text.as_bytes())
    }

    /// At unmount: the last accesses written, the open-file record removed.
    pub fn finish(&mut self, t: &Tracker) -> SysResult<()> {
        self.flush(t)?;
        let name = crate::sys::Name::new(std::ffi::OsStr::new(&self.name))?;
        match crate::sys::unlink_at(self.open.as_fd(), &name, false) {
            Ok(()) | Err(libc::ENOENT) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub fn state(&self) -> &StateDir {
        &self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_are_recorded_and_flushed_in_batches() {
        let t = Tracker::default();
        t.opened(5);
        t.opened(5);
        t.opened(6);
        t.closed(5);
        t.closed(6);
        assert_eq!(t.open.len(), 1, "5 is still open once");
        let d = std::env::temp_dir().join(format!("hfc-record-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let c = std::ffi::CString::new(d.as_os_str().as_encoded_bytes()).unwrap();
        let root = crate::sys::open_root(&c).unwrap();
        let mut r = Recorder::new(root.as_fd()).unwrap();
        let mut gone = Vec::new();
        r.state()
            .publish_removed(&[(3, "x".into())], SystemTime::now())
            .unwrap();
        r.tick(&t, &mut |d, n| gone.push((d, n.to_owned())))
            .unwrap();
        assert_eq!(gone, [(3, std::ffi::OsString::from("x"))]);
        let s = r.state();
        let access = s.access().unwrap();
        assert_eq!(
            access.keys().copied().collect::<HashSet<_>>(),
            [5, 6].into()
        );
        assert_eq!(s.open_inodes(SystemTime::now()).unwrap(), [5].into());
        assert!(t.used.is_empty(), "flushed");
        r.compact().unwrap();
        assert_eq!(s.access().unwrap(), access);
        t.closed(5);
        r.finish(&t).unwrap();
        let s = r.state();
        assert!(s.open_inodes(SystemTime::now()).unwrap().is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
