//! The cases: every row of the reference's tables a Dockerfile build can
//! reach, the reference projects' own build tests, and edge cases of our
//! own (names, `.dockerignore` syntax, exceptions, links, follow paths).

use super::case::{Case, Output};
use super::reference::tables;

/// The walk, the wire and the receiver at their limits: many patterns,
/// names that are not UTF-8, deep trees, hard links, and a local export's
/// modes, times and xattrs.
fn limits(cases: &mut Vec<Case>) {
    let many: Vec<String> = (0..400)
        .map(|i| format!("generated-{i:03}/**/*.tmp"))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let deep: String = "d/".repeat(2000);
    cases.extend([
        Case::new("limits: 400 patterns")
            .ignore(&many)
            .files(&["generated-007/x.tmp", "kept"])
            .absent("generated-007/x.tmp"),
        Case::new("limits: names that are not UTF-8")
            .ignore(&["caf?.txt", "!caf?.md"])
            .file(b"caf\xe9.txt", "latin-1")
            .file(b"caf\xe9.md", "latin-1")
            .file(b"dir-\xff/x", "x")
            .absent(b"caf\xe9.txt")
            .present(b"caf\xe9.md"),
        Case::new("limits: a tree 2,000 directories deep")
            .ignore(&["**/drop"])
            .file(format!("{deep}keep"), "k")
            .file(format!("{deep}drop"), "d"),
        Case::new("limits: hard links, both names kept")
            .file("first", "shared")
            .hardlink("second", "first"),
        Case::new("limits: local export of modes, times and xattrs")
            .dockerfile("Dockerfile", "FROM scratch\nCOPY . /\n")
            .output(Output::Local)
            .file_mode("setuid", "x", 0o4755)
            .file("attr", "x")
            .xattr("user.bkd", "value"),
    ]);
}

/// All cases, in a stable order.
pub fn all() -> Vec<Case> {
    let mut cases = Vec::new();
    patternmatcher_tables(&mut cases);
    fsutil_walker(&mut cases);
    buildkit_dockerfile(&mut cases);
    ignore_file_syntax(&mut cases);
    exceptions_and_trees(&mut cases);
    names(&mut cases);
    follow_paths(&mut cases);
    limits(&mut cases);
    cases
}

/// One table row as a case: the path in a context whose `.dockerignore`
/// holds the patterns. `matched` is the reference's answer for the path:
/// excluded (`Some(true)`), kept (`Some(false)`), or a pattern that fails
/// (`None`). `None` for rows no context can hold (the root itself).
fn row(name: String, patterns: &[&str], path: &str, matched: Option<bool>) -> Option<Case> {
    if path.trim_matches('/').is_empty() {
        return None;
    }
    // A context cannot hold an absolute path; the walk sees it relative.
    let relative = path.trim_start_matches('/');
    let case = Case::new(name).ignore(patterns);
    let (case, entry) = match relative.strip_suffix('/') {
        Some(dir) => (case.dir(dir, 0o755), dir),
        None => (case.file(relative, relative), relative),
    };
    Some(match matched {
        Some(true) => case.absent(entry),
        Some(false) => case.present(entry),
        None => case.fails(&[".dockerignore", "syntax error in pattern"]),
    })
}

fn patternmatcher_tables(cases: &mut Vec<Case>) {
    for (i, &(pattern, path, matched)) in tables::MATCHES.iter().enumerate() {
        let name = format!("patternmatcher TestMatches {i}: {pattern:?} {path:?}");
        cases.extend(row(name, &[pattern], path, Some(matched)));
    }
    for (i, &(patterns, path, matched)) in tables::MULTI.iter().enumerate() {
        let name = format!("patternmatcher multi {i}: {patterns:?} {path:?}");
        cases.extend(row(name, patterns, path, Some(matched)));
    }
    for (i, &(pattern, path, matched, rejected)) in tables::GO_GLOB_ROWS.iter().enumerate() {
        let name = format!("patternmatcher TestMatch {i}: {pattern:?} {path:?}");
        let matched = if rejected { None } else { Some(matched) };
        cases.extend(row(name, &[pattern], path, matched));
    }
    for (i, &(pattern, path, matched)) in tables::READINGS.iter().enumerate() {
        let name = format!("reading {i}: {pattern:?} {path:?}");
        cases.extend(row(name, &[pattern], path, matched));
    }
}

