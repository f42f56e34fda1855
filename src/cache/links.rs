//! The links of a hub cache, collected during a walk: each snapshot entry points to a repo
//! blob (`snapshots/<commit>/<path> -> ../../blobs/<etag>`), which is the file itself (the
//! old layout) or, for Xet files of huggingface_hub >= 1.33, a link to a shared payload
//! (`blobs/<etag> -> ../../blobs/<2hex>/<hash>`), whose `<hash>.refs` lists the repo links
//! as a hint. `stats` follows the links to size repos and what sharing saves; `doctor`
//! finds what dangles, payloads no repo links to, and `.refs` that disagree with the links.
//!
//! Everything is keyed by path relative to the walk's root; nothing is followed: targets
//! are read with `readlink` and matched against the names the walk saw.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::cache::layout::{
    self, BLOBS, Place, REFS_SUFFIX, SHARED_BLOBS_MARKER, SNAPSHOTS, payload_of_target,
};
use crate::cache::walk::Node;
use crate::sys;

/// The most of a `.refs` file read (one line per repo link: far more than any has).
const REFS_LIMIT: usize = 4 << 20;

/// What a repo's `blobs/<etag>` is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blob {
    /// The content itself, of this size (the old layout, or a non-Xet file).
    File(u64),
    /// A link to the shared payload at this path (relative to the walk's root).
    Payload(PathBuf),
    /// A link to anything else: not checked.
    Elsewhere,
}

/// What the walk saw at a path, as far as links are concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Dir,
    /// A regular file of this size.
    File(u64),
    /// A symlink with this target.
    Link(Vec<u8>),
    /// A payload's `.refs`, its lines (`None`: unreadable, or not text).
    Refs(Option<Vec<String>>),
    Other,
}

/// One snapshot entry and the repo blob it points to.
#[derive(Clone, Debug)]
struct SnapshotEntry {
    repo: String,
    revision: String,
    rel: PathBuf,
    blob: PathBuf,
}

/// What is missing at the end of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// The repo blob a snapshot entry points to.
    Blob,
    /// The shared payload a repo blob points to.
    Payload,
}

impl Missing {
    pub fn as_str(self) -> &'static str {
        match self {
            Missing::Blob => "blob",
            Missing::Payload => "payload",
        }
    }

    pub fn parse(s: &str) -> Option<Missing> {
        match s {
            "blob" => Some(Missing::Blob),
            "payload" => Some(Missing::Payload),
            _ => None,
        }
    }
}

/// A link that leads nowhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dangling {
    /// The repo directory's name (`models--org--name`).
    pub repo: String,
    /// The commit of the snapshot entry; `None` for a repo blob no snapshot uses.
    pub revision: Option<String>,
    /// The dangling entry (a snapshot entry, or the repo blob), relative to the walk's root.
    pub rel: PathBuf,
    pub missing: Missing,
}

/// A shared payload no repo links to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Orphan {
    pub rel: PathBuf,
    pub size: u64,
    /// Whether `hf cache prune` deletes it: it does only for payloads of a marked store,
    /// named by a Xet hash, whose `.refs` it can read (and finds no valid link in).
    pub prunable: bool,
}

/// A repo link to a payload that the payload's `.refs` does not list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unlisted {
    /// The `.refs` file, relative to the walk's root.
    pub refs: PathBuf,
    /// The line it lacks (`models--org--name/blobs/<etag>`, relative to the hub cache).
    pub line: String,
}

/// What [`Links::check`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Findings {
    pub dangling: Vec<Dangling>,
    pub orphans: Vec<Orphan>,
    pub unlisted: Vec<Unlisted>,
    /// Payloads still linked whose readable `.refs` lists none of their links: `hf cache
    /// prune` would delete them and leave those links dangling.
    pub at_risk: u64,
    /// Lines of `.refs` files naming no current link to their payload (harmless: a hint).
    pub stale_lines: u64,
}

/// The links of the hub cache at `hub` (relative to the walk's root: `hub`, or empty when
/// the root is a hub cache itself).
#[derive(Debug, Default)]
pub struct Links {
    hub: PathBuf,
    marked: bool,
    payloads: BTreeMap<PathBuf, u64>,
    refs: BTreeMap<PathBuf, Option<Vec<String>>>,
    blobs: BTreeMap<PathBuf, Blob>,
    snapshots: Vec<SnapshotEntry>,
}

