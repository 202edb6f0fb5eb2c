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
