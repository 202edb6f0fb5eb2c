//! `--progress=tty`: one live line per running step (spinner, elapsed time,
//! bytes of its transfer, last output line) under a header; a finished
//! step collapses to one line printed above for good, and a failing step's
//! output is printed in full.
//!
//! [`TtyView`] is the drawing as a pure function of the events and a clock,
//! so it is tested without a terminal; [`TtyDisplay`] puts it on the
//! terminal. The live area is redrawn at most ten times a second (the
//! caller's refresh rate, enforced here too) and never taller than the
//! terminal, so what reaches the terminal is the steps' lines printed once
//! plus a bounded frame per redraw, whatever the steps print. Interrupted,
//! it leaves a final frame naming the steps that were running.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime};

use super::state::{BuildState, Step};
use super::summary::{summary_lines, warning_lines, BuildEnd};
use super::{clip_notice, format_bytes, Display, ErrorSource, Update};
use crate::text::escape_controls;

const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
/// Shortest time between two redraws.
const REDRAW: Duration = Duration::from_millis(100);
/// How long a step stays finished before it collapses.
pub const SETTLE: Duration = Duration::from_millis(100);

/// What the terminal shows, derived from events only.
pub struct TtyView {
    state: BuildState,
    width: usize,
    height: usize,
    /// Steps finished (or warned) since the last redraw, in order.
    finished: Vec<usize>,
    warnings: Vec<(usize, usize)>,
    /// The end of the run each step was last reported for.
    reported: HashMap<usize, Option<SystemTime>>,
}

impl TtyView {
    pub fn new(width: usize) -> Self {
        Self::with_size(width, usize::MAX)
    }

    pub fn with_size(width: usize, height: usize) -> Self {
        TtyView {
            state: BuildState::with_output(),
            width: width.max(20),
            height: height.max(3),
            finished: Vec::new(),
            warnings: Vec::new(),
            reported: HashMap::new(),
        }
    }

    /// Takes one message; nothing is drawn until [`TtyView::take_lines`].
    pub fn update(&mut self, update: &Update) {
        let changes = self.state.update(update);
        for i in changes.finished {
            if !self.finished.contains(&i) {
                self.finished.push(i);
            }
        }
        self.warnings.extend(changes.warnings);
    }

    /// The lines to print for good above the live area at `now`: warnings,
    /// steps that finished (collapsed), a failing step's whole output. A
    /// step collapses once it has stayed finished for [`SETTLE`] (the daemon
    /// restarts some steps at once, e.g. loading the Dockerfile), or at
    /// the end (`all`); one that ran again after it collapsed is reported
    /// again.
    pub fn take_lines(&mut self, now: SystemTime, all: bool) -> Vec<String> {
        let mut out = Vec::new();
        for (i, w) in std::mem::take(&mut self.warnings) {
            let step = self.state.step(i);
            let Some(w) = step.warnings.get(w) else {
                continue;
            };
            let mut line = format!("! #{} WARN: {}", step.index, escape_controls(&w.short));
            if let Some(at) = w.location() {
                line += &format!(" at {}", escape_controls(&at));
            }
            // Kept whole: the terminal wraps it.
            out.push(line);
        }
        let mut unsettled = Vec::new();
        for i in std::mem::take(&mut self.finished) {
            let step = self.state.step(i);
            // Restarted (and still running) since: it shows live instead.
            if !step.is_done() || step.hidden {
                continue;
            }
            let end = step.last_interval().and_then(|iv| iv.stop);
            let settled = end.is_none_or(|e| now.duration_since(e).map_or(true, |d| d >= SETTLE));
            if !all && !settled {
                unsettled.push(i);
                continue;
            }
            if self.reported.get(&i) == Some(&end) {
                continue;
            }
            self.reported.insert(i, end);
            out.extend(self.finished_lines(step));
        }
        self.finished = unsettled;
        out
    }