/// tonistiigi/fsutil filter_test.go: the exclude rows as named contexts,
/// the include rows (which a Dockerfile reaches through COPY sources, sent
/// as follow paths) as main contexts.
fn fsutil_walker(cases: &mut Vec<Case>) {
    cases.push(
        Case::new("fsutil TestWalkerExclude")
            .ignore(&["foo*", "!foo/bar2"])
            .files(&["bar", "foo/bar2", "foo2"])
            .present("bar")
            .present("foo/bar2")
            .absent("foo2"),
    );
    cases.push(
        Case::new("fsutil TestFSWalkNested")
            .ignore(&["foo", "!foo/bar"])
            .files(&["foo/bar"])
            .present("foo/bar"),
    );
    cases.push(
        Case::new("fsutil TestFilteredOpen")
            .ignore(&["bar"])
            .files(&["foo", "bar"])
            .present("foo")
            .absent("bar"),
    );
    cases.push(
        Case::new("fsutil TestFilteredOpenInvert")
            .ignore(&["foo", "!foo/bar", "foo/bar/baz", "!foo/bar/baz/x"])
            .files(&["foo/bar/baz/x", "foo/bar/baz/y"])
            .present("foo/bar/baz/x")
            .absent("foo/bar/baz/y"),
    );
    cases.push(
        Case::new("fsutil TestInvalidExcludePatterns")
            .ignore(&["!"])
            .files(&["foo"])
            .fails(&["illegal exclusion pattern"]),
    );
    for source in [
        "bar", "bar/foo", "b*", "bar/f*", "bar/g*", "f*", "b*/f*", "b*/foo", "b*/",
    ] {
        cases.push(
            Case::new(format!("fsutil TestWalkerInclude: COPY {source}"))
                .dockerfile(
                    "Dockerfile",
                    &format!("FROM scratch\nCOPY {source} /out/\n"),
                )
                .created_by_build(&["out"])
                .files(&["bar/foo", "foo2"]),
        );
    }
    for source in [
        "**",
        "**/bar",
        "**/bar/foo",
        "**/b*",
        "**/bar/f*",
        "**/bar/g*",
        "**/f*",
        "**/b*/f*",
        "**/b*/foo",
        "**/foo/**",
        "**/baz",
    ] {
        cases.push(
            Case::new(format!("fsutil TestWalkerDoublestarInclude: COPY {source}"))
                .dockerfile(
                    "Dockerfile",
                    &format!("FROM scratch\nCOPY {source} /out/\n"),
                )
                .created_by_build(&["out"])
                .dir("a/b/baz", 0o755)
                .dir("baz", 0o755)
                .files(&[
                    "a/b/bar/foo",
                    "a/b/bar/fop",
                    "bar/foo",
                    "foo2",
                    "foo/bar/bee",
                ]),
        );
    }
}

