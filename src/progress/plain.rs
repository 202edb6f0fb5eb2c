//! The plain renderer, laid out as `buildctl --progress=plain`: blocks
//! headed `#N name`, status lines, log lines with seconds since the step
//! started, `DONE`/`CACHED`/`ERROR`/`CANCELED` completion lines, then the
//! failing steps' last log lines.
//!
//! Steps are numbered in the order they are first printed, which is the
//! order they start. Of several running steps one is current: its block
//! goes on while the others' output waits, and the printer moves to
//! another step when the current one finishes, when a waiting step has
//! waited 10 seconds, or when the current one has had its fair share of
//! time, as buildctl does; so each step's lines mostly stay together.
//!
//! The same printer serves the CI log views ([`Flavor`]): each step's
//! block is one collapsible group (Buildkite `---`, GitHub Actions
//! `::group::`, GitLab `section_start`). There the current step keeps the
//! log until it finishes and the other steps' output waits (then prints
//! as their own groups), so a step is one group; the failing step's group
//! is expanded where the CI system allows it. `--debug` adds digests,
//! inputs, every status update and warnings in full.
//!
//! Time comes from a [`Clock`]: the wall clock live, or the events' own
//! times when a recorded stream is replayed.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::time::{Duration, SystemTime};

use super::cilog;
use super::state::BuildState;
use super::summary::{summary_lines, warning_lines};
use super::{
    clip_limit, clip_notice, format_bytes, BuildEnd, Display, ErrorSource, Log, Update,
    VertexStatus, Warning,
};
use crate::text::escape_controls;

/// Log lines kept per step for the error summary.
const TAIL_LINES: usize = 10;
/// Longest line kept for the error summary.
const TAIL_LINE_BYTES: usize = 4096;
/// An unfinished status line is reprinted after this much progress...
const MIN_PROGRESS_DELTA: f64 = 0.05;
/// ...or after this much time.
const MIN_TIME_DELTA: Duration = Duration::from_secs(5);
/// A waiting step is shown after this long.
const MAX_DELAY: Duration = Duration::from_secs(10);
/// The current step's base share of time before another step is shown.
const ANTI_FLICKER: Duration = Duration::from_secs(5);
/// Output a waiting step may hold before it is shown anyway, so memory
/// stays bounded whatever the steps print.
const HELD_BYTES: usize = 1024 * 1024;
/// Output all waiting steps together may hold: past it, the one holding
/// most is shown (many steps each just under [`HELD_BYTES`] cannot add up).
const HELD_TOTAL: usize = 16 * 1024 * 1024;

/// How the plain format is dressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavor {
    /// buildctl's plain format.
    #[default]
    Plain,
    /// Buildkite log groups and timestamps.
    Buildkite,
    /// GitHub Actions `::group::` / `::endgroup::`.
    GitHub,
    /// GitLab CI `section_start` / `section_end`.
    GitLab,
}

impl Flavor {
    fn groups(self) -> bool {
        self != Flavor::Plain
    }
}

/// Where the printer's "now" comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Clock {
    /// The system clock (a live build).
    #[default]
    Wall,
    /// The latest time any event carried (a replayed stream).
    Events,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct PlainOptions {
    pub flavor: Flavor,
    /// Digests, inputs, every status update, warnings in full.
    pub verbose: bool,
    pub clock: Clock,
}

/// A piece of a step's output waiting to be printed.
#[derive(Debug)]
struct Piece {
    text: Vec<u8>,
    /// Starts a new line (`text` then begins with its time); otherwise it
    /// continues the step's unfinished line.
    starts_line: bool,
    ends_line: bool,
    at: Option<SystemTime>,
}

/// The printer's side of one step.
#[derive(Debug, Default)]
struct Printing {
    /// `#N`; 0 until first printed.
    number: usize,
    /// Events since it was last left, and since when.
    count: usize,
    waiting_since: Option<SystemTime>,
    status_updates: Vec<String>,
    warnings_printed: usize,
    pending: VecDeque<Piece>,
    pending_bytes: usize,
    /// Its output ends in an unfinished line, which began with this time.
    line_open: bool,
    open_prefix: String,
    tail: VecDeque<String>,
    tail_open: bool,
    described: bool,
    /// Groups opened for it so far (GitLab section names).
    groups: usize,
}

/// Accumulates events per step and prints them in buildctl's plain format.
pub struct PlainPrinter<W: Write> {
    out: W,
    options: PlainOptions,
    state: BuildState,
    printing: Vec<Printing>,
    /// Steps with something not printed yet, in order of first change.
    updates: Vec<usize>,
    current: Option<usize>,
    next_number: usize,
    printed_any: bool,
    /// Last printed progress per status id.
    last_status: HashMap<String, (i64, SystemTime)>,
    /// The step whose unfinished line ends the output so far.
    open_line: Option<usize>,
    /// A CI group is open.
    group_open: bool,
    failure_group: bool,
}