    fn finished_lines(&self, step: &Step) -> Vec<String> {
        let v = &step.vertex;
        let name = escape_controls(&v.name);
        let (mark, how) = if step.is_canceled() {
            ('-', "canceled".to_string())
        } else if step.failed() {
            ('✘', format!("ERROR: {}", escape_controls(&v.error)))
        } else if v.cached {
            ('✔', "cached".to_string())
        } else {
            let took = step.duration(SystemTime::UNIX_EPOCH);
            ('✔', format!("{:.1}s", took.as_secs_f64()))
        };
        let mut suffix = format!(" ({how})");
        if !step.failed() || super::summary::is_missed_cache_import(step) {
            if let Some(limit) = &step.clipped {
                suffix += &format!(" (output clipped at {limit})");
            }
            return vec![self.fit_before(&format!("{mark} #{} {name}", step.index), &suffix)];
        }
        let mut lines = vec![format!("{mark} #{} {name}{suffix}", step.index)];
        if step.output.dropped_lines > 0 {
            lines.push(format!(
                "  │ ... {} earlier lines not kept",
                step.output.dropped_lines
            ));
        }
        for l in step.output.lines() {
            lines.push(format!("  │ {l}"));
        }
        if let Some(limit) = &step.clipped {
            lines.push(format!("  NOTE: {}", clip_notice(limit)));
        }
        lines
    }

    /// The live part at time `now`: a header and one line per running step
    /// (plus its last output line), no taller than the terminal.
    pub fn frame(&self, now: SystemTime) -> Vec<String> {
        let (done, known) = self.state.progress();
        let since = |t: Option<SystemTime>| {
            t.and_then(|t| now.duration_since(t).ok())
                .unwrap_or_default()
                .as_secs_f64()
        };
        let mut lines = vec![format!(
            "[+] Building {:.1}s ({done}/{known})",
            since(self.state.started)
        )];
        let tick = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
            / REDRAW.as_millis();
        let spin = SPINNER[(tick % SPINNER.len() as u128) as usize];
        // The frame stays a line short of the terminal, so drawing it
        // never scrolls its own first line away.
        let room = self.height.saturating_sub(2).max(1);
        let running: Vec<&Step> = self
            .state
            .running()
            .map(|(_, s)| s)
            .filter(|s| !s.hidden)
            .collect();
        let mut body = Vec::new();
        for step in &running {
            let mut line = format!(
                "{spin} #{} {} {:.1}s",
                step.index,
                escape_controls(&step.vertex.name),
                step.duration(now).as_secs_f64()
            );
            if let Some(s) = step.open_statuses().last() {
                line += &format!(" {}", escape_controls(&s.id));
                if s.total > 0 {
                    line += &format!(" {} / {}", format_bytes(s.current), format_bytes(s.total));
                } else if s.current > 0 {
                    line += &format!(" {}", format_bytes(s.current));
                }
            }
            body.push(self.fit(&line));
            // Output lines only while there is room for every step.
            if running.len() * 2 <= room {
                if let Some(last) = step.output.last_line() {
                    body.push(self.fit(&format!("    > {}", printable(&last))));
                }
            }
        }
        if body.len() > room {
            let hidden = body.len() - room + 1;
            body.truncate(room - 1);
            body.push(format!("  ... and {hidden} more running"));
        }
        lines.extend(body);
        lines
    }

    /// What stays on screen when the build is interrupted: each running
    /// step, marked.
    pub fn interrupted_lines(&self, now: SystemTime) -> Vec<String> {
        self.state
            .running()
            .filter(|(_, s)| !s.hidden)
            .map(|(_, s)| {
                self.fit_before(
                    &format!("- #{} {}", s.index, escape_controls(&s.vertex.name)),
                    &format!(" (interrupted after {:.1}s)", s.duration(now).as_secs_f64()),
                )
            })
            .collect()
    }

    pub fn summary(&self, end: &BuildEnd) -> Vec<String> {
        let mut lines = warning_lines(&self.state, end);
        lines.extend(summary_lines(&self.state, end));
        lines
    }

