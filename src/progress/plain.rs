//! The plain renderer, compatible with `buildctl --progress=plain`: blocks
//! headed `#N name`, status lines, log lines with seconds since the step
//! started, and `DONE`/`CACHED`/`ERROR` completion lines, then an error
//! summary with the failing steps' last log lines.
//!
//! The same printer serves `--progress=buildkite` (each step block headed by
//! a Buildkite log group, lines timestamped) and `--debug` (digests, inputs,
//! every status update, warnings with their source location).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::time::{Duration, SystemTime};

use super::summary::{latest_time, summary_lines};
use super::{
    buildkite, clip_limit, clip_notice, format_bytes, BuildEnd, Display, Tally, Update, Vertex,
    VertexStatus, Warning,
};

/// Log lines kept per step for the error summary.
const TAIL_LINES: usize = 10;
/// An unfinished status line is reprinted after this much progress...
const MIN_PROGRESS_DELTA: f64 = 0.05;
/// ...or after this much time.
const MIN_TIME_DELTA: Duration = Duration::from_secs(5);

/// Bytes of a line not ended yet, and when its first chunk arrived.
type PartialLine = (Vec<u8>, Option<SystemTime>);

#[derive(Default)]
struct StepState {
    vertex: Vertex,
    index: usize,
    intervals: Vec<(SystemTime, SystemTime)>,
    /// Unfinished last line, per output stream.
    partial: HashMap<i64, PartialLine>,
    tail: VecDeque<String>,
    completion_printed: bool,
    open_statuses: HashSet<String>,
    last_status: HashMap<String, (i64, SystemTime)>,
}

/// How the plain format is dressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavor {
    /// Exactly buildctl's plain format.
    #[default]
    Plain,
    /// Buildkite log groups and timestamps.
    Buildkite,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct PlainOptions {
    pub flavor: Flavor,
    /// Digests, inputs, every status update, warnings in full.
    pub verbose: bool,
}

/// Writes one line, prefixed as the flavor wants.
fn emit<W: Write>(out: &mut W, prefix: &str, text: &str) {
    let _ = writeln!(out, "{prefix}{text}");
}

/// Accumulates events per step and prints them in buildctl's plain format.
pub struct PlainPrinter<W: Write> {
    out: W,
    options: PlainOptions,
    /// Line prefix: the timestamp of the current update for Buildkite.
    prefix: String,
    tally: Tally,
    steps: HashMap<String, StepState>,
    order: Vec<String>,
    next_index: usize,
    current: Option<String>,
    printed_any: bool,
}

impl<W: Write> PlainPrinter<W> {
    pub fn new(out: W) -> Self {
        Self::with_options(out, PlainOptions::default())
    }

    pub fn with_options(out: W, options: PlainOptions) -> Self {
        PlainPrinter {
            out,
            options,
            prefix: String::new(),
            tally: Tally::default(),
            steps: HashMap::new(),
            order: Vec::new(),
            next_index: 0,
            current: None,
            printed_any: false,
        }
    }

    /// Gives back the writer, e.g. to inspect a test buffer.
    pub fn into_inner(self) -> W {
        self.out
    }

    fn step(&mut self, digest: &str) -> &mut StepState {
        if !self.steps.contains_key(digest) {
            self.order.push(digest.to_string());
        }
        self.steps.entry(digest.to_string()).or_default()
    }

    /// Starts (or continues) the block of `digest`, numbering it on first use.
    fn enter(&mut self, digest: &str) {
        if self.current.as_deref() == Some(digest) {
            return;
        }
        let buildkite = self.options.flavor == Flavor::Buildkite;
        if let Some(prev) = self.current.take() {
            if let Some(p) = self.steps.get(&prev) {
                if !buildkite {
                    emit(&mut self.out, &self.prefix, &format!("#{} ...", p.index));
                }
            }
        }
        if self.printed_any && !buildkite {
            let _ = writeln!(self.out);
        }
        self.printed_any = true;
        let next = self.next_index + 1;
        let step = self.step(digest);
        if step.index == 0 {
            step.index = next;
        }
        let (index, name) = (step.index, step.vertex.name.clone());
        let (own_digest, inputs) = (step.vertex.digest.clone(), step.vertex.inputs.clone());
        let first = index == next;
        if first {
            self.next_index = next;
        }
        let header = if buildkite {
            format!("{}#{index} {name}", buildkite::GROUP)
        } else {
            format!("#{index} {name}")
        };
        emit(&mut self.out, &self.prefix, &header);
        if self.options.verbose && first {
            emit(
                &mut self.out,
                &self.prefix,
                &format!("#{index} digest: {own_digest}"),
            );
            if !inputs.is_empty() {
                let named: Vec<String> = inputs
                    .iter()
                    .map(|d| match self.steps.get(d) {
                        Some(s) if s.index > 0 => format!("#{} ({d})", s.index),
                        _ => d.clone(),
                    })
                    .collect();
                emit(
                    &mut self.out,
                    &self.prefix,
                    &format!("#{index} inputs: {}", named.join(", ")),
                );
            }
        }
        self.current = Some(digest.to_string());
    }

