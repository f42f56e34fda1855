//! The inode table: kernel node ids mapped to O_PATH handles on store inodes.
//!
//! As in virtiofsd and libfuse's passthrough_hp, an inode is known by its (st_dev, st_ino)
//! and reached through an O_PATH handle, so that the same store inode always gets the same
//! node id. Node ids are never reused, so generation 0 is always right.
//!
//! The kernel may hold hundreds of thousands of inodes (a big cache walked once), more than
//! a process may keep descriptors. Where the store's filesystem has file handles, an
//! inode's descriptor is therefore only a cache: past a budget, descriptors of inodes not
//! used lately are closed (clock sweep) and reopened by file handle when next needed. An
//! inode without a file handle stays pinned, which also keeps its inode number from being
//! reused; for the others the file handle tells a reused number from the old inode.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use parking_lot::Mutex;

use crate::cache::layout::Place;
use crate::sys::{self, FileHandle, SysResult};

/// The kernel's node id of the mount root.
pub const ROOT_ID: u64 = 1;

/// What all inodes of a table share: the store root to reopen file handles from (opened
/// for reading: open_by_handle_at refuses an O_PATH descriptor there; `None` if root may
/// not read it, and then every inode stays pinned), and the count of descriptors held.
struct Shared {
    mount: Option<OwnedFd>,
    open: AtomicUsize,
}

/// One store inode the kernel knows about.
pub struct Inode {
    pub id: u64,
    /// File type bits (`S_IFMT` part of `st_mode`): fixed for an inode's life.
    pub kind: u32,
    /// Where the inode is in the cache layout (`Place` as u8): decides its cache timeouts,
    /// and whether it is reported as a private copy. Set where first found; a rename onto
    /// a private name changes it.
    place: AtomicU8,
    key: (u64, u64),
    lookups: AtomicU64,
    /// `None`: the filesystem has no file handles, so the descriptor is never closed.
    file_handle: Option<FileHandle>,
    cached: Mutex<Option<Arc<OwnedFd>>>,
    /// Set on use, cleared by the sweep: a second sweep closes what nobody used between.
    used: AtomicBool,
    shared: Arc<Shared>,
}

impl Inode {
    /// The O_PATH handle every store operation on this inode starts from (reopened by file
    /// handle if it was closed to stay within the descriptor budget).
    pub fn fd(&self) -> SysResult<Arc<OwnedFd>> {
        self.used.store(true, Ordering::Relaxed);
        let mut cached = self.cached.lock();
        if let Some(fd) = &*cached {
            return Ok(Arc::clone(fd));
        }
        let (Some(fh), Some(mount)) = (&self.file_handle, &self.shared.mount) else {
            return Err(libc::ESTALE);
        };
        let fd = Arc::new(reopen_by_handle(mount.as_fd(), fh)?);
        self.shared.open.fetch_add(1, Ordering::Relaxed);
        *cached = Some(Arc::clone(&fd));
        Ok(fd)
    }

    /// Whether the inode's descriptor is open now (so its inode number cannot be reused).
    fn pinned(&self) -> bool {
        self.cached.lock().is_some()
    }

    /// Closes the descriptor if it can be reopened; true if it did.
    fn evict(&self) -> bool {
        if self.file_handle.is_none() || self.id == ROOT_ID {
            return false;
        }
        let closed = self.cached.lock().take().is_some();
        if closed {
            self.shared.open.fetch_sub(1, Ordering::Relaxed);
        }
        closed
    }

    /// The store inode number (what eviction's records name a file by).
    pub fn ino(&self) -> u64 {
        self.key.1
    }

    pub fn place(&self) -> Place {
        Place::ALL[usize::from(self.place.load(Ordering::Relaxed))]
    }

    pub fn set_place(&self, place: Place) {
        self.place.store(place as u8, Ordering::Relaxed);
    }

    pub fn is_dir(&self) -> bool {
        self.kind == libc::S_IFDIR
    }

    pub fn is_symlink(&self) -> bool {
        self.kind == libc::S_IFLNK
    }

    pub fn is_regular(&self) -> bool {
        self.kind == libc::S_IFREG
    }
}

