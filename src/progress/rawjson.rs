//! `--progress=rawjson`: one JSON object per status message, in the shape
//! `buildctl --progress=rawjson` prints (BuildKit's `SolveStatus`: camelCase
//! names, empty fields left out, byte fields in standard base64, times in
//! RFC 3339 with nanoseconds). The reader turns such lines back into
//! events, which is how recorded streams are replayed in tests.
//!
//! One difference: a warning's `sourceInfo.definition` (the build
//! definition that produced the file) is not carried by the events, so it
//! is not written.

use std::io::Write;
use std::time::{Duration, SystemTime};

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{
    BuildEnd, Display, ErrorSource, Log, ProgressGroup, SourceFile, SourceRange, Update, Vertex,
    VertexStatus, Warning,
};

/// Writes each update as one JSON line.
pub struct RawJson<W: Write> {
    out: W,
}

impl<W: Write> RawJson<W> {
    pub fn new(out: W) -> Self {
        RawJson { out }
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write + Send> Display for RawJson<W> {
    fn update(&mut self, update: &Update) {
        let _ = writeln!(self.out, "{}", to_line(update));
        let _ = self.out.flush();
    }

    fn finish(&mut self) {}

    /// As buildctl, the failing Dockerfile lines follow the stream.
    fn error_sources(&mut self, sources: &[ErrorSource]) {
        for line in sources.iter().flat_map(ErrorSource::excerpt) {
            let _ = writeln!(self.out, "{line}");
        }
        let _ = self.out.flush();
    }

    /// The stream is the whole output: no summary line in it.
    fn summary(&mut self, _end: &BuildEnd) {}
}

/// Another display with every status message also written, as
/// [`RawJson`] writes it, to a file of the user's (`--progress-record`):
/// the stream behind what the display drew, to replay or to report.
pub fn recorded(inner: Box<dyn Display>, file: std::fs::File) -> Box<dyn Display> {
    let mut raw = RawJson::new(std::io::BufWriter::new(file));
    Box::new(super::Tapped::new(inner, move |update: &Update| {
        raw.update(update)
    }))
}

/// One update as a JSON line (no newline).
pub fn to_line(update: &Update) -> String {
    let status = JsonStatus::from(update);
    let text = serde_json::to_string(&status).unwrap_or_else(|_| "{}".into());
    escape_like_go(&text)
}

/// Reads one line written by [`to_line`] or by buildctl.
pub fn from_line(line: &str) -> Result<Update, String> {
    let status: JsonStatus = serde_json::from_str(line).map_err(|e| e.to_string())?;
    status.into_update()
}

/// Go's JSON encoder escapes `<`, `>`, `&` and the two Unicode line
/// separators; outside strings these never occur in JSON, so replacing
/// them everywhere is safe.
fn escape_like_go(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Serialize, Deserialize, Default)]
struct JsonStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    vertexes: Vec<JsonVertex>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    statuses: Vec<JsonVertexStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    logs: Vec<JsonLog>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<JsonWarning>,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct JsonVertex {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    digest: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    inputs: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    started: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    completed: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    cached: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    progress_group: Option<JsonGroup>,
}

#[derive(Serialize, Deserialize, Default)]
struct JsonGroup {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(default, skip_serializing_if = "is_false")]
    weak: bool,
}

#[derive(Serialize, Deserialize, Default)]
struct JsonVertexStatus {
    #[serde(default)]
    id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    vertex: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    total: i64,
    #[serde(default)]
    current: i64,
    #[serde(default)]
    timestamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    started: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    completed: Option<String>,
}

