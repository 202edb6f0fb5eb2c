//! What a build leaves for the CI system around it, through the real
//! daemon and registry: Buildkite meta-data and annotation (a stand-in
//! `buildkite-agent` records its arguments), GitHub Actions outputs and
//! step summary, a GitLab dotenv report.

mod common;

use std::path::Path;

use common::*;

/// A `buildkite-agent` that records each call (arguments, then stdin for
/// annotations) in `calls.log` beside it.
fn stand_in_agent(dir: &Path) {
    let log = dir.join("calls.log");
    let script = format!(
        "#!/bin/sh\nprintf 'ARGS:%s\\n' \"$*\" >> '{log}'\n\
         if [ \"$1\" = annotate ]; then cat >> '{log}'; printf '\\nEND\\n' >> '{log}'; fi\n",
        log = log.display()
    );
    let path = dir.join("buildkite-agent");
    std::fs::write(&path, script).expect("agent script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn path_with(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn registry_digest(registry: &str, repo: &str, tag: &str) -> String {
    let (status, headers) = manifest(registry, repo, tag);
    assert!(status.contains("200"), "{status}");
    headers
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("docker-content-digest")
                .then(|| v.trim().to_string())
        })
        .expect("Docker-Content-Digest")
}

#[test]
fn a_pushed_build_sets_metadata_annotation_outputs_and_dotenv() {
    let registry = &bed().registry;
    let n = nonce();
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        &format!(
            "FROM scratch\nCOPY busybox /bin/busybox\n\
             RUN [\"/bin/busybox\",\"sh\",\"-c\",\"echo {n} > /n; /bin/busybox sleep 0.3\"]\n"
        ),
    );
    let bin = tempfile::tempdir().expect("dir");
    stand_in_agent(bin.path());
    let gh_output = ctx.path().join("gh-output");
    let gh_summary = ctx.path().join("gh-summary");
    let image = format!("{registry}/bkd/ci:{n}");
    let path = path_with(bin.path());
    let r = bkd_env(
        &[
            "build",
            "--push",
            "-t",
            &image,
            "--buildkite-metadata",
            "app",
            "--buildkite-annotate",
            "--github-output",
            "--github-summary",
            "--gitlab-dotenv",
            "build.env",
            ".",
        ],
        ctx.path(),
        &[
            ("PATH", &path),
            ("BUILDKITE", "true"),
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_OUTPUT", gh_output.to_str().expect("utf8")),
            ("GITHUB_STEP_SUMMARY", gh_summary.to_str().expect("utf8")),
        ],
    );
    r.assert_ok();
    assert!(!r.stderr().contains("warning:"), "{}", r.explain());
    let digest = registry_digest(registry, "bkd/ci", &n);
    let pinned = format!("{registry}/bkd/ci@{digest}");

    let calls = std::fs::read_to_string(bin.path().join("calls.log")).expect("agent was called");
    for expected in [
        format!("ARGS:meta-data set app {pinned}"),
        format!("ARGS:meta-data set app-digest {digest}"),
        format!("ARGS:meta-data set app-name {image}"),
    ] {
        assert!(
            calls.lines().any(|l| l == expected),
            "{expected} not in:\n{calls}"
        );
    }
    assert!(
        calls.contains("ARGS:annotate --style success --context bkd\n**bkd build succeeded in "),
        "{calls}"
    );
    assert!(
        calls.contains(&format!("| digest | `{digest}` |")),
        "{calls}"
    );
    assert!(calls.contains("| slowest steps | time |"), "{calls}");
    assert!(calls.contains("RUN [\"/bin/busybox\",\"sh\""), "{calls}");

    let outputs = std::fs::read_to_string(&gh_output).expect("GITHUB_OUTPUT");
    assert!(outputs.contains(&format!("digest={digest}\n")), "{outputs}");
    assert!(outputs.contains(&format!("ref={pinned}\n")), "{outputs}");
    let summary = std::fs::read_to_string(&gh_summary).expect("GITHUB_STEP_SUMMARY");
    assert!(
        summary.starts_with("**bkd build succeeded in "),
        "{summary}"
    );
    let dotenv = std::fs::read_to_string(ctx.path().join("build.env")).expect("dotenv");
    assert!(
        dotenv.contains(&format!("BKD_IMAGE_DIGEST={digest}\n")),
        "{dotenv}"
    );
    assert!(
        dotenv.contains(&format!("BKD_IMAGE_REF={pinned}\n")),
        "{dotenv}"
    );
}

#[test]
fn a_failed_build_is_annotated_as_an_error_and_sets_no_metadata() {
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\",\"false\"]\n",
    );
    let bin = tempfile::tempdir().expect("dir");
    stand_in_agent(bin.path());
    let path = path_with(bin.path());
    let r = bkd_env(
        &[
            "build",
            "--buildkite-metadata",
            "app",
            "--buildkite-annotate=images",
            ".",
        ],
        ctx.path(),
        &[("PATH", &path), ("BUILDKITE", "true")],
    );
    assert_eq!(r.code(), Some(1), "{}", r.explain());
    let calls = std::fs::read_to_string(bin.path().join("calls.log")).expect("agent was called");
    assert!(
        calls
            .starts_with("ARGS:annotate --style error --context images\n**bkd build failed after "),
        "{calls}"
    );
    assert!(calls.contains("| failed step | `[2/2] RUN"), "{calls}");
    assert!(!calls.contains("meta-data"), "{calls}");

    // Off Buildkite the same command builds, with one warning.
    write(
        ctx.path(),
        "Dockerfile",
        "FROM scratch\nCOPY busybox /bin/busybox\n",
    );
    let r = bkd_env(
        &["build", "--buildkite-metadata", "app", "."],
        ctx.path(),
        &[("PATH", &path), ("BUILDKITE", "false")],
    );
    r.assert_ok();
    assert_eq!(
        r.stderr().matches("not a Buildkite job").count(),
        1,
        "{}",
        r.explain()
    );
}
