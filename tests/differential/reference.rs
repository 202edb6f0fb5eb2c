//! bkd's matcher against the reference matcher ([`super::oracle`]): the
//! ported tables row by row (which also checks the tables' expected values
//! against the reference), then generated pattern lists and paths built
//! from the characters whose reading differs between regex dialects.

use bkd::fsync::patterns::{clean_bytes, filepath_match, MatchInfo, PatternMatcher};

use super::oracle::{Answer, Answers, Oracle};

pub mod tables {
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/fsync/patterns/tables.rs"
    ));
}

/// bkd's answers, in the reference's shape.
pub fn ours<P: AsRef<str>, Q: AsRef<[u8]>>(patterns: &[P], paths: &[Q]) -> Answers {
    let m = match PatternMatcher::new(patterns) {
        Ok(m) => m,
        Err(e) => {
            return Answers {
                new_error: Some(e.to_string()),
                whole: vec![],
                walked: vec![],
                no_context: vec![],
            }
        }
    };
    let mut answers = Answers {
        new_error: None,
        whole: vec![],
        walked: vec![],
        no_context: vec![],
    };
    for path in paths {
        let path = path.as_ref();
        answers
            .whole
            .push(Answer::of(m.matches_or_parent_matches(path)));
        answers.no_context.push(Answer::of(
            m.matches_using_parent(path, &MatchInfo::default())
                .map(|r| r.0),
        ));
        answers.walked.push(Answer::of(walked(&m, path)));
    }
    answers
}

/// The parents first, their results handed down, as the walk does.
fn walked(m: &PatternMatcher, path: &[u8]) -> Result<bool, bkd::fsync::patterns::PatternError> {
    let mut info = MatchInfo::default();
    if let Some(slash) = path.iter().rposition(|&b| b == b'/') {
        let dir = clean_bytes(&path[..=slash]);
        if dir != b"." {
            let ends = dir.iter().enumerate().filter(|(_, &b)| b == b'/');
            for end in ends.map(|(i, _)| i).chain([dir.len()]) {
                info = m.matches_using_parent(&dir[..end], &info)?.1;
            }
        }
    }
    Ok(m.matches_using_parent(path, &info)?.0)
}

/// Compares one pattern list on some paths; a description of each
/// disagreement.
pub fn compare<P: AsRef<str>, Q: AsRef<[u8]>>(
    oracle: &mut Oracle,
    patterns: &[P],
    paths: &[Q],
) -> Vec<String> {
    let as_bytes: Vec<&[u8]> = patterns.iter().map(|p| p.as_ref().as_bytes()).collect();
    let theirs = oracle.patterns(&as_bytes, paths);
    let ours = ours(patterns, paths);
    let list: Vec<&str> = patterns.iter().map(AsRef::as_ref).collect();
    let mut out = Vec::new();
    if theirs.new_error.is_some() != ours.new_error.is_some() {
        out.push(format!(
            "{list:?}: reading the list: reference {:?}, bkd {:?}",
            theirs.new_error, ours.new_error
        ));
        return out;
    }
    for (i, path) in paths.iter().enumerate() {
        let path = String::from_utf8_lossy(path.as_ref());
        for (way, t, o) in [
            ("whole path", &theirs.whole, &ours.whole),
            ("walked", &theirs.walked, &ours.walked),
            ("no parent results", &theirs.no_context, &ours.no_context),
        ] {
            if t.get(i) != o.get(i) {
                out.push(format!(
                    "{list:?} {path:?} ({way}): reference {:?}, bkd {:?}",
                    t.get(i),
                    o.get(i)
                ));
            }
        }
    }
    out
}