    fn print_status(&mut self, s: &VertexStatus) {
        let Some(step) = self.steps.get_mut(&s.vertex) else {
            return;
        };
        let now = s.timestamp.unwrap_or(SystemTime::UNIX_EPOCH);
        if s.completed.is_none() {
            step.open_statuses.insert(s.id.clone());
            if let Some((cur, at)) = step.last_status.get(&s.id) {
                let progress = if s.total > 0 {
                    (s.current - cur) as f64 / s.total as f64
                } else {
                    0.0
                };
                let waited = now.duration_since(*at).unwrap_or_default();
                if !self.options.verbose && progress < MIN_PROGRESS_DELTA && waited < MIN_TIME_DELTA
                {
                    return;
                }
            }
        } else {
            step.open_statuses.remove(&s.id);
        }
        step.last_status.insert(s.id.clone(), (s.current, now));
        let index = step.index;
        let mut line = format!("#{index} {}", s.id);
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
        emit(&mut self.out, &self.prefix, &line);
    }

    fn print_warning(&mut self, index: usize, w: &Warning) {
        emit(
            &mut self.out,
            &self.prefix,
            &format!("#{index} WARN: {}", w.short),
        );
        if !self.options.verbose {
            return;
        }
        if let Some(at) = w.location() {
            emit(&mut self.out, &self.prefix, &format!("#{index}   at {at}"));
        }
        for line in w.source_lines() {
            emit(&mut self.out, &self.prefix, &format!("#{index}   {line}"));
        }
        for d in &w.detail {
            emit(&mut self.out, &self.prefix, &format!("#{index}   {d}"));
        }
        if !w.url.is_empty() {
            emit(
                &mut self.out,
                &self.prefix,
                &format!("#{index}   see {}", w.url),
            );
        }
    }

    fn print_log(&mut self, digest: &str, stream: i64, data: &[u8], at: Option<SystemTime>) {
        let Some(step) = self.steps.get_mut(digest) else {
            return;
        };
        let partial = step.partial.entry(stream).or_default();
        let mut rest = data;
        let mut lines = Vec::new();
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            if partial.0.is_empty() {
                partial.1 = at;
            }
            partial.0.extend_from_slice(&rest[..pos]);
            lines.push((std::mem::take(&mut partial.0), partial.1.take()));
            rest = &rest[pos + 1..];
        }
        if !rest.is_empty() {
            if partial.0.is_empty() {
                partial.1 = at;
            }
            partial.0.extend_from_slice(rest);
        }
        for (line, time) in lines {
            self.write_log_line(digest, &line, time);
        }
        if let Some(limit) = clip_limit(data) {
            if let Some(step) = self.steps.get_mut(digest) {
                let text = format!("NOTE: {}", clip_notice(&limit));
                emit(
                    &mut self.out,
                    &self.prefix,
                    &format!("#{} {text}", step.index),
                );
                if step.tail.len() == TAIL_LINES {
                    step.tail.pop_front();
                }
                step.tail.push_back(text);
            }
        }
    }

    fn write_log_line(&mut self, digest: &str, line: &[u8], at: Option<SystemTime>) {
        let Some(step) = self.steps.get_mut(digest) else {
            return;
        };
        let secs = match (step.vertex.started, at) {
            (Some(start), Some(at)) => at.duration_since(start).unwrap_or_default().as_secs_f64(),
            _ => 0.0,
        };
        let prec = if secs < 10.0 {
            3
        } else if secs < 100.0 {
            2
        } else {
            1
        };
        let text = format!("{secs:.prec$} {}", String::from_utf8_lossy(line));
        emit(
            &mut self.out,
            &self.prefix,
            &format!("#{} {text}", step.index),
        );
        if step.tail.len() == TAIL_LINES {
            step.tail.pop_front();
        }
        step.tail.push_back(text);
    }

    fn flush_partial(&mut self, digest: &str) {
        let Some(step) = self.steps.get_mut(digest) else {
            return;
        };
        let mut pending: Vec<(i64, PartialLine)> = step
            .partial
            .drain()
            .filter(|(_, p)| !p.0.is_empty())
            .collect();
        pending.sort_by_key(|(stream, _)| *stream);
        for (_, (line, at)) in pending {
            self.write_log_line(digest, &line, at);
        }
    }

    fn maybe_complete(&mut self, digest: &str) {
        let Some(step) = self.steps.get(digest) else {
            return;
        };
        if step.vertex.completed.is_none()
            || step.completion_printed
            || !step.open_statuses.is_empty()
        {
            return;
        }
        self.flush_partial(digest);
        let Some(step) = self.steps.get_mut(digest) else {
            return;
        };
        step.completion_printed = true;
        let index = step.index;
        let v = &step.vertex;
        let line = if !v.error.is_empty() {
            if v.error.ends_with("context canceled") {
                "CANCELED".to_string()
            } else {
                format!("ERROR: {}", v.error)
            }
        } else if v.cached {
            "CACHED".to_string()
        } else {
            let total: Duration = merge_intervals(&step.intervals)
                .iter()
                .map(|(a, b)| b.duration_since(*a).unwrap_or_default())
                .sum();
            format!("DONE {:.1}s", total.as_secs_f64())
        };
        let failed = line.starts_with("ERROR");
        emit(&mut self.out, &self.prefix, &format!("#{index} {line}"));
        if failed && self.options.flavor == Flavor::Buildkite {
            emit(&mut self.out, &self.prefix, buildkite::EXPAND_PREVIOUS);
        }
        if self.current.as_deref() == Some(digest) {
            self.current = None;
        }
    }
}

