//! The Dockerfile excerpt of a failed build: the source location the daemon
//! attaches to the error, printed as buildctl prints it: `Dockerfile:N`, a
//! ruler, the numbered lines around the failing ones (marked `>>>`), a
//! ruler.

use bytes::Bytes;

use super::SourceRange;
use crate::text::escape_controls;

/// One source file and the ranges of it that the error is about.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ErrorSource {
    pub filename: String,
    pub data: Bytes,
    pub language: String,
    pub ranges: Vec<SourceRange>,
}

const RULER: &str = "--------------------";

impl ErrorSource {
    /// The excerpt's lines (no newlines); empty when the ranges do not
    /// fall inside the file.
    pub fn excerpt(&self) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.data);
        let lines: Vec<&str> = text.split('\n').collect();
        let Some((first, last)) = self.line_span() else {
            return Vec::new();
        };
        let count = lines.len() as i64;
        if first < 1 || first > count {
            return Vec::new();
        }
        let last = last.min(count);
        // Context around the marked lines: two lines on each side of a
        // single line, one around a span, fewer at the file's edges.
        let pad = if first == last { 4 } else { 2 };
        let (mut start, mut end, mut spent) = (first, last, 0);
        while spent < pad {
            if start > 1 {
                start -= 1;
                spent += 1;
            }
            if end != count {
                end += 1;
                spent += 1;
            }
            spent += 1;
        }
        let mut out = vec![
            format!("{}:{first}", file_name(&self.filename)),
            RULER.into(),
        ];
        for n in start..=end {
            let mark = if self.marks(n) { ">>>" } else { "   " };
            let line = lines[(n - 1) as usize];
            out.push(format!(" {n:>3} | {mark} {}", source_line(line)));
        }
        out.push(RULER.into());
        out
    }

    /// The first and last line any range touches.
    fn line_span(&self) -> Option<(i64, i64)> {
        let first = self.ranges.iter().map(|r| i64::from(r.start.0)).min()?;
        let last = self
            .ranges
            .iter()
            .map(|r| i64::from(r.end.0.max(r.start.0)))
            .max()?;
        Some((first, last))
    }

    fn marks(&self, line: i64) -> bool {
        self.ranges.iter().any(|r| {
            let (s, e) = (i64::from(r.start.0), i64::from(r.end.0.max(r.start.0)));
            s <= line && line <= e
        })
    }
}

/// The file name heading the excerpt. It starts a line, so a name that
/// begins like a CI log command (`::`, Buildkite's `---`/`+++`, GitLab's
/// `section_`) is shown as `./NAME`, where it means the same file.
fn file_name(name: &str) -> String {
    let name = escape_controls(name);
    let markers = ["::", "---", "+++", "~~~", "^^^", "section_"];
    if markers.iter().any(|m| name.starts_with(m)) {
        format!("./{name}")
    } else {
        name
    }
}

/// A source line as printed: a CRLF file's carriage return dropped, tabs
/// kept, every other control character made visible so that no line of
/// the file can pass for a line of bkd's own.
fn source_line(line: &str) -> String {
    escape_controls(line.strip_suffix('\r').unwrap_or(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str, ranges: &[(i32, i32)]) -> ErrorSource {
        ErrorSource {
            filename: "Dockerfile".into(),
            data: Bytes::from(text.to_string()),
            language: "Dockerfile".into(),
            ranges: ranges
                .iter()
                .map(|(s, e)| SourceRange {
                    start: (*s, 0),
                    end: (*e, 0),
                })
                .collect(),
        }
    }

    const FILE: &str = "FROM scratch AS bb\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\",\"--install\",\"-s\",\"/bin\"]\nFROM bb\nCOPY nothere.txt /x\nRUN echo after\n";

    /// The excerpts buildctl v0.32.2 printed for these files and ranges.
    #[test]
    fn like_buildctl() {
        assert_eq!(
            source(FILE, &[(5, 5)]).excerpt().join("\n"),
            "Dockerfile:5
--------------------
   3 |     RUN [\"/bin/busybox\",\"--install\",\"-s\",\"/bin\"]
   4 |     FROM bb
   5 | >>> COPY nothere.txt /x
   6 |     RUN echo after
   7 |     
--------------------"
        );
        let run = "FROM scratch AS bb\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\",\"--install\",\"-s\",\"/bin\"]\nFROM bb\nRUN echo one && \\\n    echo two && \\\n    exit 3\nRUN echo after\n";
        assert_eq!(
            source(run, &[(5, 7)]).excerpt().join("\n"),
            "Dockerfile:5
--------------------
   4 |     FROM bb
   5 | >>> RUN echo one && \\
   6 | >>>     echo two && \\
   7 | >>>     exit 3
   8 |     RUN echo after
--------------------"
        );
    }

    #[test]
    fn edges_and_several_ranges() {
        let text = "a\nb\nc\nd\ne\nf\ng";
        // At the edges the context is cut, not moved to the other side.
        assert_eq!(
            source(text, &[(1, 1)]).excerpt()[2..],
            ["   1 | >>> a", "   2 |     b", "   3 |     c", RULER]
        );
        assert_eq!(
            source(text, &[(7, 7)]).excerpt()[2..],
            ["   5 |     e", "   6 |     f", "   7 | >>> g", RULER]
        );
        let two = source(text, &[(4, 4), (2, 2)]).excerpt();
        assert_eq!(two[0], "Dockerfile:2");
        assert_eq!(
            two[2..7],
            [
                "   1 |     a",
                "   2 | >>> b",
                "   3 |     c",
                "   4 | >>> d",
                "   5 |     e"
            ]
        );
        assert!(source(text, &[(9, 9)]).excerpt().is_empty());
        assert!(source(text, &[]).excerpt().is_empty());
    }

    #[test]
    fn a_file_name_cannot_pass_for_a_ci_command() {
        let mut s = source("FROM a\n", &[(1, 1)]);
        s.filename = "::warning::x".into();
        assert_eq!(s.excerpt()[0], "./::warning::x:1");
        s.filename = "+++ x\ny".into();
        assert_eq!(s.excerpt()[0], "./+++ x\\ny:1");
        s.filename = "sub/Dockerfile".into();
        assert_eq!(s.excerpt()[0], "sub/Dockerfile:1");
    }

    #[test]
    fn lines_cannot_forge_output() {
        let s = source("FROM a\r\nRUN x\u{1b}]0;t\u{7}\tdone\r\n", &[(2, 2)]);
        let lines = s.excerpt();
        assert_eq!(lines[3], "   2 | >>> RUN x\\u{1b}]0;t\\u{7}\tdone");
        assert_eq!(lines[2], "   1 |     FROM a");
    }
}
