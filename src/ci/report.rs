//! The facts a CI report gives about one build, taken from the progress
//! state and the build's end, and their Markdown form (for a Buildkite
//! annotation or a GitHub step summary).

use std::collections::HashMap;
use std::time::Duration;

use crate::progress::state::BuildState;
use crate::progress::summary::Figures;
use crate::progress::BuildEnd;
use crate::text::escape_str;

/// How many of the slowest steps a report lists.
pub const SLOWEST: usize = 5;

/// What a report says about one build.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BuildReport {
    pub succeeded: bool,
    pub total: Duration,
    pub run: usize,
    pub cached: usize,
    pub failed: usize,
    /// The longest steps that ran (not cached), longest first.
    pub slowest: Vec<(String, Duration)>,
    /// The failed steps' names.
    pub failed_steps: Vec<String>,
    /// Time spent importing and exporting cache, when any was.
    pub cache_import: Option<Duration>,
    pub cache_export: Option<Duration>,
    /// The image's digest (manifest or index), its ID as buildx reports
    /// it, and its names.
    pub digest: Option<String>,
    pub image_id: Option<String>,
    pub names: Vec<String>,
}

impl BuildReport {
    /// The report from the steps folded during the build and its end.
    pub fn new(state: &BuildState, end: &BuildEnd) -> BuildReport {
        let figures = Figures::of(state);
        let finished: Vec<_> = state
            .started_steps()
            .map(|(_, step)| step)
            .filter(|step| step.is_done() && !step.hidden)
            .collect();
        let epoch = std::time::SystemTime::UNIX_EPOCH;
        let mut slowest: Vec<(String, Duration)> = finished
            .iter()
            .filter(|step| !step.vertex.cached && step.vertex.error.is_empty())
            .map(|step| (step.vertex.name.clone(), step.duration(epoch)))
            .collect();
        slowest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        slowest.truncate(SLOWEST);
        let mut failed_steps: Vec<String> = finished
            .iter()
            .filter(|step| step.failed() && !crate::progress::summary::is_missed_cache_import(step))
            .map(|step| step.vertex.name.clone())
            .collect();
        failed_steps.sort();
        BuildReport {
            succeeded: end.succeeded,
            total: end.total,
            run: figures.run,
            cached: figures.cached,
            failed: figures.failed,
            slowest,
            failed_steps,
            cache_import: figures.cache_import,
            cache_export: figures.cache_export,
            digest: end.digest().map(str::to_string),
            image_id: image_id(&end.exporter_response),
            names: end.names().into_iter().map(str::to_string).collect(),
        }
    }

    /// The image pinned by digest (`NAME@DIGEST`, the first name), or the
    /// digest alone when the image has no name.
    pub fn pinned(&self) -> Option<String> {
        let digest = self.digest.as_ref()?;
        Some(match self.names.first() {
            Some(n) => format!("{}@{digest}", strip_tag(n)),
            None => digest.clone(),
        })
    }

    /// The report as Markdown, every name from the build escaped so it can
    /// neither break the layout nor inject HTML.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let verb = if self.succeeded {
            "succeeded in"
        } else {
            "failed after"
        };
        let mut counts = format!("{} run, {} cached", self.run, self.cached);
        if self.failed > 0 {
            counts += &format!(", {} failed", self.failed);
        }
        out += &format!(
            "**bkd build {verb} {}**: {} steps ({counts})\n\n",
            seconds(self.total),
            self.run + self.cached + self.failed
        );
        let mut facts: Vec<(&str, String)> = Vec::new();
        for n in &self.names {
            facts.push(("image", code(n)));
        }
        if let Some(d) = &self.digest {
            facts.push(("digest", code(d)));
        }
        if let Some(t) = self.cache_import {
            facts.push(("cache import", seconds(t)));
        }
        if let Some(t) = self.cache_export {
            facts.push(("cache export", seconds(t)));
        }
        for f in &self.failed_steps {
            facts.push(("failed step", code(f)));
        }
        if !facts.is_empty() {
            out += "| | |\n|---|---|\n";
            for (k, v) in facts {
                out += &format!("| {k} | {v} |\n");
            }
            out += "\n";
        }
        if !self.slowest.is_empty() {
            out += "| slowest steps | time |\n|---|---|\n";
            for (name, t) in &self.slowest {
                out += &format!("| {} | {} |\n", code(name), seconds(*t));
            }
        }
        out
    }
}

