//! CI-system integration: what a build leaves for the pipeline around it
//! (Buildkite meta-data and annotations, GitHub Actions step outputs and
//! summaries, GitLab dotenv reports), written from a [`report::BuildReport`].

pub mod buildkite;
pub mod github;
pub mod gitlab;
pub mod record;
pub mod report;
