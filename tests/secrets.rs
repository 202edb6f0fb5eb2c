//! `--secret` against a real daemon: the step sees the value, and the value
//! appears in no output, log, metadata file or exported file system. Also
//! the pipeline-level image name, `BKD_TAGS`.

mod common;

use common::*;

const FILE_SECRET: &str = "bkd-planted-file-secret-7f3a9c";
const ENV_SECRET: &str = "bkd-planted-env-secret-51d2e8";

fn md5(data: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v");
    std::fs::write(&path, data).expect("write");
    let out = std::process::Command::new("md5sum")
        .arg(&path)
        .output()
        .expect("md5sum");
    String::from_utf8_lossy(&out.stdout)[..32].to_string()
}

#[test]
fn secrets_reach_the_step_and_nothing_else() {
    let ctx = context();
    let d = ctx.path();
    // The step stores only a digest of each value.
    write(
        d,
        "Dockerfile",
        "FROM scratch\nCOPY busybox /bin/busybox\n\
         RUN --mount=type=secret,id=token --mount=type=secret,id=envtok \
         [\"/bin/busybox\",\"sh\",\"-c\",\"/bin/busybox md5sum /run/secrets/token > /file.sum; \
         /bin/busybox md5sum /run/secrets/envtok > /env.sum\"]\n",
    );
    let secret_file = d.join("secret.txt");
    std::fs::write(&secret_file, FILE_SECRET).expect("write secret");
    write(d, ".dockerignore", "secret.txt\n");
    let out = d.join("out.tar");
    let meta = d.join("meta.json");
    let file_spec = format!("id=token,src={}", secret_file.display());
    let run = bkd_env(
        &[
            "build",
            "--debug",
            "--secret",
            &file_spec,
            "--secret",
            "id=envtok,env=BKD_TEST_SECRET",
            "--metadata-file",
            &meta.display().to_string(),
            "-o",
            &tar_output(&out),
            ".",
        ],
        d,
        &[("BKD_TEST_SECRET", ENV_SECRET)],
    );
    run.assert_ok();
    let sum = |name: &str| {
        let bytes = tar_file(&out, name).unwrap_or_else(|| panic!("{name} in the output"));
        String::from_utf8_lossy(&bytes)[..32].to_string()
    };
    assert_eq!(sum("file.sum"), md5(FILE_SECRET));
    assert_eq!(sum("env.sum"), md5(ENV_SECRET));
    let tar = std::fs::read(&out).expect("read tar");
    let metadata = std::fs::read_to_string(&meta).expect("metadata");
    for value in [FILE_SECRET, ENV_SECRET] {
        assert!(!run.stdout().contains(value) && !run.stderr().contains(value));
        assert!(!tar.windows(value.len()).any(|w| w == value.as_bytes()));
        assert!(!metadata.contains(value));
    }
}

#[test]
fn bad_secrets_fail_before_the_build() {
    let ctx = context();
    write(ctx.path(), "Dockerfile", "FROM scratch\n");
    let run = bkd(
        &["build", "--secret", "id=token,src=/no/such/secret", "."],
        ctx.path(),
    );
    assert_eq!(run.code(), Some(3), "{}", run.explain());
    assert_eq!(
        run.stderr().trim(),
        "error: secret token: cannot read /no/such/secret: no such file or directory"
    );
    let run = bkd(&["build", "--secret", "src=/etc/hostname", "."], ctx.path());
    assert_eq!(run.code(), Some(2), "{}", run.explain());
    assert!(run.stderr().contains("missing id="), "{}", run.explain());
    let run = bkd(
        &[
            "build",
            "--secret",
            "id=x,env=BKD_TEST_NOT_SET_ANYWHERE",
            ".",
        ],
        ctx.path(),
    );
    assert_eq!(run.code(), Some(3), "{}", run.explain());
    assert!(run
        .stderr()
        .contains("BKD_TEST_NOT_SET_ANYWHERE is not set"));
}

#[test]
fn push_takes_its_tags_from_bkd_tags() {
    let registry = &bed().registry;
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM scratch\nCOPY busybox /bin/busybox\n",
    );
    let tags = format!("{registry}/bkd/envtags:a, {registry}/bkd/envtags:b");
    let run = bkd_env(
        &["build", "--push", "."],
        ctx.path(),
        &[("BKD_TAGS", &tags)],
    );
    run.assert_ok();
    for tag in ["a", "b"] {
        let (status, _) = manifest(registry, "bkd/envtags", tag);
        assert!(status.contains("200"), "{tag}: {status}\n{}", run.explain());
    }
    let run = bkd_env(
        &["build", "--push", "."],
        ctx.path(),
        &[("BKD_TAGS", " , ")],
    );
    assert_eq!(run.code(), Some(2), "{}", run.explain());
    assert!(run.stderr().contains("set BKD_TAGS"), "{}", run.explain());
}

