//! The regular expressions a `.dockerignore` pattern is translated into are
//! written in Go's `regexp` syntax, and the user's text reaches them largely
//! unchanged: a class, an escape like `\d`, `\x41`, `\pL` or `\Q`, a stray
//! `^`. This module reads that syntax exactly as Go's `regexp.Compile` reads
//! it (Perl flags: `^`/`$` anchor the whole text, `.` excludes `\n`, classes
//! may include `\n`, `\b` is an ASCII word boundary, Unicode classes are
//! Unicode 15.0's), rejects what Go rejects, and builds the equivalent
//! [`Hir`] directly, so no user text is ever read by another regex syntax.
//!
//! Not supported, because a translated pattern cannot contain them: flag
//! groups `(?…)` (the translation escapes every `(` the user types). Nor
//! Go's limits on the size of an expression (3.3 million instructions,
//! 32 million class members), far beyond any pattern line; instead, an
//! expression whose automaton would be too large fails to compile here.

use std::sync::OnceLock;

use regex_syntax::hir::{Class, ClassUnicode, ClassUnicodeRange, Hir, Look, Repetition};

use super::unicode_names::UNICODE_NAMES;

/// Why Go's parser refuses an expression (its error code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReError(pub &'static str);

type Parsed<'a, T> = Result<(T, &'a str), ReError>;

const TRAILING_BACKSLASH: ReError = ReError("trailing backslash at end of expression");
const INVALID_ESCAPE: ReError = ReError("invalid escape sequence");
const INVALID_RANGE: ReError = ReError("invalid character class range");
const MISSING_BRACKET: ReError = ReError("missing closing ]");
const MISSING_PAREN: ReError = ReError("missing closing )");
const UNEXPECTED_PAREN: ReError = ReError("unexpected )");
const MISSING_REPEAT_ARGUMENT: ReError = ReError("missing argument to repetition operator");
const INVALID_REPEAT_OP: ReError = ReError("invalid nested repetition operator");
const INVALID_REPEAT_SIZE: ReError = ReError("invalid repeat count");
const NESTING_DEPTH: ReError = ReError("expression nests too deeply");
const UNSUPPORTED: ReError = ReError("construct a translated pattern cannot contain");

/// Go's limit on counted repetition.
const MAX_REPEAT: u32 = 1000;
/// Go's limit on nesting.
const MAX_DEPTH: usize = 1000;

/// Parses a Go regular expression into the equivalent HIR.
pub(crate) fn parse(re: &str) -> Result<Hir, ReError> {
    let (hir, rest) = alternation(re, 0)?;
    if rest.is_empty() {
        Ok(hir)
    } else {
        // Only a `)` without its `(` stops the top level early.
        Err(UNEXPECTED_PAREN)
    }
}

/// `a|b|…` up to the end or a `)`.
fn alternation(mut s: &str, depth: usize) -> Parsed<'_, Hir> {
    if depth > MAX_DEPTH {
        return Err(NESTING_DEPTH);
    }
    let mut branches = Vec::new();
    loop {
        let (branch, rest) = concatenation(s, depth)?;
        branches.push(branch);
        match rest.strip_prefix('|') {
            Some(rest) => s = rest,
            None => return Ok((Hir::alternation(branches), rest)),
        }
    }
}

