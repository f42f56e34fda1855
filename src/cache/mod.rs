//! The Hugging Face cache: its layout (every name, and where an entry sits), symlink-safe
//! walks over a store or a user's cache, and the links of a hub cache (snapshot entries,
//! repo blobs, shared payloads) collected during a walk.

pub mod layout;
pub mod links;
pub mod walk;
