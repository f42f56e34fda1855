//! `hfcachefs stats [STORE|MOUNTPOINT] [--json]`: what the shared cache holds and what
//! sharing saves: total size, repos, size per repo and per owner, bytes shared by
//! deduplication (blobs used by several revisions, payloads linked by several repos, hard
//! links), abandoned temporary files; eviction's
//! limit, last run and pins (see `eviction`). Every inode is counted once; repos are sized by what
//! their revisions use, following blob links to the shared payloads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use super::format::{human_bytes, json_str};
use super::{eviction, mounts};
use crate::cache::layout::{self, HUB, Place, SNAPSHOTS};
use crate::cache::links::Links;
use crate::cache::walk::{self, Node, Visit};
use crate::error::{CmdResult, Error};
use crate::sys;

/// One hub repo.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepoStats {
    /// Its logical size: the content of the distinct blobs its revisions use, following
    /// blob links to shared payloads (what `hf cache ls` shows for it).
    pub bytes: u64,
    /// Regular files in its own directory (old-layout blobs, refs, tree listings), each
    /// inode counted once cache-wide: shared payloads are not in it.
    pub local_bytes: u64,
    pub files: u64,
    pub revisions: u64,
}

/// Everything `stats` reports.
#[derive(Debug, Default)]
pub struct Stats {
    /// Bytes of regular files (their apparent size), each inode counted once: the physical
    /// size of the cache, shared payloads and members' private files included.
    pub total_bytes: u64,
    /// Regular files, each inode counted once.
    pub files: u64,
    /// What every inode of the tree (directories and symlinks too, the root included)
    /// takes on disk (`st_blocks` x 512), each counted once: what `du -sx` says.
    pub disk_bytes: u64,
    /// Shared payloads (`hub/blobs/<2hex>/<hash>`) and their bytes.
    pub payloads: u64,
    pub payload_bytes: u64,
    pub repos: BTreeMap<String, RepoStats>,
    /// Bytes per owner (members' private files are attributed to nobody).
    pub owners: BTreeMap<u32, u64>,
    /// Bytes more that snapshot entries would take if each blob used by several of them
    /// (several revisions) were a copy; links to payloads followed.
    pub snapshot_shared_bytes: u64,
    /// Bytes more that repos would take if each payload linked by several of them were a
    /// copy.
    pub payload_shared_bytes: u64,
    /// Bytes more that hard links inside the tree would take as copies.
    pub hardlink_shared_bytes: u64,
    /// Bytes of files whose other hard links live outside the tree.
    pub linked_outside_bytes: u64,
    /// Members' private files (tokens), counted, never named or attributed to anyone.
    pub private_files: u64,
    pub private_bytes: u64,
    /// The daemons' own records in the store (`.hfcachefs/`), counted in the totals.
    pub state_bytes: u64,
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
    /// Regular files seen: (names seen, size, st_nlink).
    inodes: HashMap<(u64, u64), (u64, u64, u64)>,
    /// Every inode seen, whatever its kind.
    all: HashSet<(u64, u64)>,
    links: Links,
}

impl Collector {
    fn new(hub_prefix: Vec<Vec<u8>>) -> Collector {
        let hub: PathBuf = hub_prefix.iter().map(|c| OsStr::from_bytes(c)).collect();
        Collector {
            hub_prefix,
            links: Links::new(&hub),
            ..Collector::default()
        }
    }

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

    /// Counts an inode's disk use once.
    fn on_disk(&mut self, node: &Node) {
        if self.all.insert(node.id()) {
            self.stats.disk_bytes += node.disk_bytes();
        }
    }

    /// Counts a regular file; false if its inode was counted already (another hard link).
    fn first_name(&mut self, node: &Node) -> bool {
        let size = node.size();
        let seen = self.inodes.entry(node.id()).or_insert((0, size, 0));
        seen.0 += 1;
        seen.2 = node.st.st_nlink;
        if seen.0 > 1 {
            self.stats.hardlink_shared_bytes += size;
            return false;
        }
        self.stats.total_bytes += size;
        self.stats.files += 1;
        true
    }

    fn visit(&mut self, rel: &Path, node: &Node, place: Place, now: SystemTime) {
        self.on_disk(node);
        if place.is_hidden() {
            if node.is_file() && self.first_name(node) {
                let size = node.size();
                if place == Place::Private {
                    self.stats.private_files += 1;
                    self.stats.private_bytes += size;
                } else {
                    self.stats.state_bytes += size;
                }
            }
            return;
        }
        let name = rel.file_name().map_or(&b""[..], |n| n.as_bytes());
        if node.is_file() && layout::is_stale_temporary(name, node.mtime(), now) {
            self.stats
                .stale
                .push((rel.to_string_lossy().into_owned(), node.size()));
        }
        self.links.add(rel, node, place);
        let repo = self.repo_of(rel);
        if let Some((repo, below)) = &repo {
            let r = self.stats.repos.entry(repo.clone()).or_default();
            if below.len() == 2 && below[0] == SNAPSHOTS.as_bytes() && node.is_dir() {
                r.revisions += 1;
            }
        }
        if !node.is_file() || !self.first_name(node) {
            return;
        }
        let size = node.size();
        *self.stats.owners.entry(node.st.st_uid).or_default() += size;
        if place == Place::Payload {
            self.stats.payloads += 1;
            self.stats.payload_bytes += size;
        }
        if let Some((repo, _)) = repo {
            let r = self.stats.repos.entry(repo).or_default();
            r.local_bytes += size;
            r.files += 1;
        }
    }

