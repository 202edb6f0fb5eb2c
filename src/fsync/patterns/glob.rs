//! Shell-style matching of one name against one pattern with the rules of
//! Go's `path/filepath.Match` on Unix: `*` any run of bytes without `/`, `?`
//! one character (a valid UTF-8 sequence, or else one byte), `[...]` /
//! `[^...]` classes of characters and `lo-hi` ranges, `\` quoting the next
//! byte. BuildKit's sender uses it twice: to reject a malformed pattern up
//! front (matching it against `.`), and to expand wildcards in follow paths.
//!
//! A malformed pattern is only reported when matching reads the malformed
//! part: each star-free chunk is read whole, but once a chunk cannot match,
//! the chunks after it are not read. So the up-front check (matching `.`)
//! misses `a*[`: its first chunk `a` already fails on `.`.

/// The pattern is malformed (Go's `filepath.ErrBadPattern`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadPattern;

impl std::fmt::Display for BadPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("syntax error in pattern")
    }
}

impl std::error::Error for BadPattern {}

/// The replacement character a byte that is not valid UTF-8 decodes to.
pub(crate) const REPLACEMENT: u32 = 0xFFFD;

/// Decodes the character at the start of `s` the way Go does: a valid UTF-8
/// sequence gives its scalar value and length; anything else (a stray or
/// truncated byte, an overlong form, a surrogate) gives U+FFFD and length 1;
/// an empty slice gives U+FFFD and length 0.
pub(crate) fn decode_char(s: &[u8]) -> (u32, usize) {
    let Some(&first) = s.first() else {
        return (REPLACEMENT, 0);
    };
    let len = match first {
        0x00..=0x7F => return (u32::from(first), 1),
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return (REPLACEMENT, 1),
    };
    match s.get(..len).and_then(|b| std::str::from_utf8(b).ok()) {
        Some(text) => (text.chars().next().map_or(REPLACEMENT, u32::from), len),
        None => (REPLACEMENT, 1),
    }
}

/// Whether `name` matches `pattern`, or why the pattern is malformed.
pub fn filepath_match(pattern: &[u8], name: &[u8]) -> Result<bool, BadPattern> {
    let mut pattern = pattern;
    let mut name = name;
    'chunks: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            // A trailing star takes the rest of the name, unless it has a `/`.
            return Ok(!name.contains(&b'/'));
        }
        // The chunk right here; the last chunk must use up the name.
        if let Some(left) = match_chunk(chunk, name)? {
            if left.is_empty() || !pattern.is_empty() {
                name = left;
                continue;
            }
        }
        if star {
            // Let the star take one more byte at a time, never a `/`.
            let mut skip = 0;
            while skip < name.len() && name[skip] != b'/' {
                if let Some(left) = match_chunk(chunk, &name[skip + 1..])? {
                    if pattern.is_empty() && !left.is_empty() {
                        skip += 1;
                        continue;
                    }
                    name = left;
                    continue 'chunks;
                }
                skip += 1;
            }
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

/// Splits off the leading stars and the chunk up to the next star outside a
/// class.
fn scan_chunk(pattern: &[u8]) -> (bool, &[u8], &[u8]) {
    let stars = pattern.iter().take_while(|&&b| b == b'*').count();
    let pattern = &pattern[stars..];
    let mut in_class = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'\\' if i + 1 < pattern.len() => i += 1,
            b'[' => in_class = true,
            b']' => in_class = false,
            b'*' if !in_class => break,
            _ => {}
        }
        i += 1;
    }
    (stars > 0, &pattern[..i], &pattern[i..])
}