/// A sequence of items, each with at most one repetition operator.
fn concatenation(mut s: &str, depth: usize) -> Parsed<'_, Hir> {
    let mut items: Vec<Hir> = Vec::new();
    let mut after_repeat = false;
    while let Some(c) = s.chars().next() {
        let rest = &s[c.len_utf8()..];
        let repeat = match c {
            '|' | ')' => break,
            '*' => Some((0, None, rest)),
            '+' => Some((1, None, rest)),
            '?' => Some((0, Some(1), rest)),
            '{' => counted_repeat(s)?,
            _ => None,
        };
        if let Some((min, max, rest)) = repeat {
            let (greedy, rest) = match rest.strip_prefix('?') {
                Some(rest) => (false, rest),
                None => (true, rest),
            };
            if after_repeat {
                return Err(INVALID_REPEAT_OP);
            }
            let sub = items.pop().ok_or(MISSING_REPEAT_ARGUMENT)?;
            items.push(Hir::repetition(Repetition {
                min,
                max,
                greedy,
                sub: Box::new(sub),
            }));
            after_repeat = true;
            s = rest;
            continue;
        }
        after_repeat = false;
        s = match c {
            '(' => {
                if rest.starts_with('?') {
                    return Err(UNSUPPORTED);
                }
                let (inner, rest) = alternation(rest, depth + 1)?;
                items.push(inner);
                rest.strip_prefix(')').ok_or(MISSING_PAREN)?
            }
            '^' => {
                items.push(Hir::look(Look::Start));
                rest
            }
            '$' => {
                items.push(Hir::look(Look::End));
                rest
            }
            '.' => {
                items.push(Hir::class(Class::Unicode(any_but_newline())));
                rest
            }
            '[' => {
                let (class, rest) = bracket_class(s)?;
                items.push(Hir::class(Class::Unicode(class)));
                rest
            }
            '{' => {
                // Not a valid count: a literal brace.
                items.push(literal(c));
                rest
            }
            '\\' => escape_item(s, &mut items)?,
            _ => {
                items.push(literal(c));
                rest
            }
        };
    }
    Ok((Hir::concat(items), s))
}

/// `{n}`, `{n,}` or `{n,m}` at the start of `s`: `None` when `s` does not
/// have that form (the brace is then a literal).
#[allow(clippy::type_complexity)]
fn counted_repeat(s: &str) -> Result<Option<(u32, Option<u32>, &str)>, ReError> {
    let Some(body) = s.strip_prefix('{') else {
        return Ok(None);
    };
    let Some((min, rest)) = decimal(body) else {
        return Ok(None);
    };
    let (max, rest) = match rest.strip_prefix(',') {
        None => (Some(min), rest),
        Some(rest) if rest.starts_with('}') => (None, rest),
        Some(rest) => match decimal(rest) {
            Some((max, rest)) => (Some(max), rest),
            None => return Ok(None),
        },
    };
    let Some(rest) = rest.strip_prefix('}') else {
        return Ok(None);
    };
    let too_big = |n: Option<u64>| n.is_some_and(|n| n > u64::from(MAX_REPEAT));
    if too_big(Some(min)) || too_big(max) || max.is_some_and(|max| min > max) {
        return Err(INVALID_REPEAT_SIZE);
    }
    let narrow = |n: u64| u32::try_from(n).unwrap_or(MAX_REPEAT);
    Ok(Some((narrow(min), max.map(narrow), rest)))
}

/// A decimal number as Go's parser takes it: no leading zero unless the
/// number is zero; very long numbers saturate (and are then too big).
fn decimal(s: &str) -> Option<(u64, &str)> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || (digits > 1 && s.starts_with('0')) {
        return None;
    }
    let value = s[..digits].bytes().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    Some((value, &s[digits..]))
}

/// A `\` sequence outside a class, pushed onto `items`.
fn escape_item<'a>(s: &'a str, items: &mut Vec<Hir>) -> Result<&'a str, ReError> {
    let rest = &s[1..];
    match rest.chars().next() {
        Some('A') => {
            items.push(Hir::look(Look::Start));
            return Ok(&rest[1..]);
        }
        Some('z') => {
            items.push(Hir::look(Look::End));
            return Ok(&rest[1..]);
        }
        Some('b') => {
            items.push(Hir::look(Look::WordAscii));
            return Ok(&rest[1..]);
        }
        Some('B') => {
            items.push(Hir::look(Look::WordAsciiNegate));
            return Ok(&rest[1..]);
        }
        Some('C') => return Err(INVALID_ESCAPE),
        Some('Q') => {
            // Everything up to `\E` (or the end) is literal.
            let quoted = &rest[1..];
            let (text, after) = match quoted.find("\\E") {
                Some(end) => (&quoted[..end], &quoted[end + 2..]),
                None => (quoted, ""),
            };
            items.extend(text.chars().map(literal));
            return Ok(after);
        }
        _ => {}
    }
    let mut class = ClassUnicode::empty();
    if let Some(rest) = unicode_class(s, &mut class)? {
        items.push(Hir::class(Class::Unicode(class)));
        return Ok(rest);
    }
    if let Some(rest) = perl_class(s, &mut class) {
        items.push(Hir::class(Class::Unicode(class)));
        return Ok(rest);
    }
    let (c, rest) = escaped_char(s)?;
    items.push(match char::from_u32(c) {
        Some(c) => literal(c),
        // A surrogate code point never occurs in decoded text.
        None => Hir::fail(),
    });
    Ok(rest)
}

