//! The details buildkitd attaches to a failed call, in the gRPC status
//! (`grpc-status-details-bin`, a `google.rpc.Status`): the source location
//! of the failing Dockerfile instruction and the failing vertex. Each
//! detail is an `Any` whose value is JSON, as BuildKit's error types encode
//! themselves; details of other types (stack traces, ...) are skipped.

use base64::Engine;
use prost::Message;
use serde::Deserialize;

use crate::progress::{ErrorSource, SourceRange};
use crate::proto::google::rpc::Status;

const SOURCE_TYPE: &str = "github.com/moby/buildkit/errdefs.Source+json";
const VERTEX_TYPE: &str = "github.com/moby/buildkit/errdefs.Vertex+json";

/// What a failed call's details say, in the order the daemon listed them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FailureDetails {
    pub sources: Vec<ErrorSource>,
    /// Digests of the failing vertices.
    pub vertexes: Vec<String>,
}

#[derive(Deserialize)]
struct JsonSource {
    #[serde(default)]
    info: Option<JsonInfo>,
    #[serde(default)]
    ranges: Vec<JsonRange>,
}

#[derive(Deserialize)]
struct JsonInfo {
    #[serde(default)]
    filename: String,
    /// Standard base64, as Go encodes byte slices.
    #[serde(default)]
    data: String,
    #[serde(default)]
    language: String,
}

#[derive(Deserialize, Default)]
struct JsonRange {
    #[serde(default)]
    start: JsonPosition,
    #[serde(default)]
    end: JsonPosition,
}

#[derive(Deserialize, Default)]
struct JsonPosition {
    #[serde(default)]
    line: i32,
    #[serde(default)]
    character: i32,
}

#[derive(Deserialize)]
struct JsonVertex {
    #[serde(default)]
    digest: String,
}

/// Decodes the details of `status`; anything malformed is left out (the
/// error message itself always stays).
pub fn decode(status: &tonic::Status) -> FailureDetails {
    decode_bytes(status.details())
}

fn decode_bytes(details: &[u8]) -> FailureDetails {
    let mut out = FailureDetails::default();
    if details.is_empty() {
        return out;
    }
    let Ok(status) = Status::decode(details) else {
        tracing::debug!("undecodable gRPC status details");
        return out;
    };
    for any in status.details {
        match any.type_url.as_str() {
            SOURCE_TYPE => match serde_json::from_slice::<JsonSource>(&any.value) {
                Ok(s) => {
                    let ranges: Vec<String> = s
                        .ranges
                        .iter()
                        .map(|r| format!("{}-{}", r.start.line, r.end.line))
                        .collect();
                    tracing::debug!(lines = ?ranges, "error source");
                    out.sources.extend(source(s));
                }
                Err(e) => tracing::debug!(error = %e, "undecodable source detail"),
            },
            VERTEX_TYPE => match serde_json::from_slice::<JsonVertex>(&any.value) {
                Ok(v) if !v.digest.is_empty() => out.vertexes.push(v.digest),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "undecodable vertex detail"),
            },
            other => tracing::trace!(type_url = other, "error detail skipped"),
        }
    }
    out
}

fn source(s: JsonSource) -> Option<ErrorSource> {
    let info = s.info?;
    let data = base64::engine::general_purpose::STANDARD
        .decode(info.data.as_bytes())
        .ok()?;
    Some(ErrorSource {
        filename: info.filename,
        data: data.into(),
        language: info.language,
        ranges: s
            .ranges
            .into_iter()
            .map(|r| SourceRange {
                start: (r.start.line, r.start.character),
                end: (r.end.line, r.end.character),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::Any;

    fn encoded(details: Vec<Any>) -> Vec<u8> {
        Status {
            code: 2,
            message: "failed".into(),
            details,
        }
        .encode_to_vec()
    }

    #[test]
    fn sources_and_vertexes_in_order() {
        let data = base64::engine::general_purpose::STANDARD.encode("FROM a\nRUN x\n");
        let bytes = encoded(vec![
            Any {
                type_url: "github.com/moby/buildkit/stack.Stack+json".into(),
                value: br#"{"frames":[]}"#.to_vec(),
            },
            Any {
                type_url: VERTEX_TYPE.into(),
                value: br#"{"digest":"sha256:ab"}"#.to_vec(),
            },
            Any {
                type_url: SOURCE_TYPE.into(),
                value: format!(
                    r#"{{"info":{{"filename":"Dockerfile","data":"{data}","language":"Dockerfile"}},"ranges":[{{"start":{{"line":2}},"end":{{"line":2}}}}]}}"#
                )
                .into_bytes(),
            },
            Any {
                type_url: SOURCE_TYPE.into(),
                value: b"not json".to_vec(),
            },
        ]);
        let d = decode_bytes(&bytes);
        assert_eq!(d.vertexes, vec!["sha256:ab".to_string()]);
        assert_eq!(d.sources.len(), 1);
        assert_eq!(d.sources[0].filename, "Dockerfile");
        assert_eq!(&d.sources[0].data[..], b"FROM a\nRUN x\n");
        assert_eq!(
            d.sources[0].ranges,
            vec![SourceRange {
                start: (2, 0),
                end: (2, 0)
            }]
        );
    }

    #[test]
    fn garbage_is_no_details() {
        assert_eq!(decode_bytes(b"\xff\xff\xff"), FailureDetails::default());
        assert_eq!(decode_bytes(b""), FailureDetails::default());
    }
}
