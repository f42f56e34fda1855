//! hfcachefs: a FUSE filesystem that shares one Hugging Face cache between the members of a
//! group, with ownership and modes enforced on disk and lock files that always open.
//!
//! The tree, top to bottom (each module uses only those below it):
//! - `cli`: the command line: subcommand names, flags, help, exit statuses;
//! - `daemon`: mount, detach, signals, logging; `fs`: the filesystem it serves (fuser
//!   adapter, store operations, inode table, flock forwarding, kernel cache timeouts);
//! - `admin`: `doctor`, `import`, `stats`, `fix-store`, and finding mounts and daemons;
//! - `options` (a mount's options, as mount(8) passes them), `status` (what a daemon logs
//!   that `doctor` reads), `claim` (entries root makes in trees users can change), `cache`
//!   (the Hugging Face cache layout and symlink-safe walks), `policy` (the pure ownership and
//!   mode rules), `evict` (which revisions eviction removes and how, the access and
//!   open-file records it reads), `error`;
//! - `sys`: every raw syscall behind a safe wrapper, the only `unsafe`.

pub mod admin;
pub mod cache;
pub mod claim;
pub mod cli;
pub mod daemon;
pub mod error;
pub mod evict;
pub mod fs;
pub mod options;
pub mod policy;
pub mod status;
pub mod sys;
