//! Local directories as the file-sync protocol sees them: walking with
//! `.dockerignore` semantics, stat encoding, and receiving a tree.

pub mod dirfd;
pub mod patterns;
pub mod receive;
pub mod stage;
pub mod stat;
pub mod walk;
