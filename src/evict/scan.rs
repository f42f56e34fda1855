//! What eviction sees in a store: every revision of every hub repo with the files it links
//! to, when it was last used, and what protects it; and the store's total size.
//!
//! Both cache layouts: a repo's `blobs/<etag>` is the file itself (old layout) or a symlink
//! to a shared payload `hub/blobs/<2hex>/<hash>` (hub >= 1.33); a file's identity is the
//! inode the snapshot finally reaches, so a payload shared by several repos counts once.
//!
//! Every hub cache the layout recognises is inventoried (see `place_of`): `hub/` anywhere
//! outside another hub cache (an `HF_HOME` at the root, a team's deeper down), and the root
//! itself when it holds repos; revisions of all of them are planned together, and each is
//! removed from its own.
//!
//! Bytes are what files take on disk (`st_blocks` x 512, as `du` counts them), each inode
//! once: the store total a `max_size` limits, what a revision's removal frees, and so what
//! a `--free`/`min_free` goal gains. A 1-byte ref takes a block; a sparse file only what it
//! has. Directories and symlinks are not counted. A file with hard links outside the store
//! (an `import` without `--move`) frees nothing when removed: it counts 0.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::plan::{FileId, Keep, Revision};
use super::state::{self, StateDir};
use crate::cache::layout::{
    self, BLOBS, HUB, LOCK_SUFFIX, LOCKS, NO_EXIST, Place, REFS, REFS_SUFFIX, SNAPSHOTS,
    TREE_SUFFIX, TREES,
};
use crate::cache::walk::{self, Node, Visit};
use crate::sys::{self, Name};

/// Where a repo's blob leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    /// The file finally reached (`None`: a dangling link).
    pub id: Option<FileId>,
    /// The shared payload (`hub/blobs/<dir>/<name>`) when the blob is a link to one.
    pub payload: Option<(OsString, OsString)>,
}

/// One repo directory.
#[derive(Debug, Default)]
pub struct Repo {
    /// Its hub cache (an index into [`Inventory::hubs`]).
    pub hub: usize,
    pub name: String,
    pub blobs: HashMap<OsString, Blob>,
    /// Why nothing of it may go now (a download in progress).
    pub busy: Option<String>,
}

/// A revision's place in the store, beside its [`Revision`].
#[derive(Clone, Debug)]
pub struct RevisionPlace {
    pub repo: usize,
    /// The refs (paths below `refs/`) pointing at it.
    pub refs: Vec<PathBuf>,
    /// The repo blob names its snapshot links to.
    pub blob_names: BTreeSet<OsString>,
}

/// Everything a plan and its execution need.
#[derive(Debug, Default)]
pub struct Inventory {
    /// The hub caches, by their path below the store root (empty: the root itself).
    pub hubs: Vec<PathBuf>,
    pub revisions: Vec<Revision>,
    pub places: Vec<RevisionPlace>,
    pub repos: Vec<Repo>,
    /// What each file takes on disk.
    pub sizes: HashMap<FileId, u64>,
    /// What the store's regular files take on disk, each inode once (hfcachefs's own not
    /// counted): see [`StoreBytes`].
    pub total_bytes: u64,
}

impl Inventory {
    /// The hub cache `i` of the store at `root` (`None`: it is gone).
    pub fn hub_at(&self, root: &Node, i: usize) -> io::Result<Option<Node>> {
        let mut dir = root.try_clone().map_err(io_err)?;
        for c in &self.hubs[i] {
            match child(&dir, c)?.filter(Node::is_dir) {
                Some(d) => dir = d,
                None => return Ok(None),
            }
        }
        Ok(Some(dir))
    }

    /// The repo of revision `i` as people know it: its directory, after the hub cache's
    /// path unless that is `HF_HOME/hub` or the root (`team/hub/models--org--name`).
    pub fn repo_path(&self, i: usize) -> String {
        let repo = &self.repos[self.places[i].repo];
        let hub = &self.hubs[repo.hub];
        if hub.as_os_str().is_empty() || hub == Path::new(HUB) {
            repo.name.clone()
        } else {
            format!("{}/{}", hub.display(), repo.name)
        }
    }
}

