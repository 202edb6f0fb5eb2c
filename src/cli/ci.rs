//! `bkd build`'s CI flags: what the build leaves for the pipeline around
//! it, checked before the build and written after it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::Args;

use crate::ci::buildkite::Agent;
use crate::ci::record::SharedTally;
use crate::ci::report::BuildReport;
use crate::ci::{github, gitlab};
use crate::error::{Error, Result};
use crate::progress::state::BuildState;
use crate::progress::BuildEnd;
use crate::text::escape_str;

#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "CI integration")]
pub struct CiArgs {
    /// On Buildkite: set meta-data KEY (image@digest), KEY-digest, KEY-name and KEY-image-id
    #[arg(long, value_name = "KEY")]
    pub buildkite_metadata: Option<String>,

    /// On Buildkite: annotate the build with its summary (steps, slowest steps, cache time, digest) [context: bkd]
    #[arg(
        long,
        value_name = "CONTEXT",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "bkd"
    )]
    pub buildkite_annotate: Option<String>,

    /// On GitHub Actions: write digest, imageid, name and ref to $GITHUB_OUTPUT
    #[arg(long)]
    pub github_output: bool,

    /// On GitHub Actions: add the build summary to $GITHUB_STEP_SUMMARY
    #[arg(long)]
    pub github_summary: bool,

    /// Write BKD_IMAGE_DIGEST, BKD_IMAGE_ID, BKD_IMAGE_NAME and BKD_IMAGE_REF to FILE (a GitLab dotenv report)
    #[arg(long, value_name = "FILE")]
    pub gitlab_dotenv: Option<PathBuf>,
}

/// The CI writes this build will make, decided before it starts.
#[derive(Debug, Default)]
pub struct CiPlan {
    buildkite: Option<Agent>,
    metadata_key: Option<String>,
    annotate_context: Option<String>,
    github_output: Option<PathBuf>,
    github_summary: Option<PathBuf>,
    gitlab_dotenv: Option<PathBuf>,
    tally: Option<SharedTally>,
}

impl CiArgs {
    /// Checks the flags; a CI system that is not there is one warning
    /// line, not a failure, so the same command runs on a laptop.
    pub fn resolve(&self, say: impl Fn(&str)) -> Result<CiPlan> {
        let mut plan = CiPlan::default();
        if let Some(key) = &self.buildkite_metadata {
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(Error::Usage(format!(
                    "invalid --buildkite-metadata {:?}: expected a meta-data key",
                    escape_str(key)
                )));
            }
        }
        if let Some(context) = &self.buildkite_annotate {
            if context.is_empty() || context.contains(char::is_whitespace) {
                return Err(Error::Usage(format!(
                    "invalid --buildkite-annotate={:?}: expected an annotation context",
                    escape_str(context)
                )));
            }
        }
        if self.buildkite_metadata.is_some() || self.buildkite_annotate.is_some() {
            match Agent::detect() {
                Ok(agent) => {
                    plan.buildkite = Some(agent);
                    plan.metadata_key = self.buildkite_metadata.clone();
                    plan.annotate_context = self.buildkite_annotate.clone();
                }
                Err(why) => say(&format!(
                    "warning: {why}: no Buildkite meta-data or annotation"
                )),
            }
        }
        for (wanted, var, slot) in [
            (self.github_output, "GITHUB_OUTPUT", &mut plan.github_output),
            (
                self.github_summary,
                "GITHUB_STEP_SUMMARY",
                &mut plan.github_summary,
            ),
        ] {
            if wanted {
                match github::runner_file(var) {
                    Ok(path) => *slot = Some(path),
                    Err(why) => say(&format!("warning: {why}: nothing written to {var}")),
                }
            }
        }
        if let Some(path) = &self.gitlab_dotenv {
            super::build::check_output_parent(path)?;
            plan.gitlab_dotenv = Some(path.clone());
        }
        if plan.buildkite.is_some()
            || plan.github_output.is_some()
            || plan.github_summary.is_some()
            || plan.gitlab_dotenv.is_some()
        {
            plan.tally = Some(Arc::new(Mutex::new(BuildState::default())));
        }
        Ok(plan)
    }
}

impl CiPlan {
    /// The tally the build's display should fill, if a report is wanted.
    pub fn tally(&self) -> Option<SharedTally> {
        self.tally.clone()
    }

    /// Writes what was asked for. Values later steps depend on (meta-data,
    /// outputs, dotenv) fail the command when they cannot be written;
    /// summaries only warn. After a failed build only summaries are written.
    pub fn publish(&self, end: &BuildEnd) -> Result<()> {
        let Some(tally) = &self.tally else {
            return Ok(());
        };
        let report = match tally.lock() {
            Ok(t) => BuildReport::new(&t, end),
            Err(poisoned) => BuildReport::new(&poisoned.into_inner(), end),
        };
        let mut first_error = None;
        let mut must = |r: std::result::Result<(), String>| {
            if let Err(e) = r {
                eprintln!("error: {e}");
                first_error.get_or_insert(e);
            }
        };
        if let Some(agent) = &self.buildkite {
            if let Some(context) = &self.annotate_context {
                if let Err(e) = agent.annotate(context, &report) {
                    eprintln!("warning: {e}");
                }
            }
            if let (Some(key), true) = (&self.metadata_key, end.succeeded) {
                must(agent.set_metadata(key, &report));
            }
        }
        if let Some(path) = &self.github_summary {
            if let Err(e) = github::append_summary(path, &report) {
                eprintln!("warning: {e}");
            }
        }
        if end.succeeded {
            if let Some(path) = &self.github_output {
                must(github::write_outputs(path, &report));
            }
            if let Some(path) = &self.gitlab_dotenv {
                must(gitlab::write_dotenv(path, &report));
            }
        }
        match first_error {
            // Printed above with the others; the last line repeats the first.
            Some(e) => Err(Error::OutputWrite(e)),
            None => Ok(()),
        }
    }
}