/// Every table row: the reference gives the table's answer, and bkd the
/// reference's.
pub fn check_tables(oracle: &mut Oracle) -> Vec<String> {
    let mut problems = Vec::new();
    let mut expect = |oracle: &mut Oracle, patterns: &[&str], path: &str, want: Answer| {
        let theirs = oracle.patterns(
            &patterns.iter().map(|p| p.as_bytes()).collect::<Vec<_>>(),
            &[path],
        );
        let got = theirs.whole.first().copied().unwrap_or(Answer::Error);
        let got = if theirs.new_error.is_some() {
            Answer::Error
        } else {
            got
        };
        if got != want {
            problems.push(format!(
                "table row {patterns:?} {path:?}: the reference says {got:?}, the table {want:?}"
            ));
        }
        problems.extend(compare(oracle, patterns, &[path]));
    };
    let yes_no = |b: bool| if b { Answer::Yes } else { Answer::No };
    for &(pattern, path, want) in tables::MATCHES {
        expect(oracle, &[pattern], path, yes_no(want));
    }
    for &(patterns, path, want) in tables::MULTI {
        expect(oracle, patterns, path, yes_no(want));
    }
    for &(pattern, path, want, rejected) in tables::GO_GLOB_ROWS {
        let want = if rejected {
            Answer::Error
        } else {
            yes_no(want)
        };
        expect(oracle, &[pattern], path, want);
    }
    for &(pattern, path, want) in tables::READINGS {
        expect(oracle, &[pattern], path, want.map_or(Answer::Error, yes_no));
    }
    problems
}

mod names {
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/fsync/patterns/unicode_names.rs"
    ));
}

/// Go's Unicode classes (`\p{Name}`, on Unicode 15.0) against bkd's: each
/// name bkd knows, checked at both ends of every range of Go's class and
/// just outside them, through the matcher (`\p{Name}*` matches a name
/// whose first character is in the class).
pub fn check_unicode_classes(oracle: &mut Oracle) -> Vec<String> {
    let mut problems = Vec::new();
    let mut all: Vec<&str> = names::UNICODE_NAMES.iter().map(|n| n.0).collect();
    all.extend(["Any", "Assigned", "Ascii"]);
    for name in all {
        let ranges = oracle.unicode(name);
        if ranges.is_empty() {
            problems.push(format!("Go rejects \\p{{{name}}}, which bkd accepts"));
            continue;
        }
        let m = PatternMatcher::new(&[format!("\\p{{{name}}}*")]).expect("reads");
        let go_has = |c: u32| ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
        let mut probes: Vec<u32> = ranges
            .iter()
            .flat_map(|&(lo, hi)| [lo.saturating_sub(1), lo, hi, hi + 1])
            .collect();
        probes.dedup();
        for c in probes.into_iter().filter_map(char::from_u32) {
            let mut buf = [0; 4];
            let ours = m.matches_or_parent_matches(c.encode_utf8(&mut buf).as_bytes());
            if ours != Ok(go_has(c as u32)) {
                problems.push(format!(
                    "\\p{{{name}}} and U+{:04X}: Go {}, bkd {ours:?}",
                    c as u32,
                    go_has(c as u32)
                ));
            }
        }
    }
    problems
}

/// A small deterministic generator (splitmix64).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// Pieces of patterns: plain and multibyte characters, every wildcard and
/// class form, and the escapes Go's regexp reads in its own way.
const PATTERN_PIECES: &[&str] = &[
    "a",
    "b",
    "c",
    "é",
    "☺",
    "A",
    "5",
    "/",
    "/",
    "*",
    "*",
    "**",
    "?",
    "?",
    "[",
    "]",
    "[a-c]",
    "[^a]",
    "[!a]",
    "[]a]",
    "[[]",
    "[*]",
    "[?]",
    "[a&&b]",
    "[a~~b]",
    "[\\d]",
    "[[:alpha:]]",
    "[[:x:]]",
    "[z-a]",
    "[é-ü]",
    "^",
    "!",
    "-",
    ".",
    "$",
    "(",
    ")",
    "{",
    "}",
    "|",
    "+",
    ":",
    " ",
    "\\",
    "\\d",
    "\\D",
    "\\w",
    "\\s",
    "\\b",
    "\\B",
    "\\pL",
    "\\PL",
    "\\pN",
    "\\pX",
    "\\x41",
    "\\101",
    "\\Q",
    "\\E",
    "\\z",
    "\\A",
    "\\q",
    "\\.",
    "\\*",
    "\\[",
    "\\\\",
    "&&",
    "~~",
    "\u{FEFF}",
    "./",
    "../",
    "//",
    "{2}",
    "{1,2}",
    "{,2}",
    "{0}",
    "{1001}",
    "\\p{Greek}",
    "\\p{L}",
    "\\p{lu}",
    "\\p{^L}",
    "\\P{Letter}",
    "\\p{Any}",
    "\\p{Old_Italic}",
    "\\p{Foo}",
    "\\x{41}",
    "\\x{10FFFF}",
    "\\x{110000}",
    "[\\p{N}]",
    "[\\x{41}-\\x{43}]",
    "a|b",
    "|",
    "\\pC",
    "\\pZ",
    "[[:^alpha:]]",
    "\\p{Cn}",
];