impl<W: Write> PlainPrinter<W> {
    pub fn new(out: W) -> Self {
        Self::with_options(out, PlainOptions::default())
    }

    pub fn with_options(out: W, options: PlainOptions) -> Self {
        PlainPrinter {
            out,
            options,
            state: BuildState::default(),
            printing: Vec::new(),
            updates: Vec::new(),
            current: None,
            next_number: 0,
            printed_any: false,
            last_status: HashMap::new(),
            open_line: None,
            group_open: false,
            failure_group: false,
        }
    }

    /// Gives back the writer, e.g. to inspect a test buffer.
    pub fn into_inner(self) -> W {
        self.out
    }

    fn now(&self) -> SystemTime {
        match self.options.clock {
            Clock::Wall => SystemTime::now(),
            Clock::Events => self.state.latest.unwrap_or(SystemTime::UNIX_EPOCH),
        }
    }

    /// The line prefix of the flavor: Buildkite's timestamp.
    fn prefix(&self, at: Option<SystemTime>) -> String {
        if self.options.flavor != Flavor::Buildkite {
            return String::new();
        }
        match at.or(self.state.latest) {
            Some(t) => cilog::buildkite_timestamp(t),
            None => String::new(),
        }
    }

    /// Ends an unfinished output line.
    fn close_line(&mut self) {
        if self.open_line.take().is_some() {
            let _ = writeln!(self.out);
        }
    }

    /// Writes one whole line.
    fn line(&mut self, at: Option<SystemTime>, text: &str) {
        self.close_line();
        let prefix = self.prefix(at);
        let _ = writeln!(self.out, "{prefix}{text}");
        self.printed_any = true;
    }

    fn touch(&mut self, i: usize, now: SystemTime) {
        let p = &mut self.printing[i];
        if p.count == 0 {
            p.waiting_since = Some(now);
        }
        p.count += 1;
    }

    fn mark(&mut self, i: usize) {
        if !self.updates.contains(&i) {
            self.updates.push(i);
        }
    }

    /// Splits a log chunk into pieces of lines, each new line prefixed with
    /// its seconds since the step's latest run started.
    fn take_log(&mut self, i: usize, log: &Log) {
        if log.data.is_empty() {
            return;
        }
        let started = self.state.step(i).last_interval().map(|iv| iv.start);
        let secs = match (started, log.timestamp) {
            (Some(s), Some(t)) => match t.duration_since(s) {
                Ok(d) => d.as_secs_f64(),
                Err(e) => -e.duration().as_secs_f64(),
            },
            _ => 0.0,
        };
        let prec = if secs < 10.0 {
            3
        } else if secs < 100.0 {
            2
        } else {
            1
        };
        let prefix = format!("{secs:.prec$} ");
        let data = &log.data[..];
        let parts: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
        let last = parts.len() - 1;
        let p = &mut self.printing[i];
        for (k, seg) in parts.into_iter().enumerate() {
            let ends_line = k < last;
            if !ends_line && seg.is_empty() {
                break;
            }
            if k == 0 && p.line_open {
                // The step's unfinished line goes on.
                match p.pending.back_mut() {
                    Some(prev) if !prev.ends_line => prev.text.extend_from_slice(seg),
                    _ => p.pending.push_back(Piece {
                        text: seg.to_vec(),
                        starts_line: false,
                        ends_line,
                        at: log.timestamp,
                    }),
                }
                if let Some(prev) = p.pending.back_mut() {
                    prev.ends_line = ends_line;
                }
                if p.tail_open {
                    if let Some(t) = p.tail.back_mut() {
                        push_capped(t, seg);
                    }
                }
            } else {
                let mut text = prefix.clone().into_bytes();
                text.extend_from_slice(seg);
                if p.tail.len() == TAIL_LINES {
                    p.tail.pop_front();
                }
                let mut t = prefix.clone();
                push_capped(&mut t, seg);
                p.tail.push_back(t);
                p.open_prefix.clone_from(&prefix);
                p.pending.push_back(Piece {
                    text,
                    starts_line: true,
                    ends_line,
                    at: log.timestamp,
                });
            }
            p.pending_bytes += seg.len();
            p.line_open = !ends_line;
            p.tail_open = !ends_line;
        }
        if let Some(limit) = clip_limit(data) {
            let text = format!("NOTE: {}", clip_notice(&limit));
            if p.tail.len() == TAIL_LINES {
                p.tail.pop_front();
            }
            p.tail.push_back(text.clone());
            p.tail_open = false;
            p.pending.push_back(Piece {
                text: text.into_bytes(),
                starts_line: true,
                ends_line: true,
                at: log.timestamp,
            });
            p.line_open = false;
        }
    }

