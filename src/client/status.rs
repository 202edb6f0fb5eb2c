//! Converts the daemon's status messages into progress events, once.

use std::time::{Duration, SystemTime};

use crate::progress::{Log, Update, Vertex, VertexStatus, Warning};
use crate::proto::moby::buildkit::v1 as pb;

fn time(ts: Option<prost_types::Timestamp>) -> Option<SystemTime> {
    let ts = ts?;
    let secs = u64::try_from(ts.seconds).ok()?;
    let nanos = u32::try_from(ts.nanos).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
}

pub fn convert(resp: pb::StatusResponse) -> Update {
    Update {
        vertexes: resp
            .vertexes
            .into_iter()
            .map(|v| Vertex {
                digest: v.digest,
                inputs: v.inputs,
                name: v.name,
                cached: v.cached,
                started: time(v.started),
                completed: time(v.completed),
                error: v.error,
            })
            .collect(),
        statuses: resp
            .statuses
            .into_iter()
            .map(|s| VertexStatus {
                id: s.id,
                vertex: s.vertex,
                name: s.name,
                current: s.current,
                total: s.total,
                timestamp: time(s.timestamp),
                started: time(s.started),
                completed: time(s.completed),
            })
            .collect(),
        logs: resp
            .logs
            .into_iter()
            .map(|l| Log {
                vertex: l.vertex,
                timestamp: time(l.timestamp),
                stream: l.stream,
                data: l.msg,
            })
            .collect(),
        warnings: resp
            .warnings
            .into_iter()
            .map(|w| Warning {
                vertex: w.vertex,
                level: w.level,
                short: String::from_utf8_lossy(&w.short).into_owned(),
                url: w.url,
            })
            .collect(),
    }
}