/// moby/buildkit frontend/dockerfile tests on `.dockerignore` and wildcard
/// COPY sources (their Dockerfiles on scratch; what they checked by running
/// a step is checked on the exported tree).
fn buildkit_dockerfile(cases: &mut Vec<Case>) {
    cases.push(
        Case::new("buildkit testDockerignore")
            .dockerfile("Dockerfile", "FROM scratch\nCOPY . .\n")
            .ignore_bytes(b"\nba*\nDockerfile\n!bay\n.dockerignore\n")
            .file_mode("foo", "foo-contents", 0o600)
            .file_mode("bar", "bar-contents", 0o600)
            .file_mode("baz", "baz-contents", 0o600)
            .file_mode("bay", "bay-contents", 0o600)
            .present("foo")
            .present("bay")
            .absent("bar")
            .absent("baz")
            .absent("Dockerfile")
            .absent(".dockerignore"),
    );
    cases.push(
        Case::new("buildkit testDockerignoreInvalid")
            .dockerfile("Dockerfile", "FROM scratch\nCOPY . .\n")
            .ignore_bytes(b"!\n")
            .fails(&["illegal exclusion pattern"]),
    );
    for (dockerfile, kept, dropped) in [("Dockerfile", "foo", "bar"), ("Dockerfile2", "bar", "foo")]
    {
        cases.push(
            Case::new(format!("buildkit testDockerignoreOverride: {dockerfile}"))
                .dockerfile(dockerfile, "FROM scratch\nCOPY . /\n")
                .file("Dockerfile.dockerignore", "bar\n")
                .file("Dockerfile2.dockerignore", "foo\n")
                .file("foo", "contents0")
                .file("bar", "contents0")
                .present(kept)
                .absent(dropped),
        );
    }
    cases.push(
        Case::new("buildkit testCopyWildcards")
            .dockerfile(
                "Dockerfile",
                "FROM scratch\nCOPY *.go /gofiles/\nCOPY f*.go foo2.go\nCOPY sub/* /subdest/\n\
                 COPY sub/*/dir2/foo /subdest2/\nCOPY sub/*/dir2/foo /subdest3/bar\nCOPY . all/\n\
                 COPY sub/dir1/ subdest4\nCOPY sub/dir1/. subdest5\nCOPY sub/dir1 subdest6\n",
            )
            .created_by_build(&[
                "all", "gofiles", "subdest", "subdest2", "subdest3", "subdest4", "subdest5",
                "subdest6",
            ])
            .file_mode("foo.go", "foo-contents", 0o600)
            .file_mode("bar.go", "bar-contents", 0o600)
            .dir("sub/dir1/dir2", 0o700)
            .file_mode("sub/dir1/dir2/foo", "foo-contents", 0o600)
            .present("gofiles/foo.go")
            .present("foo2.go")
            .present("subdest3/bar")
            .present("subdest6/dir2/foo"),
    );
    // The same main context with a .dockerignore the COPY sources meet.
    cases.push(
        Case::new("buildkit testCopyWildcards with a .dockerignore")
            .dockerfile(
                "Dockerfile",
                "FROM scratch\nCOPY *.go /gofiles/\nCOPY sub/* /subdest/\nCOPY . all/\n",
            )
            .created_by_build(&["all", "gofiles", "subdest"])
            .ignore(&["b*.go", "sub/dir1/dir2/x*", "!sub/dir1/dir2/xkeep"])
            .files(&[
                "foo.go",
                "bar.go",
                "sub/dir1/dir2/foo",
                "sub/dir1/dir2/xdrop",
                "sub/dir1/dir2/xkeep",
            ])
            .absent("gofiles/bar.go")
            .absent("all/sub/dir1/dir2/xdrop")
            .present("all/sub/dir1/dir2/xkeep"),
    );
}

