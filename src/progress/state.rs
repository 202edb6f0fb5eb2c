//! The build as known so far, folded from events: steps numbered in the
//! order they start, their latest transfer statuses, their output split
//! into lines, warnings, and whether the daemon clipped their logs. Pure
//! data; the tty and quiet renderers draw from it.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use super::{clip_limit, Update, Vertex, VertexStatus, Warning};

/// Output kept per step: the daemon clips each stream at 2 MiB by
/// default, so this holds a whole clipped step; older lines go first.
const KEPT_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Default, Clone)]
pub struct Step {
    /// 1-based, in order of first start; 0 until the step starts.
    pub index: usize,
    pub vertex: Vertex,
    /// Latest snapshot per status id, in order of first appearance.
    pub statuses: Vec<VertexStatus>,
    /// Complete output lines of all streams, in arrival order.
    pub lines: Vec<String>,
    /// Lines dropped from the front to stay within [`KEPT_BYTES`].
    pub dropped_lines: usize,
    kept_bytes: usize,
    partial: HashMap<i64, Vec<u8>>,
    /// The daemon's clip limit, when it clipped this step's output.
    pub clipped: Option<String>,
    pub warnings: Vec<Warning>,
    intervals: Vec<(SystemTime, SystemTime)>,
}

impl Step {
    pub fn is_done(&self) -> bool {
        self.vertex.completed.is_some()
    }

    pub fn is_running(&self) -> bool {
        self.vertex.started.is_some() && self.vertex.completed.is_none()
    }

    pub fn is_canceled(&self) -> bool {
        self.vertex.error.ends_with("context canceled")
    }

    pub fn failed(&self) -> bool {
        !self.vertex.error.is_empty() && !self.is_canceled()
    }

    /// Time spent running, over all of its runs.
    pub fn duration(&self) -> Duration {
        let mut v = self.intervals.clone();
        v.sort();
        let mut total = Duration::ZERO;
        let mut last_end: Option<SystemTime> = None;
        for (a, b) in v {
            let a = match last_end {
                Some(e) if a < e => e,
                _ => a,
            };
            if b > a {
                total += b.duration_since(a).unwrap_or_default();
            }
            last_end = Some(last_end.map_or(b, |e| e.max(b)));
        }
        total
    }

    /// The statuses still in progress.
    pub fn open_statuses(&self) -> impl Iterator<Item = &VertexStatus> {
        self.statuses
            .iter()
            .filter(|s| s.completed.is_none() && s.started.is_some())
    }

    fn push_line(&mut self, line: String) {
        self.kept_bytes += line.len();
        self.lines.push(line);
        let mut drop = 0;
        while self.kept_bytes > KEPT_BYTES && drop < self.lines.len() {
            self.kept_bytes -= self.lines[drop].len();
            drop += 1;
        }
        if drop > 0 {
            self.lines.drain(..drop);
            self.dropped_lines += drop;
        }
    }

    fn add_log(&mut self, stream: i64, data: &[u8]) {
        let mut buf = self.partial.remove(&stream).unwrap_or_default();
        buf.extend_from_slice(data);
        let mut rest = buf.as_slice();
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            let line = String::from_utf8_lossy(&rest[..pos]).into_owned();
            self.push_line(line);
            rest = &rest[pos + 1..];
        }
        if !rest.is_empty() {
            self.partial.insert(stream, rest.to_vec());
        }
    }

    /// Ends unfinished lines (the step is over).
    fn flush_partial(&mut self) {
        let mut streams: Vec<i64> = self.partial.keys().copied().collect();
        streams.sort();
        for s in streams {
            if let Some(rest) = self.partial.remove(&s) {
                self.push_line(String::from_utf8_lossy(&rest).into_owned());
            }
        }
    }

    /// The last output line, finished or not.
    pub fn last_line(&self) -> Option<String> {
        let partial = self
            .partial
            .values()
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .next();
        partial.or_else(|| self.lines.last().cloned())
    }
}

/// All steps of the build.
#[derive(Debug, Default, Clone)]
pub struct BuildState {
    steps: Vec<Step>,
    by_digest: HashMap<String, usize>,
    started_count: usize,
    /// When the first step started.
    pub started: Option<SystemTime>,
}

