//! The Hugging Face cache layout: every name the clients use, written once, and where an
//! entry sits. The kernel timeout rules, the filesystem and every administration command ask
//! this module; none of them spells a cache name itself.
//!
//! `HF_HOME` holds `hub/` (the hub cache), `datasets/`, `xet/`, and a user's `token` and
//! `stored_tokens`. In the hub cache each repo is a directory `models--org--name` (or
//! `datasets--`, `spaces--`) holding `blobs/<etag>` (each file once, named by its content
//! hash, written as `<etag>[.<8hex>].incomplete` and renamed), `snapshots/<commit>/<path>`
//! (symlinks to `../../blobs/<etag>`), `refs/<branch>` (the commit a branch points to,
//! rewritten for each new commit) and `.no_exist/<commit>/<path>` (markers of files a
//! commit lacks). Lock files live in `.locks/<repo>/<etag>.lock`, created once and only
//! ever locked.
//!
//! Caching: the layout directories and what is named after a hash ([`Place::is_fixed`])
//! are never renamed or rewritten, so the kernel may keep them long; refs, downloads in
//! progress and everything else keep the short timeouts.

use std::time::{Duration, SystemTime};

/// `HF_HOME/hub`: the hub cache.
pub const HUB: &str = "hub";
/// `HF_HOME/datasets`: the datasets library's cache.
pub const DATASETS: &str = "datasets";
/// `HF_HOME/xet`: hf_xet's cache, logs and staging.
pub const XET: &str = "xet";
/// A user's access token, and the named tokens of `hf auth` (huggingface_hub >= 0.25).
pub const TOKEN: &str = "token";
pub const STORED_TOKENS: &str = "stored_tokens";
/// The names at the top of `HF_HOME` that are each user's own, not shared: the secrets.
pub const PRIVATE_NAMES: [&str; 2] = [TOKEN, STORED_TOKENS];

/// hfcachefs's own place in the store root for what each user keeps private (their
/// secrets): `.hfcachefs-private/<uid>/<name>`, never reachable through the mount.
pub const PRIVATE_DIR: &str = ".hfcachefs-private";

/// The hub cache's lock directory (`.locks/<repo>/<etag>.lock`).
pub const LOCKS: &str = ".locks";
/// What a repo directory's name starts with.
pub const REPO_PREFIXES: [&str; 3] = ["models--", "datasets--", "spaces--"];
/// A repo's directories.
pub const BLOBS: &str = "blobs";
pub const SNAPSHOTS: &str = "snapshots";
pub const REFS: &str = "refs";
pub const NO_EXIST: &str = ".no_exist";

/// A download in progress (`blobs/<etag>.incomplete`, `<etag>.<8hex>.incomplete`).
pub const INCOMPLETE_SUFFIX: &str = ".incomplete";
/// A lock file (`.locks/<repo>/<etag>.lock`, datasets' `*.lock`).
pub const LOCK_SUFFIX: &str = ".lock";
/// The temporary names `hfcachefs import` writes before renaming into place.
pub const IMPORT_TEMP_SUFFIX: &str = ".hfcachefs-import";

