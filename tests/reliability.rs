//! Bad input, faults and leaks against the real test bed: each bad input is
//! one line with its own exit code, faults end bkd quickly with a clear
//! error and nothing half-written, the context never yields what it must
//! not, and planted credentials and secrets never show. docs/reliability.md
//! tabulates what is tried here and where the rest is covered.

mod common;

use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::spawn::*;
use common::*;

/// bkd against the test bed, killed after two minutes so that a hang
/// fails the test instead of stalling the suite.
fn bkd_limited(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Run {
    let bed = bed();
    let mut all = vec![
        "120",
        env!("CARGO_BIN_EXE_bkd"),
        args[0],
        "--addr",
        &bed.addr,
    ];
    all.extend_from_slice(&args[1..]);
    let run = run("timeout", &all, cwd, env);
    assert_ne!(run.code(), Some(124), "bkd hung\n{}", run.explain());
    run
}

/// Exit code and that the error is one `error:` line, the last one, naming
/// the problem.
fn assert_fails(run: &Run, code: i32, needle: &str) {
    assert_eq!(run.code(), Some(code), "{}", run.explain());
    let stderr = run.stderr();
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains(needle),
        "expected the last line to name {needle:?}\n{}",
        run.explain()
    );
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "error printed more than once\n{}",
        run.explain()
    );
    assert!(!stderr.contains("panicked"), "{}", run.explain());
}

/// A port on 127.0.0.1 that nothing listens on.
fn dead_address() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    drop(l);
    addr
}

#[test]
fn bad_input_is_one_line_with_its_own_exit_code() {
    let ctx = context();
    let d = ctx.path();
    write(d, "Dockerfile", "FROM scratch\nCOPY busybox /bin/busybox\n");
    write(
        d,
        "Bad.Dockerfile",
        "FROM scratch\nCOPY busybox /bin/busybox\nFROBNICATE now\n",
    );
    let dead = dead_address();
    let push_dead = format!("type=image,name={dead}/x:1,push=true");
    let cases: &[(&[&str], i32, &str)] = &[
        // Pre-build checks: the whole of stderr is the one line.
        (
            &["build", "no-such-dir"],
            3,
            "cannot read build context no-such-dir: no such file or directory",
        ),
        (
            &["build", "-f", "nope/Dockerfile", "."],
            3,
            "cannot read Dockerfile nope/Dockerfile",
        ),
        (
            &["build", "-o", "garbage", "."],
            2,
            "invalid --output \"garbage\": \"garbage\" is not key=value",
        ),
        (
            &["build", "-o", "type=frob,dest=x", "."],
            2,
            "unknown output type \"frob\"",
        ),
        (
            &["build", "-o", "type=tar", "."],
            2,
            "the tar output needs dest=FILE",
        ),
        (
            &["build", "-o", "type=local", "."],
            2,
            "invalid --output \"type=local\"",
        ),
        (
            &["build", "-o", "type=tar,dest=/proc/version/out.tar", "."],
            3,
            "cannot write output /proc/version/out.tar",
        ),
        (
            &["build", "--secret", "foo", "."],
            2,
            "invalid --secret \"foo\"",
        ),
        (
            &["build", "--secret", "id=a,src=/no/such/secret", "."],
            3,
            "secret a: cannot read /no/such/secret: no such file or directory",
        ),
        (
            &["build", "--build-arg", "=x", "."],
            2,
            "invalid --build-arg \"=x\"",
        ),
        (
            &["build", "--cache-to", "type=frob", "."],
            2,
            "unknown cache type \"frob\"",
        ),
        (
            &["build", "--cache-to", "type=registry", "."],
            2,
            "the registry cache needs ref=",
        ),
        (
            &["build", "--cache-from", "type=local", "."],
            2,
            "invalid --cache-from",
        ),
        // The daemon's verdicts: after the progress, one error line.
        (
            &["build", "-f", "Bad.Dockerfile", "."],
            1,
            "dockerfile parse error on line 3: unknown instruction: FROBNICATE",
        ),
        (
            &["build", "--target", "nosuch", "."],
            1,
            "target stage \"nosuch\" could not be found",
        ),
        (&["build", "-o", &push_dead, "."], 1, &dead),
    ];
    for (args, code, needle) in cases {
        let run = bkd_limited(args, d, &[]);
        assert_fails(&run, *code, needle);
        if *code != 1 {
            assert_eq!(
                run.stderr().lines().count(),
                1,
                "more than the error line\n{}",
                run.explain()
            );
        }
    }
    // Nothing of the refused outputs was written.
    assert!(!d.join("x").exists());
}