/// Matches a star-free chunk at the start of `s`: the rest of `s` when it
/// matches, `None` when it does not. The whole chunk is always read, so a
/// syntax error anywhere in it is reported even after a mismatch.
fn match_chunk<'a>(mut chunk: &[u8], mut s: &'a [u8]) -> Result<Option<&'a [u8]>, BadPattern> {
    let mut failed = false;
    while let Some(&c) = chunk.first() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match c {
            b'[' => {
                let mut ch = 0;
                if !failed {
                    let (decoded, n) = decode_char(s);
                    ch = decoded;
                    s = &s[n..];
                }
                chunk = &chunk[1..];
                let negated = chunk.first() == Some(&b'^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut ranges = 0;
                loop {
                    if chunk.first() == Some(&b']') && ranges > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, rest) = class_char(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if chunk.first() == Some(&b'-') {
                        let (h, rest) = class_char(&chunk[1..])?;
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= ch && ch <= hi {
                        matched = true;
                    }
                    ranges += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    if s[0] == b'/' {
                        failed = true;
                    }
                    s = &s[decode_char(s).1..];
                }
                chunk = &chunk[1..];
            }
            _ => {
                if c == b'\\' {
                    chunk = &chunk[1..];
                    if chunk.is_empty() {
                        return Err(BadPattern);
                    }
                }
                if !failed {
                    if chunk[0] != s[0] {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    Ok(if failed { None } else { Some(s) })
}

/// One character of a class (possibly `\`-quoted), which must be followed by
/// more of the pattern.
fn class_char(chunk: &[u8]) -> Result<(u32, &[u8]), BadPattern> {
    let mut chunk = match chunk.first() {
        None | Some(b'-') | Some(b']') => return Err(BadPattern),
        Some(_) => chunk,
    };
    if chunk[0] == b'\\' {
        chunk = &chunk[1..];
        if chunk.is_empty() {
            return Err(BadPattern);
        }
    }
    let (ch, n) = decode_char(chunk);
    let rest = &chunk[n..];
    if (ch == REPLACEMENT && n == 1) || rest.is_empty() {
        return Err(BadPattern);
    }
    Ok((ch, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go's own `filepath.Match` table (path/filepath/match_test.go), the
    /// rows that hold on Unix: pattern, name, match, malformed.
    const GO_MATCH_TABLE: &[(&str, &str, bool, bool)] = &[
        ("abc", "abc", true, false),
        ("*", "abc", true, false),
        ("*c", "abc", true, false),
        ("a*", "a", true, false),
        ("a*", "abc", true, false),
        ("a*", "ab/c", false, false),
        ("a*/b", "abc/b", true, false),
        ("a*/b", "a/c/b", false, false),
        ("a*b*c*d*e*/f", "axbxcxdxe/f", true, false),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true, false),
        ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false, false),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false, false),
        ("a*b?c*x", "abxbbxdbxebxczzx", true, false),
        ("a*b?c*x", "abxbbxdbxebxczzy", false, false),
        ("ab[c]", "abc", true, false),
        ("ab[b-d]", "abc", true, false),
        ("ab[e-g]", "abc", false, false),
        ("ab[^c]", "abc", false, false),
        ("ab[^b-d]", "abc", false, false),
        ("ab[^e-g]", "abc", true, false),
        ("a\\*b", "a*b", true, false),
        ("a\\*b", "ab", false, false),
        ("a?b", "a☺b", true, false),
        ("a[^a]b", "a☺b", true, false),
        ("a???b", "a☺b", false, false),
        ("a[^a][^a][^a]b", "a☺b", false, false),
        ("[a-ζ]*", "α", true, false),
        ("*[a-ζ]", "A", false, false),
        ("a?b", "a/b", false, false),
        ("a*b", "a/b", false, false),
        ("[\\]a]", "]", true, false),
        ("[\\-]", "-", true, false),
        ("[x\\-]", "x", true, false),
        ("[x\\-]", "-", true, false),
        ("[x\\-]", "z", false, false),
        ("[\\-x]", "x", true, false),
        ("[\\-x]", "-", true, false),
        ("[\\-x]", "a", false, false),
        ("[]a]", "]", false, true),
        ("[-]", "-", false, true),
        ("[x-]", "x", false, true),
        ("[x-]", "-", false, true),
        ("[x-]", "z", false, true),
        ("[-x]", "x", false, true),
        ("[-x]", "-", false, true),
        ("[-x]", "a", false, true),
        ("\\", "a", false, true),
        ("[a-b-c]", "a", false, true),
        ("[", "a", false, true),
        ("[^", "a", false, true),
        ("[^bc", "a", false, true),
        ("a[", "a", false, true),
        ("a[", "ab", false, true),
        ("a[", "x", false, true),
        ("a/b[", "x", false, true),
        ("*x", "xxx", true, false),
    ];

    #[test]
    fn go_filepath_match_table() {
        for &(pattern, name, want, malformed) in GO_MATCH_TABLE {
            let got = filepath_match(pattern.as_bytes(), name.as_bytes());
            if malformed {
                assert_eq!(got, Err(BadPattern), "{pattern:?} {name:?}");
            } else {
                assert_eq!(got, Ok(want), "{pattern:?} {name:?}");
            }
        }
    }

    #[test]
    fn only_the_chunks_matching_reads_are_checked() {
        assert_eq!(filepath_match(b"x[", b"."), Err(BadPattern));
        assert_eq!(filepath_match(b"x*[", b"."), Ok(false));
        assert_eq!(filepath_match(b"*[", b"."), Err(BadPattern));
        assert_eq!(filepath_match(b".*[", b"."), Err(BadPattern));
        assert_eq!(filepath_match(b"*", b"."), Ok(true));
        assert_eq!(filepath_match(b"[z-a]", b"."), Ok(false));
        assert_eq!(filepath_match(b"[\xff]", b"."), Err(BadPattern));
        assert_eq!(filepath_match("[\u{fffd}]".as_bytes(), b"."), Ok(false));
    }

    #[test]
    fn invalid_utf8_names_decode_one_byte_at_a_time() {
        assert_eq!(decode_char(b"\xe2\x98\xba"), (0x263A, 3));
        assert_eq!(decode_char(b"\xe2\x98"), (REPLACEMENT, 1));
        assert_eq!(decode_char(b"\xed\xa0\x80"), (REPLACEMENT, 1));
        assert_eq!(decode_char(b"\xc0\x80"), (REPLACEMENT, 1));
        assert_eq!(filepath_match(b"a??b", b"a\xe2\x98b"), Ok(true));
        assert_eq!(filepath_match(b"a?b", b"a\xe2\x98b"), Ok(false));
    }
}