/// bkd against the test bed under a time limit (seconds) and a 4 GiB
/// address-space limit, so a hang or a read without end fails the test
/// instead of stalling or starving the machine.
fn bkd_bounded(limit: &str, args: &[&str], cwd: &std::path::Path) -> Run {
    let bed = bed();
    let mut all = vec![
        "--as=4294967296",
        "timeout",
        "-k",
        "5",
        limit,
        env!("CARGO_BIN_EXE_bkd"),
        args[0],
        "--addr",
        &bed.addr,
    ];
    all.extend_from_slice(&args[1..]);
    let run = run("prlimit", &all, cwd, &[]);
    assert!(
        !matches!(run.code(), Some(124) | None),
        "bkd hung\n{}",
        run.explain()
    );
    run
}

fn mkfifo(path: &std::path::Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

const USES_SECRET: &str = "FROM scratch\nCOPY busybox /bin/busybox\n\
    RUN --mount=type=secret,id=s [\"/bin/busybox\",\"md5sum\",\"/run/secrets/s\"]\n";

#[test]
fn secrets_that_are_not_regular_files_fail_fast_or_are_never_read() {
    let ctx = context();
    let d = ctx.path();
    write(d, "Dockerfile", USES_SECRET);
    let started = std::time::Instant::now();
    let run = bkd_bounded("30", &["build", "--secret", "id=s,src=/dev/zero", "."], d);
    assert_eq!(run.code(), Some(3), "{}", run.explain());
    assert_eq!(
        run.stderr().trim(),
        "error: secret s: /dev/zero is a character device; give a regular file (or a FIFO)"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    // A FIFO nobody writes to, asked for by the build: one line, at once.
    let fifo = d.join("fifo");
    mkfifo(&fifo);
    let spec = format!("id=s,src={}", fifo.display());
    let started = std::time::Instant::now();
    let run = bkd_bounded("60", &["build", "--no-cache", "--secret", &spec, "."], d);
    assert_eq!(run.code(), Some(3), "{}", run.explain());
    let err = run.stderr();
    assert_eq!(
        err.lines().last(),
        Some(
            format!(
                "error: secret s: FIFO {}: no process is writing to it",
                fifo.display()
            )
            .as_str()
        ),
        "{}",
        run.explain()
    );
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));

    // The same FIFO when the build never asks for it: never opened.
    write(d, "Dockerfile", "FROM scratch\nCOPY busybox /bin/busybox\n");
    let run = bkd_bounded("60", &["build", "--secret", &spec, "."], d);
    run.assert_ok();
}

#[test]
fn a_fifo_secret_gives_what_its_writer_wrote_within_the_limit() {
    let ctx = context();
    let d = ctx.path();
    write(
        d,
        "Dockerfile",
        "FROM scratch\nCOPY busybox /bin/busybox\n\
         RUN --mount=type=secret,id=s [\"/bin/busybox\",\"sh\",\"-c\",\
         \"/bin/busybox md5sum /run/secrets/s > /sum\"]\n\
         RUN --mount=type=secret,id=s [\"/bin/busybox\",\"sh\",\"-c\",\
         \"/bin/busybox md5sum /run/secrets/s > /sum2\"]\n",
    );
    let fifo = d.join("fifo");
    mkfifo(&fifo);
    let spec = format!("id=s,src={}", fifo.display());
    // As `echo VALUE > fifo &` or a shell's `<(...)`: a writer waiting for
    // bkd to open the FIFO.
    let writer = std::thread::spawn({
        let fifo = fifo.clone();
        move || std::fs::write(&fifo, FILE_SECRET)
    });
    let out = d.join("out.tar");
    let run = bkd_bounded(
        "120",
        &[
            "build",
            "--no-cache",
            "--secret",
            &spec,
            "-o",
            &tar_output(&out),
            ".",
        ],
        d,
    );
    run.assert_ok();
    let _ = writer.join();
    // Two steps mount it; the FIFO gave it once.
    for name in ["sum", "sum2"] {
        let sum = tar_file(&out, name).expect("sum");
        assert!(String::from_utf8_lossy(&sum).starts_with(&md5(FILE_SECRET)));
    }

    // More than BuildKit accepts: cut off while reading, one line, exit 3.
    let writer = std::thread::spawn({
        let fifo = fifo.clone();
        move || std::fs::write(&fifo, vec![b'z'; 600 * 1024])
    });
    let run = bkd_bounded("120", &["build", "--no-cache", "--secret", &spec, "."], d);
    let _ = writer.join();
    assert_eq!(run.code(), Some(3), "{}", run.explain());
    assert!(
        run.stderr()
            .lines()
            .last()
            .is_some_and(|l| l.ends_with("is more than the 512000 bytes BuildKit accepts")),
        "{}",
        run.explain()
    );
}
