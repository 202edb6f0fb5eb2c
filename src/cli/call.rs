//! What `--call`/`--check` prints: the frontend's answer on stdout, as
//! buildx prints it, and the exit status the answer carries.

use std::collections::HashMap;

use super::buildx::CallRequest;
use crate::error::{Error, Result};

fn text(meta: &HashMap<String, Vec<u8>>, key: &str) -> Option<String> {
    meta.get(key)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Prints the answer; a non-zero status (lint warnings) fails the command
/// with exit 1 unless `ignorestatus=true`.
pub fn print(call: &CallRequest, meta: &HashMap<String, Vec<u8>>) -> Result<()> {
    let json = text(meta, "result.json").unwrap_or_default();
    let mut out = String::new();
    let mut build_error = None;
    if call.json {
        out = format!("{json}\n");
    } else if call.name == "lint" {
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        let warnings = parsed["warnings"].as_array().map_or(0, Vec::len);
        build_error = parsed["buildError"]["message"].as_str().map(str::to_string);
        match warnings {
            0 if build_error.is_none() => out += "Check complete, no warnings found.\n",
            0 => {}
            1 => out += "Check complete, 1 warning has been found!\n",
            n => out += &format!("Check complete, {n} warnings have been found!\n"),
        }
        if warnings > 0 {
            out += &text(meta, "result.txt").unwrap_or_default();
        }
    } else {
        out = text(meta, "result.txt").unwrap_or_else(|| format!("{json}\n"));
    }
    super::print_stdout(&out)?;
    if let Some(message) = build_error {
        return Err(Error::BuildFailed {
            message: format!("check: {}", crate::text::escape_str(&message)),
            step_logs: String::new(),
        });
    }
    let status: i32 = text(meta, "result.statuscode")
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if status != 0 && !call.ignore_status {
        let what = if call.name == "lint" {
            "check".to_string()
        } else {
            call.name.clone()
        };
        return Err(Error::BuildFailed {
            message: format!(
                "{what} found problems (status {status}); --call {what},ignorestatus=true exits 0"
            ),
            step_logs: String::new(),
        });
    }
    Ok(())
}
