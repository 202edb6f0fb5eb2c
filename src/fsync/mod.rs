//! Local directories as the file-sync protocol sees them: walking with
//! `.dockerignore` semantics, stat encoding, and receiving a tree.

pub mod patterns;
pub mod receive;
pub mod stat;
pub mod walk;