/// How `.dockerignore` lines are read before they reach the matcher.
fn ignore_file_syntax(cases: &mut Vec<Case>) {
    let tree = ["a", "b", "c/d", "#e", "f g", " h", "i ", "dir/x", "kept"];
    let rows: &[(&str, &[u8])] = &[
        ("comments and blank lines", b"# a\n\n   \n#b\nc\n"),
        ("CRLF line ends", b"a\r\nc\r\n!c/d\r\n"),
        ("a byte order mark starts the file", b"\xEF\xBB\xBFa\nb\n"),
        ("a byte order mark on a later line", b"a\n\xEF\xBB\xBFb\n"),
        ("leading slashes", b"/a\n//c/d\n/dir/\n"),
        ("surrounding space", b"  a  \n\tb\t\n"),
        ("space inside a name", b"f g\n"),
        ("escaped hash", b"\\#e\n"),
        ("exception with space after !", b"*\n! kept\n"),
        ("dot segments", b"./a\nc/../b\n../kept\ndir/./x\n"),
        ("no final newline", b"a\nb"),
        ("only an exception", b"!a\n"),
        ("a lone dot", b".\n"),
        ("exclude the .dockerignore itself", b".dockerignore\na\n"),
        ("everything", b"*\n"),
        ("everything but one", b"**\n!kept\n"),
        ("a pattern with # inside", b"a#b\n#e\n"),
    ];
    for (name, bytes) in rows {
        let mut case = Case::new(format!(".dockerignore syntax: {name}")).ignore_bytes(bytes);
        for p in tree {
            case = case.file(p, p);
        }
        cases.push(case);
    }
    // Many patterns (well below what the header limit allows today).
    let many: Vec<String> = (0..150).map(|i| format!("gen{i}/**/*.tmp")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    cases.push(
        Case::new(".dockerignore syntax: 150 patterns")
            .ignore(&many)
            .files(&[
                "gen7/x/y.tmp",
                "gen7/x/y.txt",
                "gen149/z.tmp",
                "gen150/z.tmp",
            ])
            .absent("gen7/x/y.tmp")
            .present("gen7/x/y.txt")
            .present("gen150/z.tmp"),
    );
}

/// Exceptions, directories, and what a walk skips or descends into.
fn exceptions_and_trees(cases: &mut Vec<Case>) {
    let tree = [
        "node_modules/x/index.js",
        "node_modules/keep/index.js",
        "src/main.rs",
        "src/gen/big.rs",
        "src/gen/keep.rs",
        "docs/README.md",
        "docs/guide/a.md",
        "docs/guide/b.txt",
        "logs/2024/a.log",
        "logs/keep.log",
        "deep/a/b/c/d/e/f/g/h.txt",
        "README.md",
        "readme.md",
    ];
    let rows: &[(&str, &[&str])] = &[
        (
            "directory with an exception inside",
            &["node_modules", "!node_modules/keep"],
        ),
        (
            "directory glob with an exception",
            &["node_modules/*", "!node_modules/keep/index.js"],
        ),
        ("everything but markdown", &["**", "!**/*.md"]),
        ("markdown but the README", &["**/*.md", "!README.md"]),
        ("exception then exclusion", &["!src/gen/keep.rs", "src/gen"]),
        ("nested exceptions", &["src", "!src/gen", "src/gen/big.rs"]),
        ("double star in the middle", &["deep/**/h.txt"]),
        (
            "double star then star",
            &["logs/**/*.log", "!logs/keep.log"],
        ),
        ("case matters", &["readme.md"]),
        ("star then exception with a wildcard", &["*", "!doc?"]),
        (
            "exception with a class",
            &["docs/guide/*", "!docs/guide/[a].md"],
        ),
        ("exception of a parent", &["docs/guide", "!docs"]),
        ("star matches dots", &["*.*"]),
        ("a trailing star with slash", &["src/*/"]),
        ("question mark segments", &["???/*.md"]),
        ("exclusion without wildcards deep", &["deep/a/b/c"]),
        (
            "exception deeper than a wildcard exclusion",
            &["deep/*", "!deep/a/b/c/d"],
        ),
    ];
    for (name, patterns) in rows {
        cases.push(
            Case::new(format!("trees: {name}"))
                .ignore(patterns)
                .files(&tree),
        );
    }
    // Links are sent as links; patterns see their own names.
    cases.push(
        Case::new("trees: links and their targets")
            .ignore(&["target*", "!target-kept", "dirlink/x"])
            .files(&["target-a", "target-kept", "real/x"])
            .symlink("to-a", "target-a")
            .symlink("to-kept", "target-kept")
            .symlink("dirlink", "real")
            .symlink("dangling", "nowhere")
            .symlink("abs", "/etc/passwd")
            .present("to-a")
            .absent("target-a")
            .present("dirlink"),
    );
    cases.push(
        Case::new("trees: empty directories and modes")
            .ignore(&["empty-drop", "!keep/**"])
            .dir("empty-drop", 0o755)
            .dir("empty-keep", 0o700)
            .dir("keep/inner", 0o750)
            .file_mode("keep/inner/exec", "#!/bin/sh\n", 0o755)
            .file_mode("ro", "r", 0o444)
            .absent("empty-drop")
            .present("empty-keep"),
    );
    cases.push(
        Case::new("trees: a fifo, excluded and kept")
            .ignore(&["drop.fifo"])
            .fifo("drop.fifo", 0o644)
            .fifo("keep.fifo", 0o600)
            .file("other", "x")
            // A fifo does not survive the copy out of a named context.
            .absent("drop.fifo"),
    );
    cases.push(
        Case::new("trees: exported to a local directory")
            .dockerfile("Dockerfile", "FROM scratch\nCOPY . /\n")
            .output(Output::Local)
            .ignore(&["drop", "sub/*.tmp"])
            .files(&["keep", "drop", "sub/a.tmp", "sub/b.txt"])
            .file_mode("sub/exec", "x", 0o755)
            .symlink("link", "keep")
            .absent("drop")
            .absent("sub/a.tmp")
            .present("sub/b.txt"),
    );
    cases.push(
        Case::new("trees: hard links, the second name kept")
            .ignore(&["first"])
            .file("first", "shared")
            .hardlink("second", "first")
            // Sent as a link to a name that was not sent: the daemon drops
            // it (buildctl's result has neither name).
            .absent("first"),
    );
}

/// File names the readings of `?`, `*` and classes depend on.
fn names(cases: &mut Vec<Case>) {
    let tree = [
        "a☺b",
        "aXYZb",
        "éé.txt",
        "ab.txt",
        "e\u{301}.txt",
        "é.txt",
        "日本語.md",
        "x&",
        "x~",
        "[",
        "]",
        "*",
        "?x",
        "a b",
        "tab\there",
        "new\nline",
        "back\\slash",
        "5x",
        "dx",
        "Abc",
        "\u{FEFF}bom",
        "\u{10D50}garay",
        "a{2}",
        "aa",
        "x|y",
        "(p)",
        "$dollar",
        "+plus",
    ];
    let rows: &[&[&str]] = &[
        &["a???b"],
        &["a?b"],
        &["???.txt"],
        &["??.txt"],
        &["?.txt"],
        &["é*"],
        &["e\u{301}*"],
        &["*.md", "!日本*"],
        &["[[]"],
        &["x[a&&b]"],
        &["x[a~~b]"],
        &["[\\d]x"],
        &["[*]"],
        &["[?]x"],
        &["\\*"],
        &["\\?x"],
        &["\\["],
        &["a\\ b"],
        &["tab?here"],
        &["new?line"],
        &["back\\\\slash"],
        &["\\x41bc"],
        &["a\\d"],
        &["foo\\bar"],
        &["\\pL\\pL*"],
        &["\\p{Greek}*", "\\PL*"],
        &["*garay"],
        &["\u{FEFF}*"],
        &["a{2}*"],
        &["x|y"],
        &["x|y*"],
        &["(p)", "$dollar", "+plus"],
        &["[^a]?b"],
        &["[!a]*"],
        &["[[:alpha:]][[:alpha:]]"],
        &["!x[z-a]"],
        &["*", "!aa", "!x[z-a]"],
    ];
    for (i, patterns) in rows.iter().enumerate() {
        cases.push(
            Case::new(format!("names {i}: {patterns:?}"))
                .ignore(patterns)
                .files(&tree),
        );
    }
    // Patterns that fail once they are evaluated, and must fail the build
    // with a line naming .dockerignore and the pattern.
    for pattern in [
        "a\\q",
        "build\\output",
        "x[z-a]",
        "[Local-Only]/",
        "\\pX*",
        "a*[",
    ] {
        cases.push(
            Case::new(format!("names: invalid {pattern:?}"))
                .ignore(&[pattern])
                .files(&["a", "aq", "buildoutput"])
                .fails(&[".dockerignore", "syntax error in pattern"]),
        );
    }
    cases.push(
        Case::new("names: an exception never evaluated never fails")
            .ignore(&["nothing-matches-this", "!x[z-a]"])
            .files(&["a", "xz"])
            .builds(),
    );
    cases.push(
        Case::new("names: an exception evaluated fails")
            .ignore(&["a", "!x[z-a]"])
            .files(&["a", "xz"])
            .fails(&[".dockerignore", "x[z-a]", "syntax error in pattern"]),
    );
    cases.push(
        Case::new("names: invalid pattern in the main context")
            .dockerfile("Dockerfile", "FROM scratch\nCOPY . /\n")
            .ignore(&["build\\output"])
            .files(&["a", "buildoutput"])
            .fails(&[
                ".dockerignore",
                "build\\\\output",
                "syntax error in pattern",
            ]),
    );
}

/// COPY sources with wildcards become follow paths, resolved through links
/// with Go's filepath.Match.
fn follow_paths(cases: &mut Vec<Case>) {
    for source in ["l*", "l?", "l[12]", "l[^2]", "l\\*", "t*/x", "*"] {
        cases.push(
            Case::new(format!("follow paths: COPY {source}"))
                .dockerfile(
                    "Dockerfile",
                    &format!("FROM scratch\nCOPY {source} /out/\n"),
                )
                .created_by_build(&["out"])
                .files(&["target1/x", "target2/x", "other", "l*"])
                .symlink("l1", "target1")
                .symlink("l2", "target2/x")
                .symlink("l3", "other"),
        );
    }
}
