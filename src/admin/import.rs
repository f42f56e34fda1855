//! `hfcachefs import SRC... [--store STORE] [--dry-run] [--move] [--group G]`: moves
//! existing Hugging Face caches (a `~/.cache/huggingface`, its `hub` directory, an old shared
//! `/huggingface`) into the store, so that what users already downloaded is shared at once
//! and each blob is kept once.
//!
//! - Hub repos are merged: blobs deduplicated by name (a blob's name is its etag, a hash of
//!   its content), snapshots and `.no_exist` markers merged, refs merged with the newest
//!   (by mtime) winning. `hub/.locks` is not imported (lock files are recreated on demand).
//! - `datasets/` and `xet/` are copied as they are (merged, existing entries kept);
//!   tokens are never copied; anything else (e.g. `modules/`, code) is left alone.
//! - New entries keep their source owner and get the configured group and the policy's mode.
//!   A file is hard-linked when source and store share a filesystem and it has no other
//!   link (its group and mode then change in the source too), else copied into a file
//!   without a name in the store directory (`O_TMPFILE`), compared byte for byte with the
//!   source and synced. Either gets its owner, group and mode through its handle, and only
//!   then a name, with `linkat`, which never replaces anything. Members can rename entries
//!   of the live store through the mount, so nothing is ever created under a temporary name
//!   and reopened or published by that name; directories and symlinks are made under their
//!   own name and checked to still be what was made (root's, of that kind) before they are
//!   handed over. An interrupted import leaves no half-made file and is finished by running
//!   it again.
//! - A source file is deleted only with `--move`, and only once the store holds the same
//!   inode or a byte-identical copy.
//! - Sources are user-controlled trees read as root. The SRC path itself is resolved from
//!   `/` one component at a time, following only root's symlinks: a user's `~/.cache` made
//!   a symlink to another user's is refused, naming it and its owner. Below it, every step
//!   opens one name relative to its parent's handle with O_NOFOLLOW, symlinks are recreated
//!   as symlinks and never followed, and a hard link to a file owned by someone else is
//!   refused.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::format::human_bytes;
use super::mounts;
use crate::cache::layout::{self, CacheRoot, HUB, HomeEntry, IMPORT_TEMP_SUFFIX, Place};
use crate::cache::walk::{self, Entry, Node, Scope, Visit, Visitor};
use crate::claim::{self, CreateError};
use crate::error::{CmdResult, Error};
use crate::policy::Policy;
use crate::sys::{self, Name, SysResult, TimeSet};

/// Why a source entry is not imported, judged by its name alone.
pub fn skip_reason(name: &[u8]) -> Option<&'static str> {
    if layout::is_temporary(name) {
        Some("temporary file")
    } else if layout::is_lock(name) {
        Some("lock file")
    } else {
        None
    }
}

/// The temporary name under which a replacement ref, complete and given its owner, is linked
/// before being renamed over the old one: derived from the final name, so a re-run removes
/// the leftover of an interrupted one.
pub fn temp_name(name: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(name.len() + 20);
    t.push(b'.');
    if name.len() + 1 + IMPORT_TEMP_SUFFIX.len() <= 255 {
        t.extend_from_slice(name);
    } else {
        // FNV-1a: a short stand-in for a name too long to extend.
        let h = name.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        t.extend_from_slice(format!("{h:016x}").as_bytes());
    }
    t.extend_from_slice(IMPORT_TEMP_SUFFIX.as_bytes());
    t
}

/// What the store already has under a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Existing {
    None,
    File { id: (u64, u64), size: u64 },
    Symlink(Vec<u8>),
    Other,
}

impl Existing {
    fn of(node: Option<&Node>) -> Existing {
        match node {
            None => Existing::None,
            Some(n) if n.is_file() => Existing::File {
                id: n.id(),
                size: n.size(),
            },
            Some(n) if n.is_symlink() => match sys::readlink(n.fd()) {
                Ok(t) => Existing::Symlink(t),
                Err(_) => Existing::Other,
            },
            Some(_) => Existing::Other,
        }
    }
}

/// A source file as far as the decision goes.
#[derive(Clone, Copy, Debug)]
pub struct SrcFile {
    pub id: (u64, u64),
    pub size: u64,
    pub uid: u32,
    pub nlink: u64,
}

impl SrcFile {
    fn of(n: &Node) -> SrcFile {
        SrcFile {
            id: n.id(),
            size: n.size(),
            uid: n.st.st_uid,
            nlink: n.st.st_nlink,
        }
    }
}

/// What to do with a source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileAction {
    /// New: hard-link it into the store.
    Link,
    /// New: copy and verify it.
    Copy,
    /// The store entry is this very inode (an earlier import linked it).
    SameFile,
    /// The store has a file of that name and size: with content-named blobs, the same data.
    Duplicate,
    /// The store has a file of that name and size, but the name says nothing of the content
    /// (datasets, xet, snapshot files): the same data only if the bytes are.
    Compare,
    /// The store has something else under that name: keep the store's.
    Conflict,
    /// Not imported, for the reason given.
    Refuse(&'static str),
}

