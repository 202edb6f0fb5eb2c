//! GitLab CI: a dotenv report (`artifacts: reports: dotenv: FILE`) whose
//! variables later jobs receive.

use std::io::Write;
use std::path::Path;

use super::report::BuildReport;
use crate::text::{escape_path, escape_str};

/// `BKD_IMAGE_DIGEST`, `BKD_IMAGE_ID`, `BKD_IMAGE_NAME`, `BKD_IMAGE_REF`,
/// one line each (dotenv values cannot span lines).
pub fn dotenv_text(report: &BuildReport) -> String {
    let mut out = String::new();
    let mut put = |k: &str, v: &str| out += &format!("{k}={}\n", escape_str(v));
    if let Some(d) = &report.digest {
        put("BKD_IMAGE_DIGEST", d);
    }
    if let Some(id) = &report.image_id {
        put("BKD_IMAGE_ID", id);
    }
    if !report.names.is_empty() {
        put("BKD_IMAGE_NAME", &report.names.join(","));
    }
    if let Some(p) = report.pinned() {
        put("BKD_IMAGE_REF", &p);
    }
    out
}

/// Appends the variables to `path` (created if missing), so several
/// builds of one job can share the report.
pub fn write_dotenv(path: &Path, report: &BuildReport) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .and_then(|mut f| f.write_all(dotenv_text(report).as_bytes()))
        .map_err(|e| {
            format!(
                "cannot write the dotenv report {}: {}",
                escape_path(path),
                crate::error::io_reason(&e)
            )
        })
}