    /// The block header of step `i`.
    fn open_block(&mut self, i: usize) {
        let step = self.state.step(i);
        let (number, name) = (self.printing[i].number, escape_controls(&step.vertex.name));
        let at = step.last_interval().map(|iv| iv.start);
        let failed = step.failed();
        let digest = step.vertex.digest.clone();
        let inputs = step.vertex.inputs.clone();
        match self.options.flavor {
            Flavor::Plain => {
                if self.printed_any {
                    self.close_line();
                    let _ = writeln!(self.out);
                }
                self.line(at, &format!("#{number} {name}"));
            }
            Flavor::Buildkite => {
                self.line(at, &format!("{}#{number} {name}", cilog::BUILDKITE_GROUP))
            }
            Flavor::GitHub => self.line(at, &cilog::github_group(&format!("#{number} {name}"))),
            Flavor::GitLab => {
                let p = &mut self.printing[i];
                p.groups += 1;
                let section = format!("bkd_step_{number}_{}", p.groups);
                let ts = unix_seconds(at.or(self.state.latest));
                let title = format!("#{number} {name}");
                self.line(
                    at,
                    &cilog::gitlab_section_start(ts, &section, !failed, &title),
                );
            }
        }
        self.group_open = self.options.flavor.groups();
        if self.options.verbose && !self.printing[i].described {
            self.printing[i].described = true;
            let inputs: Vec<String> = inputs
                .iter()
                .map(
                    |d| match self.state.step_of(d).map(|j| self.printing[j].number) {
                        Some(n) if n > 0 => format!("#{n} ({})", escape_controls(d)),
                        _ => escape_controls(d),
                    },
                )
                .collect();
            let digest = escape_controls(&digest);
            self.line(at, &format!("#{number} digest: {digest}"));
            if !inputs.is_empty() {
                self.line(at, &format!("#{number} inputs: {}", inputs.join(", ")));
            }
        }
    }

    /// Ends the open CI group of step `i`.
    fn close_group(&mut self, i: usize, at: Option<SystemTime>) {
        if !self.group_open {
            return;
        }
        self.group_open = false;
        let number = self.printing[i].number;
        match self.options.flavor {
            Flavor::Plain | Flavor::Buildkite => {}
            Flavor::GitHub => self.line(at, cilog::GITHUB_END_GROUP),
            Flavor::GitLab => {
                let section = format!("bkd_step_{number}_{}", self.printing[i].groups);
                let ts = unix_seconds(at.or(self.state.latest));
                self.line(at, &cilog::gitlab_section_end(ts, &section));
            }
        }
    }

    /// Leaves the current step's block before it finished.
    fn leave(&mut self, i: usize) {
        self.close_line();
        let p = &mut self.printing[i];
        p.count = 0;
        let number = p.number;
        if self.options.flavor == Flavor::Plain {
            self.line(None, &format!("#{number} ..."));
        }
        self.close_group(i, None);
    }

    fn print_status(&mut self, number: usize, s: &VertexStatus) -> bool {
        let now = s.timestamp.unwrap_or(SystemTime::UNIX_EPOCH);
        if let (Some(&(cur, at)), None) = (self.last_status.get(&s.id), s.completed) {
            let progress = if s.total > 0 {
                s.current.saturating_sub(cur) as f64 / s.total as f64
            } else {
                0.0
            };
            let waited = now.duration_since(at).unwrap_or_default();
            if !self.options.verbose && progress < MIN_PROGRESS_DELTA && waited < MIN_TIME_DELTA {
                return false;
            }
        }
        self.last_status.insert(s.id.clone(), (s.current, now));
        let mut line = format!("#{number} {}", escape_controls(&s.id));
        if s.total != 0 {
            line += &format!(" {} / {}", format_bytes(s.current), format_bytes(s.total));
        } else if s.current != 0 {
            line += &format!(" {}", format_bytes(s.current));
        }
        if let Some(started) = s.started {
            let end = s.completed.unwrap_or(now);
            let secs = end
                .duration_since(started)
                .unwrap_or_default()
                .as_secs_f64();
            if secs > 0.01 {
                line += &format!(" {secs:.1}s");
            }
        }
        if s.completed.is_some() {
            line += " done";
        }
        if self.options.verbose {
            line += &format!(" [current={} total={}]", s.current, s.total);
        }
        self.line(s.timestamp, &line);
        s.completed.is_none()
    }