#[test]
fn a_registry_killed_mid_push_fails_naming_it() {
    let mut registry = OwnRegistry::start("127.0.0.1");
    let ctx = context();
    let mut blob = vec![0u8; 64 << 20];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut blob))
        .expect("random data");
    std::fs::write(ctx.path().join("blob"), &blob).expect("write blob");
    write(ctx.path(), "Dockerfile", "FROM scratch\nCOPY blob /blob\n");
    let output = format!(
        "type=image,name={}/big:1,push=true,compression=uncompressed",
        registry.addr
    );
    let build = Background::start(&bed().addr, &["-o", &output], ctx.path());
    // Killed as soon as the first blob upload begins.
    let uploads = registry
        .storage()
        .join("docker/registry/v2/repositories/big/_uploads");
    let started = wait_for(Duration::from_secs(90), || uploads.exists());
    registry.kill();
    assert!(started, "the push never started");
    let run = build.finish(Duration::from_secs(60));
    assert_eq!(run.code(), Some(1), "{}", run.explain());
    let stderr = run.stderr();
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains(&registry.addr),
        "{}",
        run.explain()
    );
}

/// Kills the processes whose command line holds this text when dropped.
struct KillOnDrop(String);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for p in processes_matching(&self.0) {
            if let Some(pid) = p.split(':').next().and_then(|p| p.parse::<i32>().ok()) {
                // SAFETY: signalling a leftover process this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// bkd building in the background against `addr`, its stderr in a file.
struct Background {
    child: std::process::Child,
    args: Vec<String>,
    cwd: std::path::PathBuf,
    out: tempfile::TempDir,
}

impl Background {
    fn start(addr: &str, extra: &[&str], cwd: &Path) -> Background {
        let out = tempfile::tempdir().expect("out dir");
        let mut args = vec!["build".to_string(), "--addr".into(), addr.into()];
        args.extend(extra.iter().map(|a| a.to_string()));
        args.push(".".into());
        let child = Command::new(env!("CARGO_BIN_EXE_bkd"))
            .args(&args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(out.path().join("stderr")).expect("stderr file"))
            .spawn()
            .expect("start bkd");
        Background {
            child,
            args,
            cwd: cwd.to_path_buf(),
            out,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.out.path().join("stderr")).unwrap_or_default()
    }

    /// Waits for bkd to end; kills it and fails the test after `limit`.
    fn finish(mut self, limit: Duration) -> Run {
        let since = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if since.elapsed() > limit {
                let _ = self.child.kill();
                panic!("bkd still running after {limit:?}:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Run {
            cmd: format!("bkd {}", self.args.join(" ")),
            cwd: self.cwd.clone(),
            out: std::process::Output {
                status,
                stdout: Vec::new(),
                stderr: self.stderr().into_bytes(),
            },
        }
    }
}

/// A 512 KiB tmpfs, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount() -> SmallDisk {
        let dir = tempfile::tempdir().expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount (the tests run as root)");
        assert!(status.success(), "mount tmpfs on {}", dir.path().display());
        SmallDisk { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_is_a_clear_error_and_leaves_nothing_at_dest() {
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM scratch\nCOPY busybox /busybox\n",
    );
    let disk = SmallDisk::mount();
    let tar = disk.dir.path().join("out.tar");
    let dir = disk.dir.path().join("out");
    for (output, dest) in [
        (format!("type=tar,dest={}", tar.display()), &tar),
        (format!("type=local,dest={}", dir.display()), &dir),
    ] {
        let run = bkd_limited(&["build", "-o", &output, "."], ctx.path(), &[]);
        assert_fails(
            &run,
            5,
            &format!(
                "cannot write output {}: no space left on device",
                dest.display()
            ),
        );
        let left: Vec<_> = std::fs::read_dir(disk.dir.path())
            .expect("read tmpfs")
            .map(|e| e.map(|e| e.file_name()))
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}\n{}", run.explain());
    }
}

#[test]
fn a_daemon_behind_addr_killed_mid_build_is_reported_at_once() {
    let mut daemon = PrivateDaemon::start();
    let ctx = context();
    let seconds = format!("61{}", std::process::id() % 1000);
    write(
        ctx.path(),
        "Dockerfile",
        &format!("FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\",\"sleep\",\"{seconds}\"]\n"),
    );
    let build = Background::start(&daemon.addr, &[], ctx.path());
    let step = format!("sleep {seconds}");
    // The step's container outlives a SIGKILLed daemon: not bkd's to clean
    // up when it does not own the daemon, but the test's, pass or fail.
    let _leftover = KillOnDrop(step.clone());
    let running = wait_for(Duration::from_secs(60), || {
        !processes_matching(&step).is_empty()
    });
    assert!(running, "the step never started:\n{}", build.stderr());
    daemon.child.kill().expect("kill buildkitd");
    let _ = daemon.child.wait();
    let run = build.finish(Duration::from_secs(10));
    assert_fails(
        &run,
        4,
        &format!("lost the connection to buildkitd at {}", daemon.addr),
    );
}

#[test]
fn a_closed_stdout_ends_the_build_without_a_panic() {
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM scratch\nCOPY busybox /busybox\n",
    );
    let bed = bed();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bkd"))
        .args(["build", "--addr", &bed.addr, "-o", "type=tar,dest=-", "."])
        .current_dir(ctx.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start bkd");
    let mut head = [0u8; 10];
    child
        .stdout
        .take()
        .expect("stdout")
        .read_exact(&mut head)
        .expect("the first 10 bytes");
    // The read end is gone now, as after `| head -c 10`.
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        stderr.lines().last(),
        Some("error: cannot write output to stdout: the reading end was closed"),
        "{stderr}"
    );
}

#[test]
fn special_files_and_odd_names_are_sent_as_buildctl_sends_them() {
    let ctx = context();
    let d = ctx.path();
    write(d, "Dockerfile", "FROM scratch\nCOPY . /ctx/\n");
    write(d, "name\nwith newline", "nl");
    write(d, "tab\tand ünïcode", "odd");
    // A path of 4000 bytes, in components below the 255-byte name limit.
    let component = "d".repeat(199);
    let mut long = String::new();
    while long.len() < 3800 {
        long.push_str(&component);
        long.push('/');
    }
    long.push_str(&"f".repeat(4000 - long.len()));
    assert_eq!(long.len(), 4000);
    write(d, &long, "long");
    let c = |p: &str| std::ffi::CString::new(d.join(p).into_os_string().into_encoded_bytes());
    // SAFETY: valid NUL-terminated paths; mknod of a char device as root.
    unsafe {
        assert_eq!(libc::mkfifo(c("fifo").expect("path").as_ptr(), 0o644), 0);
        assert_eq!(
            libc::mknod(
                c("null-device").expect("path").as_ptr(),
                libc::S_IFCHR | 0o644,
                libc::makedev(1, 3)
            ),
            0
        );
    }
    let _sock = std::os::unix::net::UnixListener::bind(d.join("sock")).expect("socket");
    let out = tempfile::tempdir().expect("out dir");
    let ours = out.path().join("bkd.tar");
    let theirs = out.path().join("buildctl.tar");
    bkd_limited(&["build", "-o", &tar_output(&ours), "."], d, &[]).assert_ok();
    buildctl_build(&["--output", &tar_output(&theirs)], d).assert_ok();
    let a = tar_listing(&ours);
    assert_eq!(a, tar_listing(&theirs), "bkd and buildctl differ");
    let kind = |p: &str| {
        a.iter()
            .find(|e| e.path == p)
            .map(|e| e.kind.clone())
            .unwrap_or_else(|| panic!("{p} missing: {a:?}"))
    };
    assert_eq!(kind("ctx/fifo"), "Fifo");
    assert_eq!(kind("ctx/null-device"), "Char");
    assert_eq!(kind("ctx/sock"), "Regular");
    assert_eq!(
        tar_file(&ours, &format!("ctx/{long}")).as_deref(),
        Some(&b"long"[..])
    );
    assert_eq!(
        tar_file(&ours, "ctx/name\nwith newline").as_deref(),
        Some(&b"nl"[..])
    );
}

#[test]
fn a_hundred_thousand_entries_arrive() {
    let ctx = context();
    let many = ctx.path().join("many");
    std::fs::create_dir(&many).expect("mkdir");
    for i in 0..100_000 {
        std::fs::File::create(many.join(format!("f{i}"))).expect("create");
    }
    write(
        ctx.path(),
        "Dockerfile",
        &format!(
            "{BUSYBOX_STAGE}RUN --mount=type=bind,target=/ctx sh -c 'ls /ctx/many | wc -l > /count'\n\
             FROM scratch\nCOPY --from=bb /count /\n"
        ),
    );
    let out = tempfile::tempdir().expect("out dir");
    let dest = out.path().join("out");
    let output = format!("type=local,dest={}", dest.display());
    bkd_limited(&["build", "-o", &output, "."], ctx.path(), &[]).assert_ok();
    let count = std::fs::read_to_string(dest.join("count")).expect("count");
    assert_eq!(count.trim(), "100000");
}

#[test]
fn a_sparse_file_over_4_gib_reaches_a_build_step_whole() {
    let ctx = context();
    let huge = ctx.path().join("huge");
    let size: u64 = (4 << 30) + 8;
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(&huge).expect("create");
        f.seek(SeekFrom::Start(size - 8)).expect("seek");
        f.write_all(b"TAIL4GIB").expect("tail");
    }
    write(
        ctx.path(),
        "Dockerfile",
        &format!(
            "{BUSYBOX_STAGE}RUN --mount=type=bind,target=/ctx sh -c \
             'stat -c %s /ctx/huge > /size && tail -c 8 /ctx/huge > /tail'\n\
             FROM scratch\nCOPY --from=bb /size /tail /\n"
        ),
    );
    let out = tempfile::tempdir().expect("out dir");
    let dest = out.path().join("out");
    let output = format!("type=local,dest={}", dest.display());
    bkd_limited(&["build", "-o", &output, "."], ctx.path(), &[]).assert_ok();
    let seen = std::fs::read_to_string(dest.join("size")).expect("size");
    assert_eq!(seen.trim(), size.to_string());
    assert_eq!(std::fs::read(dest.join("tail")).expect("tail"), b"TAIL4GIB");
}

