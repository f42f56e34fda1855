//! The filesystem logic: every FUSE operation as an operation on the store, with the
//! ownership policy applied. Knows nothing of the FUSE wire protocol (see `fuse.rs`), so it can be driven in-process.
//!
//! Every store access is an `*at()` call relative to an O_PATH handle from the inode
//! table, on a validated single-component name, never following a final symlink.
//! Ownership and modes are set on the handle just created, never by path afterwards.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use parking_lot::Mutex;

use super::inodes::{Inode, InodeTable, ROOT_ID};
use crate::cache::layout::{Place, is_hidden_root_name, place_of};
use crate::claim::{self, CreateError};
use crate::evict::record::Tracker;
use crate::policy::Policy;
use crate::sys::{self, Name, Stat, SysResult, TimeSet};

/// A store inode as the kernel sees it: its node id and its attributes under the policy.
pub struct Entry {
    pub inode: Arc<Inode>,
    pub st: Stat,
}

/// Who is asking: the credentials FUSE gives with each request.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

/// An open regular file. Each open gets its own store descriptor, so that flock locks
/// taken through two opens exclude each other as they would on a local filesystem.
pub struct OpenFile {
    pub fd: Arc<OwnedFd>,
    /// The store inode number, for the open-file record (`None`: not recorded).
    recorded: Option<u64>,
}

/// An open directory stream and the position the kernel last asked for.
pub struct OpenDir {
    pub inode: Arc<Inode>,
    stream: Mutex<(sys::DirStream, i64)>,
}

/// One directory entry for readdir; `entry` is set (and counted as a lookup) for readdirplus.
pub struct DirItem {
    pub name: Vec<u8>,
    pub ino: u64,
    pub kind: u32,
    pub next: i64,
    pub entry: Option<Entry>,
}

/// Attribute changes of a setattr request.
#[derive(Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
}

/// Extended attribute namespaces members may use. security.* (capabilities, SELinux),
/// trusted.* and system.* (ACLs that would bypass the policy) are refused.
fn xattr_allowed(name: &[u8]) -> bool {
    name.starts_with(b"user.")
}

/// The directory handle of requests on a directory the kernel did not open (see
/// `HfCacheFs::opendir`); real handles start at 1.
pub const NO_HANDLE: u64 = 0;

pub struct Store {
    pub policy: Policy,
    /// Names at the top of the mount that are each caller's own (`private=`).
    private: Vec<Vec<u8>>,
    inodes: InodeTable,
    files: DashMap<u64, Arc<OpenFile>>,
    dirs: DashMap<u64, Arc<OpenDir>>,
    next_handle: AtomicU64,
    /// Opens and downloads noted for eviction.
    tracker: Option<Arc<Tracker>>,
    /// Whether opens count as uses in the access record (`record=on`), besides being open.
    access: bool,
}

fn kind_of(st: &Stat) -> u32 {
    st.st_mode & libc::S_IFMT
}

impl Store {
    /// Serves the store whose root directory handle is `root`, keeping at most about
    /// `fd_budget` inode descriptors open.
    pub fn new(
        root: OwnedFd,
        policy: Policy,
        fd_budget: usize,
        private: &[String],
    ) -> SysResult<Store> {
        let st = sys::fstat(root.as_fd())?;
        if kind_of(&st) != libc::S_IFDIR {
            return Err(libc::ENOTDIR);
        }
        Ok(Store {
            policy,
            private: private.iter().map(|n| n.as_bytes().to_vec()).collect(),
            inodes: InodeTable::new(root, &st, fd_budget),
            files: DashMap::new(),
            dirs: DashMap::new(),
            next_handle: AtomicU64::new(1),
            tracker: None,
            access: false,
        })
    }

    /// Notes every open of a shared file, every release, and every download published
    /// into a repo's `blobs/`, in `tracker`; with `access`, opens (a create too: a download
    /// is a use) count as uses as well. Open files are noted either way: they are what
    /// keeps eviction from removing a file in use.
    pub fn with_tracker(mut self, tracker: Arc<Tracker>, access: bool) -> Store {
        self.tracker = Some(tracker);
        self.access = access;
        self
    }

