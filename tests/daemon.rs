//! bkd spawning its own buildkitd: the three modes as root and as the
//! unprivileged test user, the Kubernetes /proc masking reproduced, the
//! readiness failures, signals, and that nothing is left running.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::spawn::*;
use common::*;

/// A build whose step records its own pid: 1 inside the process sandbox
/// (a fresh pid namespace), something else without it.
const PID_DOCKERFILE: &str = "FROM scratch\nCOPY busybox /bin/busybox\n\
    RUN [\"/bin/busybox\",\"sh\",\"-c\",\"echo $$ > /pid\"]\n";

/// The pid the build step saw, from the exported tar.
fn step_pid(tar: &Path) -> String {
    let pid = tar_file(tar, "pid").expect("/pid in the exported image");
    String::from_utf8_lossy(&pid).trim().to_string()
}

/// The run directory named in the `--debug` readiness line.
fn socket_dir(stderr: &str) -> std::path::PathBuf {
    let line = stderr
        .lines()
        .find(|l| l.contains("buildkitd ready in"))
        .unwrap_or_else(|| panic!("no readiness line in:\n{stderr}"));
    let sock = line
        .split("socket unix://")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .expect("socket path");
    Path::new(sock).parent().expect("run dir").to_path_buf()
}

fn assert_nothing_left(marker: &str) {
    let clean = wait_for(Duration::from_secs(3), || {
        processes_matching(marker).is_empty()
    });
    assert!(clean, "left running: {:?}", processes_matching(marker));
}

#[test]
fn privileged_by_default_as_root_with_the_standard_state_dir() {
    let ctx = context();
    write(ctx.path(), "Dockerfile", PID_DOCKERFILE);
    let out = ctx.path().join("out.tar");
    let run = bkd_as(
        As::Root,
        &["build", "--debug", ".", "-o", &tar_output(&out)],
        ctx.path(),
        &[],
    );
    run.assert_ok();
    let err = run.stderr();
    assert!(err.contains("privileged mode"), "{}", run.explain());
    // The daemon's own log is streamed live with --debug, each line named
    // once (buildkitd names itself in its own shutdown message).
    assert!(err.contains("buildkitd: time="), "{}", run.explain());
    assert!(
        err.contains("\nbuildkitd: got SIGTERM"),
        "{}",
        run.explain()
    );
    assert!(!err.contains("buildkitd: buildkitd:"), "{}", run.explain());
    assert_eq!(step_pid(&out), "1", "steps run in their own pid namespace");
    // The default state dir is the one pod specs mount a cache volume at.
    assert!(Path::new("/var/lib/buildkit/history.db").exists());
    // The socket lived under /run/buildkit and is gone after a success.
    let dir = socket_dir(&err);
    assert!(dir.starts_with("/run/buildkit"), "{}", dir.display());
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert_nothing_left(&dir.display().to_string());
}

#[test]
fn rootless_by_default_as_an_unprivileged_user() {
    let ctx = user_context(PID_DOCKERFILE);
    let out = ctx.path().join("out.tar");
    let run = bkd_as(
        As::User,
        &["build", "--debug", ".", "-o", &tar_output(&out)],
        ctx.path(),
        &[],
    );
    run.assert_ok();
    assert!(run.stderr().contains("(rootless mode"), "{}", run.explain());
    assert!(!run.stderr().contains("warning:"), "{}", run.explain());
    assert_eq!(step_pid(&out), "1", "the process sandbox is on");
    // The user's default state dir, as in the rootless image.
    assert!(Path::new("/home/bkdtest/.local/share/buildkit/history.db").exists());
    assert_nothing_left(&socket_dir(&run.stderr()).display().to_string());
}

/// One `PID_DOCKERFILE` build in a fresh user-owned context with a private
/// state dir and a tar output.
struct PidBuild {
    ctx: tempfile::TempDir,
    run: Run,
}

impl PidBuild {
    fn run(who: As, flags: &[&str], env: &[(&str, &str)]) -> PidBuild {
        let ctx = user_context(PID_DOCKERFILE);
        let root = ctx.path().join("state").display().to_string();
        let out = tar_output(&ctx.path().join("out.tar"));
        let mut args = vec!["build", "--root", &root, "-o", &out];
        args.extend_from_slice(flags);
        args.push(".");
        let run = bkd_as(who, &args, ctx.path(), env);
        PidBuild { ctx, run }
    }

