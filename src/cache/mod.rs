//! The Hugging Face cache: its layout (every name, and where an entry sits) and
//! symlink-safe walks over a store or a user's cache.

pub mod layout;
pub mod walk;