    /// Checks that the daemon can give files away in the store, as every create must: a
    /// store behind root squashing (NFS) or on a filesystem without owners would
    /// otherwise fail each create. Makes and removes one probe file in the store root.
    pub fn probe_ownership(&self) -> SysResult<()> {
        let root = self.inode(ROOT_ID)?;
        let name = Name::new(OsStr::new(&format!(
            ".hfcachefs-probe-{}",
            std::process::id()
        )))?;
        let fd = sys::open_at(
            root.fd()?.as_fd(),
            &name,
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
            0o600,
        )?;
        const NOBODY: u32 = 65534;
        let given = sys::chown(fd.as_fd(), Some(NOBODY), Some(self.policy.gid))
            .and_then(|()| sys::fstat(fd.as_fd()))
            .and_then(|st| {
                if st.st_uid == NOBODY && st.st_gid == self.policy.gid {
                    Ok(())
                } else {
                    Err(libc::EPERM)
                }
            });
        let removed = sys::unlink_at(root.fd()?.as_fd(), &name, false);
        given.and(removed)
    }

    fn inode(&self, id: u64) -> SysResult<Arc<Inode>> {
        // Every request starts here: keep the inode descriptors within their budget.
        self.inodes.trim();
        self.inodes.get(id).ok_or(libc::ESTALE)
    }

    fn dir(&self, id: u64) -> SysResult<Arc<Inode>> {
        let inode = self.inode(id)?;
        if inode.is_dir() {
            Ok(inode)
        } else {
            Err(libc::ENOTDIR)
        }
    }

    /// The attributes of `st`, at `place`, as members see them: a private copy as its
    /// owner's alone, everything else by the policy.
    fn report(&self, mut st: Stat, place: Place) -> Stat {
        st.st_mode = match place {
            Place::Private => kind_of(&st) | self.policy.private_mode(st.st_mode),
            // The store root is root's and 0700 on disk, whatever members chmod (setattr
            // leaves it alone); the mount root shows the policy's directory mode to all
            // (an administrator's chmod 000 of the store root still shuts everyone out).
            Place::Root => {
                let owner = st.st_mode & 0o700;
                self.policy
                    .report_mode(libc::S_IFDIR | owner | owner >> 3 | owner >> 6)
            }
            _ => self.policy.report_mode(st.st_mode),
        };
        st.st_gid = self.policy.gid;
        st
    }

    /// Counts one kernel reference on the inode behind `handle`, found as `name` in a
    /// directory at `parent_place`.
    fn lookup_handle(&self, handle: OwnedFd, parent_place: Place, name: &Name) -> SysResult<Entry> {
        let st = sys::fstat(handle.as_fd())?;
        let place = place_of(parent_place, name.as_cstr().to_bytes(), kind_of(&st));
        let inode = self.inodes.lookup(handle, &st, place);
        let st = self.report(st, inode.place());
        Ok(Entry { inode, st })
    }

    /// Whether `name` in directory `parent` is a private name: each caller's own.
    pub fn is_private(&self, parent: u64, name: &[u8]) -> bool {
        parent == ROOT_ID && self.private.iter().any(|p| p == name)
    }

    /// Where the entry `name` of directory `parent` lives for `caller`. A private name
    /// lives in the caller's private directory (`PRIVATE_DIR/<uid>`, made when `make`);
    /// the private area and hfcachefs's state directory have no name through the mount
    /// (ENOENT to find, EPERM to make).
    fn slot(&self, parent: u64, name: &OsStr, caller: Caller, make: bool) -> SysResult<Slot> {
        let bytes = name.as_bytes();
        if parent == ROOT_ID && is_hidden_root_name(bytes) {
            return Err(if make { libc::EPERM } else { libc::ENOENT });
        }
        let name = Name::new(name)?;
        if self.is_private(parent, bytes) {
            let dir = self.private_dir(caller.uid, make)?.ok_or(libc::ENOENT)?;
            return Ok(Slot {
                dir: Arc::new(dir),
                name,
                place: Place::Private,
            });
        }
        let dir = self.dir(parent)?;
        Ok(Slot {
            dir: dir.fd()?,
            name,
            place: dir.place(),
        })
    }

    /// `PRIVATE_DIR/<uid>` in the store root, root's and 0700 (no member reaches it but
    /// through the daemon); `None` if it does not exist and `make` is false.
    fn private_dir(&self, uid: u32, make: bool) -> SysResult<Option<OwnedFd>> {
        claim::private_dir(self.inode(ROOT_ID)?.fd()?.as_fd(), uid, make)
    }

    pub fn lookup(&self, parent: u64, name: &OsStr, caller: Caller) -> SysResult<Entry> {
        let slot = self
            .slot(parent, name, caller, false)
            .map_err(|e| if e == libc::EINVAL { libc::ENOENT } else { e })?;
        // Most lookups in a walk find inodes the kernel already knows: one stat then does.
        let st = sys::stat_at(slot.dir.as_fd(), &slot.name)?;
        if let Some(inode) = self.inodes.lookup_known(&st) {
            let st = self.report(st, inode.place());
            return Ok(Entry { inode, st });
        }
        let handle = sys::open_path(slot.dir.as_fd(), &slot.name)?;
        self.lookup_handle(handle, slot.place, &slot.name)
    }

