//! The build as known so far, folded from the status messages in the order
//! they arrived: each step's latest snapshot and every interval it ran,
//! its transfer statuses, warnings and (optionally) its output lines,
//! kept while it runs and, if it fails, after. Pure data; the renderers
//! draw from it.
//!
//! The fold follows the daemon's model as buildctl reads it: a vertex may
//! run more than once (the daemon restarts it, or a concurrent build shares
//! it), each run is an interval keyed by its start time, and the step's
//! time is the union of its intervals. A step starts when its first
//! interval does; steps are numbered in that order. Vertices the daemon
//! puts in a progress group (e.g. `COPY --link`) are shown as one step,
//! hidden until a non-weak member starts.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use super::{clip_limit, Update, Vertex, VertexStatus, Warning};

/// Output bytes kept per step: the daemon clips each stream at 2 MiB by
/// default, so this holds a whole clipped step; older lines go first.
const KEPT_BYTES: usize = 4 * 1024 * 1024;
/// Longest line kept whole; the rest of a longer line is counted, not kept.
pub const LINE_BYTES: usize = 64 * 1024;
/// Streams of one step with an unfinished line at a time (the daemon uses
/// two, stdout and stderr): a line left open on a further stream ends the
/// oldest one, so a daemon naming new streams cannot grow the step.
const OPEN_STREAMS: usize = 8;
/// What one step holds at most beyond its output, and how many steps a
/// build has: far above what a real build sends (an image pull has a status
/// per layer; a Dockerfile's lint warnings are tens), low enough that a
/// daemon sending without end cannot grow bkd's memory or the cost of each
/// message. Past them, new statuses, warnings and steps are not kept; runs
/// of one step past [`RUNS`] are joined, oldest first.
const STATUSES: usize = 1024;
const WARNINGS: usize = 1024;
const RUNS: usize = 256;
const GROUP_MEMBERS: usize = 1024;
const STEPS: usize = 100_000;

/// One run of a step; `None` as the end means still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub start: SystemTime,
    pub stop: Option<SystemTime>,
}

impl Interval {
    /// Its length, an open one measured up to `now`.
    pub fn length(&self, now: SystemTime) -> Duration {
        let end = self.stop.unwrap_or(now);
        end.duration_since(self.start).unwrap_or_default()
    }
}

/// Merges overlapping intervals, sorted by start; an open interval
/// swallows every later one.
pub fn merge_intervals(list: impl IntoIterator<Item = Interval>) -> Vec<Interval> {
    let mut v: Vec<Interval> = list.into_iter().collect();
    v.sort_by_key(|i| i.start);
    let mut out: Vec<Interval> = Vec::new();
    let mut iter = v.into_iter();
    let Some(mut cur) = iter.next() else {
        return out;
    };
    for next in iter {
        let Some(stop) = cur.stop else {
            break;
        };
        if stop < next.start {
            out.push(cur);
            cur = next;
            continue;
        }
        match next.stop {
            None => {
                cur.stop = None;
                break;
            }
            Some(ns) if ns > stop => cur.stop = Some(ns),
            Some(_) => {}
        }
    }
    out.push(cur);
    out
}

/// A step's output, split into lines per stream, within [`KEPT_BYTES`].
#[derive(Debug, Default, Clone)]
pub struct StepOutput {
    lines: VecDeque<String>,
    bytes: usize,
    /// Lines dropped from the front to stay within the limit.
    pub dropped_lines: usize,
    /// The unfinished line of each stream, in order of first output.
    partial: Vec<(i64, PartialLine)>,
}

#[derive(Debug, Default, Clone)]
struct PartialLine {
    text: Vec<u8>,
    /// Bytes of this line beyond [`LINE_BYTES`], not kept.
    cut: usize,
}

impl PartialLine {
    fn push(&mut self, data: &[u8]) {
        let room = LINE_BYTES.saturating_sub(self.text.len());
        let take = room.min(data.len());
        self.text.extend_from_slice(&data[..take]);
        self.cut += data.len() - take;
    }

    fn finish(self) -> String {
        let mut line = String::from_utf8_lossy(&self.text).into_owned();
        if self.cut > 0 {
            line += &format!(" [... {} more bytes of this line not kept]", self.cut);
        }
        line
    }
}

impl StepOutput {
    /// Complete lines kept, oldest first.
    pub fn lines(&self) -> impl Iterator<Item = &String> {
        self.lines.iter()
    }

