//! A store on a temporary directory and the [`Store`] serving it, built as the daemon builds
//! them, plus the on-disk truth to check it against.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fmt;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use hfcachefs::cache::layout::PRIVATE_NAMES;
use hfcachefs::fs::ROOT_ID;
use hfcachefs::fs::store::{Caller, Entry, Store};
use hfcachefs::policy::{Others, Policy};
use hfcachefs::sys::{self, Stat, SysResult};

/// The policy's group. The test process must not be in it, so that the store's own access
/// check (on a create that finds a file) goes by the caller's ids alone.
pub const GID: u32 = 4242;

/// A caller as FUSE would describe it; the pid is ours, which is not in [`GID`].
/// Who the kernel looks names up for where the operation has no caller of its own
/// (names here are never private, so it changes nothing).
pub const KERNEL: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 0,
};

pub fn caller(uid: u32, gid: u32) -> Caller {
    Caller {
        uid,
        gid,
        pid: std::process::id(),
    }
}

/// The permission bits the README promises on disk for an entry whose owner asked for
/// `mode`, written from its words rather than from `Policy::mode`: group bits copy the
/// owner bits, others get nothing or at most r-x, setuid/setgid/sticky are dropped, and
/// directories are setgid.
pub fn spec_mode(dir: bool, mode: u32, others: Others) -> u32 {
    let owner = mode & 0o700;
    let others = match others {
        Others::None => 0,
        Others::Read => mode & 0o005,
    };
    let setgid = if dir { 0o2000 } else { 0 };
    owner | owner >> 3 | others | setgid
}

/// What the tests compare of an entry, whether reported by the store or read from disk.
#[derive(Clone, PartialEq, Eq)]
pub struct Attr {
    /// `S_IF*` bits.
    pub kind: u32,
    /// Permission bits with setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Regular files only: what was written is the only size that means something.
    pub size: Option<u64>,
}

/// `st_mode` in octal, as ls and chmod speak it.
impl fmt::Debug for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:o} uid {} gid {}",
            self.kind | self.mode,
            self.uid,
            self.gid
        )?;
        match self.size {
            Some(size) => write!(f, " size {size}"),
            None => Ok(()),
        }
    }
}

impl Attr {
    pub fn of_stat(st: &Stat) -> Attr {
        let kind = st.st_mode & libc::S_IFMT;
        Attr {
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: (kind == libc::S_IFREG).then_some(st.st_size as u64),
        }
    }

    fn of_metadata(md: &fs::Metadata) -> Attr {
        let kind = md.mode() & libc::S_IFMT;
        Attr {
            kind,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            size: (kind == libc::S_IFREG).then_some(md.size()),
        }
    }
}

/// A temporary 0700 root-owned store (with an `outside` directory next to it, for what
/// must never be reached) served by a [`Store`]. Removed on drop.
pub struct Harness {
    base: PathBuf,
    pub others: Others,
    pub store: Store,
    /// Node ids looked up and not yet forgotten, one per kernel reference.
    held: RefCell<Vec<u64>>,
}

impl Harness {
    pub fn new(others: Others) -> Harness {
        assert!(
            sys::is_root(),
            "the store harness tests must run as root (they give files to other users); \
             refusing to skip"
        );
        let groups = sys::process_groups().expect("getgroups");
        assert!(
            !groups.contains(&GID),
            "this process is in group {GID}, which the tests use as the policy's group"
        );
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = std::env::temp_dir().join(format!("hfc-harness-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let mut dirs = fs::DirBuilder::new();
        dirs.mode(0o700);
        for dir in [&base, &base.join("store"), &base.join("outside")] {
            dirs.create(dir).expect("create the temporary store");
        }
        let path = CString::new(base.join("store").into_os_string().into_encoded_bytes())
            .expect("no NUL in a temporary path");
        let root = sys::open_root(&path).expect("open the store root");
        let private = PRIVATE_NAMES.map(str::to_owned);
        let store =
            Store::new(root, Policy { gid: GID, others }, 256, &private).expect("Store::new");
        Harness {
            base,
            others,
            store,
            held: RefCell::new(Vec::new()),
        }
    }

    pub fn store_dir(&self) -> PathBuf {
        self.base.join("store")
    }

    pub fn outside(&self) -> PathBuf {
        self.base.join("outside")
    }

    /// Counts one kernel reference on `entry` (released by [`Harness::forget_all`]) and
    /// returns its node id.
    pub fn hold(&self, entry: &Entry) -> u64 {
        self.held.borrow_mut().push(entry.inode.id);
        entry.inode.id
    }

    /// The node id of `path` below the store root, looked up one component at a time as
    /// the kernel does; every lookup is held.
    pub fn resolve(&self, path: &[&str]) -> SysResult<u64> {
        let mut id = ROOT_ID;
        for name in path {
            id = self.hold(&self.store.lookup(id, OsStr::new(name), KERNEL)?);
        }
        Ok(id)
    }

    /// Forgets every held reference, as the kernel does when it drops its inodes.
    pub fn forget_all(&self) {
        for id in self.held.borrow_mut().drain(..) {
            self.store.forget(id, 1);
        }
    }

    /// Every entry below the store root by its path ("a/b"), never following a symlink.
    pub fn on_disk(&self) -> BTreeMap<String, Attr> {
        fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Attr>) {
            for ent in fs::read_dir(dir).expect("read a store directory") {
                let ent = ent.expect("read a store directory");
                let name = ent.file_name().into_string().expect("UTF-8 test names");
                let path = format!("{prefix}{name}");
                let md = fs::symlink_metadata(ent.path()).expect("lstat a store entry");
                if md.is_dir() {
                    walk(&ent.path(), &format!("{path}/"), out);
                }
                out.insert(path, Attr::of_metadata(&md));
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.store_dir(), "", &mut out);
        out
    }

    /// Entries on disk that break the policy, described: not the policy's group, root's
    /// (the daemon must hand everything over), or a mode the rule would change.
    pub fn violations(&self) -> Vec<String> {
        let mut bad = Vec::new();
        for (path, a) in self.on_disk() {
            let want = spec_mode(a.kind == libc::S_IFDIR, a.mode, self.others);
            if a.gid != GID || a.uid == 0 || (a.kind != libc::S_IFLNK && a.mode != want) {
                bad.push(format!(
                    "{path}: uid {} gid {} mode {:o} (want gid {GID}, mode {want:o})",
                    a.uid, a.gid, a.mode
                ));
            }
        }
        bad
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.forget_all();
        let _ = fs::remove_dir_all(&self.base);
    }
}
