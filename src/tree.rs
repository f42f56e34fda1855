//! Symlink-safe walks over a store or a Hugging Face cache, shared by `doctor`, `import`,
//! `stats` and `fix-store`, plus the cache layout facts they all need.
//!
//! These commands run as root over trees that users control. Every step is an
//! O_PATH|O_NOFOLLOW open of one validated name relative to its parent's handle, so a
//! symlink is seen as a symlink and never followed, and a directory swapped for a symlink
//! during the walk cannot lead it anywhere else.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::sys::{self, Name, Stat, SysResult};

/// How old a temporary download or import file must be before it counts as abandoned.
pub const STALE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Suffix of the temporary names `import` writes before renaming into place.
pub const IMPORT_TEMP_SUFFIX: &str = ".hfcachefs-import";

/// One entry of a tree: an O_PATH handle on it (never on what a symlink points to) and its
/// attributes.
pub struct Node {
    pub fd: OwnedFd,
    pub st: Stat,
}

fn io_err(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

impl Node {
    /// Opens an administrator-given path; its final component is not followed.
    pub fn open(path: &Path) -> io::Result<Node> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let fd = sys::open_path_nofollow(&c).map_err(io_err)?;
        let st = sys::fstat(fd.as_fd()).map_err(io_err)?;
        Ok(Node { fd, st })
    }

    /// The entry `name` of this directory, not following a symlink.
    pub fn child(&self, name: &OsStr) -> SysResult<Node> {
        let fd = sys::open_path(self.fd.as_fd(), &Name::new(name)?)?;
        let st = sys::fstat(fd.as_fd())?;
        Ok(Node { fd, st })
    }

    /// The entry `name`, or `None` if there is no such entry.
    pub fn child_opt(&self, name: &OsStr) -> SysResult<Option<Node>> {
        match self.child(name) {
            Ok(n) => Ok(Some(n)),
            Err(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A second handle on the same entry.
    pub fn try_clone(&self) -> SysResult<Node> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        Ok(Node { fd, st: self.st })
    }

    /// The names in this directory, sorted, without `.` and `..`.
    pub fn names(&self) -> SysResult<Vec<OsString>> {
        let mut stream = sys::DirStream::new(sys::open_dir(self.fd.as_fd())?)?;
        let mut names = Vec::new();
        while let Some(e) = stream.next_entry()? {
            if e.name != b"." && e.name != b".." {
                names.push(OsString::from_vec(e.name));
            }
        }
        names.sort();
        Ok(names)
    }

    pub fn kind(&self) -> u32 {
        self.st.st_mode & libc::S_IFMT
    }

    pub fn is_dir(&self) -> bool {
        self.kind() == libc::S_IFDIR
    }

    pub fn is_file(&self) -> bool {
        self.kind() == libc::S_IFREG
    }

    pub fn is_symlink(&self) -> bool {
        self.kind() == libc::S_IFLNK
    }

    pub fn size(&self) -> u64 {
        self.st.st_size as u64
    }

    pub fn mtime(&self) -> SystemTime {
        sys::system_time(self.st.st_mtime, self.st.st_mtime_nsec)
    }

    /// The identity of the inode, shared by its hard links.
    pub fn id(&self) -> (u64, u64) {
        (self.st.st_dev, self.st.st_ino)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// What a walk does after visiting a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visit {
    Descend,
    Stop,
}

/// Walks the tree below `root` depth-first in name order, calling `f` with each entry's
/// path relative to `root`. Does not leave `root`'s filesystem (a mount inside the store is
/// not part of it). Entries that vanish during the walk are passed over.
pub fn walk(root: &Node, f: &mut dyn FnMut(&Path, &Node) -> Visit) -> io::Result<()> {
    walk_dir(root, root.st.st_dev, &mut PathBuf::new(), f).map(drop)
}

/// Returns false once the walk was stopped.
fn walk_dir(
    dir: &Node,
    dev: u64,
    rel: &mut PathBuf,
    f: &mut dyn FnMut(&Path, &Node) -> Visit,
) -> io::Result<bool> {
    let names = match dir.names() {
        Ok(n) => n,
        Err(libc::ENOENT) => return Ok(true),
        Err(e) if rel.as_os_str().is_empty() => return Err(io_err(e)),
        Err(e) => {
            return Err(io::Error::new(
                io_err(e).kind(),
                format!("{}: {}", rel.display(), io_err(e)),
            ));
        }
    };
    for name in names {
        let node = match dir.child(&name) {
            Ok(n) => n,
            Err(libc::ENOENT) => continue,
            Err(e) => {
                return Err(io::Error::new(
                    io_err(e).kind(),
                    format!("{}: {}", rel.join(&name).display(), io_err(e)),
                ));
            }
        };
        rel.push(&name);
        let visit = f(rel, &node);
        let go_on = match visit {
            Visit::Stop => false,
            Visit::Descend if node.is_dir() && node.st.st_dev == dev => {
                walk_dir(&node, dev, rel, f)?
            }
            Visit::Descend => true,
        };
        rel.pop();
        if !go_on {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether a hub cache entry is a repo directory (`models--org--name` and the like).
pub fn is_repo_dir(name: &[u8]) -> bool {
    [&b"models--"[..], b"datasets--", b"spaces--"]
        .iter()
        .any(|p| name.starts_with(p) && name.len() > p.len())
}

/// Whether `name` is a temporary file of a download or an import, which only counts as
/// abandoned once it is older than [`STALE_AFTER`].
pub fn is_temporary(name: &[u8]) -> bool {
    name.ends_with(b".incomplete") || name.ends_with(IMPORT_TEMP_SUFFIX.as_bytes())
}

/// Whether `node`, named `name`, is an abandoned temporary file at time `now`.
pub fn is_stale_temporary(name: &[u8], node: &Node, now: SystemTime) -> bool {
    is_temporary(name)
        && now
            .duration_since(node.mtime())
            .is_ok_and(|age| age > STALE_AFTER)
}

/// The blob a snapshot symlink points to (`../../blobs/<etag>`, deeper for nested paths).
pub fn blob_of_target(target: &[u8]) -> Option<&[u8]> {
    let i = target.windows(7).rposition(|w| w == b"/blobs/")?;
    let blob = &target[i + 7..];
    (!blob.is_empty() && !blob.contains(&b'/')).then_some(blob)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_dirs() {
        assert!(is_repo_dir(b"models--org--name"));
        assert!(is_repo_dir(b"datasets--x"));
        assert!(is_repo_dir(b"spaces--a--b"));
        assert!(!is_repo_dir(b"models--"));
        assert!(!is_repo_dir(b".locks"));
        assert!(!is_repo_dir(b"version.txt"));
    }

    #[test]
    fn temporaries() {
        assert!(is_temporary(b"abc.incomplete"));
        assert!(is_temporary(b"abc.1a2b3c4d.incomplete"));
        assert!(is_temporary(b".abc.hfcachefs-import"));
        assert!(!is_temporary(b"abc"));
        assert!(!is_temporary(b"abc.lock"));
    }

    #[test]
    fn snapshot_targets() {
        assert_eq!(blob_of_target(b"../../blobs/abc"), Some(&b"abc"[..]));
        assert_eq!(blob_of_target(b"../../../blobs/abc"), Some(&b"abc"[..]));
        assert_eq!(blob_of_target(b"../../blobs/"), None);
        assert_eq!(blob_of_target(b"/etc/passwd"), None);
    }
}
