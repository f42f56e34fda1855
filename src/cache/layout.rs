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
//! huggingface_hub >= 1.33 keeps each Xet file once for the whole hub cache: the payload
//! `blobs/<2 hex>/<xet hash>` of the hub cache (read-only once published, with
//! `<hash>.lock`, created once, and `<hash>.refs`, a list of the repo links appended to),
//! a marker `blobs/.huggingface-shared-blobs`, and each repo's `blobs/<etag>` a relative
//! symlink `../../blobs/<2hex>/<hash>` to it; so a snapshot entry reaches its bytes through
//! two symlinks. Tree listings are cached in `<repo>/trees/<commit>.json`; the hub cache
//! has a `CACHEDIR.TAG`; hf_xet keeps logs and staging in `HF_HOME/xet`.
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
/// hfcachefs's own state in the store root (eviction's access record, open-file records,
/// pins, trash), root's and 0700, never reachable through the mount either.
pub const STATE_DIR: &str = ".hfcachefs";

/// Whether `name`, in the store root, is one of hfcachefs's own directories, which the
/// mount neither shows nor lets anyone make.
pub fn is_hidden_root_name(name: &[u8]) -> bool {
    name == PRIVATE_DIR.as_bytes() || name == STATE_DIR.as_bytes()
}

/// The hub cache's lock directory (`.locks/<repo>/<etag>.lock`).
pub const LOCKS: &str = ".locks";
/// The hub cache's `CACHEDIR.TAG` (backup tools skip the directory).
pub const CACHEDIR_TAG: &str = "CACHEDIR.TAG";
/// The marker file of a hub cache that keeps shared payloads in its `blobs/`.
pub const SHARED_BLOBS_MARKER: &str = ".huggingface-shared-blobs";
/// Beside a shared payload: the list of repo links to it (rewritten; a hint).
pub const REFS_SUFFIX: &str = ".refs";

/// What a repo directory's name starts with.
pub const REPO_PREFIXES: [&str; 3] = ["models--", "datasets--", "spaces--"];
/// A repo's directories.
pub const BLOBS: &str = "blobs";
pub const SNAPSHOTS: &str = "snapshots";
pub const REFS: &str = "refs";
pub const NO_EXIST: &str = ".no_exist";
/// A repo's cached tree listings (hub >= 1.33): `trees/<commit>.json`.
pub const TREES: &str = "trees";
pub const TREE_SUFFIX: &str = ".json";

/// A download in progress (`blobs/<etag>.incomplete`, `<etag>.<8hex>.incomplete`).
pub const INCOMPLETE_SUFFIX: &str = ".incomplete";
/// A lock file (`.locks/<repo>/<etag>.lock`, datasets' `*.lock`).
pub const LOCK_SUFFIX: &str = ".lock";
/// The temporary names `hfcachefs import` writes before renaming into place.
pub const IMPORT_TEMP_SUFFIX: &str = ".hfcachefs-import";

/// How old a temporary download or import file must be before it counts as abandoned.
pub const STALE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// A repo's type, in the order of [`REPO_PREFIXES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepoType {
    Model,
    Dataset,
    Space,
}

/// The type and Hub id of a repo directory (`datasets--org--name`: a dataset `org/name`).
pub fn repo_id(dir: &str) -> Option<(RepoType, String)> {
    let types = [RepoType::Model, RepoType::Dataset, RepoType::Space];
    REPO_PREFIXES.iter().zip(types).find_map(|(prefix, t)| {
        let name = dir.strip_prefix(prefix).filter(|n| !n.is_empty())?;
        Some((t, name.replace("--", "/")))
    })
}

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

/// Whether `name` is a shard directory of the shared payloads (two lowercase hex digits).
pub fn is_shard(name: &[u8]) -> bool {
    name.len() == 2 && name.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// The shared payload a repo blob symlink points to (`../../blobs/<2hex>/<hash>`): its
/// shard and name.
pub fn payload_of_target(target: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = target.strip_prefix(b"../../")?;
    let rest = rest.strip_prefix(BLOBS.as_bytes())?.strip_prefix(b"/")?;
    let (shard, hash) = (rest.get(..2)?, rest.get(3..)?);
    (rest.get(2) == Some(&b'/') && is_shard(shard) && is_blob_name(hash)).then_some((shard, hash))
}

/// The longest name a directory entry may have (`NAME_MAX`).
const NAME_MAX: usize = 255;

/// Whether `name` can be a published blob or shared payload, named by its hash: one plain
/// name (no `/`, no NUL, at most 255 bytes), not hidden (so neither `.` nor `..`), and none
/// of the names beside them (a download in progress, a lock, a payload's `.refs`). What a
/// link names is the user's to write; anything else is no blob, and acting on it (opening,
/// unlinking `..`) would fail or reach the wrong entry.
pub fn is_blob_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX
        && !name.starts_with(b".")
        && !name.contains(&b'/')
        && !name.contains(&0)
        && !is_temporary(name)
        && !is_lock(name)
        && !name.ends_with(REFS_SUFFIX.as_bytes())
}