    fn out(&self) -> std::path::PathBuf {
        self.ctx.path().join("out.tar")
    }

    fn root(&self) -> String {
        self.ctx.path().join("state").display().to_string()
    }
}

#[test]
fn rootless_strict_runs_without_the_process_sandbox() {
    let b = PidBuild::run(As::User, &["--mode", "rootless-strict"], &[]);
    b.run.assert_ok();
    assert_ne!(
        step_pid(&b.out()),
        "1",
        "the step shares the daemon's pid namespace"
    );
    assert_nothing_left(&b.root());
}

#[test]
fn masked_proc_fails_in_rootless_mode_with_the_fix() {
    let b = PidBuild::run(As::UserMaskedProc, &["--mode", "rootless"], &[]);
    let run = &b.run;
    assert_eq!(run.code(), Some(1), "{}", run.explain());
    let err = run.stderr();
    assert!(err.contains("mount proc:/proc"), "{}", run.explain());
    assert!(
        err.contains("likely cause") && err.contains("procMount: Unmasked"),
        "{}",
        run.explain()
    );
    assert!(!b.out().exists());
    assert_nothing_left(&b.root());
}

#[test]
fn masked_proc_falls_back_to_rootless_strict_in_auto_mode() {
    let b = PidBuild::run(As::UserMaskedProc, &[], &[]);
    let run = &b.run;
    run.assert_ok();
    let err = run.stderr();
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 1, "one warning: {}", run.explain());
    assert!(
        warnings[0].contains("rootless-strict")
            && warnings[0].contains("procfs")
            && warnings[0].contains("see and signal other processes"),
        "{}",
        run.explain()
    );
    assert_ne!(step_pid(&b.out()), "1");
}

#[test]
fn a_sandbox_failure_the_probe_missed_is_retried_once_in_rootless_strict() {
    // Skipping the probe makes auto start the sandboxed mode where it
    // cannot work, so the real runc error has to trigger the safety net.
    let b = PidBuild::run(As::UserMaskedProc, &[], &[("BKD_SANDBOX_PROBE", "skip")]);
    let run = &b.run;
    run.assert_ok();
    let err = run.stderr();
    assert!(
        err.contains("mount proc:/proc"),
        "first attempt failed: {}",
        run.explain()
    );
    assert_eq!(
        err.matches("retrying the build once").count(),
        1,
        "{}",
        run.explain()
    );
    assert_ne!(step_pid(&b.out()), "1", "the retry ran without the sandbox");
    assert_nothing_left(&b.root());
}

#[test]
fn other_build_failures_are_never_retried() {
    let ctx =
        user_context("FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\",\"false\"]\n");
    let run = bkd_as(
        As::User,
        &[
            "build",
            "--debug",
            "--root",
            &ctx.path().join("state").display().to_string(),
            ".",
        ],
        ctx.path(),
        &[],
    );
    assert_eq!(run.code(), Some(1), "{}", run.explain());
    assert!(!run.stderr().contains("retrying"), "{}", run.explain());
    assert_eq!(
        run.stderr().matches("buildkitd ready in").count(),
        1,
        "one daemon, one attempt: {}",
        run.explain()
    );
}