    fn print_warning(&mut self, number: usize, w: &Warning) {
        let at = None;
        self.line(
            at,
            &format!("#{number} WARN: {}", escape_controls(&w.short)),
        );
        if !self.options.verbose {
            return;
        }
        if let Some(loc) = w.location() {
            self.line(at, &format!("#{number}   at {}", escape_controls(&loc)));
        }
        for l in w.source_lines() {
            self.line(at, &format!("#{number}   {}", escape_controls(&l)));
        }
        for d in &w.detail {
            self.line(at, &format!("#{number}   {}", escape_controls(d)));
        }
        if !w.url.is_empty() {
            self.line(at, &format!("#{number}   see {}", escape_controls(&w.url)));
        }
    }

    fn print_piece(&mut self, i: usize, piece: Piece) {
        let number = self.printing[i].number;
        if piece.starts_line || self.open_line != Some(i) {
            self.close_line();
            let prefix = self.prefix(piece.at);
            let _ = write!(self.out, "{prefix}#{number} ");
            if !piece.starts_line {
                let _ = write!(self.out, "{}", self.printing[i].open_prefix);
            }
        }
        let _ = self.out.write_all(&piece.text);
        self.printed_any = true;
        if piece.ends_line {
            let _ = writeln!(self.out);
            self.open_line = None;
        } else {
            self.open_line = Some(i);
        }
    }

    /// Prints what step `i` has pending, opening its block if it is not
    /// the current one, and its completion if it finished.
    fn print_step(&mut self, i: usize) {
        if self.printing[i].number == 0 {
            self.next_number += 1;
            self.printing[i].number = self.next_number;
        }
        let number = self.printing[i].number;
        if self.current != Some(i) {
            if let Some(old) = self.current {
                self.leave(old);
            }
            self.open_block(i);
        }
        let updated = std::mem::take(&mut self.printing[i].status_updates);
        let statuses: Vec<VertexStatus> = self
            .state
            .step(i)
            .statuses
            .iter()
            .filter(|s| updated.contains(&s.id))
            .cloned()
            .collect();
        let mut open_status = false;
        for s in &statuses {
            open_status |= self.print_status(number, s);
        }
        let warnings: Vec<Warning> =
            self.state.step(i).warnings[self.printing[i].warnings_printed..].to_vec();
        self.printing[i].warnings_printed += warnings.len();
        for w in &warnings {
            self.print_warning(number, w);
        }
        while let Some(piece) = self.printing[i].pending.pop_front() {
            self.print_piece(i, piece);
        }
        self.printing[i].pending_bytes = 0;
        self.current = Some(i);
        let step = self.state.step(i);
        if step.is_done() && !open_status {
            let v = &step.vertex;
            let at = step.last_interval().and_then(|iv| iv.stop);
            let failed = step.failed();
            let line = if step.is_canceled() {
                format!("#{number} CANCELED")
            } else if failed {
                format!("#{number} ERROR: {}", escape_controls(&v.error))
            } else if v.cached {
                format!("#{number} CACHED")
            } else if step.intervals().is_empty() {
                format!("#{number} DONE")
            } else {
                let took = step.duration(SystemTime::UNIX_EPOCH);
                format!("#{number} DONE {:.1}s", took.as_secs_f64())
            };
            self.close_line();
            self.line(at, &line);
            if failed && self.options.flavor == Flavor::Buildkite {
                self.line(at, cilog::BUILDKITE_EXPAND_PREVIOUS);
            }
            self.close_group(i, at);
            self.current = None;
            self.printing[i].count = 0;
        }
        self.updates.retain(|u| *u != i);
    }