    pub fn forget(&self, id: u64, n: u64) {
        if id != ROOT_ID {
            self.inodes.forget(id, n);
        }
    }

    pub fn getattr(&self, id: u64) -> SysResult<Entry> {
        let inode = self.inode(id)?;
        let st = self.report(sys::fstat(inode.fd()?.as_fd())?, inode.place());
        Ok(Entry { inode, st })
    }

    /// The mode a new entry of `kind` made with `mode` under `umask` gets at `place`.
    fn new_mode(&self, place: Place, kind: u32, mode: u32, umask: u32) -> u32 {
        if place == Place::Private {
            self.policy.private_mode(mode & !umask)
        } else {
            self.policy.create_mode(kind, mode, umask)
        }
    }

    /// Applies owner, group and mode to a handle we just created: never by path.
    fn claim(&self, handle: BorrowedFd<'_>, caller: Caller, mode: u32) -> SysResult<()> {
        claim::give(
            handle,
            &self.policy,
            Some(caller.uid),
            Some(self.policy.gid),
            Some(mode),
        )
    }

    /// Creates something with `make`, then claims the new entry for the caller (see
    /// [`claim::create`]: only what is still ours is handed over, and nothing root-owned is
    /// left behind).
    fn make(
        &self,
        parent: u64,
        name: &OsStr,
        caller: Caller,
        kind: u32,
        (mode, umask): (u32, u32),
        make: impl FnOnce(BorrowedFd<'_>, &Name, u32) -> SysResult<()>,
    ) -> SysResult<Entry> {
        let slot = self.slot(parent, name, caller, true)?;
        // A private name holds a regular file: a token, never a directory or a link.
        if slot.place == Place::Private && kind != libc::S_IFREG {
            return Err(libc::EPERM);
        }
        let mode = self.new_mode(slot.place, kind, mode, umask);
        let (handle, _) = claim::create(
            slot.dir.as_fd(),
            &slot.name,
            kind,
            || make(slot.dir.as_fd(), &slot.name, mode),
            |_, _| true,
            |h| self.claim(h, caller, mode),
        )
        .map_err(CreateError::errno)?;
        self.lookup_handle(handle, slot.place, &slot.name)
    }

    pub fn mkdir(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        caller: Caller,
    ) -> SysResult<Entry> {
        self.make(
            parent,
            name,
            caller,
            libc::S_IFDIR,
            (mode, umask),
            |dir, name, mode| sys::mkdir_at(dir, name, mode & 0o777),
        )
    }

    /// Regular files and FIFOs only: device nodes and sockets in a shared cache are refused.
    pub fn mknod(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        caller: Caller,
    ) -> SysResult<Entry> {
        let kind = mode & libc::S_IFMT;
        let kind = if kind == 0 { libc::S_IFREG } else { kind };
        if kind != libc::S_IFREG && kind != libc::S_IFIFO {
            return Err(libc::EPERM);
        }
        self.make(
            parent,
            name,
            caller,
            kind,
            (mode, umask),
            |dir, name, mode| sys::mknod_at(dir, name, kind | (mode & 0o777)),
        )
    }

    pub fn symlink(
        &self,
        parent: u64,
        name: &OsStr,
        target: &OsStr,
        caller: Caller,
    ) -> SysResult<Entry> {
        let target = CString::new(target.as_bytes()).map_err(|_| libc::EINVAL)?;
        self.make(
            parent,
            name,
            caller,
            libc::S_IFLNK,
            (0o777, 0),
            |dir, name, _| sys::symlink_at(&target, dir, name),
        )
    }

    /// A hard link shares its target's inode, so it keeps the target's owner and mode.
    /// A private copy gets no second name, and a private name no shared inode: either
    /// would show one user's secret under a name others reach.
    pub fn link(&self, id: u64, parent: u64, name: &OsStr, caller: Caller) -> SysResult<Entry> {
        let inode = self.inode(id)?;
        if inode.is_dir() || inode.place() == Place::Private {
            return Err(libc::EPERM);
        }
        let slot = self
            .slot(parent, name, caller, false)
            .map_err(|e| if e == libc::ENOENT { libc::EPERM } else { e })?;
        if slot.place == Place::Private {
            return Err(libc::EPERM);
        }
        sys::link_at(inode.fd()?.as_fd(), slot.dir.as_fd(), &slot.name)?;
        // The new name is this inode: count the lookup on it, not on whatever the name
        // holds by the time it could be reopened.
        self.lookup_handle(sys::dup(inode.fd()?.as_fd())?, slot.place, &slot.name)
    }

    /// Creates and opens a regular file. If it appeared meanwhile (another host, another
    /// daemon) and O_EXCL was not asked for, the existing file is opened as open(2) would.
    pub fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        caller: Caller,
    ) -> SysResult<(Entry, u64)> {
        let slot = self.slot(parent, name, caller, true)?;
        let (dir, name_c) = (&slot.dir, &slot.name);
        let mode = self.new_mode(slot.place, libc::S_IFREG, mode, umask);
        let io_flags = open_flags(flags);
        match sys::open_at(
            dir.as_fd(),
            name_c,
            io_flags | libc::O_CREAT | libc::O_EXCL,
            mode & 0o777,
        ) {
            Ok(fd) => {
                let claimed = sys::reopen(fd.as_fd(), libc::O_PATH).and_then(|handle| {
                    self.claim(handle.as_fd(), caller, mode)?;
                    self.lookup_handle(handle, slot.place, name_c)
                });
                match claimed {
                    Ok(entry) => {
                        let fh = self.add_file(fd, &entry.inode);
                        Ok((entry, fh))
                    }
                    Err(e) => {
                        let _ = sys::unlink_at(dir.as_fd(), name_c, false);
                        Err(e)
                    }
                }
            }
            Err(libc::EEXIST) if flags & libc::O_EXCL == 0 => {
                let handle = sys::open_path(dir.as_fd(), name_c)?;
                let entry = self.lookup_handle(handle, slot.place, name_c)?;
                let opened = self
                    .check_access(&entry.st, caller, flags)
                    .and_then(|()| self.open(entry.inode.id, flags))
                    .and_then(|fh| {
                        // Answered as a create, the kernel will not truncate: we must.
                        if flags & libc::O_TRUNC != 0 && flags & libc::O_ACCMODE != libc::O_RDONLY {
                            if let Err(e) = sys::ftruncate(self.file(fh)?.fd.as_fd(), 0) {
                                self.release(fh);
                                return Err(e);
                            }
                        }
                        Ok(fh)
                    });
                match opened {
                    Ok(fh) => Ok((entry, fh)),
                    Err(e) => {
                        self.forget(entry.inode.id, 1);
                        Err(e)
                    }
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The kernel checks permissions from our attributes (default_permissions) everywhere
    /// except on the rare create that found an existing file: check that one like it would.
    fn check_access(&self, st: &Stat, caller: Caller, flags: i32) -> SysResult<()> {
        if caller.uid == 0 || permits(st, caller, flags) {
            Ok(())
        } else {
            Err(libc::EACCES)
        }
    }

    fn add_file(&self, fd: OwnedFd, inode: &Inode) -> u64 {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let recorded = match &self.tracker {
            Some(t) if inode.place() != Place::Private => {
                if self.access {
                    t.opened(inode.ino());
                } else {
                    t.held(inode.ino());
                }
                Some(inode.ino())
            }
            _ => None,
        };
        let file = OpenFile {
            fd: Arc::new(fd),
            recorded,
        };
        self.files.insert(fh, Arc::new(file));
        fh
    }

    pub fn open(&self, id: u64, flags: i32) -> SysResult<u64> {
        let inode = self.inode(id)?;
        if !inode.is_regular() {
            // A symlink here is a name that became one under a create: as with O_NOFOLLOW.
            return Err(match inode.kind {
                libc::S_IFDIR => libc::EISDIR,
                libc::S_IFLNK => libc::ELOOP,
                _ => libc::EINVAL,
            });
        }
        let fd = sys::reopen(inode.fd()?.as_fd(), open_flags(flags))?;
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            drop_setid(fd.as_fd())?;
        }
        Ok(self.add_file(fd, &inode))
    }

    /// A read-only descriptor of a regular file, to register as a passthrough backing file.
    pub fn backing_fd(&self, id: u64) -> SysResult<OwnedFd> {
        let inode = self.inode(id)?;
        if !inode.is_regular() {
            return Err(libc::EINVAL);
        }
        sys::reopen(inode.fd()?.as_fd(), libc::O_RDONLY)
    }

    /// Whether the store itself, by the file's own owner, group and mode, lets `caller` open
    /// the file open as `fh` with `flags` again. Members are shown the policy's view, which
    /// may grant more: a file another host's daemon has just made and not yet handed over is
    /// root's, and one put in the store by other means (an old cache, 0644 lock files of old
    /// filelock versions) is shown group-writable. No, too, if the file cannot be examined
    /// (replaced on another host since): only `fh`'s descriptor still reaches it.
    pub fn store_permits(&self, fh: u64, caller: Caller, flags: i32) -> bool {
        caller.uid == 0
            || self
                .file(fh)
                .and_then(|f| sys::fstat(f.fd.as_fd()))
                .is_ok_and(|st| permits(&st, caller, flags))
    }

    pub fn file(&self, fh: u64) -> SysResult<Arc<OpenFile>> {
        self.files
            .get(&fh)
            .map(|f| Arc::clone(&f))
            .ok_or(libc::EBADF)
    }

    /// Closes an open file; its store descriptor, and so any flock held through it, goes
    /// with the last user.
    pub fn release(&self, fh: u64) {
        let removed = self.files.remove(&fh);
        if let (Some(t), Some((_, f))) = (&self.tracker, removed) {
            if let Some(ino) = f.recorded {
                t.closed(ino);
            }
        }
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> SysResult<Vec<u8>> {
        let file = self.file(fh)?;
        let mut buf = vec![0u8; size as usize];
        let n = sys::pread(file.fd.as_fd(), &mut buf, offset)?;
        buf.truncate(n);
        Ok(buf)
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> SysResult<usize> {
        let file = self.file(fh)?;
        sys::pwrite(file.fd.as_fd(), data, offset)
    }

    pub fn fsync(&self, fh: u64, datasync: bool) -> SysResult<()> {
        sys::fsync(self.file(fh)?.fd.as_fd(), datasync)
    }

    pub fn fallocate(&self, fh: u64, offset: u64, len: u64, mode: i32) -> SysResult<()> {
        sys::fallocate(self.file(fh)?.fd.as_fd(), mode, offset, len)
    }

    pub fn lseek(&self, fh: u64, offset: i64, whence: i32) -> SysResult<i64> {
        sys::lseek(self.file(fh)?.fd.as_fd(), offset, whence)
    }

    pub fn copy_file_range(
        &self,
        fh_in: u64,
        off_in: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
    ) -> SysResult<usize> {
        let (a, b) = (self.file(fh_in)?, self.file(fh_out)?);
        let len = len.min(1 << 30) as usize;
        sys::copy_file_range(a.fd.as_fd(), off_in, b.fd.as_fd(), off_out, len)
    }

    pub fn setattr(&self, id: u64, fh: Option<u64>, mut set: SetAttr) -> SysResult<Entry> {
        let inode = self.inode(id)?;
        if !self.policy.group_allowed(set.gid) {
            return Err(libc::EPERM);
        }
        if id == ROOT_ID {
            // The store root stays root's and 0700; members see it as the policy says.
            // (huggingface_hub chmods HF_HOME 0700 when it saves a token: that must not
            // shut the other members out.)
            if set.uid.is_some() {
                return Err(libc::EPERM);
            }
            set.mode = None;
            set.gid = None;
        }
        if set.size.is_some() && !inode.is_regular() {
            return Err(if inode.is_dir() {
                libc::EISDIR
            } else {
                libc::EINVAL
            });
        }
        let mode = set.mode.map(|mode| match inode.place() {
            Place::Private => self.policy.private_mode(mode),
            _ => self.policy.mode(inode.kind, mode),
        });
        // The kernel has already applied chown's and chmod's rules (only root gives files away).
        if set.uid.is_some() || set.gid.is_some() || mode.is_some() {
            claim::give(inode.fd()?.as_fd(), &self.policy, set.uid, set.gid, mode)?;
        }
        if let Some(size) = set.size {
            drop_setid(inode.fd()?.as_fd())?;
            // Through the open file when there is one that can write, else a fresh descriptor.
            let file = fh.and_then(|fh| self.files.get(&fh).map(|f| Arc::clone(&f.fd)));
            match file.map(|fd| sys::ftruncate(fd.as_fd(), size)) {
                Some(Err(libc::EBADF | libc::EINVAL)) | None => sys::ftruncate(
                    sys::reopen(inode.fd()?.as_fd(), libc::O_WRONLY)?.as_fd(),
                    size,
                )?,
                Some(r) => r?,
            }
        }
        if set.atime.is_some() || set.mtime.is_some() {
            sys::utimens(
                inode.fd()?.as_fd(),
                set.atime.unwrap_or(TimeSet::Omit),
                set.mtime.unwrap_or(TimeSet::Omit),
            )?;
        }
        let st = self.report(sys::fstat(inode.fd()?.as_fd())?, inode.place());
        Ok(Entry { inode, st })
    }

    pub fn readlink(&self, id: u64) -> SysResult<Vec<u8>> {
        let inode = self.inode(id)?;
        if !inode.is_symlink() {
            return Err(libc::EINVAL);
        }
        sys::readlink(inode.fd()?.as_fd())
    }

    pub fn unlink(&self, parent: u64, name: &OsStr, caller: Caller) -> SysResult<()> {
        let slot = self.slot(parent, name, caller, false)?;
        sys::unlink_at(slot.dir.as_fd(), &slot.name, false)
    }

    pub fn rmdir(&self, parent: u64, name: &OsStr, caller: Caller) -> SysResult<()> {
        let slot = self.slot(parent, name, caller, false)?;
        sys::unlink_at(slot.dir.as_fd(), &slot.name, true)
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        caller: Caller,
    ) -> SysResult<()> {
        if flags & libc::RENAME_WHITEOUT != 0 {
            return Err(libc::EINVAL);
        }
        let from = self.slot(parent, name, caller, false)?;
        let to = self.slot(newparent, newname, caller, true)?;
        let (from_private, to_private) = (from.place == Place::Private, to.place == Place::Private);
        // A private copy never leaves for a shared name, nor swaps with one. Onto a
        // private name comes only a file from the root (a library writing `token` through
        // a temporary name beside it), whose kernel caches last no longer than a request
        // (`Place::Loose`): from anywhere else, the kernel could keep showing it to others.
        if (from_private && !to_private)
            || (to_private && !from_private && parent != ROOT_ID)
            || (from_private != to_private && flags & libc::RENAME_EXCHANGE != 0)
        {
            return Err(libc::EPERM);
        }
        sys::rename_at(
            from.dir.as_fd(),
            &from.name,
            to.dir.as_fd(),
            &to.name,
            flags,
        )?;
        if to_private && !from_private {
            self.make_private(&to, caller)?;
        }
        if to.place == Place::Blobs {
            if let Some(t) = &self.tracker {
                t.published();
            }
        }
        Ok(())
    }

    /// Makes what was just renamed onto a private name the caller's own copy: their
    /// owner, owner-only mode, and reported as private from now on.
    fn make_private(&self, slot: &Slot, caller: Caller) -> SysResult<()> {
        let handle = sys::open_path(slot.dir.as_fd(), &slot.name)?;
        let st = sys::fstat(handle.as_fd())?;
        if kind_of(&st) != libc::S_IFREG {
            // Not a token: put nothing else there.
            let _ = sys::unlink_at(slot.dir.as_fd(), &slot.name, kind_of(&st) == libc::S_IFDIR);
            return Err(libc::EPERM);
        }
        let mode = self.policy.private_mode(st.st_mode);
        claim::give(
            handle.as_fd(),
            &self.policy,
            Some(caller.uid),
            Some(self.policy.gid),
            Some(mode),
        )?;
        // Every node of this inode (the kernel's, under its old name) is reported as
        // private from now on; its attributes were never cached (`Place::Loose`).
        if let Some(inode) = self.inodes.find(&st) {
            inode.set_place(Place::Private);
        }
        Ok(())
    }

    fn open_dir_stream(&self, id: u64) -> SysResult<OpenDir> {
        let inode = self.dir(id)?;
        let stream = sys::DirStream::new(sys::open_dir(inode.fd()?.as_fd())?)?;
        Ok(OpenDir {
            inode,
            stream: Mutex::new((stream, 0)),
        })
    }

    pub fn opendir(&self, id: u64) -> SysResult<u64> {
        let dir = self.open_dir_stream(id)?;
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.dirs.insert(fh, Arc::new(dir));
        Ok(fh)
    }

    pub fn releasedir(&self, fh: u64) {
        self.dirs.remove(&fh);
    }

    /// The directory stream of handle `fh`, or, for [`NO_HANDLE`] (the kernel was told it
    /// need not open directories), a stream of inode `id` opened for this request alone.
    fn dir_stream(&self, id: u64, fh: u64) -> SysResult<Arc<OpenDir>> {
        if fh == NO_HANDLE {
            return self.open_dir_stream(id).map(Arc::new);
        }
        self.dirs
            .get(&fh)
            .map(|d| Arc::clone(&d))
            .ok_or(libc::EBADF)
    }

    pub fn fsyncdir(&self, id: u64, fh: u64, datasync: bool) -> SysResult<()> {
        let dir = self.dir_stream(id, fh)?;
        let stream = dir.stream.lock();
        sys::fsync(stream.0.fd(), datasync)
    }

    /// Reads entries of directory `id` from `offset` on, handing each to `add` until it
    /// reports a full buffer. With `plus`, each entry but `.` and `..` is looked up; an
    /// entry that did not fit is forgotten again so the kernel's reference count stays exact.
    pub fn readdir(
        &self,
        id: u64,
        fh: u64,
        offset: i64,
        plus: bool,
        caller: Caller,
        mut add: impl FnMut(&DirItem) -> bool,
    ) -> SysResult<()> {
        let dir = self.dir_stream(id, fh)?;
        let mut guard = dir.stream.lock();
        let (stream, pos) = &mut *guard;
        if *pos != offset {
            stream.seek(offset);
        }
        *pos = offset;
        let mut added = false;
        // Once entries were handed over (and, with `plus`, counted as lookups), an error
        // must end the batch instead: an error reply would drop them and leak their counts.
        // The stream has moved on, so the next call seeks back and meets the error again.
        fn failed(e: i32, added: bool, pos: &mut i64) -> SysResult<()> {
            if added {
                *pos = -1;
                Ok(())
            } else {
                Err(e)
            }
        }
        loop {
            let ent = match stream.next_entry() {
                Ok(Some(ent)) => ent,
                Ok(None) => break,
                Err(e) => return failed(e, added, pos),
            };
            // The root's listing is shared by every caller (the kernel caches it): it shows
            // neither hfcachefs's own directories nor any private name, which are reached
            // by name.
            if dir.inode.id == ROOT_ID
                && (is_hidden_root_name(&ent.name) || self.is_private(ROOT_ID, &ent.name))
            {
                *pos = ent.offset;
                continue;
            }
            let dot = ent.name == b"." || ent.name == b"..";
            let entry = if plus && !dot {
                let name = OsStr::from_bytes(&ent.name);
                match self.lookup(dir.inode.id, name, caller) {
                    Ok(e) => Some(e),
                    // Gone since the directory was read: skip it.
                    Err(libc::ENOENT) => continue,
                    Err(e) => return failed(e, added, pos),
                }
            } else {
                None
            };
            let kind = match &entry {
                Some(e) => kind_of(&e.st),
                None => u32::from(ent.kind) << 12,
            };
            let ino = if ent.name == b"." {
                dir.inode.id
            } else {
                ent.ino
            };
            let item = DirItem {
                name: ent.name,
                ino,
                kind,
                next: ent.offset,
                entry,
            };
            if add(&item) {
                if let Some(e) = &item.entry {
                    self.forget(e.inode.id, 1);
                }
                // The stream moved past an entry the kernel did not take.
                *pos = -1;
                return Ok(());
            }
            added = true;
            *pos = item.next;
        }
        Ok(())
    }

    pub fn statfs(&self) -> SysResult<libc::statvfs> {
        sys::fstatvfs(self.inode(ROOT_ID)?.fd()?.as_fd())
    }

    /// The inode whose attribute `name` a member may change (EPERM for refused namespaces
    /// and for symlinks, which cannot carry user.* attributes).
    fn xattr_target(&self, id: u64, name: &OsStr) -> SysResult<Arc<Inode>> {
        let inode = self.inode(id)?;
        if !xattr_allowed(name.as_bytes()) || inode.is_symlink() {
            return Err(libc::EPERM);
        }
        Ok(inode)
    }

    pub fn setxattr(&self, id: u64, name: &OsStr, value: &[u8], flags: i32) -> SysResult<()> {
        let inode = self.xattr_target(id, name)?;
        sys::xattr::set(inode.fd()?.as_fd(), &xattr_name(name)?, value, flags)
    }

    /// Reads an attribute into a buffer of `size` bytes (0: just report the size).
    pub fn getxattr(&self, id: u64, name: &OsStr, size: u32) -> SysResult<Vec<u8>> {
        let inode = self.inode(id)?;
        if !xattr_allowed(name.as_bytes()) || inode.is_symlink() {
            return Err(libc::ENODATA);
        }
        let mut buf = vec![0u8; size as usize];
        let n = sys::xattr::get(inode.fd()?.as_fd(), &xattr_name(name)?, &mut buf)?;
        buf.truncate(n);
        Ok(if size == 0 { vec![0u8; n] } else { buf })
    }

    /// Lists the attribute names members may see (user.* only).
    pub fn listxattr(&self, id: u64) -> SysResult<Vec<u8>> {
        let inode = self.inode(id)?;
        if inode.is_symlink() {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; 64 * 1024];
        let n = sys::xattr::list(inode.fd()?.as_fd(), &mut buf)?;
        let mut out = Vec::new();
        for name in buf[..n].split(|&b| b == 0).filter(|n| xattr_allowed(n)) {
            out.extend_from_slice(name);
            out.push(0);
        }
        Ok(out)
    }

    pub fn removexattr(&self, id: u64, name: &OsStr) -> SysResult<()> {
        let inode = self.xattr_target(id, name)?;
        sys::xattr::remove(inode.fd()?.as_fd(), &xattr_name(name)?)
    }

    /// The node id the kernel knows the store directory numbered `ino` by, if any (to
    /// drop the kernel's cache of what eviction removed from it).
    pub fn node_of(&self, ino: u64) -> Option<u64> {
        self.inodes.find_ino(ino)
    }

    /// Number of inodes the kernel currently holds, and of their descriptors open now.
    pub fn inode_count(&self) -> (usize, usize) {
        (self.inodes.len(), self.inodes.open_descriptors())
    }
}

/// Where a name lives in the store: a directory handle, the name in it, and the place
/// of that directory (entries made there get theirs from it).
struct Slot {
    dir: Arc<OwnedFd>,
    name: Name,
    place: Place,
}

fn xattr_name(name: &OsStr) -> SysResult<CString> {
    CString::new(name.as_bytes()).map_err(|_| libc::EINVAL)
}

/// Whether the owner, group and mode bits of `st` let a non-root `caller` open it with
/// `flags`, as the kernel's permission check would.
fn permits(st: &Stat, caller: Caller, flags: i32) -> bool {
    let want = match flags & libc::O_ACCMODE {
        libc::O_RDONLY => 0o4,
        libc::O_WRONLY => 0o2,
        _ => 0o6,
    };
    let bits = if caller.uid == st.st_uid {
        st.st_mode >> 6
    } else if caller.gid == st.st_gid || sys::process_in_group(caller.pid, st.st_gid) {
        st.st_mode >> 3
    } else {
        st.st_mode
    } & 0o7;
    bits & want == want
}

/// Clears setuid/setgid on a regular file about to be written or truncated.
///
/// Files made through the mount never have them, but one put in the store by other means
/// may. The kernel leaves killing them to us (FUSE_HANDLE_KILLPRIV_V2, see `HfCacheFs::init`),
/// and fuser passes on neither FATTR_KILL_SUIDGID nor FUSE_OPEN_KILL_SUIDGID; the store-side
/// write or truncate runs with the daemon's CAP_FSETID, which keeps them. So every writable
/// open and every truncate drops them here, whoever asks. (Capabilities need nothing: the
/// store's filesystem removes `security.capability` on any write, truncate or chown.)
fn drop_setid(fd: BorrowedFd<'_>) -> SysResult<()> {
    let st = sys::fstat(fd)?;
    if kind_of(&st) == libc::S_IFREG && st.st_mode & (libc::S_ISUID | libc::S_ISGID) != 0 {
        sys::chmod(fd, st.st_mode & 0o1777)?;
    }
    Ok(())
}

/// Flags for the store descriptor of an open: creation is ours to do, O_TRUNC arrives as
/// a separate setattr, and O_DIRECT would make our buffers (unaligned) fail with EINVAL;
/// the kernel already bypasses its page cache for an O_DIRECT open of a FUSE file.
fn open_flags(flags: i32) -> i32 {
    flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_TRUNC | libc::O_DIRECT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_by_the_files_own_owner_group_and_mode() {
        let st = |uid: u32, gid: u32, mode: u32| {
            let mut st = sys::empty_stat();
            (st.st_uid, st.st_gid, st.st_mode) = (uid, gid, libc::S_IFREG | mode);
            st
        };
        // pid 0 has no /proc entry: group membership by the primary group alone.
        let member = Caller {
            uid: 1000,
            gid: 500,
            pid: 0,
        };
        let (rd, rw) = (libc::O_RDONLY, libc::O_RDWR);
        assert!(permits(&st(2000, 500, 0o660), member, rw));
        assert!(permits(&st(1000, 0, 0o600), member, rw));
        // Another host's fresh file, not handed over yet: root's group.
        assert!(!permits(&st(0, 0, 0o660), member, rd));
        // An old 0644 lock file of another member: readable, not writable.
        assert!(permits(&st(2000, 500, 0o644), member, rd));
        assert!(!permits(&st(2000, 500, 0o644), member, rw));
        assert!(!permits(&st(2000, 500, 0o644), member, libc::O_WRONLY));
    }
}
