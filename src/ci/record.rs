//! A display that also folds the events into a [`Tally`] the caller keeps,
//! so a report can be written after the build without asking the renderer.

use std::sync::{Arc, Mutex};

use crate::progress::{BuildEnd, Display, Tally, Update};

/// The tally a [`Recording`] fills, shared with whoever writes the report.
pub type SharedTally = Arc<Mutex<Tally>>;

/// Forwards everything to the real display and tallies the steps.
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

    fn finish(&mut self) {
        self.inner.finish();
    }

    fn summary(&mut self, end: &BuildEnd) {
        self.inner.summary(end);
    }
}