#[test]
fn an_unreadable_file_fails_the_build_naming_it() {
    // As the unprivileged user, with its own rootless daemon: root reads
    // everything.
    let ctx = user_dir();
    std::fs::copy("/bin/busybox", ctx.path().join("busybox")).expect("copy busybox");
    write(ctx.path(), "Dockerfile", "FROM scratch\nCOPY . /\n");
    chown_tree(ctx.path());
    // Its name tries to forge an error line of its own.
    let locked = ctx
        .path()
        .join("locked\nerror: injected fake line (exit 0).key");
    std::fs::write(&locked, "root only").expect("write");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let state = user_dir();
    let root = state.path().join("state");
    let root = root.to_str().expect("utf-8 temp path");
    let run = bkd_as(
        As::User,
        &["build", "--root", root, "--daemon-timeout", "60", "."],
        ctx.path(),
        &[],
    );
    let shown = locked.display().to_string().replace('\n', "\\n");
    assert_fails(&run, 1, &format!("cannot read {shown}: permission denied"));
}

#[test]
fn planted_credentials_and_secrets_never_show() {
    let bed = bed();
    const FILE_SECRET: &str = "planted-file-secret-5d41402a";
    const ENV_SECRET: &str = "planted-env-secret-7d793037";
    const WRONG_PASSWORD: &str = "planted-wrong-password-1f3870be";
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        &format!(
            "{BUSYBOX_STAGE}RUN --mount=type=secret,id=f --mount=type=secret,id=e \
             sh -c 'test -s /run/secrets/f && test -s /run/secrets/e && echo used'\n"
        ),
    );
    let secret_file = ctx.path().join("secret.txt");
    std::fs::write(&secret_file, FILE_SECRET).expect("secret file");
    let file_secret = format!("id=f,src={}", secret_file.display());
    let bin = tempfile::tempdir().expect("bin dir");
    let helper = bin.path().join("docker-credential-planted");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread server\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{AUTH_USER}\",\"Secret\":\"{AUTH_PASSWORD}\"}}' \"$server\"\n"
        ),
    )
    .expect("helper");
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let b64 = |user: &str, pass: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    };
    let configs = [
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            bed.auth_registry,
            b64(AUTH_USER, AUTH_PASSWORD)
        ),
        format!(r#"{{"credHelpers":{{"{}":"planted"}}}}"#, bed.auth_registry),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            bed.auth_registry,
            b64(AUTH_USER, WRONG_PASSWORD)
        ),
    ];
    let planted = [
        FILE_SECRET.to_string(),
        ENV_SECRET.to_string(),
        AUTH_PASSWORD.to_string(),
        WRONG_PASSWORD.to_string(),
        b64(AUTH_USER, AUTH_PASSWORD),
        b64(AUTH_USER, WRONG_PASSWORD),
    ];
    let work = tempfile::tempdir().expect("work dir");
    let mut runs = Vec::new();
    for (i, (config, progress)) in configs.iter().zip(["plain", "quiet", "auto"]).enumerate() {
        let cfg = work.path().join(format!("config{i}"));
        std::fs::create_dir_all(&cfg).expect("config dir");
        std::fs::write(cfg.join("config.json"), config).expect("config.json");
        let meta = work.path().join(format!("meta{i}.json"));
        let output = format!("type=image,name={}/leak:{i},push=true", bed.auth_registry);
        let args = [
            "build",
            "--debug",
            "--progress",
            progress,
            "--secret",
            &file_secret,
            "--secret",
            "id=e,env=PLANTED_ENV_SECRET",
            "--metadata-file",
            meta.to_str().expect("utf-8 temp path"),
            "-o",
            &output,
            ".",
        ];
        let env = [
            ("DOCKER_CONFIG", cfg.to_str().expect("utf-8 temp path")),
            ("PLANTED_ENV_SECRET", ENV_SECRET),
            ("PATH", &path),
        ];
        let run = bkd_limited(&args, ctx.path(), &env);
        let metadata = std::fs::read_to_string(&meta).unwrap_or_default();
        runs.push((run, metadata));
    }
    // The right credentials push; the wrong ones fail naming the registry.
    runs[0].0.assert_ok();
    runs[1].0.assert_ok();
    assert_fails(&runs[2].0, 1, &bed.auth_registry);
    // bkd spawning its own daemon with --debug shows the daemon's log too.
    let cfg = work.path().join("config0");
    let state = work.path().join("state");
    let spawned = bkd_as(
        As::Root,
        &[
            "build",
            "--debug",
            "--root",
            state.to_str().expect("utf-8 temp path"),
            "--insecure-registry",
            &bed.auth_registry,
            "--secret",
            &file_secret,
            "--secret",
            "id=e,env=PLANTED_ENV_SECRET",
            "-o",
            &format!(
                "type=image,name={}/leak:spawned,push=true",
                bed.auth_registry
            ),
            ".",
        ],
        ctx.path(),
        &[
            ("DOCKER_CONFIG", cfg.to_str().expect("utf-8 temp path")),
            ("PLANTED_ENV_SECRET", ENV_SECRET),
        ],
    );
    spawned.assert_ok();
    assert!(
        spawned.stderr().contains("buildkitd"),
        "no daemon log in --debug\n{}",
        spawned.explain()
    );
    runs.push((spawned, String::new()));
    for (run, metadata) in &runs {
        for value in &planted {
            for (what, text) in [
                ("stdout", run.stdout()),
                ("stderr", run.stderr()),
                ("metadata file", metadata.clone()),
            ] {
                assert!(
                    !text.contains(value.as_str()),
                    "{value} leaked into {what}\n{}",
                    run.explain()
                );
            }
        }
    }
}

