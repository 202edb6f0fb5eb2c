//! A rawjson stream replayed in order, independently of bkd's own code:
//! per vertex, each run keyed by its start time, and its latest snapshot.
//! What the daemon's state is at the end of the build.

use std::collections::BTreeMap;

use super::normalise::scrub;

#[derive(Debug, Default)]
pub struct Vertex {
    pub name: String,
    pub cached: bool,
    pub error: String,
    /// Digests of the vertices it takes as input.
    pub inputs: Vec<String>,
    /// Start time (sortable text) to completion time (None while running).
    pub runs: BTreeMap<String, Option<String>>,
}

#[derive(Debug, Default)]
pub struct Replayed {
    pub vertexes: BTreeMap<String, Vertex>,
    pub lines: usize,
}

/// Folds the JSON lines of `stderr` in order.
pub fn fold(stderr: &str, nonce: &str) -> Replayed {
    let mut r = Replayed::default();
    for line in stderr.lines().filter(|l| l.starts_with('{')) {
        r.lines += 1;
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        for x in v["vertexes"].as_array().into_iter().flatten() {
            let digest = x["digest"].as_str().unwrap_or_default().to_string();
            let entry = r.vertexes.entry(digest).or_default();
            let started = x["started"].as_str().map(str::to_string);
            // A snapshot without a start does not undo a started vertex.
            if started.is_none() && !entry.runs.is_empty() {
                continue;
            }
            entry.name = scrub(x["name"].as_str().unwrap_or_default(), nonce);
            entry.inputs = x["inputs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect();
            entry.cached = x["cached"].as_bool().unwrap_or(false);
            entry.error = scrub(x["error"].as_str().unwrap_or_default(), nonce);
            if let Some(s) = started {
                entry
                    .runs
                    .insert(sort_key(&s), x["completed"].as_str().map(str::to_string));
            }
        }
    }
    r
}

/// An RFC 3339 time in UTC (`...:SS[.fraction]Z`, as Go writes it, with
/// trailing zeros of the fraction dropped) as text that sorts in time.
fn sort_key(t: &str) -> String {
    let t = t.trim_end_matches('Z');
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    format!("{whole}.{frac:0<9}")
}

impl Replayed {
    /// Vertices that started and whose latest run never finished.
    pub fn unfinished(&self) -> Vec<String> {
        self.vertexes
            .values()
            .filter(|v| v.runs.values().last().is_some_and(|c| c.is_none()))
            .map(|v| format!("vertex left running: {}", v.name))
            .collect()
    }

    /// (a, b) where step b depends on step a, directly or not, by name.
    pub fn dependencies(&self) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        for v in self.vertexes.values() {
            let mut todo: Vec<&String> = v.inputs.iter().collect();
            let mut seen: Vec<&String> = Vec::new();
            while let Some(d) = todo.pop() {
                if seen.contains(&d) {
                    continue;
                }
                seen.push(d);
                if let Some(input) = self.vertexes.get(d) {
                    if !input.name.is_empty() && input.name != v.name {
                        pairs.push((input.name.clone(), v.name.clone()));
                    }
                    todo.extend(input.inputs.iter());
                }
            }
        }
        pairs.sort();
        pairs.dedup();
        pairs
    }

    /// How each started vertex ended, by name: sorted, for comparison.
    pub fn ends(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .vertexes
            .values()
            .filter(|v| !v.runs.is_empty())
            .map(|v| {
                let end = if v.error.ends_with("context canceled") {
                    "canceled".to_string()
                } else if !v.error.is_empty() {
                    format!("error: {}", v.error)
                } else if v.cached {
                    "cached".to_string()
                } else {
                    "done".to_string()
                };
                (v.name.clone(), end)
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }
}