    /// One redraw, as buildctl's printer does it: finished steps first (in
    /// the order they finished), then at most one running step.
    fn print(&mut self, now: SystemTime) {
        let shown = |s: &Self, i: usize| !s.state.step(i).hidden;
        let mut completed: Vec<usize> = Vec::new();
        let mut rest: Vec<usize> = Vec::new();
        for &i in &self.updates {
            if !shown(self, i) {
                continue;
            }
            if self.state.step(i).is_done() {
                completed.push(i);
            } else {
                rest.push(i);
            }
        }
        let current = self.current;
        if self.options.flavor.groups() {
            return self.print_whole_steps(current, completed, rest);
        }
        // A waiting step holding too much output is shown now.
        if let Some(big) = self.holding_too_much(rest.iter().copied(), current) {
            self.print_step(big);
            return;
        }
        if let Some(c) = current.filter(|c| completed.contains(c)) {
            self.print_step(c);
        }
        completed.sort_by_key(|&i| self.state.step(i).last_interval().and_then(|iv| iv.stop));
        for &i in &completed {
            if Some(i) != current {
                self.print_step(i);
            }
        }
        if rest.is_empty() {
            if current.is_some_and(|c| self.state.step(c).is_running()) {
                return;
            }
            // Make an open step current.
            let open = self
                .state
                .running()
                .map(|(i, _)| i)
                .find(|&i| shown(self, i));
            if let Some(i) = open {
                self.print_step(i);
            }
            return;
        }
        if let Some(c) = current.filter(|c| rest.contains(c)) {
            self.print_step(c);
        }
        // Which step to show: the busiest, or one waiting too long.
        let mut candidates = rest.clone();
        if let Some(c) = current {
            if !candidates.contains(&c) && !completed.contains(&c) {
                candidates.push(c);
            }
        }
        struct Stat {
            step: usize,
            waited: Duration,
            speed: f64,
            over: bool,
        }
        let stats: Vec<Stat> = candidates
            .iter()
            .filter_map(|&i| {
                let p = &self.printing[i];
                let waited = now.duration_since(p.waiting_since?).unwrap_or_default();
                let speed = p.count as f64 / waited.as_secs_f64().max(1e-3);
                Some(Stat {
                    step: i,
                    waited,
                    speed,
                    over: waited > MAX_DELAY && Some(i) != current,
                })
            })
            .collect();
        let sum: f64 = stats.iter().map(|s| s.speed).sum();
        // On a tie the step touched last wins: buildctl times each step's
        // wait from its own first event, so the last one of a message
        // counts as the busiest.
        let mut best: Option<&Stat> = None;
        for s in &stats {
            if s.over || best.is_none_or(|b| b.speed <= s.speed) {
                best = Some(s);
            }
        }
        let Some(best) = best else {
            return;
        };
        if current.is_none_or(|c| completed.contains(&c)) {
            self.print_step(best.step);
            return;
        }
        if let Some(s) = stats.iter().find(|s| s.over) {
            self.print_step(s.step);
            return;
        }
        let Some(cur) = stats.iter().find(|s| Some(s.step) == current) else {
            return;
        };
        let share = if sum > 0.0 { cur.speed / sum } else { 0.0 };
        if share < 1.0 && ANTI_FLICKER.as_secs_f64() / (1.0 - share) < cur.waited.as_secs_f64() {
            self.print_step(best.step);
        }
    }

    /// A waiting step (not `current`) that holds more than [`HELD_BYTES`],
    /// or, when the waiting steps together hold more than [`HELD_TOTAL`],
    /// the one holding most.
    fn holding_too_much(
        &self,
        waiting: impl Iterator<Item = usize>,
        current: Option<usize>,
    ) -> Option<usize> {
        let mut total = 0;
        let mut most: Option<(usize, usize)> = None;
        for i in waiting.filter(|&i| Some(i) != current) {
            let held = self.printing[i].pending_bytes;
            if held > HELD_BYTES {
                return Some(i);
            }
            total += held;
            if most.is_none_or(|(_, m)| held > m) {
                most = Some((i, held));
            }
        }
        most.filter(|_| total > HELD_TOTAL).map(|(i, _)| i)
    }

    /// The CI views: the current step keeps the log until it finishes;
    /// then finished steps print whole, in the order they finished, and
    /// the earliest started running step becomes current.
    fn print_whole_steps(
        &mut self,
        current: Option<usize>,
        mut completed: Vec<usize>,
        rest: Vec<usize>,
    ) {
        if let Some(c) = current.filter(|c| self.state.step(*c).is_running()) {
            if rest.contains(&c) {
                self.print_step(c);
            }
            if let Some(i) = self.holding_too_much(self.updates.iter().copied(), Some(c)) {
                self.print_step(i);
            }
            return;
        }
        if let Some(c) = current.filter(|c| completed.contains(c)) {
            self.print_step(c);
        }
        completed.sort_by_key(|&i| self.state.step(i).last_interval().and_then(|iv| iv.stop));
        for i in completed {
            if Some(i) != current {
                self.print_step(i);
            }
        }
        if self.current.is_some() {
            return;
        }
        let next = self
            .state
            .running()
            .map(|(i, _)| i)
            .find(|&i| !self.state.step(i).hidden);
        if let Some(i) = next {
            self.print_step(i);
        }
    }

    /// The failing steps' last lines, after the build.
    fn print_failures(&mut self) {
        let failed: Vec<usize> = self
            .state
            .started_steps()
            .filter(|(_, s)| s.failed())
            .map(|(i, _)| i)
            .collect();
        for i in failed {
            self.open_failure_group();
            let name = escape_controls(&self.state.step(i).vertex.name);
            self.line(None, "------");
            self.line(None, &format!(" > {name}:"));
            let tail: Vec<String> = self.printing[i].tail.iter().cloned().collect();
            for l in tail {
                self.line(None, &l);
            }
            self.line(None, "------");
        }
    }

