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
    pub fn of(&self, place: Place) -> (Duration, Duration) {
        if place.is_fixed() {
            (self.content, self.content)
        } else {
            (self.attr, self.entry)
        }
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
