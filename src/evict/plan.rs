//! The eviction planner: which whole revisions to remove, least recently used first, to
//! reach a goal. Pure: it sees revisions, the files each links to and what each file takes
//! on disk (see `scan`), never the store, so every rule here is unit-tested.
//!
//! A file (a blob, a shared payload, a regular file in a snapshot) is freed only when the
//! last revision linking to it goes, so the bytes a removal frees depend on what went
//! before: the planner keeps a count of the revisions left per file. What is a revision's
//! alone (the refs naming it, its `.no_exist/` markers, its tree listing) goes with it.

use std::collections::HashMap;

/// A file's identity in the store (its inode number: the store is one filesystem).
pub type FileId = u64;

/// Why a revision may not be removed now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Keep {
    /// `hfcachefs pin` protects the repo or this revision.
    Pinned,
    /// One of its files is open through a mount (`what` names it).
    Open(String),
    /// A download into its repo (an `.incomplete` file, a held lock) is in progress.
    Downloading(String),
}

impl Keep {
    /// Whether keeping it leaves a goal unmet: what is open or downloading is in the way,
    /// a pinned revision is excluded by the administrator's choice.
    pub fn in_the_way(&self) -> bool {
        !matches!(self, Keep::Pinned)
    }

    pub fn reason(&self) -> String {
        match self {
            Keep::Pinned => "pinned".into(),
            Keep::Open(what) => format!("open through a mount ({what})"),
            Keep::Downloading(what) => format!("download in progress ({what})"),
        }
    }
}

/// One revision of a repo, as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revision {
    /// The repo directory (`models--org--name`).
    pub repo: String,
    pub commit: String,
    /// When any of its files was last used (seconds since the epoch).
    pub last_used: u64,
    /// When its own entries (its snapshot directory and links) last changed. Opens are
    /// recorded per file, so revisions sharing the file last used have the same
    /// `last_used`: the one changed longer ago (an older download) goes first.
    pub own_used: u64,
    /// The files its snapshot links to.
    pub files: Vec<FileId>,
    /// What removing it takes besides those files, on disk: the refs naming it, its
    /// `.no_exist/` markers, its cached tree listing.
    pub own_bytes: u64,
    pub keep: Option<Keep>,
}

/// What eviction must achieve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goal {
    /// Free at least this many bytes (the store over its size limit, or the disk short of
    /// free space, by this much).
    Free(u64),
    /// Remove every revision last used before this time (seconds since the epoch), pinned
    /// ones excepted.
    UnusedSince(u64),
}

/// The plan: revisions to remove in order, and those in the way of the goal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Indexes into the revisions given, least recently used first, with the bytes each
    /// removal frees (after those before it).
    pub remove: Vec<(usize, u64)>,
    /// Revisions that would have gone, and why they stay.
    pub kept: Vec<(usize, Keep)>,
    pub freed: u64,
    /// Whether the goal is reached once `remove` is done.
    pub met: bool,
}