    pub fn line_count(&self) -> usize {
        self.lines.len()
    }

    /// The last `n` complete lines.
    pub fn last_lines(&self, n: usize) -> impl Iterator<Item = &String> {
        self.lines.iter().skip(self.lines.len().saturating_sub(n))
    }

    fn push_line(&mut self, line: String) {
        self.bytes += line.len();
        self.lines.push_back(line);
        while self.bytes > KEPT_BYTES && self.lines.len() > 1 {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.len();
                self.dropped_lines += 1;
            }
        }
    }

    /// Takes a chunk of one stream; only the new bytes are scanned.
    fn add(&mut self, stream: i64, data: &[u8]) {
        let mut rest = data;
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            let mut line = self.take_partial(stream).unwrap_or_default();
            line.push(&rest[..pos]);
            self.push_line(line.finish());
            rest = &rest[pos + 1..];
        }
        if !rest.is_empty() {
            match self.partial.iter_mut().find(|(s, _)| *s == stream) {
                Some((_, p)) => p.push(rest),
                None => {
                    if self.partial.len() >= OPEN_STREAMS {
                        let (_, oldest) = self.partial.remove(0);
                        self.push_line(oldest.finish());
                    }
                    let mut p = PartialLine::default();
                    p.push(rest);
                    self.partial.push((stream, p));
                }
            }
        }
    }

    fn take_partial(&mut self, stream: i64) -> Option<PartialLine> {
        let at = self.partial.iter().position(|(s, _)| *s == stream)?;
        Some(self.partial.remove(at).1)
    }

    /// Ends unfinished lines (the step is over).
    fn flush(&mut self) {
        for (_, p) in std::mem::take(&mut self.partial) {
            self.push_line(p.finish());
        }
    }

    /// The last output line, finished or not.
    pub fn last_line(&self) -> Option<String> {
        self.partial
            .iter()
            .rev()
            .map(|(_, p)| &p.text)
            .find(|t| !t.is_empty())
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .or_else(|| self.lines.back().cloned())
    }
}

/// One step as shown: a vertex, or a progress group of vertices.
#[derive(Debug, Default, Clone)]
pub struct Step {
    /// Latest snapshot; for a group, one made from its members.
    pub vertex: Vertex,
    /// 1-based, in order of first start; 0 until the step starts.
    pub index: usize,
    intervals: BTreeMap<SystemTime, Option<SystemTime>>,
    merged: Vec<Interval>,
    /// Latest snapshot per status id, in order of first start.
    pub statuses: Vec<VertexStatus>,
    /// Statuses seen before they started, by id.
    unstarted: HashMap<String, VertexStatus>,
    pub warnings: Vec<Warning>,
    pub output: StepOutput,
    /// The daemon's clip limit, when it clipped this step's output.
    pub clipped: Option<String>,
    /// The last snapshot with a start time, to tell changes apart.
    previous: Option<Vertex>,
    /// A progress group: its members' latest snapshots.
    members: Option<BTreeMap<String, Vertex>>,
    /// A progress group: each member's own runs, folded as a step's.
    member_runs: HashMap<String, BTreeMap<SystemTime, Option<SystemTime>>>,
    /// A group none of whose non-weak members started yet.
    pub hidden: bool,
}

impl Step {
    pub fn is_started(&self) -> bool {
        !self.merged.is_empty()
    }

    /// Whether its latest run is over.
    pub fn is_done(&self) -> bool {
        self.merged.last().is_some_and(|i| i.stop.is_some())
    }

    pub fn is_running(&self) -> bool {
        self.is_started() && !self.is_done()
    }

    pub fn is_canceled(&self) -> bool {
        self.vertex.error.ends_with("context canceled")
    }

    pub fn failed(&self) -> bool {
        !self.vertex.error.is_empty() && !self.is_canceled()
    }

    pub fn is_group(&self) -> bool {
        self.members.is_some()
    }

    /// Every run, merged where they overlap.
    pub fn intervals(&self) -> &[Interval] {
        &self.merged
    }

    /// The latest run.
    pub fn last_interval(&self) -> Option<Interval> {
        self.merged.last().copied()
    }

    /// Time spent running over all runs, open ones measured up to `now`.
    pub fn duration(&self, now: SystemTime) -> Duration {
        self.merged.iter().map(|i| i.length(now)).sum()
    }