/// Decides what to do with a source file. `tree_owner` owns the source tree: a file with
/// other hard links is only taken from its own owner (a link planted in a user's cache
/// could name any file on the disk), and is copied, not linked, since changing its group
/// and mode would change every other name of it too. `content_named`: the file is a blob,
/// whose name is a hash of its content.
pub fn file_action(
    src: &SrcFile,
    existing: &Existing,
    same_fs: bool,
    tree_owner: u32,
    content_named: bool,
) -> FileAction {
    match existing {
        Existing::File { id, .. } if *id == src.id => FileAction::SameFile,
        Existing::File { size, .. } if *size == src.size && content_named => FileAction::Duplicate,
        Existing::File { size, .. } if *size == src.size => FileAction::Compare,
        Existing::None if src.nlink > 1 && (src.uid != tree_owner || src.uid == 0) => {
            FileAction::Refuse("has other hard links and is not owned by the cache's owner")
        }
        Existing::None if same_fs && src.nlink == 1 => FileAction::Link,
        Existing::None => FileAction::Copy,
        _ => FileAction::Conflict,
    }
}

/// What became of a source file, for the summary and `--move`.
struct Outcome {
    action: FileAction,
    /// The store's file under its name, when known.
    store: Option<Node>,
    /// Whether the store's file was compared with the source and holds the same bytes.
    verified: bool,
}

/// What to do with a ref (`refs/main` holds the commit a branch points to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefAction {
    Write,
    Replace,
    Keep,
    Same,
}

/// Merges refs: the newest (by mtime) wins; equal contents need nothing.
pub fn ref_action(
    src: &[u8],
    src_mtime: SystemTime,
    store: Option<(&[u8], SystemTime)>,
) -> RefAction {
    match store {
        None => RefAction::Write,
        Some((content, _)) if content == src => RefAction::Same,
        Some((_, mtime)) if src_mtime > mtime => RefAction::Replace,
        Some(_) => RefAction::Keep,
    }
}

/// Counts for the summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub repos: u64,
    pub repos_new: u64,
    pub blobs_imported: u64,
    pub blobs_deduplicated: u64,
    pub blobs_already: u64,
    pub files_imported: u64,
    pub files_deduplicated: u64,
    pub bytes_imported: u64,
    pub bytes_saved: u64,
    pub linked: u64,
    pub copied: u64,
    pub symlinks: u64,
    pub refs_written: u64,
    pub refs_kept: u64,
    pub skipped: u64,
    pub removed: u64,
    pub notes: Vec<String>,
    pub errors: Vec<String>,
}

impl Summary {
    pub fn render(&self, dry: bool) -> String {
        let head = if dry {
            "import summary (dry run: nothing was changed)"
        } else {
            "import summary"
        };
        let mut s = format!("{head}:\n");
        s += &format!(
            "  repos: {} ({} new, {} merged into existing)\n",
            self.repos,
            self.repos_new,
            self.repos - self.repos_new
        );
        s += &format!(
            "  blobs: {} imported, {} deduplicated, {} already in the store\n",
            self.blobs_imported, self.blobs_deduplicated, self.blobs_already
        );
        s += &format!(
            "  other files: {} imported, {} already in the store\n",
            self.files_imported, self.files_deduplicated
        );
        s += &format!(
            "  bytes imported: {} ({})\n",
            self.bytes_imported,
            human_bytes(self.bytes_imported)
        );
        s += &format!(
            "  bytes saved by deduplication: {} ({})\n",
            self.bytes_saved,
            human_bytes(self.bytes_saved)
        );
        s += &format!(
            "  {} hard-linked, {} copied and verified, {} symlinks created, refs {} written and {} kept\n",
            self.linked, self.copied, self.symlinks, self.refs_written, self.refs_kept
        );
        s += &format!(
            "  skipped temporary and lock files: {}; source entries removed: {}\n",
            self.skipped, self.removed
        );
        for n in &self.notes {
            s += &format!("  note: {n}\n");
        }
        for e in &self.errors {
            s += &format!("  error: {e}\n");
        }
        s
    }
}

/// A directory of the store being merged into: its handle once it exists (`None` while a
/// dry run only plans to create it), its path in the store, for messages and plans, and
/// what part of a cache it is.
struct Dst {
    node: Option<Node>,
    rel: PathBuf,
    part: Part,
}

/// The state of one import run.
struct Importer {
    policy: Policy,
    dry: bool,
    move_sources: bool,
    store_dev: u64,
    /// Files a dry run would have created, by store path, with their size.
    planned: HashMap<PathBuf, u64>,
    /// Directories a dry run would have created.
    planned_dirs: HashSet<PathBuf>,
    /// Hub repos seen, and those this run created, by name.
    repos: HashSet<OsString>,
    new_repos: HashSet<OsString>,
    summary: Summary,
    progress: ProgressBar,
    /// Owner of the source tree being imported.
    tree_owner: u32,
}

/// What the import reports when an entry it made was replaced before it handed it over.
const SWAPPED: i32 = libc::ESTALE;

fn errno_str(e: i32) -> String {
    if e == SWAPPED {
        "replaced by something else while being created; left alone".into()
    } else {
        io::Error::from_raw_os_error(e).to_string()
    }
}

/// A new file without a name in `dir`, which gets one only through `linkat`.
fn tmpfile(dir: &Node) -> io::Result<File> {
    match sys::open_tmpfile(dir.fd(), 0o600) {
        Ok(fd) => Ok(File::from(fd)),
        Err(libc::EOPNOTSUPP | libc::EISDIR) => Err(io::Error::other(
            "the store's filesystem has no O_TMPFILE, which importing needs",
        )),
        Err(e) => Err(io::Error::from_raw_os_error(e)),
    }
}

fn name_of(n: &OsStr) -> SysResult<Name> {
    Name::new(n)
}

/// Reads a whole (small) file through its handle, up to `limit` bytes.
fn read_small(node: &Node, limit: u64) -> io::Result<Vec<u8>> {
    let fd = sys::reopen(node.fd(), libc::O_RDONLY).map_err(io::Error::from_raw_os_error)?;
    let mut out = Vec::new();
    File::from(fd).take(limit + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(io::Error::other("too large"));
    }
    Ok(out)
}