#[test]
fn a_daemon_that_exits_at_once_fails_fast_with_its_log() {
    let ctx = context();
    write(ctx.path(), "Dockerfile", PID_DOCKERFILE);
    let root = ctx.path().join("state");
    let started = Instant::now();
    let run = bkd_as(
        As::Root,
        &["build", "--root", &root.display().to_string(), "."],
        ctx.path(),
        &[("BUILDKITD_FLAGS", "--bogus-flag")],
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(run.code(), Some(4), "{}", run.explain());
    let err = run.stderr();
    assert!(
        err.contains("buildkitd exited during startup"),
        "{}",
        run.explain()
    );
    assert!(
        err.contains("flag provided but not defined: -bogus-flag"),
        "{}",
        run.explain()
    );
    let log = err
        .lines()
        .find_map(|l| l.strip_prefix("full daemon log: "))
        .unwrap_or_else(|| panic!("no log path\n{}", run.explain()));
    let kept = std::fs::read_to_string(log).expect("the daemon log is kept");
    assert!(kept.contains("bogus-flag"));
}

#[test]
fn a_daemon_that_never_becomes_ready_misses_the_deadline_and_is_killed() {
    let ctx = context();
    write(ctx.path(), "Dockerfile", PID_DOCKERFILE);
    // A "buildkitd" that starts and never listens.
    let fake = ctx.path().join("silent-buildkitd");
    write(
        ctx.path(),
        "silent-buildkitd",
        "#!/bin/sh\necho starting\nexec sleep 7391\n",
    );
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let started = Instant::now();
    let run = bkd_as(
        As::Root,
        &[
            "build",
            "--daemon-timeout",
            "2",
            "--root",
            &ctx.path().join("state").display().to_string(),
            ".",
        ],
        ctx.path(),
        &[("BUILDKITD", &fake.display().to_string())],
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{}",
        run.explain()
    );
    assert_eq!(run.code(), Some(4), "{}", run.explain());
    assert!(
        run.stderr().contains("did not become ready within 2s"),
        "{}",
        run.explain()
    );
    assert!(
        run.stderr().contains("starting"),
        "log tail shown: {}",
        run.explain()
    );
    assert_nothing_left("sleep 7391");
}

/// Starts a build stuck in `RUN sleep SECONDS`, waits until the step runs,
/// and returns the bkd process and the state dir marker.
fn stuck_build(who: As, seconds: &str) -> (std::process::Child, tempfile::TempDir, String) {
    let dockerfile = format!(
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\",\"sleep\",\"{seconds}\"]\n"
    );
    let ctx = user_context(&dockerfile);
    let root = ctx.path().join("state").display().to_string();
    let child = start_bkd(
        who,
        &["build", "--root", &root, "."],
        ctx.path(),
        ctx.path(),
    );
    let running = wait_for(Duration::from_secs(60), || {
        !processes_matching(&format!("sleep {seconds}")).is_empty()
    });
    let err = std::fs::read_to_string(ctx.path().join("stderr")).unwrap_or_default();
    assert!(running, "the step never started:\n{err}");
    (child, ctx, root)
}

/// Signals bkd during a stuck build and checks the exit code, the message,
/// the time taken and that nothing is left.
fn interrupt_stuck_build(who: As, seconds: &str, signal: i32, code: i32, name: &str) {
    let (mut child, ctx, root) = stuck_build(who, seconds);
    let pid = bkd_pid(&root).expect("bkd pid");
    let sent = Instant::now();
    // SAFETY: signalling the bkd process this test started.
    unsafe { libc::kill(pid, signal) };
    let status = child.wait().expect("wait");
    let err = std::fs::read_to_string(ctx.path().join("stderr")).unwrap_or_default();
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "within the grace period"
    );
    assert_eq!(status.code(), Some(code), "{err}");
    assert!(err.contains(&format!("interrupted by {name}")), "{err}");
    assert_nothing_left(&format!("sleep {seconds}"));
    assert_nothing_left(&root);
}

#[test]
fn sigterm_cancels_the_build_stops_the_daemon_and_exits_143() {
    interrupt_stuck_build(As::Root, "8117", libc::SIGTERM, 143, "SIGTERM");
}

#[test]
fn sigint_stops_a_rootless_build_and_exits_130() {
    interrupt_stuck_build(As::User, "8467", libc::SIGINT, 130, "SIGINT");
}

#[test]
fn sigkill_of_bkd_takes_the_rootless_daemon_and_its_steps_down() {
    let (mut child, _ctx, root) = stuck_build(As::User, "8231");
    let pid = bkd_pid(&root).expect("bkd pid");
    // SAFETY: signalling the bkd process this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = child.wait();
    assert!(
        wait_for(Duration::from_secs(2), || processes_matching(&root)
            .is_empty()
            && processes_matching("sleep 8231").is_empty()),
        "left running: {:?} {:?}",
        processes_matching(&root),
        processes_matching("sleep 8231")
    );
}

