//! GitHub Actions: step outputs (`$GITHUB_OUTPUT`) and the job summary
//! (`$GITHUB_STEP_SUMMARY`), each one append to the file the runner names.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::report::BuildReport;
use crate::text::{escape_path, escape_str};

/// The file the runner names in `var`, when this is a GitHub Actions job.
pub fn runner_file(var: &str) -> Result<PathBuf, String> {
    if std::env::var("GITHUB_ACTIONS").as_deref() != Ok("true") {
        return Err("not a GitHub Actions job (GITHUB_ACTIONS is not true)".into());
    }
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| format!("{var} is not set"))
}

fn append(path: &Path, text: &str) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| {
            format!(
                "cannot append to {}: {}",
                escape_path(path),
                crate::error::io_reason(&e)
            )
        })
}

/// The outputs `docker/build-push-action` users read (`digest`,
/// `imageid`), plus `name` and `ref` (the image pinned by digest).
pub fn outputs_text(report: &BuildReport) -> String {
    let mut out = String::new();
    let mut put = |k: &str, v: &str| out += &format!("{k}={}\n", escape_str(v));
    if let Some(d) = &report.digest {
        put("digest", d);
    }
    if let Some(id) = &report.image_id {
        put("imageid", id);
    }
    if !report.names.is_empty() {
        put("name", &report.names.join(","));
    }
    if let Some(p) = report.pinned() {
        put("ref", &p);
    }
    out
}

pub fn write_outputs(path: &Path, report: &BuildReport) -> Result<(), String> {
    append(path, &outputs_text(report))
}

pub fn append_summary(path: &Path, report: &BuildReport) -> Result<(), String> {
    append(path, &format!("{}\n", report.markdown()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_one_line_each() {
        let report = BuildReport {
            digest: Some("sha256:aa".into()),
            image_id: Some("sha256:cc".into()),
            names: vec!["r/app:1".into(), "evil\nname=x".into()],
            ..Default::default()
        };
        assert_eq!(
            outputs_text(&report),
            "digest=sha256:aa\nimageid=sha256:cc\nname=r/app:1,evil\\nname=x\nref=r/app@sha256:aa\n"
        );
    }
}
