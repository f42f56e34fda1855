//! Symlink-safe walks over a store or a Hugging Face cache, shared by `doctor`, `import`,
//! `stats` and `fix-store`: each entry comes with its place in the cache layout.
//!
//! These commands run as root over trees that users control. Every step is an
//! O_PATH|O_NOFOLLOW open of one validated name relative to its parent's handle, so a
//! symlink is seen as a symlink and never followed, and a directory swapped for a symlink
//! during the walk cannot lead it anywhere else. A path into such a tree (a user's cache
//! given to `import`) is resolved the same way from `/`, following only root's symlinks.

use std::collections::VecDeque;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::cache::layout::{Place, place_of};
use crate::sys::{self, Name, Stat, SysResult};

/// One entry of a tree: an O_PATH handle on it (never on what a symlink points to) and its
/// attributes.
pub struct Node {
    pub fd: OwnedFd,
    pub st: Stat,
}

fn io_err(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// The most symlinks one path may pass through, as in the kernel.
const MAX_SYMLINKS: u32 = 40;

/// Whether a symlink owned by `uid` may be followed on the way to a tree users control:
/// root's (`/home -> /data/home`), and when not running as root, the caller's own (which
/// give it nothing it could not reach anyway).
fn trusted_owner(uid: u32) -> bool {
    uid == 0 || (!sys::is_root() && uid == sys::real_uid())
}

/// Appends the components of `path` to `pending`: `.` and empty ones dropped, `..` kept.
fn components(path: &[u8], pending: &mut VecDeque<Vec<u8>>, front: bool) {
    let parts = path
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec);
    if front {
        for (i, c) in parts.enumerate() {
            pending.insert(i, c);
        }
    } else {
        pending.extend(parts);
    }
}

impl Node {
    /// Opens a directory the administrator names and no user controls (a store, a
    /// mountpoint), following symlinks as the kernel does.
    pub fn open_trusted(path: &Path) -> io::Result<Node> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let fd = sys::open_root(&c).map_err(io_err)?;
        let st = sys::fstat(fd.as_fd()).map_err(io_err)?;
        Ok(Node { fd, st })
    }

    /// Opens a path that may lead through trees users control (`~alice/.cache/huggingface`,
    /// where alice could make `.cache` a symlink to bob's). It is resolved one component at
    /// a time from `/`, each an O_PATH|O_NOFOLLOW open relative to the handle of the one
    /// before (`..` goes back one handle, never above `/`). A symlink on the way is followed
    /// only if root owns it and it has no other hard link; any other is refused with an
    /// error naming it and its owner. The final component is never followed: a symlink
    /// there is returned as a symlink. The handle returned is all that is used afterwards.
    pub fn open_untrusted(path: &Path) -> io::Result<Node> {
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()?.join(path)
        };
        let mut pending = VecDeque::new();
        components(abs.as_os_str().as_bytes(), &mut pending, false);
        let root = Node::open_trusted(Path::new("/"))?;
        // The handles from `/` down to where the resolution is, and that place as a path
        // (for messages).
        let mut stack = vec![root];
        let mut at = PathBuf::from("/");
        let mut links = 0;
        let fail = |p: &Path, e: i32| {
            io::Error::new(io_err(e).kind(), format!("{}: {}", p.display(), io_err(e)))
        };
        loop {
            let Some(c) = pending.pop_front() else {
                return stack.pop().ok_or_else(|| io_err(libc::ENOENT));
            };
            if c == b".." {
                if stack.len() > 1 {
                    stack.pop();
                    at.pop();
                }
                continue;
            }
            let here = at.join(OsStr::from_bytes(&c));
            let dir = stack.last().ok_or_else(|| io_err(libc::ENOENT))?;
            let node = dir
                .child(OsStr::from_bytes(&c))
                .map_err(|e| fail(&here, e))?;
            if pending.is_empty() {
                return Ok(node);
            }
            if node.is_dir() {
                stack.push(node);
                at = here;
                continue;
            }
            if !node.is_symlink() {
                return Err(fail(&here, libc::ENOTDIR));
            }
            let uid = node.st.st_uid;
            if !trusted_owner(uid) {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{} is a symlink owned by {}, not root: not followed",
                        here.display(),
                        sys::describe_user(uid)
                    ),
                ));
            }
            if node.st.st_nlink != 1 {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{} is a symlink with {} hard links (one could be planted): not followed",
                        here.display(),
                        node.st.st_nlink
                    ),
                ));
            }
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(fail(&here, libc::ELOOP));
            }
            let target = sys::readlink(node.fd()).map_err(|e| fail(&here, e))?;
            if target.is_empty() {
                return Err(fail(&here, libc::ENOENT));
            }
            if target.starts_with(b"/") {
                stack.truncate(1);
                at = PathBuf::from("/");
            }
            components(&target, &mut pending, true);
        }
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

    /// Its apparent size (`st_size`).
    pub fn size(&self) -> u64 {
        self.st.st_size as u64
    }

    /// What it takes on disk (`st_blocks` x 512, as `du` counts it): a 1-byte file takes a
    /// whole block, a sparse file only the blocks it has.
    pub fn disk_bytes(&self) -> u64 {
        self.st.st_blocks as u64 * 512
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

/// What a walk does after visiting an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visit {
    /// Go on, into the entry if it is a directory.
    Descend,
    /// Go on, but not into this directory.
    Skip,
    /// End the walk.
    Stop,
}