/// Whether two regular files hold the same bytes.
fn same_bytes(a: &Node, b: &Node) -> io::Result<bool> {
    if a.size() != b.size() {
        return Ok(false);
    }
    let open = |n: &Node| {
        sys::reopen(n.fd(), libc::O_RDONLY)
            .map(File::from)
            .map_err(io::Error::from_raw_os_error)
    };
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read(&mut buf[done..])? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

impl Importer {
    fn note(&mut self, msg: String) {
        self.summary.notes.push(msg);
    }

    fn error(&mut self, what: &Path, e: impl std::fmt::Display) {
        self.summary.errors.push(format!("{}: {e}", what.display()));
    }

    /// What the store (or, in a dry run, the plan) has under `name` in `dst`.
    fn existing(&self, dst: &Dst, name: &OsStr) -> SysResult<(Existing, Option<Node>)> {
        if let Some(&size) = self.planned.get(&dst.rel.join(name)) {
            return Ok((Existing::File { id: (0, 0), size }, None));
        }
        let node = match &dst.node {
            Some(d) => d.child_opt(name)?,
            None => None,
        };
        Ok((Existing::of(node.as_ref()), node))
    }

    /// Gives the store entry behind `fd`, made from `src`, the source's owner, the group and
    /// the policy's mode.
    fn give(&self, fd: BorrowedFd<'_>, src: &Node) -> SysResult<()> {
        let mode = (!src.is_symlink()).then(|| self.policy.mode(src.kind(), src.st.st_mode));
        claim::give(
            fd,
            &self.policy,
            Some(src.st.st_uid),
            Some(self.policy.gid),
            mode,
        )
    }

    /// The temporary name for `name`, with any leftover of an interrupted run removed.
    fn fresh_temp(&self, dir: &Node, name: &OsStr, is_dir: bool) -> SysResult<Name> {
        let tmp = Name::new(OsStr::from_bytes(&temp_name(name.as_bytes())))?;
        match sys::unlink_at(dir.fd(), &tmp, is_dir) {
            Ok(()) | Err(libc::ENOENT) => Ok(tmp),
            Err(e) => Err(e),
        }
    }

    /// The store directory `name` in `dst`, created (owned like `src`) if missing, as the
    /// `part` of a cache.
    fn ensure_dir(&mut self, dst: &Dst, name: &OsStr, src: &Node, part: Part) -> Option<Dst> {
        let rel = dst.rel.join(name);
        let r = (|| -> SysResult<Option<Node>> {
            let Some(parent) = &dst.node else {
                return Ok(None);
            };
            if let Some(n) = parent.child_opt(name)? {
                if !n.is_dir() {
                    return Err(libc::ENOTDIR);
                }
                // Root's and 0700: made by an import interrupted before handing it over.
                if n.st.st_uid == 0 && n.st.st_mode & 0o777 == 0o700 && !self.dry {
                    self.give(n.fd(), src)?;
                }
                return Ok(Some(n));
            }
            if self.dry {
                self.planned_dirs.insert(rel.clone());
                return Ok(None);
            }
            let n = name_of(name)?;
            // 0700 until handed over: a directory of root's with that mode is one an
            // interrupted import made (see above).
            let made = claim::create(
                parent.fd(),
                &n,
                libc::S_IFDIR,
                || sys::mkdir_at(parent.fd(), &n, 0o700),
                |_, st| st.st_mode & 0o777 == 0o700,
                |h| self.give(h, src),
            );
            match made {
                Ok((fd, st)) => Ok(Some(Node { fd, st })),
                // Made meanwhile: merge into it if it is a directory.
                Err(CreateError::Exists) => {
                    let made = parent.child(name)?;
                    if made.is_dir() {
                        Ok(Some(made))
                    } else {
                        Err(libc::ENOTDIR)
                    }
                }
                Err(CreateError::Swapped) => Err(SWAPPED),
                Err(CreateError::Sys(e)) => Err(e),
            }
        })();
        match r {
            Ok(node) => Some(Dst { node, rel, part }),
            Err(libc::ENOTDIR) => {
                self.note(format!(
                    "{}: the store has a non-directory there; kept it, skipped the source directory",
                    rel.display()
                ));
                None
            }
            Err(e) => {
                self.error(&rel, errno_str(e));
                None
            }
        }
    }

    /// With `--move`, deletes the source entry if its name still holds the same inode.
    fn remove_source(&mut self, e: &Entry<'_>, path: &Path) {
        if !self.move_sources || self.dry {
            return;
        }
        let (parent, name, src) = (e.parent, e.name, e.node);
        let r = (|| -> SysResult<()> {
            let now = parent.child(name)?;
            if now.id() != src.id() {
                return Err(libc::ESTALE);
            }
            sys::unlink_at(parent.fd(), &name_of(name)?, src.is_dir())
        })();
        match r {
            Ok(()) => self.summary.removed += 1,
            // A directory still holding skipped or conflicting entries stays.
            Err(libc::ENOTEMPTY | libc::EEXIST) if src.is_dir() => {}
            Err(e) => self.error(path, format!("not removed: {}", errno_str(e))),
        }
    }

    /// Copies `src` into the new file `out`, syncs it and compares it with the source.
    fn copy_verified(&self, src: &Node, out: &File) -> io::Result<()> {
        let mut input = File::from(
            sys::reopen(src.fd(), libc::O_RDONLY).map_err(io::Error::from_raw_os_error)?,
        );
        let mut output = out;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = read_full(&mut input, &mut buf)?;
            if n == 0 {
                break;
            }
            output.write_all(&buf[..n])?;
            total += n as u64;
            self.progress.inc(n as u64);
        }
        output.sync_all()?;
        let copy = Node {
            st: sys::fstat(output.as_fd()).map_err(io::Error::from_raw_os_error)?,
            fd: sys::reopen(output.as_fd(), libc::O_PATH).map_err(io::Error::from_raw_os_error)?,
        };
        if total != src.size() || !same_bytes(src, &copy)? {
            return Err(io::Error::other(
                "the copy differs from the source (changed while copying?)",
            ));
        }
        Ok(())
    }

    /// Puts a new file into the store as `name`: `src` itself, hard-linked, or a verified
    /// copy made without a name. Either has its owner, group and mode before it gets the
    /// name, and `linkat` replaces nothing: `Ok(false)` if the name appeared meanwhile.
    fn place_file(&self, dir: &Node, name: &OsStr, src: &Node, link: bool) -> io::Result<bool> {
        let e = io::Error::from_raw_os_error;
        let n = name_of(name).map_err(e)?;
        let linked = if link {
            self.give(src.fd(), src).map_err(e)?;
            self.progress.inc(src.size());
            sys::link_at(src.fd(), dir.fd(), &n)
        } else {
            let out = tmpfile(dir)?;
            self.copy_verified(src, &out)?;
            let t = |s, ns| TimeSet::At(sys::system_time(s, ns));
            self.give(out.as_fd(), src)
                .and_then(|()| {
                    sys::utimens(
                        out.as_fd(),
                        t(src.st.st_atime, src.st.st_atime_nsec),
                        t(src.st.st_mtime, src.st.st_mtime_nsec),
                    )
                })
                .map_err(e)?;
            if self.move_sources {
                // The owner and mode too, before the source goes.
                out.sync_all()?;
            }
            sys::link_at(out.as_fd(), dir.fd(), &n)
        };
        match linked {
            Ok(()) => {}
            Err(libc::EEXIST) => return Ok(false),
            Err(err) => return Err(e(err)),
        }
        if self.move_sources {
            // The source goes next: make the new name durable first.
            let d = sys::open_dir(dir.fd()).map_err(e)?;
            sys::fsync(d.as_fd(), false).map_err(e)?;
        }
        Ok(true)
    }

    /// Brings a source file into the store (`blob`: named by its content).
    fn import_file(&mut self, e: &Entry<'_>, dst: &Dst, blob: bool) {
        let path = dst.rel.join(e.name);
        match self.file_outcome(e, dst, blob) {
            Ok(o) => self.count_file(e, dst, &path, o, blob),
            Err(err) => self.error(&path, err),
        }
    }

    /// Decides what to do with a source file, does it, and settles a comparison.
    fn file_outcome(&self, e: &Entry<'_>, dst: &Dst, blob: bool) -> io::Result<Outcome> {
        let (existing, store) = self
            .existing(dst, e.name)
            .map_err(|err| io::Error::other(errno_str(err)))?;
        let action = file_action(
            &SrcFile::of(e.node),
            &existing,
            e.node.st.st_dev == self.store_dev,
            self.tree_owner,
            blob,
        );
        let (action, store) = self.put_new(e, dst, action, store, blob)?;
        self.compare(e.node, action, store)
    }

    /// Puts a new file into the store (a dry run only plans it). One that appeared under
    /// its name meanwhile is dealt with as an existing file.
    fn put_new(
        &self,
        e: &Entry<'_>,
        dst: &Dst,
        action: FileAction,
        store: Option<Node>,
        blob: bool,
    ) -> io::Result<(FileAction, Option<Node>)> {
        if !matches!(action, FileAction::Link | FileAction::Copy) || self.dry {
            return Ok((action, store));
        }
        let Some(dir) = &dst.node else {
            return Err(io::Error::other("store directory missing"));
        };
        if self.place_file(dir, e.name, e.node, action == FileAction::Link)? {
            return Ok((action, store));
        }
        let action = if blob {
            FileAction::Duplicate
        } else {
            FileAction::Compare
        };
        Ok((action, dir.child(e.name).ok()))
    }

    /// Settles [`FileAction::Compare`]: the same bytes make a duplicate; anything else is
    /// a conflict, which keeps the store's.
    fn compare(&self, src: &Node, action: FileAction, store: Option<Node>) -> io::Result<Outcome> {
        let mut verified = false;
        let action = match (action, &store) {
            // Only planned by this dry run: nothing to compare with yet.
            (FileAction::Compare, None) if self.dry => FileAction::Duplicate,
            (FileAction::Compare, Some(n)) if n.is_file() => {
                verified = same_bytes(src, n)?;
                if verified {
                    FileAction::Duplicate
                } else {
                    FileAction::Conflict
                }
            }
            (FileAction::Compare, _) => FileAction::Conflict,
            (action, _) => action,
        };
        Ok(Outcome {
            action,
            store,
            verified,
        })
    }

    /// Counts what became of a source file and, with `--move`, removes the source once the
    /// store holds it.
    fn count_file(&mut self, e: &Entry<'_>, dst: &Dst, path: &Path, o: Outcome, blob: bool) {
        let size = e.node.size();
        let s = &mut self.summary;
        match o.action {
            FileAction::Link | FileAction::Copy => {
                if o.action == FileAction::Link {
                    s.linked += 1;
                } else {
                    s.copied += 1;
                }
                if blob {
                    s.blobs_imported += 1;
                } else {
                    s.files_imported += 1;
                }
                s.bytes_imported += size;
                if self.dry {
                    self.planned.insert(path.to_owned(), size);
                    self.progress.inc(size);
                }
                self.remove_source(e, path);
            }
            FileAction::SameFile => {
                if blob {
                    s.blobs_already += 1;
                } else {
                    s.files_deduplicated += 1;
                }
                self.remove_source(e, path);
            }
            FileAction::Duplicate => {
                if blob {
                    s.blobs_deduplicated += 1;
                } else {
                    s.files_deduplicated += 1;
                }
                s.bytes_saved += size;
                self.progress.inc(size);
                self.remove_duplicate(e, dst, path, o);
            }
            // (Compare was settled; were it not, keeping the store's is the safe way.)
            FileAction::Conflict | FileAction::Compare => self.note(format!(
                "{}: the store has a different entry there; kept the store's",
                path.display()
            )),
            FileAction::Refuse(why) => {
                self.note(format!("{}: not imported: {why}", path.display()))
            }
        }
    }

    /// With `--move`, removes a source file the store already has under its name, once the
    /// store's is known to hold the same bytes.
    fn remove_duplicate(&mut self, e: &Entry<'_>, dst: &Dst, path: &Path, o: Outcome) {
        if !self.move_sources || self.dry {
            return;
        }
        let store = o.store.or_else(|| dst.node.as_ref()?.child(e.name).ok());
        let same =
            o.verified || store.is_some_and(|n| same_bytes(e.node, &n).is_ok_and(|same| same));
        if same {
            self.remove_source(e, path);
        } else {
            self.note(format!(
                "{}: differs from the store's file of the same name; source kept",
                path.display()
            ));
        }
    }

    /// Recreates a source symlink in the store (never following it).
    fn import_symlink(&mut self, e: &Entry<'_>, dst: &Dst) {
        let path = dst.rel.join(e.name);
        let (name, src) = (e.name, e.node);
        let r = (|| -> SysResult<bool> {
            let target = sys::readlink(src.fd())?;
            let (existing, _) = self.existing(dst, name)?;
            match existing {
                Existing::Symlink(t) if t == target => return Ok(true),
                Existing::None => {}
                _ => return Ok(false),
            }
            let dir = match &dst.node {
                Some(dir) if !self.dry => dir,
                _ => {
                    self.summary.symlinks += 1;
                    return Ok(true);
                }
            };
            let n = name_of(name)?;
            let c = std::ffi::CString::new(target.clone()).map_err(|_| libc::EINVAL)?;
            let made = claim::create(
                dir.fd(),
                &n,
                libc::S_IFLNK,
                || sys::symlink_at(&c, dir.fd(), &n),
                |h, _| sys::readlink(h).is_ok_and(|t| t == target),
                |h| self.give(h, src),
            );
            match made {
                Ok(_) => {}
                // Made meanwhile: fine if it is the same symlink.
                Err(CreateError::Exists) => {
                    let (now, _) = self.existing(dst, name)?;
                    return Ok(now == Existing::Symlink(target));
                }
                Err(CreateError::Swapped) => return Err(SWAPPED),
                Err(CreateError::Sys(e)) => return Err(e),
            }
            self.summary.symlinks += 1;
            Ok(true)
        })();
        match r {
            Ok(true) => self.remove_source(e, &path),
            Ok(false) => self.note(format!(
                "{}: the store has a different entry there; kept the store's",
                path.display()
            )),
            Err(err) => self.error(&path, errno_str(err)),
        }
    }

    /// Merges a ref (`refs/main`, `refs/pr/1`): the newest wins.
    fn merge_ref(&mut self, e: &Entry<'_>, dst: &Dst) {
        let path = dst.rel.join(e.name);
        match self.ref_outcome(e, dst) {
            Ok(RefAction::Write | RefAction::Replace) => {
                self.summary.refs_written += 1;
                self.remove_source(e, &path);
            }
            Ok(RefAction::Keep | RefAction::Same) => {
                self.summary.refs_kept += 1;
                self.remove_source(e, &path);
            }
            Err(err) => self.error(&path, err),
        }
    }

    /// Decides what to do with a ref and does it.
    fn ref_outcome(&self, e: &Entry<'_>, dst: &Dst) -> io::Result<RefAction> {
        let content = read_small(e.node, 4096)?;
        let (_, store) = self
            .existing(dst, e.name)
            .map_err(io::Error::from_raw_os_error)?;
        let store_content = match &store {
            Some(n) if n.is_file() => Some((read_small(n, 4096)?, n.mtime())),
            Some(_) => return Err(io::Error::other("the store has a non-file there")),
            None => None,
        };
        let action = ref_action(
            &content,
            e.node.mtime(),
            store_content.as_ref().map(|(c, t)| (c.as_slice(), *t)),
        );
        if !matches!(action, RefAction::Write | RefAction::Replace) || self.dry {
            return Ok(action);
        }
        let Some(dir) = &dst.node else {
            return Ok(action);
        };
        let replace = action == RefAction::Replace;
        if self.write_ref(dir, e.name, e.node, &content, replace)? {
            Ok(action)
        } else {
            // Another ref appeared meanwhile: it stays.
            Ok(RefAction::Keep)
        }
    }

    /// Writes a ref into a new file without a name, complete and given its owner before it
    /// gets one. A new ref is linked in place (`Ok(false)` if one appeared meanwhile); a
    /// replacement is linked under its temporary name and renamed over the old one, the one
    /// way to replace a name at once.
    fn write_ref(
        &self,
        dir: &Node,
        name: &OsStr,
        src: &Node,
        content: &[u8],
        replace: bool,
    ) -> io::Result<bool> {
        let e = io::Error::from_raw_os_error;
        let mut f = tmpfile(dir)?;
        f.write_all(content)?;
        let mtime = TimeSet::At(src.mtime());
        self.give(f.as_fd(), src)
            .and_then(|()| sys::utimens(f.as_fd(), mtime, mtime))
            .map_err(e)?;
        f.sync_all()?;
        let n = name_of(name).map_err(e)?;
        if !replace {
            return match sys::link_at(f.as_fd(), dir.fd(), &n) {
                Ok(()) => Ok(true),
                Err(libc::EEXIST) => Ok(false),
                Err(err) => Err(e(err)),
            };
        }
        let tmp = self.fresh_temp(dir, name, false).map_err(e)?;
        sys::link_at(f.as_fd(), dir.fd(), &tmp).map_err(e)?;
        if let Err(err) = sys::rename_at(dir.fd(), &tmp, dir.fd(), &n, 0) {
            let _ = sys::unlink_at(dir.fd(), &tmp, false);
            return Err(e(err));
        }
        Ok(true)
    }

    /// Whether the store has nothing yet under `name` in `dst` (nor does this dry run plan
    /// a directory there).
    fn is_new_dir(&self, dst: &Dst, name: &OsStr) -> bool {
        !self.planned_dirs.contains(&dst.rel.join(name))
            && self
                .existing(dst, name)
                .is_ok_and(|(e, _)| e == Existing::None)
    }

    /// Counts a repo being merged, and shows it in the progress line.
    fn count_repo(&mut self, name: &OsStr, new: bool) {
        if new {
            self.new_repos.insert(name.to_owned());
        }
        self.repos.insert(name.to_owned());
        self.summary.repos = self.repos.len() as u64;
        self.summary.repos_new = self.new_repos.len() as u64;
        self.progress
            .set_message(name.to_string_lossy().into_owned());
    }

    /// One line for a merged repo: what it brought since the summary was `before`.
    fn report_repo(&self, name: &OsStr, before: &Summary) {
        let s = &self.summary;
        let verb = if self.dry { "would import" } else { "imported" };
        let line = format!(
            "{verb} {}: {} blobs ({}), {} deduplicated ({} saved), {} already there, refs {} written",
            name.to_string_lossy(),
            s.blobs_imported - before.blobs_imported,
            human_bytes(s.bytes_imported - before.bytes_imported),
            s.blobs_deduplicated - before.blobs_deduplicated,
            human_bytes(s.bytes_saved - before.bytes_saved),
            s.blobs_already - before.blobs_already,
            s.refs_written - before.refs_written,
        );
        self.progress.suspend(|| println!("{line}"));
    }

    fn import_source(&mut self, path: &Path, store: &Node) -> Result<(), String> {
        let root = Node::open_untrusted(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if root.is_symlink() {
            return Err(format!(
                "{} is a symlink: give the directory it points to",
                path.display()
            ));
        }
        if !root.is_dir() {
            return Err(format!("{} is not a directory", path.display()));
        }
        let names = root
            .names()
            .map_err(|e| format!("{}: {}", path.display(), errno_str(e)))?;
        let names_b: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
        let kind = layout::cache_root(&names_b).ok_or_else(|| {
            format!(
                "{} does not look like a Hugging Face cache (no hub/ and no models--*/datasets--* directories)",
                path.display()
            )
        })?;
        self.tree_owner = root.st.st_uid;
        let store_dst = Dst {
            node: Some(store.try_clone().map_err(errno_str)?),
            rel: PathBuf::new(),
            part: Part::Home,
        };
        let top = match kind {
            CacheRoot::Home => store_dst,
            CacheRoot::Hub => {
                match self.ensure_dir(&store_dst, OsStr::new(HUB), &root, Part::Hub) {
                    Some(hub) => hub,
                    None => return Ok(()),
                }
            }
        };
        let mut merge = Merge {
            imp: self,
            src: path,
            dsts: vec![top],
        };
        walk::visit(&root, Scope::AnyFilesystem, &mut merge)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(())
    }
}

/// What part of a cache a directory is, which decides how its entries merge.
enum Part {
    /// An `HF_HOME`: its entries are told apart by name (the hub cache, other caches,
    /// tokens, anything else).
    Home,
    /// A hub cache: repos are merged, `.locks` is not, anything else but files is left alone.
    Hub,
    /// A repo, with the summary as it was before it, for the repo's line of the report.
    Repo(Box<Summary>),
    /// `refs/` or below: the newest ref wins.
    Refs,
    /// Anything else, merged entry by entry; `blobs`: below `blobs/`, whose names vouch for
    /// their content.
    Tree { blobs: bool },
}

/// One source being merged into the store: the walk's visitor. It keeps the store
/// directories matching the source directories the walk is in, the walk's root's first.
struct Merge<'a> {
    imp: &'a mut Importer,
    /// The source's path, for notes on what is left alone.
    src: &'a Path,
    dsts: Vec<Dst>,
}

