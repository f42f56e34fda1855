//! The inode table: kernel node ids mapped to O_PATH handles on store inodes.
//!
//! As in virtiofsd and libfuse's passthrough_hp, an inode is known by its (st_dev, st_ino)
//! and pinned by an O_PATH handle for as long as the kernel holds a lookup reference, so
//! that the same store inode always gets the same node id and its inode number cannot be
//! reused underneath us. Node ids are never reused, so generation 0 is always right.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

/// The kernel's node id of the mount root.
pub const ROOT_ID: u64 = 1;

/// One store inode the kernel knows about.
#[derive(Debug)]
pub struct Inode {
    pub id: u64,
    handle: OwnedFd,
    /// File type bits (`S_IFMT` part of `st_mode`): fixed for an inode's life.
    pub kind: u32,
    key: (u64, u64),
    lookups: AtomicU64,
}

impl Inode {
    /// The O_PATH handle every store operation on this inode starts from.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.handle.as_fd()
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

/// All inodes the kernel holds references to.
pub struct InodeTable {
    by_id: DashMap<u64, Arc<Inode>>,
    by_key: DashMap<(u64, u64), u64>,
    next_id: AtomicU64,
}

impl InodeTable {
    /// A table holding the store root as node [`ROOT_ID`], never forgotten.
    pub fn new(root: OwnedFd, st: &libc::stat) -> InodeTable {
        let key = (st.st_dev, st.st_ino);
        let root = Arc::new(Inode {
            id: ROOT_ID,
            handle: root,
            kind: st.st_mode & libc::S_IFMT,
            key,
            lookups: AtomicU64::new(1 << 62),
        });
        let table = InodeTable {
            by_id: DashMap::new(),
            by_key: DashMap::new(),
            next_id: AtomicU64::new(ROOT_ID + 1),
        };
        table.by_key.insert(key, ROOT_ID);
        table.by_id.insert(ROOT_ID, root);
        table
    }

    pub fn get(&self, id: u64) -> Option<Arc<Inode>> {
        self.by_id.get(&id).map(|i| Arc::clone(&i))
    }

    /// Records one kernel lookup of the store inode behind `handle` (stat'ed as `st`),
    /// reusing the existing node if there is one (then `handle` is simply dropped).
    pub fn lookup(&self, handle: OwnedFd, st: &libc::stat) -> Arc<Inode> {
        let key = (st.st_dev, st.st_ino);
        // The by_key shard lock orders this against `forget` of the same key.
        match self.by_key.entry(key) {
            Entry::Occupied(e) => {
                let id = *e.get();
                let inode = self.get(id).expect("by_key and by_id agree");
                inode.lookups.fetch_add(1, Ordering::Relaxed);
                inode
            }
            Entry::Vacant(e) => {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let inode = Arc::new(Inode {
                    id,
                    handle,
                    kind: st.st_mode & libc::S_IFMT,
                    key,
                    lookups: AtomicU64::new(1),
                });
                self.by_id.insert(id, Arc::clone(&inode));
                e.insert(id);
                inode
            }
        }
    }

    /// Records one kernel lookup of the store inode `st` describes if it is already in the
    /// table: a lookup of a known inode then needs no descriptor of its own.
    pub fn lookup_known(&self, st: &libc::stat) -> Option<Arc<Inode>> {
        // Under the by_key shard lock, like `lookup` and `forget`.
        let id = self.by_key.get_mut(&(st.st_dev, st.st_ino))?;
        let inode = self.get(*id)?;
        inode.lookups.fetch_add(1, Ordering::Relaxed);
        Some(inode)
    }

    /// Drops `n` kernel references; the inode (and its handle) goes when none are left.
    pub fn forget(&self, id: u64, n: u64) {
        let Some(inode) = self.get(id) else { return };
        let removed = self.by_key.remove_if(&inode.key, |_, &kid| {
            kid == id && inode.lookups.fetch_sub(n, Ordering::Relaxed) <= n
        });
        if removed.is_some() {
            self.by_id.remove(&id);
        }
    }

    /// Number of inodes held (root included).
    pub fn len(&self) -> usize {
        self.by_id.len()
    }
}
