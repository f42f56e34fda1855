//! The filesystem the daemon serves: `fuse` is the thin fuser adapter (capabilities,
//! replies, passthrough backing files); `store` is every operation as `*at()` calls on the
//! store with the policy applied, testable in-process without a mount; `inodes` maps node
//! ids to O_PATH handles; `locks` forwards flock; `timeouts` says how long the kernel may
//! cache what the cache layout says never changes.

pub mod fuse;
mod inodes;
mod locks;
pub mod store;
pub mod timeouts;

pub use inodes::ROOT_ID;
