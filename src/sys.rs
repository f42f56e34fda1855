//! Safe wrappers around the raw syscalls hfcachefs needs. All `unsafe` lives here.
//!
//! Store access goes through `*at()` calls relative to O_PATH handles, with
//! `O_NOFOLLOW`/`AT_SYMLINK_NOFOLLOW` everywhere: the daemon runs as root and
//! must never be steered outside its store by a symlink. Names passed in are
//! single path components (checked by [`Name`]). Reopening an O_PATH handle for
//! I/O goes through `/proc/self/fd/N`, which names that exact inode.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use libc::stat as Stat;

/// Result of a syscall: the errno on failure.
pub type SysResult<T> = Result<T, i32>;

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn check(ret: libc::c_int) -> SysResult<libc::c_int> {
    if ret < 0 { Err(errno()) } else { Ok(ret) }
}

fn check_size(ret: isize) -> SysResult<usize> {
    if ret < 0 {
        Err(errno())
    } else {
        Ok(ret as usize)
    }
}

/// Retries a call interrupted by a signal.
fn retry<T>(mut f: impl FnMut() -> SysResult<T>) -> SysResult<T> {
    loop {
        match f() {
            Err(libc::EINTR) => continue,
            r => return r,
        }
    }
}

/// A single, validated path component: never empty, `.`, `..`, or containing `/` or NUL.
pub struct Name(CString);

impl Name {
    pub fn new(name: &OsStr) -> SysResult<Name> {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
            return Err(libc::EINVAL);
        }
        if bytes.len() > 255 {
            return Err(libc::ENAMETOOLONG);
        }
        CString::new(bytes).map(Name).map_err(|_| libc::EINVAL)
    }

    pub fn as_cstr(&self) -> &CStr {
        &self.0
    }
}

const EMPTY: &CStr = c"";

fn proc_fd_path(fd: BorrowedFd<'_>) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL in a number")
}

fn owned(fd: libc::c_int) -> SysResult<OwnedFd> {
    // SAFETY: `fd` was just returned by a successful syscall and is owned by nobody else.
    check(fd).map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An all-zero `stat`, for entries whose attributes the kernel ignores.
pub fn empty_stat() -> Stat {
    // SAFETY: `stat` is a plain C struct of integers; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

/// Opens an O_PATH handle on `name` in `dir` without following a final symlink.
pub fn open_path(dir: BorrowedFd<'_>, name: &Name) -> SysResult<OwnedFd> {
    let flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: valid fd and NUL-terminated name.
    owned(unsafe { libc::openat(dir.as_raw_fd(), name.as_cstr().as_ptr(), flags) })
}

/// A second descriptor for the same open file (O_PATH handles included).
pub fn dup(fd: BorrowedFd<'_>) -> SysResult<OwnedFd> {
    // SAFETY: plain fcntl on a valid fd.
    owned(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) })
}

/// A filesystem's persistent name for an inode (`name_to_handle_at`): reopening it gives
/// that very inode, or ESTALE once it is gone, never another inode that reused its number.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct FileHandle {
    kind: i32,
    bytes: Vec<u8>,
}

const MAX_HANDLE_SZ: usize = 128;

#[repr(C)]
struct RawFileHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; MAX_HANDLE_SZ],
}

/// The file handle of the inode behind `handle`; EOPNOTSUPP where the filesystem has none.
pub fn file_handle(handle: BorrowedFd<'_>) -> SysResult<FileHandle> {
    let mut raw = RawFileHandle {
        handle_bytes: MAX_HANDLE_SZ as u32,
        handle_type: 0,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `raw` has room for MAX_HANDLE_SZ bytes, as handle_bytes says.
    check(unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            handle.as_raw_fd(),
            EMPTY.as_ptr(),
            &mut raw,
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        ) as libc::c_int
    })?;
    let len = (raw.handle_bytes as usize).min(MAX_HANDLE_SZ);
    Ok(FileHandle {
        kind: raw.handle_type,
        bytes: raw.f_handle[..len].to_vec(),
    })
}

