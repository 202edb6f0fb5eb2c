//! `.dockerignore` patterns with exactly the semantics BuildKit's sender
//! gives them (moby/patternmatcher v0.6.1, as tonistiigi/fsutil uses it).
//!
//! A pattern is trimmed and path-cleaned; a leading `!` makes it an
//! exception; later patterns win, and a pattern that matches a directory
//! covers everything below it. A pattern is first checked with the rules of
//! Go's `filepath.Match` (a malformed one fails the whole list at once,
//! [`glob`]). It is then translated into a Go regular expression: `*` is any
//! run of characters but `/`, `?` one character but `/`, `**` any number of
//! segments, `.+()$` are literal, a `\` passes the next character to the
//! regular expression as an escape, and everything else (classes, `^`, and
//! `|{}`, which the reference means to escape but does not) goes through as
//! typed. That expression is compiled, with Go's rules
//! ([`goregex`]), only when the pattern is first evaluated: a pattern that is
//! never evaluated cannot fail, and one that is evaluated and does not
//! compile fails the match. Patterns with no special characters are compared
//! directly (exact, `prefix**`, `**suffix`), as the reference does.
//!
//! Paths are bytes. Where a regular expression decides, a byte that is not
//! part of valid UTF-8 counts as one character U+FFFD, as in Go.

mod glob;
mod goregex;
#[cfg(test)]
mod tests;
mod unicode_names;

use std::borrow::Cow;
use std::sync::OnceLock;

use regex_automata::dfa::{dense, Automaton, StartKind};
use regex_automata::meta::Regex;
use regex_automata::nfa::thompson::{self, WhichCaptures};
use regex_automata::{Anchored, Input};

pub use glob::{filepath_match, BadPattern};

use crate::text::escape_str;

/// Memory one pattern's DFA may take (and take to build).
const DFA_SIZE_LIMIT: usize = 256 << 10;

/// A pattern list that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// A pattern that is only `!`.
    #[error("illegal exclusion pattern \"!\" (an exception needs a pattern after the `!`)")]
    IllegalExclusion,
    /// A malformed pattern; `reason` says what is wrong where it is known.
    #[error("invalid pattern \"{}\": syntax error in pattern{}", escape_str(.pattern), reason.map(|r| format!(" ({r})")).unwrap_or_default())]
    Syntax {
        pattern: String,
        reason: Option<&'static str>,
    },
}

/// How a compiled pattern decides.
#[derive(Debug, Clone)]
enum Compiled {
    /// The path equals the pattern.
    Exact,
    /// `prefix**`: the path starts with the prefix.
    Prefix,
    /// `**suffix`: the path ends with the suffix.
    Suffix,
    /// Most expressions: a dense DFA, searched with no cache to take, and
    /// the endings a path must have for it to match, when known.
    Dfa {
        dfa: Box<dense::DFA<Vec<u32>>>,
        anchored: Anchored,
        endings: Option<Vec<Vec<u8>>>,
    },
    /// Expressions whose DFA would be too large.
    Regex { regex: Regex, anchored: Anchored },
}

/// One pattern of a list.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// As given (trimmed), for messages.
    text: String,
    /// Cleaned, without the leading `!`.
    cleaned: String,
    exclusion: bool,
    /// Built on first use; a failure is kept and reported on every use.
    compiled: OnceLock<Result<Compiled, &'static str>>,
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

    /// The pattern text with a trailing `/**` or `/*` removed; used to decide
    /// whether a directory can contain anything a pattern names.
    pub fn without_trailing_glob(&self) -> &str {
        let s = self.cleaned.as_str();
        let s = s.strip_suffix("/**").unwrap_or(s);
        s.strip_suffix("/*").unwrap_or(s)
    }

    fn compiled(&self) -> Result<&Compiled, PatternError> {
        self.compiled
            .get_or_init(|| compile(&self.cleaned))
            .as_ref()
            .map_err(|reason| PatternError::Syntax {
                pattern: self.text.clone(),
                reason: Some(reason),
            })
    }

    /// Whether this pattern (ignoring `!`) matches `path` itself.
    fn matches(&self, subject: &Subject) -> Result<bool, PatternError> {
        let path = subject.raw;
        let pattern = self.cleaned.as_bytes();
        Ok(match self.compiled()? {
            Compiled::Exact => path == pattern,
            // The translation only picks these for `…**` and `**…`.
            Compiled::Prefix => path.starts_with(&pattern[..pattern.len().saturating_sub(2)]),
            Compiled::Suffix => {
                let suffix = pattern.get(2..).unwrap_or_default();
                path.ends_with(suffix) || (suffix.first() == Some(&b'/') && path == &suffix[1..])
            }
            Compiled::Dfa {
                dfa,
                anchored,
                endings,
            } => {
                let text = subject.go_text();
                if endings
                    .as_ref()
                    .is_some_and(|e| !e.iter().any(|end| text.ends_with(end)))
                {
                    return Ok(false);
                }
                match dfa_is_match(dfa, *anchored, text) {
                    Some(hit) => hit,
                    None => return Err(self.too_large()),
                }
            }
            Compiled::Regex { regex, anchored } => regex.is_match(
                Input::new(subject.go_text())
                    .anchored(*anchored)
                    .earliest(true),
            ),
        })
    }

    fn too_large(&self) -> PatternError {
        PatternError::Syntax {
            pattern: self.text.clone(),
            reason: Some(TOO_LARGE),
        }
    }
}