impl BuildState {
    fn slot(&mut self, digest: &str) -> usize {
        if let Some(i) = self.by_digest.get(digest) {
            return *i;
        }
        self.steps.push(Step::default());
        let i = self.steps.len() - 1;
        self.by_digest.insert(digest.to_string(), i);
        i
    }

    /// Folds one update in; returns the digests of steps that finished in
    /// it, in order.
    pub fn update(&mut self, update: &Update) -> Vec<String> {
        let mut finished = Vec::new();
        for v in &update.vertexes {
            let i = self.slot(&v.digest);
            let step = &mut self.steps[i];
            if v.is_cache_resend_of(&step.vertex) {
                continue;
            }
            let was_done = step.vertex.completed;
            if let (Some(s), Some(c)) = (v.started, v.completed) {
                if !step.intervals.contains(&(s, c)) {
                    step.intervals.push((s, c));
                }
            }
            step.vertex = v.clone();
            if v.started.is_some() && step.index == 0 {
                self.started_count += 1;
                step.index = self.started_count;
            }
            if let Some(s) = v.started {
                self.started = Some(self.started.map_or(s, |e| e.min(s)));
            }
            if v.completed.is_some() && v.completed != was_done {
                finished.push(v.digest.clone());
            }
        }
        for s in &update.statuses {
            let i = self.slot(&s.vertex);
            let step = &mut self.steps[i];
            match step.statuses.iter_mut().find(|x| x.id == s.id) {
                Some(old) => *old = s.clone(),
                None => step.statuses.push(s.clone()),
            }
        }
        for l in &update.logs {
            let i = self.slot(&l.vertex);
            let step = &mut self.steps[i];
            step.add_log(l.stream, &l.data);
            if let Some(limit) = clip_limit(&l.data) {
                step.clipped = Some(limit);
            }
        }
        for w in &update.warnings {
            let i = self.slot(&w.vertex);
            let step = &mut self.steps[i];
            if !step.warnings.contains(w) {
                step.warnings.push(w.clone());
            }
        }
        for d in &finished {
            if let Some(i) = self.by_digest.get(d) {
                self.steps[*i].flush_partial();
            }
        }
        finished
    }

    pub fn step(&self, digest: &str) -> Option<&Step> {
        self.by_digest.get(digest).map(|i| &self.steps[*i])
    }

    /// Every step, in order of first mention.
    pub fn steps(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter()
    }

    /// Running steps by number.
    pub fn running(&self) -> Vec<&Step> {
        let mut v: Vec<&Step> = self.steps.iter().filter(|s| s.is_running()).collect();
        v.sort_by_key(|s| s.index);
        v
    }

    /// (finished, known) step counts.
    pub fn progress(&self) -> (usize, usize) {
        let done = self.steps.iter().filter(|s| s.is_done()).count();
        (done, self.steps.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Log;

    fn at(ms: u64) -> Option<SystemTime> {
        Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_000_000 + ms))
    }

    #[test]
    fn lines_across_chunks_and_clip() {
        let mut s = BuildState::default();
        s.update(&Update {
            vertexes: vec![Vertex {
                digest: "a".into(),
                started: at(0),
                ..Default::default()
            }],
            logs: vec![
                Log {
                    vertex: "a".into(),
                    stream: 1,
                    data: "one\ntw".into(),
                    ..Default::default()
                },
                Log {
                    vertex: "a".into(),
                    stream: 1,
                    data: "o\n[output clipped, log limit 2MiB reached]\n".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        let step = s.step("a").expect("step");
        assert_eq!(step.index, 1);
        assert_eq!(
            step.lines,
            vec!["one", "two", "[output clipped, log limit 2MiB reached]"]
        );
        assert_eq!(step.clipped.as_deref(), Some("2MiB"));
        let done = s.update(&Update {
            vertexes: vec![Vertex {
                digest: "a".into(),
                started: at(0),
                completed: at(1500),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert_eq!(done, vec!["a".to_string()]);
        assert_eq!(
            s.step("a").map(Step::duration),
            Some(Duration::from_millis(1500))
        );
    }
}