/// How many levels below its root a walk goes: far more than any cache has, and few enough
/// directory handles (a walk holds one per level) for the usual limit of 1024 descriptors.
/// Members can nest directories through the mount as deep as they like.
pub const MAX_DEPTH: usize = 128;

/// What a walk passed over.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Walked {
    /// Directories [`MAX_DEPTH`] levels down, visited but not descended into.
    pub too_deep: u64,
    /// The first of them, relative to the root.
    pub first_too_deep: Option<PathBuf>,
}

impl Walked {
    /// One line for people when something was passed over.
    pub fn warning(&self) -> Option<String> {
        let first = self.first_too_deep.as_ref()?;
        Some(format!(
            "{} directories {MAX_DEPTH} levels down were not descended into (the first: {})",
            self.too_deep,
            first.display()
        ))
    }
}

/// Which filesystems a walk goes into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Only the root's: a mount inside a store is not part of it.
    OneFilesystem,
    /// Any: a user's cache may have its `hub/` on another disk, and all of it is theirs.
    AnyFilesystem,
}

/// One entry of a walk, as its visitor sees it.
pub struct Entry<'a> {
    /// Its path relative to the root.
    pub rel: &'a Path,
    /// Its name in `parent`, the last component of `rel`.
    pub name: &'a OsStr,
    /// The directory holding it, for what is done relative to it (unlinking it, say).
    pub parent: &'a Node,
    pub node: &'a Node,
    /// Where it sits in the cache layout, the root counting as [`Place::Root`].
    pub place: Place,
    /// How many levels below the root it is: 1 for the root's own entries.
    pub depth: usize,
}

impl Entry<'_> {
    /// Whether the walk goes no deeper here however asked (the entry is [`MAX_DEPTH`] levels
    /// down): a visitor that would act before descending (make a directory) can tell.
    pub fn at_limit(&self) -> bool {
        self.depth >= MAX_DEPTH
    }
}