    /// Cuts `line` so that it and `suffix` fit the terminal width; the
    /// suffix is kept whole.
    fn fit_before(&self, line: &str, suffix: &str) -> String {
        let room = self.width.saturating_sub(suffix.chars().count()).max(10);
        let mut s = cut(line, room);
        s.push_str(suffix);
        s
    }

    /// Cuts a line to the terminal width (one column spare, so the
    /// terminal never wraps a frame line).
    fn fit(&self, line: &str) -> String {
        cut(line, self.width.saturating_sub(1).max(10))
    }
}

fn cut(line: &str, room: usize) -> String {
    if line.chars().count() <= room {
        return line.to_string();
    }
    let mut s: String = line.chars().take(room.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// A step's output line shown inside the frame: control characters (a
/// progress bar's `\r`, colours) would move the cursor under the frame.
fn printable(line: &str) -> String {
    let line = line.rsplit('\r').find(|s| !s.is_empty()).unwrap_or("");
    escape_controls(line)
}

/// The live terminal display on stderr.
pub struct TtyDisplay {
    view: TtyView,
    out: Box<dyn Write + Send>,
    /// Whether stderr is a terminal (else only the lasting lines print).
    live: bool,
    /// Frame lines on screen below the lasting output.
    drawn: usize,
    last_draw: Option<Instant>,
    finished: bool,
}

impl TtyDisplay {
    /// Draws on stderr.
    pub fn new() -> Self {
        let (width, height, live) = match terminal_size() {
            Some((w, h)) => (w, h, true),
            None => (usize::MAX, usize::MAX, false),
        };
        Self::with_output(
            Box::new(std::io::BufWriter::with_capacity(
                1 << 16,
                std::io::stderr(),
            )),
            width,
            height,
            live,
        )
    }

    /// Draws on `out` as on a terminal of `width` x `height`.
    pub fn with_output(
        out: Box<dyn Write + Send>,
        width: usize,
        height: usize,
        live: bool,
    ) -> Self {
        TtyDisplay {
            view: TtyView::with_size(width, height),
            out,
            live,
            drawn: 0,
            last_draw: None,
            finished: false,
        }
    }

    /// Replaces the frame on screen with lasting `lines` and, unless
    /// `final_frame`, a fresh frame.
    fn draw(&mut self, lines: &[String], final_frame: bool) {
        let mut buf = String::new();
        if self.live {
            buf.push_str("\x1b[?25l");
            if self.drawn > 0 {
                // Back to the frame's first line, and clear it and below.
                buf += &format!("\x1b[{}A", self.drawn);
            }
            buf.push_str("\x1b[J");
        }
        for l in lines {
            buf.push_str(l);
            buf.push('\n');
        }
        self.drawn = 0;
        if self.live {
            if !final_frame {
                for l in self.view.frame(SystemTime::now()) {
                    buf.push_str(&l);
                    buf.push_str("\x1b[K\n");
                    self.drawn += 1;
                }
            }
            buf.push_str("\x1b[?25h");
        }
        let _ = self.out.write_all(buf.as_bytes());
        let _ = self.out.flush();
        self.last_draw = Some(Instant::now());
    }
}

impl Default for TtyDisplay {
    fn default() -> Self {
        Self::new()
    }
}

impl Display for TtyDisplay {
    fn update(&mut self, update: &Update) {
        self.view.update(update);
    }

    fn refresh(&mut self) {
        if self.last_draw.is_some_and(|t| t.elapsed() < REDRAW) {
            return;
        }
        let lines = self.view.take_lines(SystemTime::now(), false);
        if !self.live && lines.is_empty() {
            return;
        }
        self.draw(&lines, false);
    }

    fn finish(&mut self) {
        self.finished = true;
        let lines = self.view.take_lines(SystemTime::now(), true);
        self.draw(&lines, true);
    }

    fn error_sources(&mut self, sources: &[ErrorSource]) {
        let lines: Vec<String> = sources.iter().flat_map(ErrorSource::excerpt).collect();
        self.draw(&lines, true);
    }

    fn summary(&mut self, end: &BuildEnd) {
        self.finished = true;
        let mut lines = self.view.take_lines(SystemTime::now(), true);
        lines.extend(self.view.summary(end));
        self.draw(&lines, true);
    }
}

impl Drop for TtyDisplay {
    /// Cut short (Ctrl-C): the frame gives way to the steps that were
    /// running, and the cursor is shown again.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut lines = self.view.take_lines(SystemTime::now(), true);
        lines.extend(self.view.interrupted_lines(SystemTime::now()));
        self.draw(&lines, true);
    }
}

/// Columns and rows of the terminal on stderr, if it is one.
fn terminal_size() -> Option<(usize, usize)> {
    // SAFETY: TIOCGWINSZ only fills the winsize struct passed to it.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if !ok {
        return None;
    }
    let cols = if ws.ws_col > 0 { ws.ws_col } else { 80 };
    let rows = if ws.ws_row > 0 { ws.ws_row } else { 24 };
    Some((usize::from(cols), usize::from(rows)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::{Log, Vertex};
    use std::sync::{Arc, Mutex};

    fn at(ms: u64) -> Option<SystemTime> {
        Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_000_000 + ms))
    }

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn running(d: &str) -> Update {
        Update {
            vertexes: vec![Vertex {
                digest: d.into(),
                name: format!("RUN {d}"),
                started: at(0),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// 50,000 lines from a step cost the terminal those lines once, plus
    /// frames at a bounded rate: not a redraw per line.
    #[test]
    fn terminal_bytes_stay_bounded() {
        let sink = Shared::default();
        let mut d = TtyDisplay::with_output(Box::new(sink.clone()), 100, 30, true);
        d.update(&running("a"));
        let mut logged = 0;
        for n in 0..50_000u64 {
            let data = format!("line {n}\n");
            logged += data.len();
            d.update(&Update {
                logs: vec![Log {
                    vertex: "a".into(),
                    timestamp: at(n),
                    stream: 1,
                    data: data.into(),
                }],
                ..Default::default()
            });
            d.refresh();
        }
        d.update(&Update {
            vertexes: vec![Vertex {
                digest: "a".into(),
                name: "RUN a".into(),
                started: at(0),
                completed: at(60_000),
                error: "exit code: 1".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        d.finish();
        let written = sink.0.lock().map(|b| b.len()).unwrap_or(0);
        assert!(
            written < logged * 2 + 10_000,
            "{written} bytes for {logged}"
        );
        let text = String::from_utf8_lossy(&sink.0.lock().map(|b| b.clone()).unwrap_or_default())
            .into_owned();
        assert!(text.contains("│ line 49999\n"));
        assert!(text.contains("│ line 0\n"));
    }

    #[test]
    fn interrupted_leaves_the_running_steps_and_no_frame() {
        let sink = Shared::default();
        {
            let mut d = TtyDisplay::with_output(Box::new(sink.clone()), 100, 30, true);
            d.update(&running("a"));
            d.refresh();
        }
        let text = String::from_utf8_lossy(&sink.0.lock().map(|b| b.clone()).unwrap_or_default())
            .into_owned();
        let last = text.rsplit("\x1b[J").next().unwrap_or("");
        assert!(
            last.starts_with("- #1 RUN a (interrupted after "),
            "{last:?}"
        );
        assert!(!last.contains("[+] Building"), "{last:?}");
        assert!(last.ends_with("\x1b[?25h"), "{last:?}");
    }

    #[test]
    fn frame_fits_the_terminal() {
        let mut v = TtyView::with_size(40, 6);
        for d in ["a", "b", "c", "d", "e", "f", "g"] {
            v.update(&running(d));
        }
        let frame = v.frame(at(500).unwrap_or(SystemTime::UNIX_EPOCH));
        assert!(frame.len() <= 5, "{frame:?}");
        assert_eq!(frame.len(), 5, "{frame:?}");
        assert!(frame.iter().all(|l| l.chars().count() < 40), "{frame:?}");
        assert!(
            frame.last().is_some_and(|l| l.contains("more running")),
            "{frame:?}"
        );
    }
}
