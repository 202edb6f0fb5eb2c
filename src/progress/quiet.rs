//! `--progress=quiet`: nothing while the build runs; afterwards the failing
//! steps' last output lines (the error itself is printed by the caller) and
//! the result lines (image digest, files written).

use std::io::Write;

use super::state::BuildState;
use super::summary::BuildEnd;
use super::{clip_notice, Display, Update};

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
            state: BuildState::default(),
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
        for step in self.state.steps().filter(|s| s.failed()) {
            let _ = writeln!(self.out, "------");
            let _ = writeln!(self.out, " > {}:", step.vertex.name);
            let skip = step.lines.len().saturating_sub(TAIL_LINES);
            for line in &step.lines[skip..] {
                let _ = writeln!(self.out, "{line}");
            }
            if let Some(limit) = &step.clipped {
                let _ = writeln!(self.out, "NOTE: {}", clip_notice(limit));
            }
            let _ = writeln!(self.out, "------");
        }
        let _ = self.out.flush();
    }

    fn summary(&mut self, end: &BuildEnd) {
        if !end.succeeded {
            return;
        }
        for line in end.result_lines() {
            let _ = writeln!(self.out, "{line}");
        }
        let _ = self.out.flush();
    }
}