/// What a walk calls for each entry.
pub trait Visitor {
    /// Called for each entry before anything below it.
    fn enter(&mut self, e: &Entry<'_>) -> Visit;

    /// Called for a directory once everything below it was walked (only for those the walk
    /// descended into, and not once it was stopped): a visitor that removes what it moved can
    /// remove the emptied directory here.
    fn leave(&mut self, _e: &Entry<'_>) {}

    /// Called with the error number when a directory cannot be listed or an entry opened
    /// (`rel` names it; entries that vanished are passed over without a call). The walk ends
    /// with the error returned; by default, that one.
    fn unreadable(&mut self, rel: &Path, errno: i32) -> io::Result<()> {
        Err(error_at(rel, errno))
    }
}

/// An error naming the entry it is about (the root goes unnamed: callers name it).
fn error_at(rel: &Path, errno: i32) -> io::Error {
    if rel.as_os_str().is_empty() {
        return io_err(errno);
    }
    io::Error::new(
        io_err(errno).kind(),
        format!("{}: {}", rel.display(), io_err(errno)),
    )
}

/// Walks the tree below `root` depth-first in name order, calling `f` with each entry's
/// path relative to `root` and its place in the cache layout (`root` itself counting as
/// [`Place::Root`]: an `HF_HOME`, a hub cache or a store). Does not leave `root`'s
/// filesystem (a mount inside the store is not part of it) and goes at most [`MAX_DEPTH`]
/// levels down. Entries that vanish during the walk are passed over.
pub fn walk(root: &Node, f: &mut dyn FnMut(&Path, &Node, Place) -> Visit) -> io::Result<Walked> {
    struct Each<'f>(&'f mut dyn FnMut(&Path, &Node, Place) -> Visit);
    impl Visitor for Each<'_> {
        fn enter(&mut self, e: &Entry<'_>) -> Visit {
            (self.0)(e.rel, e.node, e.place)
        }
    }
    visit(root, Scope::OneFilesystem, &mut Each(f))
}

/// Walks the tree below `root` as [`walk`] does, within `scope`, calling `v` before and
/// after each directory's entries.
pub fn visit(root: &Node, scope: Scope, v: &mut dyn Visitor) -> io::Result<Walked> {
    let mut w = Walker {
        v,
        dev: (scope == Scope::OneFilesystem).then_some(root.st.st_dev),
        rel: PathBuf::new(),
        walked: Walked::default(),
    };
    w.dir(root, Place::Root, 0)?;
    Ok(w.walked)
}

struct Walker<'v> {
    v: &'v mut dyn Visitor,
    /// The only filesystem the walk goes into, if it is kept to one.
    dev: Option<u64>,
    /// Where the walk is, relative to the root.
    rel: PathBuf,
    walked: Walked,
}