/// A path being matched, with its text as a Go expression sees it made
/// once, on first need.
struct Subject<'a> {
    raw: &'a [u8],
    go: std::cell::OnceCell<Cow<'a, [u8]>>,
}

impl<'a> Subject<'a> {
    fn new(raw: &'a [u8]) -> Subject<'a> {
        Subject {
            raw,
            go: std::cell::OnceCell::new(),
        }
    }

    /// A path known to be valid UTF-8.
    fn utf8(raw: &'a [u8]) -> Subject<'a> {
        Subject {
            raw,
            go: std::cell::OnceCell::from(Cow::Borrowed(raw)),
        }
    }

    fn go_text(&self) -> &[u8] {
        self.go.get_or_init(|| as_go_text(self.raw))
    }
}

/// Whether the DFA matches somewhere in `text` (starting at 0 when
/// `anchored`; a match need not reach the end: an expression without `$`
/// ends where it likes). `None` if the DFA gives up, which a DFA without
/// quit bytes never does.
fn dfa_is_match(dfa: &dense::DFA<Vec<u32>>, anchored: Anchored, text: &[u8]) -> Option<bool> {
    let input = Input::new(text).anchored(anchored);
    let mut state = dfa.start_state_forward(&input).ok()?;
    for &byte in text {
        state = dfa.next_state(state, byte);
        if dfa.is_special_state(state) {
            // Match states show one byte late: the match ended before it.
            if dfa.is_match_state(state) {
                return Some(true);
            }
            if dfa.is_dead_state(state) {
                return Some(false);
            }
            if dfa.is_quit_state(state) {
                return None;
            }
        }
    }
    Some(dfa.is_match_state(dfa.next_eoi_state(state)))
}

const TOO_LARGE: &str = "the expression it makes is too large";

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
    /// Reads a pattern list: blank patterns are dropped, each is trimmed and
    /// path-cleaned. Fails on `!` alone and on a pattern Go's
    /// `filepath.Match` finds malformed; nothing else is checked yet.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, PatternError> {
        let mut out = PatternMatcher::default();
        for raw in patterns {
            let text = raw.as_ref().trim();
            if text.is_empty() {
                continue;
            }
            let cleaned = clean_path(text);
            let (exclusion, cleaned) = match cleaned.strip_prefix('!') {
                Some("") => return Err(PatternError::IllegalExclusion),
                // What follows the `!` is not cleaned again.
                Some(rest) => (true, rest.to_string()),
                None => (false, cleaned),
            };
            if filepath_match(cleaned.as_bytes(), b".").is_err() {
                return Err(PatternError::Syntax {
                    pattern: text.to_string(),
                    reason: None,
                });
            }
            out.has_exclusions |= exclusion;
            out.patterns.push(Pattern {
                text: text.to_string(),
                cleaned,
                exclusion,
                compiled: OnceLock::new(),
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
    /// matched, after `!` patterns have had their say. A pattern is only
    /// evaluated when it could change the answer so far; evaluating one that
    /// does not compile is an error.
    pub fn matches_or_parent_matches(&self, path: &[u8]) -> Result<bool, PatternError> {
        let subject = Subject::new(path);
        let parents = Parents::of(path);
        let mut matched = false;
        for pattern in &self.patterns {
            if pattern.exclusion != matched {
                continue;
            }
            let hit = pattern.matches(&subject)? || parents.any_matched_by(pattern);
            if hit {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }

    /// Like [`Self::matches_or_parent_matches`] for a walk: the results of
    /// the parent directory stand in for matching the parents again. Pass
    /// `MatchInfo::default()` when they are not known (the path's parents
    /// are then matched as in [`Self::matches_or_parent_matches`]).
    pub fn matches_using_parent(
        &self,
        path: &[u8],
        parent: &MatchInfo,
    ) -> Result<(bool, MatchInfo), PatternError> {
        // Results for another list cannot be used; the walk never mixes them.
        let known = !parent.parent_matched.is_empty();
        debug_assert!(!known || parent.parent_matched.len() == self.patterns.len());
        let known = known && parent.parent_matched.len() == self.patterns.len();
        let mut info = MatchInfo {
            parent_matched: vec![false; self.patterns.len()],
        };
        let subject = Subject::new(path);
        let mut parents: Option<Parents<'_>> = None;
        let mut matched = false;
        for (i, pattern) in self.patterns.iter().enumerate() {
            let mut hit = known && parent.parent_matched[i];
            if !hit {
                if pattern.exclusion != matched {
                    continue;
                }
                hit = pattern.matches(&subject)?;
                if !hit && !known {
                    hit = parents
                        .get_or_insert_with(|| Parents::of(path))
                        .any_matched_by(pattern);
                }
            }
            info.parent_matched[i] = hit;
            if hit {
                matched = !pattern.exclusion;
            }
        }
        Ok((matched, info))
    }
}

/// The parent directories of a path as the reference lists them: the
/// cleaned directory part, split at each `/` (`a`, `a/b` for `a/b/c`).
struct Parents<'a> {
    /// Empty when the path has no parent (`.`).
    dir: Cow<'a, [u8]>,
    /// Whether `dir` is valid UTF-8 (then so is each parent), once known.
    utf8: std::cell::OnceCell<bool>,
}

impl<'a> Parents<'a> {
    fn of(path: &'a [u8]) -> Parents<'a> {
        let dir = match path.iter().rposition(|&b| b == b'/') {
            // Paths from a walk are clean already.
            Some(slash) if is_clean(&path[..slash]) => Cow::Borrowed(&path[..slash]),
            Some(slash) => Cow::Owned(clean_bytes(&path[..=slash])),
            None => Cow::Borrowed(&path[..0]),
        };
        Parents {
            dir: if dir.as_ref() == b"." {
                Cow::Borrowed(&path[..0])
            } else {
                dir
            },
            utf8: std::cell::OnceCell::new(),
        }
    }

    /// Whether `pattern` matches one of the parents. A pattern that fails to
    /// compile has failed on the path itself already.
    fn any_matched_by(&self, pattern: &Pattern) -> bool {
        if self.dir.is_empty() {
            return false;
        }
        let ends = self.dir.iter().enumerate().filter(|(_, &b)| b == b'/');
        let utf8 = *self
            .utf8
            .get_or_init(|| std::str::from_utf8(&self.dir).is_ok());
        ends.map(|(i, _)| i).chain([self.dir.len()]).any(|end| {
            let parent = &self.dir[..end];
            let subject = if utf8 {
                Subject::utf8(parent)
            } else {
                Subject::new(parent)
            };
            pattern.matches(&subject).unwrap_or(false)
        })
    }
}

/// Whether cleaning would leave `p` as it is: no empty, `.` or `..` part
/// (a leading `/` aside).
fn is_clean(p: &[u8]) -> bool {
    let body = match p.strip_prefix(b"/") {
        Some(rest) => rest,
        None => p,
    };
    !body.is_empty()
        && body
            .split(|&b| b == b'/')
            .all(|part| !matches!(part, b"" | b"." | b".."))
}

/// The text a Go regular expression sees: valid UTF-8 as is, and each byte
/// that is not part of a valid sequence as U+FFFD.
fn as_go_text(path: &[u8]) -> Cow<'_, [u8]> {
    if std::str::from_utf8(path).is_ok() {
        return Cow::Borrowed(path);
    }
    let mut out = Vec::with_capacity(path.len() + 8);
    let mut rest = path;
    while !rest.is_empty() {
        let (c, n) = glob::decode_char(rest);
        if c == glob::REPLACEMENT && n == 1 {
            out.extend_from_slice("\u{FFFD}".as_bytes());
        } else {
            out.extend_from_slice(&rest[..n]);
        }
        rest = &rest[n..];
    }
    Cow::Owned(out)
}

/// What the translation found the pattern to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exact,
    Prefix,
    Suffix,
    Regex,
}

/// Translates a cleaned pattern (without `!`) into a Go regular expression
/// and the way it is matched; the expression only matters for `Regex`.
fn translate(pattern: &str) -> (Kind, String) {
    let mut re = String::with_capacity(pattern.len() + 16);
    re.push('^');
    let mut kind = Kind::Exact;
    // Go's text scanner drops a byte order mark at the very start.
    let mut chars = pattern
        .strip_prefix('\u{FEFF}')
        .unwrap_or(pattern)
        .chars()
        .peekable();
    let mut first = true;
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                // `**/` is `**`.
                chars.next_if_eq(&'/');
                if chars.peek().is_none() {
                    // A trailing `**` takes everything, `/` included.
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        re.push_str(".*");
                        kind = Kind::Regex;
                    }
                } else {
                    re.push_str("(.*/)?");
                    kind = Kind::Regex;
                }
                if first {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                re.push_str("[^/]*");
                kind = Kind::Regex;
            }
            '?' => {
                re.push_str("[^/]");
                kind = Kind::Regex;
            }
            // The reference means to escape `.+()|{}$`, but its lookup
            // table only records characters below 64: `|`, `{` and `}`
            // reach the expression as operators. Kept, for the same result.
            '.' | '+' | '(' | ')' | '$' => {
                re.push('\\');
                re.push(c);
            }
            '\\' => match chars.next() {
                Some(next) => {
                    re.push('\\');
                    re.push(next);
                    kind = Kind::Regex;
                }
                // Left alone; a trailing `\` never passes the syntax check.
                None => re.push('\\'),
            },
            '[' | ']' => {
                re.push(c);
                kind = Kind::Regex;
            }
            c => re.push(c),
        }
        first = false;
    }
    if kind == Kind::Regex {
        re.push('$');
    }
    (kind, re)
}

/// Builds what a cleaned pattern is matched with, or says why it cannot be.
fn compile(pattern: &str) -> Result<Compiled, &'static str> {
    let (kind, re) = translate(pattern);
    Ok(match kind {
        Kind::Exact => Compiled::Exact,
        Kind::Prefix => Compiled::Prefix,
        Kind::Suffix => Compiled::Suffix,
        Kind::Regex => {
            let hir = goregex::parse(&re).map_err(|e| e.0)?;
            // Every expression starts with `^`, so a match starts at 0,
            // unless a `|` let an alternative start anywhere. A DFA for
            // that, within a size that covers any realistic pattern; else
            // the general engine.
            let anchored = if hir
                .properties()
                .look_set_prefix()
                .contains(regex_syntax::hir::Look::Start)
            {
                Anchored::Yes
            } else {
                Anchored::No
            };
            let start_kind = match anchored {
                Anchored::No => StartKind::Unanchored,
                _ => StartKind::Anchored,
            };
            let dfa = thompson::Compiler::new()
                .configure(thompson::Config::new().which_captures(WhichCaptures::None))
                .build_from_hir(&hir)
                .ok()
                .and_then(|nfa| {
                    dense::Builder::new()
                        .configure(
                            dense::Config::new()
                                .start_kind(start_kind)
                                .dfa_size_limit(Some(DFA_SIZE_LIMIT))
                                .determinize_size_limit(Some(DFA_SIZE_LIMIT)),
                        )
                        .build_from_nfa(&nfa)
                        .ok()
                });
            match dfa {
                Some(dfa) => Compiled::Dfa {
                    dfa: Box::new(dfa),
                    anchored,
                    endings: required_endings(&hir),
                },
                None => Compiled::Regex {
                    regex: Regex::builder()
                        .build_from_hir(&hir)
                        .map_err(|_| TOO_LARGE)?,
                    anchored,
                },
            }
        }
    })
}

