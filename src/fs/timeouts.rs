//! How long the kernel may cache a name and its attributes.
//!
//! Every change made through the mount invalidates the kernel's caches itself; a timeout
//! only bounds how long a change made around it (another host, an administrator in the
//! store) can stay unseen. Most names get the short mount-wide timeouts; what the cache
//! layout says nothing renames or rewrites ([`Place::is_fixed`]) gets the long content
//! timeout. Names looked up in vain keep the short entry timeout.

use std::time::Duration;

use crate::cache::layout::Place;

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
    ///
    /// A private name (`token`) names a different inode for each user, while the kernel
    /// keeps one dentry per name for all processes. Its entry timeout is therefore zero:
    /// the kernel revalidates the dentry at every path walk with a LOOKUP carrying the
    /// caller's uid, and when our answer names another node than the cached one it drops
    /// the dentry and looks the name up afresh for this caller (fuse_dentry_revalidate).
    /// Misses are never cached for these names either (see `HfCacheFs::lookup`). So a
    /// lookup made for one user is never answered from a dentry filled for another.
    pub fn of(&self, place: Place) -> (Duration, Duration) {
        match place {
            Place::Private => (self.attr, Duration::ZERO),
            // A rename onto a private name moves the kernel's dentry with its timeout and
            // keeps the inode's cached attributes: neither may outlive this request.
            Place::Loose => (Duration::ZERO, Duration::ZERO),
            p if p.is_fixed() => (self.content, self.content),
            _ => (self.attr, self.entry),
        }
    }
}

impl Timeouts {
    /// The one timeout a readdirplus entry carries, for its name and attributes alike.
    pub fn listed(&self, place: Place) -> Duration {
        let (attr, entry) = self.of(place);
        attr.min(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_follow_the_place() {
        let t = Timeouts {
            entry: Duration::from_secs(1),
            attr: Duration::from_secs(2),
            content: Duration::from_secs(60),
        };
        assert_eq!(t.of(Place::Other), (t.attr, t.entry));
        assert_eq!(t.of(Place::Root), (t.attr, t.entry));
        assert_eq!(t.of(Place::Private), (t.attr, Duration::ZERO));
        assert_eq!(t.of(Place::Loose), (Duration::ZERO, Duration::ZERO));
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
