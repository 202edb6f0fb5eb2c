//! `.dockerignore`-style path patterns, with the exact semantics BuildKit's
//! file-sync filter gives them: `*`, `?`, `[...]`, `**` across segments, `\`
//! escapes, leading `!` re-includes, later patterns win, and a pattern that
//! matches a directory covers everything below it.

use regex::bytes::Regex;

/// A pattern list could not be compiled.
#[derive(Debug, thiserror::Error)]
#[error("invalid pattern {pattern:?}: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
enum Kind {
    Exact,
    /// `prefix**`: anything starting with the prefix.
    Prefix(Vec<u8>),
    /// `**suffix`: anything ending with the suffix.
    Suffix(Vec<u8>),
    Regex(Regex),
}

/// One compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    cleaned: String,
    exclusion: bool,
    kind: Kind,
}

impl Pattern {
    /// The pattern after cleaning, without a leading `!`.
    pub fn as_str(&self) -> &str {
        &self.cleaned
    }

    /// Whether this is a `!` pattern.
    pub fn is_exclusion(&self) -> bool {
        self.exclusion
    }

    fn matches(&self, path: &[u8]) -> bool {
        match &self.kind {
            Kind::Exact => path == self.cleaned.as_bytes(),
            Kind::Prefix(prefix) => path.starts_with(prefix),
            Kind::Suffix(suffix) => {
                path.ends_with(suffix) || (suffix.first() == Some(&b'/') && path == &suffix[1..])
            }
            Kind::Regex(re) => re.is_match(path),
        }
    }

    /// The pattern text with a trailing `/**` or `/*` removed; used to decide
    /// whether a directory can contain anything a pattern names.
    pub fn without_trailing_glob(&self) -> &str {
        let s = self.cleaned.as_str();
        let s = s.strip_suffix("/**").unwrap_or(s);
        s.strip_suffix("/*").unwrap_or(s)
    }
}

/// Per-pattern results for a directory, handed down to its children so that
/// a pattern matched by a parent need not be tried again.
#[derive(Debug, Clone, Default)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

/// An ordered list of patterns.
#[derive(Debug, Clone, Default)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
    has_exclusions: bool,
}

impl PatternMatcher {
    /// Compiles patterns; blank ones are dropped, each is path-cleaned.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, PatternError> {
        let mut out = PatternMatcher::default();
        for raw in patterns {
            let trimmed = raw.as_ref().trim();
            if trimmed.is_empty() {
                continue;
            }
            let mut cleaned = clean_path(trimmed);
            let mut exclusion = false;
            if let Some(rest) = cleaned.strip_prefix('!') {
                if rest.is_empty() {
                    return Err(PatternError {
                        pattern: raw.as_ref().to_string(),
                        reason: "illegal exclusion pattern \"!\"".into(),
                    });
                }
                exclusion = true;
                out.has_exclusions = true;
                cleaned = rest.to_string();
            }
            let kind = compile(&cleaned).map_err(|reason| PatternError {
                pattern: raw.as_ref().to_string(),
                reason,
            })?;
            out.patterns.push(Pattern {
                cleaned,
                exclusion,
                kind,
            });
        }
        Ok(out)
    }

    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    pub fn has_exclusions(&self) -> bool {
        self.has_exclusions
    }

    /// Whether `path` (relative, `/`-separated) or one of its parents is
    /// matched, after `!` patterns have had their say.
    pub fn matches_or_parent_matches(&self, path: &[u8]) -> bool {
        self.matches_using_parent(path, &MatchInfo::default()).0
    }

    /// Like [`Self::matches_or_parent_matches`], reusing the results of the
    /// parent directory. Pass `MatchInfo::default()` when they are not known.
    pub fn matches_using_parent(&self, path: &[u8], parent: &MatchInfo) -> (bool, MatchInfo) {
        let known = parent.parent_matched.len() == self.patterns.len();
        let mut info = MatchInfo {
            parent_matched: vec![false; self.patterns.len()],
        };
        let mut matched = false;
        for (i, pattern) in self.patterns.iter().enumerate() {
            let mut hit = known && parent.parent_matched[i];
            if !hit {
                if pattern.exclusion != matched {
                    continue;
                }
                hit = pattern.matches(path);
                if !hit && !known {
                    hit = parent_prefixes(path).any(|p| pattern.matches(p));
                }
            }
            info.parent_matched[i] = hit;
            if hit {
                matched = !pattern.exclusion;
            }
        }
        (matched, info)
    }
}

/// `a`, `a/b`, ... for every proper parent of `a/b/c`.
fn parent_prefixes(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'/')
        .map(move |(i, _)| &path[..i])
}

/// Lexical path cleaning as Go's `filepath.Clean` does it.
pub fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let body = parts.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".into(),
        (false, false) => body,
    }
}

