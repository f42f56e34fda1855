//! `hfcachefs import SRC... [--store STORE] [--dry-run] [--move] [--group G]`: moves
//! existing Hugging Face caches (a `~/.cache/huggingface`, its `hub` directory, an old shared
//! `/huggingface`) into the store, so that what users already downloaded is shared at once
//! and each blob is kept once.
//!
//! - Hub repos are merged: blobs deduplicated by name (a blob's name is its etag, a hash of
//!   its content), snapshots and `.no_exist` markers merged, refs merged with the newest
//!   (by mtime) winning. `hub/.locks` is not imported (lock files are recreated on demand).
//! - The shared payloads of hub >= 1.33 (`hub/blobs/<2hex>/<xet hash>`, which repo blobs
//!   link to) are merged like blobs: each once, by name (its hash); the list of repo links
//!   beside each (`<hash>.refs`) becomes the union of the lists, written the way refs are.
//!   Their `.lock` files are not imported; the marker is. The byte figures count payloads
//!   (repo blobs that link to them are symlinks).
//! - Once every source is in, each repo imported is checked: every snapshot entry it brought
//!   must lead, through its blob and the payload that blob may link to, to a file in the
//!   store (links are read and their names looked up, never followed). A repo that does not
//!   is an error naming it and its entries (exit status 1); a dry run checks its plan.
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
//!   inode or a byte-identical copy: in a last pass over the source once every repo is
//!   checked, each name only if it still holds the inode imported. A repo that could not be
//!   completed stays whole in its source, and so do the shared payloads it links to.
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
use crate::cache::layout::{
    self, BLOBS, CacheRoot, HUB, HomeEntry, IMPORT_TEMP_SUFFIX, Place, SNAPSHOTS,
};
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

/// What a source file is, which decides how it is compared and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A repo's `blobs/<etag>`: named by its content.
    Blob,
    /// A shared payload, `blobs/<2hex>/<xet hash>` of the hub cache: named by its content.
    Payload,
    /// Anything else: its name says nothing of its content.
    Other,
}

impl Kind {
    fn content_named(self) -> bool {
        self != Kind::Other
    }
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
    /// Shared payloads (`blobs/<2hex>/<hash>` of a hub cache, hub >= 1.33).
    pub payloads_imported: u64,
    pub payloads_deduplicated: u64,
    pub payloads_already: u64,
    /// Repo blobs that are links to shared payloads.
    pub payload_links: u64,
    /// The lists of repo links beside payloads (`<hash>.refs`), merged.
    pub link_lists_written: u64,
    pub link_lists_kept: u64,
    /// Repos with snapshot entries that resolve to no complete file in the store.
    pub incomplete: Vec<String>,
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
            "  shared payloads: {} imported, {} deduplicated, {} already in the store; {} repo blobs link to them; link lists {} written and {} kept\n",
            self.payloads_imported,
            self.payloads_deduplicated,
            self.payloads_already,
            self.payload_links,
            self.link_lists_written,
            self.link_lists_kept
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
        if !self.incomplete.is_empty() {
            s += &format!(
                "  INCOMPLETE repos (snapshot entries resolving to no file in the store, see the errors): {}\n",
                self.incomplete.join(", ")
            );
        }
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
    /// Symlinks a dry run would have created, by store path, with their target.
    planned_links: HashMap<PathBuf, Vec<u8>>,
    /// With `--move`, the source entries the store holds, by path in their source and inode:
    /// removed once every source is in and every repo checked ([`Importer::finish_moves`]).
    deferred: HashSet<(PathBuf, (u64, u64))>,
    /// The sources walked, and the repos imported from them, to check once all are in.
    sources: Vec<Source>,
    checks: Vec<RepoCheck>,
    /// Hub repos seen, and those this run created, by name.
    repos: HashSet<OsString>,
    new_repos: HashSet<OsString>,
    summary: Summary,
    progress: ProgressBar,
    /// Owner of the source tree being imported.
    tree_owner: u32,
}

