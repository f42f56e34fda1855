//! Extended attributes of the inode behind a non-symlink handle (through `/proc/self/fd`).

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
