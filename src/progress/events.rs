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
}

impl Vertex {
    /// Whether this snapshot only marks an already finished step as cached
    /// (the daemon re-sends inputs that way when a dependent starts); the
    /// step's real result stays what it was.
    pub fn is_cache_resend_of(&self, earlier: &Vertex) -> bool {
        self.cached
            && self.error.is_empty()
            && self.started.is_some()
            && self.started == self.completed
            && earlier.completed.is_some()
            && !earlier.cached
    }
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
    pub url: String,
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
    /// Folds a later message into this one: snapshots replace earlier
    /// snapshots of the same vertex or status, logs and warnings append.
    pub fn merge(&mut self, later: Update) {
        for v in later.vertexes {
            match self.vertexes.iter_mut().find(|x| x.digest == v.digest) {
                Some(old) if v.is_cache_resend_of(old) => {}
                Some(old) => *old = v,
                None => self.vertexes.push(v),
            }
        }
        for s in later.statuses {
            match self
                .statuses
                .iter_mut()
                .find(|x| x.vertex == s.vertex && x.id == s.id)
            {
                Some(old) => *old = s,
                None => self.statuses.push(s),
            }
        }
        self.logs.extend(later.logs);
        self.warnings.extend(later.warnings);
    }

    pub fn is_empty(&self) -> bool {
        self.vertexes.is_empty()
            && self.statuses.is_empty()
            && self.logs.is_empty()
            && self.warnings.is_empty()
    }
}
