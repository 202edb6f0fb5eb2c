//! `--progress=tty`: one live line per running step (spinner, elapsed time,
//! bytes of its transfer, last output line), finished steps collapse to a
//! single line printed above, and a failing step's output is shown in full.
//!
//! [`TtyView`] is the whole drawing as a pure function of the events and a
//! clock, so it is tested without a terminal; [`TtyDisplay`] puts it on the
//! terminal with indicatif.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::state::{BuildState, Step};
use super::summary::{summary_lines, BuildEnd};
use super::{clip_notice, format_bytes, Display, Tally, Update};

const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
/// Frame redraw interval of the live display.
const TICK: Duration = Duration::from_millis(100);

/// What the terminal shows, derived from events only.
pub struct TtyView {
    state: BuildState,
    tally: Tally,
    width: usize,
    reported: HashSet<String>,
}

impl TtyView {
    pub fn new(width: usize) -> Self {
        TtyView {
            state: BuildState::default(),
            tally: Tally::default(),
            width: width.max(20),
            reported: HashSet::new(),
        }
    }

    /// Takes one update; returns the lines to print for good above the
    /// live frame (finished steps, warnings, a failing step's output).
    pub fn update(&mut self, update: &Update) -> Vec<String> {
        self.tally.update(update);
        let finished = self.state.update(update);
        let mut out = Vec::new();
        for w in &update.warnings {
            let index = self.state.step(&w.vertex).map_or(0, |s| s.index);
            let mut line = format!("! #{index} WARN: {}", w.short);
            if let Some(at) = w.location() {
                line += &format!(" at {at}");
            }
            // Kept whole: the terminal wraps it.
            out.push(line);
        }
        for digest in finished {
            let Some(step) = self.state.step(&digest) else {
                continue;
            };
            // The daemon may finish a step and run it again (loading the
            // Dockerfile does); it collapses once, unless it later fails.
            if self.reported.contains(&digest) && !step.failed() {
                continue;
            }
            out.extend(self.finished_lines(step));
            self.reported.insert(digest);
        }
        out
    }

    fn finished_lines(&self, step: &Step) -> Vec<String> {
        let v = &step.vertex;
        let (mark, how) = if step.is_canceled() {
            ('-', "canceled".to_string())
        } else if step.failed() {
            ('✘', format!("ERROR: {}", v.error))
        } else if v.cached {
            ('✔', "cached".to_string())
        } else {
            ('✔', format!("{:.1}s", step.duration().as_secs_f64()))
        };
        let mut suffix = format!(" ({how})");
        if !step.failed() {
            if let Some(limit) = &step.clipped {
                suffix += &format!(" (output clipped at {limit})");
            }
            return vec![self.fit_before(&format!("{mark} #{} {}", step.index, v.name), &suffix)];
        }
        let mut lines = vec![format!("{mark} #{} {}{suffix}", step.index, v.name)];
        if step.dropped_lines > 0 {
            lines.push(format!(
                "  │ ... {} earlier lines not kept",
                step.dropped_lines
            ));
        }
        for l in &step.lines {
            lines.push(format!("  │ {l}"));
        }
        if let Some(limit) = &step.clipped {
            lines.push(format!("  NOTE: {}", clip_notice(limit)));
        }
        lines
    }

    /// The live part at time `now`: a header and one line per running step
    /// (plus its last output line).
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
            / TICK.as_millis();
        let spin = SPINNER[(tick % SPINNER.len() as u128) as usize];
        for step in self.state.running() {
            let mut line = format!(
                "{spin} #{} {} {:.1}s",
                step.index,
                step.vertex.name,
                since(step.vertex.started)
            );
            if let Some(s) = step.open_statuses().last() {
                line += &format!(" {}", s.id);
                if s.total > 0 {
                    line += &format!(" {} / {}", format_bytes(s.current), format_bytes(s.total));
                } else if s.current > 0 {
                    line += &format!(" {}", format_bytes(s.current));
                }
            }
            lines.push(self.fit(&line));
            if let Some(last) = step.last_line() {
                lines.push(self.fit(&format!("    > {last}")));
            }
        }
        lines
    }

    pub fn summary(&self, end: &BuildEnd) -> Vec<String> {
        summary_lines(&self.tally, end)
    }

    /// Cuts `line` so that it and `suffix` fit the terminal width; the
    /// suffix is kept whole.
    fn fit_before(&self, line: &str, suffix: &str) -> String {
        let room = self.width.saturating_sub(suffix.chars().count()).max(10);
        let mut s = if line.chars().count() <= room {
            line.to_string()
        } else {
            let mut s: String = line.chars().take(room - 1).collect();
            s.push('…');
            s
        };
        s.push_str(suffix);
        s
    }

    /// Cuts a line to the terminal width.
    fn fit(&self, line: &str) -> String {
        if line.chars().count() <= self.width {
            return line.to_string();
        }
        let mut s: String = line.chars().take(self.width - 1).collect();
        s.push('…');
        s
    }
}

/// The live terminal display.
pub struct TtyDisplay {
    view: Arc<Mutex<TtyView>>,
    bar: ProgressBar,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl TtyDisplay {
    /// Draws on stderr.
    pub fn new() -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{msg}") {
            bar.set_style(style);
        }
        let view = Arc::new(Mutex::new(TtyView::new(terminal_width())));
        let stop = Arc::new(AtomicBool::new(false));
        // Elapsed times and the spinner move even when no event arrives;
        // without a terminal there is nothing to redraw.
        let ticker = if bar.is_hidden() {
            None
        } else {
            let (view, bar, stop) = (view.clone(), bar.clone(), stop.clone());
            std::thread::Builder::new()
                .name("bkd-progress".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let frame = view
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .frame(SystemTime::now());
                        bar.set_message(frame.join("\n"));
                        std::thread::sleep(TICK);
                    }
                })
                .ok()
        };
        TtyDisplay {
            view,
            bar,
            stop,
            ticker,
        }
    }

    fn print(&self, lines: &[String]) {
        for l in lines {
            if self.bar.is_hidden() {
                eprintln!("{l}");
            } else {
                self.bar.println(l);
            }
        }
    }

    fn stop_ticker(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

impl Default for TtyDisplay {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TtyDisplay {
    fn drop(&mut self) {
        self.stop_ticker();
    }
}

impl Display for TtyDisplay {
    fn update(&mut self, update: &Update) {
        let (lines, frame) = {
            let mut view = self.view.lock().unwrap_or_else(PoisonError::into_inner);
            let lines = view.update(update);
            (lines, view.frame(SystemTime::now()))
        };
        self.print(&lines);
        self.bar.set_message(frame.join("\n"));
    }

    fn finish(&mut self) {
        self.stop_ticker();
        self.bar.finish_and_clear();
    }

    fn summary(&mut self, end: &BuildEnd) {
        // The stream may have ended without `finish` (no status stream).
        self.stop_ticker();
        self.bar.finish_and_clear();
        let lines = self
            .view
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .summary(end);
        for l in lines {
            eprintln!("{l}");
        }
    }
}

/// Columns of the terminal on stderr; without one, lines are not cut.
fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ only fills the winsize struct passed to it.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 {
        usize::from(ws.ws_col)
    } else if ok {
        80
    } else {
        usize::MAX
    }
}