#[test]
fn a_daemon_killed_mid_build_is_reported_at_once() {
    let (mut child, ctx, root) = stuck_build(As::Root, "8353");
    let daemon: Vec<i32> = processes_matching(&root)
        .iter()
        .filter(|p| p.contains("buildkitd --root") && !p.contains("__bkd-guard"))
        .filter_map(|p| p.split(':').next()?.parse().ok())
        .collect();
    assert_eq!(daemon.len(), 1, "{:?}", processes_matching(&root));
    let killed = Instant::now();
    // SAFETY: killing the buildkitd this test's bkd started.
    unsafe { libc::kill(daemon[0], libc::SIGKILL) };
    let status = child.wait().expect("wait");
    let err = std::fs::read_to_string(ctx.path().join("stderr")).unwrap_or_default();
    assert!(killed.elapsed() < Duration::from_secs(10), "{err}");
    assert_eq!(status.code(), Some(4), "{err}");
    assert!(
        err.contains("buildkitd exited unexpectedly (killed by signal 9)"),
        "{err}"
    );
    assert_nothing_left("sleep 8353");
    // The killed daemon's snapshot mounts (the step's rootfs among them)
    // are detached by bkd's guardian, not left on the host.
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let left: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(&format!(" {root}/")))
        .collect();
    // Taken down either way: the test bed is long-lived.
    unmount_below(ctx.path());
    assert!(
        left.is_empty(),
        "mounts left below the state dir: {left:#?}"
    );
}

#[test]
fn a_state_dir_in_use_names_the_daemon_holding_it() {
    let bed = bed();
    let ctx = context();
    write(ctx.path(), "Dockerfile", PID_DOCKERFILE);
    let root = bed.dir.join("root");
    let run = bkd_as(
        As::Root,
        &["build", "--root", &root.display().to_string(), "."],
        ctx.path(),
        &[],
    );
    assert_eq!(run.code(), Some(4), "{}", run.explain());
    let err = run.stderr();
    assert!(
        err.contains("is in use by another buildkitd (pid ") && err.contains("buildkitd --root"),
        "{}",
        run.explain()
    );
    assert!(err.contains("--root DIR"), "{}", run.explain());
}

#[test]
fn root_without_cap_sys_admin_is_explained_before_spawning() {
    let ctx = context();
    write(ctx.path(), "Dockerfile", PID_DOCKERFILE);
    let run = bkd_as(As::RootWithoutSysAdmin, &["build", "."], ctx.path(), &[]);
    assert_eq!(run.code(), Some(3), "{}", run.explain());
    let err = run.stderr();
    assert!(
        err.contains("CAP_SYS_ADMIN")
            && err.contains("privileged: true")
            && err.contains("non-root user"),
        "{}",
        run.explain()
    );
    assert_eq!(err.lines().count(), 1, "one line: {}", run.explain());
}

#[test]
fn missing_binaries_are_named() {
    let ctx = user_context(PID_DOCKERFILE);
    let run = bkd_as(
        As::Root,
        &["build", "."],
        ctx.path(),
        &[("BUILDKITD", "no-such-buildkitd")],
    );
    assert_eq!(run.code(), Some(3), "{}", run.explain());
    assert!(
        run.stderr().contains("no-such-buildkitd not found on PATH"),
        "{}",
        run.explain()
    );
    let run = bkd_as(
        As::User,
        &["build", "--mode", "rootless", "."],
        ctx.path(),
        &[("ROOTLESSKIT", "no-such-rootlesskit")],
    );
    assert_eq!(run.code(), Some(3), "{}", run.explain());
    assert!(
        run.stderr()
            .contains("rootless mode needs rootlesskit: no-such-rootlesskit not found"),
        "{}",
        run.explain()
    );
}

#[test]
fn doctor_reports_every_probe_and_the_mode() {
    let dir = user_dir();
    let probes = [
        "CAP_SYS_ADMIN",
        "user.max_user_namespaces",
        "sandbox (procfs)",
        "newuidmap/newgidmap",
        "subuid/subgid",
        "seccomp",
        "AppArmor",
        "cgroup",
        "state dir",
        "buildkitd",
        "runc",
    ];
    let cases = [
        (As::Root, "privileged mode", "privileged: true"),
        (As::User, "rootless mode", "runAsNonRoot: true"),
        (As::UserMaskedProc, "rootless-strict mode", "seccompProfile"),
    ];
    for (who, mode, spec) in cases {
        let run = bkd_as(who, &["doctor"], dir.path(), &[]);
        run.assert_ok();
        let out = run.stdout();
        for p in probes {
            assert!(
                out.contains(&format!("] {p}")),
                "{who:?} misses {p}:\n{out}"
            );
        }
        assert!(
            out.contains(&format!("would run buildkitd in {mode}")),
            "{out}"
        );
        assert!(out.contains(spec), "{out}");
    }
    let masked = bkd_as(As::UserMaskedProc, &["doctor"], dir.path(), &[]).stdout();
    assert!(
        masked.contains("[FAIL] sandbox (procfs)") && masked.contains("not permitted"),
        "{masked}"
    );
    // Root without CAP_SYS_ADMIN: no build can run, and doctor says so.
    let run = bkd_as(As::RootWithoutSysAdmin, &["doctor"], dir.path(), &[]);
    assert_ne!(run.code(), Some(0), "{}", run.explain());
    assert!(
        run.stdout().contains("[FAIL] CAP_SYS_ADMIN"),
        "{}",
        run.explain()
    );
}

