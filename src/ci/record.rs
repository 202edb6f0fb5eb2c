//! A display that also folds the events into a [`BuildState`] the caller
//! keeps, so a report can be written after the build without asking the
//! renderer.

use std::sync::{Arc, Mutex};

use crate::progress::state::BuildState;
use crate::progress::{BuildEnd, Display, ErrorSource, Update};

/// The state a [`Recording`] fills (steps and statuses, no output lines),
/// shared with whoever writes the report.
pub type SharedTally = Arc<Mutex<BuildState>>;

/// Forwards everything to the real display and folds the steps.
pub struct Recording {
    inner: Box<dyn Display>,
    tally: SharedTally,
}

impl Recording {
    pub fn new(inner: Box<dyn Display>, tally: SharedTally) -> Recording {
        Recording { inner, tally }
    }
}

impl Display for Recording {
    fn update(&mut self, update: &Update) {
        if let Ok(mut t) = self.tally.lock() {
            t.update(update);
        }
        self.inner.update(update);
    }

    fn refresh(&mut self) {
        self.inner.refresh();
    }

    fn finish(&mut self) {
        self.inner.finish();
    }

    fn error_sources(&mut self, sources: &[ErrorSource]) {
        self.inner.error_sources(sources);
    }

    fn summary(&mut self, end: &BuildEnd) {
        self.inner.summary(end);
    }
}