/// A single-character escape (`s` starts with `\`): punctuation, octal,
/// `\xHH`, `\x{H…}` or one of `\a \f \n \r \t \v`.
fn escaped_char(s: &str) -> Parsed<'_, u32> {
    let mut rest = s[1..].chars();
    let c = rest.next().ok_or(TRAILING_BACKSLASH)?;
    let t = rest.as_str();
    let is_octal = |t: &str| t.bytes().next().is_some_and(|b| (b'0'..=b'7').contains(&b));
    match c {
        '1'..='7' if !is_octal(t) => Err(INVALID_ESCAPE), // a back-reference
        '0'..='7' => {
            let mut value = c as u32 - '0' as u32;
            let mut t = t;
            for _ in 0..2 {
                if !is_octal(t) {
                    break;
                }
                value = value * 8 + u32::from(t.as_bytes()[0] - b'0');
                t = &t[1..];
            }
            Ok((value, t))
        }
        'x' => {
            let mut chars = t.chars();
            match chars.next() {
                Some('{') => {
                    let body = chars.as_str();
                    let end = body.find('}').ok_or(INVALID_ESCAPE)?;
                    let digits = &body[..end];
                    if digits.is_empty() || !digits.chars().all(|d| d.is_ascii_hexdigit()) {
                        return Err(INVALID_ESCAPE);
                    }
                    let value = digits.chars().try_fold(0u32, |v, d| {
                        let v = v * 16 + d.to_digit(16).unwrap_or(0);
                        (v <= 0x10FFFF).then_some(v)
                    });
                    value.map(|v| (v, &body[end + 1..])).ok_or(INVALID_ESCAPE)
                }
                Some(hi) => {
                    let lo = chars.next();
                    match (hi.to_digit(16), lo.and_then(|l| l.to_digit(16))) {
                        (Some(hi), Some(lo)) => Ok((hi * 16 + lo, chars.as_str())),
                        _ => Err(INVALID_ESCAPE),
                    }
                }
                None => Err(INVALID_ESCAPE),
            }
        }
        'a' => Ok((0x07, t)),
        'f' => Ok((0x0C, t)),
        'n' => Ok((0x0A, t)),
        'r' => Ok((0x0D, t)),
        't' => Ok((0x09, t)),
        'v' => Ok((0x0B, t)),
        c if c.is_ascii() && !c.is_ascii_alphanumeric() => Ok((c as u32, t)),
        _ => Err(INVALID_ESCAPE),
    }
}

/// A `[...]` class at the start of `s`.
fn bracket_class(s: &str) -> Parsed<'_, ClassUnicode> {
    let mut t = &s[1..];
    let negated = match t.strip_prefix('^') {
        Some(rest) => {
            t = rest;
            true
        }
        None => false,
    };
    let mut class = ClassUnicode::empty();
    let mut first = true;
    // `]` right after `[` or `[^` is a member, not the end.
    while first || !t.starts_with(']') {
        first = false;
        if t.len() > 2 && t.starts_with("[:") {
            if let Some(rest) = posix_class(t, &mut class)? {
                t = rest;
                continue;
            }
        }
        if let Some(rest) = unicode_class(t, &mut class)? {
            t = rest;
            continue;
        }
        if let Some(rest) = perl_class(t, &mut class) {
            t = rest;
            continue;
        }
        let (lo, rest) = class_char(t)?;
        t = rest;
        let mut hi = lo;
        // `[a-]` is `a` and `-`.
        if t.len() >= 2 && t.starts_with('-') && !t[1..].starts_with(']') {
            let (h, rest) = class_char(&t[1..])?;
            if h < lo {
                return Err(INVALID_RANGE);
            }
            hi = h;
            t = rest;
        }
        push_range(&mut class, lo, hi);
    }
    if negated {
        class = self::negated(&class);
    }
    Ok((class, &t[1..]))
}

