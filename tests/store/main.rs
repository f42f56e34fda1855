//! The store logic driven in-process on a temporary directory, without FUSE: fixed checks of
//! the policy and of symlink safety (`ops`), and random operation sequences held against a
//! reference model (`model`). They give files to other users, so they need root; without
//! it they fail, never skip.

mod harness;
mod model;
mod ops;