impl Visitor for Merge<'_> {
    fn enter(&mut self, e: &Entry<'_>) -> Visit {
        match self.dsts.last().map(|d| &d.part) {
            None => Visit::Stop,
            Some(Part::Home) => self.home_entry(e),
            Some(Part::Hub) => self.hub_entry(e),
            Some(Part::Repo(_)) => match e.place {
                Place::Refs => self.descend(e, Part::Refs),
                Place::Blobs => self.entry(e, true),
                _ => self.entry(e, false),
            },
            Some(Part::Refs) => self.ref_entry(e),
            Some(&Part::Tree { blobs }) => self.entry(e, blobs),
        }
    }

    fn leave(&mut self, e: &Entry<'_>) {
        let Some(dst) = self.dsts.pop() else {
            return;
        };
        if let Part::Repo(before) = &dst.part {
            self.imp.report_repo(e.name, before);
        }
        self.imp.remove_source(e, &dst.rel);
    }

    fn unreadable(&mut self, rel: &Path, errno: i32) -> io::Result<()> {
        // Below the root, store paths are source paths.
        let root = self.dsts.first().map(|d| d.rel.as_path());
        let path = root.unwrap_or(Path::new("")).join(rel);
        self.imp.error(&path, errno_str(errno));
        Ok(())
    }
}

