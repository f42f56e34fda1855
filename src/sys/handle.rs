//! File handles (`name_to_handle_at`/`open_by_handle_at`): an inode's persistent name.

use super::*;

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