    fn finish(mut self) -> Stats {
        for (count, size, nlink) in self.inodes.values() {
            if nlink > count {
                self.stats.linked_outside_bytes += size;
            }
        }
        for (repo, bytes) in self.links.repo_bytes() {
            self.stats.repos.entry(repo).or_default().bytes = bytes;
        }
        self.stats.snapshot_shared_bytes = self.links.snapshot_shared_bytes();
        self.stats.payload_shared_bytes = self.links.payload_shared_bytes();
        self.stats
    }
}

/// Collects the statistics of the cache rooted at `root`.
pub fn collect(root: &Node) -> std::io::Result<Stats> {
    let hub = root
        .child_opt(OsStr::new(HUB))
        .ok()
        .flatten()
        .is_some_and(|h| h.is_dir());
    let mut c = Collector::new(if hub {
        vec![HUB.as_bytes().to_vec()]
    } else {
        Vec::new()
    });
    c.on_disk(root);
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
        self.snapshot_shared_bytes + self.payload_shared_bytes + self.hardlink_shared_bytes
    }

    /// What the repos would take each on its own: the sum of their logical sizes.
    fn logical_bytes(&self) -> u64 {
        self.repos.values().map(|r| r.bytes).sum()
    }

    /// The report for people.
    pub fn render(&self, what: &str) -> String {
        let mut s = format!("hfcachefs stats {what}\n");
        s += &format!(
            "total: {} in {} files, each counted once ({} on disk)\n",
            human_bytes(self.total_bytes),
            self.files,
            human_bytes(self.disk_bytes)
        );
        if self.payloads > 0 {
            s += &format!(
                "shared payloads: {} ({})\n",
                self.payloads,
                human_bytes(self.payload_bytes)
            );
        }
        s += &format!(
            "repos: {} ({} logical: what their revisions use, shared content counted in each)\n",
            self.repos.len(),
            human_bytes(self.logical_bytes())
        );
        let mut repos: Vec<_> = self.repos.iter().collect();
        repos.sort_by(|a, b| b.1.bytes.cmp(&a.1.bytes).then(a.0.cmp(b.0)));
        for (name, r) in repos {
            s += &format!(
                "  {:>10}  {name}  ({} revisions, {} files, {} in its directory)\n",
                human_bytes(r.bytes),
                r.revisions,
                r.files,
                human_bytes(r.local_bytes)
            );
        }
        s += "owners:\n";
        for (uid, bytes) in &self.owners {
            s += &format!("  {:>10}  {}\n", human_bytes(*bytes), owner_name(*uid));
        }
        s += &format!(
            "shared by deduplication: {} ({} bytes; blobs used by several revisions {}, payloads linked by several repos {}, hard links {})\n",
            human_bytes(self.shared_bytes()),
            self.shared_bytes(),
            human_bytes(self.snapshot_shared_bytes),
            human_bytes(self.payload_shared_bytes),
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
                    "{{\"name\":{},\"bytes\":{},\"local_bytes\":{},\"files\":{},\"revisions\":{}}}",
                    json_str(n),
                    r.bytes,
                    r.local_bytes,
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
            "{{\"path\":{},\"walked\":{},\"total_bytes\":{},\"files\":{},\"disk_bytes\":{},\"payload_count\":{},\"payload_bytes\":{},\"logical_bytes\":{},\"repo_count\":{},\"repos\":[{}],\"owners\":[{}],\"shared_bytes\":{},\"snapshot_shared_bytes\":{},\"payload_shared_bytes\":{},\"hardlink_shared_bytes\":{},\"linked_outside_bytes\":{},\"private_files\":{},\"private_bytes\":{},\"state_bytes\":{},\"stale_temporary\":[{}]}}\n",
            json_str(path),
            json_str(walked),
            self.total_bytes,
            self.files,
            self.disk_bytes,
            self.payloads,
            self.payload_bytes,
            self.logical_bytes(),
            self.repos.len(),
            repos.join(","),
            owners.join(","),
            self.shared_bytes(),
            self.snapshot_shared_bytes,
            self.payload_shared_bytes,
            self.hardlink_shared_bytes,
            self.linked_outside_bytes,
            self.private_files,
            self.private_bytes,
            self.state_bytes,
            stale.join(",")
        )
    }
}

