//! End-to-end builds against a real buildkitd and registry, compared with
//! buildctl where its behaviour is the reference.

mod common;

use std::os::unix::fs::{symlink, PermissionsExt};

use common::*;

/// A context full of edge cases: links, empty dirs, odd names, mode bits,
/// and a .dockerignore with `**` and re-inclusions.
fn edge_case_context() -> tempfile::TempDir {
    let ctx = context();
    let d = ctx.path();
    write(d, "Dockerfile", "FROM scratch\nCOPY . /ctx/\n");
    write(d, "plain.txt", "plain\n");
    write(d, "dir with space/file ünïcode.txt", "unicode\n");
    write(d, "nested/a/b/c.txt", "deep\n");
    write(d, "nested/a/skip.log", "log\n");
    write(d, "nested/keep.log", "kept log\n");
    write(d, "docs/drop.md", "drop\n");
    write(d, "docs/README.md", "readme\n");
    write(d, "secret/key.pem", "do not send\n");
    std::fs::create_dir_all(d.join("empty/inner")).expect("empty dirs");
    write(d, "exec.sh", "#!/bin/sh\n");
    std::fs::set_permissions(d.join("exec.sh"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    write(d, "readonly.txt", "ro\n");
    std::fs::set_permissions(
        d.join("readonly.txt"),
        std::fs::Permissions::from_mode(0o444),
    )
    .expect("chmod");
    write(d, "setuid-bin", "x");
    std::fs::set_permissions(
        d.join("setuid-bin"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .expect("chmod");
    symlink("plain.txt", d.join("link-rel")).expect("symlink");
    symlink("/etc/passwd", d.join("link-abs")).expect("symlink");
    symlink("../../outside", d.join("link-escape")).expect("symlink");
    std::fs::hard_link(d.join("plain.txt"), d.join("hardlink.txt")).expect("hardlink");
    write(
        d,
        ".dockerignore",
        "# comment\n**/*.log\n!nested/keep.log\nsecret\ndocs/*.md\n!docs/README.md\n",
    );
    ctx
}

#[test]
fn tar_export_matches_buildctl_listing() {
    let ctx = edge_case_context();
    let out = tempfile::tempdir().expect("out dir");
    let ours = out.path().join("bkd.tar");
    let theirs = out.path().join("buildctl.tar");
    bkd(
        &[
            "build",
            "--progress",
            "plain",
            "-o",
            &tar_output(&ours),
            ".",
        ],
        ctx.path(),
    )
    .assert_ok();
    buildctl_build(&["--output", &tar_output(&theirs)], ctx.path()).assert_ok();
    let a = tar_listing(&ours);
    let b = tar_listing(&theirs);
    assert_eq!(a, b, "bkd and buildctl exported different trees");
    let names: Vec<&str> = a.iter().map(|e| e.path.as_str()).collect();
    // The ignore file took effect, with its re-inclusions.
    assert!(names.contains(&"ctx/nested/keep.log"), "{names:?}");
    assert!(names.contains(&"ctx/docs/README.md"), "{names:?}");
    assert!(!names.iter().any(|n| n.ends_with("skip.log")), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("ctx/secret")),
        "{names:?}"
    );
    assert!(!names.contains(&"ctx/docs/drop.md"), "{names:?}");
    assert!(names.contains(&"ctx/empty/inner"), "{names:?}");
    let escape = a
        .iter()
        .find(|e| e.path == "ctx/link-escape")
        .expect("escaping link sent as a link");
    assert_eq!(escape.link, "../../outside");
    let abs = a
        .iter()
        .find(|e| e.path == "ctx/link-abs")
        .expect("absolute link sent as a link");
    assert_eq!(abs.link, "/etc/passwd");
}

#[test]
fn run_output_appears_in_plain_progress() {
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        &format!("{BUSYBOX_STAGE}FROM bb\nRUN echo marker-$((6*7)) && echo second-line\n"),
    );
    let out = tempfile::tempdir().expect("out");
    let dest = out.path().join("o.tar");
    let r = bkd(
        &[
            "build",
            "--progress=plain",
            "--no-cache",
            "-o",
            &tar_output(&dest),
            ".",
        ],
        ctx.path(),
    );
    r.assert_ok();
    let err = r.stderr();
    let log_line = regex::Regex::new(r"(?m)^#(\d+) \d+\.\d{3} marker-42$").expect("regex");
    let caps = log_line
        .captures(&err)
        .unwrap_or_else(|| panic!("no log line\n{}", r.explain()));
    let n = &caps[1];
    assert!(
        err.contains(&format!(
            "#{n} [stage-1 1/1] RUN echo marker-$((6*7)) && echo second-line"
        )),
        "{}",
        r.explain()
    );
    assert!(
        regex::Regex::new(&format!(r"(?m)^#{n} DONE \d+\.\ds$"))
            .expect("regex")
            .is_match(&err),
        "{}",
        r.explain()
    );
    assert!(
        err.contains("#1 [internal] load build definition from Dockerfile"),
        "{}",
        r.explain()
    );
}

#[test]
fn target_and_build_args_choose_what_is_built() {
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        &format!(
            "{BUSYBOX_STAGE}FROM bb AS dev\nRUN echo dev > /stage\nFROM bb AS production\nARG GREETING=unset\nRUN echo \"$GREETING\" > /stage\n"
        ),
    );
    let out = tempfile::tempdir().expect("out");
    let prod = out.path().join("prod.tar");
    bkd(
        &[
            "build",
            "--target",
            "production",
            "--build-arg",
            "GREETING=hello from args",
            "-o",
            &tar_output(&prod),
            ".",
        ],
        ctx.path(),
    )
    .assert_ok();
    assert_eq!(
        tar_file(&prod, "stage").as_deref(),
        Some(&b"hello from args\n"[..])
    );
    let dev = out.path().join("dev.tar");
    bkd(
        &["build", "--target", "dev", "-o", &tar_output(&dev), "."],
        ctx.path(),
    )
    .assert_ok();
    assert_eq!(tar_file(&dev, "stage").as_deref(), Some(&b"dev\n"[..]));
}

#[test]
fn local_output_writes_a_directory() {
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY sub /sub\n",
    );
    write(ctx.path(), "sub/a.txt", "alpha\n");
    let out = tempfile::tempdir().expect("out");
    let dest = out.path().join("tree");
    bkd(
        &[
            "build",
            "-o",
            &format!("type=local,dest={}", dest.display()),
            ".",
        ],
        ctx.path(),
    )
    .assert_ok();
    assert_eq!(
        std::fs::read(dest.join("sub/a.txt")).expect("a.txt"),
        b"alpha\n"
    );
    let bb = std::fs::metadata(dest.join("bin/busybox")).expect("busybox");
    assert_eq!(
        bb.len(),
        std::fs::metadata("/bin/busybox").expect("busybox").len()
    );
    assert_ne!(bb.permissions().mode() & 0o111, 0, "executable bit kept");
}