/// The blob a snapshot symlink `ups` directories below its repo (`snapshots/<commit>/x` is
/// 2 down, `snapshots/<commit>/sub/x` 3) points to when it is exactly the relative link the
/// clients make, `../../blobs/<etag>` with one `../` per level: what it reaches inside the
/// repo, told without following it.
pub fn snapshot_link_blob(target: &[u8], ups: usize) -> Option<&[u8]> {
    let mut rest = target;
    for _ in 0..ups {
        rest = rest.strip_prefix(b"../")?;
    }
    let blob = rest.strip_prefix(BLOBS.as_bytes())?.strip_prefix(b"/")?;
    is_blob_name(blob).then_some(blob)
}

/// The payload whose list of repo links `name` (`<hash>.refs`) is.
pub fn payload_of_refs(name: &[u8]) -> Option<&[u8]> {
    name.strip_suffix(REFS_SUFFIX.as_bytes())
        .filter(|p| !p.is_empty())
}

/// The blob a snapshot symlink points to (`../../blobs/<etag>`, deeper for nested paths),
/// if what it names can be one ([`is_blob_name`]).
pub fn blob_of_target(target: &[u8]) -> Option<&[u8]> {
    let marker = format!("/{BLOBS}/");
    let i = target
        .windows(marker.len())
        .rposition(|w| w == marker.as_bytes())?;
    let blob = &target[i + marker.len()..];
    is_blob_name(blob).then_some(blob)
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
    /// `HF_HOME/hub`, the hub cache.
    Hub,
    /// The hub cache's `blobs/` of shared payloads (hub >= 1.33).
    SharedBlobs,
    /// `blobs/<2hex>/`: one shard of the shared payloads.
    Shard,
    /// A published shared payload (named by its Xet hash, read-only).
    Payload,
    /// `<hash>.refs` beside a payload: appended to as repos link it.
    PayloadRefs,
    /// A repo's `trees/` of cached tree listings.
    Trees,
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
    /// `HF_HOME/xet` and everything below it: hf_xet's logs and staging, which every
    /// member's hf_xet must be able to create in.
    Xet,
    /// hfcachefs's own records in the store (`.hfcachefs/`): hidden like the private area,
    /// root's, not cache content.
    State,
}

impl Place {
    /// Every place, in `repr(u8)` order (for keeping one in an atomic).
    pub const ALL: [Place; 19] = [
        Place::Root,
        Place::Private,
        Place::Loose,
        Place::Other,
        Place::Hub,
        Place::SharedBlobs,
        Place::Shard,
        Place::Payload,
        Place::PayloadRefs,
        Place::Trees,
        Place::Repo,
        Place::Blobs,
        Place::Commits,
        Place::Refs,
        Place::Locks,
        Place::RepoLocks,
        Place::Fixed,
        Place::Xet,
        Place::State,
    ];

    /// Whether this is hfcachefs's own (members' private copies, the daemons' records):
    /// never shown through the mount, not cache content.
    pub fn is_hidden(self) -> bool {
        matches!(self, Place::Private | Place::State)
    }

    /// Whether nothing renames or rewrites what is here: the cache layout itself and what
    /// is named after a hash.
    pub fn is_fixed(self) -> bool {
        !matches!(
            self,
            Place::Root
                | Place::Private
                | Place::State
                | Place::Loose
                | Place::Other
                | Place::PayloadRefs
                | Place::Xet
        )
    }
}