/// Reopens an inode by its file handle as an O_PATH handle (needs CAP_DAC_READ_SEARCH);
/// `mount` is a directory of the same filesystem opened for reading (not O_PATH).
pub fn open_file_handle(mount: BorrowedFd<'_>, fh: &FileHandle) -> SysResult<OwnedFd> {
    let mut raw = RawFileHandle {
        handle_bytes: fh.bytes.len() as u32,
        handle_type: fh.kind,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    raw.f_handle[..fh.bytes.len()].copy_from_slice(&fh.bytes);
    let flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `raw` holds a handle of the length it states.
    owned(unsafe {
        libc::syscall(libc::SYS_open_by_handle_at, mount.as_raw_fd(), &raw, flags) as libc::c_int
    })
}

/// Opens the store root given by the administrator (a trusted path).
pub fn open_root(path: &CStr) -> SysResult<OwnedFd> {
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
    // SAFETY: NUL-terminated path.
    owned(unsafe { libc::open(path.as_ptr(), flags) })
}

/// Opens `name` in `dir` for I/O, never following a symlink; `mode` is used with O_CREAT.
pub fn open_at(dir: BorrowedFd<'_>, name: &Name, flags: i32, mode: u32) -> SysResult<OwnedFd> {
    let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: valid fd and NUL-terminated name.
    retry(|| {
        owned(unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_cstr().as_ptr(),
                flags,
                mode as libc::c_uint,
            )
        })
    })
}

/// Opens the inode behind an O_PATH handle for I/O (the handle must not be a symlink).
pub fn reopen(handle: BorrowedFd<'_>, flags: i32) -> SysResult<OwnedFd> {
    let path = proc_fd_path(handle);
    let flags = (flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW)) | libc::O_CLOEXEC;
    // SAFETY: NUL-terminated path.
    retry(|| owned(unsafe { libc::open(path.as_ptr(), flags) }))
}

/// Opens a directory handle for reading entries (`"."` relative to the handle).
pub fn open_dir(handle: BorrowedFd<'_>) -> SysResult<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    // SAFETY: valid fd, static name.
    owned(unsafe { libc::openat(handle.as_raw_fd(), c".".as_ptr(), flags) })
}

/// `lstat` of `name` in `dir`: the attributes of what the name holds now, never followed.
pub fn stat_at(dir: BorrowedFd<'_>, name: &Name) -> SysResult<Stat> {
    let mut st = std::mem::MaybeUninit::<Stat>::uninit();
    // SAFETY: `st` is a valid out pointer, filled on success.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_cstr().as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: fstatat succeeded.
    Ok(unsafe { st.assume_init() })
}

/// `fstat` on any handle, O_PATH symlinks included.
pub fn fstat(fd: BorrowedFd<'_>) -> SysResult<Stat> {
    let mut st = std::mem::MaybeUninit::<Stat>::uninit();
    let flags = libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW;
    // SAFETY: `st` is a valid out pointer, filled on success.
    check(unsafe { libc::fstatat(fd.as_raw_fd(), EMPTY.as_ptr(), st.as_mut_ptr(), flags) })?;
    // SAFETY: fstatat succeeded.
    Ok(unsafe { st.assume_init() })
}

pub fn mkdir_at(dir: BorrowedFd<'_>, name: &Name, mode: u32) -> SysResult<()> {
    // SAFETY: valid fd and name.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_cstr().as_ptr(), mode) }).map(drop)
}

pub fn mknod_at(dir: BorrowedFd<'_>, name: &Name, mode: u32) -> SysResult<()> {
    // SAFETY: valid fd and name; only FIFOs and regular files reach here (rdev 0).
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_cstr().as_ptr(), mode, 0) }).map(drop)
}

pub fn symlink_at(target: &CStr, dir: BorrowedFd<'_>, name: &Name) -> SysResult<()> {
    // SAFETY: NUL-terminated strings, valid fd.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_cstr().as_ptr()) })
        .map(drop)
}

