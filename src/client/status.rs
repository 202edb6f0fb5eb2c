//! Converts the daemon's status messages into progress events, once.

use std::time::{Duration, SystemTime};

use crate::progress::{
    Log, ProgressGroup, SourceFile, SourceRange, Update, Vertex, VertexStatus, Warning,
};
use crate::proto::moby::buildkit::v1 as pb;
use crate::proto::pb as llb;

fn time(ts: Option<prost_types::Timestamp>) -> Option<SystemTime> {
    let ts = ts?;
    let secs = u64::try_from(ts.seconds).ok()?;
    let nanos = u32::try_from(ts.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)?;
    // A daemon can send any value: one past what the clock holds is no time.
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

fn range(r: llb::Range) -> SourceRange {
    let pos = |p: Option<llb::Position>| p.map(|p| (p.line, p.character)).unwrap_or_default();
    SourceRange {
        start: pos(r.start),
        end: pos(r.end),
    }
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
                progress_group: v.progress_group.map(|g| ProgressGroup {
                    id: g.id,
                    name: g.name,
                    weak: g.weak,
                }),
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
                detail: w
                    .detail
                    .iter()
                    .map(|d| String::from_utf8_lossy(d).into_owned())
                    .collect(),
                url: w.url,
                source: w.info.map(|i| SourceFile {
                    filename: i.filename,
                    data: i.data,
                    language: i.language,
                }),
                ranges: w.ranges.into_iter().map(range).collect(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hostile daemon's timestamps are no time, never a panic.
    #[test]
    fn out_of_range_timestamps_are_no_time() {
        let ts = |seconds, nanos| Some(prost_types::Timestamp { seconds, nanos });
        assert_eq!(time(ts(i64::MAX, 1_000_000_000)), None);
        assert_eq!(time(ts(1, 1_000_000_000)), None);
        assert_eq!(time(ts(-1, 0)), None);
        assert_eq!(
            time(ts(1, 5)),
            Some(SystemTime::UNIX_EPOCH + Duration::new(1, 5))
        );
    }
}