    /// The statuses still in progress.
    pub fn open_statuses(&self) -> impl Iterator<Item = &VertexStatus> {
        self.statuses
            .iter()
            .filter(|s| s.completed.is_none() && s.started.is_some())
    }

    fn add_interval(&mut self, start: SystemTime, stop: Option<SystemTime>) {
        record_run(&mut self.intervals, start, stop);
        end_superseded_runs(&mut self.intervals);
        self.merge_runs();
    }

    fn merge_runs(&mut self) {
        bound_runs(&mut self.intervals);
        self.merged = merge_intervals(self.intervals.iter().map(|(s, e)| Interval {
            start: *s,
            stop: *e,
        }));
    }
}

/// Ends every run that a later run of the same vertex followed while it
/// was open: it ends where the later one starts. The daemon keeps one
/// record per vertex that each run overwrites (BuildKit's solver,
/// `notifyStarted`), so a run that was still open when the next began
/// reports its end with the next one's start, and its own start is never
/// closed in the stream: a fold that waits for it (buildctl's) shows the
/// step running after the build. Its time is kept: the two runs join.
fn end_superseded_runs(runs: &mut BTreeMap<SystemTime, Option<SystemTime>>) {
    let mut later: Option<SystemTime> = None;
    for (start, stop) in runs.iter_mut().rev() {
        if stop.is_none() {
            if let Some(next) = later {
                *stop = Some(next);
            }
        }
        later = Some(*start);
    }
}

/// Keeps at most [`RUNS`] runs: the two oldest become one, from the first
/// one's start to the later end of the two (an open end stays open).
fn bound_runs(runs: &mut BTreeMap<SystemTime, Option<SystemTime>>) {
    while runs.len() > RUNS {
        let (Some((start, a)), Some((_, b))) = (runs.pop_first(), runs.pop_first()) else {
            return;
        };
        let stop = match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        runs.insert(start, stop);
    }
}

/// Records the run that began at `start`: a later stop extends it, but a
/// snapshot without one (the daemon may send an older view of a vertex
/// after the finished one) never reopens it, as in the reference's fold.
fn record_run(
    runs: &mut BTreeMap<SystemTime, Option<SystemTime>>,
    start: SystemTime,
    stop: Option<SystemTime>,
) {
    let known = runs.entry(start).or_insert(stop);
    if let Some(stop) = stop {
        if known.is_none_or(|k| k < stop) {
            *known = Some(stop);
        }
    }
}

/// What one message changed, in the order it was folded in: the renderers
/// react to these rather than to the raw message.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Changes {
    /// Steps whose snapshot changed (shown state: name, runs, result).
    pub vertexes: Vec<usize>,
    /// Steps that started for the first time, in start order.
    pub started: Vec<usize>,
    /// (step, status id) of status updates.
    pub statuses: Vec<(usize, String)>,
    /// (step, index into its warnings) of new warnings.
    pub warnings: Vec<(usize, usize)>,
    /// (step, index into the message's logs) of output.
    pub logs: Vec<(usize, usize)>,
    /// Steps whose latest run ended in this message.
    pub finished: Vec<usize>,
}

/// All steps of the build.
#[derive(Debug, Default, Clone)]
pub struct BuildState {
    steps: Vec<Step>,
    /// Vertex digest (or group id) to step.
    by_digest: HashMap<String, usize>,
    /// Group id to step.
    groups: HashMap<String, usize>,
    /// Steps in the order they started.
    order: Vec<usize>,
    /// When the first step started.
    pub started: Option<SystemTime>,
    /// The latest time any event carried.
    pub latest: Option<SystemTime>,
    /// Whether output lines are kept (the plain printer keeps its own).
    keep_output: bool,
}

impl BuildState {
    /// A state that keeps each step's output lines.
    pub fn with_output() -> Self {
        BuildState {
            keep_output: true,
            ..Default::default()
        }
    }

    fn new_step(&mut self, key: &str, step: Step) -> usize {
        self.steps.push(step);
        let i = self.steps.len() - 1;
        self.by_digest.insert(key.to_string(), i);
        i
    }

    fn note_time(&mut self, t: Option<SystemTime>) {
        if let Some(t) = t {
            self.latest = Some(self.latest.map_or(t, |l| l.max(t)));
        }
    }

    fn mark_started(&mut self, i: usize, changes: &mut Changes) {
        if self.steps[i].index != 0 {
            return;
        }
        self.order.push(i);
        self.steps[i].index = self.order.len();
        changes.started.push(i);
        if let Some(first) = self.steps[i].merged.first() {
            self.started = Some(self.started.map_or(first.start, |s| s.min(first.start)));
        }
    }

