//! Build progress: plain domain events (converted once from the daemon's
//! status stream by `client::status`), and the renderers that draw them.
//! Nothing here knows the generated protocol types.

pub mod cilog;
pub mod events;
pub mod excerpt;
pub mod plain;
pub mod quiet;
pub mod rawjson;
pub mod state;
pub mod summary;
pub mod tty;

pub use events::{
    clip_limit, clip_notice, Log, ProgressGroup, SourceFile, SourceRange, Update, Vertex,
    VertexStatus, Warning,
};
pub use excerpt::ErrorSource;
pub use summary::BuildEnd;

/// A progress display. It is handed every status message, in order
/// ([`Display::update`], which must lose nothing), and asked to draw at a
/// bounded rate ([`Display::refresh`]); the build's end comes in three
/// calls: [`Display::finish`], then [`Display::error_sources`] when the
/// daemon named the failing Dockerfile lines, then [`Display::summary`].
pub trait Display: Send {
    /// Takes one status message.
    fn update(&mut self, update: &Update);
    /// Draws what changed; called at most about ten times a second and
    /// when the stream is idle.
    fn refresh(&mut self) {}
    /// The stream ended; print whatever is left (error summaries).
    fn finish(&mut self);
    /// The source lines the daemon says the build failed at.
    fn error_sources(&mut self, _sources: &[ErrorSource]) {}
    /// The build is over: print the summary (after `finish`).
    fn summary(&mut self, end: &BuildEnd);
}

/// Another display whose every status message is also handed, first, to
/// `tap` (a record of the stream, a tally for a CI report).
pub struct Tapped<F: FnMut(&Update) + Send> {
    inner: Box<dyn Display>,
    tap: F,
}

impl<F: FnMut(&Update) + Send> Tapped<F> {
    pub fn new(inner: Box<dyn Display>, tap: F) -> Self {
        Tapped { inner, tap }
    }
}

impl<F: FnMut(&Update) + Send> Display for Tapped<F> {
    fn update(&mut self, update: &Update) {
        (self.tap)(update);
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

/// Formats a byte count the way BuildKit's plain output does: `204B`,
/// `13.16kB`, `1.98MB`.
pub fn format_bytes(n: i64) -> String {
    const UNITS: [&str; 6] = ["kB", "MB", "GB", "TB", "PB", "EB"];
    if n.abs() < 1000 {
        return format!("{n}B");
    }
    let mut v = n as f64 / 1000.0;
    let mut unit = 0;
    while v.abs() >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.2}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::format_bytes;

    #[test]
    fn bytes_like_buildctl() {
        assert_eq!(format_bytes(2), "2B");
        assert_eq!(format_bytes(999), "999B");
        assert_eq!(format_bytes(13_160), "13.16kB");
        assert_eq!(format_bytes(1_980_000), "1.98MB");
    }
}
