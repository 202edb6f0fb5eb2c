//! `--progress`: the mode the user asked for, resolved into a display.

use std::io::IsTerminal;
use std::time::Instant;

use clap::ValueEnum;

use crate::ci::CiSystem;
use crate::client::solve::BuildOutcome;
use crate::error::{Error, Result};
use crate::progress::plain::{Flavor, PlainOptions, PlainPrinter};
use crate::progress::quiet::Quiet;
use crate::progress::rawjson::RawJson;
use crate::progress::tty::TtyDisplay;
use crate::progress::{BuildEnd, Display};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// buildkite, github or gitlab inside those CI systems, else tty on a terminal, else plain
    Auto,
    /// buildctl-compatible plain text
    Plain,
    /// live lines per running step; finished steps collapse
    Tty,
    /// plain text in Buildkite log groups, with timestamps
    Buildkite,
    /// plain text in GitHub Actions log groups
    Github,
    /// plain text in GitLab CI collapsible sections
    Gitlab,
    /// one JSON status message per line, like buildctl --progress=rawjson
    Rawjson,
    /// only errors and the final result
    Quiet,
}

/// The variable bkd reads first, then buildctl's and buildx's.
const BKD_PROGRESS: &str = "BKD_PROGRESS";
const BUILDKIT_PROGRESS: &str = "BUILDKIT_PROGRESS";

/// The mode asked for: the flag (or `BKD_PROGRESS`, which clap reads for
/// it), else `BUILDKIT_PROGRESS`, else auto.
pub fn requested(flag: Option<ProgressMode>) -> Result<ProgressMode> {
    if let Some(m) = flag {
        return Ok(m);
    }
    match std::env::var(BUILDKIT_PROGRESS) {
        Ok(v) if !v.is_empty() => ProgressMode::from_str(&v, true).map_err(|_| {
            Error::Usage(format!(
                "invalid {BUILDKIT_PROGRESS} value {}: expected one of auto, plain, tty, buildkite, github, gitlab, rawjson, quiet (or set {BKD_PROGRESS})",
                crate::text::escape_str(&v)
            ))
        }),
        _ => Ok(ProgressMode::Auto),
    }
}

/// What `auto` and `--debug` come to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    Text { flavor: Flavor, verbose: bool },
    Tty,
    Rawjson,
    Quiet,
}

/// Resolves the mode: `auto` takes the CI system's view whatever the
/// terminal (CI agents often run jobs on a pseudo-terminal), else the live
/// view on a terminal, else plain; `--debug` turns the text modes into
/// their verbose form (a live view would fight with the daemon log
/// interleaved on stderr).
pub fn resolve(
    mode: ProgressMode,
    debug: bool,
    stderr_is_tty: bool,
    ci: Option<CiSystem>,
) -> Resolved {
    let mode = match (mode, ci) {
        (ProgressMode::Auto, Some(CiSystem::Buildkite)) => ProgressMode::Buildkite,
        (ProgressMode::Auto, Some(CiSystem::GitHubActions)) => ProgressMode::Github,
        (ProgressMode::Auto, Some(CiSystem::GitLab)) => ProgressMode::Gitlab,
        (ProgressMode::Auto, None) if stderr_is_tty => ProgressMode::Tty,
        (ProgressMode::Auto, None) => ProgressMode::Plain,
        (m, _) => m,
    };
    let text = |flavor| Resolved::Text {
        flavor,
        verbose: debug,
    };
    match mode {
        ProgressMode::Tty if debug => text(Flavor::Plain),
        ProgressMode::Tty => Resolved::Tty,
        ProgressMode::Buildkite => text(Flavor::Buildkite),
        ProgressMode::Github => text(Flavor::GitHub),
        ProgressMode::Gitlab => text(Flavor::GitLab),
        ProgressMode::Rawjson => Resolved::Rawjson,
        ProgressMode::Quiet => Resolved::Quiet,
        ProgressMode::Auto | ProgressMode::Plain => text(Flavor::Plain),
    }
}

/// The display for `mode`, drawing on stderr.
pub fn display_for(mode: ProgressMode, debug: bool) -> Box<dyn Display> {
    // Renderers flush after each redraw; without a buffer every log line
    // would be its own write(2).
    let stderr = || std::io::BufWriter::with_capacity(1 << 16, std::io::stderr());
    let resolved = resolve(
        mode,
        debug,
        std::io::stderr().is_terminal(),
        CiSystem::detect(),
    );
    match resolved {
        Resolved::Text { flavor, verbose } => Box::new(PlainPrinter::with_options(
            stderr(),
            PlainOptions {
                flavor,
                verbose,
                ..Default::default()
            },
        )),
        Resolved::Tty => Box::new(TtyDisplay::new()),
        Resolved::Rawjson => Box::new(RawJson::new(stderr())),
        Resolved::Quiet => Box::new(Quiet::new(stderr())),
    }
}

/// What the summary needs from a finished build.
pub fn build_end(started: Instant, outcome: &Result<BuildOutcome>) -> BuildEnd {
    match outcome {
        Ok(o) => BuildEnd {
            total: started.elapsed(),
            succeeded: true,
            exporter_response: o.exporter_response.clone(),
            written: o.written.clone(),
        },
        Err(_) => BuildEnd {
            total: started.elapsed(),
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(flavor: Flavor, verbose: bool) -> Resolved {
        Resolved::Text { flavor, verbose }
    }

    #[test]
    fn auto_follows_ci_then_terminal() {
        use ProgressMode::*;
        // A CI system wins over the (pseudo-)terminal its agent provides.
        assert_eq!(
            resolve(Auto, false, true, Some(CiSystem::Buildkite)),
            text(Flavor::Buildkite, false)
        );
        assert_eq!(
            resolve(Auto, false, true, Some(CiSystem::GitHubActions)),
            text(Flavor::GitHub, false)
        );
        assert_eq!(
            resolve(Auto, false, false, Some(CiSystem::GitLab)),
            text(Flavor::GitLab, false)
        );
        assert_eq!(resolve(Auto, false, true, None), Resolved::Tty);
        assert_eq!(
            resolve(Auto, false, false, None),
            text(Flavor::Plain, false)
        );
        assert_eq!(resolve(Tty, true, true, None), text(Flavor::Plain, true));
        assert_eq!(
            resolve(Auto, true, false, Some(CiSystem::Buildkite)),
            text(Flavor::Buildkite, true)
        );
        // An explicit mode is kept inside CI.
        assert_eq!(
            resolve(Plain, false, true, Some(CiSystem::Buildkite)),
            text(Flavor::Plain, false)
        );
        assert_eq!(resolve(Rawjson, true, false, None), Resolved::Rawjson);
        assert_eq!(resolve(Quiet, true, false, None), Resolved::Quiet);
    }
}
