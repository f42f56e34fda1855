//! The FUSE adapter: a thin layer that turns fuser requests into `Store` calls and results
//! into replies. Kernel-facing decisions live here too: negotiated capabilities, cache
//! timeouts, flock forwarding and passthrough backing files.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry as MapEntry;
use fuser::{
    BackingId, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl,
    ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use log::{error, info, warn};

use super::locks::{self, LockWaiter};
use super::store::{Caller, DirItem, Entry, NO_HANDLE, SetAttr, Store};
use super::timeouts::Timeouts;
use crate::status::{PASSTHROUGH_ENABLED, PASSTHROUGH_REFUSED, PASSTHROUGH_UNAVAILABLE};
use crate::sys::{self, Stat, TimeSet};

/// Kernel-side settings of a mount.
pub struct FuseSettings {
    pub timeouts: Timeouts,
    pub passthrough: bool,
    /// The store is itself a FUSE filesystem (GlusterFS): see [`HfCacheFs::backing`].
    pub store_checks_caller: bool,
}

/// How an open of a regular file is served.
enum Io {
    /// By the kernel, from this backing file.
    Passthrough(Arc<BackingId>),
    /// By the daemon, through the kernel's page cache (passthrough is off).
    Cached,
    /// By the daemon, past the page cache: such opens coexist with passthrough ones.
    Direct,
}

/// Backing files for kernel passthrough: the kernel demands one per inode while any of its
/// opens is live, so opens share it and the last release closes it.
#[derive(Default)]
struct Backings {
    by_inode: DashMap<u64, Weak<BackingId>>,
    by_handle: DashMap<u64, Arc<BackingId>>,
}

pub struct HfCacheFs {
    store: Arc<Store>,
    /// Where the kernel caches names at all, it need not open directories: answered
    /// ENOSYS, it stops sending OPENDIR/RELEASEDIR and keeps listings between opens,
    /// dropping them when it sees the directory change (its own changes, or a new mtime).
    /// Elsewhere (shared stores) every opendir reads the store afresh.
    open_dirs: bool,
    locks: LockWaiter,
    settings: FuseSettings,
    passthrough: AtomicBool,
    backings: Backings,
}

/// The second in which a store failure was last logged: a dying disk fails every request,
/// and one line a second says so without flooding the log.
static STORE_ERROR_LOGGED: AtomicU64 = AtomicU64::new(0);

fn errno(e: i32) -> Errno {
    // Errors that mean the store itself is in trouble, not that the request was wrong.
    if matches!(
        e,
        libc::EIO | libc::ESTALE | libc::EUCLEAN | libc::ENOTCONN | libc::ENXIO
    ) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if STORE_ERROR_LOGGED.swap(now, Ordering::Relaxed) != now {
            error!("store error: {}", std::io::Error::from_raw_os_error(e));
        }
    }
    Errno::from_i32(e)
}