#[test]
fn a_panic_shows_where_but_never_its_message() {
    let ctx = context();
    let run = bkd_limited(
        &["build", "."],
        ctx.path(),
        &[("BKD_TEST_PANIC", "planted-in-a-panic-message")],
    );
    assert_eq!(run.code(), Some(101), "{}", run.explain());
    assert!(
        !run.stderr().contains("planted-in-a-panic-message"),
        "{}",
        run.explain()
    );
    assert_eq!(run.stderr().lines().count(), 1, "{}", run.explain());
    assert!(
        run.stderr()
            .starts_with("error: internal error at src/main.rs:"),
        "{}",
        run.explain()
    );
}

/// [`bkd_limited`] with its own time limit (in seconds), SIGKILL five
/// seconds after the SIGTERM (a bkd that ignored SIGTERM hung for good).
fn bkd_within(limit: &str, args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Run {
    let bed = bed();
    let mut all = vec![
        "-k",
        "5",
        limit,
        env!("CARGO_BIN_EXE_bkd"),
        args[0],
        "--addr",
        &bed.addr,
    ];
    all.extend_from_slice(&args[1..]);
    let run = run("timeout", &all, cwd, env);
    assert!(
        !matches!(run.code(), Some(124) | None),
        "bkd hung\n{}",
        run.explain()
    );
    run
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

#[test]
fn outputs_replace_a_planted_link_and_never_write_through_it() {
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM scratch\nCOPY busybox /busybox\n",
    );
    // What a pull request could commit: outputs named as links to files
    // bkd (root) may write and the user may not.
    let outside = tempfile::tempdir().expect("outside");
    let victims: Vec<_> = ["image", "meta", "log"]
        .iter()
        .map(|v| {
            let p = outside.path().join(v);
            std::fs::write(&p, "precious").expect("victim");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            p
        })
        .collect();
    for (name, victim) in ["image.tar", "meta.json", "daemon.log"]
        .iter()
        .zip(&victims)
    {
        std::os::unix::fs::symlink(victim, ctx.path().join(name)).expect("link");
    }
    let run = bkd_limited(
        &[
            "build",
            "-o",
            "type=tar,dest=image.tar",
            "--metadata-file",
            "meta.json",
            ".",
        ],
        ctx.path(),
        &[],
    );
    run.assert_ok();
    // --daemon-log belongs to a spawned daemon.
    let root = ctx.path().join("state").display().to_string();
    let spawned = bkd_as(
        As::Root,
        &["build", "--root", &root, "--daemon-log", "daemon.log", "."],
        ctx.path(),
        &[],
    );
    spawned.assert_ok();
    for victim in &victims {
        assert_eq!(
            std::fs::read_to_string(victim).expect("victim"),
            "precious",
            "{} was written through a link\n{}",
            victim.display(),
            run.explain()
        );
    }
    for name in ["image.tar", "meta.json", "daemon.log"] {
        let meta = std::fs::symlink_metadata(ctx.path().join(name)).expect("output");
        assert!(meta.is_file(), "{name} is still a link");
    }
    assert!(tar_file(&ctx.path().join("image.tar"), "busybox").is_some());
    assert!(std::fs::read_to_string(ctx.path().join("daemon.log"))
        .expect("log")
        .contains("running server on"));
}

#[test]
fn devices_and_the_systems_own_links_are_written_in_place() {
    use std::os::unix::fs::FileTypeExt;
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM scratch\nCOPY busybox /busybox\n",
    );
    // A null device of the test's own (never /dev/null itself: an old bkd
    // replaced it with a regular file).
    let null = ctx.path().join("null");
    let made = Command::new("mknod")
        .arg(&null)
        .args(["c", "1", "3"])
        .status();
    assert!(made.is_ok_and(|s| s.success()), "mknod");
    let null_arg = null.display().to_string();
    let tar_to_null = format!("type=tar,dest={null_arg}");
    let run = bkd_limited(
        &[
            "build",
            "-o",
            &tar_to_null,
            "--metadata-file",
            &null_arg,
            ".",
        ],
        ctx.path(),
        &[],
    );
    run.assert_ok();
    let kind = std::fs::symlink_metadata(&null).expect("null").file_type();
    assert!(
        kind.is_char_device(),
        "the device was replaced\n{}",
        run.explain()
    );
    // /proc/self/fd/1 is bkd's stdout: the metadata arrives there.
    let run = bkd_limited(
        &[
            "build",
            "--metadata-file",
            "/proc/self/fd/1",
            "-o",
            "type=tar,dest=out.tar",
            ".",
        ],
        ctx.path(),
        &[],
    );
    run.assert_ok();
    let meta: serde_json::Value = serde_json::from_str(&run.stdout())
        .unwrap_or_else(|e| panic!("no metadata on stdout ({e})\n{}", run.explain()));
    assert!(
        meta.get("containerimage.digest").is_some() || meta.is_object(),
        "{meta}"
    );
}