    /// Folds one message in, in order, and says what it changed.
    pub fn update(&mut self, update: &Update) -> Changes {
        let mut changes = Changes::default();
        let mut groups_seen: Vec<usize> = Vec::new();
        for v in &update.vertexes {
            self.note_time(v.started);
            self.note_time(v.completed);
            if let Some(g) = &v.progress_group {
                let i = match self.groups.get(&g.id) {
                    Some(i) => *i,
                    None if self.steps.len() >= STEPS => continue,
                    None => {
                        let step = Step {
                            vertex: Vertex {
                                digest: g.id.clone(),
                                name: g.name.clone(),
                                ..Default::default()
                            },
                            members: Some(BTreeMap::new()),
                            hidden: true,
                            ..Default::default()
                        };
                        let i = self.new_step(&g.id, step);
                        self.groups.insert(g.id.clone(), i);
                        i
                    }
                };
                let group = &mut self.steps[i];
                // Each snapshot's run counts, not only a member's latest:
                // one message can finish a run and start the next.
                if let Some(start) = v.started {
                    let known = group.member_runs.contains_key(&v.digest);
                    if known || group.member_runs.len() < GROUP_MEMBERS {
                        let runs = group.member_runs.entry(v.digest.clone()).or_default();
                        record_run(runs, start, v.completed);
                        end_superseded_runs(runs);
                        bound_runs(runs);
                        for (s, e) in runs.iter() {
                            record_run(&mut group.intervals, *s, *e);
                        }
                    }
                    bound_runs(&mut group.intervals);
                }
                if let Some(m) = group.members.as_mut() {
                    if m.len() < GROUP_MEMBERS || m.contains_key(&v.digest) {
                        m.insert(v.digest.clone(), v.clone());
                    }
                }
                self.by_digest.insert(v.digest.clone(), i);
                if !groups_seen.contains(&i) {
                    groups_seen.push(i);
                }
                continue;
            }
            let i = match self.by_digest.get(&v.digest) {
                Some(i) => *i,
                None if self.steps.len() >= STEPS => continue,
                None => self.new_step(&v.digest, Step::default()),
            };
            let was_started = self.steps[i].is_started();
            let was_done = self.steps[i].is_done();
            let step = &mut self.steps[i];
            if v.started.is_some() {
                if snapshot_changed(step.previous.as_ref(), v) {
                    changes.vertexes.push(i);
                }
                step.previous = Some(v.clone());
            }
            // A snapshot without a start does not undo a started step.
            if !was_started || v.started.is_some() {
                step.vertex = v.clone();
            }
            if let Some(start) = v.started {
                step.add_interval(start, v.completed);
            }
            if step.is_done() && !was_done {
                if self.keep_output {
                    step.output.flush();
                }
                if !step.failed() {
                    // Only a failing step's output is shown once it is
                    // over: memory is held by running and failed steps.
                    step.output = StepOutput::default();
                }
                if !changes.finished.contains(&i) {
                    changes.finished.push(i);
                }
            }
            if v.started.is_some() && !was_started {
                self.mark_started(i, &mut changes);
            }
        }
        for i in groups_seen {
            self.refresh_group(i, &mut changes);
        }
        for s in &update.statuses {
            self.note_time(s.timestamp);
            let Some(&i) = self.by_digest.get(&s.vertex) else {
                continue;
            };
            let step = &mut self.steps[i];
            let full = step.statuses.len() + step.unstarted.len() >= STATUSES
                && !step.unstarted.contains_key(&s.id);
            match step.statuses.iter_mut().find(|x| x.id == s.id) {
                Some(old) => *old = s.clone(),
                None if full => continue,
                None if s.started.is_some() => {
                    step.unstarted.remove(&s.id);
                    step.statuses.push(s.clone());
                }
                None => {
                    step.unstarted.insert(s.id.clone(), s.clone());
                }
            }
            changes.statuses.push((i, s.id.clone()));
        }
        for w in &update.warnings {
            let Some(&i) = self.by_digest.get(&w.vertex) else {
                continue;
            };
            let step = &mut self.steps[i];
            if step.warnings.len() >= WARNINGS {
                continue;
            }
            step.warnings.push(w.clone());
            changes.warnings.push((i, step.warnings.len() - 1));
        }
        for (n, l) in update.logs.iter().enumerate() {
            self.note_time(l.timestamp);
            let Some(&i) = self.by_digest.get(&l.vertex) else {
                continue;
            };
            let step = &mut self.steps[i];
            if self.keep_output && (!step.is_done() || step.failed()) {
                step.output.add(l.stream, &l.data);
                if step.is_done() {
                    step.output.flush();
                }
            }
            if let Some(limit) = clip_limit(&l.data) {
                step.clipped = Some(limit);
            }
            changes.logs.push((i, n));
        }
        changes
    }