impl Drop for Inode {
    fn drop(&mut self) {
        if self.cached.get_mut().is_some() {
            self.shared.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Reopens an evicted inode. While the filesystem is creating a new inode under the same
/// number, the kernel answers ENOMEM (`iget_locked` finds it `I_CREATING`); that passes in
/// microseconds, after which the handle resolves, or fails with ESTALE, as it should.
fn reopen_by_handle(mount: std::os::fd::BorrowedFd<'_>, fh: &FileHandle) -> SysResult<OwnedFd> {
    let mut tries = 0;
    loop {
        match sys::open_file_handle(mount, fh) {
            Err(libc::ENOMEM) if tries < 100 => {
                tries += 1;
                std::thread::yield_now();
            }
            other => return other,
        }
    }
}

/// All inodes the kernel holds references to.
pub struct InodeTable {
    by_id: DashMap<u64, Arc<Inode>>,
    by_key: DashMap<(u64, u64), u64>,
    next_id: AtomicU64,
    shared: Arc<Shared>,
    /// How many inode descriptors to keep open before closing unused ones.
    budget: usize,
    sweeping: Mutex<()>,
}

impl InodeTable {
    /// A table holding the store root as node [`ROOT_ID`], never forgotten, keeping at
    /// most about `budget` inode descriptors open.
    pub fn new(root: OwnedFd, st: &libc::stat, budget: usize) -> InodeTable {
        let shared = Arc::new(Shared {
            mount: sys::open_dir(root.as_fd()).ok(),
            open: AtomicUsize::new(0),
        });
        let table = InodeTable {
            by_id: DashMap::new(),
            by_key: DashMap::new(),
            next_id: AtomicU64::new(ROOT_ID + 1),
            shared,
            budget: budget.max(64),
            sweeping: Mutex::new(()),
        };
        let root_inode = table.new_inode(ROOT_ID, root, st, Place::Root);
        root_inode.lookups.store(1 << 62, Ordering::Relaxed);
        table.by_key.insert(root_inode.key, ROOT_ID);
        table.by_id.insert(ROOT_ID, root_inode);
        table
    }

    fn new_inode(&self, id: u64, handle: OwnedFd, st: &libc::stat, place: Place) -> Arc<Inode> {
        self.shared.open.fetch_add(1, Ordering::Relaxed);
        Arc::new(Inode {
            id,
            kind: st.st_mode & libc::S_IFMT,
            place: AtomicU8::new(place as u8),
            key: (st.st_dev, st.st_ino),
            lookups: AtomicU64::new(1),
            file_handle: self
                .shared
                .mount
                .as_ref()
                .and_then(|_| sys::file_handle(handle.as_fd()).ok()),
            cached: Mutex::new(Some(Arc::new(handle))),
            used: AtomicBool::new(true),
            shared: Arc::clone(&self.shared),
        })
    }

    pub fn get(&self, id: u64) -> Option<Arc<Inode>> {
        self.by_id.get(&id).map(|i| Arc::clone(&i))
    }

    /// Records one kernel lookup of the store inode behind `handle` (stat'ed as `st`, found
    /// at `place`), reusing the existing node if there is one.
    pub fn lookup(&self, handle: OwnedFd, st: &libc::stat, place: Place) -> Arc<Inode> {
        let key = (st.st_dev, st.st_ino);
        // The by_key shard lock orders this against `forget` of the same key.
        let inode = match self.by_key.entry(key) {
            Entry::Occupied(mut e) => {
                let known = self.get(*e.get()).expect("by_key and by_id agree");
                if known.pinned() || Self::same_inode(&known, &handle) {
                    known.lookups.fetch_add(1, Ordering::Relaxed);
                    known
                } else {
                    // The number was reused by a new inode: the old node lives on (stale)
                    // until the kernel forgets it.
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    let inode = self.new_inode(id, handle, st, place);
                    self.by_id.insert(id, Arc::clone(&inode));
                    e.insert(id);
                    inode
                }
            }
            Entry::Vacant(e) => {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let inode = self.new_inode(id, handle, st, place);
                self.by_id.insert(id, Arc::clone(&inode));
                e.insert(id);
                inode
            }
        };
        self.trim();
        inode
    }

    fn same_inode(known: &Inode, handle: &OwnedFd) -> bool {
        known.file_handle.is_some() && sys::file_handle(handle.as_fd()).ok() == known.file_handle
    }

    /// Records one kernel lookup of the store inode `st` describes if it is in the table
    /// with its descriptor open: a lookup then needs no descriptor of its own. (An evicted
    /// inode's number may have been reused: that case goes through [`lookup`].)
    pub fn lookup_known(&self, st: &libc::stat) -> Option<Arc<Inode>> {
        // Under the by_key shard lock, like `lookup` and `forget`.
        let id = self.by_key.get_mut(&(st.st_dev, st.st_ino))?;
        let inode = self.get(*id)?;
        if !inode.pinned() {
            return None;
        }
        inode.used.store(true, Ordering::Relaxed);
        inode.lookups.fetch_add(1, Ordering::Relaxed);
        Some(inode)
    }

    /// The node of the store inode `st` describes, if the kernel holds one (no reference
    /// is counted).
    pub fn find(&self, st: &libc::stat) -> Option<Arc<Inode>> {
        let id = *self.by_key.get(&(st.st_dev, st.st_ino))?;
        self.get(id)
    }

    /// The node id of the store inode numbered `ino` (on the root's filesystem), if the
    /// kernel holds one.
    pub fn find_ino(&self, ino: u64) -> Option<u64> {
        let dev = self.get(ROOT_ID)?.key.0;
        self.by_key.get(&(dev, ino)).map(|id| *id)
    }

    /// Drops `n` kernel references; the inode (and its descriptor) goes when none are left.
    pub fn forget(&self, id: u64, n: u64) {
        let Some(inode) = self.get(id) else { return };
        match self.by_key.entry(inode.key) {
            Entry::Occupied(e) if *e.get() == id => {
                if inode.lookups.fetch_sub(n, Ordering::Relaxed) <= n {
                    e.remove();
                    self.by_id.remove(&id);
                }
            }
            // A node whose number a newer inode took over.
            _ => {
                if inode.lookups.fetch_sub(n, Ordering::Relaxed) <= n {
                    self.by_id.remove(&id);
                }
            }
        }
    }

    /// Closes descriptors of inodes not used since the last sweep while more than the
    /// budget are open. One sweep at a time; others go on.
    pub fn trim(&self) {
        if self.shared.open.load(Ordering::Relaxed) <= self.budget {
            return;
        }
        let Some(_sweep) = self.sweeping.try_lock() else {
            return;
        };
        let target = self.budget * 3 / 4;
        for _pass in 0..2 {
            for inode in self.by_id.iter() {
                if self.shared.open.load(Ordering::Relaxed) <= target {
                    return;
                }
                if !inode.used.swap(false, Ordering::Relaxed) {
                    inode.evict();
                }
            }
        }
    }

    /// Number of inodes held (root included).
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Number of inode descriptors open now.
    pub fn open_descriptors(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("hfc-inodes-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn table(dir: &std::path::Path, budget: usize) -> InodeTable {
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        let root = sys::open_root(&c).unwrap();
        let st = sys::fstat(root.as_fd()).unwrap();
        InodeTable::new(root, &st, budget)
    }

    fn look(t: &InodeTable, name: &str) -> Arc<Inode> {
        let root = t.get(ROOT_ID).unwrap();
        let name = sys::Name::new(OsStr::new(name)).unwrap();
        let h = sys::open_path(root.fd().unwrap().as_fd(), &name).unwrap();
        let st = sys::fstat(h.as_fd()).unwrap();
        t.lookup(h, &st, Place::Other)
    }

    #[test]
    fn descriptors_stay_within_budget_and_reopen_by_handle() {
        let d = temp_dir("budget");
        for i in 0..400 {
            std::fs::write(d.join(format!("f{i}")), format!("{i}")).unwrap();
        }
        let t = table(&d, 64);
        let inodes: Vec<_> = (0..400).map(|i| look(&t, &format!("f{i}"))).collect();
        assert!(
            t.open_descriptors() <= 64 + 1,
            "{} open",
            t.open_descriptors()
        );
        assert_eq!(t.len(), 401);
        // Every inode still reaches its own file.
        for (i, inode) in inodes.iter().enumerate() {
            let fd = sys::reopen(inode.fd().unwrap().as_fd(), libc::O_RDONLY).unwrap();
            let mut buf = [0u8; 8];
            let n = sys::pread(fd.as_fd(), &mut buf, 0).unwrap();
            assert_eq!(&buf[..n], i.to_string().as_bytes());
        }
        // A second lookup of a known name keeps its node id.
        assert_eq!(look(&t, "f7").id, inodes[7].id);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_reused_inode_number_gets_a_new_node() {
        let d = temp_dir("reuse");
        std::fs::write(d.join("old"), "old").unwrap();
        std::fs::write(d.join("new"), "new").unwrap();
        let t = table(&d, 64);
        let old = look(&t, "old");
        assert!(old.evict());
        std::fs::remove_file(d.join("old")).unwrap();
        // "new" presented under old's inode number, as when the filesystem reuses it.
        let root = t.get(ROOT_ID).unwrap();
        let name = sys::Name::new(OsStr::new("new")).unwrap();
        let h = sys::open_path(root.fd().unwrap().as_fd(), &name).unwrap();
        let mut st = sys::fstat(h.as_fd()).unwrap();
        (st.st_dev, st.st_ino) = old.key;
        let new = t.lookup(h, &st, Place::Other);
        assert_ne!(new.id, old.id, "a new file must not take the old node");
        assert_eq!(old.fd().err(), Some(libc::ESTALE));
        // Forgetting the stale node leaves the new one in place.
        t.forget(old.id, 1);
        assert!(t.get(old.id).is_none());
        assert_eq!(t.lookup_known(&st).map(|i| i.id), Some(new.id));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