/// Hard-links the inode behind `handle` as `name` in `dir` (needs CAP_DAC_READ_SEARCH).
pub fn link_at(handle: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &Name) -> SysResult<()> {
    // SAFETY: valid fds and names.
    check(unsafe {
        libc::linkat(
            handle.as_raw_fd(),
            EMPTY.as_ptr(),
            dir.as_raw_fd(),
            name.as_cstr().as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    })
    .map(drop)
}

pub fn unlink_at(dir: BorrowedFd<'_>, name: &Name, is_dir: bool) -> SysResult<()> {
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: valid fd and name.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_cstr().as_ptr(), flags) }).map(drop)
}

pub fn rename_at(
    old_dir: BorrowedFd<'_>,
    old: &Name,
    new_dir: BorrowedFd<'_>,
    new: &Name,
    flags: u32,
) -> SysResult<()> {
    // SAFETY: valid fds and names.
    check(unsafe {
        libc::renameat2(
            old_dir.as_raw_fd(),
            old.as_cstr().as_ptr(),
            new_dir.as_raw_fd(),
            new.as_cstr().as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// Reads the target of the symlink behind an O_PATH handle.
pub fn readlink(handle: BorrowedFd<'_>) -> SysResult<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: buffer is valid for its length.
    let n = check_size(unsafe {
        libc::readlinkat(
            handle.as_raw_fd(),
            EMPTY.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(n);
    Ok(buf)
}

/// Changes owner and/or group of the inode behind any handle (symlinks themselves included).
pub fn chown(handle: BorrowedFd<'_>, uid: Option<u32>, gid: Option<u32>) -> SysResult<()> {
    let uid = uid.unwrap_or(u32::MAX);
    let gid = gid.unwrap_or(u32::MAX);
    let flags = libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW;
    // SAFETY: valid fd, empty path.
    check(unsafe { libc::fchownat(handle.as_raw_fd(), EMPTY.as_ptr(), uid, gid, flags) }).map(drop)
}

/// Changes the mode of the inode behind any non-symlink handle, O_PATH included.
pub fn chmod(handle: BorrowedFd<'_>, mode: u32) -> SysResult<()> {
    // fchmod refuses O_PATH handles; the /proc magic link names the same inode.
    let path = proc_fd_path(handle);
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::chmod(path.as_ptr(), mode) }).map(drop)
}

/// Gives the inode behind a handle its owner, group and mode, in that order: chown may
/// clear setgid, so the mode comes last. `mode` must be `None` for symlinks.
pub fn give(
    handle: BorrowedFd<'_>,
    uid: Option<u32>,
    gid: Option<u32>,
    mode: Option<u32>,
) -> SysResult<()> {
    if uid.is_some() || gid.is_some() {
        chown(handle, uid, gid)?;
    }
    match mode {
        Some(mode) => chmod(handle, mode),
        None => Ok(()),
    }
}

/// A timestamp change for [`utimens`].
#[derive(Clone, Copy, Debug)]
pub enum TimeSet {
    Omit,
    Now,
    At(SystemTime),
}

fn timespec(t: TimeSet) -> libc::timespec {
    match t {
        TimeSet::Omit => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        TimeSet::Now => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        TimeSet::At(t) => {
            let (sec, nsec) = match t.duration_since(UNIX_EPOCH) {
                Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
                Err(e) => {
                    let d = e.duration();
                    if d.subsec_nanos() == 0 {
                        (-(d.as_secs() as i64), 0)
                    } else {
                        (
                            -(d.as_secs() as i64) - 1,
                            1_000_000_000 - d.subsec_nanos() as i64,
                        )
                    }
                }
            };
            libc::timespec {
                tv_sec: sec,
                tv_nsec: nsec,
            }
        }
    }
}

/// Sets atime/mtime on the inode behind any handle (symlinks themselves included).
pub fn utimens(handle: BorrowedFd<'_>, atime: TimeSet, mtime: TimeSet) -> SysResult<()> {
    let times = [timespec(atime), timespec(mtime)];
    let flags = libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW;
    // SAFETY: valid fd, two timespecs.
    check(unsafe { libc::utimensat(handle.as_raw_fd(), EMPTY.as_ptr(), times.as_ptr(), flags) })
        .map(drop)
}

pub fn ftruncate(fd: BorrowedFd<'_>, size: u64) -> SysResult<()> {
    // SAFETY: plain fd syscall.
    retry(|| check(unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) })).map(drop)
}

pub fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> SysResult<usize> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the slice is valid for writes of its length.
        let n = retry(|| {
            check_size(unsafe {
                libc::pread(
                    fd.as_raw_fd(),
                    buf[done..].as_mut_ptr().cast(),
                    buf.len() - done,
                    (offset + done as u64) as libc::off_t,
                )
            })
        })?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

pub fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], offset: u64) -> SysResult<usize> {
    // SAFETY: the slice is valid for reads of its length.
    retry(|| {
        check_size(unsafe {
            libc::pwrite(
                fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                offset as libc::off_t,
            )
        })
    })
}

pub fn fsync(fd: BorrowedFd<'_>, datasync: bool) -> SysResult<()> {
    // SAFETY: plain fd syscalls.
    let r = unsafe {
        if datasync {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    };
    check(r).map(drop)
}

pub fn fallocate(fd: BorrowedFd<'_>, mode: i32, offset: u64, len: u64) -> SysResult<()> {
    // SAFETY: plain fd syscall.
    retry(|| {
        check(unsafe {
            libc::fallocate(
                fd.as_raw_fd(),
                mode,
                offset as libc::off_t,
                len as libc::off_t,
            )
        })
    })
    .map(drop)
}

pub fn lseek(fd: BorrowedFd<'_>, offset: i64, whence: i32) -> SysResult<i64> {
    // SAFETY: plain fd syscall.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), offset as libc::off_t, whence) };
    if r < 0 { Err(errno()) } else { Ok(r as i64) }
}

pub fn copy_file_range(
    fd_in: BorrowedFd<'_>,
    off_in: u64,
    fd_out: BorrowedFd<'_>,
    off_out: u64,
    len: usize,
) -> SysResult<usize> {
    let mut off_in = off_in as libc::loff_t;
    let mut off_out = off_out as libc::loff_t;
    // SAFETY: offsets are valid in/out pointers.
    check_size(unsafe {
        libc::copy_file_range(
            fd_in.as_raw_fd(),
            &mut off_in,
            fd_out.as_raw_fd(),
            &mut off_out,
            len,
            0,
        )
    })
}

pub fn fstatvfs(fd: BorrowedFd<'_>) -> SysResult<libc::statvfs> {
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: valid out pointer.
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatvfs succeeded.
    Ok(unsafe { st.assume_init() })
}

/// The filesystem type (`f_type` magic) of the filesystem holding a handle's inode.
pub fn fs_type(fd: BorrowedFd<'_>) -> SysResult<i64> {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: valid out pointer.
    check(unsafe { libc::fstatfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatfs succeeded.
    Ok(unsafe { st.assume_init() }.f_type)
}

/// `flock(2)`; with `LOCK_NB` a held lock gives `EWOULDBLOCK`.
pub fn flock(fd: BorrowedFd<'_>, op: i32) -> SysResult<()> {
    // SAFETY: plain fd syscall.
    check(unsafe { libc::flock(fd.as_raw_fd(), op) }).map(drop)
}

/// Extended attributes of the inode behind a non-symlink handle.
pub mod xattr {
    use super::*;

    pub fn get(handle: BorrowedFd<'_>, name: &CStr, buf: &mut [u8]) -> SysResult<usize> {
        let path = proc_fd_path(handle);
        // SAFETY: valid strings and buffer.
        check_size(unsafe {
            libc::getxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        })
    }

    pub fn set(handle: BorrowedFd<'_>, name: &CStr, value: &[u8], flags: i32) -> SysResult<()> {
        let path = proc_fd_path(handle);
        // SAFETY: valid strings and buffer.
        check(unsafe {
            libc::setxattr(
                path.as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        })
        .map(drop)
    }

    pub fn list(handle: BorrowedFd<'_>, buf: &mut [u8]) -> SysResult<usize> {
        let path = proc_fd_path(handle);
        // SAFETY: valid string and buffer.
        check_size(unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })
    }

    pub fn remove(handle: BorrowedFd<'_>, name: &CStr) -> SysResult<()> {
        let path = proc_fd_path(handle);
        // SAFETY: valid strings.
        check(unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) }).map(drop)
    }
}

/// One directory entry as read from the store.
pub struct DirEntry {
    pub ino: u64,
    pub offset: i64,
    pub kind: u8,
    pub name: Vec<u8>,
}

/// An open directory stream; positions are the filesystem's own `d_off` cookies.
pub struct DirStream {
    dir: *mut libc::DIR,
}

// SAFETY: the DIR* is only used through &mut self, behind a mutex.
unsafe impl Send for DirStream {}

impl DirStream {
    pub fn new(fd: OwnedFd) -> SysResult<DirStream> {
        let raw = fd.as_raw_fd();
        // SAFETY: fdopendir takes ownership of the fd on success.
        let dir = unsafe { libc::fdopendir(raw) };
        if dir.is_null() {
            return Err(errno());
        }
        std::mem::forget(fd);
        Ok(DirStream { dir })
    }

    pub fn seek(&mut self, offset: i64) {
        // SAFETY: valid DIR*.
        unsafe { libc::seekdir(self.dir, offset as libc::c_long) }
    }

    pub fn next_entry(&mut self) -> SysResult<Option<DirEntry>> {
        // readdir reports errors only through errno.
        // SAFETY: __errno_location is always valid for the calling thread.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: valid DIR*.
        let ent = unsafe { libc::readdir64(self.dir) };
        if ent.is_null() {
            return match errno() {
                0 => Ok(None),
                e => Err(e),
            };
        }
        // SAFETY: readdir64 returned a valid entry that lives until the next call.
        let ent = unsafe { &*ent };
        // SAFETY: d_name is NUL-terminated.
        let name = unsafe { CStr::from_ptr(ent.d_name.as_ptr()) };
        Ok(Some(DirEntry {
            ino: ent.d_ino,
            offset: ent.d_off,
            kind: ent.d_type,
            name: name.to_bytes().to_vec(),
        }))
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the DIR* owns this fd for as long as self lives.
        unsafe { BorrowedFd::borrow_raw(libc::dirfd(self.dir)) }
    }
}

impl Drop for DirStream {
    fn drop(&mut self) {
        // SAFETY: valid DIR*, closed once.
        unsafe { libc::closedir(self.dir) };
    }
}

/// Raises the open-file limit as far as allowed: every inode the kernel holds pins an O_PATH
/// descriptor. The hard limit goes up to `fs.nr_open` where root may (CAP_SYS_RESOURCE),
/// else the soft limit goes up to the hard one.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    for max in [nr_open.max(lim.rlim_max), lim.rlim_max] {
        let want = libc::rlimit {
            rlim_cur: max,
            rlim_max: max,
        };
        // SAFETY: valid in pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return Ok(max);
        }
    }
    Err(io::Error::last_os_error())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Capabilities the daemon keeps after mounting: give files away (CHOWN, FOWNER), keep