/// Whether `name` is a Xet hash as huggingface_hub checks it (64 lowercase hex digits).
fn is_xet_hash(name: &[u8]) -> bool {
    name.len() == 64 && name.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// Reads a `.refs` file behind `node` (not following anything) as lines.
fn read_refs(node: &Node) -> Option<Vec<String>> {
    let fd = sys::reopen(node.fd(), libc::O_RDONLY | libc::O_NONBLOCK).ok()?;
    let mut buf = vec![0u8; (node.size() as usize).min(REFS_LIMIT) + 1];
    let mut len = 0;
    while len < buf.len() {
        match sys::pread(fd.as_fd(), &mut buf[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(_) => return None,
        }
    }
    buf.truncate(len);
    let text = String::from_utf8(buf).ok()?;
    Some(text.lines().map(str::to_owned).collect())
}

impl Links {
    pub fn new(hub: &Path) -> Links {
        Links {
            hub: hub.to_path_buf(),
            ..Links::default()
        }
    }

    /// Records one entry of the walk (reading a symlink's target, a `.refs` file's lines).
    pub fn add(&mut self, rel: &Path, node: &Node, place: Place) {
        let seen = if node.is_dir() {
            Seen::Dir
        } else if node.is_symlink() {
            match sys::readlink(node.fd()) {
                Ok(t) => Seen::Link(t),
                Err(_) => Seen::Other,
            }
        } else if node.is_file() && place == Place::PayloadRefs {
            Seen::Refs(read_refs(node))
        } else if node.is_file() {
            Seen::File(node.size())
        } else {
            Seen::Other
        };
        self.record(rel, place, seen);
    }

    /// Records what the walk saw at `rel`, at `place`.
    pub fn record(&mut self, rel: &Path, place: Place, seen: Seen) {
        let Ok(below) = rel.strip_prefix(&self.hub) else {
            return;
        };
        let c: Vec<&[u8]> = below.iter().map(|c| c.as_bytes()).collect();
        let is = |i: usize, n: &str| c.get(i).is_some_and(|x| *x == n.as_bytes());
        match (place, seen) {
            (Place::Payload, Seen::File(size)) if c.len() == 3 && is(0, BLOBS) => {
                self.payloads.insert(rel.to_path_buf(), size);
            }
            (Place::PayloadRefs, Seen::Refs(lines)) if c.len() == 3 && is(0, BLOBS) => {
                let name = c[2].strip_suffix(REFS_SUFFIX.as_bytes()).unwrap_or(c[2]);
                let payload = rel.with_file_name(std::ffi::OsStr::from_bytes(name));
                self.refs.insert(payload, lines);
            }
            (Place::Fixed, Seen::File(_))
                if c.len() == 2 && is(0, BLOBS) && is(1, SHARED_BLOBS_MARKER) =>
            {
                self.marked = true;
            }
            (_, seen) if c.len() >= 3 && layout::is_repo_dir(c[0]) => {
                self.repo_entry(rel, place, &c, seen);
            }
            _ => {}
        }
    }

    fn repo_entry(&mut self, rel: &Path, place: Place, c: &[&[u8]], seen: Seen) {
        let repo = String::from_utf8_lossy(c[0]).into_owned();
        if c[1] == BLOBS.as_bytes() && c.len() == 3 && place == Place::Fixed {
            let blob = match seen {
                Seen::File(size) => Blob::File(size),
                Seen::Link(target) => match payload_of_target(&target) {
                    Some((shard, hash)) => Blob::Payload(
                        self.hub
                            .join(BLOBS)
                            .join(std::ffi::OsStr::from_bytes(shard))
                            .join(std::ffi::OsStr::from_bytes(hash)),
                    ),
                    None => Blob::Elsewhere,
                },
                _ => return,
            };
            self.blobs.insert(rel.to_path_buf(), blob);
        } else if c[1] == SNAPSHOTS.as_bytes() && c.len() >= 4 {
            let Seen::Link(target) = seen else { return };
            // `snapshots/<commit>/a/b` -> `../../../blobs/<etag>`: one `..` per directory
            // between the entry and the repo. Any other target is not checked.
            let ups = c.len() - 2;
            let Some(rest) = (0..ups).try_fold(&target[..], |t, _| t.strip_prefix(b"../")) else {
                return;
            };
            let Some(etag) = rest
                .strip_prefix(BLOBS.as_bytes())
                .and_then(|r| r.strip_prefix(b"/"))
            else {
                return;
            };
            if etag.is_empty() || etag.contains(&b'/') || etag == b".." || etag == b"." {
                return;
            }
            let blob = self
                .hub
                .join(std::ffi::OsStr::from_bytes(c[0]))
                .join(BLOBS)
                .join(std::ffi::OsStr::from_bytes(etag));
            self.snapshots.push(SnapshotEntry {
                repo,
                revision: String::from_utf8_lossy(c[2]).into_owned(),
                rel: rel.to_path_buf(),
                blob,
            });
        }
    }

    /// The size of the content a repo blob stands for: its own, or its payload's.
    pub fn blob_size(&self, blob: &Path) -> Option<u64> {
        match self.blobs.get(blob)? {
            Blob::File(size) => Some(*size),
            Blob::Payload(p) => self.payloads.get(p).copied(),
            Blob::Elsewhere => None,
        }
    }

    /// Each repo's logical size: the content of the distinct blobs its snapshots use,
    /// following links to payloads (what `hf cache ls` shows for it).
    pub fn repo_bytes(&self) -> BTreeMap<String, u64> {
        let mut used: BTreeMap<&str, BTreeSet<&Path>> = BTreeMap::new();
        for s in &self.snapshots {
            used.entry(&s.repo).or_default().insert(&s.blob);
        }
        used.into_iter()
            .map(|(repo, blobs)| {
                let bytes = blobs.iter().filter_map(|b| self.blob_size(b)).sum();
                (repo.to_owned(), bytes)
            })
            .collect()
    }

    /// Bytes more that snapshot entries would take if each blob used by several of them
    /// (several revisions, or several paths) were a copy.
    pub fn snapshot_shared_bytes(&self) -> u64 {
        let mut uses: BTreeMap<&Path, u64> = BTreeMap::new();
        for s in &self.snapshots {
            *uses.entry(&s.blob).or_default() += 1;
        }
        uses.iter()
            .filter_map(|(b, n)| Some((n - 1) * self.blob_size(b)?))
            .sum()
    }

    /// The repo blobs linking each payload.
    fn linkers(&self) -> BTreeMap<&Path, Vec<&Path>> {
        let mut by: BTreeMap<&Path, Vec<&Path>> = BTreeMap::new();
        for (blob, b) in &self.blobs {
            if let Blob::Payload(p) = b {
                by.entry(p).or_default().push(blob);
            }
        }
        by
    }

    /// Bytes more that repo blobs would take if each payload linked by several of them
    /// (several repos) were a copy.
    pub fn payload_shared_bytes(&self) -> u64 {
        self.linkers()
            .iter()
            .filter_map(|(p, l)| Some((l.len() as u64 - 1) * self.payloads.get(*p)?))
            .sum()
    }

    /// The shared payloads and their sizes.
    pub fn payloads(&self) -> &BTreeMap<PathBuf, u64> {
        &self.payloads
    }

    /// The `.refs` line of a repo blob (its path relative to the hub cache).
    fn refs_line(&self, blob: &Path) -> String {
        let rel = blob.strip_prefix(&self.hub).unwrap_or(blob);
        rel.to_string_lossy().into_owned()
    }

    /// What dangles, what no repo links, and where `.refs` disagree with the links.
    pub fn check(&self) -> Findings {
        let mut f = Findings::default();
        let mut used = BTreeSet::new();
        for s in &self.snapshots {
            used.insert(&s.blob);
            let missing = match self.blobs.get(&s.blob) {
                None => Some(Missing::Blob),
                Some(Blob::Payload(p)) if !self.payloads.contains_key(p) => Some(Missing::Payload),
                Some(_) => None,
            };
            if let Some(missing) = missing {
                f.dangling.push(Dangling {
                    repo: s.repo.clone(),
                    revision: Some(s.revision.clone()),
                    rel: s.rel.clone(),
                    missing,
                });
            }
        }
        for (blob, b) in &self.blobs {
            if let Blob::Payload(p) = b {
                if !used.contains(blob) && !self.payloads.contains_key(p) {
                    let repo = blob
                        .strip_prefix(&self.hub)
                        .ok()
                        .and_then(|r| r.iter().next())
                        .map(|r| r.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    f.dangling.push(Dangling {
                        repo,
                        revision: None,
                        rel: blob.clone(),
                        missing: Missing::Payload,
                    });
                }
            }
        }
        let linkers = self.linkers();
        for (p, size) in &self.payloads {
            let refs = self.refs.get(p).and_then(Option::as_ref);
            let links = linkers.get(p.as_path()).map(Vec::as_slice).unwrap_or(&[]);
            let lines: BTreeSet<String> = links.iter().map(|b| self.refs_line(b)).collect();
            if links.is_empty() {
                let name = p.file_name().map_or(&b""[..], |n| n.as_bytes());
                let shard = p
                    .parent()
                    .and_then(Path::file_name)
                    .map_or(&b""[..], |n| n.as_bytes());
                f.orphans.push(Orphan {
                    rel: p.clone(),
                    size: *size,
                    prunable: self.marked
                        && refs.is_some()
                        && is_xet_hash(name)
                        && name.starts_with(shard),
                });
            }
            let mut refs_path = p.clone().into_os_string();
            refs_path.push(REFS_SUFFIX);
            let listed: BTreeSet<&str> = refs
                .map(|r| {
                    r.iter()
                        .map(String::as_str)
                        .filter(|l| !l.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            for line in &lines {
                if !listed.contains(line.as_str()) {
                    f.unlisted.push(Unlisted {
                        refs: PathBuf::from(&refs_path),
                        line: line.clone(),
                    });
                }
            }
            f.stale_lines += listed.iter().filter(|l| !lines.contains(**l)).count() as u64;
            if refs.is_some()
                && !lines.is_empty()
                && !lines.iter().any(|l| listed.contains(l.as_str()))
            {
                f.at_risk += 1;
            }
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const K: &str = "ab23456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn link(t: &str) -> Seen {
        Seen::Link(t.as_bytes().to_vec())
    }

    /// Two repos sharing payload H; repo b also has an old-layout blob used by two
    /// revisions; payload K is linked by nobody.
    fn cache() -> Links {
        let mut l = Links::new(Path::new("hub"));
        let r = |l: &mut Links, p: &str, place, s| l.record(Path::new(p), place, s);
        r(
            &mut l,
            "hub/blobs/.huggingface-shared-blobs",
            Place::Fixed,
            Seen::File(2),
        );
        r(
            &mut l,
            &format!("hub/blobs/01/{H}"),
            Place::Payload,
            Seen::File(1000),
        );
        let refs = Some(vec![
            "models--o--a/blobs/e1".into(),
            "models--o--gone/blobs/x".into(),
        ]);
        r(
            &mut l,
            &format!("hub/blobs/01/{H}.refs"),
            Place::PayloadRefs,
            Seen::Refs(refs),
        );
        r(
            &mut l,
            &format!("hub/blobs/ab/{K}"),
            Place::Payload,
            Seen::File(50),
        );
        let refs = Some(vec!["models--o--gone/blobs/y".into()]);
        r(
            &mut l,
            &format!("hub/blobs/ab/{K}.refs"),
            Place::PayloadRefs,
            Seen::Refs(refs),
        );
        let to_h = format!("../../blobs/01/{H}");
        r(
            &mut l,
            "hub/models--o--a/blobs/e1",
            Place::Fixed,
            link(&to_h),
        );
        r(
            &mut l,
            "hub/models--o--a/snapshots/c1/w.bin",
            Place::Fixed,
            link("../../blobs/e1"),
        );
        r(
            &mut l,
            "hub/models--o--a/snapshots/c1/sub/w2.bin",
            Place::Fixed,
            link("../../../blobs/e1"),
        );
        r(
            &mut l,
            "hub/models--o--b/blobs/e1",
            Place::Fixed,
            link(&to_h),
        );
        r(
            &mut l,
            "hub/models--o--b/blobs/cfg",
            Place::Fixed,
            Seen::File(10),
        );
        for c in ["c1", "c2"] {
            let snap = format!("hub/models--o--b/snapshots/{c}");
            r(
                &mut l,
                &format!("{snap}/w.bin"),
                Place::Fixed,
                link("../../blobs/e1"),
            );
            r(
                &mut l,
                &format!("{snap}/cfg.json"),
                Place::Fixed,
                link("../../blobs/cfg"),
            );
        }
        // Not checked: a link elsewhere, a file in snapshots, a repo outside the hub cache.
        r(
            &mut l,
            "hub/models--o--b/snapshots/c2/odd",
            Place::Fixed,
            link("/etc/passwd"),
        );
        r(
            &mut l,
            "hub/models--o--b/snapshots/c2/f",
            Place::Fixed,
            Seen::File(3),
        );
        r(
            &mut l,
            "datasets/models--x--y/blobs/z",
            Place::Fixed,
            link("../../blobs/zz/zz"),
        );
        l
    }

    #[test]
    fn sizes_follow_the_links() {
        let l = cache();
        let repos = l.repo_bytes();
        assert_eq!(repos["models--o--a"], 1000);
        assert_eq!(repos["models--o--b"], 1010);
        assert_eq!(repos.len(), 2);
        // a: e1 used twice; b: e1 and cfg used by two revisions each.
        assert_eq!(l.snapshot_shared_bytes(), 1000 + 1000 + 10);
        // H linked from two repos.
        assert_eq!(l.payload_shared_bytes(), 1000);
        assert_eq!(
            l.blob_size(Path::new("hub/models--o--b/blobs/cfg")),
            Some(10)
        );
    }

    #[test]
    fn a_healthy_cache_has_only_an_orphan_and_stale_lines() {
        let f = cache().check();
        assert_eq!(f.dangling, []);
        assert_eq!(
            f.orphans,
            [Orphan {
                rel: format!("hub/blobs/ab/{K}").into(),
                size: 50,
                prunable: true
            }]
        );
        // b's link is missing from H's .refs; a's is there.
        assert_eq!(
            f.unlisted,
            [Unlisted {
                refs: format!("hub/blobs/01/{H}.refs").into(),
                line: "models--o--b/blobs/e1".into()
            }]
        );
        assert_eq!((f.at_risk, f.stale_lines), (0, 2));
    }

    #[test]
    fn removed_payloads_and_blobs_dangle() {
        let mut l = cache();
        l.payloads.remove(Path::new(&format!("hub/blobs/01/{H}")));
        l.blobs.remove(Path::new("hub/models--o--b/blobs/cfg"));
        l.record(
            Path::new("hub/models--o--a/blobs/unused"),
            Place::Fixed,
            link(&format!("../../blobs/ff/{K}")),
        );
        let f = l.check();
        let d: Vec<(String, Option<&str>, Missing)> = f
            .dangling
            .iter()
            .map(|d| {
                (
                    d.rel.display().to_string(),
                    d.revision.as_deref(),
                    d.missing,
                )
            })
            .collect();
        assert_eq!(
            d,
            [
                (
                    "hub/models--o--a/snapshots/c1/w.bin".into(),
                    Some("c1"),
                    Missing::Payload
                ),
                (
                    "hub/models--o--a/snapshots/c1/sub/w2.bin".into(),
                    Some("c1"),
                    Missing::Payload
                ),
                (
                    "hub/models--o--b/snapshots/c1/w.bin".into(),
                    Some("c1"),
                    Missing::Payload
                ),
                (
                    "hub/models--o--b/snapshots/c1/cfg.json".into(),
                    Some("c1"),
                    Missing::Blob
                ),
                (
                    "hub/models--o--b/snapshots/c2/w.bin".into(),
                    Some("c2"),
                    Missing::Payload
                ),
                (
                    "hub/models--o--b/snapshots/c2/cfg.json".into(),
                    Some("c2"),
                    Missing::Blob
                ),
                (
                    "hub/models--o--a/blobs/unused".into(),
                    None,
                    Missing::Payload
                ),
            ]
        );
        assert_eq!(l.repo_bytes()["models--o--b"], 0);
    }

    #[test]
    fn refs_that_list_no_link_put_the_payload_at_risk() {
        let mut l = cache();
        let refs = Some(vec!["models--o--gone/blobs/x".into()]);
        l.record(
            Path::new(&format!("hub/blobs/01/{H}.refs")),
            Place::PayloadRefs,
            Seen::Refs(refs),
        );
        let f = l.check();
        assert_eq!(f.at_risk, 1);
        assert_eq!(f.unlisted.len(), 2);
        // Without a .refs, prune leaves a payload alone (and an orphan is not prunable).
        let mut l = cache();
        l.refs.clear();
        let f = l.check();
        assert_eq!(f.at_risk, 0);
        assert_eq!(f.unlisted.len(), 2);
        assert!(!f.orphans[0].prunable);
        // Nor without the marker, or for a name that is no Xet hash.
        let mut l = cache();
        l.marked = false;
        assert!(!l.check().orphans[0].prunable);
        let mut l = Links::new(Path::new(""));
        l.record(Path::new("blobs/ab/abc"), Place::Payload, Seen::File(1));
        l.record(
            Path::new("blobs/ab/abc.refs"),
            Place::PayloadRefs,
            Seen::Refs(Some(vec![])),
        );
        l.marked = true;
        assert!(!l.check().orphans[0].prunable);
    }

    #[test]
    fn a_hub_cache_at_the_root() {
        let mut l = Links::new(Path::new(""));
        l.record(
            Path::new(&format!("blobs/01/{H}")),
            Place::Payload,
            Seen::File(7),
        );
        l.record(
            Path::new("models--o--a/blobs/e"),
            Place::Fixed,
            link(&format!("../../blobs/01/{H}")),
        );
        l.record(
            Path::new("models--o--a/snapshots/c/x"),
            Place::Fixed,
            link("../../blobs/e"),
        );
        assert_eq!(l.repo_bytes()["models--o--a"], 7);
        let f = l.check();
        assert_eq!(
            (f.dangling.len(), f.orphans.len(), f.unlisted.len()),
            (0, 0, 1)
        );
        assert_eq!(f.unlisted[0].line, "models--o--a/blobs/e");
    }
}
