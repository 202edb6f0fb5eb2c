//! The end-of-build summary: total time, steps run and cached, warnings,
//! the build context sent, time spent on cache import and export, and what
//! was exported. Step figures come from the folded status stream
//! ([`BuildState`]); the rest from the CLI ([`BuildEnd`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::state::{BuildState, Step};
use super::{format_bytes, Update};
use crate::text::{escape_controls, escape_path, escape_str};

/// The status id under which the daemon reports a context transfer.
const CONTEXT_TRANSFER: &str = "transferring context:";
/// The step that looks up a `--cache-from` source.
const CACHE_IMPORT: &str = "importing cache manifest from ";

/// A step that looked for cache to import.
pub fn is_cache_import(step: &Step) -> bool {
    step.vertex.name.starts_with(CACHE_IMPORT)
}

/// A step that exported cache (registry, local, S3, Azure, GitHub Actions).
fn is_cache_export(step: &Step) -> bool {
    let name = &step.vertex.name;
    name.starts_with("exporting cache") || name == "exporting to GitHub Actions Cache"
}

/// A `--cache-from` that found nothing (the normal first build): a
/// warning, not a failed step.
pub fn is_missed_cache_import(step: &Step) -> bool {
    is_cache_import(step) && step.failed()
}

/// A warning's vertex, text and lines, to count each once.
type WarningKey<'a> = (&'a str, &'a str, Vec<(i32, i32)>);

/// The figures of the summary line.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Figures {
    pub run: usize,
    pub cached: usize,
    pub failed: usize,
    pub canceled: usize,
    pub warnings: usize,
    /// Context bytes sent and the time the transfers took.
    pub context: Option<(i64, Duration)>,
    pub cache_import: Option<Duration>,
    pub cache_export: Option<Duration>,
}

impl Figures {
    pub fn of(state: &BuildState) -> Figures {
        let mut f = Figures::default();
        let mut context: HashMap<usize, (i64, Duration)> = HashMap::new();
        // The daemon may send a warning more than once.
        let mut warnings: Vec<WarningKey> = Vec::new();
        for (i, step) in state.started_steps() {
            for w in &step.warnings {
                let key = (
                    w.vertex.as_str(),
                    w.short.as_str(),
                    w.ranges.iter().map(|r| r.start).collect(),
                );
                if !warnings.contains(&key) {
                    warnings.push(key);
                }
            }
            for s in step.statuses.iter().filter(|s| s.id == CONTEXT_TRANSFER) {
                let end = s.completed.or(s.timestamp);
                let took = match (s.started, end) {
                    (Some(a), Some(b)) => b.duration_since(a).unwrap_or_default(),
                    _ => Duration::ZERO,
                };
                context.insert(i, (s.current, took));
            }
            let add = |total: &mut Option<Duration>| {
                *total = Some(total.unwrap_or_default() + step.duration(SystemTime::UNIX_EPOCH));
            };
            if is_cache_import(step) && step.is_done() {
                add(&mut f.cache_import);
            }
            if is_cache_export(step) && step.is_done() {
                add(&mut f.cache_export);
            }
            if !step.is_done() {
                continue;
            }
            if is_missed_cache_import(step) {
                f.warnings += 1;
            } else if step.is_canceled() {
                f.canceled += 1;
            } else if step.failed() {
                f.failed += 1;
            } else if step.vertex.cached {
                f.cached += 1;
            } else {
                f.run += 1;
            }
        }
        f.warnings += warnings.len();
        if !context.is_empty() {
            f.context = Some(
                context
                    .values()
                    .fold((0, Duration::ZERO), |(b, t), (nb, nt)| (b + nb, t + *nt)),
            );
        }
        f
    }

    pub fn steps(&self) -> usize {
        self.run + self.cached + self.failed + self.canceled
    }
}

/// What the CLI knows when the build is over.
#[derive(Debug, Default, Clone)]
pub struct BuildEnd {
    /// Since the command started (daemon start-up included).
    pub total: Duration,
    pub succeeded: bool,
    /// The daemon's exporter response (`containerimage.digest`, `image.name`, ...).
    pub exporter_response: HashMap<String, String>,
    /// Files and directories written on this side.
    pub written: Vec<PathBuf>,
}

impl BuildEnd {
    /// The image digest, if an image was exported.
    pub fn digest(&self) -> Option<&str> {
        self.exporter_response
            .get("containerimage.digest")
            .map(String::as_str)
            .filter(|d| !d.is_empty())
    }