#[test]
fn a_fifo_output_fails_at_once_without_a_reader_and_sigterm_ends_a_stalled_one() {
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM scratch\nCOPY busybox /busybox\n",
    );
    let fifo = ctx.path().join("fifo");
    mkfifo(&fifo);
    let started = Instant::now();
    let run = bkd_within(
        "30",
        &["build", "-o", "type=tar,dest=fifo", "."],
        ctx.path(),
        &[],
    );
    assert_fails(&run, 3, "no process is reading the FIFO");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{}",
        run.explain()
    );
    assert_eq!(run.stderr().lines().count(), 1, "{}", run.explain());

    // A reader that opens the FIFO and never reads: the tar (2 MB) fills
    // the pipe and bkd waits for it; a SIGTERM still ends bkd.
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .expect("open reader");
    let bed = bed();
    let build = Background::start(&bed.addr, &["-o", "type=tar,dest=fifo"], ctx.path());
    let filled = wait_for(Duration::from_secs(60), || {
        let mut queued: libc::c_int = 0;
        // SAFETY: FIONREAD into a local on a descriptor this test owns.
        unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&reader),
                libc::FIONREAD,
                &mut queued,
            )
        };
        queued >= 65536
    });
    assert!(
        filled,
        "the output never reached the FIFO:\n{}",
        build.stderr()
    );
    // SAFETY: signalling the bkd process this test started.
    unsafe { libc::kill(build.child.id() as i32, libc::SIGTERM) };
    let sent = Instant::now();
    let run = build.finish(Duration::from_secs(20));
    assert!(sent.elapsed() < Duration::from_secs(5), "{}", run.explain());
    assert_eq!(run.code(), Some(143), "{}", run.explain());
    drop(reader);
}