/// One member of a class: a character or an escape.
fn class_char(s: &str) -> Parsed<'_, u32> {
    match s.chars().next() {
        None => Err(MISSING_BRACKET),
        Some('\\') => escaped_char(s),
        Some(c) => Ok((c as u32, &s[c.len_utf8()..])),
    }
}

/// Adds the scalar values in `lo..=hi` (surrogates cannot occur in text).
fn push_range(class: &mut ClassUnicode, lo: u32, hi: u32) {
    if let Some(range) = scalar_range(lo, hi) {
        class.push(range);
    }
}

/// `lo..=hi` without the surrogates at either end, as one range of chars
/// (which may span the surrogate block); `None` when nothing is left.
fn scalar_range(lo: u32, hi: u32) -> Option<ClassUnicodeRange> {
    const SURROGATES: std::ops::RangeInclusive<u32> = 0xD800..=0xDFFF;
    let lo = if SURROGATES.contains(&lo) { 0xE000 } else { lo };
    let hi = if SURROGATES.contains(&hi) { 0xD7FF } else { hi };
    let (lo, hi) = (char::from_u32(lo)?, char::from_u32(hi)?);
    (lo <= hi).then(|| ClassUnicodeRange::new(lo, hi))
}

/// The complement of `class` among all scalar values. (Computed here
/// because `ClassUnicode::negate` gets the gap wrong between two ranges
/// that end and start at the surrogate block.)
fn negated(class: &ClassUnicode) -> ClassUnicode {
    let mut out = Vec::new();
    let mut next = 0u32;
    for range in class.iter() {
        let (lo, hi) = (u32::from(range.start()), u32::from(range.end()));
        if lo > next {
            out.extend(scalar_range(next, lo - 1));
        }
        next = hi + 1;
    }
    if next <= 0x10FFFF {
        out.extend(scalar_range(next, 0x10FFFF));
    }
    ClassUnicode::new(out)
}

/// `[:name:]` or `[:^name:]`, ASCII only. `None` when no `:]` follows.
fn posix_class<'a>(s: &'a str, class: &mut ClassUnicode) -> Result<Option<&'a str>, ReError> {
    let Some(end) = s[2..].find(":]") else {
        return Ok(None);
    };
    let name = &s[2..end + 2];
    let (negated, name) = match name.strip_prefix('^') {
        Some(name) => (true, name),
        None => (false, name),
    };
    let ranges: &[(u8, u8)] = match name {
        "alnum" => &[(b'0', b'9'), (b'A', b'Z'), (b'a', b'z')],
        "alpha" => &[(b'A', b'Z'), (b'a', b'z')],
        "ascii" => &[(0x00, 0x7F)],
        "blank" => &[(b'\t', b'\t'), (b' ', b' ')],
        "cntrl" => &[(0x00, 0x1F), (0x7F, 0x7F)],
        "digit" => &[(b'0', b'9')],
        "graph" => &[(b'!', b'~')],
        "lower" => &[(b'a', b'z')],
        "print" => &[(b' ', b'~')],
        "punct" => &[(b'!', b'/'), (b':', b'@'), (b'[', b'`'), (b'{', b'~')],
        "space" => &[(b'\t', b'\r'), (b' ', b' ')],
        "upper" => &[(b'A', b'Z')],
        "word" => &[(b'0', b'9'), (b'A', b'Z'), (b'_', b'_'), (b'a', b'z')],
        "xdigit" => &[(b'0', b'9'), (b'A', b'F'), (b'a', b'f')],
        _ => return Err(INVALID_RANGE),
    };
    class.union(&ascii_class(ranges, negated));
    Ok(Some(&s[end + 4..]))
}