fn merge_intervals(list: &[(SystemTime, SystemTime)]) -> Vec<(SystemTime, SystemTime)> {
    let mut v = list.to_vec();
    v.sort();
    let mut out: Vec<(SystemTime, SystemTime)> = Vec::new();
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1 => {
                if b > last.1 {
                    last.1 = b;
                }
            }
            _ => out.push((a, b)),
        }
    }
    out
}

impl<W: Write + Send> Display for PlainPrinter<W> {
    fn update(&mut self, update: &Update) {
        self.tally.update(update);
        if self.options.flavor == Flavor::Buildkite {
            if let Some(t) = latest_time(update) {
                self.prefix = buildkite::timestamp(t);
            }
        }
        // Steps touched by this message, in order of first mention.
        let mut touched: Vec<String> = Vec::new();
        let touch = |d: &str, touched: &mut Vec<String>| {
            if !touched.iter().any(|t| t == d) {
                touched.push(d.to_string());
            }
        };
        for v in &update.vertexes {
            let step = self.step(&v.digest);
            if v.is_cache_resend_of(&step.vertex) {
                continue;
            }
            let was_completed = step.vertex.completed;
            if let (Some(s), Some(c)) = (v.started, v.completed) {
                if !step.intervals.contains(&(s, c)) {
                    step.intervals.push((s, c));
                }
            }
            if v.completed != was_completed || v.completed.is_none() {
                step.completion_printed = false;
            }
            step.vertex = v.clone();
            if v.started.is_some() {
                touch(&v.digest, &mut touched);
            }
        }
        for s in &update.statuses {
            if s.started.is_some()
                && self
                    .steps
                    .get(&s.vertex)
                    .is_some_and(|st| st.vertex.started.is_some())
            {
                touch(&s.vertex, &mut touched);
            }
        }
        for l in &update.logs {
            if self.steps.contains_key(&l.vertex) {
                touch(&l.vertex, &mut touched);
            }
        }
        for w in &update.warnings {
            if self.steps.contains_key(&w.vertex) {
                touch(&w.vertex, &mut touched);
            }
        }
        for digest in touched {
            let has_output = update
                .statuses
                .iter()
                .any(|s| s.vertex == digest && s.started.is_some())
                || update.logs.iter().any(|l| l.vertex == digest)
                || update.warnings.iter().any(|w| w.vertex == digest);
            let needs_completion = self
                .steps
                .get(&digest)
                .is_some_and(|s| s.vertex.completed.is_some() && !s.completion_printed);
            let is_new = self.steps.get(&digest).is_some_and(|s| s.index == 0);
            if !has_output && !needs_completion && !is_new {
                continue;
            }
            self.enter(&digest);
            for s in update
                .statuses
                .iter()
                .filter(|s| s.vertex == digest && s.started.is_some())
            {
                self.print_status(s);
            }
            for w in update.warnings.iter().filter(|w| w.vertex == digest) {
                if let Some(index) = self.steps.get(&digest).map(|s| s.index) {
                    self.print_warning(index, w);
                }
            }
            for l in update.logs.iter().filter(|l| l.vertex == digest) {
                self.print_log(&digest, l.stream, &l.data, l.timestamp);
            }
            self.maybe_complete(&digest);
        }
        let _ = self.out.flush();
    }

