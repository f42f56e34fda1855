//! Eviction: keeping a shared cache within its disk by removing whole revisions, least
//! recently used first, never one a reader has open, a download is filling, or an
//! administrator pinned. `hfcachefs gc` runs it by hand, the daemon in the background
//! (`max_size=`, `min_free=`).
//!
//! - `plan`: the pure planner; `scan`: what the store holds and what protects it;
//!   `state`: hfcachefs's records in `.hfcachefs/`; `record`: the daemon's side of them.
//!
//! Removal order, so that no client ever sees a revision that looks complete but is not,
//! even if eviction is killed half way: first the refs pointing at a revision (a ref to a
//! missing snapshot is what `scan_cache_dir` calls corrupted), then its snapshot, moved in
//! one rename to `.hfcachefs/trash/`; only then the blobs and shared payloads no remaining
//! snapshot links to (read from the trash, so a killed run's next run finishes them, each
//! entry naming its hub cache); then repos left empty; the trash is emptied last (kept: a
//! full disk may not let the next run make it again).
//!
//! A revision is checked again for open files and a download just before it goes (a scan
//! of a big store takes minutes). Blobs and payloads go under the lock the hub client holds
//! while it links to them, and only if no mount has them open, read after the daemons
//! have had time to record opens made through the snapshots just removed; what is locked
//! or open is listed in the emptied trash for the next run. One bad entry (a name that
//! cannot be one, an unreadable list) is reported and skipped, never stops a run, and
//! neither does a trash list that cannot be written (a full disk).

pub mod plan;
pub mod record;
pub mod scan;
pub mod state;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::cache::layout::{
    self, BLOBS, LOCK_SUFFIX, LOCKS, NO_EXIST, REFS, SNAPSHOTS, STATE_DIR, TREE_SUFFIX, TREES,
};
use crate::cache::walk::{Node, Visit, walk};
use crate::sys::{self, Name};
use plan::{Goal, Keep, Plan};
use scan::{Inventory, child, io_err};
use state::{StateDir, TRASH_DIR};

/// What the caller wants.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// The store's files taking at most this many bytes on disk (as `du` counts them).
    MaxSize(u64),
    /// At least this many bytes free on the store's disk.
    Free(u64),
    /// At least this percentage of the store's disk free.
    FreePercent(f64),
    /// No revision unused for this long.
    OlderThan(Duration),
}

impl Target {
    /// The goal as a mount option or gc flag would write it.
    pub fn spec(&self) -> String {
        match self {
            Target::MaxSize(b) => format!("max_size={b}"),
            Target::Free(b) => format!("free={b}"),
            Target::FreePercent(p) => format!("min_free={p}%"),
            Target::OlderThan(d) => format!("older_than={}", human_duration(*d)),
        }
    }
}

/// One line about an eviction run by `by`, for the log and `.hfcachefs/last-eviction`
/// (bytes freed on disk; why the goal was not met, when it was not).
pub fn summary(r: &Report, t: &Target, by: &str, now: SystemTime) -> String {
    let goal = match (&r.reason, r.met) {
        (_, true) => "goal met".to_owned(),
        (Some(why), false) => format!("{GOAL_NOT_MET}: {why}"),
        (None, false) => GOAL_NOT_MET.to_owned(),
    };
    format!(
        "{} {by}: {}; removed {} revision(s), freed {} bytes; {goal}",
        state::secs(now),
        t.spec(),
        r.removed.len(),
        r.freed,
    )
}

const GOAL_NOT_MET: &str = "goal not met";

/// Whether the eviction a [`summary`] line tells of met its goal (`None`: not such a line).
pub fn summary_met(line: &str) -> Option<bool> {
    let (_, goal) = line.split_once("; goal ")?;
    if goal.trim_end() == "met" {
        Some(true)
    } else if goal.starts_with("not met") {
        Some(false)
    } else {
        None
    }
}

/// A duration in its largest sensible unit (`90s`, `12m`, `5h`, `30d`).
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// One revision in a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub repo: String,
    pub commit: String,
    pub last_used: u64,
    /// Bytes its removal frees (removed), or why it stays (kept).
    pub bytes: u64,
    pub reason: String,
}

/// What an eviction did (or, dry, would do).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub dry_run: bool,
    pub store_bytes: u64,
    pub avail_bytes: u64,
    /// Bytes the goal asked to free (for `OlderThan`, what the old revisions hold).
    pub need: u64,
    pub removed: Vec<Item>,
    pub kept: Vec<Item>,
    pub freed: u64,
    pub met: bool,
    /// Why the goal was not met, when it was not.
    pub reason: Option<String>,
    pub errors: Vec<String>,
}

