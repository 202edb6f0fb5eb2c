//! Progress events as plain data.

use std::time::SystemTime;

use bytes::Bytes;

/// A full snapshot of one build step; later snapshots replace earlier ones.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vertex {
    pub digest: String,
    pub inputs: Vec<String>,
    pub name: String,
    pub cached: bool,
    pub started: Option<SystemTime>,
    pub completed: Option<SystemTime>,
    pub error: String,
    pub progress_group: Option<ProgressGroup>,
}

/// Steps the daemon asks to be shown together (e.g. one image pull).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProgressGroup {
    pub id: String,
    pub name: String,
    pub weak: bool,
}

/// Sub-progress of a step, such as a transfer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VertexStatus {
    pub id: String,
    pub vertex: String,
    pub name: String,
    pub current: i64,
    pub total: i64,
    pub timestamp: Option<SystemTime>,
    pub started: Option<SystemTime>,
    pub completed: Option<SystemTime>,
}

/// A chunk of a step's output; not aligned to lines.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Log {
    pub vertex: String,
    pub timestamp: Option<SystemTime>,
    /// 1 = stdout, 2 = stderr.
    pub stream: i64,
    pub data: Bytes,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Warning {
    pub vertex: String,
    pub level: i64,
    pub short: String,
    pub detail: Vec<String>,
    pub url: String,
    /// The file the warning is about (e.g. the Dockerfile), if the daemon said.
    pub source: Option<SourceFile>,
    pub ranges: Vec<SourceRange>,
}

/// A source file named by a warning. The daemon also sends the build
/// definition that produced it; that stays out of the display.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceFile {
    pub filename: String,
    pub data: Bytes,
    pub language: String,
}

/// Lines and columns as the daemon counts them (lines from 1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceRange {
    pub start: (i32, i32),
    pub end: (i32, i32),
}

impl Warning {
    /// `Dockerfile:5` or `Dockerfile:5-7`, when the daemon named a place.
    pub fn location(&self) -> Option<String> {
        let file = self.source.as_ref().map(|s| s.filename.as_str());
        let range = self.ranges.first();
        match (file, range) {
            (None, None) => None,
            (file, None) => file.map(str::to_string),
            (file, Some(r)) => {
                let file = file.unwrap_or("line");
                let sep = if file == "line" { " " } else { ":" };
                if r.end.0 > r.start.0 {
                    Some(format!("{file}{sep}{}-{}", r.start.0, r.end.0))
                } else {
                    Some(format!("{file}{sep}{}", r.start.0))
                }
            }
        }
    }

    /// The source lines the warning points at, numbered.
    pub fn source_lines(&self) -> Vec<String> {
        let (Some(source), Some(range)) = (&self.source, self.ranges.first()) else {
            return Vec::new();
        };
        let text = String::from_utf8_lossy(&source.data);
        let first = range.start.0.max(1) as usize;
        let last = range.end.0.max(range.start.0).max(1) as usize;
        text.lines()
            .enumerate()
            .skip(first - 1)
            .take(last - first + 1)
            .map(|(i, l)| format!("{:>4} | {l}", i + 1))
            .collect()
    }
}

/// The daemon ends a step's log stream with this line when the step wrote
/// more than its limit (`BUILDKIT_STEP_LOG_MAX_SIZE`, 2 MiB by default, or
/// the per-second rate limit); the rest of the output is dropped.
const CLIP_MARKER: &str = "[output clipped, log limit ";

/// The limit named in a clip notice in this log chunk, e.g. `2MiB` or
/// `200KiB/s`.
pub fn clip_limit(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    let at = text.find(CLIP_MARKER)?;
    let rest = &text[at + CLIP_MARKER.len()..];
    let end = rest.find(" reached]")?;
    Some(rest[..end].to_string())
}

/// The plain-words notice every renderer prints for a clipped step log.
pub fn clip_notice(limit: &str) -> String {
    if limit.ends_with("/s") {
        format!("output clipped by buildkitd: this step logged faster than {limit}; lines are missing (raise BUILDKIT_STEP_LOG_MAX_SPEED in buildkitd's environment)")
    } else {
        format!("output clipped by buildkitd: this step logged more than {limit}; later lines are missing (raise BUILDKIT_STEP_LOG_MAX_SIZE in buildkitd's environment)")
    }
}

/// One message of the status stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    pub vertexes: Vec<Vertex>,
    pub statuses: Vec<VertexStatus>,
    pub logs: Vec<Log>,
    pub warnings: Vec<Warning>,
}

impl Update {
    pub fn is_empty(&self) -> bool {
        self.vertexes.is_empty()
            && self.statuses.is_empty()
            && self.logs.is_empty()
            && self.warnings.is_empty()
    }
}