/// setgid on directories of a group root is not in (FSETID), reach any store file
/// (DAC_OVERRIDE, DAC_READ_SEARCH, which linkat(AT_EMPTY_PATH) also needs), and
/// register passthrough backing files and unmount (SYS_ADMIN).
/// (Numbers from linux/capability.h: chown 0, dac_override 1, dac_read_search 2, fowner 3,
/// fsetid 4, sys_admin 21.)
pub const KEPT_CAPABILITIES: [u32; 6] = [0, 1, 2, 3, 4, 21];

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Drops every capability but `keep` from this thread (and threads it starts later) and
/// from the bounding set, and forbids gaining privileges through exec.
pub fn keep_only_capabilities(keep: &[u32]) -> io::Result<()> {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    for cap in (0..=last).filter(|c| !keep.contains(c)) {
        // SAFETY: plain prctl; EINVAL for caps this kernel lacks is fine to ignore.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
    }
    let mut data = [CapData::default(); 2];
    for &cap in keep {
        let (word, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
        data[word].effective |= bit;
        data[word].permitted |= bit;
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: header and two data words, as capset(2) version 3 expects.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain prctl.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What `fork` returned to this process.
pub enum Forked {
    Parent,
    Child,
}

/// Forks. Must be called while the process has a single thread.
pub fn fork() -> io::Result<Forked> {
    // SAFETY: the caller guarantees no other threads exist, so the child is consistent.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        _ => Ok(Forked::Parent),
    }
}

/// Ends the process at once, without running destructors (a forked parent must not unmount).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns.
    unsafe { libc::_exit(code) }
}

/// Detaches from the terminal: new session, cwd `/`, stdio on /dev/null.
pub fn detach() -> io::Result<()> {
    // SAFETY: plain syscalls on valid arguments.
    unsafe {
        if libc::setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::chdir(c"/".as_ptr()) < 0 {
            return Err(io::Error::last_os_error());
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null < 0 {
            return Err(io::Error::last_os_error());
        }
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        if null > 2 {
            libc::close(null);
        }
    }
    Ok(())
}

/// The termination signals the daemon handles by unmounting.
const STOP_SIGNALS: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

fn stop_sigset() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise the set.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        for s in STOP_SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks the stop signals in this thread (and threads it spawns later), so that
/// only [`wait_stop_signal`] sees them.
pub fn block_stop_signals() {
    let set = stop_sigset();
    // SAFETY: valid set pointer.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Waits for one of the stop signals and returns its number.
pub fn wait_stop_signal() -> i32 {
    let set = stop_sigset();
    let mut sig = 0;
    loop {
        // SAFETY: valid set and out pointer.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            return sig;
        }
    }
}

/// Lazily detaches a mount (used when a plain unmount reports EBUSY at shutdown).
pub fn umount_detach(path: &CStr) -> SysResult<()> {
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) }).map(drop)
}