#[test]
fn failing_run_reports_the_step_and_writes_nothing() {
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        &format!("{BUSYBOX_STAGE}FROM bb\nRUN echo about-to-fail >&2; exit 3\n"),
    );
    let out = tempfile::tempdir().expect("out");
    let dest = out.path().join("never.tar");
    let r = bkd(
        &["build", "--no-cache", "-o", &tar_output(&dest), "."],
        ctx.path(),
    );
    assert_eq!(r.code(), Some(1), "{}", r.explain());
    let err = r.stderr();
    assert!(
        err.contains("did not complete successfully: exit code: 3"),
        "{}",
        r.explain()
    );
    assert!(err.contains("about-to-fail"), "{}", r.explain());
    assert!(
        err.contains(" > [stage-1 1/1] RUN echo about-to-fail >&2; exit 3:"),
        "{}",
        r.explain()
    );
    assert!(!dest.exists(), "no output after a failed build");
    let leftovers: Vec<_> = std::fs::read_dir(out.path()).expect("read").collect();
    assert!(
        leftovers.is_empty(),
        "no temporary files left: {leftovers:?}"
    );
}

#[test]
fn missing_dockerfile_is_one_clear_line() {
    let ctx = context();
    let r = bkd(&["build", "-o", "type=tar,dest=x.tar", "."], ctx.path());
    assert_eq!(r.code(), Some(3), "{}", r.explain());
    let err = r.stderr();
    assert_eq!(err.lines().count(), 1, "{}", r.explain());
    assert!(
        err.starts_with("error: cannot read Dockerfile"),
        "{}",
        r.explain()
    );
    assert!(err.contains("no such file or directory"), "{}", r.explain());
}

#[test]
fn dockerfile_syntax_error_fails_the_build() {
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM scratch\nNOTANINSTRUCTION foo\n",
    );
    let r = bkd(&["build", "-o", "type=tar,dest=x.tar", "."], ctx.path());
    assert_eq!(r.code(), Some(1), "{}", r.explain());
    assert!(
        r.stderr().contains("unknown instruction"),
        "{}",
        r.explain()
    );
    assert!(!ctx.path().join("x.tar").exists());
}

