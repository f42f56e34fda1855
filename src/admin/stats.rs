//! `hfcachefs stats [STORE|MOUNTPOINT] [--json]`: what the shared cache holds and what
//! sharing saves: total size, repos, size per repo and per owner, bytes shared by
//! deduplication, abandoned temporary files.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use super::format::{human_bytes, json_str};
use super::mounts;
use crate::cache::layout::{self, BLOBS, HUB, Place, SNAPSHOTS};
use crate::cache::walk::{self, Node, Visit};
use crate::error::{CmdResult, Error};
use crate::sys;

/// One hub repo.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepoStats {
    pub bytes: u64,
    pub files: u64,
    pub revisions: u64,
}

/// Everything `stats` reports.
#[derive(Debug, Default)]
pub struct Stats {
    /// Bytes of regular files, each inode counted once.
    pub total_bytes: u64,
    /// Regular files, each inode counted once.
    pub files: u64,
    pub repos: BTreeMap<String, RepoStats>,
    pub owners: BTreeMap<u32, u64>,
    /// Bytes more names would take if each blob used by several revisions were a copy.
    pub snapshot_shared_bytes: u64,
    /// Bytes more that hard links inside the tree would take as copies.
    pub hardlink_shared_bytes: u64,
    /// Bytes of files whose other hard links live outside the tree.
    pub linked_outside_bytes: u64,
    /// Members' private files (tokens), counted, never named or attributed to anyone.
    pub private_files: u64,
    pub private_bytes: u64,
    pub stale: Vec<(String, u64)>,
    /// What the walk passed over (directories nested too deep).
    pub walked: walk::Walked,
}

/// Accumulates a walk into [`Stats`].
#[derive(Default)]
struct Collector {
    stats: Stats,
    /// Path components before the repo directories (`["hub"]` or nothing).
    hub_prefix: Vec<Vec<u8>>,
    inodes: HashMap<(u64, u64), (u64, u64, u64)>,
    blob_sizes: HashMap<(String, Vec<u8>), u64>,
    blob_refs: HashMap<(String, Vec<u8>), u64>,
}

impl Collector {
    /// The repo a path belongs to and the components below it.
    fn repo_of<'p>(&self, rel: &'p Path) -> Option<(String, Vec<&'p [u8]>)> {
        let comps: Vec<&[u8]> = rel.iter().map(|c| c.as_bytes()).collect();
        let n = self.hub_prefix.len();
        if comps.len() <= n || comps[..n] != self.hub_prefix[..] || !layout::is_repo_dir(comps[n]) {
            return None;
        }
        Some((
            String::from_utf8_lossy(comps[n]).into_owned(),
            comps[n + 1..].to_vec(),
        ))
    }

    fn visit(&mut self, rel: &Path, node: &Node, place: Place, now: SystemTime) {
        if place == Place::Private {
            if node.is_file() {
                self.stats.private_files += 1;
                self.stats.private_bytes += node.size();
            }
            return;
        }
        let name = rel.file_name().map_or(&b""[..], |n| n.as_bytes());
        if node.is_file() && layout::is_stale_temporary(name, node.mtime(), now) {
            self.stats
                .stale
                .push((rel.to_string_lossy().into_owned(), node.size()));
        }
        let repo = self.repo_of(rel);
        if let Some((repo, below)) = &repo {
            let r = self.stats.repos.entry(repo.clone()).or_default();
            if below.len() == 2 && below[0] == SNAPSHOTS.as_bytes() && node.is_dir() {
                r.revisions += 1;
            }
            if below.first() == Some(&SNAPSHOTS.as_bytes()) && node.is_symlink() {
                if let Ok(target) = sys::readlink(node.fd()) {
                    if let Some(blob) = layout::blob_of_target(&target) {
                        *self
                            .blob_refs
                            .entry((repo.clone(), blob.to_vec()))
                            .or_default() += 1;
                    }
                }
            }
        }
        if !node.is_file() {
            return;
        }
        let size = node.size();
        let seen = self.inodes.entry(node.id()).or_insert((0, size, 0));
        seen.0 += 1;
        seen.2 = node.st.st_nlink;
        if seen.0 > 1 {
            self.stats.hardlink_shared_bytes += size;
            return;
        }
        self.stats.total_bytes += size;
        self.stats.files += 1;
        *self.stats.owners.entry(node.st.st_uid).or_default() += size;
        if let Some((repo, below)) = repo {
            if below.len() == 2 && below[0] == BLOBS.as_bytes() {
                self.blob_sizes
                    .insert((repo.clone(), below[1].to_vec()), size);
            }
            let r = self.stats.repos.entry(repo).or_default();
            r.bytes += size;
            r.files += 1;
        }
    }

    fn finish(mut self) -> Stats {
        for (count, size, nlink) in self.inodes.values() {
            if nlink > count {
                self.stats.linked_outside_bytes += size;
            }
        }
        for (blob, refs) in &self.blob_refs {
            if let Some(size) = self.blob_sizes.get(blob) {
                self.stats.snapshot_shared_bytes += (refs - 1) * size;
            }
        }
        self.stats
    }
}