/// `\d \D \s \S \w \W`, ASCII only. `None` when `s` starts otherwise.
fn perl_class<'a>(s: &'a str, class: &mut ClassUnicode) -> Option<&'a str> {
    let (ranges, negated): (&[(u8, u8)], bool) = match s.get(..2)? {
        "\\d" => (&[(b'0', b'9')], false),
        "\\D" => (&[(b'0', b'9')], true),
        "\\s" => (&[(b'\t', b'\n'), (0x0C, b'\r'), (b' ', b' ')], false),
        "\\S" => (&[(b'\t', b'\n'), (0x0C, b'\r'), (b' ', b' ')], true),
        "\\w" => (
            &[(b'0', b'9'), (b'A', b'Z'), (b'_', b'_'), (b'a', b'z')],
            false,
        ),
        "\\W" => (
            &[(b'0', b'9'), (b'A', b'Z'), (b'_', b'_'), (b'a', b'z')],
            true,
        ),
        _ => return None,
    };
    class.union(&ascii_class(ranges, negated));
    Some(&s[2..])
}

fn ascii_class(ranges: &[(u8, u8)], negated: bool) -> ClassUnicode {
    let class = ClassUnicode::new(
        ranges
            .iter()
            .map(|&(lo, hi)| ClassUnicodeRange::new(char::from(lo), char::from(hi))),
    );
    if negated {
        self::negated(&class)
    } else {
        class
    }
}

/// `\pX`, `\p{Name}`, `\PX`, `\P{Name}` (a leading `^` in the name
/// negates too). `None` when `s` does not start with `\p` or `\P`.
fn unicode_class<'a>(s: &'a str, class: &mut ClassUnicode) -> Result<Option<&'a str>, ReError> {
    let mut negated = if s.starts_with("\\p") {
        false
    } else if s.starts_with("\\P") {
        true
    } else {
        return Ok(None);
    };
    let t = &s[2..];
    let c = t.chars().next().ok_or(INVALID_RANGE)?;
    let (mut name, rest) = if c == '{' {
        let end = s.find('}').ok_or(INVALID_RANGE)?;
        (&s[3..end], &s[end + 1..])
    } else {
        t.split_at(c.len_utf8())
    };
    if let Some(stripped) = name.strip_prefix('^') {
        negated = !negated;
        name = stripped;
    }
    let members = unicode_table(&canonical_name(name)).ok_or(INVALID_RANGE)?;
    if negated {
        class.union(&self::negated(members));
    } else {
        class.union(members);
    }
    Ok(Some(rest))
}

/// The form Go looks names up in: first letter upper case, the others lower
/// case (ASCII only), `_`, `-` and space dropped.
fn canonical_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut first = true;
    for c in name.chars() {
        match c {
            '_' | '-' | ' ' => continue,
            c if first => out.push(c.to_ascii_uppercase()),
            c => out.push(c.to_ascii_lowercase()),
        }
        first = false;
    }
    out
}

/// The members of a Unicode class by canonical name, as Go's tables have
/// them (Unicode 15.0.0).
///
/// The tables come from `regex-syntax`, which is on a later Unicode
/// version: what was assigned after 15.0 is taken out of every category and
/// script, and added to `C` and `Cn` (unassigned, as far as Go knows). This
/// leaves the characters of 15.0 that changed category or script since:
/// one, handled below. Checked against Go's tables for every name and code
/// point when this was written; tests/differential/ checks the boundaries
/// of every range against Go on each run.
pub(crate) fn unicode_table(name: &str) -> Option<&'static ClassUnicode> {
    static SPECIAL: OnceLock<[ClassUnicode; 3]> = OnceLock::new();
    static NAMED: [OnceLock<ClassUnicode>; UNICODE_NAMES.len()] =
        [const { OnceLock::new() }; UNICODE_NAMES.len()];
    let special = |i: usize| {
        &SPECIAL.get_or_init(|| {
            let assigned = negated(&go_class("Cn", "gc"));
            [
                ClassUnicode::new([ClassUnicodeRange::new('\0', char::MAX)]),
                assigned,
                ClassUnicode::new([ClassUnicodeRange::new('\0', '\x7F')]),
            ]
        })[i]
    };
    match name {
        "Any" => return Some(special(0)),
        "Assigned" => return Some(special(1)),
        "Ascii" => return Some(special(2)),
        _ => {}
    }
    let i = UNICODE_NAMES
        .binary_search_by(|(canonical, _, _)| canonical.cmp(&name))
        .ok()?;
    let (_, property, target) = UNICODE_NAMES[i];
    Some(NAMED[i].get_or_init(|| go_class(target, property)))
}