    fn open_failure_group(&mut self) {
        if self.options.flavor == Flavor::Buildkite && !self.failure_group {
            self.failure_group = true;
            self.line(None, cilog::BUILDKITE_FAILED_STEPS);
        }
    }
}

/// Appends a line's bytes to a kept line, up to [`TAIL_LINE_BYTES`].
fn push_capped(line: &mut String, seg: &[u8]) {
    if line.len() >= TAIL_LINE_BYTES {
        return;
    }
    let room = TAIL_LINE_BYTES - line.len();
    let text = String::from_utf8_lossy(&seg[..seg.len().min(room)]);
    line.push_str(&text);
}

fn unix_seconds(t: Option<SystemTime>) -> u64 {
    t.unwrap_or_else(SystemTime::now)
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl<W: Write + Send> Display for PlainPrinter<W> {
    fn update(&mut self, update: &Update) {
        let changes = self.state.update(update);
        if self.printing.len() < self.state.len() {
            self.printing
                .resize_with(self.state.len(), Printing::default);
        }
        let now = self.now();
        for &i in &changes.vertexes {
            self.touch(i, now);
            self.mark(i);
        }
        for (i, id) in &changes.statuses {
            let p = &mut self.printing[*i];
            if !p.status_updates.contains(id) {
                p.status_updates.push(id.clone());
            }
            self.touch(*i, now);
            self.mark(*i);
        }
        // Unlike buildctl, a warning for a step already printed as done
        // prints it again rather than never.
        for (i, _) in &changes.warnings {
            self.touch(*i, now);
            self.mark(*i);
        }
        for (i, n) in &changes.logs {
            self.take_log(*i, &update.logs[*n]);
            self.touch(*i, now);
            self.mark(*i);
        }
    }

    fn refresh(&mut self) {
        let now = self.now();
        self.print(now);
        let _ = self.out.flush();
    }

    fn finish(&mut self) {
        let now = self.now();
        self.print(now);
        // Whatever is still held (a build cut short, a waiting step) is
        // printed rather than lost.
        loop {
            let held = self.updates.iter().copied().find(|&i| {
                let p = &self.printing[i];
                !self.state.step(i).hidden
                    && (!p.pending.is_empty() || !p.status_updates.is_empty())
            });
            match held {
                Some(i) => self.print_step(i),
                None => break,
            }
        }
        self.close_line();
        if let Some(c) = self.current {
            self.close_group(c, None);
        }
        self.print_failures();
        let _ = self.out.flush();
    }

    fn error_sources(&mut self, sources: &[ErrorSource]) {
        let lines: Vec<String> = sources.iter().flat_map(ErrorSource::excerpt).collect();
        if lines.is_empty() {
            return;
        }
        if self.options.flavor == Flavor::Buildkite && !self.failure_group {
            self.failure_group = true;
            self.line(None, cilog::BUILDKITE_BUILD_ERROR);
        }
        for l in lines {
            self.line(None, &l);
        }
        let _ = self.out.flush();
    }

    fn summary(&mut self, end: &BuildEnd) {
        let mut lines = warning_lines(&self.state, end);
        lines.extend(summary_lines(&self.state, end));
        if lines.is_empty() {
            return;
        }
        match self.options.flavor {
            Flavor::Buildkite => self.line(None, cilog::BUILDKITE_SUMMARY),
            _ => {
                if self.printed_any {
                    self.close_line();
                    let _ = writeln!(self.out);
                }
            }
        }
        for line in lines {
            self.line(None, &line);
        }
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::{Log, Vertex};

    fn at(ms: u64) -> Option<SystemTime> {
        Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_000_000 + ms))
    }

    fn vertex(
        d: &str,
        name: &str,
        started: Option<SystemTime>,
        completed: Option<SystemTime>,
    ) -> Vertex {
        Vertex {
            digest: d.into(),
            name: name.into(),
            started,
            completed,
            ..Default::default()
        }
    }

    fn log(d: &str, ms: u64, data: &str) -> Log {
        Log {
            vertex: d.into(),
            timestamp: at(ms),
            stream: 1,
            data: data.to_string().into(),
        }
    }

    fn render_with(flavor: Flavor, updates: &[Update]) -> String {
        let mut p = PlainPrinter::with_options(
            Vec::new(),
            PlainOptions {
                flavor,
                clock: Clock::Events,
                ..Default::default()
            },
        );
        for u in updates {
            p.update(u);
            p.refresh();
        }
        p.finish();
        String::from_utf8(p.into_inner()).expect("utf8")
    }

    fn render(updates: &[Update]) -> String {
        render_with(Flavor::Plain, updates)
    }

    fn vs(v: Vec<Vertex>) -> Update {
        Update {
            vertexes: v,
            ..Default::default()
        }
    }

    fn logs(l: Vec<Log>) -> Update {
        Update {
            logs: l,
            ..Default::default()
        }
    }

    #[test]
    fn prints_blocks_logs_and_completion() {
        let out = render(&[
            vs(vec![vertex("a", "[1/2] RUN echo hi", None, None)]),
            vs(vec![vertex("a", "[1/2] RUN echo hi", at(0), None)]),
            logs(vec![log("a", 231, "hi\nthere\n")]),
            vs(vec![vertex("a", "[1/2] RUN echo hi", at(0), at(300))]),
            vs(vec![Vertex {
                cached: true,
                ..vertex("b", "[2/2] COPY x y", at(400), at(400))
            }]),
        ]);
        assert_eq!(
            out,
            "#1 [1/2] RUN echo hi\n#1 0.231 hi\n#1 0.231 there\n#1 DONE 0.3s\n\n#2 [2/2] COPY x y\n#2 CACHED\n"
        );
    }

    #[test]
    fn error_summary_lists_last_lines() {
        let failed = Vertex {
            error: "process did not complete successfully: exit code: 3".into(),
            ..vertex("a", "RUN x", at(0), at(500))
        };
        let out = render(&[
            vs(vec![vertex("a", "RUN x", at(0), None)]),
            logs(vec![log("a", 100, "boom\n")]),
            vs(vec![failed]),
        ]);
        assert!(
            out.contains("#1 ERROR: process did not complete successfully: exit code: 3\n"),
            "{out}"
        );
        assert!(
            out.ends_with("------\n > RUN x:\n0.100 boom\n------\n"),
            "{out}"
        );
    }

    /// A step restarted in the same message is still running, and its
    /// DONE time covers both runs.
    #[test]
    fn restarted_step_is_closed_with_its_whole_time() {
        let name = "[internal] load build definition from Dockerfile";
        let out = render(&[
            vs(vec![
                vertex("a", name, at(0), at(1)),
                vertex("a", name, at(2), None),
            ]),
            vs(vec![vertex("a", name, at(2), at(40))]),
            vs(vec![vertex("a", name, at(600), None)]),
            vs(vec![vertex("a", name, at(600), at(3000))]),
        ]);
        assert!(out.contains("#1 DONE 2.4s\n"), "{out}");
        assert!(!out.contains("#1 ...\n"), "{out}");
        assert_eq!(out.lines().last(), Some("#1 DONE 2.4s"), "{out}");
    }

    /// Parallel steps keep their lines together: the current step's block
    /// goes on while the others wait, as buildctl prints them.
    #[test]
    fn parallel_steps_stay_in_blocks() {
        let mut ups = vec![vs(vec![
            vertex("a", "A", at(0), None),
            vertex("b", "B", at(1), None),
        ])];
        for n in 0..6u64 {
            ups.push(logs(vec![
                log("a", 10 + n * 100, &format!("a{n}\n")),
                log("b", 11 + n * 100, &format!("b{n}\n")),
            ]));
        }
        ups.push(vs(vec![vertex("a", "A", at(0), at(700))]));
        ups.push(vs(vec![vertex("b", "B", at(1), at(710))]));
        let out = render(&ups);
        let headers = out.lines().filter(|l| *l == "#1 A" || *l == "#2 B").count();
        assert!(headers <= 3, "{out}");
        for n in 0..6 {
            assert!(out.contains(&format!(" a{n}\n")), "{out}");
            assert!(out.contains(&format!(" b{n}\n")), "{out}");
        }
        assert!(out.contains("#1 DONE 0.7s"), "{out}");
        assert!(out.contains("#2 DONE 0.7s"), "{out}");
    }

    #[test]
    fn steps_are_numbered_when_they_start() {
        let out = render(&[
            vs(vec![
                vertex("leaf", "leaf", None, None),
                vertex("base", "base", None, None),
            ]),
            vs(vec![vertex("base", "base", at(0), at(10))]),
            vs(vec![vertex("leaf", "leaf", at(20), at(30))]),
        ]);
        assert_eq!(out, "#1 base\n#1 DONE 0.0s\n\n#2 leaf\n#2 DONE 0.0s\n");
    }

    #[test]
    fn unfinished_lines_print_as_they_come() {
        let out = render(&[
            vs(vec![vertex("a", "A", at(0), None)]),
            logs(vec![log("a", 10, "50%")]),
            logs(vec![log("a", 20, " 100%\nnext\n")]),
            vs(vec![vertex("a", "A", at(0), at(30))]),
        ]);
        assert_eq!(
            out,
            "#1 A\n#1 0.010 50% 100%\n#1 0.020 next\n#1 DONE 0.0s\n"
        );
    }

    #[test]
    fn transfer_status_lines() {
        let out = render(&[
            vs(vec![vertex(
                "a",
                "[internal] load build context",
                at(0),
                None,
            )]),
            Update {
                statuses: vec![VertexStatus {
                    id: "transferring context:".into(),
                    vertex: "a".into(),
                    current: 1_980_000,
                    timestamp: at(40),
                    started: at(0),
                    completed: at(40),
                    ..Default::default()
                }],
                vertexes: vec![vertex("a", "[internal] load build context", at(0), at(40))],
                ..Default::default()
            },
        ]);
        assert_eq!(out, "#1 [internal] load build context\n#1 transferring context: 1.98MB 0.0s done\n#1 DONE 0.0s\n");
    }

    /// In the CI views each step is one group, also when steps run side by
    /// side; the failing one is expanded.
    #[test]
    fn ci_views_print_one_group_per_step() {
        let mut ups = vec![vs(vec![
            vertex("a", "A", at(0), None),
            vertex("b", "B", at(1), None),
        ])];
        for n in 0..5u64 {
            ups.push(logs(vec![
                log("a", 10 + n * 100, &format!("a{n}\n")),
                log("b", 11 + n * 100, &format!("b{n}\n")),
            ]));
        }
        ups.push(vs(vec![Vertex {
            error: "exit code: 1".into(),
            ..vertex("b", "B", at(1), at(600))
        }]));
        ups.push(vs(vec![vertex("a", "A", at(0), at(700))]));
        for (flavor, open) in [
            (Flavor::Buildkite, "--- #"),
            (Flavor::GitHub, "::group::#"),
            (Flavor::GitLab, "section_start:"),
        ] {
            let out = render_with(flavor, &ups);
            assert_eq!(out.matches(open).count(), 2, "{out}");
            let a: Vec<&str> = out.lines().filter(|l| l.contains(" a")).collect();
            assert_eq!(a.len(), 5, "{out}");
            if flavor == Flavor::Buildkite {
                assert!(
                    out.contains("#2 ERROR: exit code: 1\n\x1b_bk;t=1000600\x07^^^ +++\n"),
                    "{out}"
                );
            }
            if flavor == Flavor::GitHub {
                assert_eq!(out.matches("::endgroup::").count(), 2, "{out}");
            }
            if flavor == Flavor::GitLab {
                assert!(out.contains("[collapsed=false]\r\x1b[0K#2 B"), "{out}");
                assert_eq!(out.matches("section_end:").count(), 2, "{out}");
            }
        }
    }

    /// Many waiting steps each holding just under the per-step bound do
    /// not add up: the one holding most is shown once all hold too much.
    #[test]
    fn held_output_of_all_waiting_steps_is_bounded() {
        for flavor in [Flavor::Plain, Flavor::Buildkite] {
            let mut p = PlainPrinter::with_options(
                std::io::sink(),
                PlainOptions {
                    flavor,
                    clock: Clock::Events,
                    ..Default::default()
                },
            );
            let names: Vec<String> = (0..60).map(|n| format!("s{n}")).collect();
            p.update(&vs(names
                .iter()
                .enumerate()
                .map(|(n, d)| vertex(d, d, at(n as u64), None))
                .collect()));
            let line = "x".repeat(999) + "\n";
            for round in 0..900u64 {
                for d in &names {
                    p.update(&logs(vec![log(d, round, &line)]));
                }
                p.refresh();
                let held: usize = p.printing.iter().map(|x| x.pending_bytes).sum();
                assert!(
                    held <= HELD_TOTAL + 2 * HELD_BYTES,
                    "{flavor:?}: {held} bytes held"
                );
            }
        }
    }

    #[test]
    fn held_output_is_bounded() {
        let mut p = PlainPrinter::with_options(
            std::io::sink(),
            PlainOptions {
                flavor: Flavor::Buildkite,
                clock: Clock::Events,
                ..Default::default()
            },
        );
        p.update(&vs(vec![
            vertex("a", "A", at(0), None),
            vertex("b", "B", at(1), None),
        ]));
        let line = "x".repeat(999) + "\n";
        for n in 0..5000u64 {
            p.update(&logs(vec![log("b", n, &line)]));
            p.refresh();
            assert!(p.printing.iter().map(|x| x.pending_bytes).sum::<usize>() <= HELD_BYTES + 1000);
        }
    }
}