/// Prints the statistics of the cache at `path` (a mountpoint or a directory).
pub fn run(path: &Path, json: bool) -> CmdResult {
    let path = path.to_path_buf();
    let (walked, root) = mounts::open_tree(&path).map_err(Error::Usage)?;
    let stats =
        collect(&root).map_err(|e| Error::Runtime(format!("reading {}: {e}", walked.display())))?;
    if let Some(w) = stats.walked.warning() {
        eprintln!("hfcachefs stats: warning: {w}: what is below them is not counted");
    }
    let (p, w) = (path.display().to_string(), walked.display().to_string());
    let ev = eviction::read(&path, sys::is_root().then_some(&root));
    if json {
        let s = stats.json(&p, &w);
        let body = s.trim_end();
        let body = body.strip_suffix('}').unwrap_or(body);
        println!("{body},\"eviction\":{}}}", ev.json());
    } else if p == w {
        print!("{}{}", stats.render(&p), ev.render());
    } else {
        print!(
            "{}{}",
            stats.render(&format!("{p} (store {w})")),
            ev.render()
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_paths_below_hub() {
        let c = Collector::new(vec![b"hub".to_vec()]);
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
                local_bytes: 90,
                files: 2,
                revisions: 1,
            },
        );
        s.stale.push(("hub/x.incomplete".into(), 7));
        let j = s.json("/m", "/s");
        assert!(j.contains("\"shared_bytes\":35"));
        assert!(j.contains("\"repos\":[{\"name\":\"models--a\",\"bytes\":100,\"local_bytes\":90"));
        assert!(j.contains("\"logical_bytes\":100,"));
        assert!(j.contains("\"stale_temporary\":[{\"path\":\"hub/x.incomplete\",\"bytes\":7}]"));
        let t = s.render("/m");
        assert!(t.contains("repos: 1"));
        assert!(t.contains("shared by deduplication: 35 B (35 bytes"));
        assert!(t.contains("  hub/x.incomplete"));
    }

    #[test]
    fn shared_payloads_are_counted_once_and_followed_for_repos() {
        use std::os::unix::fs::symlink;
        let base = std::env::temp_dir().join(format!("hfcachefs-stats-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let h = "01".repeat(32);
        let hub = base.join("hub");
        std::fs::create_dir_all(hub.join("blobs/01")).unwrap();
        std::fs::write(hub.join("blobs/.huggingface-shared-blobs"), "1\n").unwrap();
        std::fs::write(hub.join(format!("blobs/01/{h}")), vec![7u8; 1000]).unwrap();
        std::fs::write(hub.join(format!("blobs/01/{h}.refs")), "").unwrap();
        for (repo, revs) in [("models--o--a", 1), ("models--o--b", 2)] {
            let r = hub.join(repo);
            std::fs::create_dir_all(r.join("blobs")).unwrap();
            symlink(format!("../../blobs/01/{h}"), r.join("blobs/e")).unwrap();
            for c in 0..revs {
                std::fs::create_dir_all(r.join(format!("snapshots/c{c}"))).unwrap();
                symlink("../../blobs/e", r.join(format!("snapshots/c{c}/w.bin"))).unwrap();
            }
        }
        // An old-layout repo whose blob is hard-linked from a second repo.
        let old = hub.join("models--o--old");
        std::fs::create_dir_all(old.join("blobs")).unwrap();
        std::fs::create_dir_all(old.join("snapshots/c")).unwrap();
        std::fs::write(old.join("blobs/x"), vec![1u8; 300]).unwrap();
        symlink("../../blobs/x", old.join("snapshots/c/x.bin")).unwrap();
        let copy = hub.join("models--o--copy");
        std::fs::create_dir_all(copy.join("blobs")).unwrap();
        std::fs::hard_link(old.join("blobs/x"), copy.join("blobs/x")).unwrap();

        let s = collect(&Node::open_trusted(&base).unwrap()).unwrap();
        // Files: the payload, its .refs (0), the marker (2), the old blob once.
        assert_eq!(s.total_bytes, 1000 + 2 + 300);
        assert_eq!(s.files, 4);
        assert_eq!((s.payloads, s.payload_bytes), (1, 1000));
        assert_eq!(s.repos["models--o--a"].bytes, 1000);
        assert_eq!(s.repos["models--o--a"].local_bytes, 0);
        assert_eq!(s.repos["models--o--b"].bytes, 1000);
        assert_eq!(s.repos["models--o--b"].revisions, 2);
        assert_eq!(s.repos["models--o--old"].bytes, 300);
        // The hard-linked blob's bytes go to the first of its names walked.
        let local = |r: &str| s.repos[r].local_bytes;
        assert_eq!(
            (local("models--o--copy"), local("models--o--old")),
            (300, 0)
        );
        assert_eq!(s.payload_shared_bytes, 1000);
        assert_eq!(s.snapshot_shared_bytes, 1000);
        assert_eq!(s.hardlink_shared_bytes, 300);
        assert!(
            s.disk_bytes >= 4096,
            "directories take blocks: {}",
            s.disk_bytes
        );
        let j = s.json("/m", "/s");
        assert!(j.contains("\"payload_shared_bytes\":1000,"), "{j}");
        assert!(j.contains("\"shared_bytes\":2300,"), "{j}");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