#[test]
fn push_digest_matches_the_registry_manifest() {
    let bed = bed();
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        &format!("{BUSYBOX_STAGE}FROM bb AS production\nRUN echo pushed > /marker\n"),
    );
    let image = format!("{}/bkd-test/push:latest", bed.registry);
    let meta = ctx.path().join("meta.json");
    let r = bkd(
        &[
            "build",
            "--target",
            "production",
            "-o",
            &format!("type=image,name={image},push=true,registry.insecure=true"),
            "--metadata-file",
            meta.to_str().expect("utf8"),
            ".",
        ],
        ctx.path(),
    );
    r.assert_ok();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta).expect("metadata file")).expect("json");
    let digest = json["containerimage.digest"]
        .as_str()
        .expect("digest in metadata")
        .to_string();
    assert!(digest.starts_with("sha256:"), "{json}");
    let (status, headers) = manifest(&bed.registry, "bkd-test/push", "latest");
    assert!(status.contains("200"), "{status}\n{headers}");
    let registry_digest = headers
        .lines()
        .find_map(|l| l.strip_prefix("Docker-Content-Digest: "))
        .expect("digest header")
        .trim();
    assert_eq!(registry_digest, digest);
}

#[test]
fn tag_and_push_shortcut_pushes_the_target() {
    let bed = bed();
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        &format!("{BUSYBOX_STAGE}FROM bb AS production\nRUN echo shortcut > /marker\n"),
    );
    let image = format!("{}/bkd-test/shortcut:v1", bed.registry);
    bkd(
        &[
            "build",
            "--target",
            "production",
            "--push",
            "-t",
            &image,
            ".",
        ],
        ctx.path(),
    )
    .assert_ok();
    let (status, _) = manifest(&bed.registry, "bkd-test/shortcut", "v1");
    assert!(status.contains("200"), "{status}");
}

#[test]
fn debug_workers_lists_the_daemon_worker() {
    let dir = tempfile::tempdir().expect("dir");
    let r = bkd(&["debug", "workers"], dir.path());
    r.assert_ok();
    assert!(
        r.stdout().contains("linux/amd64") || r.stdout().contains("linux/"),
        "{}",
        r.explain()
    );
}

#[test]
fn unreachable_daemon_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("dir");
    let sock = dir.path().join("nothing.sock");
    let r = run(
        env!("CARGO_BIN_EXE_bkd"),
        &[
            "debug",
            "workers",
            "--addr",
            &format!("unix://{}", sock.display()),
        ],
        dir.path(),
        &[],
    );
    assert_eq!(r.code(), Some(4), "{}", r.explain());
    assert!(
        r.stderr()
            .contains("cannot connect to buildkitd at unix://"),
        "{}",
        r.explain()
    );
    assert_eq!(r.stderr().lines().count(), 1, "{}", r.explain());
}

#[test]
fn oci_and_stdout_outputs() {
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM scratch\nCOPY busybox /bin/busybox\n",
    );
    let out = tempfile::tempdir().expect("out");
    let oci = out.path().join("image-oci.tar");
    let docker = out.path().join("image-docker.tar");
    bkd(
        &[
            "build",
            "-o",
            &format!("type=oci,dest={}", oci.display()),
            "-o",
            &format!("type=docker,name=bkd/test:1,dest={}", docker.display()),
            ".",
        ],
        ctx.path(),
    )
    .assert_ok();
    let names: Vec<String> = tar_listing(&oci).into_iter().map(|e| e.path).collect();
    assert!(names.iter().any(|n| n == "oci-layout"), "{names:?}");
    assert!(names.iter().any(|n| n == "index.json"), "{names:?}");
    let names: Vec<String> = tar_listing(&docker).into_iter().map(|e| e.path).collect();
    assert!(names.iter().any(|n| n == "manifest.json"), "{names:?}");

    let r = bkd(&["build", "-o", "type=tar,dest=-", "."], ctx.path());
    r.assert_ok();
    let streamed = out.path().join("streamed.tar");
    std::fs::write(&streamed, &r.out.stdout).expect("write");
    let listing = tar_listing(&streamed);
    let bb = listing
        .iter()
        .find(|e| e.path == "bin/busybox")
        .expect("busybox in streamed tar");
    assert_eq!(
        bb.size,
        std::fs::metadata("/bin/busybox").expect("busybox").len()
    );
    assert!(
        !r.stderr().is_empty(),
        "progress goes to stderr, not into the tar"
    );
}