/// How old a temporary download or import file must be before it counts as abandoned.
pub const STALE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Whether a hub cache entry named `name` is a repo directory (`models--org--name` and the
/// like: a prefix and a name after it).
pub fn is_repo_dir(name: &[u8]) -> bool {
    REPO_PREFIXES
        .iter()
        .any(|p| name.starts_with(p.as_bytes()) && name.len() > p.len())
}

/// Whether `name` is a temporary file of a download or an import.
pub fn is_temporary(name: &[u8]) -> bool {
    name.ends_with(INCOMPLETE_SUFFIX.as_bytes()) || name.ends_with(IMPORT_TEMP_SUFFIX.as_bytes())
}

/// Whether `name` is a lock file.
pub fn is_lock(name: &[u8]) -> bool {
    name.ends_with(LOCK_SUFFIX.as_bytes())
}

/// Whether a regular file named `name`, last modified at `mtime`, is a temporary file
/// abandoned at time `now` (older than [`STALE_AFTER`]).
pub fn is_stale_temporary(name: &[u8], mtime: SystemTime, now: SystemTime) -> bool {
    is_temporary(name) && now.duration_since(mtime).is_ok_and(|age| age > STALE_AFTER)
}

/// The blob a snapshot symlink points to (`../../blobs/<etag>`, deeper for nested paths).
pub fn blob_of_target(target: &[u8]) -> Option<&[u8]> {
    let marker = format!("/{BLOBS}/");
    let i = target
        .windows(marker.len())
        .rposition(|w| w == marker.as_bytes())?;
    let blob = &target[i + marker.len()..];
    (!blob.is_empty() && !blob.contains(&b'/')).then_some(blob)
}

/// What an entry of `HF_HOME` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HomeEntry {
    /// `hub/`: repos, blobs, snapshots.
    Hub,
    /// `datasets/`, `xet/`: caches whose names say nothing of their content.
    Cache,
    /// `token`, `stored_tokens`: a user's credentials.
    Secret,
    /// Anything else (e.g. `modules/`: downloaded code).
    Other,
}

pub fn home_entry(name: &[u8]) -> HomeEntry {
    if name == HUB.as_bytes() {
        HomeEntry::Hub
    } else if name == DATASETS.as_bytes() || name == XET.as_bytes() {
        HomeEntry::Cache
    } else if name == TOKEN.as_bytes() || name == STORED_TOKENS.as_bytes() {
        HomeEntry::Secret
    } else {
        HomeEntry::Other
    }
}

/// What kind of cache directory holds the entries `names`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheRoot {
    /// An `HF_HOME`: holds `hub/` (and maybe `datasets/`, `xet/`, ...).
    Home,
    /// A hub cache: holds repo directories itself.
    Hub,
}

pub fn cache_root<S: AsRef<[u8]>>(names: &[S]) -> Option<CacheRoot> {
    if names.iter().any(|n| n.as_ref() == HUB.as_bytes()) {
        Some(CacheRoot::Home)
    } else if names.iter().any(|n| is_repo_dir(n.as_ref())) {
        Some(CacheRoot::Hub)
    } else {
        None
    }
}

/// Where an entry sits in a Hugging Face cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Place {
    /// The store root (`HF_HOME` as members see it).
    Root,
    /// A user's private copy of a secret, and the store's private area itself.
    Private,
    /// A file (anything but a directory) directly in the root: it may be renamed onto a
    /// private name at any moment, so nothing about it may be cached.
    Loose,
    Other,
    /// `models--org--name` (or `datasets--`, `spaces--`), wherever the hub cache is.
    Repo,
    /// The repo's `blobs/`.
    Blobs,
    /// The repo's `snapshots/` or `.no_exist/`.
    Commits,
    /// The repo's `refs/` (the refs in it are [`Place::Other`]).
    Refs,
    /// The hub cache's `.locks/`.
    Locks,
    /// `.locks/<repo>/`.
    RepoLocks,
    /// Named after a hash and never rewritten: a published blob, everything below
    /// `snapshots/<commit>` or `.no_exist/<commit>`, a blob's lock file.
    Fixed,
}

impl Place {
    /// Every place, in `repr(u8)` order (for keeping one in an atomic).
    pub const ALL: [Place; 11] = [
        Place::Root,
        Place::Private,
        Place::Loose,
        Place::Other,
        Place::Repo,
        Place::Blobs,
        Place::Commits,
        Place::Refs,
        Place::Locks,
        Place::RepoLocks,
        Place::Fixed,
    ];

    /// Whether nothing renames or rewrites what is here: the cache layout itself and what
    /// is named after a hash.
    pub fn is_fixed(self) -> bool {
        !matches!(
            self,
            Place::Root | Place::Private | Place::Loose | Place::Other
        )
    }
}