    /// Rebuilds a group's snapshot from its members: its runs are theirs,
    /// it is cached when all are, it carries the first error, and it is
    /// shown once a non-weak member started.
    fn refresh_group(&mut self, i: usize, changes: &mut Changes) {
        let step = &mut self.steps[i];
        let Some(members) = step.members.take() else {
            return;
        };
        let was_done = step.is_done();
        let was_started = step.is_started();
        let was_hidden = step.hidden;
        let before = (
            step.merged.clone(),
            step.vertex.cached,
            step.vertex.error.clone(),
        );
        let mut cached = true;
        let mut error = String::new();
        // The members' runs are already in the group's (see `update`).
        for m in members.values() {
            if m.started.is_some() && !m.progress_group.as_ref().is_some_and(|g| g.weak) {
                step.hidden = false;
            }
            cached &= m.cached;
            if error.is_empty() {
                error = m.error.clone();
            } else if !m.error.is_empty() {
                step.hidden = false;
            }
        }
        step.members = Some(members);
        step.merge_runs();
        step.vertex.cached = cached;
        step.vertex.error = error;
        step.vertex.started = step.merged.first().map(|i| i.start);
        step.vertex.completed = step.merged.last().and_then(|i| i.stop);
        if step.hidden {
            return;
        }
        let after = (
            step.merged.clone(),
            step.vertex.cached,
            step.vertex.error.clone(),
        );
        if before != after || was_hidden {
            changes.vertexes.push(i);
        }
        if step.is_done() && !was_done && !changes.finished.contains(&i) {
            changes.finished.push(i);
        }
        if step.is_started() && (!was_started || was_hidden) {
            self.mark_started(i, changes);
        }
    }

    pub fn step(&self, i: usize) -> &Step {
        &self.steps[i]
    }

    /// The step a vertex digest belongs to.
    pub fn step_of(&self, digest: &str) -> Option<usize> {
        self.by_digest.get(digest).copied()
    }

    /// The shown steps, in the order they started.
    pub fn started_steps(&self) -> impl Iterator<Item = (usize, &Step)> {
        self.order.iter().map(|i| (*i, &self.steps[*i]))
    }

    /// Running steps, in start order.
    pub fn running(&self) -> impl Iterator<Item = (usize, &Step)> {
        self.started_steps().filter(|(_, s)| s.is_running())
    }

    /// (finished, known) step counts, groups counted once and hidden
    /// groups not at all.
    pub fn progress(&self) -> (usize, usize) {
        let shown = self.steps.iter().filter(|s| !s.hidden);
        let known = shown.clone().count();
        let done = shown.filter(|s| s.is_done()).count();
        (done, known)
    }