    fn finish(&mut self) {
        for digest in self.order.clone() {
            self.flush_partial(&digest);
        }
        let mut header_printed = false;
        for digest in &self.order {
            let Some(step) = self.steps.get(digest) else {
                continue;
            };
            let v = &step.vertex;
            if v.error.is_empty() || v.error.ends_with("context canceled") {
                continue;
            }
            if self.options.flavor == Flavor::Buildkite && !header_printed {
                emit(&mut self.out, &self.prefix, buildkite::FAILED_STEPS);
                header_printed = true;
            }
            emit(&mut self.out, &self.prefix, "------");
            emit(&mut self.out, &self.prefix, &format!(" > {}:", v.name));
            for line in &step.tail {
                emit(&mut self.out, &self.prefix, line);
            }
            emit(&mut self.out, &self.prefix, "------");
        }
        let _ = self.out.flush();
    }

    fn summary(&mut self, end: &BuildEnd) {
        let lines = summary_lines(&self.tally, end);
        if lines.is_empty() {
            return;
        }
        match self.options.flavor {
            Flavor::Plain => {
                if self.printed_any {
                    let _ = writeln!(self.out);
                }
            }
            Flavor::Buildkite => emit(&mut self.out, &self.prefix, buildkite::SUMMARY),
        }
        for line in lines {
            emit(&mut self.out, &self.prefix, &line);
        }
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Log;

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

    fn render(updates: &[Update]) -> String {
        let mut p = PlainPrinter::new(Vec::new());
        for u in updates {
            p.update(u);
        }
        p.finish();
        String::from_utf8(p.into_inner()).expect("utf8")
    }

    #[test]
    fn prints_blocks_logs_and_completion() {
        let out = render(&[
            Update {
                vertexes: vec![vertex("a", "[1/2] RUN echo hi", None, None)],
                ..Default::default()
            },
            Update {
                vertexes: vec![vertex("a", "[1/2] RUN echo hi", at(0), None)],
                ..Default::default()
            },
            Update {
                logs: vec![Log {
                    vertex: "a".into(),
                    timestamp: at(231),
                    stream: 1,
                    data: "hi\nthere\n".into(),
                }],
                ..Default::default()
            },
            Update {
                vertexes: vec![vertex("a", "[1/2] RUN echo hi", at(0), at(300))],
                ..Default::default()
            },
            Update {
                vertexes: vec![Vertex {
                    cached: true,
                    ..vertex("b", "[2/2] COPY x y", at(400), at(400))
                }],
                ..Default::default()
            },
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
            Update {
                vertexes: vec![vertex("a", "RUN x", at(0), None)],
                ..Default::default()
            },
            Update {
                logs: vec![Log {
                    vertex: "a".into(),
                    timestamp: at(100),
                    stream: 2,
                    data: "boom\n".into(),
                }],
                ..Default::default()
            },
            Update {
                vertexes: vec![failed],
                ..Default::default()
            },
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

    #[test]
    fn switching_unfinished_steps_marks_continuation() {
        let out = render(&[
            Update {
                vertexes: vec![
                    vertex("a", "A", at(0), None),
                    vertex("b", "B", at(10), None),
                ],
                ..Default::default()
            },
            Update {
                logs: vec![Log {
                    vertex: "a".into(),
                    timestamp: at(20),
                    stream: 1,
                    data: "x\n".into(),
                }],
                ..Default::default()
            },
        ]);
        assert_eq!(out, "#1 A\n#1 ...\n\n#2 B\n#2 ...\n\n#1 A\n#1 0.020 x\n");
    }

    #[test]
    fn transfer_status_lines() {
        let out = render(&[
            Update {
                vertexes: vec![vertex("a", "[internal] load build context", at(0), None)],
                ..Default::default()
            },
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
}