/// The image ID as buildx reports it (config digest of a single manifest,
/// else the manifest or index digest).
fn image_id(response: &HashMap<String, String>) -> Option<String> {
    response
        .get("containerimage.config.digest")
        .or_else(|| response.get("containerimage.digest"))
        .filter(|d| !d.is_empty())
        .cloned()
}

/// A reference without its tag (`r/app:1` → `r/app`), keeping a port.
fn strip_tag(name: &str) -> &str {
    let name = name.split('@').next().unwrap_or(name);
    match (name.rfind(':'), name.rfind('/')) {
        (Some(c), Some(s)) if c > s => &name[..c],
        (Some(c), None) => &name[..c],
        _ => name,
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// A name as inline code in a Markdown table cell: controls escaped, no
/// backtick or pipe to end the span or the cell, no HTML.
fn code(name: &str) -> String {
    let safe = escape_str(name)
        .replace('`', "'")
        .replace('|', "\\|")
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!("`{safe}`")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::{Update, Vertex};
    use std::time::SystemTime;

    fn at(ms: u64) -> Option<SystemTime> {
        Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_000_000 + ms))
    }

    fn step(digest: &str, name: &str, from: u64, to: u64, cached: bool) -> Vertex {
        Vertex {
            digest: digest.into(),
            name: name.into(),
            cached,
            started: at(from),
            completed: at(to),
            ..Default::default()
        }
    }

    #[test]
    fn report_from_a_tally() {
        let mut state = BuildState::default();
        state.update(&Update {
            vertexes: vec![
                step("a", "importing cache manifest from r/c:1", 0, 1_200, false),
                step("b", "[1/3] FROM base", 0, 0, true),
                step("c", "[2/3] RUN make | tee `log` <b>", 0, 8_000, false),
                step("d", "[3/3] RUN test", 8_000, 9_500, false),
                step("e", "exporting cache to registry", 9_500, 12_000, false),
            ],
            ..Default::default()
        });
        let end = BuildEnd {
            total: Duration::from_millis(13_000),
            succeeded: true,
            exporter_response: HashMap::from([
                ("containerimage.digest".into(), "sha256:aa".into()),
                ("containerimage.config.digest".into(), "sha256:cc".into()),
                (
                    "image.name".into(),
                    "localhost:5000/app:1,localhost:5000/app:latest".into(),
                ),
            ]),
            written: vec![],
        };
        let r = BuildReport::new(&state, &end);
        assert_eq!((r.run, r.cached, r.failed), (4, 1, 0));
        assert_eq!(
            r.slowest[0],
            (
                "[2/3] RUN make | tee `log` <b>".to_string(),
                Duration::from_secs(8)
            )
        );
        assert_eq!(r.cache_import, Some(Duration::from_millis(1_200)));
        assert_eq!(r.cache_export, Some(Duration::from_millis(2_500)));
        assert_eq!(r.image_id.as_deref(), Some("sha256:cc"));
        assert_eq!(r.pinned().as_deref(), Some("localhost:5000/app@sha256:aa"));
        let md = r.markdown();
        assert!(
            md.starts_with("**bkd build succeeded in 13.0s**: 5 steps (4 run, 1 cached)\n"),
            "{md}"
        );
        assert!(
            md.contains("| `[2/3] RUN make \\| tee 'log' &lt;b&gt;` | 8.0s |"),
            "{md}"
        );
        assert!(md.contains("| cache export | 2.5s |"), "{md}");
        assert!(md.contains("| digest | `sha256:aa` |"), "{md}");
    }

    #[test]
    fn tags_are_stripped_but_ports_kept() {
        assert_eq!(strip_tag("localhost:5000/app:1"), "localhost:5000/app");
        assert_eq!(strip_tag("localhost:5000/app"), "localhost:5000/app");
        assert_eq!(strip_tag("app:1"), "app");
        assert_eq!(strip_tag("app"), "app");
    }
}