fn compile(pattern: &str) -> Result<Kind, String> {
    #[derive(PartialEq)]
    enum Detected {
        Exact,
        Prefix,
        Suffix,
        Regex,
    }
    let chars: Vec<char> = pattern.chars().collect();
    let mut re = String::from("^");
    let mut detected = Detected::Exact;
    let mut i = 0;
    let mut first = true;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        match ch {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= chars.len() {
                    if detected == Detected::Exact {
                        detected = Detected::Prefix;
                    } else {
                        re.push_str("(?-u:[^\\n])*");
                        detected = Detected::Regex;
                    }
                } else {
                    re.push_str("((?-u:[^\\n])*/)?");
                    detected = Detected::Regex;
                }
                if first {
                    detected = Detected::Suffix;
                }
            }
            '*' => {
                re.push_str("(?-u:[^/])*");
                detected = Detected::Regex;
            }
            '?' => {
                re.push_str("(?:[^/]|(?-u:[^/]))");
                detected = Detected::Regex;
            }
            '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$' => {
                re.push('\\');
                re.push(ch);
            }
            '\\' => {
                if let Some(&next) = chars.get(i) {
                    i += 1;
                    re.push_str(&regex::escape(&next.to_string()));
                    detected = Detected::Regex;
                } else {
                    re.push_str("\\\\");
                }
            }
            '[' | ']' => {
                re.push(ch);
                detected = Detected::Regex;
            }
            other => re.push(other),
        }
        first = false;
    }
    validate_glob(pattern)?;
    Ok(match detected {
        Detected::Exact => Kind::Exact,
        Detected::Prefix => Kind::Prefix(pattern.as_bytes()[..pattern.len() - 2].to_vec()),
        Detected::Suffix => Kind::Suffix(pattern.as_bytes()[2..].to_vec()),
        Detected::Regex => {
            re.push('$');
            Kind::Regex(
                regex::bytes::RegexBuilder::new(&re)
                    .unicode(true)
                    .build()
                    .map_err(|e| e.to_string())?,
            )
        }
    })
}

/// Rejects the glob syntax errors Go's `filepath.Match` reports: an
/// unterminated `[` class, an empty class, a trailing `\` inside a class.
fn validate_glob(pattern: &str) -> Result<(), String> {
    let b = pattern.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'[' => {
                i += 1;
                if i < b.len() && b[i] == b'^' {
                    i += 1;
                }
                let start = i;
                loop {
                    if i >= b.len() {
                        return Err("syntax error in pattern: unterminated [".into());
                    }
                    if b[i] == b']' && i > start {
                        break;
                    }
                    if b[i] == b']' {
                        return Err("syntax error in pattern: empty character class".into());
                    }
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(patterns: &[&str], path: &str) -> bool {
        PatternMatcher::new(patterns)
            .expect("patterns compile")
            .matches_or_parent_matches(path.as_bytes())
    }

    #[test]
    fn star_stays_within_a_segment() {
        assert!(m(&["*.log"], "a.log"));
        assert!(!m(&["*.log"], "dir/a.log"));
        assert!(m(&["dir/*.log"], "dir/a.log"));
    }

    #[test]
    fn double_star_crosses_segments() {
        assert!(m(&["**/*.log"], "a/b/c.log"));
        assert!(m(&["**/*.log"], "c.log"));
        assert!(m(&["a/**/z"], "a/z"));
        assert!(m(&["a/**/z"], "a/b/c/z"));
        assert!(m(&["a/**"], "a/b"));
        assert!(m(&["**"], "anything/at/all"));
    }

    #[test]
    fn directory_match_covers_children() {
        assert!(m(&["node_modules"], "node_modules/x/y.js"));
        assert!(!m(&["node_modules"], "src/node_modules"));
    }

    #[test]
    fn later_negation_reincludes() {
        let p = ["*.md", "!README.md"];
        assert!(m(&p, "CHANGES.md"));
        assert!(!m(&p, "README.md"));
        let q = ["docs", "!docs/keep.txt"];
        assert!(m(&q, "docs/drop.txt"));
        assert!(!m(&q, "docs/keep.txt"));
    }

    #[test]
    fn cleaning_and_escapes() {
        assert!(m(&["./a/../b"], "b"));
        assert!(m(&["a\\*b"], "a*b"));
        assert!(!m(&["a\\*b"], "axb"));
        assert!(m(&["f?o"], "foo"));
        assert!(m(&["[a-c].txt"], "b.txt"));
        assert!(!m(&["[a-c].txt"], "d.txt"));
        assert!(m(&["a.b"], "a.b"));
        assert!(!m(&["a.b"], "axb"));
    }

    #[test]
    fn bad_patterns_are_errors() {
        assert!(PatternMatcher::new(&["!"]).is_err());
        assert!(PatternMatcher::new(&["[abc"]).is_err());
        assert!(PatternMatcher::new(&["[]"]).is_err());
    }

    #[test]
    fn parent_results_agree_with_full_matching() {
        let pm = PatternMatcher::new(&["a", "!a/keep", "**/tmp"]).expect("compile");
        let (_, parent) = pm.matches_using_parent(b"a", &MatchInfo::default());
        for child in ["a/keep", "a/drop", "a/tmp"] {
            let (with_parent, _) = pm.matches_using_parent(child.as_bytes(), &parent);
            assert_eq!(
                with_parent,
                pm.matches_or_parent_matches(child.as_bytes()),
                "{child}"
            );
        }
    }

    #[test]
    fn clean_path_matches_go() {
        assert_eq!(clean_path("a//b/./c/.."), "a/b");
        assert_eq!(clean_path("/../x"), "/x");
        assert_eq!(clean_path("../x"), "../x");
        assert_eq!(clean_path("./"), ".");
    }
}