/// The state of a process that waits on us, read from `/proc/PID/status`.
///
/// Returns true when the process is gone or has a signal pending that it neither
/// blocks nor ignores: a FUSE request it waits on should then be abandoned.
pub fn process_interrupted(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    let field = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    if status
        .lines()
        .any(|l| l.starts_with("State:") && (l.contains("zombie") || l.contains("dead")))
    {
        return true;
    }
    let pending = field("SigPnd:") | field("ShdPnd:");
    pending & !field("SigBlk:") & !field("SigIgn:") != 0
}

/// Whether process `pid` has `gid` among its supplementary groups (FUSE sends only the
/// primary group with a request).
pub fn process_in_group(pid: u32, gid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .is_some_and(|g| g.split_whitespace().any(|g| g.parse() == Ok(gid)))
}

/// Converts a `stat` time pair to a `SystemTime`.
pub fn system_time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::new(sec.unsigned_abs(), 0) + Duration::from_nanos(nsec as u64)
    }
}

/// A group as the group database (NSS) knows it.
pub struct GroupEntry {
    pub gid: u32,
    pub name: String,
    pub members: Vec<String>,
}

/// Reads C strings from a NULL-terminated array of pointers.
///
/// # Safety
/// `list` must be null or point to a NULL-terminated array of valid C strings.
unsafe fn c_string_list(mut list: *mut *mut libc::c_char) -> Vec<String> {
    let mut out = Vec::new();
    if list.is_null() {
        return out;
    }
    // SAFETY: guaranteed by the caller.
    unsafe {
        while !(*list).is_null() {
            out.push(CStr::from_ptr(*list).to_string_lossy().into_owned());
            list = list.add(1);
        }
    }
    out
}