/// Each printed step's name with its log lines (times removed) and its final
/// state, from plain progress output.
fn steps_of(progress: &str) -> std::collections::BTreeMap<String, (Vec<String>, String)> {
    let header = regex::Regex::new(r"^#(\d+) (.*)$").expect("regex");
    let log = regex::Regex::new(r"^#(\d+) \d+\.\d+ (.*)$").expect("regex");
    let mut names = std::collections::HashMap::new();
    let mut steps = std::collections::BTreeMap::<String, (Vec<String>, String)>::new();
    for line in progress.lines() {
        let Some(c) = header.captures(line) else {
            continue;
        };
        let (n, rest) = (c[1].to_string(), c[2].to_string());
        if let Some(l) = log.captures(line) {
            if let Some(name) = names.get(&n) {
                steps
                    .entry(String::clone(name))
                    .or_default()
                    .0
                    .push(l[2].to_string());
            }
            continue;
        }
        let state = if rest == "CACHED" || rest.starts_with("DONE ") || rest.starts_with("ERROR: ")
        {
            Some(
                rest.split(' ')
                    .next()
                    .unwrap_or_default()
                    .trim_end_matches(':')
                    .to_string(),
            )
        } else {
            None
        };
        match (state, names.get(&n)) {
            // A step's lines may interleave stdout and stderr differently on
            // every run; compare them as a sorted list.
            (Some(s), Some(name)) => steps.entry(String::clone(name)).or_default().1 = s,
            (None, None) => {
                names.insert(n, rest.clone());
                steps.entry(rest).or_default();
            }
            _ => {}
        }
    }
    for (logs, _) in steps.values_mut() {
        logs.sort();
    }
    steps
}

#[test]
fn plain_progress_matches_buildctl_step_for_step() {
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        // Steps of its own: concurrent tests must not share (and so cache) them.
        "FROM scratch\nCOPY busybox /tools/busybox\nRUN [\"/tools/busybox\",\"sh\",\"-c\",\"echo one && echo two >&2 && printf 'no newline'\"]\nRUN [\"/tools/busybox\",\"echo\",\"three\"]\n",
    );
    let out = tempfile::tempdir().expect("out");
    let a = out.path().join("a.tar");
    let b = out.path().join("b.tar");
    let ours = bkd(
        &[
            "build",
            "--no-cache",
            "--progress=plain",
            "-o",
            &tar_output(&a),
            ".",
        ],
        ctx.path(),
    );
    ours.assert_ok();
    let theirs = buildctl_build(
        &[
            "--opt",
            "no-cache=",
            "--progress=plain",
            "--output",
            &tar_output(&b),
        ],
        ctx.path(),
    );
    theirs.assert_ok();
    let (ours_steps, theirs_steps) = (steps_of(&ours.stderr()), steps_of(&theirs.stderr()));
    let explain = format!(
        "\n--- bkd ---\n{}\n--- buildctl ---\n{}",
        ours.stderr(),
        theirs.stderr()
    );
    // Same steps, and every step that ran to completion in buildctl's
    // output ended the same way in bkd's.
    let names = |m: &std::collections::BTreeMap<String, (Vec<String>, String)>| {
        m.keys().cloned().collect::<Vec<_>>()
    };
    assert_eq!(names(&ours_steps), names(&theirs_steps), "{explain}");
    for (name, (_, state)) in &ours_steps {
        if !state.is_empty() {
            assert_eq!(state, &theirs_steps[name].1, "{name}{explain}");
        }
    }
    // Log lines: as buildctl, bkd continues a step's unfinished line with
    // the step's next output, whichever stream it comes from, so the
    // partial stdout line is glued to "two" when stderr's line arrives
    // after it (the daemon's two streams race).
    let run_step = "[2/3] RUN [\"/tools/busybox\",\"sh\",\"-c\",\"echo one && echo two >&2 && printf 'no newline'\"]";
    let lines = &ours_steps[run_step].0;
    assert!(
        lines == &["no newline", "one", "two"] || lines == &["no newlinetwo", "one"],
        "{lines:?}{explain}"
    );
    assert_eq!(
        ours_steps["[3/3] RUN [\"/tools/busybox\",\"echo\",\"three\"]"].0,
        ["three"],
        "{explain}"
    );
}

#[test]
fn outputs_replace_links_and_go_into_fifos_without_replacing_them() {
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM scratch\nCOPY busybox /bin/busybox\n",
    );
    let out = tempfile::tempdir().expect("out");
    // A symlink is replaced by the output, never written through (it may
    // have been planted; see docs/reliability.md). buildctl writes through.
    let target = out.path().join("real.tar");
    let link = out.path().join("link.tar");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    bkd(&["build", "-o", &tar_output(&link), "."], ctx.path()).assert_ok();
    assert!(std::fs::symlink_metadata(&link).expect("link").is_file());
    assert!(tar_file(&link, "bin/busybox").is_some());
    assert!(!target.exists(), "written through the link");

    // A fifo (like /dev/null, not a file to rename over): written into.
    let fifo = out.path().join("pipe");
    let c = std::ffi::CString::new(fifo.display().to_string()).expect("path");
    // SAFETY: c is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(&fifo).expect("read fifo"))
    };
    bkd(&["build", "-o", &tar_output(&fifo), "."], ctx.path()).assert_ok();
    let received = reader.join().expect("reader");
    let copy = out.path().join("from-fifo.tar");
    std::fs::write(&copy, &received).expect("write");
    assert!(tar_file(&copy, "bin/busybox").is_some());
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&fifo)
        .expect("fifo")
        .file_type()
        .is_fifo());
}
