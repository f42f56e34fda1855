//! How long the kernel may cache a name and its attributes.
//!
//! Every change made through the mount invalidates the kernel's caches itself; a timeout
//! only bounds how long a change made around it (another host, an administrator in the
//! store) can stay unseen. Most names get the short mount-wide timeouts. A Hugging Face
//! cache's layout (repo directories and their `blobs/`, `snapshots/`, `refs/`, `.locks/`)
//! and what is named after a hash get a long one, since nothing renames or rewrites them:
//! a blob is published once under its etag (`blobs/<etag>`, written as `.incomplete` and
//! renamed), a snapshot (`snapshots/<commit>/...`) and a missing-file marker
//! (`.no_exist/<commit>/...`) only say what that commit holds, and a lock file
//! (`.locks/<repo>/<etag>.lock`) is created once and only ever locked. The refs themselves
//! (rewritten for each new commit), in-progress downloads, and names looked up in vain keep
//! the short timeouts. A listing cached with a long timeout is still dropped at once when
//! the mount itself adds or removes an entry.

use std::time::Duration;

/// Where an inode sits in a Hugging Face cache, as far as caching is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
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

const REPO_PREFIXES: [&[u8]; 3] = [b"models--", b"datasets--", b"spaces--"];

/// The place of the entry `name` (of file type `kind`, `S_IFMT` bits) in a directory at
/// `parent`.
pub fn place_of(parent: Place, name: &[u8], kind: u32) -> Place {
    let dir = kind == libc::S_IFDIR;
    let file = kind == libc::S_IFREG;
    match parent {
        Place::Repo if dir && name == b"blobs" => Place::Blobs,
        Place::Repo if dir && (name == b"snapshots" || name == b".no_exist") => Place::Commits,
        Place::Repo if dir && name == b"refs" => Place::Refs,
        Place::Blobs if file && !name.ends_with(b".incomplete") => Place::Fixed,
        Place::Commits | Place::Fixed => Place::Fixed,
        Place::Locks if dir => Place::RepoLocks,
        Place::RepoLocks if file && name.ends_with(b".lock") => Place::Fixed,
        Place::Locks | Place::RepoLocks => Place::Other,
        _ if dir && name == b".locks" => Place::Locks,
        _ if dir && REPO_PREFIXES.iter().any(|p| name.starts_with(p)) => Place::Repo,
        _ => Place::Other,
    }
}

/// The timeouts of a mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Names (found or not) of [`Place::Other`] inodes.
    pub entry: Duration,
    /// Attributes of [`Place::Other`] inodes.
    pub attr: Duration,
    /// Names and attributes of the cache layout and of what is named after a hash.
    pub content: Duration,
}

impl Timeouts {
    /// (attribute, entry) timeouts for an inode at `place`.
    pub fn of(&self, place: Place) -> (Duration, Duration) {
        match place {
            Place::Other => (self.attr, self.entry),
            _ => (self.content, self.content),
        }
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
            .fold(Place::Other, |p, (n, k)| place_of(p, n.as_bytes(), *k))
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
        assert_eq!(path(&[("models--org--m", REG)]), Place::Other);
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
    fn timeouts_follow_the_place() {
        let t = Timeouts {
            entry: Duration::from_secs(1),
            attr: Duration::from_secs(2),
            content: Duration::from_secs(60),
        };
        assert_eq!(t.of(Place::Other), (t.attr, t.entry));
        for p in [
            Place::Repo,
            Place::Blobs,
            Place::Commits,
            Place::Refs,
            Place::Locks,
            Place::RepoLocks,
            Place::Fixed,
        ] {
            assert_eq!(t.of(p), (t.content, t.content));
        }
    }
}
