//! Directory streams over store directories.

use super::*;

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