/// The place of the entry `name` (of file type `kind`, `S_IFMT` bits) in a directory at
/// `parent`.
pub fn place_of(parent: Place, name: &[u8], kind: u32) -> Place {
    let dir = kind == libc::S_IFDIR;
    let file = kind == libc::S_IFREG;
    let is = |n: &str| name == n.as_bytes();
    let link = kind == libc::S_IFLNK;
    let temporary = is_temporary(name);
    match parent {
        Place::Root if dir && is(PRIVATE_DIR) => Place::Private,
        Place::Root if dir && is(STATE_DIR) => Place::State,
        Place::State => Place::State,
        // `HF_HOME/hub`, or a hub cache deeper down (a team's HF_HOME inside the mount).
        Place::Root | Place::Other if dir && is(HUB) => Place::Hub,
        Place::Root if dir && is(XET) => Place::Xet,
        Place::Xet => Place::Xet,
        // A hub cache at the root (HF_HUB_CACHE=/huggingface) may keep payloads there.
        Place::Root | Place::Hub if dir && is(BLOBS) => Place::SharedBlobs,
        Place::Root if !dir => Place::Loose,
        Place::Private => Place::Private,
        Place::SharedBlobs if dir && is_shard(name) => Place::Shard,
        Place::SharedBlobs if file && is(SHARED_BLOBS_MARKER) => Place::Fixed,
        Place::Shard if file && name.ends_with(REFS_SUFFIX.as_bytes()) => Place::PayloadRefs,
        Place::Shard if file && is_lock(name) => Place::Fixed,
        Place::Shard if file && !temporary && !name.starts_with(b".") => Place::Payload,
        Place::SharedBlobs | Place::Shard => Place::Other,
        Place::Repo if dir && is(BLOBS) => Place::Blobs,
        Place::Repo if dir && (is(SNAPSHOTS) || is(NO_EXIST)) => Place::Commits,
        Place::Repo if dir && is(REFS) => Place::Refs,
        Place::Repo if dir && is(TREES) => Place::Trees,
        // A published blob: the file itself, or (shared payloads) a link to it.
        Place::Blobs if (file || link) && !temporary => Place::Fixed,
        Place::Trees if file && !temporary => Place::Fixed,
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
    fn only_names_a_blob_can_have_are_blobs() {
        let long = "a".repeat(256);
        let longest = "a".repeat(255);
        let link = |n: &str| format!("../../blobs/{n}").into_bytes();
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a\0b",
            &long,
            "e1.incomplete",
            "e1.1a2b3c4d.incomplete",
            "e1.lock",
            "e1.refs",
            ".e1.hfcachefs-import",
        ] {
            assert!(!is_blob_name(bad.as_bytes()), "{bad:?}");
            assert_eq!(blob_of_target(&link(bad)), None, "{bad:?}");
            assert_eq!(snapshot_link_blob(&link(bad), 2), None, "{bad:?}");
            assert_eq!(
                payload_of_target(&link(&format!("ab/{bad}"))),
                None,
                "{bad:?}"
            );
        }
        assert_eq!(blob_of_target(b"../../blobs/.."), None);
        assert_eq!(blob_of_target(b"../../blobs/."), None);
        assert_eq!(blob_of_target(b"../../blobs/x/"), None);
        let hex = "0123456789abcdef".repeat(4);
        for good in [hex.as_str(), &hex[..40], &longest, "e1"] {
            assert!(is_blob_name(good.as_bytes()), "{good}");
            assert_eq!(blob_of_target(&link(good)), Some(good.as_bytes()));
        }
    }

    #[test]
    fn snapshot_targets() {
        assert_eq!(blob_of_target(b"../../blobs/abc"), Some(&b"abc"[..]));
        assert_eq!(blob_of_target(b"../../../blobs/abc"), Some(&b"abc"[..]));
        assert_eq!(blob_of_target(b"../../blobs/"), None);
        assert_eq!(blob_of_target(b"/etc/passwd"), None);
        assert_eq!(payload_of_target(b"../../blobs/ab/.."), None);
        assert_eq!(payload_of_target(b"../../other/ab/x"), None);
    }

    #[test]
    fn exact_snapshot_links() {
        assert_eq!(snapshot_link_blob(b"../../blobs/abc", 2), Some(&b"abc"[..]));
        assert_eq!(
            snapshot_link_blob(b"../../../blobs/abc", 3),
            Some(&b"abc"[..])
        );
        // One `../` too many leads to the hub cache's shared blobs, not the repo's.
        assert_eq!(snapshot_link_blob(b"../../../blobs/abc", 2), None);
        assert_eq!(snapshot_link_blob(b"../../blobs/abc", 3), None);
        assert_eq!(snapshot_link_blob(b"/etc/blobs/abc", 2), None);
        assert_eq!(snapshot_link_blob(b"../../blobs/a/b", 2), None);
        assert_eq!(snapshot_link_blob(b"../../blobs/..", 2), None);
        assert_eq!(snapshot_link_blob(b"../../blobs/", 2), None);
        assert_eq!(payload_of_refs(b"ab12.refs"), Some(&b"ab12"[..]));
        assert_eq!(payload_of_refs(b".refs"), None);
        assert_eq!(payload_of_refs(b"ab12"), None);
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
        let pins = path(&[(".hfcachefs", DIR), ("pins", REG)]);
        assert!(pins == Place::State && pins.is_hidden() && !pins.is_fixed());
        assert!(is_hidden_root_name(b".hfcachefs") && !is_hidden_root_name(b"hub"));
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

    #[test]
    fn the_2026_layout_is_named_by_hash_too() {
        let shared = [("hub", DIR), ("blobs", DIR)];
        let under = |rest: &[(&str, u32)]| path(&[shared.as_slice(), rest].concat());
        assert_eq!(path(&[("hub", DIR)]), Place::Hub);
        assert_eq!(path(&shared), Place::SharedBlobs);
        assert_eq!(under(&[("ab", DIR)]), Place::Shard);
        assert_eq!(under(&[("ab", DIR), ("ab12cd", REG)]), Place::Payload);
        assert_eq!(under(&[("ab", DIR), ("ab12cd.lock", REG)]), Place::Fixed);
        assert_eq!(
            under(&[("ab", DIR), ("ab12cd.refs", REG)]),
            Place::PayloadRefs
        );
        assert_eq!(
            under(&[("ab", DIR), ("ab12cd.incomplete", REG)]),
            Place::Other
        );
        assert_eq!(under(&[("ab", DIR), (".tmp1234", REG)]), Place::Other);
        assert_eq!(under(&[(".huggingface-shared-blobs", REG)]), Place::Fixed);
        assert_eq!(under(&[("xyz", DIR)]), Place::Other);
        // In an HF_HOME deeper in the mount, too.
        assert_eq!(
            path(&[("team", DIR), ("hub", DIR), ("blobs", DIR), ("ab", DIR)]),
            Place::Shard
        );
        // At a hub cache at the root, too.
        assert_eq!(path(&[("blobs", DIR), ("0f", DIR)]), Place::Shard);
        let repo = [("hub", DIR), ("models--o--m", DIR)];
        let in_repo = |rest: &[(&str, u32)]| path(&[repo.as_slice(), rest].concat());
        assert_eq!(in_repo(&[("blobs", DIR), ("e7a9", LNK)]), Place::Fixed);
        assert_eq!(in_repo(&[("trees", DIR)]), Place::Trees);
        assert_eq!(in_repo(&[("trees", DIR), ("0123.json", REG)]), Place::Fixed);
        assert!(Place::Payload.is_fixed() && Place::Shard.is_fixed() && Place::Hub.is_fixed());
        assert!(!Place::PayloadRefs.is_fixed());
        // hf_xet's tree, all the way down, and only at the root.
        let xet = [("xet", DIR), ("logs", DIR), ("xet_1.log", REG)];
        assert_eq!(path(&xet[..1]), Place::Xet);
        assert_eq!(path(&xet), Place::Xet);
        assert_eq!(path(&[("xet", DIR), ("models--a--b", DIR)]), Place::Xet);
        assert!(!Place::Xet.is_fixed());
        assert_eq!(path(&[("hub", DIR), ("xet", DIR)]), Place::Other);
        assert_eq!(path(&[("xet", REG)]), Place::Loose);
        // The old layout below `hub/` is unchanged.
        assert_eq!(in_repo(&[("blobs", DIR)]), Place::Blobs);
        assert_eq!(path(&[("hub", DIR), (".locks", DIR)]), Place::Locks);
    }

    #[test]
    fn payload_links() {
        assert_eq!(
            payload_of_target(b"../../blobs/ab/ab12cd"),
            Some((&b"ab"[..], &b"ab12cd"[..]))
        );
        assert_eq!(payload_of_target(b"../../blobs/abc/x"), None);
        assert_eq!(payload_of_target(b"../../blobs/ab/"), None);
        assert_eq!(payload_of_target(b"/etc/passwd"), None);
        assert_eq!(payload_of_target(b"../../blobs/ab/x/y"), None);
        assert!(is_shard(b"0f") && !is_shard(b"0F") && !is_shard(b"abc"));
    }

    #[test]
    fn repo_ids() {
        assert_eq!(
            repo_id("models--org--m"),
            Some((RepoType::Model, "org/m".into()))
        );
        assert_eq!(
            repo_id("datasets--d"),
            Some((RepoType::Dataset, "d".into()))
        );
        assert_eq!(
            repo_id("spaces--o--s"),
            Some((RepoType::Space, "o/s".into()))
        );
        assert_eq!(repo_id("models--"), None);
        assert_eq!(repo_id("blobs"), None);
    }
}