fn reply_empty(reply: ReplyEmpty, r: Result<(), i32>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

fn file_type(kind: u32) -> FileType {
    match kind {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn attr(id: u64, st: &Stat) -> FileAttr {
    FileAttr {
        ino: INodeNo(id),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: sys::system_time(st.st_atime, st.st_atime_nsec),
        mtime: sys::system_time(st.st_mtime, st.st_mtime_nsec),
        ctime: sys::system_time(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind: file_type(st.st_mode & libc::S_IFMT),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

fn time_set(t: Option<TimeOrNow>) -> Option<TimeSet> {
    t.map(|t| match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(t) => TimeSet::At(t),
    })
}

impl HfCacheFs {
    pub fn new(store: Arc<Store>, settings: FuseSettings) -> HfCacheFs {
        let passthrough = AtomicBool::new(settings.passthrough);
        HfCacheFs {
            store,
            open_dirs: settings.timeouts.entry.is_zero(),
            locks: LockWaiter::default(),
            settings,
            passthrough,
            backings: Backings::default(),
        }
    }

    fn reply_entry(&self, reply: ReplyEntry, r: Result<Entry, i32>) {
        match r {
            Ok(e) => {
                let (attr_ttl, entry_ttl) = self.settings.timeouts.of(e.inode.place());
                reply.entry_with_ttls(
                    &attr_ttl,
                    &entry_ttl,
                    &attr(e.inode.id, &e.st),
                    Generation(0),
                )
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    /// The backing file for a passthrough open of `inode`, shared with its other opens, or
    /// how else to serve this open.
    ///
    /// For each passthrough open the kernel opens the backing file anew, as the caller and
    /// not as the daemon, and fails the open with EIO if that fails (`fuse_passthrough_open`
    /// -> `backing_file_open`, in `fuse_file_io_open`). A local store does not check that
    /// open; a FUSE store (GlusterFS) checks it against the file as stored
    /// ([`Store::store_permits`]). An open the store would refuse the caller is served by
    /// the daemon instead, with direct I/O, which the kernel lets coexist with passthrough
    /// opens of the inode. A live backing is reused regardless: the kernel demands it.
    ///
    /// The kernel keeps the registered file open as long as the backing lives, so it gets a
    /// descriptor of its own: were it an open's lock descriptor, that open's flock would
    /// outlive its close. The kernel refuses to mix passthrough and daemon I/O on an inode,
    /// so a live backing is reused even after passthrough was turned off, and a transient
    /// failure (EMFILE, ENOMEM) fails this open instead of turning passthrough off.
    fn backing(
        &self,
        inode: u64,
        fh: u64,
        (caller, flags): (Caller, i32),
        open: impl FnOnce(&dyn AsFd) -> std::io::Result<BackingId>,
    ) -> Result<Io, i32> {
        // The entry's shard lock is held until a new backing is recorded, so two opens of
        // one inode cannot make two. A dead weak entry means the last open was released:
        // the kernel has dropped that backing already, so a new one is right.
        let entry = self.backings.by_inode.entry(inode);
        let live = match &entry {
            MapEntry::Occupied(e) => e.get().upgrade(),
            MapEntry::Vacant(_) => None,
        };
        let backing = match live {
            Some(b) => b,
            None if !self.passthrough.load(Ordering::Relaxed) => return Ok(Io::Cached),
            None if self.settings.store_checks_caller
                && !self.store.store_permits(fh, caller, flags) =>
            {
                return Ok(Io::Direct);
            }
            None => {
                let fd = self.store.backing_fd(inode)?;
                let b = match open(&fd) {
                    Ok(b) => Arc::new(b),
                    Err(e) => {
                        let e = e.raw_os_error().unwrap_or(libc::EIO);
                        // What the kernel says when it will not pass this store through.
                        let refused = matches!(
                            e,
                            libc::EPERM
                                | libc::EOPNOTSUPP
                                | libc::ENOTTY
                                | libc::EINVAL
                                | libc::ELOOP
                        );
                        if !refused {
                            return Err(e);
                        }
                        if self.passthrough.swap(false, Ordering::Relaxed) {
                            warn!(
                                "{PASSTHROUGH_REFUSED} ({}); serving file I/O from the daemon",
                                std::io::Error::from_raw_os_error(e)
                            );
                        }
                        return Ok(Io::Cached);
                    }
                };
                entry.insert(Arc::downgrade(&b));
                b
            }
        };
        self.backings.by_handle.insert(fh, Arc::clone(&backing));
        Ok(Io::Passthrough(backing))
    }

    fn release_backing(&self, inode: u64, fh: u64) {
        if self.backings.by_handle.remove(&fh).is_some() {
            self.backings
                .by_inode
                .remove_if(&inode, |_, w| w.strong_count() == 0);
        }
    }
}

impl Filesystem for HfCacheFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // One capability per call: add_capabilities is all-or-nothing.
        config
            .add_capabilities(InitFlags::FUSE_FLOCK_LOCKS)
            .map_err(|_| std::io::Error::other("the kernel cannot forward flock() to FUSE"))?;
        for cap in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_CACHE_SYMLINKS,
            // The kernel then leaves killing setuid/setgid and capabilities to us (the store
            // does: `store::drop_setid`) and remembers per inode that it has none
            // (SB_NOSEC). Without it every write(2), passthrough ones too, first asks for
            // `security.capability`: a GETXATTR round trip per write, not per file.
            InitFlags::FUSE_HANDLE_KILLPRIV_V2,
            // Re-check mtime before trusting cached pages or listings (a shared store changes
            // behind the kernel's back).
            InitFlags::FUSE_AUTO_INVAL_DATA,
        ] {
            let _ = config.add_capabilities(cap);
        }
        let _ = config.set_max_write(1 << 20);
        if self.passthrough.load(Ordering::Relaxed) {
            let ok = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            if ok {
                info!("{PASSTHROUGH_ENABLED}");
            } else {
                info!("{PASSTHROUGH_UNAVAILABLE}");
                self.passthrough.store(false, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn destroy(&mut self) {
        let (inodes, open) = self.store.inode_count();
        info!("unmounted; {inodes} inodes were cached, {open} of them with an open descriptor");
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.store.lookup(parent.0, name, caller(req)) {
            // A negative entry (node id 0) lets the kernel remember the miss: the Hub
            // libraries probe many names that do not exist (.no_exist, refs, locks). Never
            // for a private name: one caller's miss says nothing of another's copy.
            Err(libc::ENOENT)
                if !self.settings.timeouts.entry.is_zero()
                    && !self.store.is_private(parent.0, name.as_bytes()) =>
            {
                let mut st = sys::empty_stat();
                st.st_mode = libc::S_IFREG;
                reply.entry_with_ttls(
                    &Duration::ZERO,
                    &self.settings.timeouts.entry,
                    &attr(0, &st),
                    Generation(0),
                )
            }
            r => self.reply_entry(reply, r),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.store.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.store.getattr(ino.0) {
            Ok(e) => reply.attr(
                &self.settings.timeouts.of(e.inode.place()).0,
                &attr(ino.0, &e.st),
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: time_set(atime),
            mtime: time_set(mtime),
        };
        match self.store.setattr(ino.0, fh.map(|f| f.0), set) {
            Ok(e) => reply.attr(
                &self.settings.timeouts.of(e.inode.place()).0,
                &attr(ino.0, &e.st),
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.store.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        self.reply_entry(
            reply,
            self.store.mknod(parent.0, name, mode, umask, caller(req)),
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.reply_entry(
            reply,
            self.store.mkdir(parent.0, name, mode, umask, caller(req)),
        );
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.store.unlink(parent.0, name, caller(req)))
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.store.rmdir(parent.0, name, caller(req)))
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.reply_entry(
            reply,
            self.store
                .symlink(parent.0, link_name, target.as_os_str(), caller(req)),
        );
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = self.store.rename(
            parent.0,
            name,
            newparent.0,
            newname,
            flags.bits(),
            caller(req),
        );
        reply_empty(reply, r);
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.reply_entry(
            reply,
            self.store.link(ino.0, newparent.0, newname, caller(req)),
        );
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let fh = match self.store.open(ino.0, flags.0) {
            Ok(fh) => fh,
            Err(e) => return reply.error(errno(e)),
        };
        let how = (caller(req), flags.0);
        match self.backing(ino.0, fh, how, |fd| reply.open_backing(fd.as_fd())) {
            Ok(Io::Passthrough(b)) => {
                reply.opened_passthrough(FileHandle(fh), FopenFlags::FOPEN_NOFLUSH, &b)
            }
            Ok(Io::Cached) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Ok(Io::Direct) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => {
                self.store.release(fh);
                reply.error(errno(e));
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.store.read(fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.store.write(fh.0, offset, data) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e)),
        }
    }

    /// Writes go straight to the store and flock locks end with the last close (release):
    /// ENOSYS tells the kernel to stop sending a request per close(2). Passthrough opens
    /// are answered FOPEN_NOFLUSH as well, which spares the kernel its own work at each
    /// close (writing back and waiting on pages of a FUSE page cache they never use);
    /// opens served by the daemon keep it, so pages dirtied through a shared mapping still
    /// reach the store at close, where another daemon over the same store sees them.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.store.release(fh.0);
        self.release_backing(ino.0, fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.store.fsync(fh.0, datasync))
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if !self.open_dirs {
            return reply.error(Errno::ENOSYS);
        }
        match self.store.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.store.readdir(
            ino.0,
            fh.0,
            offset as i64,
            false,
            caller(req),
            |item: &DirItem| {
                reply.add(
                    INodeNo(item.ino),
                    item.next as u64,
                    file_type(item.kind),
                    OsStr::from_bytes(&item.name),
                )
            },
        );
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let r = self.store.readdir(
            ino.0,
            fh.0,
            offset as i64,
            true,
            caller(req),
            |item: &DirItem| {
                let name = OsStr::from_bytes(&item.name);
                match &item.entry {
                    Some(e) => reply.add(
                        INodeNo(e.inode.id),
                        item.next as u64,
                        name,
                        &self.settings.timeouts.listed(e.inode.place()),
                        &attr(e.inode.id, &e.st),
                        Generation(0),
                    ),
                    None => {
                        // `.` and `..`: the kernel takes no reference and reads only the type.
                        let mut st = sys::empty_stat();
                        st.st_mode = item.kind;
                        reply.add(
                            INodeNo(item.ino),
                            item.next as u64,
                            name,
                            &Duration::ZERO,
                            &attr(item.ino, &st),
                            Generation(0),
                        )
                    }
                }
            },
        );
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        if fh.0 != NO_HANDLE {
            self.store.releasedir(fh.0);
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.store.fsyncdir(ino.0, fh.0, datasync))
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.store.statfs() {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.store.setxattr(ino.0, name, value, flags))
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.store.getxattr(ino.0, name, size) {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.store.listxattr(ino.0) {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.store.removexattr(ino.0, name))
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (entry, fh) = match self
            .store
            .create(parent.0, name, mode, umask, flags, caller(req))
        {
            Ok(r) => r,
            Err(e) => return reply.error(errno(e)),
        };
        let id = entry.inode.id;
        let a = attr(id, &entry.st);
        let ttl = self.settings.timeouts.of(entry.inode.place()).1;
        // As in `open`: a failure fails this create. Daemon I/O instead would put the inode
        // in the kernel's cached mode while passthrough is on, and every passthrough open of
        // it (other users of a lock file) would then fail with EIO while this one lasts.
        match self.backing(id, fh, (caller(req), flags), |fd| {
            reply.open_backing(fd.as_fd())
        }) {
            Ok(Io::Passthrough(b)) => reply.created_passthrough(
                &ttl,
                &a,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_NOFLUSH,
                &b,
            ),
            Ok(Io::Cached) => {
                reply.created(&ttl, &a, Generation(0), FileHandle(fh), FopenFlags::empty())
            }
            Ok(Io::Direct) => reply.created(
                &ttl,
                &a,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => {
                self.store.release(fh);
                self.store.forget(id, 1);
                reply.error(errno(e));
            }
        }
    }

    fn setlk(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        typ: i32,
        _pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        // Only FUSE_FLOCK_LOCKS is negotiated, so every request here is a flock().
        let Some(op) = locks::flock_op(typ) else {
            return reply.error(Errno::EINVAL);
        };
        let file = match self.store.file(fh.0) {
            Ok(f) => f,
            Err(e) => return reply.error(errno(e)),
        };
        self.locks.lock(
            Arc::clone(&file.fd),
            op,
            sleep,
            req.pid(),
            Box::new(move |r| match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }),
        );
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.store.fallocate(fh.0, offset, length, mode))
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.store.lseek(fh.0, offset, whence) {
            Ok(off) => reply.offset(off),
            Err(e) => reply.error(errno(e)),
        }
    }

    /// No ioctls are forwarded to the store; Python's `open()` asks every file whether it
    /// is a terminal (TCGETS), and the answer is ENOTTY.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        match self
            .store
            .copy_file_range(fh_in.0, offset_in, fh_out.0, offset_out, len)
        {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e)),
        }
    }
}
