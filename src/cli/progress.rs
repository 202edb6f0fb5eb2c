//! `--progress`: the mode the user asked for, resolved into a display.

use std::io::IsTerminal;
use std::time::Instant;

use clap::ValueEnum;

use crate::client::solve::BuildOutcome;
use crate::error::Result;
use crate::progress::plain::{PlainOptions, PlainPrinter};
use crate::progress::quiet::Quiet;
use crate::progress::rawjson::RawJson;
use crate::progress::tty::TtyDisplay;
use crate::progress::{buildkite, BuildEnd, Display};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// tty on a terminal, buildkite when BUILDKITE=true, else plain
    Auto,
    /// buildctl-compatible plain text
    Plain,
    /// live lines per running step; finished steps collapse
    Tty,
    /// plain text in Buildkite log groups, with timestamps
    Buildkite,
    /// one JSON status message per line, like buildctl --progress=rawjson
    Rawjson,
    /// only errors and the final result
    Quiet,
}

/// What `auto` and `--debug` come to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    Plain { verbose: bool },
    Tty,
    Buildkite { verbose: bool },
    Rawjson,
    Quiet,
}

/// Resolves the mode: `auto` looks at stderr and `BUILDKITE`; `--debug`
/// turns the text modes into their verbose form (a live tty view would
/// fight with the daemon log interleaved on stderr).
pub fn resolve(mode: ProgressMode, debug: bool, stderr_is_tty: bool, buildkite: bool) -> Resolved {
    let mode = match mode {
        ProgressMode::Auto if stderr_is_tty => ProgressMode::Tty,
        ProgressMode::Auto if buildkite => ProgressMode::Buildkite,
        ProgressMode::Auto => ProgressMode::Plain,
        m => m,
    };
    match mode {
        ProgressMode::Tty if debug => Resolved::Plain { verbose: true },
        ProgressMode::Tty => Resolved::Tty,
        ProgressMode::Buildkite => Resolved::Buildkite { verbose: debug },
        ProgressMode::Rawjson => Resolved::Rawjson,
        ProgressMode::Quiet => Resolved::Quiet,
        ProgressMode::Auto | ProgressMode::Plain => Resolved::Plain { verbose: debug },
    }
}

/// The display for `mode`, drawing on stderr.
pub fn display_for(mode: ProgressMode, debug: bool) -> Box<dyn Display> {
    let on_buildkite = std::env::var("BUILDKITE").is_ok_and(|v| v == "true");
    // Renderers flush after each batch of events; without a buffer every
    // log line would be its own write(2).
    let stderr = || std::io::BufWriter::with_capacity(1 << 16, std::io::stderr());
    match resolve(mode, debug, std::io::stderr().is_terminal(), on_buildkite) {
        Resolved::Plain { verbose } => Box::new(PlainPrinter::with_options(
            stderr(),
            PlainOptions {
                verbose,
                ..Default::default()
            },
        )),
        Resolved::Tty => Box::new(TtyDisplay::new()),
        Resolved::Buildkite { verbose } => Box::new(buildkite::printer(stderr(), verbose)),
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

    #[test]
    fn auto_follows_terminal_then_buildkite() {
        use ProgressMode::*;
        assert_eq!(resolve(Auto, false, true, true), Resolved::Tty);
        assert_eq!(
            resolve(Auto, false, false, true),
            Resolved::Buildkite { verbose: false }
        );
        assert_eq!(
            resolve(Auto, false, false, false),
            Resolved::Plain { verbose: false }
        );
        assert_eq!(
            resolve(Tty, true, true, false),
            Resolved::Plain { verbose: true }
        );
        assert_eq!(resolve(Rawjson, true, false, false), Resolved::Rawjson);
        assert_eq!(resolve(Quiet, true, false, false), Resolved::Quiet);
    }
}