    /// Total steps known (shown or not).
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// Whether a started snapshot differs from the last one in what is shown.
fn snapshot_changed(previous: Option<&Vertex>, v: &Vertex) -> bool {
    let Some(p) = previous else {
        return true;
    };
    p.name != v.name
        || p.started != v.started
        || (p.completed != v.completed && v.completed.is_some())
        || p.cached != v.cached
        || p.error != v.error
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::{Log, ProgressGroup};

    fn at(ms: u64) -> Option<SystemTime> {
        Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_000_000 + ms))
    }

    fn vertex(d: &str, started: Option<SystemTime>, completed: Option<SystemTime>) -> Vertex {
        Vertex {
            digest: d.into(),
            name: format!("step {d}"),
            started,
            completed,
            ..Default::default()
        }
    }

    fn msg(vertexes: Vec<Vertex>) -> Update {
        Update {
            vertexes,
            ..Default::default()
        }
    }

    #[test]
    fn lines_across_chunks_and_clip() {
        let mut s = BuildState::with_output();
        s.update(&Update {
            vertexes: vec![vertex("a", at(0), None)],
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
        let i = s.step_of("a").expect("step");
        let step = s.step(i);
        assert_eq!(step.index, 1);
        assert_eq!(
            step.output.lines().cloned().collect::<Vec<_>>(),
            vec!["one", "two", "[output clipped, log limit 2MiB reached]"]
        );
        assert_eq!(step.clipped.as_deref(), Some("2MiB"));
        let done = s.update(&msg(vec![vertex("a", at(0), at(1500))]));
        assert_eq!(done.finished, vec![i]);
        assert_eq!(
            s.step(i).duration(SystemTime::UNIX_EPOCH),
            Duration::from_millis(1500)
        );
    }

    /// The daemon's own race: a run still open when the next run of the
    /// vertex starts reports its end with the next run's start, so its
    /// start is never closed. The step still ends, timed from its first
    /// start, as soon as the later run does.
    #[test]
    fn a_run_whose_end_carries_the_next_runs_start_is_closed() {
        let mut s = BuildState::default();
        s.update(&msg(vec![vertex("a", None, None)]));
        s.update(&msg(vec![vertex("a", at(0), None)]));
        s.update(&msg(vec![vertex("a", at(5), None)]));
        let i = s.step_of("a").expect("step");
        assert!(s.step(i).is_running());
        // The first run's end, written with the second run's start (the
        // step looks done from here, for buildctl too), then the second's.
        let c = s.update(&msg(vec![vertex("a", at(5), at(6))]));
        assert_eq!(c.finished, vec![i]);
        s.update(&msg(vec![vertex("a", at(5), at(40))]));
        assert!(s.step(i).is_done());
        assert_eq!(
            s.step(i).duration(SystemTime::UNIX_EPOCH),
            Duration::from_millis(40)
        );
        // A late snapshot of the first run changes nothing.
        s.update(&msg(vec![vertex("a", at(0), None)]));
        assert!(s.step(i).is_done());
    }

    /// The same race inside a progress group: a member's superseded run
    /// does not keep the group open; another member's open run does.
    #[test]
    fn a_group_member_run_whose_end_carries_the_next_start_is_closed() {
        let member = |d: &str, started, completed| Vertex {
            progress_group: Some(ProgressGroup {
                id: "g".into(),
                name: "group".into(),
                weak: false,
            }),
            ..vertex(d, started, completed)
        };
        let mut s = BuildState::default();
        s.update(&msg(vec![member("m", at(0), None)]));
        s.update(&msg(vec![member("m", at(5), None)]));
        s.update(&msg(vec![member("m", at(5), at(9))]));
        let g = s.step_of("m").expect("group");
        assert!(s.step(g).is_done());
        assert_eq!(
            s.step(g).duration(SystemTime::UNIX_EPOCH),
            Duration::from_millis(9)
        );
        s.update(&msg(vec![member("n", at(7), None)]));
        assert!(s.step(g).is_running());
    }

    /// A daemon that sends without end (new runs of one step, new status
    /// ids, warnings, group members, steps) does not grow the state past
    /// its bounds, and each message stays cheap to fold.
    #[test]
    fn endless_runs_statuses_warnings_and_members_stay_bounded() {
        let mut s = BuildState::with_output();
        let started = std::time::Instant::now();
        for n in 0..5_000u64 {
            let member = Vertex {
                progress_group: Some(ProgressGroup {
                    id: "g".into(),
                    name: "group".into(),
                    weak: false,
                }),
                ..vertex(&format!("m{n}"), at(n), at(n + 1))
            };
            s.update(&Update {
                vertexes: vec![vertex("a", at(2 * n), at(2 * n + 1)), member],
                statuses: vec![VertexStatus {
                    id: format!("s{n}"),
                    vertex: "a".into(),
                    started: at(n),
                    ..Default::default()
                }],
                warnings: vec![Warning {
                    vertex: "a".into(),
                    short: format!("w{n}"),
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        let a = s.step(s.step_of("a").expect("step"));
        assert!(a.intervals.len() <= RUNS, "{} runs", a.intervals.len());
        assert!(a.statuses.len() + a.unstarted.len() <= STATUSES);
        assert!(a.warnings.len() <= WARNINGS);
        assert!(a.is_done());
        // Joined runs still span the first start to the last end.
        assert_eq!(a.intervals().first().map(|i| i.start), at(0));
        assert_eq!(a.intervals().last().and_then(|i| i.stop), at(9_999));
        let g = s.step(s.step_of("m0").expect("group"));
        assert!(g.members.as_ref().is_some_and(|m| m.len() <= GROUP_MEMBERS));
        assert!(g.intervals.len() <= RUNS);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "folding took {:?}",
            started.elapsed()
        );
        // New steps past the bound are not kept.
        for n in 0..(STEPS as u64 + 10) {
            s.update(&msg(vec![vertex(&format!("v{n}"), at(n), None)]));
        }
        assert!(s.len() <= STEPS);
    }

    /// A daemon that leaves a long line open on ever new streams does not
    /// grow the step past its limits: at most [`OPEN_STREAMS`] lines stay
    /// open, and the ones ended early are kept within [`KEPT_BYTES`].
    #[test]
    fn open_lines_on_many_streams_stay_bounded() {
        let mut s = BuildState::with_output();
        s.update(&msg(vec![vertex("a", at(0), None)]));
        let long = "x".repeat(LINE_BYTES + 10);
        for stream in 0..1000 {
            s.update(&Update {
                logs: vec![Log {
                    vertex: "a".into(),
                    stream,
                    data: long.clone().into(),
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        let i = s.step_of("a").expect("step");
        let out = &s.step(i).output;
        assert!(
            out.partial.len() <= OPEN_STREAMS,
            "{} open",
            out.partial.len()
        );
        let open: usize = out.partial.iter().map(|(_, p)| p.text.len()).sum();
        assert!(open <= OPEN_STREAMS * LINE_BYTES);
        assert!(out.bytes <= KEPT_BYTES + LINE_BYTES + 64);
        assert!(out.dropped_lines > 0);
        // The last stream's line is still the one shown as current.
        assert_eq!(out.last_line().map(|l| l.len()), Some(LINE_BYTES));
    }

    /// One message may hold a vertex twice: a short run that ended, then
    /// a new run. Both count, and the step is running afterwards.
    #[test]
    fn restarted_in_one_message_is_running_with_both_runs() {
        let mut s = BuildState::default();
        let c = s.update(&msg(vec![
            vertex("a", None, None),
            vertex("a", at(0), at(1)),
            vertex("a", at(2), None),
        ]));
        let i = s.step_of("a").expect("step");
        assert_eq!(c.started, vec![i]);
        assert!(s.step(i).is_running());
        s.update(&msg(vec![vertex("a", at(2), at(1000))]));
        assert!(s.step(i).is_done());
        assert_eq!(
            s.step(i).duration(SystemTime::UNIX_EPOCH),
            Duration::from_millis(999)
        );
        // A run after a pause adds its own time: 3.0s, not the last 0.6s.
        s.update(&msg(vec![vertex("a", at(1400), None)]));
        assert!(s.step(i).is_running());
        let c = s.update(&msg(vec![vertex("a", at(1400), at(3400))]));
        assert_eq!(c.finished, vec![i]);
        assert_eq!(
            s.step(i).duration(SystemTime::UNIX_EPOCH),
            Duration::from_millis(2999)
        );
    }

    #[test]
    fn numbered_in_start_order_not_mention_order() {
        let mut s = BuildState::default();
        s.update(&msg(vec![
            vertex("leaf", None, None),
            vertex("base", None, None),
        ]));
        s.update(&msg(vec![vertex("base", at(0), None)]));
        s.update(&msg(vec![vertex("leaf", at(5), None)]));
        let base = s.step(s.step_of("base").expect("base"));
        let leaf = s.step(s.step_of("leaf").expect("leaf"));
        assert_eq!((base.index, leaf.index), (1, 2));
        // An unstarted re-send does not reset a running step.
        s.update(&msg(vec![vertex("base", None, None)]));
        assert!(s.step(s.step_of("base").expect("base")).is_running());
    }

    #[test]
    fn groups_show_once_non_weak_members_start() {
        let mut s = BuildState::default();
        let member = |d: &str, weak: bool, st, co| Vertex {
            progress_group: Some(ProgressGroup {
                id: "g".into(),
                name: "[2/2] LINK COPY a b".into(),
                weak,
            }),
            cached: false,
            ..vertex(d, st, co)
        };
        let c = s.update(&msg(vec![member("w", true, at(0), at(10))]));
        let g = s.step_of("w").expect("group");
        assert!(s.step(g).hidden);
        assert!(c.started.is_empty());
        let c = s.update(&msg(vec![member("m", false, at(20), None)]));
        assert_eq!(c.started, vec![g]);
        assert_eq!(s.step(g).vertex.name, "[2/2] LINK COPY a b");
        assert!(s.step(g).is_running());
        let c = s.update(&msg(vec![member("m", false, at(20), at(50))]));
        assert_eq!(c.finished, vec![g]);
        assert_eq!(s.progress(), (1, 1));
    }

    #[test]
    fn a_stale_snapshot_does_not_reopen_a_finished_run() {
        let mut s = BuildState::default();
        s.update(&msg(vec![vertex("a", at(10), at(20))]));
        let c = s.update(&msg(vec![vertex("a", at(10), None)]));
        let i = s.step_of("a").expect("step");
        assert!(s.step(i).is_done(), "{c:?}");
        assert_eq!(s.step(i).last_interval().and_then(|r| r.stop), at(20));
        s.update(&msg(vec![vertex("a", at(10), at(30))]));
        assert_eq!(s.step(i).last_interval().and_then(|r| r.stop), at(30));
    }

    /// A member that finishes a run and starts another in one message
    /// (a COPY --link merge during the export) leaves its group finished
    /// once the second run ends.
    #[test]
    fn a_group_member_run_finished_and_restarted_in_one_message_counts() {
        let member = |started, completed| Vertex {
            progress_group: Some(ProgressGroup {
                id: "g".into(),
                name: "group".into(),
                weak: false,
            }),
            ..vertex("m", started, completed)
        };
        let mut s = BuildState::default();
        s.update(&msg(vec![member(at(10), None)]));
        s.update(&msg(vec![member(at(10), at(20)), member(at(21), None)]));
        let g = s.step_of("m").expect("group");
        assert!(s.step(g).is_running());
        s.update(&msg(vec![member(at(21), at(30))]));
        assert!(s.step(g).is_done(), "{:?}", s.step(g).intervals());
    }

    #[test]
    fn merging_like_the_reference() {
        let iv = |a: u64, b: Option<u64>| Interval {
            start: at(a).expect("t"),
            stop: b.and_then(at),
        };
        assert_eq!(
            merge_intervals([iv(5, Some(8)), iv(0, Some(3)), iv(2, Some(4))]),
            vec![iv(0, Some(4)), iv(5, Some(8))]
        );
        assert_eq!(
            merge_intervals([iv(0, Some(3)), iv(2, None), iv(9, Some(10))]),
            vec![iv(0, None)]
        );
        assert_eq!(
            merge_intervals([iv(0, Some(10)), iv(2, Some(3))]),
            vec![iv(0, Some(10))]
        );
    }

    /// Output is kept while a step runs and, if it failed, after; a step
    /// that succeeded holds none.
    #[test]
    fn only_running_and_failed_steps_hold_output() {
        let mut s = BuildState::with_output();
        let line = |d: &str| Log {
            vertex: d.into(),
            stream: 1,
            data: "some output\n".into(),
            ..Default::default()
        };
        s.update(&Update {
            vertexes: vec![vertex("ok", at(0), None), vertex("bad", at(0), None)],
            logs: vec![line("ok"), line("bad")],
            ..Default::default()
        });
        let (ok, bad) = (s.step_of("ok").expect("ok"), s.step_of("bad").expect("bad"));
        assert_eq!(s.step(ok).output.line_count(), 1);
        s.update(&Update {
            vertexes: vec![
                vertex("ok", at(0), at(10)),
                Vertex {
                    error: "exit code: 1".into(),
                    ..vertex("bad", at(0), at(10))
                },
            ],
            logs: vec![line("ok"), line("bad")],
            ..Default::default()
        });
        assert_eq!(s.step(ok).output.line_count(), 0);
        assert_eq!(s.step(bad).output.line_count(), 2);
    }

    /// A line of any length costs at most [`LINE_BYTES`], and many lines
    /// at most [`KEPT_BYTES`], in time linear in the input.
    #[test]
    fn output_is_bounded() {
        let mut out = StepOutput::default();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..50 {
            out.add(1, &chunk);
        }
        out.add(1, b"\n");
        assert_eq!(out.line_count(), 1);
        let line = out.lines().next().expect("line");
        assert!(line.len() < LINE_BYTES + 100, "{}", line.len());
        assert!(line.ends_with("more bytes of this line not kept]"));
        let many = "a line of output\n".repeat(1000);
        for _ in 0..1000 {
            out.add(2, many.as_bytes());
        }
        assert!(out.bytes <= KEPT_BYTES);
        assert!(out.dropped_lines > 0);
    }
}