pub fn io_err(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// The entry `n` of `dir`, if there is one.
pub fn child(dir: &Node, n: impl AsRef<OsStr>) -> io::Result<Option<Node>> {
    dir.child_opt(n.as_ref()).map_err(io_err)
}

/// The directory `n` of `dir`, if there is one (anything else there counts as none).
fn child_dir(dir: &Node, n: &str) -> io::Result<Option<Node>> {
    Ok(child(dir, n)?.filter(Node::is_dir))
}

/// Whether someone holds a flock on the file `n` of `dir` (a download in progress).
fn lock_held(dir: &Node, n: &OsStr) -> bool {
    let Ok(name) = Name::new(n) else { return false };
    let Ok(fd) = sys::open_at(dir.fd(), &name, libc::O_RDONLY | libc::O_NONBLOCK, 0) else {
        return false;
    };
    matches!(
        sys::flock(fd.as_fd(), libc::LOCK_SH | libc::LOCK_NB),
        Err(libc::EWOULDBLOCK)
    )
}

/// Why a download into a repo is in progress, if one is: a held lock in its lock directory
/// `rl` (`.locks/<repo>/`), named.
pub fn held_lock(rl: &Node) -> io::Result<Option<String>> {
    Ok(rl
        .names()
        .map_err(io_err)?
        .into_iter()
        .find(|x| layout::is_lock(x.as_bytes()) && lock_held(rl, x))
        .map(|x| format!("lock {} held", x.to_string_lossy())))
}

/// What a size goal counts, added up over a walk of the store: what its regular files take
/// on disk (`st_blocks`, as `du`), each inode once (hard links, payloads shared by several
/// repos), hfcachefs's own (`.hfcachefs/`, members' private copies) not counted.
#[derive(Debug, Default)]
pub struct StoreBytes {
    /// Each inode seen: its link count, and how many of its links the walk found.
    seen: HashMap<(u64, u64), (u64, u64)>,
    pub total: u64,
}

impl StoreBytes {
    /// Counts the entry `node` at `place` of a walk; false for hfcachefs's own, whose
    /// subtree is not counted.
    pub fn add(&mut self, node: &Node, place: Place) -> bool {
        if place.is_hidden() {
            return false;
        }
        if node.is_file() {
            let e = self.seen.entry(node.id()).or_insert_with(|| {
                self.total += node.disk_bytes();
                (node.st.st_nlink, 0)
            });
            e.1 += 1;
        }
        true
    }

    /// Whether the file `node` has hard links the walk did not find (outside the store, or
    /// in hfcachefs's own): removing it from the cache frees nothing on disk.
    fn linked_outside(&self, node: &Node) -> bool {
        self.seen
            .get(&node.id())
            .is_none_or(|(nlink, found)| nlink > found)
    }

    /// What removing the file `node` from the store frees on disk.
    fn freed_by(&self, node: &Node) -> u64 {
        if self.linked_outside(node) {
            0
        } else {
            node.disk_bytes()
        }
    }
}

/// What the store at `root` holds by a size goal's count (see [`StoreBytes`]; its own
/// subtree, symlinks not followed): what a `max_size` limits.
pub fn total_bytes(root: &Node) -> io::Result<u64> {
    Ok(survey(root)?.1.total)
}

/// One walk of the store at `root`: its hub caches (see [`Inventory::hubs`]; none inside
/// another, or inside a repo, a shared `blobs/` or a `.locks/` outside one) and its bytes.
fn survey(root: &Node) -> io::Result<(Vec<PathBuf>, StoreBytes)> {
    let mut b = StoreBytes::default();
    let mut hubs = Vec::new();
    let mut root_is_hub = false;
    // Where no hub cache can be: the hub caches found, and the cache directories outside.
    let mut within: Vec<PathBuf> = Vec::new();
    walk::walk(root, &mut |rel, node, place| {
        if !b.add(node, place) {
            return Visit::Skip;
        }
        let cache = matches!(
            place,
            Place::Hub | Place::Repo | Place::SharedBlobs | Place::Locks
        );
        if cache && node.is_dir() && !within.iter().any(|w| rel.starts_with(w)) {
            if place == Place::Hub {
                hubs.push(rel.to_path_buf());
            } else if place == Place::Repo && rel.parent() == Some(Path::new("")) {
                root_is_hub = true;
            }
            within.push(rel.to_path_buf());
        }
        Visit::Descend
    })?;
    if root_is_hub {
        hubs.insert(0, PathBuf::new());
    }
    Ok((hubs, b))
}

/// The entries of a snapshot below `commit`: (path, node) of each symlink and file.
fn snapshot_entries(commit: &Node) -> io::Result<Vec<(PathBuf, Node)>> {
    let mut out = Vec::new();
    walk::walk(commit, &mut |rel, node, _| {
        if !node.is_dir() {
            if let Ok(n) = node.try_clone() {
                out.push((rel.to_path_buf(), n));
            }
        }
        Visit::Descend
    })?;
    Ok(out)
}

/// The repo blob names the snapshots of `repo` link to, all revisions together.
pub fn linked_blobs(repo: &Node) -> io::Result<HashSet<OsString>> {
    let mut names = HashSet::new();
    let Some(snaps) = child_dir(repo, SNAPSHOTS)? else {
        return Ok(names);
    };
    walk::walk(&snaps, &mut |_, node, _| {
        if node.is_symlink() {
            if let Ok(t) = sys::readlink(node.fd()) {
                if let Some(b) = layout::blob_of_target(&t) {
                    names.insert(OsStr::from_bytes(b).to_owned());
                }
            }
        }
        Visit::Descend
    })?;
    Ok(names)
}

/// The refs below `refs/`, the commit each names and what its file takes on disk.
fn refs_of(repo: &Node) -> io::Result<Vec<(PathBuf, String, u64)>> {
    let mut out = Vec::new();
    let Some(refs) = child_dir(repo, REFS)? else {
        return Ok(out);
    };
    let mut files = Vec::new();
    walk::walk(&refs, &mut |rel, node, _| {
        if node.is_file() {
            files.push((rel.to_path_buf(), node.disk_bytes()));
        }
        Visit::Descend
    })?;
    for (rel, size) in files {
        if let Some(commit) = read_ref(&refs, &rel)? {
            out.push((rel, commit, size));
        }
    }
    Ok(out)
}

/// What the regular files below the directory `node` (a revision's `.no_exist/<commit>`)
/// take on disk, 0 if there is none.
fn file_bytes_below(node: Option<Node>) -> io::Result<u64> {
    let mut total = 0;
    if let Some(node) = node.filter(Node::is_dir) {
        walk::walk(&node, &mut |_, n, _| {
            if n.is_file() {
                total += n.disk_bytes();
            }
            Visit::Descend
        })?;
    }
    Ok(total)
}

/// What goes with revision `commit` of the repo at `repo` besides the files its
/// snapshot links to (see `remove_revision`): the refs naming it, its `.no_exist/`
/// markers and its tree listing, by what they take on disk.
fn own_bytes(repo: &Node, commit: &OsStr, refs: &[(PathBuf, String, u64)]) -> io::Result<u64> {
    let named: u64 = refs
        .iter()
        .filter(|(_, c, _)| OsStr::new(c) == commit)
        .map(|(_, _, size)| size)
        .sum();
    let no_exist = match child_dir(repo, NO_EXIST)? {
        Some(ne) => file_bytes_below(child(&ne, commit)?)?,
        None => 0,
    };
    let tree = match child_dir(repo, TREES)? {
        Some(t) => {
            let mut n = commit.to_owned();
            n.push(TREE_SUFFIX);
            child(&t, &n)?
                .filter(Node::is_file)
                .map_or(0, |f| f.disk_bytes())
        }
        None => 0,
    };
    Ok(named + no_exist + tree)
}

/// The commit the ref at `rel` below `refs` names (`None` if it is gone).
pub fn read_ref(refs: &Node, rel: &Path) -> io::Result<Option<String>> {
    let mut dir = refs.try_clone().map_err(io_err)?;
    let comps: Vec<&OsStr> = rel.iter().collect();
    let Some((last, parents)) = comps.split_last() else {
        return Ok(None);
    };
    for c in parents {
        match child(&dir, c)? {
            Some(d) if d.is_dir() => dir = d,
            _ => return Ok(None),
        }
    }
    let text = state::read_file(dir.fd(), &last.to_string_lossy()).map_err(io_err)?;
    Ok(text.map(|t| t.trim().to_owned()))
}

/// A repo's blobs: where each leads, and the first download in progress, if any.
pub(crate) fn blobs_of(
    hub: &Node,
    repo: &Node,
    now: SystemTime,
) -> io::Result<(HashMap<OsString, Blob>, Option<String>)> {
    let mut blobs = HashMap::new();
    let mut busy = None;
    let Some(dir) = child_dir(repo, BLOBS)? else {
        return Ok((blobs, busy));
    };
    let shared = child_dir(hub, BLOBS)?;
    for n in dir.names().map_err(io_err)? {
        let Some(node) = child(&dir, &n)? else {
            continue;
        };
        if node.is_file() && layout::is_temporary(n.as_bytes()) {
            if !layout::is_stale_temporary(n.as_bytes(), node.mtime(), now) && busy.is_none() {
                busy = Some(format!("blobs/{}", n.to_string_lossy()));
            }
            continue;
        }
        let blob = if node.is_file() {
            Blob {
                id: Some(node.st.st_ino),
                payload: None,
            }
        } else if node.is_symlink() {
            let target = sys::readlink(node.fd()).map_err(io_err)?;
            let Some((d, p)) = layout::payload_of_target(&target) else {
                continue;
            };
            let (d, p) = (OsStr::from_bytes(d), OsStr::from_bytes(p));
            let file = match &shared {
                Some(s) => match child(s, d)? {
                    Some(sub) if sub.is_dir() => child(&sub, p)?.filter(Node::is_file),
                    _ => None,
                },
                None => None,
            };
            Blob {
                id: file.map(|f| f.st.st_ino),
                payload: Some((d.to_owned(), p.to_owned())),
            }
        } else {
            continue;
        };
        blobs.insert(n, blob);
    }
    Ok((blobs, busy))
}

/// What the files blobs lead to take on disk, their modification times, and whether a
/// payload's lock is held.
struct Files {
    sizes: HashMap<FileId, u64>,
    mtimes: HashMap<FileId, u64>,
    locked: HashSet<FileId>,
}

fn payload_files(
    f: &mut Files,
    hub: &Node,
    repos: &[Repo],
    repo_nodes: &[Node],
    store: &StoreBytes,
) -> io::Result<()> {
    let shared = child_dir(hub, BLOBS)?;
    for (repo, node) in repos.iter().zip(repo_nodes) {
        let dir = child_dir(node, BLOBS)?;
        for (n, b) in &repo.blobs {
            let Some(id) = b.id else { continue };
            if f.sizes.contains_key(&id) {
                continue;
            }
            // The file, and what a shared payload's `.refs` hint, which goes with it (see
            // `sweep`), takes on disk.
            let (file, hint) = match (&b.payload, &shared) {
                (Some((d, p)), Some(s)) => match child(s, d)? {
                    Some(sub) => {
                        let mut lock = p.clone();
                        lock.push(LOCK_SUFFIX);
                        if lock_held(&sub, &lock) {
                            f.locked.insert(id);
                        }
                        let mut h = p.clone();
                        h.push(REFS_SUFFIX);
                        let hint = child(&sub, &h)?.filter(Node::is_file);
                        (child(&sub, p)?, hint.map_or(0, |h| h.disk_bytes()))
                    }
                    None => (None, 0),
                },
                (None, _) => match &dir {
                    Some(d) => (child(d, n)?, 0),
                    None => (None, 0),
                },
                _ => (None, 0),
            };
            if let Some(file) = file.filter(Node::is_file) {
                f.sizes.insert(id, store.freed_by(&file) + hint);
                f.mtimes.insert(id, state::secs(file.mtime()));
            }
        }
    }
    Ok(())
}

/// Adds the repos of the hub cache `hub` (number `hi`) to `repos`, and their directories
/// to `nodes`.
fn repos_of(
    hub: &Node,
    hi: usize,
    now: SystemTime,
    repos: &mut Vec<Repo>,
    nodes: &mut Vec<Node>,
) -> io::Result<()> {
    let locks = child_dir(hub, LOCKS)?;
    for n in hub.names().map_err(io_err)? {
        if !layout::is_repo_dir(n.as_bytes()) {
            continue;
        }
        let Some(node) = child(hub, &n)?.filter(Node::is_dir) else {
            continue;
        };
        let (blobs, mut busy) = blobs_of(hub, &node, now)?;
        if busy.is_none() {
            if let Some(l) = locks
                .as_ref()
                .map(|l| child_dir(l, &n.to_string_lossy()))
                .transpose()?
                .flatten()
            {
                busy = held_lock(&l)?;
            }
        }
        repos.push(Repo {
            hub: hi,
            name: n.to_string_lossy().into_owned(),
            blobs,
            busy,
        });
        nodes.push(node);
    }
    Ok(())
}

/// Whether a pin protects `commit` of `repo` (pinned as a whole, by commit, or by a ref
/// now pointing at it).
pub fn pinned(pins: &BTreeSet<String>, repo: &str, commit: &str, refs: &[PathBuf]) -> bool {
    pins.iter().any(|p| match p.split_once('@') {
        None => p == repo,
        Some((r, rev)) => {
            r == repo && (rev == commit || refs.iter().any(|x| x.as_os_str() == OsStr::new(rev)))
        }
    })
}

/// Takes the inventory of the store at `root`. `state` gives the access record, the open
/// files and the pins (without it, files' times alone say when a revision was used).
pub fn scan(root: &Node, state: Option<&StateDir>, now: SystemTime) -> io::Result<Inventory> {
    let (access, open, pins) = match state {
        Some(s) => (
            s.access().map_err(io_err)?,
            s.open_inodes(now).map_err(io_err)?,
            s.pins().map_err(io_err)?,
        ),
        None => Default::default(),
    };
    let (hubs, store) = survey(root)?;
    let mut inv = Inventory {
        total_bytes: store.total,
        hubs,
        ..Inventory::default()
    };
    let mut files = Files {
        sizes: HashMap::new(),
        mtimes: HashMap::new(),
        locked: HashSet::new(),
    };
    let mut repo_nodes = Vec::new();
    for hi in 0..inv.hubs.len() {
        let Some(hub) = inv.hub_at(root, hi)? else {
            continue;
        };
        let first = inv.repos.len();
        repos_of(&hub, hi, now, &mut inv.repos, &mut repo_nodes)?;
        payload_files(
            &mut files,
            &hub,
            &inv.repos[first..],
            &repo_nodes[first..],
            &store,
        )?;
    }
    for (ri, node) in repo_nodes.iter().enumerate() {
        let refs = refs_of(node)?;
        let Some(snaps) = child_dir(node, SNAPSHOTS)? else {
            continue;
        };
        for commit in snaps.names().map_err(io_err)? {
            let Some(cnode) = child(&snaps, &commit)?.filter(Node::is_dir) else {
                continue;
            };
            let repo = &inv.repos[ri];
            let commit_s = commit.to_string_lossy().into_owned();
            let mut place = RevisionPlace {
                repo: ri,
                refs: refs
                    .iter()
                    .filter(|(_, c, _)| *c == commit_s)
                    .map(|(r, _, _)| r.clone())
                    .collect(),
                blob_names: BTreeSet::new(),
            };
            let mut ids = Vec::new();
            let mut own_used = state::secs(cnode.mtime());
            let mut used = 0;
            let mut open_file = None;
            let mut locked = false;
            for (rel, e) in snapshot_entries(&cnode)? {
                own_used = own_used.max(state::secs(e.mtime()));
                let id = if e.is_file() {
                    inv.sizes.insert(e.st.st_ino, store.freed_by(&e));
                    Some(e.st.st_ino)
                } else {
                    let target = sys::readlink(e.fd()).map_err(io_err)?;
                    layout::blob_of_target(&target).and_then(|b| {
                        let b = OsStr::from_bytes(b).to_owned();
                        let id = repo.blobs.get(&b).and_then(|x| x.id);
                        place.blob_names.insert(b);
                        id
                    })
                };
                let Some(id) = id else { continue };
                used = used.max(files.mtimes.get(&id).copied().unwrap_or(0));
                used = used.max(access.get(&id).copied().unwrap_or(0));
                if open.contains(&id) && open_file.is_none() {
                    open_file = Some(format!(
                        "{}/snapshots/{commit_s}/{}",
                        repo.name,
                        rel.display()
                    ));
                }
                locked |= files.locked.contains(&id);
                ids.push(id);
            }
            let keep = if pinned(&pins, &repo.name, &commit_s, &place.refs) {
                Some(Keep::Pinned)
            } else if let Some(f) = open_file {
                Some(Keep::Open(f))
            } else if let Some(b) = &repo.busy {
                Some(Keep::Downloading(format!("{}: {b}", repo.name)))
            } else if locked {
                Some(Keep::Downloading(format!(
                    "{}: a shared payload's lock is held",
                    repo.name
                )))
            } else {
                None
            };
            inv.revisions.push(Revision {
                repo: repo.name.clone(),
                commit: commit_s,
                last_used: used.max(own_used),
                own_used,
                files: ids,
                own_bytes: own_bytes(node, &commit, &refs)?,
                keep,
            });
            inv.places.push(place);
        }
    }
    inv.sizes.extend(files.sizes);
    Ok(inv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, symlink};

    fn du(p: &Path) -> u64 {
        std::fs::metadata(p).unwrap().blocks() * 512
    }

    #[test]
    fn files_count_what_they_take_on_disk_each_inode_once() {
        let base = std::env::temp_dir().join(format!("hfcachefs-scan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let hub = base.join("hub");
        // A repo of 50 one-byte files (refs, configs: each takes a block, not a byte).
        let tiny = hub.join("models--o--tiny");
        let commit = "a".repeat(40);
        std::fs::create_dir_all(tiny.join("blobs")).unwrap();
        std::fs::create_dir_all(tiny.join(format!("snapshots/{commit}"))).unwrap();
        std::fs::create_dir_all(tiny.join("refs")).unwrap();
        std::fs::write(tiny.join("refs/main"), &commit).unwrap();
        for i in 0..50 {
            std::fs::write(tiny.join(format!("blobs/b{i}")), [b'x']).unwrap();
            symlink(
                format!("../../blobs/b{i}"),
                tiny.join(format!("snapshots/{commit}/f{i}")),
            )
            .unwrap();
        }
        // A shared payload, sparse: 64 MiB long, one block written.
        let h = "02".repeat(32);
        std::fs::create_dir_all(hub.join("blobs/02")).unwrap();
        let payload = hub.join(format!("blobs/02/{h}"));
        let f = std::fs::File::create(&payload).unwrap();
        f.set_len(64 << 20).unwrap();
        std::os::unix::fs::FileExt::write_at(&f, b"x", 0).unwrap();
        drop(f);
        std::fs::write(
            hub.join(format!("blobs/02/{h}.refs")),
            "models--o--sparse\n",
        )
        .unwrap();
        let sparse = hub.join("models--o--sparse");
        std::fs::create_dir_all(sparse.join("blobs")).unwrap();
        std::fs::create_dir_all(sparse.join(format!("snapshots/{commit}"))).unwrap();
        symlink(format!("../../blobs/02/{h}"), sparse.join("blobs/e")).unwrap();
        symlink(
            "../../blobs/e",
            sparse.join(format!("snapshots/{commit}/w.bin")),
        )
        .unwrap();
        // The tiny repo's first blob hard-linked into a third repo: one inode.
        let copy = hub.join("models--o--copy");
        std::fs::create_dir_all(copy.join("blobs")).unwrap();
        std::fs::hard_link(tiny.join("blobs/b0"), copy.join("blobs/b0")).unwrap();
        // hfcachefs's own records are not the store's.
        std::fs::create_dir_all(base.join(layout::STATE_DIR)).unwrap();
        std::fs::write(base.join(layout::STATE_DIR).join("x"), vec![1u8; 9000]).unwrap();

        let root = Node::open_trusted(&base).unwrap();
        let inv = scan(&root, None, SystemTime::now()).unwrap();
        let block = du(&tiny.join("refs/main"));
        assert!(block >= 512, "a 40-byte file takes a block: {block}");
        let tiny_disk: u64 = (0..50).map(|i| du(&tiny.join(format!("blobs/b{i}")))).sum();
        assert_eq!(tiny_disk, 50 * block, "each one-byte blob takes a block");
        let hint = du(&hub.join(format!("blobs/02/{h}.refs")));
        let payload_disk = du(&payload);
        assert!(payload_disk < 1 << 20, "sparse: {payload_disk}");
        assert_eq!(inv.total_bytes, block + tiny_disk + payload_disk + hint);
        assert_eq!(inv.total_bytes, total_bytes(&root).unwrap());
        let rev = |repo: &str| {
            inv.revisions
                .iter()
                .find(|r| r.repo == repo)
                .expect("the revision")
        };
        let t = rev("models--o--tiny");
        assert_eq!(t.files.len(), 50);
        assert!(t.files.iter().all(|f| inv.sizes[f] == block));
        assert_eq!(t.own_bytes, block, "its ref, by its block");
        let s = rev("models--o--sparse");
        assert_eq!(inv.sizes[&s.files[0]], payload_disk + hint);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn every_hub_cache_the_layout_knows_is_found() {
        let base = std::env::temp_dir().join(format!("hfcachefs-hubs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        for d in [
            "hub/models--o--a/snapshots",
            "team/hub/datasets--o--d",
            "a/b/hub",
            "models--o--root/blobs",
            // Not hub caches: inside one, inside a repo, hfcachefs's own, hf_xet's.
            "hub/x/hub",
            "hub/models--o--a/y/hub",
            "team/hub/blobs/ab/hub",
            "models--o--root/z/hub",
            ".hfcachefs/hub",
            ".hfcachefs-private/1000/hub",
            "xet/hub",
        ] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        std::fs::write(base.join("team/hub.txt"), "x").unwrap();
        let root = Node::open_trusted(&base).unwrap();
        let (hubs, _) = survey(&root).unwrap();
        let want = ["", "a/b/hub", "hub", "team/hub"].map(PathBuf::from);
        assert_eq!(hubs, want);
        let inv = scan(&root, None, SystemTime::now()).unwrap();
        let names: Vec<(usize, &str)> =
            inv.repos.iter().map(|r| (r.hub, r.name.as_str())).collect();
        assert_eq!(
            names,
            [
                (0, "models--o--root"),
                (2, "models--o--a"),
                (3, "datasets--o--d")
            ]
        );
        let team = inv.hub_at(&root, 3).unwrap().unwrap();
        assert_eq!(
            team.id(),
            Node::open_trusted(&base.join("team/hub")).unwrap().id()
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn pins_by_repo_commit_or_ref() {
        let pins: BTreeSet<String> = [
            "models--a".into(),
            "models--b@main".into(),
            "models--c@c1".into(),
        ]
        .into();
        let main = [PathBuf::from("main")];
        assert!(pinned(&pins, "models--a", "x", &[]));
        assert!(pinned(&pins, "models--b", "x", &main));
        assert!(!pinned(&pins, "models--b", "x", &[]));
        assert!(pinned(&pins, "models--c", "c1", &[]));
        assert!(!pinned(&pins, "models--c", "c2", &main));
        assert!(!pinned(&pins, "models--d", "c1", &main));
    }
}
