//! The end-of-build summary: total time, steps run and cached, the build
//! context sent, and what was exported. Step and context figures come from
//! the status stream ([`Tally`]); the rest from the CLI ([`BuildEnd`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::{format_bytes, Update, Vertex};

/// The status id under which the daemon reports the context transfer.
const CONTEXT_TRANSFER: &str = "transferring context:";

/// Step and context figures, folded from the status stream.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    steps: HashMap<String, Vertex>,
    /// Per transfer vertex: bytes and time.
    context: HashMap<String, (i64, Duration)>,
}

impl Tally {
    pub fn update(&mut self, update: &Update) {
        for v in &update.vertexes {
            match self.steps.get(&v.digest) {
                Some(old) if v.is_cache_resend_of(old) => {}
                _ => {
                    self.steps.insert(v.digest.clone(), v.clone());
                }
            }
        }
        for s in update.statuses.iter().filter(|s| s.id == CONTEXT_TRANSFER) {
            let end = s.completed.or(s.timestamp);
            let took = match (s.started, end) {
                (Some(a), Some(b)) => b.duration_since(a).unwrap_or_default(),
                _ => Duration::ZERO,
            };
            self.context.insert(s.vertex.clone(), (s.current, took));
        }
    }

    /// (run, cached, failed) among the finished steps.
    pub fn counts(&self) -> (usize, usize, usize) {
        let (mut run, mut cached, mut failed) = (0, 0, 0);
        for v in self.steps.values().filter(|v| v.completed.is_some()) {
            if !v.error.is_empty() {
                failed += 1;
            } else if v.cached {
                cached += 1;
            } else {
                run += 1;
            }
        }
        (run, cached, failed)
    }

    /// The finished steps, each as last reported, for reports written
    /// outside the progress display (CI annotations).
    pub fn finished_steps(&self) -> impl Iterator<Item = &Vertex> {
        self.steps.values().filter(|v| v.completed.is_some())
    }

    /// Context bytes sent and the time the transfers took, if any ran.
    pub fn context(&self) -> Option<(i64, Duration)> {
        if self.context.is_empty() {
            return None;
        }
        Some(
            self.context
                .values()
                .fold((0, Duration::ZERO), |(b, t), (nb, nt)| (b + nb, t + *nt)),
        )
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
        let names = self.names();
        match (self.digest(), names.is_empty()) {
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
            lines.push(format!("wrote {}", w.display()));
        }
        lines
    }
}

/// The summary's lines, e.g.
/// `Build finished in 12.3s: 7 steps (5 run, 2 cached), context 1.98MB sent in 0.4s`
/// followed by the result lines.
pub fn summary_lines(tally: &Tally, end: &BuildEnd) -> Vec<String> {
    let (run, cached, failed) = tally.counts();
    let total = run + cached + failed;
    if total == 0 && !end.succeeded {
        // Nothing started: the error alone says what happened.
        return Vec::new();
    }
    let mut parts = vec![format!("{run} run"), format!("{cached} cached")];
    if failed > 0 {
        parts.push(format!("{failed} failed"));
    }
    let verb = if end.succeeded {
        "Build finished in"
    } else {
        "Build failed after"
    };
    let mut head = format!(
        "{verb} {}: {total} steps ({})",
        seconds(end.total),
        parts.join(", ")
    );
    if let Some((bytes, took)) = tally.context() {
        head += &format!(
            ", context {} sent in {}",
            format_bytes(bytes),
            seconds(took)
        );
    }
    let mut lines = vec![head];
    lines.extend(end.result_lines());
    lines
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The latest time mentioned by an update: the replay clock of tests and
/// of renderers that must not read the wall clock.
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
    use crate::progress::VertexStatus;

    fn at(ms: u64) -> Option<SystemTime> {
        Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_000_000 + ms))
    }

    #[test]
    fn counts_steps_and_context() {
        let mut t = Tally::default();
        t.update(&Update {
            vertexes: vec![
                Vertex {
                    digest: "a".into(),
                    started: at(0),
                    completed: at(100),
                    ..Default::default()
                },
                Vertex {
                    digest: "b".into(),
                    cached: true,
                    started: at(0),
                    completed: at(0),
                    ..Default::default()
                },
                Vertex {
                    digest: "c".into(),
                    started: at(0),
                    ..Default::default()
                },
            ],
            statuses: vec![VertexStatus {
                id: CONTEXT_TRANSFER.into(),
                vertex: "a".into(),
                current: 2_000_000,
                started: at(0),
                completed: at(400),
                ..Default::default()
            }],
            ..Default::default()
        });
        // A finished step re-sent as cached stays a step that ran.
        t.update(&Update {
            vertexes: vec![Vertex {
                digest: "a".into(),
                cached: true,
                started: at(500),
                completed: at(500),
                ..Default::default()
            }],
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
            summary_lines(&t, &end),
            vec![
                "Build finished in 12.3s: 2 steps (1 run, 1 cached), context 2.00MB sent in 0.4s",
                "image r/a:1@sha256:abc",
                "image r/a:2@sha256:abc",
                "wrote out.tar",
            ]
        );
    }
}
