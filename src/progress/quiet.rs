//! `--progress=quiet`: nothing while the build runs; afterwards the failing
//! steps' last output lines and the Dockerfile excerpt (the error itself
//! is printed by the caller), a line per cache import that found nothing,
//! and the result lines (image digest, files written).

use std::io::Write;

use super::state::BuildState;
use super::summary::{warning_lines, BuildEnd};
use super::{clip_notice, Display, ErrorSource, Update};
use crate::text::escape_controls;

/// Output lines shown per failing step.
const TAIL_LINES: usize = 10;

pub struct Quiet<W: Write> {
    out: W,
    state: BuildState,
}

impl<W: Write> Quiet<W> {
    pub fn new(out: W) -> Self {
        Quiet {
            out,
            state: BuildState::with_output(),
        }
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write + Send> Display for Quiet<W> {
    fn update(&mut self, update: &Update) {
        self.state.update(update);
    }

    fn finish(&mut self) {
        let failed = self
            .state
            .started_steps()
            .filter(|(_, s)| s.failed() && !super::summary::is_missed_cache_import(s));
        for (_, step) in failed {
            let _ = writeln!(self.out, "------");
            let _ = writeln!(self.out, " > {}:", escape_controls(&step.vertex.name));
            // Marked as the step's, as in the tty view: a line of output
            // never starts a line of bkd's (nor a CI log command).
            for line in step.output.last_lines(TAIL_LINES) {
                let _ = writeln!(self.out, "  │ {line}");
            }
            if let Some(limit) = &step.clipped {
                let _ = writeln!(self.out, "NOTE: {}", clip_notice(limit));
            }
            let _ = writeln!(self.out, "------");
        }
        let _ = self.out.flush();
    }

    fn error_sources(&mut self, sources: &[ErrorSource]) {
        for line in sources.iter().flat_map(ErrorSource::excerpt) {
            let _ = writeln!(self.out, "{line}");
        }
        let _ = self.out.flush();
    }

    fn summary(&mut self, end: &BuildEnd) {
        for line in warning_lines(&self.state, end) {
            let _ = writeln!(self.out, "{line}");
        }
        if end.succeeded {
            for line in end.result_lines() {
                let _ = writeln!(self.out, "{line}");
            }
        }
        let _ = self.out.flush();
    }
}
