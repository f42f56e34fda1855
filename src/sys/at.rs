//! `*at()` calls on O_PATH handles: opening, creating, linking, renaming, removing,
//! stat, owner, mode and times, never following a final symlink.

use super::*;

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

/// Renames `old` to `new` unless `new` exists (EEXIST). Where the filesystem has no
/// renameat2 flags (GlusterFS's FUSE client answers EINVAL), a non-directory is linked under
/// the new name, which fails on an existing one as atomically, and then unlinked; a
/// directory, which cannot be linked, is renamed only if `new` is missing just before.
pub fn rename_noreplace(
    old_dir: BorrowedFd<'_>,
    old: &Name,
    new_dir: BorrowedFd<'_>,
    new: &Name,
) -> SysResult<()> {
    match rename_at(old_dir, old, new_dir, new, libc::RENAME_NOREPLACE) {
        Err(libc::EINVAL) => {}
        r => return r,
    }
    let handle = open_path(old_dir, old)?;
    use std::os::fd::AsFd;
    if fstat(handle.as_fd())?.st_mode & libc::S_IFMT != libc::S_IFDIR {
        link_at(handle.as_fd(), new_dir, new)?;
        return unlink_at(old_dir, old, false);
    }
    match stat_at(new_dir, new) {
        Err(libc::ENOENT) => rename_at(old_dir, old, new_dir, new, 0),
        Ok(_) => Err(libc::EEXIST),
        Err(e) => Err(e),
    }
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

/// Sets atime/mtime on the inode behind any handle (symlinks themselves included).
pub fn utimens(handle: BorrowedFd<'_>, atime: TimeSet, mtime: TimeSet) -> SysResult<()> {
    let times = [timespec(atime), timespec(mtime)];
    let flags = libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW;
    // SAFETY: valid fd, two timespecs.
    check(unsafe { libc::utimensat(handle.as_raw_fd(), EMPTY.as_ptr(), times.as_ptr(), flags) })
        .map(drop)
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