impl Merge<'_> {
    /// An entry of an `HF_HOME`.
    fn home_entry(&mut self, e: &Entry<'_>) -> Visit {
        let p = self.src.join(e.rel);
        match layout::home_entry(e.name.as_bytes()) {
            HomeEntry::Hub if e.node.is_dir() => self.descend(e, Part::Hub),
            HomeEntry::Hub => Visit::Skip,
            HomeEntry::Cache => self.entry(e, false),
            HomeEntry::Secret => {
                self.imp
                    .note(format!("{}: a user's token; never copied", p.display()));
                Visit::Skip
            }
            HomeEntry::Other => {
                self.imp.note(format!(
                    "{}: not part of the shared cache; left alone",
                    p.display()
                ));
                Visit::Skip
            }
        }
    }

    /// An entry of a hub cache.
    fn hub_entry(&mut self, e: &Entry<'_>) -> Visit {
        match e.place {
            Place::Locks => Visit::Skip,
            Place::Repo => self.enter_repo(e),
            _ if e.node.is_file() => self.entry(e, false),
            _ => {
                self.imp.note(format!(
                    "{}: not a repo directory or a file; left alone",
                    self.src.join(e.rel).display()
                ));
                Visit::Skip
            }
        }
    }

    /// A repo directory: merged into the store's, and reported on a line of its own.
    fn enter_repo(&mut self, e: &Entry<'_>) -> Visit {
        let Some(hub) = self.dsts.last() else {
            return Visit::Stop;
        };
        let new = self.imp.is_new_dir(hub, e.name);
        let before = Box::new(self.imp.summary.clone());
        let visit = self.descend(e, Part::Repo(before));
        if visit == Visit::Descend {
            self.imp.count_repo(e.name, new);
        }
        visit
    }

    /// An entry of `refs/`.
    fn ref_entry(&mut self, e: &Entry<'_>) -> Visit {
        if e.node.is_dir() {
            return self.descend(e, Part::Refs);
        }
        if !e.node.is_file() || skip_reason(e.name.as_bytes()).is_some() {
            return self.entry(e, false);
        }
        if let Some(dst) = self.dsts.last() {
            self.imp.merge_ref(e, dst);
        }
        Visit::Skip
    }

    /// Merges one entry of any kind (`blobs`: below `blobs/`).
    fn entry(&mut self, e: &Entry<'_>, blobs: bool) -> Visit {
        if skip_reason(e.name.as_bytes()).is_some() {
            self.imp.summary.skipped += 1;
            return Visit::Skip;
        }
        if e.node.is_dir() {
            return self.descend(e, Part::Tree { blobs });
        }
        let Some(dst) = self.dsts.last() else {
            return Visit::Stop;
        };
        if e.node.is_file() {
            self.imp.import_file(e, dst, blobs);
        } else if e.node.is_symlink() {
            self.imp.import_symlink(e, dst);
        } else {
            let p = dst.rel.join(e.name);
            self.imp
                .note(format!("{}: special file not imported", p.display()));
        }
        Visit::Skip
    }

    /// Goes into a source directory, merging it into the store's of that name (made if
    /// missing), unless it is nested deeper than any cache: then it is left alone.
    fn descend(&mut self, e: &Entry<'_>, part: Part) -> Visit {
        let Some(dst) = self.dsts.last() else {
            return Visit::Stop;
        };
        if e.at_limit() {
            self.imp.note(format!(
                "{}: nested deeper than {} levels; not imported",
                dst.rel.join(e.name).display(),
                walk::MAX_DEPTH
            ));
            return Visit::Skip;
        }
        match self.imp.ensure_dir(dst, e.name, e.node, part) {
            Some(d) => {
                self.dsts.push(d);
                Visit::Descend
            }
            None => Visit::Skip,
        }
    }
}