/// Plans the removal of whole revisions, least recently used first (ties by their own
/// time, then by repo and commit, so a plan is reproducible), until `goal` is met. A kept
/// revision is passed over, and its files stay linked.
pub fn plan(revisions: &[Revision], sizes: &HashMap<FileId, u64>, goal: Goal) -> Plan {
    let mut links: HashMap<FileId, usize> = HashMap::new();
    for r in revisions {
        let mut own = r.files.clone();
        own.sort_unstable();
        own.dedup();
        for f in own {
            *links.entry(f).or_default() += 1;
        }
    }
    let mut order: Vec<usize> = (0..revisions.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&revisions[a], &revisions[b]);
        (a.last_used, a.own_used, &a.repo, &a.commit).cmp(&(
            b.last_used,
            b.own_used,
            &b.repo,
            &b.commit,
        ))
    });
    let mut p = Plan::default();
    let done = |p: &Plan, r: Option<&Revision>| match goal {
        Goal::Free(need) => p.freed >= need,
        Goal::UnusedSince(cutoff) => r.is_none_or(|r| r.last_used >= cutoff),
    };
    for i in order {
        let r = &revisions[i];
        if done(&p, Some(r)) {
            break;
        }
        if let Some(k) = &r.keep {
            p.kept.push((i, k.clone()));
            continue;
        }
        let mut own = r.files.clone();
        own.sort_unstable();
        own.dedup();
        let mut freed = r.own_bytes;
        for f in own {
            let n = links.get_mut(&f).expect("every file was counted");
            *n -= 1;
            if *n == 0 {
                freed += sizes.get(&f).copied().unwrap_or(0);
            }
        }
        p.freed += freed;
        p.remove.push((i, freed));
    }
    p.met = match goal {
        Goal::Free(need) => p.freed >= need,
        Goal::UnusedSince(_) => p.kept.iter().all(|(_, k)| !k.in_the_way()),
    };
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(repo: &str, commit: &str, last_used: u64, files: &[FileId]) -> Revision {
        Revision {
            repo: repo.into(),
            commit: commit.into(),
            last_used,
            own_used: 0,
            files: files.to_vec(),
            own_bytes: 0,
            keep: None,
        }
    }

    fn sizes(s: &[(FileId, u64)]) -> HashMap<FileId, u64> {
        s.iter().copied().collect()
    }

    fn removed(revs: &[Revision], p: &Plan) -> Vec<String> {
        p.remove
            .iter()
            .map(|(i, _)| format!("{}@{}", revs[*i].repo, revs[*i].commit))
            .collect()
    }

    #[test]
    fn least_recently_used_goes_first_until_enough_is_freed() {
        let revs = [
            rev("b", "1", 30, &[1]),
            rev("a", "1", 10, &[2]),
            rev("c", "1", 20, &[3]),
        ];
        let s = sizes(&[(1, 100), (2, 100), (3, 100)]);
        let p = plan(&revs, &s, Goal::Free(150));
        assert_eq!(removed(&revs, &p), ["a@1", "c@1"]);
        assert_eq!((p.freed, p.met), (200, true));
        let p = plan(&revs, &s, Goal::Free(0));
        assert!(p.remove.is_empty() && p.met);
    }

    #[test]
    fn shared_files_are_freed_with_their_last_revision() {
        // a@1 and a@2 share file 1; b@1 has its own.
        let revs = [
            rev("a", "1", 1, &[1, 2]),
            rev("a", "2", 2, &[1, 3]),
            rev("b", "1", 3, &[4]),
        ];
        let s = sizes(&[(1, 1000), (2, 10), (3, 10), (4, 500)]);
        let p = plan(&revs, &s, Goal::Free(1005));
        assert_eq!(p.remove, [(0, 10), (1, 1010)]);
        assert!(p.met);
    }

    #[test]
    fn kept_revisions_are_passed_over_and_keep_their_files() {
        let mut revs = [
            rev("a", "1", 1, &[1]),
            rev("b", "1", 2, &[2, 9]),
            rev("c", "1", 3, &[3, 9]),
            rev("d", "1", 4, &[4]),
        ];
        revs[0].keep = Some(Keep::Pinned);
        revs[1].keep = Some(Keep::Open("x".into()));
        let s = sizes(&[(1, 100), (2, 100), (3, 100), (4, 100), (9, 1000)]);
        let p = plan(&revs, &s, Goal::Free(150));
        // c@1 frees only file 3: file 9 stays linked from the open b@1.
        assert_eq!(p.remove, [(2, 100), (3, 100)]);
        assert_eq!(p.kept, [(0, Keep::Pinned), (1, Keep::Open("x".into()))]);
        assert!(p.met);
        // Not enough left to remove.
        let p = plan(&revs, &s, Goal::Free(10_000));
        assert_eq!(p.remove.len(), 2);
        assert_eq!((p.freed, p.met), (200, false));
    }

    #[test]
    fn unused_since_removes_exactly_the_older_revisions() {
        let mut revs = [
            rev("a", "1", 5, &[1]),
            rev("a", "2", 15, &[2]),
            rev("b", "1", 8, &[3]),
        ];
        let s = sizes(&[(1, 1), (2, 1), (3, 1)]);
        let p = plan(&revs, &s, Goal::UnusedSince(10));
        assert_eq!(removed(&revs, &p), ["a@1", "b@1"]);
        assert!(p.met);
        revs[2].keep = Some(Keep::Downloading("blobs/x.incomplete".into()));
        let p = plan(&revs, &s, Goal::UnusedSince(10));
        assert_eq!(removed(&revs, &p), ["a@1"]);
        assert!(!p.met, "a kept old revision means the goal is not met");
        assert!(p.kept[0].1.reason().contains("download in progress"));
        revs[2].keep = Some(Keep::Open("x".into()));
        assert!(!plan(&revs, &s, Goal::UnusedSince(10)).met, "open");
        // A pinned one is the administrator's choice: kept, and the goal met.
        revs[2].keep = Some(Keep::Pinned);
        let p = plan(&revs, &s, Goal::UnusedSince(10));
        assert_eq!(removed(&revs, &p), ["a@1"]);
        assert_eq!(p.kept, [(2, Keep::Pinned)]);
        assert!(p.met, "pinned revisions do not leave the goal unmet");
        revs[0].keep = Some(Keep::Open("y".into()));
        assert!(!plan(&revs, &s, Goal::UnusedSince(10)).met);
    }

    #[test]
    fn revisions_sharing_their_last_used_file_go_by_their_own_time() {
        // v1 and v2 share file 1, last opened at 50 (through v2): the same last use. v2 was
        // downloaded later (its snapshot is newer): v1 goes first, whatever the hashes say.
        let mut revs = [rev("a", "ff", 50, &[1, 2]), rev("a", "00", 50, &[1, 3])];
        revs[0].own_used = 10;
        revs[1].own_used = 20;
        let s = sizes(&[(1, 100), (2, 5), (3, 5)]);
        let p = plan(&revs, &s, Goal::Free(1));
        assert_eq!(removed(&revs, &p), ["a@ff"]);
        revs[0].own_used = 30;
        let p = plan(&revs, &s, Goal::Free(1));
        assert_eq!(removed(&revs, &p), ["a@00"]);
        // Same own time too: by commit.
        revs[0].own_used = 20;
        let p = plan(&revs, &s, Goal::Free(1));
        assert_eq!(removed(&revs, &p), ["a@00"]);
    }

    #[test]
    fn a_revisions_own_bytes_go_with_it() {
        // Refs and markers of a revision are freed with it even when its files stay.
        let mut revs = [rev("a", "1", 1, &[1]), rev("a", "2", 2, &[1])];
        revs[0].own_bytes = 40;
        revs[1].own_bytes = 41;
        let s = sizes(&[(1, 100)]);
        let p = plan(&revs, &s, Goal::Free(40));
        assert_eq!(p.remove, [(0, 40)]);
        let p = plan(&revs, &s, Goal::Free(181));
        assert_eq!(p.remove, [(0, 40), (1, 141)]);
        assert!(p.met);
    }

    #[test]
    fn ties_are_broken_by_name_and_repeated_files_count_once() {
        let revs = [rev("b", "1", 1, &[1, 1]), rev("a", "2", 1, &[2])];
        let s = sizes(&[(1, 7), (2, 7)]);
        let p = plan(&revs, &s, Goal::Free(14));
        assert_eq!(removed(&revs, &p), ["a@2", "b@1"]);
        assert_eq!(p.freed, 14);
    }
}