impl Walker<'_> {
    /// Walks the entries of `dir` (at `place`, `depth` levels below the root); false once
    /// the walk was stopped.
    fn dir(&mut self, dir: &Node, place: Place, depth: usize) -> io::Result<bool> {
        let names = match dir.names() {
            Ok(n) => n,
            Err(libc::ENOENT) => return Ok(true),
            Err(e) => {
                self.v.unreadable(&self.rel, e)?;
                return Ok(true);
            }
        };
        for name in names {
            self.rel.push(&name);
            let go_on = match dir.child(&name) {
                Ok(node) => {
                    let at = place_of(place, name.as_bytes(), node.kind());
                    self.entry(dir, &name, &node, at, depth + 1)
                }
                Err(libc::ENOENT) => Ok(true),
                Err(e) => self.v.unreadable(&self.rel, e).map(|()| true),
            };
            self.rel.pop();
            if !go_on? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Visits one entry and walks what is below it; false once the walk was stopped.
    fn entry(
        &mut self,
        parent: &Node,
        name: &OsStr,
        node: &Node,
        place: Place,
        depth: usize,
    ) -> io::Result<bool> {
        let e = Entry {
            rel: &self.rel,
            name,
            parent,
            node,
            place,
            depth,
        };
        let into = node.is_dir() && self.dev.is_none_or(|d| d == node.st.st_dev);
        match self.v.enter(&e) {
            Visit::Stop => return Ok(false),
            Visit::Descend if into && e.at_limit() => {
                self.walked.too_deep += 1;
                self.walked
                    .first_too_deep
                    .get_or_insert_with(|| self.rel.clone());
                return Ok(true);
            }
            Visit::Descend if into => {}
            Visit::Descend | Visit::Skip => return Ok(true),
        }
        if !self.dir(node, place, depth)? {
            return Ok(false);
        }
        let e = Entry {
            rel: &self.rel,
            name,
            parent,
            node,
            place,
            depth,
        };
        self.v.leave(&e);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_paths_follow_only_roots_symlinks() {
        use std::os::unix::fs::{MetadataExt, lchown, symlink};
        if !sys::is_root() {
            return; // needs to make symlinks of another owner
        }
        let base = std::env::temp_dir().join(format!("hfcachefs-resolve-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("a/b/c")).unwrap();
        std::fs::write(base.join("a/b/c/f"), b"x").unwrap();
        symlink("a/b", base.join("rel")).unwrap();
        symlink(base.join("a"), base.join("abs")).unwrap();
        symlink("loop", base.join("loop")).unwrap();
        symlink("a", base.join("theirs")).unwrap();
        lchown(base.join("theirs"), Some(4321), Some(4321)).unwrap();
        symlink("c/f", base.join("a/b/last")).unwrap();
        let ino = |p: &Path| std::fs::symlink_metadata(p).unwrap().ino();
        let open = |rel: &str| Node::open_untrusted(&base.join(rel));

        let n = open("rel/c/f").unwrap();
        assert_eq!(n.st.st_ino, ino(&base.join("a/b/c/f")));
        // `..` after a symlink is the parent of where it led, as in the kernel.
        let n = open("rel/../b/./c").unwrap();
        assert_eq!(n.st.st_ino, ino(&base.join("a/b/c")));
        let n = open("abs/b/c/../../..").unwrap();
        assert_eq!(n.st.st_ino, ino(&base));
        let n = Node::open_untrusted(Path::new("/../../")).unwrap();
        assert_eq!(n.st.st_ino, ino(Path::new("/")));
        // The final component is never followed.
        assert!(open("a/b/last").unwrap().is_symlink());
        let e = open("loop/x").err().unwrap();
        assert_eq!(e.raw_os_error(), None);
        assert!(e.to_string().contains("symbolic links"), "{e}");
        let e = open("theirs/b").err().unwrap().to_string();
        assert!(
            e.contains("theirs is a symlink owned by") && e.contains("uid 4321"),
            "{e}"
        );
        assert!(open("a/b/c/f/g").is_err(), "a file is not a directory");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn visitors_see_directories_before_and_after_their_entries() {
        let base = std::env::temp_dir().join(format!("hfcachefs-visit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("a/b")).unwrap();
        std::fs::create_dir_all(base.join("a/skipped/below")).unwrap();
        std::fs::write(base.join("a/b/f"), b"x").unwrap();
        std::fs::write(base.join("z"), b"x").unwrap();

        struct Log(Vec<String>);
        impl Visitor for Log {
            fn enter(&mut self, e: &Entry<'_>) -> Visit {
                let same = e.parent.child(e.name).unwrap().id() == e.node.id();
                assert!(same, "the parent holds the entry under its name");
                assert_eq!(e.depth, e.rel.components().count());
                self.0.push(format!("enter {}", e.rel.display()));
                if e.name == "skipped" {
                    Visit::Skip
                } else {
                    Visit::Descend
                }
            }
            fn leave(&mut self, e: &Entry<'_>) {
                self.0.push(format!("leave {}", e.rel.display()));
            }
        }
        let mut log = Log(Vec::new());
        let root = Node::open_trusted(&base).unwrap();
        visit(&root, Scope::OneFilesystem, &mut log).unwrap();
        assert_eq!(
            log.0,
            [
                "enter a",
                "enter a/b",
                "enter a/b/f",
                "leave a/b",
                "enter a/skipped",
                "leave a",
                "enter z",
            ]
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn walks_stop_at_the_depth_limit() {
        let base = std::env::temp_dir().join(format!("hfcachefs-deep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let deep: PathBuf = std::iter::repeat_n("d", MAX_DEPTH + 5).collect();
        std::fs::create_dir_all(base.join(&deep)).unwrap();
        std::fs::create_dir(base.join("e")).unwrap();
        let root = Node::open_trusted(&base).unwrap();
        let mut seen = Vec::new();
        let walked = walk(&root, &mut |rel, _, _| {
            seen.push(rel.components().count());
            Visit::Descend
        })
        .unwrap();
        assert_eq!(seen.iter().max(), Some(&MAX_DEPTH));
        assert_eq!(
            seen.len(),
            MAX_DEPTH + 1,
            "every level down to the limit, and e"
        );
        assert_eq!(walked.too_deep, 1);
        let first: PathBuf = std::iter::repeat_n("d", MAX_DEPTH).collect();
        assert_eq!(walked.first_too_deep, Some(first));
        assert!(
            walked
                .warning()
                .unwrap()
                .contains("1 directories 128 levels down")
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