/// A source walked, for the last pass of `--move` over it.
struct Source {
    path: PathBuf,
    root: Node,
    /// Its shared payloads must all stay: a repo of it was left in it, or the walk had
    /// errors.
    keep_all: bool,
    /// The payloads a repo of it that could not be completed in the store links to.
    keep: HashSet<(Vec<u8>, Vec<u8>)>,
    /// Its repos (by inode) that could not be completed in the store: they stay whole.
    failed: HashSet<(u64, u64)>,
}

/// A repo imported from a source: what the store must have for it to be complete.
struct RepoCheck {
    source: usize,
    /// The repo directory in the source.
    src_id: (u64, u64),
    name: OsString,
    /// The repo in the store.
    rel: PathBuf,
    /// Its snapshot entries (not directories), relative to the repo.
    entries: Vec<PathBuf>,
    /// The shared payloads (shard, hash) its blobs link to in the source.
    payloads: Vec<(Vec<u8>, Vec<u8>)>,
    /// How many errors there were when it was entered, and whether importing it added some.
    errors_before: usize,
    errors: bool,
}

/// What the store (or, in a dry run, the plan) has at a path.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Found {
    File,
    Link(Vec<u8>),
    Dir,
    Missing,
    Other,
}

/// The lines of a list of repo links (`<hash>.refs`) with those of `src` added, each once,
/// or `None` if `store` has them all already.
pub fn merged_link_list(store: Option<&[u8]>, src: &[u8]) -> Option<Vec<u8>> {
    let lines = |b: &[u8]| -> Vec<Vec<u8>> {
        b.split(|&c| c == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    };
    let old = store.map(lines).unwrap_or_default();
    let mut seen: HashSet<Vec<u8>> = old.iter().cloned().collect();
    let added: Vec<Vec<u8>> = lines(src)
        .into_iter()
        .filter(|l| seen.insert(l.clone()))
        .collect();
    if store.is_some() && added.is_empty() {
        return None;
    }
    let mut kept = HashSet::new();
    let mut out = Vec::new();
    for l in old.iter().chain(added.iter()) {
        if kept.insert(l.as_slice()) {
            out.extend_from_slice(l);
            out.push(b'\n');
        }
    }
    Some(out)
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

    /// With `--move`, notes that the store holds the source entry: it is removed at the end
    /// (see [`Importer::finish_moves`]).
    fn remove_source(&mut self, e: &Entry<'_>) {
        if !self.move_sources || self.dry {
            return;
        }
        self.deferred.insert((e.rel.to_path_buf(), e.node.id()));
    }

    /// Deletes the source entry `name` of `parent` if it is still `src`.
    fn remove_now(&mut self, parent: &Node, name: &OsStr, src: &Node, path: &Path) {
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

    /// Brings a source file into the store.
    fn import_file(&mut self, e: &Entry<'_>, dst: &Dst, kind: Kind) {
        let path = dst.rel.join(e.name);
        match self.file_outcome(e, dst, kind) {
            Ok(o) => self.count_file(e, dst, &path, o, kind),
            Err(err) => self.error(&path, err),
        }
    }

    /// Decides what to do with a source file, does it, and settles a comparison.
    fn file_outcome(&self, e: &Entry<'_>, dst: &Dst, kind: Kind) -> io::Result<Outcome> {
        let (existing, store) = self
            .existing(dst, e.name)
            .map_err(|err| io::Error::other(errno_str(err)))?;
        let action = file_action(
            &SrcFile::of(e.node),
            &existing,
            e.node.st.st_dev == self.store_dev,
            self.tree_owner,
            kind.content_named(),
        );
        let (action, store) = self.put_new(e, dst, action, store, kind)?;
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
        kind: Kind,
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
        let action = if kind.content_named() {
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
    fn count_file(&mut self, e: &Entry<'_>, dst: &Dst, path: &Path, o: Outcome, kind: Kind) {
        let size = e.node.size();
        let s = &mut self.summary;
        match o.action {
            FileAction::Link | FileAction::Copy => {
                if o.action == FileAction::Link {
                    s.linked += 1;
                } else {
                    s.copied += 1;
                }
                match kind {
                    Kind::Blob => s.blobs_imported += 1,
                    Kind::Payload => s.payloads_imported += 1,
                    Kind::Other => s.files_imported += 1,
                }
                s.bytes_imported += size;
                if self.dry {
                    self.planned.insert(path.to_owned(), size);
                    self.progress.inc(size);
                }
                self.remove_source(e);
            }
            FileAction::SameFile => {
                match kind {
                    Kind::Blob => s.blobs_already += 1,
                    Kind::Payload => s.payloads_already += 1,
                    Kind::Other => s.files_deduplicated += 1,
                }
                self.remove_source(e);
            }
            FileAction::Duplicate => {
                match kind {
                    Kind::Blob => s.blobs_deduplicated += 1,
                    Kind::Payload => s.payloads_deduplicated += 1,
                    Kind::Other => s.files_deduplicated += 1,
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
            self.remove_source(e);
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
                    self.planned_links.insert(path.clone(), target);
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
            Ok(true) => self.remove_source(e),
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
                self.remove_source(e);
            }
            Ok(RefAction::Keep | RefAction::Same) => {
                self.summary.refs_kept += 1;
                self.remove_source(e);
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
        let mut line = format!(
            "{verb} {}: {} blobs ({}), {} deduplicated ({} saved), {} already there, refs {} written",
            name.to_string_lossy(),
            s.blobs_imported - before.blobs_imported,
            human_bytes(s.bytes_imported - before.bytes_imported),
            s.blobs_deduplicated - before.blobs_deduplicated,
            human_bytes(s.bytes_saved - before.bytes_saved),
            s.blobs_already - before.blobs_already,
            s.refs_written - before.refs_written,
        );
        let links = s.payload_links - before.payload_links;
        if links > 0 {
            line += &format!(", {links} blobs linking to shared payloads");
        }
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
        let source = self.sources.len();
        self.sources.push(Source {
            path: path.to_path_buf(),
            root: root.try_clone().map_err(errno_str)?,
            keep_all: false,
            keep: HashSet::new(),
            failed: HashSet::new(),
        });
        let errors_before = self.summary.errors.len();
        let mut merge = Merge {
            imp: self,
            src: path,
            source,
            dsts: vec![top],
            repo: None,
        };
        let walked = walk::visit(&root, Scope::AnyFilesystem, &mut merge);
        if walked.is_err() || self.summary.errors.len() > errors_before {
            self.sources[source].keep_all = true;
        }
        walked.map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(())
    }
}

/// The largest list of repo links (`<hash>.refs`) read.
const LINK_LIST_LIMIT: u64 = 16 << 20;

/// How many unresolved entries an error about a repo names.
const NAMED_ENTRIES: usize = 3;

impl Importer {
    /// Merges a list of repo links beside a payload (`<hash>.refs`): the union of the lines,
    /// written the way refs are (complete and owned before it gets its name, a replacement
    /// renamed over the old list).
    fn merge_link_list(&mut self, e: &Entry<'_>, dst: &Dst) {
        let path = dst.rel.join(e.name);
        let r = (|| -> io::Result<bool> {
            let content = read_small(e.node, LINK_LIST_LIMIT)?;
            let (_, store) = self
                .existing(dst, e.name)
                .map_err(io::Error::from_raw_os_error)?;
            let old = match &store {
                Some(n) if n.is_file() => Some(read_small(n, LINK_LIST_LIMIT)?),
                Some(_) => return Err(io::Error::other("the store has a non-file there")),
                None => None,
            };
            let Some(merged) = merged_link_list(old.as_deref(), &content) else {
                return Ok(false);
            };
            match &dst.node {
                Some(dir) if !self.dry => {
                    // One that appeared meanwhile is merged by the next run.
                    self.write_ref(dir, e.name, e.node, &merged, old.is_some())
                }
                _ => Ok(true),
            }
        })();
        match r {
            Ok(written) => {
                if written {
                    self.summary.link_lists_written += 1;
                } else {
                    self.summary.link_lists_kept += 1;
                }
                self.remove_source(e);
            }
            Err(err) => self.error(&path, err),
        }
    }

    /// What the store has at `rel`, or in a dry run, what it would have: each component
    /// opened without following it, from the store's handle.
    fn lookup(&self, store: &Node, rel: &Path) -> Found {
        if self.planned.contains_key(rel) {
            return Found::File;
        }
        if let Some(t) = self.planned_links.get(rel) {
            return Found::Link(t.clone());
        }
        let mut node: Option<Node> = None;
        for c in rel.components() {
            let std::path::Component::Normal(name) = c else {
                return Found::Missing;
            };
            let next = node.as_ref().unwrap_or(store).child(name);
            match next {
                Ok(n) => node = Some(n),
                Err(_) => return Found::Missing,
            }
        }
        match node {
            Some(n) if n.is_file() => Found::File,
            Some(n) if n.is_dir() => Found::Dir,
            Some(n) if n.is_symlink() => match sys::readlink(n.fd()) {
                Ok(t) => Found::Link(t),
                Err(_) => Found::Other,
            },
            _ => Found::Other,
        }
    }

    /// Why the snapshot entry `entry` of the store's repo `repo` (in the hub cache `hub`)
    /// does not lead to a complete file in the store, if it does not: a file itself, or a
    /// link to the repo's blob, which is a file or a link to a shared payload that is one.
    /// Nothing is followed: links are read and the names they give looked up. `Ok(None)`
    /// for a link that leads out of the repo's blobs (not one the clients make).
    fn unresolved(
        &self,
        store: &Node,
        hub: &Path,
        repo: &Path,
        entry: &Path,
    ) -> Result<(), Option<String>> {
        let target = match self.lookup(store, &repo.join(entry)) {
            Found::File => return Ok(()),
            Found::Link(t) => t,
            Found::Missing => return Err(Some("missing in the store".into())),
            Found::Dir => return Err(Some("the store has a directory there".into())),
            Found::Other => return Err(Some("the store has a special file there".into())),
        };
        let ups = entry.components().count().saturating_sub(1);
        let Some(blob) = layout::snapshot_link_blob(&target, ups) else {
            return Err(None);
        };
        let blob_rel = Path::new(BLOBS).join(OsStr::from_bytes(blob));
        let shown = blob_rel.display();
        let link = match self.lookup(store, &repo.join(&blob_rel)) {
            Found::File => return Ok(()),
            Found::Link(t) => t,
            Found::Missing => return Err(Some(format!("its blob {shown} is missing"))),
            _ => return Err(Some(format!("its blob {shown} is not a file"))),
        };
        let lossy = String::from_utf8_lossy(&link);
        let Some((shard, hash)) = layout::payload_of_target(&link) else {
            return Err(Some(format!(
                "its blob {shown} links to {lossy}, not a shared payload"
            )));
        };
        let payload = Path::new(BLOBS)
            .join(OsStr::from_bytes(shard))
            .join(OsStr::from_bytes(hash));
        match self.lookup(store, &hub.join(&payload)) {
            Found::File => Ok(()),
            Found::Missing => Err(Some(format!(
                "its blob {shown} links to the shared payload {lossy}, which is missing"
            ))),
            _ => Err(Some(format!(
                "its blob {shown} links to {lossy}, which is not a file"
            ))),
        }
    }

    /// Checks, once every source is in, that each repo imported is complete in the store
    /// (in a dry run: would be): every snapshot entry it brought leads to a file. A repo that
    /// is not is an error naming it and its entries, and keeps the shared payloads it links
    /// to in its source.
    fn check_repos(&mut self, store: &Node) {
        for c in std::mem::take(&mut self.checks) {
            let hub = c.rel.parent().unwrap_or(Path::new("")).to_path_buf();
            let mut bad = Vec::new();
            for entry in &c.entries {
                match self.unresolved(store, &hub, &c.rel, entry) {
                    Ok(()) => {}
                    Err(Some(why)) => bad.push(format!("{}: {why}", entry.display())),
                    Err(None) => self.note(format!(
                        "{}: a symlink out of the repo's blobs; not checked",
                        c.rel.join(entry).display()
                    )),
                }
            }
            if !bad.is_empty() {
                let more = bad.len().saturating_sub(NAMED_ENTRIES);
                let mut msg = format!(
                    "{} of {} snapshot entries resolve to no complete file in the store: {}",
                    bad.len(),
                    c.entries.len(),
                    bad[..bad.len().min(NAMED_ENTRIES)].join("; ")
                );
                if more > 0 {
                    msg += &format!("; and {more} more");
                }
                let verb = if self.dry {
                    "would be incomplete"
                } else {
                    "incomplete"
                };
                self.error(&c.rel, format!("{verb}: {msg}"));
                let name = c.name.to_string_lossy().into_owned();
                if !self.summary.incomplete.contains(&name) {
                    self.summary.incomplete.push(name);
                }
            }
            if let Some(src) = self.sources.get_mut(c.source)
                && (c.errors || !bad.is_empty())
            {
                src.failed.insert(c.src_id);
                src.keep.extend(c.payloads);
                // What it links to may not all have been seen.
                src.keep_all |= c.errors;
            }
        }
    }

    /// The last pass of `--move`, once every source is in and every repo checked: what the
    /// store holds goes from each source (each name only if it still holds the inode
    /// imported), but a repo that could not be completed in the store stays whole, and so do
    /// the shared payloads it links to; the marker of the shared payloads goes once none is
    /// left. An interrupted import removes nothing; the next run finishes it.
    fn finish_moves(&mut self) {
        if !self.move_sources || self.dry {
            return;
        }
        for src in std::mem::take(&mut self.sources) {
            if src.keep_all {
                self.note(format!(
                    "{}: its shared payloads were kept (a repo of it was not imported, or errors above); run again",
                    src.path.display()
                ));
            }
            let mut r = Remover {
                imp: self,
                src: &src,
                places: Vec::new(),
                shard: Vec::new(),
                left: HashSet::new(),
                payload_left: false,
            };
            if let Err(e) = walk::visit(&src.root, Scope::AnyFilesystem, &mut r) {
                self.error(&src.path, e);
            }
        }
    }
}

/// The last pass of `--move` over one source: the walk's visitor.
struct Remover<'a> {
    imp: &'a mut Importer,
    src: &'a Source,
    /// The places of the directories the walk is in.
    places: Vec<Place>,
    /// The shard directory the walk is in.
    shard: Vec<u8>,
    /// The payloads of that shard that stay.
    left: HashSet<Vec<u8>>,
    /// Whether any payload stays.
    payload_left: bool,
}

impl Remover<'_> {
    fn deferred(&self, e: &Entry<'_>) -> bool {
        self.imp
            .deferred
            .contains(&(e.rel.to_path_buf(), e.node.id()))
    }

    /// Whether the payload `payload` (or its list of links) may go.
    fn payload_goes(&self, e: &Entry<'_>, payload: &[u8]) -> bool {
        self.deferred(e)
            && !self.src.keep_all
            && !self.left.contains(payload)
            && !self
                .src
                .keep
                .contains(&(self.shard.clone(), payload.to_vec()))
    }

    fn remove(&mut self, parent: &Node, name: &OsStr, node: &Node, rel: &Path) {
        let path = self.src.path.join(rel);
        self.imp.remove_now(parent, name, node, &path);
    }
}

impl Visitor for Remover<'_> {
    fn enter(&mut self, e: &Entry<'_>) -> Visit {
        let parent = self.places.last().copied().unwrap_or(Place::Root);
        if e.node.is_dir() {
            // (Below the limit, the import did not go either.)
            if e.at_limit() || e.place == Place::Repo && self.src.failed.contains(&e.node.id()) {
                return Visit::Skip;
            }
            if e.place == Place::Shard {
                self.shard = e.name.as_bytes().to_vec();
                self.left.clear();
            }
            self.places.push(e.place);
            return Visit::Descend;
        }
        match e.place {
            Place::Payload => {
                if self.payload_goes(e, e.name.as_bytes()) {
                    self.remove(e.parent, e.name, e.node, e.rel);
                }
                if e.parent.child_opt(e.name).ok().flatten().is_some() {
                    self.left.insert(e.name.as_bytes().to_vec());
                    self.payload_left = true;
                }
            }
            Place::PayloadRefs => {
                let payload = layout::payload_of_refs(e.name.as_bytes()).unwrap_or_default();
                if self.payload_goes(e, payload) {
                    self.remove(e.parent, e.name, e.node, e.rel);
                }
            }
            // Goes with the last payload, when the directory is left.
            _ if parent == Place::SharedBlobs
                && e.name.as_bytes() == layout::SHARED_BLOBS_MARKER.as_bytes() => {}
            _ if self.deferred(e) => self.remove(e.parent, e.name, e.node, e.rel),
            _ => {}
        }
        Visit::Skip
    }

    fn leave(&mut self, e: &Entry<'_>) {
        let place = self.places.pop();
        if !self.deferred(e) {
            return;
        }
        if place == Some(Place::SharedBlobs) && !self.payload_left && !self.src.keep_all {
            let marker = OsStr::new(layout::SHARED_BLOBS_MARKER);
            if let Ok(Some(m)) = e.node.child_opt(marker) {
                let rel = e.rel.join(marker);
                if self.imp.deferred.contains(&(rel.clone(), m.id())) {
                    self.remove(e.node, marker, &m, &rel);
                }
            }
        }
        self.remove(e.parent, e.name, e.node, e.rel);
    }

    fn unreadable(&mut self, rel: &Path, errno: i32) -> io::Result<()> {
        let path = self.src.path.join(rel);
        self.imp
            .error(&path, format!("not removed: {}", errno_str(errno)));
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
    /// The hub cache's `blobs/` of shared payloads: its marker and shards.
    Shared,
    /// A shard of it: payloads, merged by name (their hash), and their lists of links.
    Shard,
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
    /// Its index in [`Importer::sources`].
    source: usize,
    dsts: Vec<Dst>,
    /// The repo the walk is in.
    repo: Option<RepoCheck>,
}

impl Visitor for Merge<'_> {
    fn enter(&mut self, e: &Entry<'_>) -> Visit {
        let part = self.dsts.last().map(|d| &d.part);
        match part {
            None => Visit::Stop,
            Some(Part::Home) => self.home_entry(e),
            Some(Part::Hub) => self.hub_entry(e),
            Some(Part::Repo(_)) => match e.place {
                Place::Refs => self.descend(e, Part::Refs),
                Place::Blobs => self.entry(e, true),
                _ => self.entry(e, false),
            },
            Some(Part::Refs) => self.ref_entry(e),
            Some(Part::Shared) => self.shared_entry(e),
            Some(Part::Shard) => self.shard_entry(e),
            Some(&Part::Tree { blobs }) => self.entry(e, blobs),
        }
    }

    fn leave(&mut self, e: &Entry<'_>) {
        let Some(dst) = self.dsts.pop() else {
            return;
        };
        if let Part::Repo(before) = &dst.part {
            self.imp.report_repo(e.name, before);
            if let Some(mut check) = self.repo.take() {
                check.errors = self.imp.summary.errors.len() > check.errors_before;
                self.imp.checks.push(check);
            }
        }
        self.imp.remove_source(e);
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
            Place::SharedBlobs => self.descend(e, Part::Shared),
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
        let rel = hub.rel.join(e.name);
        let before = Box::new(self.imp.summary.clone());
        let visit = self.descend(e, Part::Repo(before));
        if visit == Visit::Descend {
            self.imp.count_repo(e.name, new);
            self.repo = Some(RepoCheck {
                source: self.source,
                src_id: e.node.id(),
                name: e.name.to_owned(),
                rel,
                entries: Vec::new(),
                payloads: Vec::new(),
                errors_before: self.imp.summary.errors.len(),
                errors: false,
            });
        } else if let Some(src) = self.imp.sources.get_mut(self.source) {
            // It stays in the source, with the payloads it links to.
            src.keep_all = true;
        }
        visit
    }

    /// An entry of the hub cache's `blobs/`: its marker comes along, its shards are merged.
    fn shared_entry(&mut self, e: &Entry<'_>) -> Visit {
        match e.place {
            Place::Shard => self.descend(e, Part::Shard),
            Place::Fixed if e.node.is_file() => self.entry(e, false),
            _ => self.left_alone(e),
        }
    }

    /// An entry of a shard of the shared payloads.
    fn shard_entry(&mut self, e: &Entry<'_>) -> Visit {
        let Some(dst) = self.dsts.last() else {
            return Visit::Stop;
        };
        match e.place {
            Place::Payload => self.imp.import_file(e, dst, Kind::Payload),
            Place::PayloadRefs => self.imp.merge_link_list(e, dst),
            _ if skip_reason(e.name.as_bytes()).is_some() => self.imp.summary.skipped += 1,
            _ => return self.left_alone(e),
        }
        Visit::Skip
    }

    /// An entry that is not part of the cache's layout.
    fn left_alone(&mut self, e: &Entry<'_>) -> Visit {
        if skip_reason(e.name.as_bytes()).is_some() {
            self.imp.summary.skipped += 1;
        } else {
            self.imp.note(format!(
                "{}: not part of the cache's layout; left alone",
                self.src.join(e.rel).display()
            ));
        }
        Visit::Skip
    }

    /// Notes what the repo being walked brings: a snapshot entry to check in the store at
    /// the end, or a blob that links to a shared payload.
    fn note_repo_entry(&mut self, e: &Entry<'_>, path: &Path) {
        let Some(repo) = &mut self.repo else {
            return;
        };
        let Ok(in_repo) = path.strip_prefix(&repo.rel) else {
            return;
        };
        let mut parts = in_repo.components();
        let first = parts.next().map(|c| c.as_os_str().as_bytes());
        if first == Some(SNAPSHOTS.as_bytes()) {
            repo.entries.push(in_repo.to_path_buf());
        } else if first == Some(BLOBS.as_bytes()) && parts.count() == 1 && e.node.is_symlink() {
            let target = sys::readlink(e.node.fd()).unwrap_or_default();
            if let Some((shard, hash)) = layout::payload_of_target(&target) {
                repo.payloads.push((shard.to_vec(), hash.to_vec()));
                self.imp.summary.payload_links += 1;
            }
        }
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
        let Some(path) = self.dsts.last().map(|d| d.rel.join(e.name)) else {
            return Visit::Stop;
        };
        self.note_repo_entry(e, &path);
        let Some(dst) = self.dsts.last() else {
            return Visit::Stop;
        };
        if e.node.is_file() {
            let kind = if blobs { Kind::Blob } else { Kind::Other };
            self.imp.import_file(e, dst, kind);
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
        planned_links: HashMap::new(),
        deferred: HashSet::new(),
        sources: Vec::new(),
        checks: Vec::new(),
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
    imp.check_repos(&store);
    imp.finish_moves();
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
    fn link_lists_merge_as_a_union() {
        let a = b"models--o--a/blobs/e1\nmodels--o--b/blobs/e2\n";
        assert_eq!(merged_link_list(None, a).as_deref(), Some(&a[..]));
        assert_eq!(merged_link_list(Some(a), b"models--o--a/blobs/e1\n"), None);
        assert_eq!(
            merged_link_list(Some(a), b"models--o--c/blobs/e3\nmodels--o--a/blobs/e1"),
            Some(b"models--o--a/blobs/e1\nmodels--o--b/blobs/e2\nmodels--o--c/blobs/e3\n".to_vec())
        );
        // Duplicates and empty lines go; a list without its last newline gets one.
        assert_eq!(
            merged_link_list(Some(b"x\nx"), b"\ny\ny\n"),
            Some(b"x\ny\n".to_vec())
        );
        assert_eq!(merged_link_list(None, b""), Some(Vec::new()));
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
        assert!(!text.contains("INCOMPLETE"));
        let s = Summary {
            payloads_imported: 2,
            payloads_deduplicated: 1,
            payload_links: 4,
            incomplete: vec!["models--o--a".into(), "models--o--b".into()],
            ..Summary::default()
        };
        let text = s.render(false);
        assert!(text.contains("shared payloads: 2 imported, 1 deduplicated, 0 already in the store; 4 repo blobs link to them"));
        assert!(text.contains("INCOMPLETE repos") && text.contains("models--o--a, models--o--b"));
    }
}
