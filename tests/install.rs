//! bkd as a new user meets it: the README's quick start, pasted as it is,
//! builds; the completion script and manual pages come out of the binary.

mod common;

use std::path::Path;

use common::*;

/// The first ```sh block after `heading` in README.md.
fn readme_block(heading: &str) -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let after = readme
        .split_once(heading)
        .unwrap_or_else(|| panic!("README has no {heading:?}"))
        .1;
    let block = after
        .split_once("```sh\n")
        .expect("a sh block")
        .1
        .split_once("```")
        .expect("the block's end")
        .0;
    block.to_string()
}

#[test]
fn the_readme_quick_start_builds_as_written() {
    let block = readme_block("## Quick start");
    assert!(block.contains("bkd build"), "{block}");
    // `bkd` as setup.sh installs it: on PATH, under that name.
    let bin = tempfile::tempdir().expect("dir");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_bkd"), bin.path().join("bkd")).expect("link");
    let tmp = tempfile::tempdir().expect("dir");
    let state = tempfile::tempdir().expect("dir");
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = format!("set -euo pipefail\n{block}");
    let r = run(
        "bash",
        &["-c", &script],
        tmp.path(),
        &[
            ("PATH", &path),
            ("TMPDIR", tmp.path().to_str().expect("utf8")),
            // The quick start's daemon keeps its state away from the
            // default one other tests and builds may hold.
            ("BKD_ROOT", state.path().to_str().expect("utf8")),
        ],
    );
    r.assert_ok();
    assert!(
        r.stdout()
            .lines()
            .any(|l| l.trim_start_matches("./") == "hello.txt"),
        "{}",
        r.explain()
    );
}

#[test]
fn completion_and_man_pages_come_from_the_binary() {
    let dir = tempfile::tempdir().expect("dir");
    let bkd = env!("CARGO_BIN_EXE_bkd");
    let r = run(bkd, &["completion", "bash"], dir.path(), &[]);
    r.assert_ok();
    assert!(r.stdout().contains("--iidfile"), "{}", r.explain());
    std::fs::write(dir.path().join("bkd.bash"), r.stdout()).expect("write");
    run("bash", &["-n", "bkd.bash"], dir.path(), &[]).assert_ok();
    for shell in ["zsh", "fish"] {
        let r = run(bkd, &["completion", shell], dir.path(), &[]);
        r.assert_ok();
        assert!(r.stdout().contains("buildkite-annotate"), "{}", r.explain());
    }
    let r = run(bkd, &["man", "build"], dir.path(), &[]);
    r.assert_ok();
    assert!(
        r.stdout().starts_with(".ie") || r.stdout().contains(".TH bkd-build"),
        "{}",
        r.explain()
    );
    let r = run(bkd, &["completion", "tcsh"], dir.path(), &[]);
    assert_eq!(r.code(), Some(2), "{}", r.explain());
}
