//! The reference's own test tables (moby/patternmatcher v0.6.1,
//! patternmatcher_test.go), the cases the old matcher got wrong, and the
//! walk-shaped checks. Every row is checked three ways, as the reference's
//! tests do: whole path with parents, with the parents' results handed
//! down, and with no parent results.

use super::*;

include!("tables.rs");

/// `TestCompile`: how a pattern is matched, and the Go expression for the
/// ones matched by a regular expression.
const COMPILE: &[(&str, Kind, &str)] = &[
    ("*", Kind::Regex, "^[^/]*$"),
    ("file*", Kind::Regex, "^file[^/]*$"),
    ("*file", Kind::Regex, "^[^/]*file$"),
    ("a*/b", Kind::Regex, "^a[^/]*/b$"),
    ("**", Kind::Suffix, ""),
    ("**/**", Kind::Regex, "^(.*/)?.*$"),
    ("dir/**", Kind::Prefix, ""),
    ("**/dir", Kind::Suffix, ""),
    ("**/dir2/*", Kind::Regex, "^(.*/)?dir2/[^/]*$"),
    ("**/dir2/**", Kind::Regex, "^(.*/)?dir2/.*$"),
    ("**file", Kind::Suffix, ""),
    ("**/file*txt", Kind::Regex, "^(.*/)?file[^/]*txt$"),
    ("**/**/*.txt", Kind::Regex, "^(.*/)?(.*/)?[^/]*\\.txt$"),
    ("a[b-d]e", Kind::Regex, "^a[b-d]e$"),
    (".*", Kind::Regex, "^\\.[^/]*$"),
    ("abc.def", Kind::Exact, ""),
    ("abc?def", Kind::Regex, "^abc[^/]def$"),
    ("**/foo/bar", Kind::Suffix, ""),
    ("a(b)c/def", Kind::Exact, ""),
    ("a.|)$(}+{bc", Kind::Exact, ""),
    (
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        Kind::Exact,
        "",
    ),
];

fn matcher(patterns: &[&str]) -> PatternMatcher {
    PatternMatcher::new(patterns)
        .unwrap_or_else(|e| panic!("patterns {patterns:?} do not compile: {e}"))
}

/// The three ways the reference's tests match a path.
fn three_ways(m: &PatternMatcher, path: &str) -> [Result<bool, PatternError>; 3] {
    let whole = m.matches_or_parent_matches(path.as_bytes());
    let no_context = m
        .matches_using_parent(path.as_bytes(), &MatchInfo::default())
        .map(|r| r.0);
    // The parents one by one (of the cleaned parent, as the reference).
    let walked = (|| {
        let mut info = MatchInfo::default();
        let parents = Parents::of(path.as_bytes());
        if !parents.dir.is_empty() {
            let dir = parents.dir.clone();
            let ends = dir.iter().enumerate().filter(|(_, &b)| b == b'/');
            for end in ends.map(|(i, _)| i).chain([dir.len()]) {
                info = m.matches_using_parent(&dir[..end], &info)?.1;
            }
        }
        Ok(m.matches_using_parent(path.as_bytes(), &info)?.0)
    })();
    [whole, no_context, walked]
}

#[test]
fn patternmatcher_matches_table() {
    for &(pattern, path, want) in MATCHES {
        let m = matcher(&[pattern]);
        for (way, got) in three_ways(&m, path).into_iter().enumerate() {
            assert_eq!(got, Ok(want), "{pattern:?} {path:?} (way {way})");
        }
    }
    for &(patterns, path, want) in MULTI {
        let m = matcher(patterns);
        for (way, got) in three_ways(&m, path).into_iter().enumerate() {
            assert_eq!(got, Ok(want), "{patterns:?} {path:?} (way {way})");
        }
    }
}

#[test]
fn patternmatcher_go_glob_table() {
    for &(pattern, path, want, rejected) in GO_GLOB_ROWS {
        match PatternMatcher::new(&[pattern]) {
            Err(e) => {
                assert!(rejected, "{pattern:?} rejected: {e}");
                assert!(matches!(e, PatternError::Syntax { .. }), "{pattern:?}");
            }
            Ok(m) => {
                assert!(!rejected, "{pattern:?} accepted");
                let got = m.matches_or_parent_matches(path.as_bytes());
                assert_eq!(got, Ok(want), "{pattern:?} {path:?}");
            }
        }
    }
}

#[test]
fn patternmatcher_compile_table() {
    for &(pattern, kind, re) in COMPILE {
        let (got_kind, got_re) = translate(&clean_path(pattern));
        assert_eq!(got_kind, kind, "{pattern:?}");
        if kind == Kind::Regex {
            assert_eq!(got_re, re, "{pattern:?}");
        }
    }
}