#[test]
fn target_and_push_work_in_every_mode() {
    let registry = &bed().registry;
    let dockerfile = "FROM scratch AS base\nCOPY busybox /bin/busybox\n\
        FROM base AS production\nRUN [\"/bin/busybox\",\"sh\",\"-c\",\"echo prod > /p\"]\n\
        FROM base AS other\nRUN [\"/bin/busybox\",\"false\"]\n";
    for (who, mode) in [
        (As::Root, "privileged"),
        (As::User, "rootless"),
        (As::User, "rootless-strict"),
    ] {
        let ctx = user_context(dockerfile);
        let root = ctx.path().join("state").display().to_string();
        let image = format!("{registry}/bkd/modes:{mode}");
        let run = bkd_as(
            who,
            &[
                "build",
                "--mode",
                mode,
                "--root",
                &root,
                "--target",
                "production",
                "--push",
                "-t",
                &image,
                ".",
            ],
            ctx.path(),
            &[],
        );
        run.assert_ok();
        let (status, _) = manifest(registry, "bkd/modes", mode);
        assert!(
            status.contains("200"),
            "{mode}: {status}\n{}",
            run.explain()
        );
        assert_nothing_left(&root);
    }
}

/// An overlay mount at `point`, its layers in `dir`.
fn mount_overlay(dir: &Path, point: &Path) {
    for d in ["lower", "upper", "work"] {
        std::fs::create_dir_all(dir.join(d)).expect("layer dir");
    }
    std::fs::create_dir_all(point).expect("mount point");
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        dir.join("lower").display(),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    let status = std::process::Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &options])
        .arg(point)
        .status()
        .expect("mount (the tests run as root)");
    assert!(status.success(), "mount overlay on {}", point.display());
}

fn is_mounted(point: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(&point.display().to_string()))
}

/// Runs the guardian on `state` over a daemon that exits on its own at once
/// (its control pipe stays open, as while bkd runs).
fn guard_over(state: &Path) {
    let mut guardian = std::process::Command::new(env!("CARGO_BIN_EXE_bkd"))
        .arg("__bkd-guard")
        .arg("100")
        .arg(state)
        .args(["--", "/bin/true"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run the guardian");
    let control = guardian.stdin.take();
    let status = guardian.wait().expect("wait for the guardian");
    drop(control);
    assert!(status.success(), "guardian: {status}");
}

#[test]
fn the_guardian_detaches_overlays_left_below_its_state_dir_unless_another_daemon_holds_it() {
    use std::os::fd::AsRawFd;
    let work = tempfile::tempdir().expect("temp dir");
    let state = work.path().join("state");
    let point = state.join("runc-overlayfs/executor/x/rootfs");
    let volume = state.join("volume");
    mount_overlay(&work.path().join("layers"), &point);
    std::fs::create_dir_all(&volume).expect("volume dir");
    let tmpfs = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&volume)
        .status()
        .expect("mount tmpfs");
    assert!(tmpfs.success());
    let lock = std::fs::File::create(state.join("buildkitd.lock")).expect("lock file");

    // Another daemon holds the state dir: its mounts are not ours to touch.
    // SAFETY: flock on a descriptor this test owns.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    guard_over(&state);
    let kept = is_mounted(&point);
    // SAFETY: as above.
    unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_UN) };

    guard_over(&state);
    let detached = !is_mounted(&point);
    let volume_kept = is_mounted(&volume);
    unmount_below(work.path());
    assert!(
        kept,
        "an overlay under a state dir locked by another daemon was detached"
    );
    assert!(
        detached,
        "the overlay left below the state dir is still mounted"
    );
    assert!(volume_kept, "a mount that is not an overlay was detached");
}
