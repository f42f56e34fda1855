//! Entries root makes in trees users can change (the live store, through the daemon or
//! `import`), and handing them to their owner. Two rules, each written once:
//!
//! - Owner and group first, then the mode: chown may clear setgid (and setuid), so the mode
//!   is always put back after it ([`give`]).
//! - Create, verify, hand over, else remove ([`create`]): between making an entry as root
//!   and reopening its name, a member may rename something else over that name through the
//!   mount. Only what is still root's and of the kind made is handed over; whatever
//!   happens, nothing root-owned is left behind.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use std::ffi::OsStr;

use crate::cache::layout::PRIVATE_DIR;
use crate::policy::Policy;
use crate::sys::{self, Name, Stat, SysResult};

/// Gives the inode behind `handle` owner `uid` and/or the group `gid`, then a mode: `mode`,
/// or where none is asked for and an owner changed, the policy's mode for the mode it had.
/// Symlinks have no mode of their own.
pub fn give(
    handle: BorrowedFd<'_>,
    policy: &Policy,
    uid: Option<u32>,
    gid: Option<u32>,
    mode: Option<u32>,
) -> SysResult<()> {
    let st = sys::fstat(handle)?;
    let kind = st.st_mode & libc::S_IFMT;
    if uid.is_some() || gid.is_some() {
        sys::chown(handle, uid, gid)?;
    }
    if kind == libc::S_IFLNK {
        return Ok(());
    }
    match mode {
        Some(m) => sys::chmod(handle, m),
        None if uid.is_some() || gid.is_some() => sys::chmod(handle, policy.mode(kind, st.st_mode)),
        None => Ok(()),
    }
}

/// Why [`create`] made nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateError {
    /// The name already held something when it was to be made.
    Exists,
    /// What the name held right after it was made was not what was made: someone renamed
    /// something else there. It was left alone.
    Swapped,
    /// A syscall failed (the entry, if made, was removed again).
    Sys(i32),
}

impl CreateError {
    /// The errno for a filesystem caller: the name is taken either way.
    pub fn errno(self) -> i32 {
        match self {
            CreateError::Exists | CreateError::Swapped => libc::EEXIST,
            CreateError::Sys(e) => e,
        }
    }
}