/// A general category (`gc`) or script (`sc`) as of Unicode 15.0.0.
fn go_class(target: &str, property: &str) -> ClassUnicode {
    static AGE: OnceLock<(ClassUnicode, ClassUnicode)> = OnceLock::new();
    let (assigned_by_15, unassigned_in_15) = AGE.get_or_init(|| {
        let assigned = builtin_class(r"\p{age:15.0}");
        let unassigned = negated(&assigned);
        (assigned, unassigned)
    });
    let mut class = builtin_class(&format!(r"\p{{{property}={target}}}"));
    if property == "gc" && (target == "C" || target == "Cn") {
        class.union(unassigned_in_15);
    } else {
        class.intersect(assigned_by_15);
    }
    // The one character of 15.0 whose category changed later: U+1171E AHOM
    // CONSONANT SIGN MEDIAL RA, a nonspacing mark until Unicode 16.0.
    const AHOM_MEDIAL_RA: char = '\u{1171E}';
    let ra = ClassUnicode::new([ClassUnicodeRange::new(AHOM_MEDIAL_RA, AHOM_MEDIAL_RA)]);
    match (property, target) {
        ("gc", "Mn") => class.union(&ra),
        ("gc", "Mc") => class.intersect(&negated(&ra)),
        _ => {}
    }
    class
}

fn literal(c: char) -> Hir {
    let mut buf = [0; 4];
    Hir::literal(c.encode_utf8(&mut buf).as_bytes())
}

fn any_but_newline() -> ClassUnicode {
    negated(&ClassUnicode::new([ClassUnicodeRange::new('\n', '\n')]))
}