#[test]
fn names_with_newlines_stay_on_one_line() {
    let ctx = context();
    let forged = "ctx\nerror: injected fake line (exit 0)\n::warning::x";
    let run = bkd_limited(&["build", forged], ctx.path(), &[]);
    assert_fails(
        &run,
        3,
        "cannot read build context ctx\\nerror: injected fake line",
    );
    assert_eq!(run.stderr().lines().count(), 1, "{}", run.explain());
}

/// Names bkd prints from its command line before any build (a secret's
/// file, an output, the metadata file, an ssh socket, a named context, the
/// daemon address): each error stays one line however the name is made.
#[test]
fn names_in_command_line_errors_stay_on_one_line() {
    let ctx = context();
    write(ctx.path(), "Dockerfile", "FROM scratch\n");
    let forged = "\nerror: forged (exit 0)\n::warning::x";
    let cases: [(Vec<String>, i32, &str); 6] = [
        (
            vec!["--secret".into(), format!("id=s,src=missing{forged}")],
            3,
            "secret s: cannot read missing\\nerror: forged",
        ),
        (
            vec!["-o".into(), format!("type=tar,dest=nodir{forged}/out.tar")],
            3,
            "cannot write output nodir\\nerror: forged",
        ),
        (
            vec!["-o".into(), format!("type=local,dest=nodir{forged}/out")],
            3,
            "cannot write output nodir\\nerror: forged",
        ),
        (
            vec!["--metadata-file".into(), format!("nodir{forged}/m.json")],
            3,
            "cannot write metadata file nodir\\nerror: forged",
        ),
        (
            vec!["--ssh".into(), format!("agent=/nonexistent{forged}")],
            3,
            "cannot use /nonexistent\\nerror: forged",
        ),
        (
            vec!["--build-context".into(), format!("x=nodir{forged}")],
            3,
            "--build-context x=nodir\\nerror: forged",
        ),
    ];
    for (flags, code, needle) in cases {
        let mut args = vec!["build"];
        args.extend(flags.iter().map(String::as_str));
        args.push(".");
        let run = bkd_limited(&args, ctx.path(), &[]);
        assert_fails(&run, code, needle);
        assert_eq!(run.stderr().lines().count(), 1, "{}", run.explain());
    }
    let addr = format!("unix:///nonexistent{forged}");
    let run = run(
        env!("CARGO_BIN_EXE_bkd"),
        &["build", "--addr", &addr, "."],
        ctx.path(),
        &[],
    );
    assert_fails(
        &run,
        4,
        "cannot connect to buildkitd at unix:///nonexistent\\nerror: forged",
    );
    assert_eq!(run.stderr().lines().count(), 1, "{}", run.explain());
}

