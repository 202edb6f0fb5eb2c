//! buildctl's plain progress (and bkd's) reduced to what must agree
//! between two runs of the same build: the steps in the order they were
//! numbered, each with its terminal state, its output lines, the transfer
//! statuses it finished and its warnings; the failing steps' last lines,
//! the Dockerfile excerpt and the error line. Times, sizes, step numbers,
//! digests and the build's nonce are taken out.

use std::collections::BTreeMap;

/// How a step ended, as its last completion line says.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum End {
    Done,
    Cached,
    Error(String),
    Canceled,
    /// No completion line: the step was left open.
    Open,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Step {
    pub name: String,
    pub end: End,
    /// The step's DONE time, from its last completion line.
    pub seconds: Option<String>,
    /// Output lines, without their times.
    pub logs: Vec<String>,
    /// Statuses that finished (`... done`), without sizes and times.
    pub statuses: Vec<String>,
    pub warnings: Vec<String>,
}

/// A whole run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    /// In the order of their numbers.
    pub steps: Vec<Step>,
    /// `------` blocks: the step name and its last lines (times removed).
    pub failures: Vec<Vec<String>>,
    /// The Dockerfile excerpt lines.
    pub excerpt: Vec<String>,
    /// The `error:` line.
    pub error: Option<String>,
}

fn re(pattern: &str) -> regex::Regex {
    regex::Regex::new(pattern).expect("regex")
}

/// Replaces what differs between runs of one build: the nonce, digests,
/// cache refs and worker ids, registry ports.
pub fn scrub(text: &str, nonce: &str) -> String {
    let text = if nonce.is_empty() {
        text.to_string()
    } else {
        text.replace(nonce, "<nonce>")
    };
    let text = re(r"sha256:[0-9a-f]{64}").replace_all(&text, "sha256:<digest>");
    let text = re(r"\b[0-9a-z]{25}::[0-9a-z]{25}\b").replace_all(&text, "<ref>");
    re(r"127\.0\.0\.1:\d+")
        .replace_all(&text, "<registry>")
        .into_owned()
}

/// Parses plain progress (stderr of bkd or buildctl).
pub fn parse(stderr: &str, nonce: &str) -> Output {
    let text = scrub(stderr, nonce);
    let line_re = re(r"^#(\d+) (.*)$");
    let log_re = re(r"^-?\d+\.\d+ (.*)$");
    let done_re = re(r"^DONE(?: (\d+\.\ds))?$");
    let status_re = re(
        r"^(.*?)(?: \d+(?:\.\d+)?[kMGTPE]?B(?: / \d+(?:\.\d+)?[kMGTPE]?B)?)?(?: \d+\.\ds)? done$",
    );
    let excerpt_head = re(r"^\S+:\d+$");
    let ruler = "--------------------";
    let mut out = Output::default();
    let mut by_number: BTreeMap<usize, Step> = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut at_block_start = true;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        if line.is_empty() {
            at_block_start = true;
            continue;
        }
        if line == "------" {
            // ------ / > name: / lines / ------
            let mut block = Vec::new();
            while i < lines.len() && lines[i] != "------" {
                let l = lines[i];
                block.push(match log_re.captures(l) {
                    Some(c) => c[1].to_string(),
                    None => l.to_string(),
                });
                i += 1;
            }
            i += 1;
            out.failures.push(block);
            continue;
        }
        if excerpt_head.is_match(line) && lines.get(i) == Some(&ruler) {
            out.excerpt.push(line.to_string());
            out.excerpt.push(ruler.to_string());
            i += 1;
            while i < lines.len() {
                let l = lines[i];
                out.excerpt.push(l.to_string());
                i += 1;
                if l == ruler {
                    break;
                }
            }
            continue;
        }
        if let Some(e) = line.strip_prefix("error: ") {
            out.error = Some(e.to_string());
            continue;
        }
        if line.starts_with("warning: ") {
            // bkd's one notice before the build (no output given), which
            // buildctl does not give: not part of the progress.
            continue;
        }
        let Some(c) = line_re.captures(line) else {
            at_block_start = false;
            continue;
        };
        let number: usize = c[1].parse().expect("step number");
        let rest = c[2].to_string();
        let header = at_block_start;
        at_block_start = false;
        let step = by_number.entry(number).or_insert_with(|| Step {
            name: String::new(),
            end: End::Open,
            seconds: None,
            logs: Vec::new(),
            statuses: Vec::new(),
            warnings: Vec::new(),
        });
        if header {
            if step.name.is_empty() {
                step.name = rest;
            }
            continue;
        }
        if let Some(d) = done_re.captures(&rest) {
            step.end = End::Done;
            step.seconds = d.get(1).map(|m| m.as_str().to_string());
        } else if rest == "CACHED" {
            step.end = End::Cached;
        } else if rest == "CANCELED" {
            step.end = End::Canceled;
        } else if let Some(e) = rest.strip_prefix("ERROR: ") {
            step.end = End::Error(e.to_string());
        } else if rest == "..." || rest.starts_with("NOTE: output clipped") {
        } else if let Some(w) = rest.strip_prefix("WARN: ") {
            step.warnings.push(w.to_string());
        } else if let Some(l) = log_re.captures(&rest) {
            step.logs.push(l[1].to_string());
        } else if let Some(s) = status_re.captures(&rest) {
            let id = s[1].to_string();
            if !step.statuses.contains(&id) {
                step.statuses.push(id);
            }
        }
    }
    out.steps = by_number.into_values().collect();
    for s in &mut out.steps {
        s.statuses.sort();
        s.warnings.sort();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buildctl_run() {
        let text = "#1 [internal] load build definition from Dockerfile\n#1 transferring dockerfile: 440B done\n#1 DONE 0.0s\n\n#2 [a 1/1] RUN echo a-N1\n#2 0.072 a-1-N1\n#2 ...\n\n#3 [b 1/1] RUN echo b\n#3 0.1 b-1\n#3 ERROR: process \"x\" did not complete successfully: exit code: 3\n\n#2 [a 1/1] RUN echo a-N1\n#2 1.481 a-2-N1\n#2 CANCELED\n------\n > [b 1/1] RUN echo b:\n0.1 b-1\n------\nDockerfile:13\n--------------------\n  13 | >>> RUN echo b\n--------------------\nerror: failed to solve: boom sha256:0000000000000000000000000000000000000000000000000000000000000000\n";
        let o = parse(text, "N1");
        assert_eq!(o.steps.len(), 3);
        assert_eq!(o.steps[0].statuses, vec!["transferring dockerfile:"]);
        assert_eq!(o.steps[0].seconds.as_deref(), Some("0.0s"));
        assert_eq!(o.steps[1].name, "[a 1/1] RUN echo a-<nonce>");
        assert_eq!(o.steps[1].logs, vec!["a-1-<nonce>", "a-2-<nonce>"]);
        assert_eq!(o.steps[1].end, End::Canceled);
        assert!(matches!(o.steps[2].end, End::Error(_)));
        assert_eq!(o.failures, vec![vec![" > [b 1/1] RUN echo b:", "b-1"]]);
        assert_eq!(o.excerpt.len(), 4);
        assert_eq!(
            o.error.as_deref(),
            Some("failed to solve: boom sha256:<digest>")
        );
    }
}
