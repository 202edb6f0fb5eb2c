//! `--progress=buildkite`: the plain format, with each step's block opened
//! as a collapsed Buildkite log group (`--- #N name`), the failing step's
//! group expanded (`^^^ +++` after its error line), and every line carrying
//! Buildkite's inline timestamp, taken from the daemon's event times.
//! The drawing itself is [`super::plain::PlainPrinter`] with
//! [`Flavor::Buildkite`].

use std::io::Write;
use std::time::SystemTime;

use super::plain::{Flavor, PlainOptions, PlainPrinter};

/// Opens a collapsed log group.
pub const GROUP: &str = "--- ";
/// Expands the group just printed.
pub const EXPAND_PREVIOUS: &str = "^^^ +++";
/// An expanded group for the failure details.
pub const FAILED_STEPS: &str = "+++ Failed steps";
/// An expanded group for the summary.
pub const SUMMARY: &str = "+++ Build summary";

/// A Buildkite printer writing to `out`.
pub fn printer<W: Write>(out: W, verbose: bool) -> PlainPrinter<W> {
    PlainPrinter::with_options(
        out,
        PlainOptions {
            flavor: Flavor::Buildkite,
            verbose,
        },
    )
}

/// Buildkite's inline timestamp escape (milliseconds since the epoch),
/// which its log viewer shows as the line's time.
pub fn timestamp(t: SystemTime) -> String {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    format!("\x1b_bk;t={ms}\x07")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timestamp_escape() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(timestamp(t), "\x1b_bk;t=1700000000123\x07");
    }
}
