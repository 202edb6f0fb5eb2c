//! A display that also folds the events into a [`BuildState`] the caller
//! keeps, so a report can be written after the build without asking the
//! renderer.

use std::sync::{Arc, Mutex};

use crate::progress::state::BuildState;
use crate::progress::{Display, Tapped, Update};

/// The state a [`recording`] fills (steps and statuses, no output lines),
/// shared with whoever writes the report.
pub type SharedTally = Arc<Mutex<BuildState>>;

/// The display, forwarding everything, with the steps also folded into
/// `tally`.
pub fn recording(inner: Box<dyn Display>, tally: SharedTally) -> Box<dyn Display> {
    Box::new(Tapped::new(inner, move |update: &Update| {
        if let Ok(mut t) = tally.lock() {
            t.update(update);
        }
    }))
}