/// Makes the entry `name` (of file type `kind`) in `dir` as root with `make`, reopens the
/// name without following it, checks that it holds what was made (root's, of `kind`, and
/// whatever `is_ours` adds), and calls `hand_over` on it. If handing over fails, the entry
/// is removed again. Returns the O_PATH handle and attributes of the handed-over entry.
pub fn create(
    dir: BorrowedFd<'_>,
    name: &Name,
    kind: u32,
    make: impl FnOnce() -> SysResult<()>,
    is_ours: impl FnOnce(BorrowedFd<'_>, &Stat) -> bool,
    hand_over: impl FnOnce(BorrowedFd<'_>) -> SysResult<()>,
) -> Result<(OwnedFd, Stat), CreateError> {
    match make() {
        Ok(()) => {}
        Err(libc::EEXIST) => return Err(CreateError::Exists),
        Err(e) => return Err(CreateError::Sys(e)),
    }
    // Not even reopened (out of descriptors, say): remove what the name holds if it is
    // still what was made, root's and of that kind, so that nothing is left behind.
    let unmade = |e: i32| {
        if sys::stat_at(dir, name)
            .is_ok_and(|st| st.st_mode & libc::S_IFMT == kind && st.st_uid == 0)
        {
            let _ = sys::unlink_at(dir, name, kind == libc::S_IFDIR);
        }
        CreateError::Sys(e)
    };
    let handle = sys::open_path(dir, name).map_err(unmade)?;
    let st = sys::fstat(handle.as_fd()).map_err(unmade)?;
    if st.st_mode & libc::S_IFMT != kind || st.st_uid != 0 || !is_ours(handle.as_fd(), &st) {
        return Err(CreateError::Swapped);
    }
    if let Err(e) = hand_over(handle.as_fd()) {
        let _ = sys::unlink_at(dir, name, kind == libc::S_IFDIR);
        return Err(CreateError::Sys(e));
    }
    let st = sys::fstat(handle.as_fd()).map_err(CreateError::Sys)?;
    Ok((handle, st))
}

/// A user's private directory in the store (`PRIVATE_DIR/<uid>` below `store_root`),
/// root's and 0700, made so when `make`; `None` when missing otherwise.
pub fn private_dir(store_root: BorrowedFd<'_>, uid: u32, make: bool) -> SysResult<Option<OwnedFd>> {
    let Some(area) = root_only_dir(store_root, PRIVATE_DIR, make)? else {
        return Ok(None);
    };
    root_only_dir(area.as_fd(), &uid.to_string(), make)
}

/// The directory `name` in `dir`, hfcachefs's own (the private area, the daemons' records):
/// root's, 0700, never a link; made so when `make`, `None` when missing otherwise. Anything
/// else there is the store being tampered with outside the mount (EIO).
pub fn root_only_dir(dir: BorrowedFd<'_>, name: &str, make: bool) -> SysResult<Option<OwnedFd>> {
    let name = Name::new(OsStr::new(name))?;
    let handle = match sys::open_path(dir, &name) {
        Ok(h) => h,
        Err(libc::ENOENT) if make => {
            match sys::mkdir_at(dir, &name, 0o700) {
                Ok(()) | Err(libc::EEXIST) => {}
                Err(e) => return Err(e),
            }
            sys::open_path(dir, &name)?
        }
        Err(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    let st = sys::fstat(handle.as_fd())?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR || st.st_uid != 0 || st.st_mode & 0o077 != 0 {
        return Err(libc::EIO);
    }
    Ok(Some(handle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Others;

    fn temp_dir(tag: &str) -> (std::path::PathBuf, OwnedFd) {
        let d = std::env::temp_dir().join(format!("hfc-claim-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let c = std::ffi::CString::new(d.as_os_str().as_encoded_bytes()).unwrap();
        let fd = sys::open_root(&c).unwrap();
        (d, fd)
    }

    const P: Policy = Policy {
        gid: 0,
        others: Others::None,
    };

    #[test]
    fn made_entries_are_handed_over_and_failures_leave_nothing() {
        let (d, dir) = temp_dir("create");
        let name = Name::new(OsStr::new("sub")).unwrap();
        let (_, st) = create(
            dir.as_fd(),
            &name,
            libc::S_IFDIR,
            || sys::mkdir_at(dir.as_fd(), &name, 0o700),
            |_, _| true,
            |h| give(h, &P, None, Some(0), Some(0o2770)),
        )
        .unwrap();
        assert_eq!(st.st_mode & 0o7777, 0o2770);
        // The name is taken now.
        let again = create(
            dir.as_fd(),
            &name,
            libc::S_IFDIR,
            || sys::mkdir_at(dir.as_fd(), &name, 0o700),
            |_, _| true,
            |_| Ok(()),
        );
        assert_eq!(again.err(), Some(CreateError::Exists));
        // A failed hand-over removes what was made.
        let f = Name::new(OsStr::new("fifo")).unwrap();
        let r = create(
            dir.as_fd(),
            &f,
            libc::S_IFIFO,
            || sys::mknod_at(dir.as_fd(), &f, libc::S_IFIFO | 0o600),
            |_, _| true,
            |_| Err(libc::EPERM),
        );
        assert_eq!(r.err(), Some(CreateError::Sys(libc::EPERM)));
        assert!(!d.join("fifo").exists());
        // Something else under the name than the kind made is never handed over.
        let r = create(
            dir.as_fd(),
            &f,
            libc::S_IFDIR,
            || sys::mknod_at(dir.as_fd(), &f, libc::S_IFIFO | 0o600),
            |_, _| true,
            |_| panic!("must not hand over"),
        );
        assert_eq!(r.err(), Some(CreateError::Swapped));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn chown_keeps_the_policy_mode() {
        let (d, dir) = temp_dir("give");
        let name = Name::new(OsStr::new("d")).unwrap();
        sys::mkdir_at(dir.as_fd(), &name, 0o755).unwrap();
        let h = sys::open_path(dir.as_fd(), &name).unwrap();
        sys::chmod(h.as_fd(), 0o2755).unwrap();
        give(h.as_fd(), &P, Some(0), Some(0), None).unwrap();
        let st = sys::fstat(h.as_fd()).unwrap();
        assert_eq!(st.st_mode & 0o7777, P.mode(libc::S_IFDIR, 0o2755));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