fn progress_bar() -> ProgressBar {
    // Drawn only when stderr is a terminal.
    let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} {elapsed} {binary_bytes} ({binary_bytes_per_sec}) {msg}",
    ) {
        pb.set_style(style);
    }
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// What `import` is asked to do.
#[derive(Debug)]
pub struct Options {
    pub sources: Vec<PathBuf>,
    pub store: PathBuf,
    /// Overrides the group of the mount serving the store.
    pub group: Option<String>,
    pub dry_run: bool,
    /// Delete each source file once the store holds it.
    pub move_sources: bool,
}

/// Imports the caches `o.sources` into the store.
pub fn run(o: &Options) -> CmdResult {
    super::require_root()?;
    let store_path = o.store.clone();
    let store = Node::open_trusted(&store_path).map_err(|e| {
        Error::Usage(format!(
            "store {}: {e} (mount it once or run scripts/install.sh to create it)",
            store_path.display()
        ))
    })?;
    if !store.is_dir() {
        return Err(Error::Usage(format!(
            "store {} is not a directory",
            store_path.display()
        )));
    }
    let policy = mounts::policy_for_store(&store_path, o.group.as_deref()).map_err(Error::Usage)?;
    // One import at a time per store: the lock goes with this descriptor.
    let lock = sys::open_dir(store.fd())
        .and_then(|fd| sys::flock(fd.as_fd(), libc::LOCK_EX | libc::LOCK_NB).map(|()| fd));
    let _lock = match lock {
        Ok(fd) => fd,
        Err(libc::EWOULDBLOCK) => {
            return Err(Error::Runtime(format!(
                "another import into {} is running",
                store_path.display()
            )));
        }
        Err(e) => {
            return Err(Error::Runtime(format!(
                "cannot lock {}: {}",
                store_path.display(),
                errno_str(e)
            )));
        }
    };
    let dry = o.dry_run;
    let mut imp = Importer {
        policy,
        dry,
        move_sources: o.move_sources,
        store_dev: store.st.st_dev,
        planned: HashMap::new(),
        planned_dirs: HashSet::new(),
        repos: HashSet::new(),
        new_repos: HashSet::new(),
        summary: Summary::default(),
        progress: progress_bar(),
        tree_owner: 0,
    };
    let mut failed = false;
    for src in &o.sources {
        let path = mounts::absolute(src);
        if let Err(e) = imp.import_source(&path, &store) {
            imp.progress.suspend(|| eprintln!("hfcachefs import: {e}"));
            failed = true;
        }
    }
    imp.progress.finish_and_clear();
    print!("{}", imp.summary.render(dry));
    Ok(if failed || !imp.summary.errors.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(id: u64, size: u64, uid: u32, nlink: u64) -> SrcFile {
        SrcFile {
            id: (1, id),
            size,
            uid,
            nlink,
        }
    }

    #[test]
    fn new_files_are_linked_on_one_filesystem_else_copied() {
        assert_eq!(
            file_action(&f(1, 10, 7, 1), &Existing::None, true, 7, true),
            FileAction::Link
        );
        assert_eq!(
            file_action(&f(1, 10, 7, 1), &Existing::None, false, 7, false),
            FileAction::Copy
        );
        // Another name of the inode exists: linking would change it too.
        assert_eq!(
            file_action(&f(1, 10, 7, 2), &Existing::None, true, 7, true),
            FileAction::Copy
        );
    }

    #[test]
    fn planted_hard_links_are_refused() {
        assert!(matches!(
            file_action(&f(1, 10, 0, 2), &Existing::None, true, 7, true),
            FileAction::Refuse(_)
        ));
        assert!(matches!(
            file_action(&f(1, 10, 8, 2), &Existing::None, false, 7, true),
            FileAction::Refuse(_)
        ));
        // Its owner's file with another link is fine once it is its own, as a copy.
        assert_eq!(
            file_action(&f(1, 10, 8, 1), &Existing::None, true, 7, true),
            FileAction::Link
        );
    }

    #[test]
    fn existing_blobs_deduplicate() {
        let same = Existing::File {
            id: (1, 1),
            size: 10,
        };
        let other = Existing::File {
            id: (1, 2),
            size: 10,
        };
        let short = Existing::File {
            id: (1, 2),
            size: 9,
        };
        assert_eq!(
            file_action(&f(1, 10, 7, 2), &same, true, 7, true),
            FileAction::SameFile
        );
        assert_eq!(
            file_action(&f(1, 10, 7, 1), &other, true, 7, true),
            FileAction::Duplicate
        );
        assert_eq!(
            file_action(&f(1, 10, 7, 1), &short, true, 7, true),
            FileAction::Conflict
        );
        assert_eq!(
            file_action(
                &f(1, 10, 7, 1),
                &Existing::Symlink(b"x".to_vec()),
                true,
                7,
                true
            ),
            FileAction::Conflict
        );
        // Names of other files say nothing of their content: same size is not enough.
        assert_eq!(
            file_action(&f(1, 10, 7, 1), &other, true, 7, false),
            FileAction::Compare
        );
        assert_eq!(
            file_action(&f(1, 10, 7, 2), &same, true, 7, false),
            FileAction::SameFile
        );
    }

    #[test]
    fn newest_ref_wins() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(ref_action(b"a", t0, None), RefAction::Write);
        assert_eq!(ref_action(b"a", t0, Some((b"a", t1))), RefAction::Same);
        assert_eq!(ref_action(b"b", t1, Some((b"a", t0))), RefAction::Replace);
        assert_eq!(ref_action(b"b", t0, Some((b"a", t1))), RefAction::Keep);
        assert_eq!(ref_action(b"b", t0, Some((b"a", t0))), RefAction::Keep);
    }

    #[test]
    fn skipped_names_and_temp_names() {
        assert!(skip_reason(b"abc.incomplete").is_some());
        assert!(skip_reason(b"abc.lock").is_some());
        assert!(skip_reason(b".abc.hfcachefs-import").is_some());
        assert!(skip_reason(b"abc").is_none());
        assert_eq!(temp_name(b"abc"), b".abc.hfcachefs-import");
        let long = vec![b'x'; 250];
        let t = temp_name(&long);
        assert!(t.len() <= 255 && layout::is_temporary(&t));
        assert_eq!(
            t,
            temp_name(&long),
            "deterministic, so a re-run replaces it"
        );
    }

    #[test]
    fn summary_names_the_savings() {
        let s = Summary {
            repos: 2,
            repos_new: 1,
            blobs_imported: 3,
            blobs_deduplicated: 2,
            bytes_imported: 3072,
            bytes_saved: 2048,
            ..Summary::default()
        };
        let text = s.render(false);
        assert!(text.contains("repos: 2 (1 new, 1 merged into existing)"));
        assert!(text.contains("blobs: 3 imported, 2 deduplicated"));
        assert!(text.contains("bytes saved by deduplication: 2048 (2.0 KiB)"));
        assert!(s.render(true).contains("dry run"));
    }
}