/// Plans (and unless `dry_run`, carries out) the eviction reaching `target` in the store
/// whose root (or mountpoint, for a member's dry run) is `root`. Without `state`, files'
/// times alone say what was used when, and nothing is known to be open or pinned.
pub fn run(
    root: &Node,
    state: Option<&StateDir>,
    target: Target,
    dry_run: bool,
    now: SystemTime,
) -> io::Result<Report> {
    let mut report = Report {
        dry_run,
        ..Report::default()
    };
    let _lock = match (dry_run, state) {
        (true, _) => None,
        (false, None) => return Err(io::Error::other("the store has no .hfcachefs/ state")),
        (false, Some(s)) => match s.try_lock().map_err(io_err)? {
            Some(l) => Some(l),
            None => {
                return Err(io::Error::other(
                    "another eviction of this store is running",
                ));
            }
        },
    };
    if let (false, Some(s)) = (dry_run, state) {
        finish_trash(root, s, &mut report.errors)?;
    }
    let inv = scan::scan(root, state, now)?;
    let vfs = sys::fstatvfs(root.fd()).map_err(io_err)?;
    let frsize = vfs.f_frsize as u64;
    report.store_bytes = inv.total_bytes;
    report.avail_bytes = vfs.f_bavail as u64 * frsize;
    // Free space wanted on the disk, for the goals about it.
    let want_free = match target {
        Target::Free(want) => Some(want),
        Target::FreePercent(p) => Some(((vfs.f_blocks as u64 * frsize) as f64 * p / 100.0) as u64),
        Target::MaxSize(_) | Target::OlderThan(_) => None,
    };
    let goal = match target {
        Target::MaxSize(max) => Goal::Free(inv.total_bytes.saturating_sub(max)),
        Target::OlderThan(d) => Goal::UnusedSince(state::secs(now).saturating_sub(d.as_secs())),
        Target::Free(_) | Target::FreePercent(_) => {
            Goal::Free(want_free.unwrap_or(0).saturating_sub(report.avail_bytes))
        }
    };
    let p = plan::plan(&inv.revisions, &inv.sizes, goal);
    report.need = match goal {
        Goal::Free(n) => n,
        Goal::UnusedSince(_) => p.freed,
    };
    let done: Vec<(usize, u64)> = match (dry_run, state) {
        (false, Some(s)) => execute(root, s, &inv, &p, now, &mut report)?,
        _ => p.remove.clone(),
    };
    let item = |i: usize, bytes: u64, reason: String| Item {
        repo: inv.repo_path(i),
        commit: inv.revisions[i].commit.clone(),
        last_used: inv.revisions[i].last_used,
        bytes,
        reason,
    };
    for &(i, bytes) in &done {
        let r = &inv.revisions[i];
        let age = state::secs(now).saturating_sub(r.last_used);
        report.removed.push(item(
            i,
            bytes,
            format!(
                "least recently used: last used {} ago",
                human_duration(Duration::from_secs(age))
            ),
        ));
        report.freed += bytes;
    }
    // Kept by `execute`: opened or a download started since the scan.
    let late_kept = report.kept.len();
    for (i, k) in &p.kept {
        report.kept.push(item(*i, 0, k.reason()));
    }
    report.met = match goal {
        Goal::Free(n) => report.freed >= n,
        // Pinned revisions are the administrator's choice: kept, not in the way.
        Goal::UnusedSince(_) => {
            p.met && report.kept.len() == p.kept.len() && report.removed.len() == p.remove.len()
        }
    };
    // The plan counts what revisions take with them; a store's size also holds what no
    // revision does, some of which goes with a repo's last revision (an abandoned
    // download, a ref to no snapshot), and the disk's free space moves with more than the
    // store. Short by the count after removing, the store itself (or for free space, the
    // disk) says whether the goal is met.
    let mut left = None;
    if !report.met && !dry_run && !done.is_empty() {
        match (target, want_free) {
            (Target::MaxSize(max), _) => {
                let bytes = scan::total_bytes(root)?;
                report.met = bytes <= max;
                left = Some(format!("the store now takes {bytes} bytes on disk"));
            }
            (_, Some(want)) => {
                let vfs = sys::fstatvfs(root.fd()).map_err(io_err)?;
                let avail = vfs.f_bavail as u64 * vfs.f_frsize as u64;
                report.met = avail >= want;
                left = Some(format!("the disk now has {avail} bytes free"));
            }
            _ => {}
        }
    }
    if !report.met {
        let pinned = p.kept.iter().filter(|(_, k)| !k.in_the_way()).count();
        let failed = p.remove.len().saturating_sub(done.len() + late_kept);
        let in_the_way = report.kept.len() - pinned;
        report.reason = Some(unmet(goal, in_the_way, pinned, failed, left));
    }
    Ok(report)
}

/// Why the goal was not met: the revisions open or downloading that stayed (with
/// `--older-than`, only those: pinned ones are excluded by choice, and said apart), those
/// that failed to go, or else the plan fell short (`left`: what the store or disk says now).
fn unmet(
    goal: Goal,
    in_the_way: usize,
    pinned: usize,
    failed: usize,
    left: Option<String>,
) -> String {
    let mut why = Vec::new();
    let would = match goal {
        Goal::Free(_) => "that would have gone",
        Goal::UnusedSince(_) => "unused since then",
    };
    if in_the_way > 0 {
        why.push(format!(
            "{in_the_way} revision(s) {would} are kept (open or downloading)"
        ));
    }
    match goal {
        Goal::Free(_) if pinned > 0 => {
            why.push(format!("{pinned} revision(s) {would} are kept (pinned)"))
        }
        Goal::UnusedSince(_) if pinned > 0 && !why.is_empty() => why.push(format!(
            "{pinned} pinned one(s) stay by choice, not counted"
        )),
        _ => {}
    }
    if failed > 0 {
        why.push(format!(
            "{failed} revision(s) could not be removed (see the errors)"
        ));
    }
    if why.is_empty() {
        return match left {
            Some(b) => format!("not enough revisions left to remove ({b})"),
            None => "not enough revisions left to remove".to_owned(),
        };
    }
    why.join("; ")
}

fn name(n: &OsStr) -> io::Result<Name> {
    Name::new(n).map_err(io_err)
}

/// Entries removed from the cache: the inode number of the directory that held each, and
/// its name there.
type Gone = Vec<(u64, OsString)>;

/// The trash entry listing shared payloads about to lose their links.
const PAYLOADS: &str = "payloads";

/// A trash name no other entry has: `<kind>@<hub>@<repo>@<rest>@<pid>.<n>`, `hub` the path
/// of the hub cache it is from below the store root (empty: the root), each field
/// [`escaped`]. Older runs wrote `<kind>@<repo>@<rest>@<pid>.<n>`, for `hub/` or the root.
fn trash_name(
    trash: &Node,
    kind: &str,
    hub: &Path,
    repo: &str,
    rest: &str,
) -> io::Result<OsString> {
    let (hub, repo) = (
        escaped(hub.as_os_str().as_bytes()),
        escaped(repo.as_bytes()),
    );
    for n in 0.. {
        let candidate = OsString::from(format!(
            "{kind}@{hub}@{repo}@{rest}@{}.{n}",
            std::process::id()
        ));
        if child(trash, &candidate)?.is_none() {
            return Ok(candidate);
        }
    }
    unreachable!("some name is free")
}

/// `b` as a field of a trash name: `%`, `/`, `@` and what is not printable ASCII as `%XX`,
/// so that a path is one name, and the name splits at its `@`s.
fn escaped(b: &[u8]) -> String {
    b.iter()
        .map(|&c| match c {
            b'%' | b'/' | b'@' | ..=b' ' | 0x7f.. => format!("%{c:02X}"),
            c => char::from(c).to_string(),
        })
        .collect()
}