#[derive(Serialize, Deserialize, Default)]
struct JsonLog {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    vertex: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    stream: i64,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    timestamp: String,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct JsonWarning {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    vertex: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    level: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    short: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    detail: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source_info: Option<JsonSourceInfo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    range: Vec<JsonRange>,
}

#[derive(Serialize, Deserialize, Default)]
struct JsonSourceInfo {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    filename: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    data: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    language: String,
}

#[derive(Serialize, Deserialize, Default)]
struct JsonRange {
    #[serde(default)]
    start: JsonPosition,
    #[serde(default)]
    end: JsonPosition,
}

#[derive(Serialize, Deserialize, Default)]
struct JsonPosition {
    #[serde(default, skip_serializing_if = "is_zero32")]
    line: i32,
    #[serde(default, skip_serializing_if = "is_zero32")]
    character: i32,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

fn is_zero32(n: &i32) -> bool {
    *n == 0
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn unb64(text: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("invalid base64: {e}"))
}

fn unb64_text(text: &str) -> Result<String, String> {
    Ok(String::from_utf8_lossy(&unb64(text)?).into_owned())
}

fn time_text(t: Option<SystemTime>) -> Option<String> {
    t.map(format_rfc3339)
}

/// Go's zero time, which its JSON encoder writes for an unset timestamp.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn parse_time(text: Option<&str>) -> Result<Option<SystemTime>, String> {
    match text {
        None => Ok(None),
        Some(t) => parse_rfc3339(t),
    }
}

impl From<&Update> for JsonStatus {
    fn from(u: &Update) -> Self {
        JsonStatus {
            vertexes: u
                .vertexes
                .iter()
                .map(|v| JsonVertex {
                    digest: v.digest.clone(),
                    inputs: v.inputs.clone(),
                    name: v.name.clone(),
                    started: time_text(v.started),
                    completed: time_text(v.completed),
                    cached: v.cached,
                    error: v.error.clone(),
                    progress_group: v.progress_group.as_ref().map(|g| JsonGroup {
                        id: g.id.clone(),
                        name: g.name.clone(),
                        weak: g.weak,
                    }),
                })
                .collect(),
            statuses: u
                .statuses
                .iter()
                .map(|s| JsonVertexStatus {
                    id: s.id.clone(),
                    vertex: s.vertex.clone(),
                    name: s.name.clone(),
                    total: s.total,
                    current: s.current,
                    timestamp: time_text(s.timestamp).unwrap_or_else(|| ZERO_TIME.into()),
                    started: time_text(s.started),
                    completed: time_text(s.completed),
                })
                .collect(),
            logs: u
                .logs
                .iter()
                .map(|l| JsonLog {
                    vertex: l.vertex.clone(),
                    stream: l.stream,
                    data: Some(b64(&l.data)),
                    timestamp: time_text(l.timestamp).unwrap_or_else(|| ZERO_TIME.into()),
                })
                .collect(),
            warnings: u
                .warnings
                .iter()
                .map(|w| JsonWarning {
                    vertex: w.vertex.clone(),
                    level: w.level,
                    short: b64(w.short.as_bytes()),
                    detail: w.detail.iter().map(|d| b64(d.as_bytes())).collect(),
                    url: w.url.clone(),
                    source_info: w.source.as_ref().map(|s| JsonSourceInfo {
                        filename: s.filename.clone(),
                        data: b64(&s.data),
                        language: s.language.clone(),
                    }),
                    range: w
                        .ranges
                        .iter()
                        .map(|r| JsonRange {
                            start: JsonPosition {
                                line: r.start.0,
                                character: r.start.1,
                            },
                            end: JsonPosition {
                                line: r.end.0,
                                character: r.end.1,
                            },
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

impl JsonStatus {
    fn into_update(self) -> Result<Update, String> {
        let mut u = Update::default();
        for v in self.vertexes {
            u.vertexes.push(Vertex {
                digest: v.digest,
                inputs: v.inputs,
                name: v.name,
                cached: v.cached,
                started: parse_time(v.started.as_deref())?,
                completed: parse_time(v.completed.as_deref())?,
                error: v.error,
                progress_group: v.progress_group.map(|g| ProgressGroup {
                    id: g.id,
                    name: g.name,
                    weak: g.weak,
                }),
            });
        }
        for s in self.statuses {
            u.statuses.push(VertexStatus {
                id: s.id,
                vertex: s.vertex,
                name: s.name,
                current: s.current,
                total: s.total,
                timestamp: parse_time(Some(&s.timestamp))?,
                started: parse_time(s.started.as_deref())?,
                completed: parse_time(s.completed.as_deref())?,
            });
        }
        for l in self.logs {
            u.logs.push(Log {
                vertex: l.vertex,
                timestamp: parse_time(Some(&l.timestamp))?,
                stream: l.stream,
                data: unb64(l.data.as_deref().unwrap_or_default())?.into(),
            });
        }
        for w in self.warnings {
            u.warnings.push(Warning {
                vertex: w.vertex,
                level: w.level,
                short: unb64_text(&w.short)?,
                detail: w
                    .detail
                    .iter()
                    .map(|d| unb64_text(d))
                    .collect::<Result<_, _>>()?,
                url: w.url,
                source: match w.source_info {
                    Some(s) => Some(SourceFile {
                        filename: s.filename,
                        data: unb64(&s.data)?.into(),
                        language: s.language,
                    }),
                    None => None,
                },
                ranges: w
                    .range
                    .iter()
                    .map(|r| SourceRange {
                        start: (r.start.line, r.start.character),
                        end: (r.end.line, r.end.character),
                    })
                    .collect(),
            });
        }
        Ok(u)
    }
}

/// Days since 1970-01-01 to a civil date (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A civil date to days since 1970-01-01.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// UTC time in RFC 3339 with trailing zeros of the fraction dropped, as
/// Go writes times in JSON.
pub fn format_rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    let mut text = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    let nanos = d.subsec_nanos();
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        text.push('.');
        text.push_str(frac.trim_end_matches('0'));
    }
    text.push('Z');
    text
}

/// Parses RFC 3339 (`Z` or a numeric offset); times before 1970, such as
/// Go's zero time, mean "unset".
pub fn parse_rfc3339(text: &str) -> Result<Option<SystemTime>, String> {
    let bad = || format!("invalid time {text:?}");
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        text.get(r)
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(bad)
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &text[19..];
    let mut nanos: u32 = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let mut padded = frac[..digits.min(9)].to_string();
        while padded.len() < 9 {
            padded.push('0');
        }
        nanos = padded.parse().map_err(|_| bad())?;
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) => {
            let h = o[1..3].parse::<i64>().map_err(|_| bad())?;
            let m = o[4..6].parse::<i64>().map_err(|_| bad())?;
            (h * 3600 + m * 60) * if o.starts_with('-') { -1 } else { 1 }
        }
        _ => return Err(bad()),
    };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(bad());
    }
    let days = days_from_civil(year, month as u32, day as u32);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset;
    if secs < 0 {
        return Ok(None);
    }
    Ok(Some(
        SystemTime::UNIX_EPOCH + Duration::new(secs as u64, nanos),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_like_go() {
        let t = parse_rfc3339("2026-11-26T20:31:10.818182443Z")
            .expect("parses")
            .expect("set");
        assert_eq!(format_rfc3339(t), "2026-11-26T20:31:10.818182443Z");
        let t = parse_rfc3339("2024-02-29T23:59:59.5Z")
            .expect("parses")
            .expect("set");
        assert_eq!(format_rfc3339(t), "2024-02-29T23:59:59.5Z");
        let t = parse_rfc3339("2024-03-01T01:00:00+01:00")
            .expect("parses")
            .expect("set");
        assert_eq!(format_rfc3339(t), "2024-03-01T00:00:00Z");
        assert_eq!(parse_rfc3339(ZERO_TIME), Ok(None));
        assert!(parse_rfc3339("yesterday").is_err());
    }

    #[test]
    fn escapes_html_characters_like_go() {
        let u = Update {
            vertexes: vec![Vertex {
                digest: "sha256:x".into(),
                name: "RUN echo a > b && c < d".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            to_line(&u),
            r#"{"vertexes":[{"digest":"sha256:x","name":"RUN echo a \u003e b \u0026\u0026 c \u003c d"}]}"#
        );
        assert_eq!(from_line(&to_line(&u)), Ok(u));
    }
}
