//! bkd drives BuildKit's daemon directly: it opens a session, serves the
//! build context and receives outputs through it, runs the Dockerfile
//! frontend, and renders progress.

pub mod ci;
pub mod cli;
pub mod client;
pub mod daemon;
pub mod error;
pub mod fsync;
pub mod oci_layout;
pub mod outfile;
pub mod progress;
pub mod proto;
pub mod route;
pub mod session;
pub mod text;
pub mod transport;

pub use error::{Error, Result};
