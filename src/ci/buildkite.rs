//! Buildkite: build meta-data and annotations through `buildkite-agent`,
//! which the agent puts on PATH of every job (with `BUILDKITE=true`).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::report::BuildReport;
use crate::text::{escape_path, escape_str};

/// The agent of the job this runs in.
#[derive(Debug, Clone)]
pub struct Agent {
    program: PathBuf,
}

/// The first executable `name` in `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

impl Agent {
    /// The agent when this is a Buildkite job with `buildkite-agent` on
    /// PATH; otherwise why not.
    pub fn detect() -> Result<Agent, String> {
        if std::env::var("BUILDKITE").as_deref() != Ok("true") {
            return Err("not a Buildkite job (BUILDKITE is not true)".into());
        }
        find_on_path("buildkite-agent")
            .map(|program| Agent { program })
            .ok_or_else(|| "buildkite-agent is not on PATH".into())
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<(), String> {
        let what = format!(
            "buildkite-agent {}",
            args.first().copied().unwrap_or_default()
        );
        let mut child = Command::new(&self.program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", escape_path(&self.program)))?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // An agent that exits early closes the pipe; its status says why.
            let _ = pipe.write_all(text.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("{what}: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        let detail = String::from_utf8_lossy(&out.stderr);
        let last = detail
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        Err(format!(
            "{what} failed ({}): {}",
            out.status,
            escape_str(last.trim())
        ))
    }

    /// Sets `KEY` (the image pinned by digest), `KEY-digest`, `KEY-name`
    /// and `KEY-image-id`, for later steps to read with
    /// `buildkite-agent meta-data get`.
    pub fn set_metadata(&self, key: &str, report: &BuildReport) -> Result<(), String> {
        let Some(pinned) = report.pinned() else {
            return Err(format!(
                "--buildkite-metadata {}: the build made no image, so there is no digest to set",
                escape_str(key)
            ));
        };
        let mut pairs = vec![(key.to_string(), pinned)];
        if let Some(d) = &report.digest {
            pairs.push((format!("{key}-digest"), d.clone()));
        }
        if !report.names.is_empty() {
            pairs.push((format!("{key}-name"), report.names.join(",")));
        }
        if let Some(id) = &report.image_id {
            pairs.push((format!("{key}-image-id"), id.clone()));
        }
        for (k, v) in &pairs {
            self.run(&["meta-data", "set", k, v], None)?;
        }
        Ok(())
    }

    /// Annotates the build with the report, under `context` (a later
    /// build in the same job with the same context replaces it).
    pub fn annotate(&self, context: &str, report: &BuildReport) -> Result<(), String> {
        let style = if report.succeeded { "success" } else { "error" };
        self.run(
            &["annotate", "--style", style, "--context", context],
            Some(&report.markdown()),
        )
    }
}