/// Runs a reentrant NSS lookup (`get*_r`) with a buffer that grows on ERANGE. `call` gets
/// the buffer and returns the function's result and what it found, copied out of the buffer.
fn nss_lookup<T>(mut call: impl FnMut(&mut [u8]) -> (i32, Option<T>)) -> io::Result<Option<T>> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match call(&mut buf) {
            (libc::ERANGE, _) if buf.len() < (1 << 24) => buf.resize(buf.len() * 4, 0),
            (0, found) => return Ok(found),
            (r, _) => return Err(io::Error::from_raw_os_error(r)),
        }
    }
}

/// Copies a group entry filled by `getgr*_r` out of its buffer.
///
/// # Safety
/// `result` must be null or point to a group entry whose strings are still valid.
unsafe fn group_entry(result: *mut libc::group) -> Option<GroupEntry> {
    // SAFETY: guaranteed by the caller.
    unsafe {
        result.as_ref().map(|g| GroupEntry {
            gid: g.gr_gid,
            name: CStr::from_ptr(g.gr_name).to_string_lossy().into_owned(),
            members: c_string_list(g.gr_mem),
        })
    }
}

/// Looks up a group by name; `Ok(None)` if there is none.
pub fn group_by_name(name: &str) -> io::Result<Option<GroupEntry>> {
    let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    nss_lookup(|buf| {
        let mut grp = std::mem::MaybeUninit::<libc::group>::uninit();
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: all pointers valid for the given sizes; the entry is copied out while
        // `buf` is alive.
        unsafe {
            let r = libc::getgrnam_r(
                cname.as_ptr(),
                grp.as_mut_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            );
            (r, group_entry(result))
        }
    })
}