/// The place of the entry `name` (of file type `kind`, `S_IFMT` bits) in a directory at
/// `parent`.
pub fn place_of(parent: Place, name: &[u8], kind: u32) -> Place {
    let dir = kind == libc::S_IFDIR;
    let file = kind == libc::S_IFREG;
    let is = |n: &str| name == n.as_bytes();
    match parent {
        Place::Root if dir && is(PRIVATE_DIR) => Place::Private,
        Place::Root if !dir => Place::Loose,
        Place::Private => Place::Private,
        Place::Repo if dir && is(BLOBS) => Place::Blobs,
        Place::Repo if dir && (is(SNAPSHOTS) || is(NO_EXIST)) => Place::Commits,
        Place::Repo if dir && is(REFS) => Place::Refs,
        Place::Blobs if file && !name.ends_with(INCOMPLETE_SUFFIX.as_bytes()) => Place::Fixed,
        Place::Commits | Place::Fixed => Place::Fixed,
        Place::Locks if dir => Place::RepoLocks,
        Place::RepoLocks if file && is_lock(name) => Place::Fixed,
        Place::Locks | Place::RepoLocks => Place::Other,
        _ if dir && is(LOCKS) => Place::Locks,
        _ if dir && is_repo_dir(name) => Place::Repo,
        _ => Place::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: u32 = libc::S_IFDIR;
    const REG: u32 = libc::S_IFREG;
    const LNK: u32 = libc::S_IFLNK;

    fn path(names: &[(&str, u32)]) -> Place {
        names
            .iter()
            .fold(Place::Root, |p, (n, k)| place_of(p, n.as_bytes(), *k))
    }

    #[test]
    fn what_is_named_by_hash_is_fixed() {
        let repo = [("hub", DIR), ("models--org--m", DIR)];
        let under = |rest: &[(&str, u32)]| path(&[repo.as_slice(), rest].concat());
        assert_eq!(path(&repo), Place::Repo);
        assert_eq!(under(&[("blobs", DIR)]), Place::Blobs);
        assert_eq!(under(&[("blobs", DIR), ("a1b2", REG)]), Place::Fixed);
        assert_eq!(under(&[("snapshots", DIR)]), Place::Commits);
        let snap = [
            ("snapshots", DIR),
            ("0123", DIR),
            ("sub", DIR),
            ("c.json", LNK),
        ];
        assert_eq!(under(&snap[..2]), Place::Fixed);
        assert_eq!(under(&snap), Place::Fixed);
        assert_eq!(
            under(&[(".no_exist", DIR), ("0123", DIR), ("x.txt", REG)]),
            Place::Fixed
        );
        let lock = [
            ("hub", DIR),
            (".locks", DIR),
            ("models--org--m", DIR),
            ("a1b2.lock", REG),
        ];
        assert_eq!(path(&lock[..2]), Place::Locks);
        assert_eq!(path(&lock[..3]), Place::RepoLocks);
        assert_eq!(path(&lock), Place::Fixed);
        // A hub cache at the mount root (HF_HUB_CACHE=/huggingface) is recognised too.
        assert_eq!(path(&[("spaces--o--s", DIR), ("blobs", DIR)]), Place::Blobs);
        assert_eq!(
            path(&[("datasets--o--d", DIR), ("snapshots", DIR)]),
            Place::Commits
        );
    }

    #[test]
    fn what_downloads_change_is_not() {
        let repo = [("hub", DIR), ("models--org--m", DIR)];
        let under = |rest: &[(&str, u32)]| path(&[repo.as_slice(), rest].concat());
        assert_eq!(
            under(&[("blobs", DIR), ("a1b2.incomplete", REG)]),
            Place::Other
        );
        assert_eq!(under(&[("refs", DIR)]), Place::Refs);
        assert_eq!(under(&[("refs", DIR), ("main", REG)]), Place::Other);
        assert_eq!(
            under(&[("refs", DIR), ("pr", DIR), ("1", REG)]),
            Place::Other
        );
        assert_eq!(under(&[("blobs", DIR), ("odd", DIR)]), Place::Other);
        assert_eq!(under(&[("blobs", REG)]), Place::Other);
        assert_eq!(path(&[("models--org--m", REG)]), Place::Loose);
        let locks = [("hub", DIR), (".locks", DIR)];
        let in_locks = |rest: &[(&str, u32)]| path(&[locks.as_slice(), rest].concat());
        assert_eq!(in_locks(&[("x.lock", REG)]), Place::Other);
        assert_eq!(
            in_locks(&[("models--o--m", DIR), ("x.tmp", REG)]),
            Place::Other
        );
        assert_eq!(in_locks(&[("models--o--m", DIR), ("d", DIR)]), Place::Other);
    }

    #[test]
    fn repo_dirs_need_a_name() {
        assert!(is_repo_dir(b"models--org--name"));
        assert!(is_repo_dir(b"datasets--x"));
        assert!(is_repo_dir(b"spaces--a--b"));
        assert!(!is_repo_dir(b"models--"));
        assert!(!is_repo_dir(b".locks"));
        assert!(!is_repo_dir(b"version.txt"));
        assert_eq!(path(&[("models--", DIR), ("blobs", DIR)]), Place::Other);
    }

    #[test]
    fn temporaries_and_locks() {
        assert!(is_temporary(b"abc.incomplete"));
        assert!(is_temporary(b"abc.1a2b3c4d.incomplete"));
        assert!(is_temporary(b".abc.hfcachefs-import"));
        assert!(!is_temporary(b"abc"));
        assert!(!is_temporary(b"abc.lock"));
        assert!(is_lock(b"abc.lock") && !is_lock(b"abc"));
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10 * 86400);
        let old = now - STALE_AFTER - Duration::from_secs(1);
        assert!(is_stale_temporary(b"a.incomplete", old, now));
        assert!(!is_stale_temporary(b"a.incomplete", now, now));
        assert!(!is_stale_temporary(b"a", old, now));
    }

    #[test]
    fn snapshot_targets() {
        assert_eq!(blob_of_target(b"../../blobs/abc"), Some(&b"abc"[..]));
        assert_eq!(blob_of_target(b"../../../blobs/abc"), Some(&b"abc"[..]));
        assert_eq!(blob_of_target(b"../../blobs/"), None);
        assert_eq!(blob_of_target(b"/etc/passwd"), None);
    }

    #[test]
    fn home_entries_and_cache_roots() {
        assert_eq!(home_entry(b"hub"), HomeEntry::Hub);
        assert_eq!(home_entry(b"datasets"), HomeEntry::Cache);
        assert_eq!(home_entry(b"xet"), HomeEntry::Cache);
        assert_eq!(home_entry(b"token"), HomeEntry::Secret);
        assert_eq!(home_entry(b"stored_tokens"), HomeEntry::Secret);
        assert_eq!(home_entry(b"modules"), HomeEntry::Other);
        assert_eq!(
            cache_root(&["hub", "datasets", "token"]),
            Some(CacheRoot::Home)
        );
        assert_eq!(
            cache_root(&[".locks", "models--a--b"]),
            Some(CacheRoot::Hub)
        );
        assert_eq!(cache_root(&["Documents", "x"]), None);
        assert_eq!(cache_root::<&str>(&[]), None);
    }

    #[test]
    fn the_private_area_is_private_all_the_way_down() {
        assert_eq!(path(&[(".hfcachefs-private", DIR)]), Place::Private);
        let token = [(".hfcachefs-private", DIR), ("1000", DIR), ("token", REG)];
        assert_eq!(path(&token), Place::Private);
        assert!(!Place::Private.is_fixed() && !Place::Root.is_fixed());
        assert_eq!(path(&[("token.tmp", REG)]), Place::Loose);
        assert_eq!(path(&[("version.txt", LNK)]), Place::Loose);
        for (i, p) in Place::ALL.iter().enumerate() {
            assert_eq!(*p as usize, i);
        }
        // Only at the store root.
        assert_eq!(
            path(&[("hub", DIR), (".hfcachefs-private", DIR)]),
            Place::Other
        );
    }
}
