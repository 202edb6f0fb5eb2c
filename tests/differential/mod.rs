//! bkd against the reference, live: the matcher against the reference
//! matcher itself, and whole builds against buildctl on the same daemon.

pub mod oracle;
pub mod reference;