/// Looks up a group by id; `Ok(None)` if there is none.
pub fn group_by_gid(gid: u32) -> io::Result<Option<GroupEntry>> {
    nss_lookup(|buf| {
        let mut grp = std::mem::MaybeUninit::<libc::group>::uninit();
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: as in group_by_name.
        unsafe {
            let r = libc::getgrgid_r(
                gid,
                grp.as_mut_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            );
            (r, group_entry(result))
        }
    })
}

/// A user's name and primary group from the user database; `Ok(None)` if there is none.
pub fn user_by_uid(uid: u32) -> io::Result<Option<(String, u32)>> {
    nss_lookup(|buf| {
        let mut pwd = std::mem::MaybeUninit::<libc::passwd>::uninit();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: all pointers valid for the given sizes; the name is copied out while
        // `buf` is alive.
        unsafe {
            let r = libc::getpwuid_r(
                uid,
                pwd.as_mut_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            );
            let found = result.as_ref().map(|p| {
                (
                    CStr::from_ptr(p.pw_name).to_string_lossy().into_owned(),
                    p.pw_gid,
                )
            });
            (r, found)
        }
    })
}

/// The real user id of this process.
pub fn real_uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

/// The groups this process carries now (primary and supplementary): what the kernel checks,
/// which lags behind the group database until the user logs in again.
pub fn process_groups() -> io::Result<Vec<u32>> {
    // SAFETY: getgid/getegid cannot fail.
    let (gid, egid) = unsafe { (libc::getgid(), libc::getegid()) };
    // SAFETY: a zero-sized query returns the count only.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut groups = vec![0 as libc::gid_t; n as usize];
    // SAFETY: the buffer holds `n` entries.
    let n = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    groups.truncate(n as usize);
    groups.extend([gid, egid]);
    Ok(groups)
}

/// Opens a new regular file without a name in directory `dir` (`O_TMPFILE`), for writing.
/// It gets a name only through [`link_at`] (which fails with EEXIST rather than replacing
/// anything), and vanishes when closed without one, so nobody can reach or swap it while
/// it is written and given its owner.
pub fn open_tmpfile(dir: BorrowedFd<'_>, mode: u32) -> SysResult<OwnedFd> {
    // Not O_EXCL: that would forbid linking it later.
    let flags = libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC;
    // SAFETY: valid fd and static name.
    retry(|| {
        owned(unsafe { libc::openat(dir.as_raw_fd(), c".".as_ptr(), flags, mode as libc::c_uint) })
    })
}