/// The daemon's own error text quotes what it was given as is (here the
/// frontend's `failed to parse target platform %s`): printed as one line.
#[test]
fn a_daemon_error_with_a_newline_stays_on_one_line() {
    let ctx = context();
    write(ctx.path(), "Dockerfile", "FROM scratch\n");
    let opt = "platform=linux/x\nerror: forged (exit 0)";
    let run = bkd_limited(&["build", "--opt", opt, "."], ctx.path(), &[]);
    assert_fails(
        &run,
        1,
        "failed to parse target platform linux/x\\nerror: forged (exit 0)",
    );
}

/// Entries of `dir` whose names start with `.bkd-output-`.
fn partial_outputs(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".bkd-output-"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_killed_export_leaves_no_partial_output_and_old_ones_are_swept() {
    use std::os::fd::AsRawFd;
    let ctx = context();
    let dest = tempfile::tempdir().expect("dest dir");
    // Left by bkds killed earlier: one nobody holds, idle for an hour;
    // one a live writer holds.
    let old = |name: &str| {
        let f = std::fs::File::create(dest.path().join(name)).expect("partial");
        f.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
            .expect("mtime");
        f
    };
    drop(old(".bkd-output-stale1"));
    let held = old(".bkd-output-held01");
    // SAFETY: flock on a descriptor this test owns.
    assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
    write(
        ctx.path(),
        "Dockerfile",
        "FROM scratch\nCOPY busybox /busybox\n",
    );
    let out = dest.path().join("small.tar");
    bkd_limited(&["build", "-o", &tar_output(&out), "."], ctx.path(), &[]).assert_ok();
    assert_eq!(partial_outputs(dest.path()), [".bkd-output-held01"]);
    drop(held);
    std::fs::remove_file(dest.path().join(".bkd-output-held01")).expect("rm");

    // A 200 MB image: bkd is SIGKILLed while the tar arrives.
    write(
        ctx.path(),
        "Dockerfile",
        &format!(
            "{BUSYBOX_STAGE}RUN head -c 200000000 /dev/urandom > /big && echo {}\n",
            nonce()
        ),
    );
    let out = dest.path().join("big.tar");
    let bed = bed();
    let build = Background::start(&bed.addr, &["-o", &tar_output(&out)], ctx.path());
    let pid = build.child.id();
    let dest_dir = dest.path().display().to_string();
    let receiving = wait_for(Duration::from_secs(120), || {
        // The output being written: a file in dest's directory held open
        // by bkd (unnamed, or a .bkd-output-* file).
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|fds| {
                fds.flatten().any(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|t| t.to_string_lossy().starts_with(&format!("{dest_dir}/")))
                })
            })
            .unwrap_or(false)
    });
    assert!(receiving, "the export never started:\n{}", build.stderr());
    // SAFETY: killing the bkd process this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let _ = build.finish(Duration::from_secs(20));
    let left = partial_outputs(dest.path());
    assert!(left.is_empty(), "partial outputs left: {left:?}");
    assert!(!out.exists(), "a partial output reached dest");
}