#[test]
fn readings_of_classes_escapes_and_multibyte_names() {
    for &(pattern, path, want) in READINGS {
        let m = matcher(&[pattern]);
        let want = want.ok_or(());
        for (way, got) in three_ways(&m, path).into_iter().enumerate() {
            assert_eq!(
                got.map_err(|_| ()),
                want,
                "{pattern:?} {path:?} (way {way})"
            );
        }
    }
}

#[test]
fn a_pattern_that_does_not_compile_fails_every_time_it_is_evaluated() {
    let m = matcher(&["[Local-Only]/"]);
    for _ in 0..2 {
        let err = m.matches_or_parent_matches(b"x").expect_err("bad pattern");
        assert_eq!(
            err.to_string(),
            "invalid pattern \"[Local-Only]/\": syntax error in pattern (invalid character class range)"
        );
    }
}

#[test]
fn a_pattern_that_is_never_evaluated_never_fails() {
    // An exception is only evaluated once something matched.
    let m = matcher(&["a", "!x[z-a]"]);
    assert_eq!(m.matches_or_parent_matches(b"b"), Ok(false));
    assert!(m.matches_or_parent_matches(b"a").is_err());
    // Nor is an inclusion once something matched and nothing excepted it.
    let m = matcher(&["*", "x[z-a]"]);
    assert_eq!(m.matches_or_parent_matches(b"b"), Ok(true));
    // With parent results, a pattern the parent matched is not evaluated.
    let m = matcher(&["a"]);
    let (_, info) = m
        .matches_using_parent(b"a", &MatchInfo::default())
        .expect("a");
    assert_eq!(m.matches_using_parent(b"a/b", &info).map(|r| r.0), Ok(true));
}

#[test]
fn reading_a_list_rejects_only_glob_errors_and_a_lone_exclamation_mark() {
    assert_eq!(
        PatternMatcher::new(&["!"]).err(),
        Some(PatternError::IllegalExclusion)
    );
    assert_eq!(
        PatternMatcher::new(&["a", "!/"]).err(),
        Some(PatternError::IllegalExclusion)
    );
    for bad in [
        "[", "a[", "[]a]", "[-]", "x\\", "[a-b-c]", "[^", "[\\", "x[a--b]",
    ] {
        let err = PatternMatcher::new(&["ok", bad]).expect_err(bad);
        assert_eq!(
            err.to_string(),
            format!(
                "invalid pattern \"{}\": syntax error in pattern",
                crate::text::escape_str(bad)
            )
        );
    }
    for lazy in ["x[z-a]", "a\\q", "[Local-Only]", "x[[:foo:]]", "\\pX"] {
        assert!(PatternMatcher::new(&[lazy]).is_ok(), "{lazy}");
    }
}

#[test]
fn cleaning_trimming_and_exceptions() {
    let m = matcher(&["docs", "config", "", "  "]);
    assert_eq!(m.patterns().len(), 2);
    assert!(!m.has_exclusions());
    let m = matcher(&["docs", "  !docs/README.md"]);
    assert!(m.has_exclusions());
    let m = matcher(&["docs", "!docs/README.md  "]);
    assert!(m.has_exclusions());
    assert_eq!(m.patterns()[1].as_str(), "docs/README.md");
    let m = matcher(&["./a/../b//c/"]);
    assert_eq!(m.patterns()[0].as_str(), "b/c");
    assert_eq!(m.matches_or_parent_matches(b"b/c/d"), Ok(true));
    // `!./a`: cleaning keeps `!.` as a name, so the exception is `./a`.
    let m = matcher(&["a", "!./a"]);
    assert_eq!(m.patterns()[1].as_str(), "./a");
    assert_eq!(m.matches_or_parent_matches(b"a"), Ok(true));
}

#[test]
fn star_stays_within_a_segment_and_double_star_crosses() {
    let m = |p: &[&str], path: &str| matcher(p).matches_or_parent_matches(path.as_bytes());
    assert_eq!(m(&["*.log"], "a.log"), Ok(true));
    assert_eq!(m(&["*.log"], "dir/a.log"), Ok(false));
    assert_eq!(m(&["dir/*.log"], "dir/a.log"), Ok(true));
    assert_eq!(m(&["**/*.log"], "a/b/c.log"), Ok(true));
    assert_eq!(m(&["a/**/z"], "a/b/c/z"), Ok(true));
    assert_eq!(m(&["node_modules"], "node_modules/x/y.js"), Ok(true));
    assert_eq!(m(&["node_modules"], "src/node_modules"), Ok(false));
    let q = ["docs", "!docs/keep.txt"];
    assert_eq!(m(&q, "docs/drop.txt"), Ok(true));
    assert_eq!(m(&q, "docs/keep.txt"), Ok(false));
}

