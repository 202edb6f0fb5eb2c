//! CI-system integration: which CI system runs bkd ([`CiSystem`]), and what
//! a build leaves for the pipeline around it (Buildkite meta-data and
//! annotations, GitHub Actions step outputs and summaries, GitLab dotenv
//! reports), written from a [`report::BuildReport`].

pub mod buildkite;
mod detect;
pub mod github;
pub mod gitlab;
pub mod record;
pub mod report;

pub use detect::CiSystem;
