//! I/O on open descriptors: reads, writes, sync, size, locks, filesystem statistics.

use super::*;

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