/// Collects the statistics of the cache rooted at `root`.
pub fn collect(root: &Node) -> std::io::Result<Stats> {
    let mut c = Collector::default();
    if root
        .child_opt(OsStr::new(HUB))
        .ok()
        .flatten()
        .is_some_and(|h| h.is_dir())
    {
        c.hub_prefix = vec![HUB.as_bytes().to_vec()];
    }
    let now = SystemTime::now();
    c.stats.walked = walk::walk(root, &mut |rel, node, place| {
        c.visit(rel, node, place, now);
        Visit::Descend
    })?;
    Ok(c.finish())
}

fn owner_name(uid: u32) -> String {
    sys::user_name(uid).unwrap_or_else(|| uid.to_string())
}

impl Stats {
    fn shared_bytes(&self) -> u64 {
        self.snapshot_shared_bytes + self.hardlink_shared_bytes
    }

    /// The report for people.
    pub fn render(&self, what: &str) -> String {
        let mut s = format!("hfcachefs stats {what}\n");
        s += &format!(
            "total: {} in {} files\n",
            human_bytes(self.total_bytes),
            self.files
        );
        s += &format!("repos: {}\n", self.repos.len());
        let mut repos: Vec<_> = self.repos.iter().collect();
        repos.sort_by(|a, b| b.1.bytes.cmp(&a.1.bytes).then(a.0.cmp(b.0)));
        for (name, r) in repos {
            s += &format!(
                "  {:>10}  {name}  ({} revisions, {} files)\n",
                human_bytes(r.bytes),
                r.revisions,
                r.files
            );
        }
        s += "owners:\n";
        for (uid, bytes) in &self.owners {
            s += &format!("  {:>10}  {}\n", human_bytes(*bytes), owner_name(*uid));
        }
        s += &format!(
            "shared by deduplication: {} ({} bytes; blobs used by several revisions {}, hard links {})\n",
            human_bytes(self.shared_bytes()),
            self.shared_bytes(),
            human_bytes(self.snapshot_shared_bytes),
            human_bytes(self.hardlink_shared_bytes)
        );
        s += &format!(
            "private files (members' tokens): {} ({})\n",
            self.private_files,
            human_bytes(self.private_bytes)
        );
        s += &format!(
            "hard-linked with files outside: {} (deleting those other names frees nothing)\n",
            human_bytes(self.linked_outside_bytes)
        );
        let stale: u64 = self.stale.iter().map(|(_, b)| b).sum();
        s += &format!(
            "stale temporary files (older than a day): {} ({})\n",
            self.stale.len(),
            human_bytes(stale)
        );
        for (p, _) in self.stale.iter().take(20) {
            s += &format!("  {p}\n");
        }
        if self.stale.len() > 20 {
            s += &format!("  ... and {} more (see --json)\n", self.stale.len() - 20);
        }
        s
    }