/// The bytes an [`escaped`] field stands for (`None`: it cannot be one).
fn unescaped(f: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(f.len());
    let mut it = f.iter();
    while let Some(&c) = it.next() {
        if c == b'%' {
            let hex = [*it.next()?, *it.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// What a trash name says: its kind, the hub cache it is from (`None`: an older run's
/// name, which does not say) and its repo; `None` if it is no such name.
fn trash_entry(n: &OsStr) -> Option<(String, Option<PathBuf>, String)> {
    let fields: Vec<&[u8]> = n.as_bytes().split(|&c| c == b'@').collect();
    let (kind, hub, repo) = match fields[..] {
        [kind, hub, repo, _, _] => (kind, Some(unescaped(hub)?), unescaped(repo)?),
        [kind, repo, _, _] => (kind, None, repo.to_vec()),
        _ => return None,
    };
    Some((
        String::from_utf8(kind.to_vec()).ok()?,
        hub.map(|h| PathBuf::from(OsString::from_vec(h))),
        String::from_utf8(repo).ok()?,
    ))
}

/// Moves the entry `n` of `dir` into the trash as a `kind` entry; false if it was gone.
fn to_trash(
    dir: &Node,
    n: &OsStr,
    trash: &Node,
    (kind, hub, repo, rest): (&str, &Path, &str, &str),
    gone: &mut Gone,
) -> io::Result<bool> {
    let t = trash_name(trash, kind, hub, repo, rest)?;
    let (from, to) = (name(n)?, name(&t)?);
    let moved = match sys::rename_at(dir.fd(), &from, trash.fd(), &to, libc::RENAME_NOREPLACE) {
        // A filesystem without renameat2's flags (GlusterFS's FUSE client): the name was
        // free just now, holds this process's id, and the eviction lock keeps every other
        // eviction out, so a plain rename replaces nothing.
        Err(libc::EINVAL) => sys::rename_at(dir.fd(), &from, trash.fd(), &to, 0),
        r => r,
    };
    match moved {
        Ok(()) => {
            gone.push((dir.st.st_ino, n.to_owned()));
            Ok(true)
        }
        Err(libc::ENOENT) => Ok(false),
        Err(e) => Err(io_err(e)),
    }
}

/// How long after a revision's snapshot went every daemon has written to its open-file
/// record the opens made through it just before (each writes at most every [`record::TICK`]).
const RECORDS_SETTLE: Duration = record::TICK
    .saturating_mul(2)
    .saturating_add(Duration::from_millis(200));

/// Removes the planned revisions (each checked again just before for open files and a
/// download started since the scan), then what only they linked to, then repos left empty.
/// Returns the revisions removed.
fn execute(
    root: &Node,
    s: &StateDir,
    inv: &Inventory,
    p: &Plan,
    now: SystemTime,
    report: &mut Report,
) -> io::Result<Vec<(usize, u64)>> {
    let mut done = Vec::new();
    if p.remove.is_empty() {
        return Ok(done);
    }
    let hubs = (0..inv.hubs.len())
        .map(|h| inv.hub_at(root, h))
        .collect::<io::Result<Vec<_>>>()?;
    let trash = trash_node(s)?;
    let mut gone = Gone::new();
    // By hub cache, the repos revisions went from, with the blobs they linked to.
    let mut candidates: BTreeMap<usize, BTreeMap<String, BTreeSet<OsString>>> = BTreeMap::new();
    for &(i, bytes) in &p.remove {
        let r = &inv.revisions[i];
        let place = &inv.places[i];
        let h = inv.repos[place.repo].hub;
        let Some(hub) = &hubs[h] else { continue };
        let open = s.open_inodes(SystemTime::now()).map_err(io_err)?;
        let keep = if r.files.iter().any(|f| open.contains(f)) {
            Some(Keep::Open("opened while evicting".into()))
        } else {
            download_in_progress(hub, &r.repo, SystemTime::now())?
                .map(|why| Keep::Downloading(format!("{}: {why}, started while evicting", r.repo)))
        };
        if let Some(k) = keep {
            report.kept.push(Item {
                repo: inv.repo_path(i),
                commit: r.commit.clone(),
                last_used: r.last_used,
                bytes: 0,
                reason: k.reason(),
            });
            continue;
        }
        let at = (hub, inv.hubs[h].as_path());
        match remove_revision(at, &trash, &r.repo, &r.commit, &place.refs, &mut gone) {
            Ok(()) => {
                candidates
                    .entry(h)
                    .or_default()
                    .entry(r.repo.clone())
                    .or_default()
                    .extend(place.blob_names.iter().cloned());
                done.push((i, bytes));
            }
            Err(e) => report
                .errors
                .push(format!("{}@{}: {e}", inv.repo_path(i), r.commit)),
        }
    }
    if !done.is_empty() {
        // No open can reach the removed snapshots any more; one made just before may not
        // be in its daemon's record yet.
        std::thread::sleep(RECORDS_SETTLE);
    }
    let open = s.open_inodes(SystemTime::now()).map_err(io_err)?;
    let busy: HashSet<(usize, &str)> = inv
        .repos
        .iter()
        .filter(|r| r.busy.is_some())
        .map(|r| (r.hub, r.name.as_str()))
        .collect();
    let mut left = BTreeMap::new();
    for (h, repos) in &candidates {
        let Some(hub) = &hubs[*h] else { continue };
        let at = inv.hubs[*h].as_path();
        let mut sw = Sweep {
            trash: &trash,
            hub: at,
            open: &open,
            errors: &mut report.errors,
            gone: &mut gone,
            left: Left::default(),
        };
        sweep(hub, repos, BTreeSet::new(), &mut sw)?;
        left.insert(at.to_owned(), sw.left);
        for repo in repos.keys().filter(|r| !busy.contains(&(*h, r.as_str()))) {
            if let Err(e) = remove_if_empty((hub, at), &trash, repo, now, &mut gone) {
                report.errors.push(in_hub(at, format!("{repo}: {e}")));
            }
        }
    }
    drop(trash);
    publish(s, &gone, &mut report.errors);
    empty_trash(s, &left, &mut report.errors);
    Ok(done)
}

/// Why the repo `repo` has a download in progress now, if it has: a fresh `.incomplete` in
/// its `blobs/` (judged as the scan judges it) or a held lock in `.locks/<repo>/`.
fn download_in_progress(hub: &Node, repo: &str, now: SystemTime) -> io::Result<Option<String>> {
    let Some(rnode) = child(hub, repo)?.filter(Node::is_dir) else {
        return Ok(None);
    };
    if let (_, Some(why)) = scan::blobs_of(hub, &rnode, now)? {
        return Ok(Some(why));
    }
    let Some(locks) = child(hub, LOCKS)?.filter(Node::is_dir) else {
        return Ok(None);
    };
    let Some(rl) = child(&locks, repo)?.filter(Node::is_dir) else {
        return Ok(None);
    };
    scan::held_lock(&rl)
}

fn trash_node(s: &StateDir) -> io::Result<Node> {
    let fd = s
        .subdir(TRASH_DIR, true)
        .map_err(io_err)?
        .ok_or_else(|| io_err(libc::ENOENT))?;
    let st = sys::fstat(fd.as_fd()).map_err(io_err)?;
    Ok(Node { fd, st })
}

/// Takes one revision out of the cache: refs pointing at it, then its snapshot (one
/// rename), then its `.no_exist/` markers and cached tree listing.
fn remove_revision(
    (hub, at): (&Node, &Path),
    trash: &Node,
    repo: &str,
    commit: &str,
    refs: &[std::path::PathBuf],
    gone: &mut Gone,
) -> io::Result<()> {
    let Some(rnode) = child(hub, repo)? else {
        return Ok(());
    };
    if let Some(rdir) = child(&rnode, REFS)?.filter(Node::is_dir) {
        for rel in refs {
            // Only if it still names this commit: a download may have moved it on.
            if scan::read_ref(&rdir, rel)?.as_deref() != Some(commit) {
                continue;
            }
            let mut dir = rdir.try_clone().map_err(io_err)?;
            let comps: Vec<&OsStr> = rel.iter().collect();
            let (last, parents) = comps.split_last().expect("a ref has a name");
            for c in parents {
                dir = child(&dir, c)?.ok_or_else(|| io_err(libc::ENOENT))?;
            }
            match sys::unlink_at(dir.fd(), &name(last)?, false) {
                Ok(()) | Err(libc::ENOENT) => {}
                Err(e) => return Err(io_err(e)),
            }
        }
    }
    if let Some(snaps) = child(&rnode, SNAPSHOTS)?.filter(Node::is_dir) {
        to_trash(
            &snaps,
            OsStr::new(commit),
            trash,
            ("snap", at, repo, commit),
            gone,
        )?;
    }
    if let Some(ne) = child(&rnode, NO_EXIST)?.filter(Node::is_dir) {
        to_trash(
            &ne,
            OsStr::new(commit),
            trash,
            ("noexist", at, repo, commit),
            gone,
        )?;
    }
    if let Some(trees) = child(&rnode, TREES)?.filter(Node::is_dir) {
        let t = OsString::from(format!("{commit}{TREE_SUFFIX}"));
        match sys::unlink_at(trees.fd(), &name(&t)?, false) {
            Ok(()) | Err(libc::ENOENT) => {}
            Err(e) => return Err(io_err(e)),
        }
    }
    Ok(())
}

/// `what` happened in the hub cache `hub`: said after its path unless that is `HF_HOME/hub`
/// or the root (as reports name repos).
fn in_hub(hub: &Path, what: String) -> String {
    if hub.as_os_str().is_empty() || hub == Path::new(layout::HUB) {
        what
    } else {
        format!("{}: {what}", hub.display())
    }
}

/// What a sweep left for a later run (open through a mount, or its lock held): listed in
/// the trash once it is emptied, so that the next run removes it if it is free by then.
#[derive(Default)]
struct Left {
    blobs: BTreeMap<String, BTreeSet<OsString>>,
    payloads: BTreeSet<(OsString, OsString)>,
}

/// The trash entry listing the repo blobs a sweep left.
const BLOB_LIST: &str = "blobs";

/// What a sweep works with and what it leaves.
struct Sweep<'a> {
    trash: &'a Node,
    /// The path of the hub cache swept, for what is listed in the trash.
    hub: &'a Path,
    /// The store inodes open through a mount now.
    open: &'a HashSet<u64>,
    errors: &'a mut Vec<String>,
    gone: &'a mut Gone,
    left: Left,
}

impl Sweep<'_> {
    fn err(&mut self, what: String) {
        self.errors.push(in_hub(self.hub, what));
    }

    fn leave_blob(&mut self, repo: &str, n: &OsStr, why: &str) {
        self.err(format!(
            "{repo}/blobs/{}: left for a later run ({why})",
            n.to_string_lossy()
        ));
        let names = self.left.blobs.entry(repo.to_owned()).or_default();
        names.insert(n.to_owned());
    }

    fn leave_payload(&mut self, d: &OsStr, p: &OsStr, why: &str) {
        self.err(format!(
            "blobs/{}/{}: left for a later run ({why})",
            d.to_string_lossy(),
            p.to_string_lossy()
        ));
        self.left.payloads.insert((d.to_owned(), p.to_owned()));
    }

    /// Whether `n` can be a name in a directory; reported when it cannot.
    fn valid(&mut self, n: &OsStr, at: impl FnOnce() -> String) -> bool {
        match Name::new(n) {
            Ok(_) => true,
            Err(e) => {
                self.err(format!(
                    "{}: skipped: not a valid name ({})",
                    at(),
                    io_err(e)
                ));
                false
            }
        }
    }
}

/// Locks held at once by a sweep, each an open descriptor.
const LOCKS_AT_ONCE: usize = 128;

/// Gives what eviction made in `dir` (a missing lock file or lock directory) the owner and
/// group of `dir` (a member's, as if that member's client had made it), then `mode`.
fn give_like_dir(fd: BorrowedFd<'_>, dir: &Node, mode: u32) -> io::Result<()> {
    sys::chown(fd, Some(dir.st.st_uid), Some(dir.st.st_gid)).map_err(io_err)?;
    sys::chmod(fd, mode).map_err(io_err)
}

/// An exclusive flock on the lock file `n` of `dir`, taken without waiting (`None`: someone
/// holds it). Made when missing, as the hub client makes it, so that a client making it
/// meanwhile takes this same lock.
fn try_lock(dir: &Node, n: &OsStr) -> io::Result<Option<OwnedFd>> {
    let n = name(n)?;
    let handle = match sys::open_path(dir.fd(), &n) {
        Err(libc::ENOENT) => {
            let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
            match sys::open_at(dir.fd(), &n, flags, 0o600) {
                // The modes of its directory, as the store's policy has them.
                Ok(fd) => give_like_dir(fd.as_fd(), dir, dir.st.st_mode & 0o666)?,
                Err(libc::EEXIST) => {}
                Err(e) => return Err(io_err(e)),
            }
            sys::open_path(dir.fd(), &n).map_err(io_err)?
        }
        r => r.map_err(io_err)?,
    };
    if sys::fstat(handle.as_fd()).map_err(io_err)?.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(io::Error::other("the lock is not a regular file"));
    }
    let fd = sys::reopen(handle.as_fd(), libc::O_RDONLY | libc::O_NONBLOCK).map_err(io_err)?;
    match sys::flock(fd.as_fd(), libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => Ok(Some(fd)),
        Err(libc::EWOULDBLOCK) => Ok(None),
        Err(e) => Err(io_err(e)),
    }
}

/// The directory `n` of `dir`, made when missing with the owner, group and modes of `dir`,
/// as the store's policy has them.
fn dir_made(dir: &Node, n: &str) -> io::Result<Node> {
    let made = child(dir, n)?.is_none()
        && match sys::mkdir_at(dir.fd(), &name(OsStr::new(n))?, 0o700) {
            Ok(()) => true,
            Err(libc::EEXIST) => false,
            Err(e) => return Err(io_err(e)),
        };
    let d = child(dir, n)?
        .filter(Node::is_dir)
        .ok_or_else(|| io_err(libc::ENOTDIR))?;
    if made {
        give_like_dir(d.fd(), dir, dir.st.st_mode & 0o7777)?;
    }
    Ok(d)
}

fn lock_name(n: &OsStr) -> OsString {
    let mut l = n.to_owned();
    l.push(LOCK_SUFFIX);
    l
}

/// Removes the blobs named in `candidates` that no remaining snapshot of their repo links
/// to, then the shared payloads (`payloads`, and those the removed blobs linked to) no repo
/// blob links to any more, with their `.refs` hints; each under the lock the hub client
/// holds while it links to it, and none open through a mount. The payloads are written to
/// the trash before the links to them go, so that a killed run's next run still finds
/// them. A bad entry is reported and skipped; what is locked or open is left for later.
fn sweep(
    hub: &Node,
    candidates: &BTreeMap<String, BTreeSet<OsString>>,
    mut payloads: BTreeSet<(OsString, OsString)>,
    sw: &mut Sweep,
) -> io::Result<()> {
    for (repo, names) in candidates {
        if !sw.valid(OsStr::new(repo), || repo.clone()) {
            continue;
        }
        if let Err(e) = sweep_repo(hub, repo, names, &mut payloads, sw) {
            sw.err(format!("{repo}: {e}"));
            let left = sw.left.blobs.entry(repo.clone()).or_default();
            left.extend(names.iter().cloned());
        }
    }
    sweep_payloads(hub, &payloads, sw)
}

/// The repo blobs `names` of `repo` no snapshot links to, removed under their download
/// locks (`.locks/<repo>/<blob>.lock`, which the hub client holds while it makes a blob or
/// links a snapshot to it); the shared payloads they linked to are added to `payloads`.
fn sweep_repo(
    hub: &Node,
    repo: &str,
    names: &BTreeSet<OsString>,
    payloads: &mut BTreeSet<(OsString, OsString)>,
    sw: &mut Sweep,
) -> io::Result<()> {
    let Some(rnode) = child(hub, repo)?.filter(Node::is_dir) else {
        return Ok(());
    };
    let Some(blobs) = child(&rnode, BLOBS)?.filter(Node::is_dir) else {
        return Ok(());
    };
    let names: Vec<&OsString> = names
        .iter()
        .filter(|n| sw.valid(n, || format!("{repo}/blobs/{}", n.to_string_lossy())))
        .collect();
    let locks = dir_made(&dir_made(hub, LOCKS)?, repo)?;
    for chunk in names.chunks(LOCKS_AT_ONCE) {
        let mut held = Vec::new();
        for &n in chunk {
            if child(&blobs, n)?.is_none() {
                continue;
            }
            match try_lock(&locks, &lock_name(n)) {
                Ok(Some(fd)) => held.push((n, fd)),
                Ok(None) => sw.leave_blob(repo, n, "its download lock is held"),
                Err(e) => sw.err(format!(
                    "{repo}/blobs/{}: skipped: its lock: {e}",
                    n.to_string_lossy()
                )),
            }
        }
        // With the locks held no download links a snapshot to these blobs: what links
        // to them now is final.
        let linked = scan::linked_blobs(&rnode)?;
        let mut doomed = Vec::new();
        let mut listed = BTreeSet::new();
        for (n, _) in held.iter().filter(|(n, _)| !linked.contains(*n)) {
            let Some(b) = child(&blobs, n)? else { continue };
            if b.is_symlink() {
                let t = sys::readlink(b.fd()).map_err(io_err)?;
                if let Some((d, p)) = layout::payload_of_target(&t) {
                    listed.insert((
                        OsStr::from_bytes(d).to_owned(),
                        OsStr::from_bytes(p).to_owned(),
                    ));
                }
            } else if sw.open.contains(&b.st.st_ino) {
                sw.leave_blob(repo, n, "open through a mount");
                continue;
            }
            doomed.push(*n);
        }
        list_payloads(&listed, sw);
        for n in doomed {
            match sys::unlink_at(blobs.fd(), &name(n)?, false) {
                Ok(()) => sw.gone.push((blobs.st.st_ino, n.clone())),
                Err(e) => sw.err(format!(
                    "{repo}/blobs/{}: {}",
                    n.to_string_lossy(),
                    io_err(e)
                )),
            }
        }
        payloads.extend(listed);
    }
    Ok(())
}

/// Writes the shared payloads about to lose their last links to the trash. When it cannot
/// (a full disk), removing goes on: the list only lets the next run finish a killed one.
fn list_payloads(listed: &BTreeSet<(OsString, OsString)>, sw: &mut Sweep) {
    if listed.is_empty() {
        return;
    }
    let list: Vec<u8> = listed
        .iter()
        .flat_map(|(d, p)| [d.as_bytes(), b"/", p.as_bytes(), b"\n"].concat())
        .collect();
    let written = trash_name(sw.trash, PAYLOADS, sw.hub, "", "").and_then(|n| {
        state::write_file(sw.trash.fd(), &n.to_string_lossy(), &list).map_err(io_err)
    });
    if let Err(e) = written {
        sw.err(format!(
            "cannot list the shared payloads in the trash ({e}); removing them anyway (a run \
             killed now would leave them for `hf cache prune`)"
        ));
    }
}

/// Removes the shared payloads `payloads` no repo blob links to, with their `.refs` hints
/// and `.lock`s, each under its `.lock` (which the hub client holds while it links a repo
/// to it).
fn sweep_payloads(
    hub: &Node,
    payloads: &BTreeSet<(OsString, OsString)>,
    sw: &mut Sweep,
) -> io::Result<()> {
    if payloads.is_empty() {
        return Ok(());
    }
    let Some(shared) = child(hub, BLOBS)?.filter(Node::is_dir) else {
        return Ok(());
    };
    let valid: Vec<&(OsString, OsString)> = payloads
        .iter()
        .filter(|(d, p)| {
            let at = || format!("blobs/{}/{}", d.to_string_lossy(), p.to_string_lossy());
            sw.valid(d, at) && sw.valid(p, at)
        })
        .collect();
    for chunk in valid.chunks(LOCKS_AT_ONCE) {
        let mut held = Vec::new();
        for &(d, p) in chunk {
            let Some(sub) = child(&shared, d)?.filter(Node::is_dir) else {
                continue;
            };
            if child(&sub, p)?.is_none() {
                // Its hint alone is left by a run killed between the two.
                remove_hint(&sub, d, p, sw);
                continue;
            }
            match try_lock(&sub, &lock_name(p)) {
                Ok(Some(fd)) => held.push((d, p, sub, fd)),
                Ok(None) => sw.leave_payload(d, p, "its lock is held"),
                Err(e) => sw.err(format!(
                    "blobs/{}/{}: skipped: its lock: {e}",
                    d.to_string_lossy(),
                    p.to_string_lossy()
                )),
            }
        }
        // With the locks held no client links a repo to these payloads.
        let linked = linked_payloads(hub)?;
        for (d, p, sub, _lock) in &held {
            if linked.contains(&((*d).clone(), (*p).clone())) {
                continue;
            }
            if child(sub, p)?.is_some_and(|f| sw.open.contains(&f.st.st_ino)) {
                sw.leave_payload(d, p, "open through a mount");
                continue;
            }
            match sys::unlink_at(sub.fd(), &name(p)?, false) {
                Ok(()) | Err(libc::ENOENT) => {
                    remove_hint(sub, d, p, sw);
                    // Still held: a client waiting for it retries by name, makes a new
                    // one, and finds the payload gone.
                    let _ = sys::unlink_at(sub.fd(), &name(&lock_name(p))?, false);
                }
                Err(e) => sw.err(format!(
                    "blobs/{}/{}: {}",
                    d.to_string_lossy(),
                    p.to_string_lossy(),
                    io_err(e)
                )),
            }
        }
    }
    Ok(())
}

/// Removes the `.refs` hint of the shared payload `p` in its directory `sub`.
fn remove_hint(sub: &Node, d: &OsStr, p: &OsStr, sw: &mut Sweep) {
    let mut hint = p.to_owned();
    hint.push(layout::REFS_SUFFIX);
    let removed = name(&hint).and_then(|h| match sys::unlink_at(sub.fd(), &h, false) {
        Ok(()) | Err(libc::ENOENT) => Ok(()),
        Err(e) => Err(io_err(e)),
    });
    if let Err(e) = removed {
        sw.err(format!(
            "blobs/{}/{}: {e}",
            d.to_string_lossy(),
            hint.to_string_lossy()
        ));
    }
}

/// Every shared payload some repo's blob links to.
fn linked_payloads(hub: &Node) -> io::Result<HashSet<(OsString, OsString)>> {
    let mut out = HashSet::new();
    for n in hub.names().map_err(io_err)? {
        if !layout::is_repo_dir(n.as_bytes()) {
            continue;
        }
        let Some(blobs) = child(hub, &n)?.and_then(|r| child(&r, BLOBS).ok().flatten()) else {
            continue;
        };
        if !blobs.is_dir() {
            continue;
        }
        for b in blobs.names().map_err(io_err)? {
            let Some(node) = child(&blobs, &b)?.filter(Node::is_symlink) else {
                continue;
            };
            let t = sys::readlink(node.fd()).map_err(io_err)?;
            if let Some((d, p)) = layout::payload_of_target(&t) {
                out.insert((
                    OsStr::from_bytes(d).to_owned(),
                    OsStr::from_bytes(p).to_owned(),
                ));
            }
        }
    }
    Ok(out)
}

/// Removes a repo whose last revision went (and its lock directory), unless something
/// came into it meanwhile: a snapshot, a download.
fn remove_if_empty(
    (hub, at): (&Node, &Path),
    trash: &Node,
    repo: &str,
    now: SystemTime,
    gone: &mut Gone,
) -> io::Result<()> {
    let Some(rnode) = child(hub, repo)?.filter(Node::is_dir) else {
        return Ok(());
    };
    if let Some(snaps) = child(&rnode, SNAPSHOTS)?.filter(Node::is_dir) {
        if !snaps.names().map_err(io_err)?.is_empty() {
            return Ok(());
        }
    }
    if let Some(blobs) = child(&rnode, BLOBS)?.filter(Node::is_dir) {
        for n in blobs.names().map_err(io_err)? {
            if let Some(b) = child(&blobs, &n)? {
                if !layout::is_stale_temporary(n.as_bytes(), b.mtime(), now) {
                    return Ok(());
                }
            }
        }
    }
    let locks = child(hub, LOCKS)?.filter(Node::is_dir);
    let rlocks = match &locks {
        Some(l) => child(l, repo)?.filter(Node::is_dir),
        None => None,
    };
    if let Some(rl) = &rlocks {
        if scan::held_lock(rl)?.is_some() {
            return Ok(());
        }
    }
    to_trash(hub, OsStr::new(repo), trash, ("repo", at, repo, ""), gone)?;
    if let (Some(l), Some(_)) = (&locks, rlocks) {
        to_trash(l, OsStr::new(repo), trash, ("locks", at, repo, ""), gone)?;
    }
    Ok(())
}

/// Finishes what a killed eviction left in the trash: the blobs its trashed snapshots
/// linked to and the payloads it listed are swept, each in the hub cache the entry names,
/// repos it emptied removed, then the trash is emptied. So is what an earlier run left for
/// later (open, or locked). An entry that cannot be read or names nothing valid is
/// reported and dropped with the trash.
fn finish_trash(root: &Node, s: &StateDir, errors: &mut Vec<String>) -> io::Result<()> {
    // Made at the first run and kept: a later one on a full disk may not be able to make
    // it (and then, with nothing in it, there is nothing to finish).
    let fd = match s.subdir(TRASH_DIR, true) {
        Ok(Some(fd)) => fd,
        Ok(None) | Err(libc::ENOSPC | libc::EDQUOT) => return Ok(()),
        Err(e) => return Err(io_err(e)),
    };
    let st = sys::fstat(fd.as_fd()).map_err(io_err)?;
    let trash = Node { fd, st };
    // By the hub cache the entries name, the repos' blobs and the payloads to sweep.
    let mut found: BTreeMap<Option<PathBuf>, ToSweep> = BTreeMap::new();
    let mut snapshots = false;
    for n in trash.names().map_err(io_err)? {
        let text = n.to_string_lossy();
        let Some((kind, hub, repo)) = trash_entry(&n) else {
            if text.starts_with(&format!("{BLOB_LIST}@"))
                || text.starts_with(&format!("{PAYLOADS}@"))
                || text.starts_with("snap@")
            {
                errors.push(format!("trash entry {text}: skipped: not a trash name"));
            }
            continue;
        };
        if matches!(kind.as_str(), BLOB_LIST | "snap") && !layout::is_repo_dir(repo.as_bytes()) {
            errors.push(format!("trash entry {text}: skipped: {repo} is not a repo"));
            continue;
        }
        let (candidates, payloads) = found.entry(hub).or_default();
        let read = match kind.as_str() {
            PAYLOADS => list_of(&trash, &text).map(|list| {
                for l in list.lines() {
                    if let Some((d, p)) = l.split_once('/') {
                        payloads.insert((OsString::from(d), OsString::from(p)));
                    }
                }
            }),
            BLOB_LIST => list_of(&trash, &text).map(|list| {
                let names = candidates.entry(repo).or_default();
                names.extend(list.lines().map(OsString::from));
            }),
            "snap" => {
                snapshots = true;
                trashed_links(&trash, &n, candidates.entry(repo).or_default())
            }
            _ => Ok(()),
        };
        if let Err(e) = read {
            errors.push(format!("trash entry {text}: {e}"));
        }
    }
    found.retain(|_, (c, p)| !c.is_empty() || !p.is_empty());
    let mut left = BTreeMap::new();
    if !found.is_empty() {
        if snapshots {
            // A killed run may have moved them just now (see `execute`).
            std::thread::sleep(RECORDS_SETTLE);
        }
        let open = s.open_inodes(SystemTime::now()).map_err(io_err)?;
        let mut gone = Gone::new();
        for (hub, (candidates, payloads)) in found {
            let (at, node) = match trashed_hub(root, hub) {
                Ok(Some(h)) => h,
                Ok(None) => continue,
                Err(e) => {
                    errors.push(format!("trash entries: skipped: {e}"));
                    continue;
                }
            };
            let mut sw = Sweep {
                trash: &trash,
                hub: &at,
                open: &open,
                errors,
                gone: &mut gone,
                left: Left::default(),
            };
            sweep(&node, &candidates, payloads, &mut sw)?;
            left.insert(at.clone(), sw.left);
            for repo in candidates
                .keys()
                .filter(|r| Name::new(OsStr::new(r)).is_ok())
            {
                let now = SystemTime::now();
                if let Err(e) = remove_if_empty((&node, &at), &trash, repo, now, &mut gone) {
                    errors.push(in_hub(&at, format!("{repo}: {e}")));
                }
            }
        }
        publish(s, &gone, errors);
    }
    drop(trash);
    empty_trash(s, &left, errors);
    Ok(())
}

/// Repo blobs by repo, and shared payloads, to sweep in one hub cache.
type ToSweep = (
    BTreeMap<String, BTreeSet<OsString>>,
    BTreeSet<(OsString, OsString)>,
);

/// The hub cache a trash entry names, with its path (`None`: it is gone). An older run's
/// entry names none: `hub/` then, or the root.
fn trashed_hub(root: &Node, hub: Option<PathBuf>) -> io::Result<Option<(PathBuf, Node)>> {
    let Some(path) = hub else {
        return Ok(Some(match child(root, layout::HUB)?.filter(Node::is_dir) {
            Some(h) => (PathBuf::from(layout::HUB), h),
            None => (PathBuf::new(), root.try_clone().map_err(io_err)?),
        }));
    };
    let mut dir = root.try_clone().map_err(io_err)?;
    let comps = path.as_os_str().as_bytes().split(|&b| b == b'/');
    for (i, c) in comps.enumerate().filter(|_| !path.as_os_str().is_empty()) {
        let c = OsStr::from_bytes(c);
        Name::new(c).map_err(|e| {
            io::Error::other(format!(
                "{}: not a path in the store ({})",
                path.display(),
                io_err(e)
            ))
        })?;
        if i == 0 && c == STATE_DIR {
            return Err(io::Error::other(format!(
                "{}: not a hub cache",
                path.display()
            )));
        }
        match child(&dir, c)?.filter(Node::is_dir) {
            Some(d) => dir = d,
            None => return Ok(None),
        }
    }
    Ok(Some((path, dir)))
}

/// The text of the trash's list `n`.
fn list_of(trash: &Node, n: &str) -> io::Result<String> {
    Ok(state::read_file(trash.fd(), n)
        .map_err(io_err)?
        .unwrap_or_default())
}

/// Adds the repo blobs the trashed snapshot `n` links to to `names`.
fn trashed_links(trash: &Node, n: &OsStr, names: &mut BTreeSet<OsString>) -> io::Result<()> {
    let Some(snap) = child(trash, n)?.filter(Node::is_dir) else {
        return Ok(());
    };
    walk(&snap, &mut |_, node, _| {
        if let Some(b) = node
            .is_symlink()
            .then(|| sys::readlink(node.fd()).ok())
            .flatten()
            .and_then(|t| layout::blob_of_target(&t).map(<[u8]>::to_vec))
        {
            names.insert(OsString::from(OsStr::from_bytes(&b)));
        }
        Visit::Descend
    })?;
    Ok(())
}

/// Tells the daemons of the store what went, so that they drop what their kernels cache
/// of it (names of hashes are cached for a minute: a removed snapshot would otherwise still
/// show through the mount).
fn publish(s: &StateDir, gone: &Gone, errors: &mut Vec<String>) {
    if let Err(e) = s.publish_removed(gone, SystemTime::now()) {
        errors.push(format!(
            "telling the mounts what was removed: {}",
            io_err(e)
        ));
    }
}

/// Empties the trash, then lists in it what the sweeps left for the next run, by hub cache.
fn empty_trash(s: &StateDir, left: &BTreeMap<PathBuf, Left>, errors: &mut Vec<String>) {
    // Kept, not removed: on a full disk the next run could not make it again.
    let emptied = trash_node(s).and_then(|trash| {
        for n in trash.names().map_err(io_err)? {
            state::remove_tree(trash.fd(), &n).map_err(io_err)?;
        }
        Ok(())
    });
    if let Err(e) = emptied {
        errors.push(format!("emptying the trash: {e}"));
    }
    if left
        .values()
        .all(|l| l.blobs.is_empty() && l.payloads.is_empty())
    {
        return;
    }
    let listed = trash_node(s).and_then(|trash| {
        left.iter()
            .try_for_each(|(hub, left)| list_left(&trash, hub, left))
    });
    if let Err(e) = listed {
        errors.push(format!(
            "cannot list what was left for a later run in the trash ({e}): it stays, unlinked"
        ));
    }
}

/// Lists in the trash what a sweep of the hub cache `hub` left.
fn list_left(trash: &Node, hub: &Path, left: &Left) -> io::Result<()> {
    for (repo, names) in &left.blobs {
        let list: Vec<u8> = names
            .iter()
            .flat_map(|n| [n.as_bytes(), b"\n"].concat())
            .collect();
        let n = trash_name(trash, BLOB_LIST, hub, repo, "")?;
        state::write_file(trash.fd(), &n.to_string_lossy(), &list).map_err(io_err)?;
    }
    if !left.payloads.is_empty() {
        let list: Vec<u8> = left
            .payloads
            .iter()
            .flat_map(|(d, p)| [d.as_bytes(), b"/", p.as_bytes(), b"\n"].concat())
            .collect();
        let n = trash_name(trash, PAYLOADS, hub, "", "")?;
        state::write_file(trash.fd(), &n.to_string_lossy(), &list).map_err(io_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::path::{Path, PathBuf};

    /// A store with one revision of `models--o--a`, a blob `b` linked as `f`.
    fn store(tag: &str) -> (PathBuf, PathBuf) {
        let base = std::env::temp_dir().join(format!("hfc-evict-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let repo = base.join("hub/models--o--a");
        let commit = "c".repeat(40);
        std::fs::create_dir_all(repo.join("blobs")).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::create_dir_all(repo.join(format!("snapshots/{commit}"))).unwrap();
        std::fs::create_dir_all(base.join("hub/.locks/models--o--a")).unwrap();
        std::fs::write(repo.join("refs/main"), &commit).unwrap();
        std::fs::write(repo.join("blobs/b"), vec![7u8; 5000]).unwrap();
        symlink("../../blobs/b", repo.join(format!("snapshots/{commit}/f"))).unwrap();
        (base, repo)
    }

    /// Plans removing everything, lets `meanwhile` happen, then carries the plan out.
    fn plan_then_execute(base: &Path, meanwhile: impl FnOnce()) -> (Report, Vec<(usize, u64)>) {
        let root = Node::open_trusted(base).unwrap();
        let s = StateDir::open(root.fd(), true).unwrap().unwrap();
        let now = SystemTime::now();
        let inv = scan::scan(&root, Some(&s), now).unwrap();
        let p = plan::plan(&inv.revisions, &inv.sizes, Goal::Free(u64::MAX));
        assert_eq!(p.remove.len(), 1, "planned: {p:?}");
        meanwhile();
        let mut report = Report::default();
        let done = execute(&root, &s, &inv, &p, now, &mut report).unwrap();
        (report, done)
    }

    #[test]
    fn an_unmet_goal_counts_what_was_in_the_way_and_says_pinned_ones_apart() {
        let free = Goal::Free(10);
        let old = Goal::UnusedSince(10);
        assert_eq!(
            unmet(free, 2, 1, 0, None),
            "2 revision(s) that would have gone are kept (open or downloading); \
             1 revision(s) that would have gone are kept (pinned)"
        );
        assert_eq!(
            unmet(free, 0, 1, 0, None),
            "1 revision(s) that would have gone are kept (pinned)"
        );
        assert_eq!(
            unmet(old, 2, 3, 0, None),
            "2 revision(s) unused since then are kept (open or downloading); \
             3 pinned one(s) stay by choice, not counted"
        );
        assert_eq!(
            unmet(old, 0, 3, 1, None),
            "1 revision(s) could not be removed (see the errors)",
            "pinned ones alone are not why"
        );
        assert_eq!(
            unmet(free, 0, 0, 0, Some("x".into())),
            "not enough revisions left to remove (x)"
        );
    }

    #[test]
    fn trash_names_say_their_hub_cache() {
        let hub = Path::new("te@m/100%/hub\n");
        let f = escaped(hub.as_os_str().as_bytes());
        assert_eq!(f, "te%40m%2F100%25%2Fhub%0A");
        assert_eq!(
            unescaped(f.as_bytes()).as_deref(),
            Some(hub.as_os_str().as_bytes())
        );
        for bad in ["%", "%4", "%zz"] {
            assert_eq!(unescaped(bad.as_bytes()), None, "{bad}");
        }
        let e = |n: &str| trash_entry(OsStr::new(n));
        let entry = |kind: &str, hub: Option<&str>, repo: &str| {
            Some((kind.to_owned(), hub.map(PathBuf::from), repo.to_owned()))
        };
        assert_eq!(
            e("snap@team%2Fhub@models--o--a@c@1.0"),
            entry("snap", Some("team/hub"), "models--o--a")
        );
        assert_eq!(e("payloads@@@@1.0"), entry("payloads", Some(""), ""));
        // An older run's: no hub cache named.
        assert_eq!(
            e("snap@models--o--a@c@1.0"),
            entry("snap", None, "models--o--a")
        );
        assert_eq!(e("payloads@@@1.0"), entry("payloads", None, ""));
        for bad in ["snap@x@1.0", "snap@a@b@c@d@e", "snap@%zz@r@c@1.0"] {
            assert_eq!(e(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_download_started_after_the_scan_keeps_its_revision() {
        for how in ["incomplete", "lock"] {
            let (base, repo) = store(how);
            let mut lock = None;
            let (report, done) = plan_then_execute(&base, || match how {
                "incomplete" => std::fs::write(repo.join("blobs/n.incomplete"), b"x").unwrap(),
                _ => {
                    let f =
                        std::fs::File::create(base.join("hub/.locks/models--o--a/n.lock")).unwrap();
                    sys::flock(f.as_fd(), libc::LOCK_EX).unwrap();
                    lock = Some(f);
                }
            });
            assert!(done.is_empty(), "{how}: nothing removed");
            assert_eq!(report.kept.len(), 1, "{how}: {report:?}");
            assert!(
                report.kept[0].reason.contains("download in progress"),
                "{how}: {}",
                report.kept[0].reason
            );
            assert!(repo.join("refs/main").exists() && repo.join("blobs/b").exists());
            drop(lock);
            // Once the download is over, the same plan goes through.
            std::fs::remove_file(repo.join("blobs/n.incomplete")).ok();
            let (report, done) = plan_then_execute(&base, || {});
            assert_eq!(done.len(), 1, "{how}: {report:?}");
            assert!(
                !repo.exists(),
                "{how}: the repo went with its last revision"
            );
            std::fs::remove_dir_all(&base).unwrap();
        }
    }
}