/// Pieces of path segments, including bytes that are not UTF-8.
const PATH_PIECES: &[&[u8]] = &[
    b"a",
    b"b",
    b"c",
    "é".as_bytes(),
    "☺".as_bytes(),
    b"A",
    b"5",
    b"_",
    b"-",
    b"[",
    b"]",
    b"^",
    b"*",
    b"?",
    b".",
    b"\\",
    b" ",
    b"$",
    b"!",
    b"&",
    b"~",
    b"\xff",
    b"\xe2\x98",
    b"\n",
    "\u{FEFF}".as_bytes(),
    "\u{10D50}".as_bytes(),
    b"x41",
    b"(",
    b"{",
];

pub fn random_pattern(rng: &mut Rng) -> String {
    let n = 1 + rng.below(6);
    let mut p: String = (0..n).map(|_| rng.pick(PATTERN_PIECES)).collect();
    if rng.below(6) == 0 {
        p.insert(0, '!');
    }
    p
}

/// A path that has a fair chance to match `pattern`: its wildcards filled
/// in with sample characters, then mutated a little.
pub fn random_path(rng: &mut Rng, pattern: &str) -> Vec<u8> {
    if rng.below(3) == 0 {
        let segments = 1 + rng.below(3);
        let mut out = Vec::new();
        for i in 0..segments {
            if i > 0 {
                out.push(b'/');
            }
            for _ in 0..1 + rng.below(3) {
                out.extend_from_slice(rng.pick(PATH_PIECES));
            }
        }
        return out;
    }
    let mut out = Vec::new();
    for c in pattern.trim_start_matches('!').chars() {
        match c {
            '*' | '?' | '[' | ']' | '\\' if rng.below(2) == 0 => {
                out.extend_from_slice(rng.pick(PATH_PIECES))
            }
            c => {
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    if rng.below(4) == 0 {
        out.extend_from_slice(b"/");
        out.extend_from_slice(rng.pick(PATH_PIECES));
    }
    out
}

/// Generated lists: patterns of pieces, paths made to match them.
pub fn check_generated(oracle: &mut Oracle, seed: u64, lists: usize) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let mut problems = Vec::new();
    for _ in 0..lists {
        let patterns: Vec<String> = (0..1 + rng.below(3))
            .map(|_| random_pattern(&mut rng))
            .collect();
        let paths: Vec<Vec<u8>> = (0..8)
            .map(|_| {
                let p = patterns[rng.below(patterns.len())].clone();
                random_path(&mut rng, &p)
            })
            .collect();
        problems.extend(compare(oracle, &patterns, &paths));
        // Go's filepath.Match on its own (follow paths use it).
        let pattern = patterns[0].trim_start_matches('!');
        let names = paths;
        let theirs = oracle.glob(pattern.as_bytes(), &names);
        for (name, t) in names.iter().zip(theirs) {
            let o = Answer::of(filepath_match(pattern.as_bytes(), name));
            if o != t {
                problems.push(format!(
                    "filepath.Match({pattern:?}, {:?}): reference {t:?}, bkd {o:?}",
                    String::from_utf8_lossy(name)
                ));
            }
        }
        if problems.len() > 40 {
            break;
        }
    }
    problems
}