/// For an expression that must match up to the end of the text (it ends
/// with `$`): the literals one of which every matching text ends with, when
/// there are a few. A quick test before running the automaton.
fn required_endings(hir: &regex_syntax::hir::Hir) -> Option<Vec<Vec<u8>>> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    use regex_syntax::hir::{HirKind, Look};
    let HirKind::Concat(items) = hir.kind() else {
        return None;
    };
    if !matches!(
        items.last().map(|h| h.kind()),
        Some(HirKind::Look(Look::End))
    ) {
        return None;
    }
    let mut extractor = Extractor::new();
    extractor.kind(ExtractKind::Suffix);
    let endings: Vec<Vec<u8>> = extractor
        .extract(hir)
        .literals()?
        .iter()
        .map(|lit| lit.as_bytes().to_vec())
        .collect();
    let useful = !endings.is_empty() && endings.len() <= 8 && endings.iter().all(|e| !e.is_empty());
    useful.then_some(endings)
}

/// Lexical path cleaning as Go's `filepath.Clean` does it.
pub fn clean_path(p: &str) -> String {
    match String::from_utf8(clean_bytes(p.as_bytes())) {
        Ok(s) => s,
        // Cleaning only drops whole `/`-separated parts of valid UTF-8.
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// [`clean_path`] on bytes.
pub fn clean_bytes(p: &[u8]) -> Vec<u8> {
    if p.is_empty() {
        return b".".to_vec();
    }
    let rooted = p.first() == Some(&b'/');
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in p.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if parts.last().is_some_and(|l| *l != b"..") {
                    parts.pop();
                } else if !rooted {
                    parts.push(b"..");
                }
            }
            other => parts.push(other),
        }
    }
    let body = parts.join(&b'/');
    match (rooted, body.is_empty()) {
        (true, _) => [b"/".as_slice(), &body].concat(),
        (false, true) => b".".to_vec(),
        (false, false) => body,
    }
}