/// A class from `regex-syntax`'s Unicode tables, named by a fixed
/// expression of this module (never by user text). An expression that does
/// not parse gives an empty class, which a test rules out.
fn builtin_class(expr: &str) -> ClassUnicode {
    use regex_syntax::hir::HirKind;
    match regex_syntax::parse(expr).map(Hir::into_kind) {
        Ok(HirKind::Class(Class::Unicode(class))) => class,
        // A class of one character comes back as that character.
        Ok(HirKind::Literal(lit)) => match std::str::from_utf8(&lit.0).map(|s| s.chars()) {
            Ok(mut chars) => match (chars.next(), chars.next()) {
                (Some(c), None) => ClassUnicode::new([ClassUnicodeRange::new(c, c)]),
                _ => ClassUnicode::empty(),
            },
            Err(_) => ClassUnicode::empty(),
        },
        _ => ClassUnicode::empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(re: &str) -> Vec<(char, char)> {
        match parse(re).map(Hir::into_kind) {
            Ok(regex_syntax::hir::HirKind::Class(Class::Unicode(c))) => {
                c.iter().map(|r| (r.start(), r.end())).collect()
            }
            // An empty class is made a byte class that matches nothing.
            Ok(regex_syntax::hir::HirKind::Class(Class::Bytes(c))) if c.ranges().is_empty() => {
                vec![]
            }
            Ok(regex_syntax::hir::HirKind::Literal(l)) => {
                let c = std::str::from_utf8(&l.0)
                    .ok()
                    .and_then(|s| s.chars().next())
                    .expect("one char");
                vec![(c, c)]
            }
            other => panic!("{re}: {other:?}"),
        }
    }

    #[test]
    fn every_unicode_name_has_members() {
        for (name, _, target) in UNICODE_NAMES {
            let class = unicode_table(name).expect("listed");
            // Surrogates never occur in text.
            assert!(!class.ranges().is_empty() || *target == "Cs", "{name}");
        }
        assert!(builtin_class(r"\p{age:15.0}").ranges().len() > 100);
        // Assigned in Unicode 16.0 (Garay): not a letter for Go 1.26 yet.
        let garay = parse(r"\pL").expect("parse");
        let re = regex_automata::meta::Regex::builder()
            .build_from_hir(&garay)
            .expect("build");
        assert!(re.is_match("a"));
        assert!(!re.is_match("\u{10D50}"));
        let other = parse(r"\pC").expect("parse");
        let re = regex_automata::meta::Regex::builder()
            .build_from_hir(&other)
            .expect("build");
        assert!(re.is_match("\u{10D50}"));
        assert!(re.is_match("\u{378}"));
        assert!(!re.is_match("a"));
    }

    #[test]
    fn classes_read_as_go_reads_them() {
        assert_eq!(members("[[]"), [('[', '[')]);
        assert_eq!(members("[]a]"), [(']', ']'), ('a', 'a')]);
        assert_eq!(members("[a&&b]"), [('&', '&'), ('a', 'b')]);
        assert_eq!(members("[a~~b]"), [('a', 'b'), ('~', '~')]);
        assert_eq!(members(r"[\d]"), [('0', '9')]);
        assert_eq!(members("[a-]"), [('-', '-'), ('a', 'a')]);
        assert_eq!(members("[[:digit:]x]"), [('0', '9'), ('x', 'x')]);
        assert_eq!(members(r"[\x41-\x43]"), [('A', 'C')]);
        assert_eq!(members(r"\x41"), [('A', 'A')]);
        assert_eq!(members(r"\101"), [('A', 'A')]);
        assert_eq!(members(r"\0"), [('\0', '\0')]);
        assert_eq!(members(r"\_"), [('_', '_')]);
        assert_eq!(members(r"[^\x00-\x{10FFFF}]"), []);
        assert_eq!(members("[^\u{D7FF}\u{E000}]").len(), 2);
        assert_eq!(
            members("[^\u{D7FF}\u{E000}]"),
            [('\0', '\u{D7FE}'), ('\u{E001}', '\u{10FFFF}')]
        );
    }

    #[test]
    fn what_go_rejects_is_rejected() {
        for (re, why) in [
            ("[z-a]", INVALID_RANGE),
            ("[", MISSING_BRACKET),
            ("[a", MISSING_BRACKET),
            (r"\q", INVALID_ESCAPE),
            (r"\o", INVALID_ESCAPE),
            (r"\1", INVALID_ESCAPE),
            (r"\8", INVALID_ESCAPE),
            (r"\é", INVALID_ESCAPE),
            (r"\C", INVALID_ESCAPE),
            (r"\x4", INVALID_ESCAPE),
            (r"\xg0", INVALID_ESCAPE),
            (r"[\b]", INVALID_ESCAPE),
            ("\\", TRAILING_BACKSLASH),
            (r"\pX", INVALID_RANGE),
            (r"\p", INVALID_RANGE),
            (r"\p^", INVALID_RANGE),
            ("[[:foo:]]", INVALID_RANGE),
            ("a**", INVALID_REPEAT_OP),
            ("a*+", INVALID_REPEAT_OP),
            ("a*??", INVALID_REPEAT_OP),
            ("*", MISSING_REPEAT_ARGUMENT),
            ("(*)", MISSING_REPEAT_ARGUMENT),
            ("a|*", MISSING_REPEAT_ARGUMENT),
            ("(a", MISSING_PAREN),
            ("a)", UNEXPECTED_PAREN),
            ("a{1001}", INVALID_REPEAT_SIZE),
            ("a{2,1}", INVALID_REPEAT_SIZE),
            ("x{2}{3}", INVALID_REPEAT_OP),
            (r"\P^L", INVALID_RANGE),
            (r"\p{Old_Italic}", INVALID_RANGE),
            (r"\p{Garay}", INVALID_RANGE),
            (r"\p{L", INVALID_RANGE),
            (r"\p{}", INVALID_RANGE),
        ] {
            assert_eq!(parse(re).err(), Some(why), "{re}");
        }
        for re in [
            "^*",
            "a*?",
            "a{",
            "a{1",
            "a{,1}",
            "a{01}",
            r"\Q*+?\E*",
            r"\Qa",
            "[]]",
            "[^]]",
            r"[\pL\d-]",
            "[a-b-c]",
            r"\pl",
            r"\PN",
            "x{2}",
            "(.*/)?a",
            r"\p{greek}",
            r"\p{^Greek}",
            r"\P{cased_letter}",
            r"\p{Any}",
            r"\p{ascii}",
            r"[\p{Lu}\p{Nd}]",
            r"\x{41}",
            "a|b|",
            "|",
        ] {
            assert!(parse(re).is_ok(), "{re}");
        }
    }
}
