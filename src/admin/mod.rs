//! The administration commands, each a module with a `run` taking typed options from
//! `cli`: `doctor` (checks a mount and says how to fix what is wrong), `import` (brings
//! users' caches into the store), `stats` (what the cache holds and what sharing saves),
//! `fixstore` (makes a store follow the policy), `gc` (evicts least recently used revisions)
//! and `pin` (revisions it never removes); `eviction` is what `stats` and `doctor` show of
//! it. `mounts` finds root's hfcachefs mounts and
//! the options their daemons serve; `probe` runs what touches a mount in a child process
//! with a time limit; `format` writes sizes and JSON strings.

pub mod doctor;
pub mod eviction;
pub mod fixstore;
pub mod format;
pub mod gc;
pub mod import;
pub mod mounts;
pub mod pin;
pub mod probe;
pub mod stats;

use crate::error::Error;

/// Commands that read and change a root-only store must run as root.
pub fn require_root() -> Result<(), Error> {
    if crate::sys::is_root() {
        Ok(())
    } else {
        Err(Error::Usage(
            "must run as root (the store is root-only)".into(),
        ))
    }
}