    /// The report for scripts: one JSON object.
    pub fn json(&self, path: &str, walked: &str) -> String {
        let repos: Vec<String> = self
            .repos
            .iter()
            .map(|(n, r)| {
                format!(
                    "{{\"name\":{},\"bytes\":{},\"files\":{},\"revisions\":{}}}",
                    json_str(n),
                    r.bytes,
                    r.files,
                    r.revisions
                )
            })
            .collect();
        let owners: Vec<String> = self
            .owners
            .iter()
            .map(|(uid, b)| {
                format!(
                    "{{\"uid\":{uid},\"name\":{},\"bytes\":{b}}}",
                    json_str(&owner_name(*uid))
                )
            })
            .collect();
        let stale: Vec<String> = self
            .stale
            .iter()
            .map(|(p, b)| format!("{{\"path\":{},\"bytes\":{b}}}", json_str(p)))
            .collect();
        format!(
            "{{\"path\":{},\"walked\":{},\"total_bytes\":{},\"files\":{},\"repo_count\":{},\"repos\":[{}],\"owners\":[{}],\"shared_bytes\":{},\"snapshot_shared_bytes\":{},\"hardlink_shared_bytes\":{},\"linked_outside_bytes\":{},\"private_files\":{},\"private_bytes\":{},\"stale_temporary\":[{}]}}\n",
            json_str(path),
            json_str(walked),
            self.total_bytes,
            self.files,
            self.repos.len(),
            repos.join(","),
            owners.join(","),
            self.shared_bytes(),
            self.snapshot_shared_bytes,
            self.hardlink_shared_bytes,
            self.linked_outside_bytes,
            self.private_files,
            self.private_bytes,
            stale.join(",")
        )
    }
}

/// Prints the statistics of the cache at `path` (a mountpoint or a directory).
pub fn run(path: &Path, json: bool) -> CmdResult {
    let path = path.to_path_buf();
    // Root reads the store behind a mount directly: faster, and the on-disk truth.
    // Any other path may lead through a tree users control: only root's symlinks are
    // followed on the way there.
    let (walked, root) = match mounts::mount_at(&path) {
        Some(m) if m.is_hfcachefs() && sys::is_root() => {
            let root = Node::open_trusted(&m.source);
            (m.source, root)
        }
        _ => (path.clone(), Node::open_untrusted(&path)),
    };
    let root = root.map_err(|e| Error::Usage(format!("{}: {e}", walked.display())))?;
    if !root.is_dir() {
        return Err(Error::Usage(format!(
            "{} is not a directory",
            walked.display()
        )));
    }
    let stats =
        collect(&root).map_err(|e| Error::Runtime(format!("reading {}: {e}", walked.display())))?;
    if let Some(w) = stats.walked.warning() {
        eprintln!("hfcachefs stats: warning: {w}: what is below them is not counted");
    }
    let (p, w) = (path.display().to_string(), walked.display().to_string());
    if json {
        print!("{}", stats.json(&p, &w));
    } else if p == w {
        print!("{}", stats.render(&p));
    } else {
        print!("{}", stats.render(&format!("{p} (store {w})")));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_paths_below_hub() {
        let c = Collector {
            hub_prefix: vec![b"hub".to_vec()],
            ..Collector::default()
        };
        let (repo, below) = c
            .repo_of(Path::new("hub/models--a--b/blobs/x"))
            .expect("a repo path");
        assert_eq!(repo, "models--a--b");
        assert_eq!(below, vec![&b"blobs"[..], b"x"]);
        assert!(c.repo_of(Path::new("hub/.locks/models--a--b")).is_none());
        assert!(c.repo_of(Path::new("datasets/models--a--b")).is_none());
        assert!(c.repo_of(Path::new("hub")).is_none());
    }

    #[test]
    fn json_and_text_reports() {
        let mut s = Stats {
            total_bytes: 100,
            files: 2,
            snapshot_shared_bytes: 30,
            hardlink_shared_bytes: 5,
            ..Stats::default()
        };
        s.repos.insert(
            "models--a".into(),
            RepoStats {
                bytes: 100,
                files: 2,
                revisions: 1,
            },
        );
        s.stale.push(("hub/x.incomplete".into(), 7));
        let j = s.json("/m", "/s");
        assert!(j.contains("\"shared_bytes\":35"));
        assert!(j.contains("\"repos\":[{\"name\":\"models--a\",\"bytes\":100"));
        assert!(j.contains("\"stale_temporary\":[{\"path\":\"hub/x.incomplete\",\"bytes\":7}]"));
        let t = s.render("/m");
        assert!(t.contains("repos: 1"));
        assert!(t.contains("shared by deduplication: 35 B (35 bytes"));
        assert!(t.contains("  hub/x.incomplete"));
    }
}