#[test]
fn bytes_that_are_not_utf8_are_one_character_each() {
    let m = |p: &str, path: &[u8]| matcher(&[p]).matches_or_parent_matches(path);
    assert_eq!(m("a?b", b"a\xffb"), Ok(true));
    assert_eq!(m("a??b", b"a\xe2\x98b"), Ok(true));
    assert_eq!(m("a?b", b"a\xe2\x98b"), Ok(false));
    assert_eq!(m("a\u{FFFD}b", b"a\xffb"), Ok(false)); // exact: bytes compared
    assert_eq!(m("a\u{FFFD}*", b"a\xff"), Ok(true)); // expression: U+FFFD
    assert_eq!(m("*", b"\xff\xfe"), Ok(true));
    assert_eq!(m("x/*", b"x/\xff"), Ok(true));
}

#[test]
fn parent_results_agree_with_whole_path_matching() {
    let pm = matcher(&["a", "!a/keep", "**/tmp"]);
    let (_, parent) = pm
        .matches_using_parent(b"a", &MatchInfo::default())
        .expect("a");
    for child in ["a/keep", "a/drop", "a/tmp"] {
        let (with_parent, _) = pm
            .matches_using_parent(child.as_bytes(), &parent)
            .expect("child");
        assert_eq!(
            Ok(with_parent),
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
    assert_eq!(clean_path(""), ".");
    assert_eq!(clean_bytes(b"a/\xff/../b/"), b"a/b");
}

/// 100k walk-ordered paths against 50 typical patterns; prints timings.
/// `cargo test --release --lib -- --ignored bench_matcher --nocapture`
#[test]
#[ignore]
fn bench_matcher() {
    let (patterns, paths, depth) = bench_workload();
    let pm = PatternMatcher::new(&patterns).expect("compile");
    for round in 0..3 {
        let t = std::time::Instant::now();
        let mut stack: Vec<MatchInfo> = Vec::new();
        let mut hits = 0usize;
        for (p, &d) in paths.iter().zip(&depth) {
            stack.truncate(d);
            let parent = stack.last().cloned().unwrap_or_default();
            let (hit, info) = pm.matches_using_parent(p, &parent).expect("match");
            hits += usize::from(hit);
            if d < 3 {
                stack.push(info);
            }
        }
        let walk = t.elapsed();
        let t = std::time::Instant::now();
        let mut whole_hits = 0usize;
        for p in &paths {
            whole_hits += usize::from(pm.matches_or_parent_matches(p).expect("match"));
        }
        let whole = t.elapsed();
        println!(
            "round {round}: {} paths x {} patterns: walk (parent results) {walk:?} ({hits} hits), whole path with parents {whole:?} ({whole_hits} hits)",
            paths.len(),
            patterns.len()
        );
    }
}

#[allow(clippy::type_complexity)]
fn bench_workload() -> (Vec<String>, Vec<Vec<u8>>, Vec<usize>) {
    let patterns: Vec<String> = [
        ".git",
        "node_modules",
        "**/node_modules",
        "*.log",
        "**/*.tmp",
        "dist",
        "build/",
        "coverage",
        ".env",
        "*.swp",
        "**/.DS_Store",
        "target",
        "!target/keep",
        "docs/**/*.md",
        "!docs/README.md",
        "tmp*",
        "**/__pycache__",
        "*.pyc",
        "vendor/**",
        "!vendor/modules.txt",
        ".idea",
        ".vscode",
        "**/*.bak",
        "secrets/*",
        "*.key",
        "!public.key",
        "logs/**/*.gz",
        "test/fixtures/large*",
        "src/**/*.snap",
        "**/testdata/big-*",
        "a?c",
        "[Tt]humbs.db",
        "cache-[0-9]*",
        "**/.cache",
        "out",
        "*.o",
        "*.a",
        "**/*.class",
        "bin/",
        "obj/",
        "*.min.js",
        "!lib/*.min.js",
        "**/.terraform",
        "*.tfstate*",
        "Dockerfile*",
        ".dockerignore",
        "**/*~",
        "#*#",
        "npm-debug.log*",
        "yarn-error.log",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut paths = Vec::new();
    let mut depth = Vec::new();
    let tops = [
        "src",
        "node_modules",
        "docs",
        "vendor",
        "test",
        "lib",
        "build",
        "tmp1",
        "logs",
        "pkg",
        "a",
        "b",
        "c",
        "d",
        "e",
        "f",
        "g",
        "h",
        "i",
        "j",
    ];
    for t in tops {
        paths.push(t.as_bytes().to_vec());
        depth.push(0);
        for s in 0..10 {
            let sd = format!("{t}/mod_{s}");
            paths.push(sd.clone().into_bytes());
            depth.push(1);
            for u in 0..10 {
                let ud = format!("{sd}/pkg{u}");
                paths.push(ud.clone().into_bytes());
                depth.push(2);
                for f in 0..48 {
                    let ext = ["rs", "log", "tmp", "md", "js", "min.js", "pyc", "snap"][f % 8];
                    paths.push(format!("{ud}/file_{f}.{ext}").into_bytes());
                    depth.push(3);
                }
            }
        }
    }
    (patterns, paths, depth)
}
