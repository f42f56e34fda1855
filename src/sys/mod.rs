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

mod at;
mod dir;
mod fileio;
mod handle;
mod process;
mod procfs;
mod time;
mod users;
pub mod xattr;

pub use at::*;
pub use dir::*;
pub use fileio::*;
pub use handle::*;
pub use process::*;
pub use procfs::*;
pub use time::*;
pub use users::*;