    /// The image names the exporter was given.
    pub fn names(&self) -> Vec<&str> {
        self.exporter_response
            .get("image.name")
            .map(|n| {
                n.split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The result lines: what was exported or written. Quiet mode prints
    /// only these.
    pub fn result_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let names: Vec<String> = self.names().into_iter().map(escape_str).collect();
        let digest = self.digest().map(escape_str);
        match (digest, names.is_empty()) {
            (Some(d), true) => lines.push(format!("image {d}")),
            (Some(d), false) => {
                for n in &names {
                    lines.push(format!("image {n}@{d}"));
                }
            }
            (None, false) => {
                for n in &names {
                    lines.push(format!("image {n}"));
                }
            }
            (None, true) => {}
        }
        for w in &self.written {
            lines.push(format!("wrote {}", escape_path(w)));
        }
        lines
    }
}

/// One line per cache import that found nothing, with the daemon's reason.
pub fn warning_lines(state: &BuildState, _end: &BuildEnd) -> Vec<String> {
    state
        .started_steps()
        .filter(|(_, s)| s.is_done() && is_missed_cache_import(s))
        .map(|(_, s)| {
            let source = &s.vertex.name[CACHE_IMPORT.len()..];
            format!(
                "warning: no build cache imported from {}: {}",
                escape_controls(source),
                escape_controls(&s.vertex.error)
            )
        })
        .collect()
}

/// The summary's lines, e.g.
/// `Build finished in 12.3s: 7 steps (5 run, 2 cached), 1 warning, context 1.98MB sent in 0.4s, cache export 1.2s`
/// followed by the result lines.
pub fn summary_lines(state: &BuildState, end: &BuildEnd) -> Vec<String> {
    let f = Figures::of(state);
    if f.steps() == 0 && !end.succeeded {
        // Nothing ran: the error alone says what happened.
        return Vec::new();
    }
    let mut parts = vec![format!("{} run", f.run), format!("{} cached", f.cached)];
    if f.failed > 0 {
        parts.push(format!("{} failed", f.failed));
    }
    if f.canceled > 0 {
        parts.push(format!("{} canceled", f.canceled));
    }
    let verb = if end.succeeded {
        "Build finished in"
    } else {
        "Build failed after"
    };
    let mut head = format!(
        "{verb} {}: {} steps ({})",
        seconds(end.total),
        f.steps(),
        parts.join(", ")
    );
    match f.warnings {
        0 => {}
        1 => head += ", 1 warning",
        n => head += &format!(", {n} warnings"),
    }
    if let Some((bytes, took)) = f.context {
        head += &format!(
            ", context {} sent in {}",
            format_bytes(bytes),
            seconds(took)
        );
    }
    if let Some(t) = f.cache_import {
        head += &format!(", cache import {}", seconds(t));
    }
    if let Some(t) = f.cache_export {
        head += &format!(", cache export {}", seconds(t));
    }
    let mut lines = vec![head];
    lines.extend(end.result_lines());
    lines
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The latest time mentioned by an update: the replay clock of tests.
pub fn latest_time(update: &Update) -> Option<SystemTime> {
    let vertex_times = update
        .vertexes
        .iter()
        .flat_map(|v| [v.started, v.completed]);
    let status_times = update
        .statuses
        .iter()
        .flat_map(|s| [s.timestamp, s.started, s.completed]);
    let log_times = update.logs.iter().map(|l| l.timestamp);
    vertex_times
        .chain(status_times)
        .chain(log_times)
        .flatten()
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::{Vertex, VertexStatus, Warning};

    fn at(ms: u64) -> Option<SystemTime> {
        Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_000_000 + ms))
    }

    fn v(d: &str, name: &str, s: u64, c: u64) -> Vertex {
        Vertex {
            digest: d.into(),
            name: name.into(),
            started: at(s),
            completed: at(c),
            ..Default::default()
        }
    }

    #[test]
    fn counts_steps_warnings_context_and_cache() {
        let mut state = BuildState::default();
        state.update(&Update {
            vertexes: vec![
                v("a", "[internal] load build context", 0, 100),
                Vertex {
                    cached: true,
                    ..v("b", "[1/2] COPY a b", 0, 0)
                },
                Vertex {
                    digest: "c".into(),
                    started: at(0),
                    ..Default::default()
                },
                Vertex {
                    error: "failed to configure registry cache importer: r/c:x: not found".into(),
                    ..v("i", "importing cache manifest from r/c:x", 0, 300)
                },
                v("e", "exporting cache to registry", 1000, 2200),
            ],
            statuses: vec![VertexStatus {
                id: CONTEXT_TRANSFER.into(),
                vertex: "a".into(),
                current: 2_000_000,
                started: at(0),
                completed: at(400),
                ..Default::default()
            }],
            warnings: vec![
                Warning {
                    vertex: "b".into(),
                    short: "lint".into(),
                    ..Default::default()
                },
                Warning {
                    vertex: "b".into(),
                    short: "lint".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        let end = BuildEnd {
            total: Duration::from_millis(12_340),
            succeeded: true,
            exporter_response: HashMap::from([
                ("containerimage.digest".into(), "sha256:abc".into()),
                ("image.name".into(), "r/a:1,r/a:2".into()),
            ]),
            written: vec![PathBuf::from("out.tar")],
        };
        assert_eq!(
            summary_lines(&state, &end),
            vec![
                "Build finished in 12.3s: 3 steps (2 run, 1 cached), 2 warnings, context 2.00MB sent in 0.4s, cache import 0.3s, cache export 1.2s",
                "image r/a:1@sha256:abc",
                "image r/a:2@sha256:abc",
                "wrote out.tar",
            ]
        );
        assert_eq!(
            warning_lines(&state, &end),
            vec!["warning: no build cache imported from r/c:x: failed to configure registry cache importer: r/c:x: not found"]
        );
    }
}
