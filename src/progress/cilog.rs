//! The log markup of the CI systems bkd has views for: collapsible groups
//! and their expansion, and Buildkite's per-line timestamps. Every text
//! put inside these markers is escaped by the caller, so a step name can
//! never open or close a group itself.

use std::time::SystemTime;

/// Buildkite: opens a collapsed log group.
pub const BUILDKITE_GROUP: &str = "--- ";
/// Buildkite: expands the group just printed.
pub const BUILDKITE_EXPAND_PREVIOUS: &str = "^^^ +++";
/// Buildkite: an expanded group for the failing steps' last lines.
pub const BUILDKITE_FAILED_STEPS: &str = "+++ Failed steps";
/// Buildkite: an expanded group for the failing Dockerfile lines, when no
/// step failed (a parse error).
pub const BUILDKITE_BUILD_ERROR: &str = "+++ Build error";
/// Buildkite: an expanded group for the summary.
pub const BUILDKITE_SUMMARY: &str = "+++ Build summary";

/// Buildkite's inline timestamp escape (milliseconds since the epoch),
/// which its log viewer shows as the line's time.
pub fn buildkite_timestamp(t: SystemTime) -> String {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    format!("\x1b_bk;t={ms}\x07")
}

/// GitHub Actions: opens a (always collapsed) group titled `title`.
pub fn github_group(title: &str) -> String {
    format!("::group::{title}")
}

/// GitHub Actions: ends the open group.
pub const GITHUB_END_GROUP: &str = "::endgroup::";

/// GitLab CI: opens section `name` (letters, digits, `_`, `.`, `-`) at
/// `unix_seconds`, headed `title`.
pub fn gitlab_section_start(unix_seconds: u64, name: &str, collapsed: bool, title: &str) -> String {
    format!("section_start:{unix_seconds}:{name}[collapsed={collapsed}]\r\x1b[0K{title}")
}

/// GitLab CI: ends section `name`.
pub fn gitlab_section_end(unix_seconds: u64, name: &str) -> String {
    format!("section_end:{unix_seconds}:{name}\r\x1b[0K")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn markup() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(buildkite_timestamp(t), "\x1b_bk;t=1700000000123\x07");
        assert_eq!(github_group("#1 a"), "::group::#1 a");
        assert_eq!(
            gitlab_section_start(17, "bkd_step_1_1", true, "#1 a"),
            "section_start:17:bkd_step_1_1[collapsed=true]\r\x1b[0K#1 a"
        );
        assert_eq!(
            gitlab_section_end(18, "bkd_step_1_1"),
            "section_end:18:bkd_step_1_1\r\x1b[0K"
        );
    }
}
