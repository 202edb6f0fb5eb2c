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
    let _ = std::fs::remove_file(log);
    assert!(kept.contains("bogus-flag"));
    // Only the log is kept, beside where the run dir was (BASE/bkd-X.log):
    // the run dir itself is gone.
    let log = Path::new(log);
    let in_run_dir = log
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|n| n.to_string_lossy().starts_with("bkd-"));
    assert!(
        !in_run_dir,
        "the log was kept in its run dir: {}",
        log.display()
    );
    assert!(
        !log.with_extension("").exists(),
        "the run dir of {} is left",
        log.display()
    );
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
    remove_kept_log(&run.stderr());
    assert_nothing_left("sleep 7391");
}

/// Starts a build stuck in `RUN sleep SECONDS`, waits until the step runs,
/// and returns the bkd process and the state dir marker.
fn stuck_build(who: As, seconds: &str) -> (std::process::Child, tempfile::TempDir, String) {
    stuck_build_env(who, seconds, &[])
}

/// [`stuck_build`] with extra environment.
fn stuck_build_env(
    who: As,
    seconds: &str,
    env: &[(&str, &str)],
) -> (std::process::Child, tempfile::TempDir, String) {
    let dockerfile = format!(
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\",\"sleep\",\"{seconds}\"]\n"
    );
    let ctx = user_context(&dockerfile);
    let root = ctx.path().join("state").display().to_string();
    let child = start_bkd_env(
        who,
        &["build", "--root", &root, "."],
        ctx.path(),
        ctx.path(),
        env,
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
    use std::os::unix::fs::PermissionsExt;
    // A runtime dir of its own, so the run dir bkd makes is the only one.
    let xdg = user_dir();
    std::fs::set_permissions(xdg.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let base = xdg.path().join("buildkit");
    let xdg_env = xdg.path().display().to_string();
    let env = [("XDG_RUNTIME_DIR", xdg_env.as_str())];
    let listing = || -> Vec<String> {
        std::fs::read_dir(&base)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (mut child, _ctx, root) = stuck_build_env(As::User, "8231", &env);
    let runs = listing();
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
    // The guardian takes the run dir (log, sockets, rootlesskit's state)
    // with it.
    assert_eq!(runs.len(), 1, "run dirs while building: {runs:?}");
    assert!(
        wait_for(Duration::from_secs(3), || listing().is_empty()),
        "left after SIGKILL of bkd: {:?}",
        listing()
    );
}

#[test]
fn a_daemon_killed_mid_build_is_reported_at_once_and_only_its_own_traces_go() {
    // Someone else's overlay below the state dir (a volume, another
    // runtime's snapshot): not the daemon's, so it must stay mounted.
    let dockerfile =
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\",\"sleep\",\"8353\"]\n";
    let ctx = user_context(dockerfile);
    let root = ctx.path().join("state").display().to_string();
    let foreign = ctx.path().join("state/foreign/mnt");
    mount_overlay(&ctx.path().join("layers"), &foreign);
    let mut child = start_bkd(
        As::Root,
        &["build", "--root", &root, "."],
        ctx.path(),
        ctx.path(),
    );
    let running = wait_for(Duration::from_secs(60), || {
        !processes_matching("sleep 8353").is_empty()
    });
    let daemon: Vec<i32> = processes_matching(&root)
        .iter()
        .filter(|p| p.contains("buildkitd --root") && !p.contains("__bkd-guard"))
        .filter_map(|p| p.split(':').next()?.parse().ok())
        .collect();
    let err = std::fs::read_to_string(ctx.path().join("stderr")).unwrap_or_default();
    assert!(
        running && daemon.len() == 1,
        "{err} {:?}",
        processes_matching(&root)
    );
    let killed = Instant::now();
    // SAFETY: killing the buildkitd this test's bkd started.
    unsafe { libc::kill(daemon[0], libc::SIGKILL) };
    let status = child.wait().expect("wait");
    let err = std::fs::read_to_string(ctx.path().join("stderr")).unwrap_or_default();
    remove_kept_log(&err);
    let foreign_kept = is_mounted(&foreign);
    // The killed daemon's mounts (snapshots, the step's rootfs) and runc
    // entries lived in the guardian's namespaces: none reach the host.
    let left = mounts_below(Path::new(&root));
    let entries = runc_entries_below(&root);
    // Taken down either way: the test bed is long-lived.
    unmount_below(ctx.path());
    assert!(killed.elapsed() < Duration::from_secs(10), "{err}");
    assert_eq!(status.code(), Some(4), "{err}");
    assert!(
        err.contains("buildkitd exited unexpectedly (killed by signal 9)"),
        "{err}"
    );
    assert_nothing_left("sleep 8353");
    assert!(
        foreign_kept,
        "an overlay that is not the daemon's was detached"
    );
    assert_eq!(
        left,
        vec![foreign.display().to_string()],
        "mounts left below the state dir"
    );
    assert!(entries.is_empty(), "runc entries left: {entries:?}");
}

/// Mount points below `dir` in this process's mount table.
fn mounts_below(dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|p| p.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

/// The containers in root's runc state dir whose files lie below `dir`.
fn runc_entries_below(dir: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/run/runc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("state.json"))
                .is_ok_and(|s| s.contains(&format!("{dir}/")))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The guardian bkd started: the `__bkd-guard` process among `marker`'s
/// whose parent is not a guardian itself.
fn top_guardian(marker: &str) -> Option<i32> {
    let guardians: Vec<i32> = processes_matching(marker)
        .iter()
        .filter(|p| p.contains("__bkd-guard"))
        .filter_map(|p| p.split(':').next()?.parse().ok())
        .collect();
    guardians.iter().copied().find(|g| {
        let stat = std::fs::read_to_string(format!("/proc/{g}/stat")).unwrap_or_default();
        let parent: i32 = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        !guardians.contains(&parent)
    })
}

#[test]
fn sigkill_of_the_guardian_takes_the_build_steps_down_in_every_mode() {
    for (who, seconds) in [
        (As::Root, "8611"),
        (As::User, "8612"),
        (As::UserMaskedProc, "8613"),
    ] {
        let (mut child, ctx, root) = stuck_build(who, seconds);
        let guardian = top_guardian(&root).expect("guardian pid");
        // SAFETY: killing the guardian of the bkd this test started.
        unsafe { libc::kill(guardian, libc::SIGKILL) };
        let status = child.wait().expect("wait");
        let err = std::fs::read_to_string(ctx.path().join("stderr")).unwrap_or_default();
        remove_kept_log(&err);
        let step = format!("sleep {seconds}");
        let gone = wait_for(Duration::from_secs(3), || {
            processes_matching(&step).is_empty() && processes_matching(&root).is_empty()
        });
        let left = (processes_matching(&step), mounts_below(ctx.path()));
        for p in processes_matching(&step) {
            if let Some(pid) = p.split(':').next().and_then(|p| p.parse::<i32>().ok()) {
                // SAFETY: the step this test's build started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        unmount_below(ctx.path());
        assert!(gone, "{who:?}: left running: {:?}\n{err}", left.0);
        assert!(left.1.is_empty(), "{who:?}: mounts left: {:?}", left.1);
        assert_eq!(status.code(), Some(4), "{who:?}: {err}");
    }
}

#[test]
fn a_state_dir_held_by_a_daemon_whose_bkd_was_killed_is_waited_for() {
    for (who, seconds) in [(As::Root, "8621"), (As::User, "8622"), (As::Root, "8623")] {
        let (mut child, ctx, root) = stuck_build(who, seconds);
        let pid = bkd_pid(&root).expect("bkd pid");
        // SAFETY: signalling the bkd process this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = child.wait();
        // At once, while the guardian is still stopping the first daemon.
        write(ctx.path(), "Dockerfile", PID_DOCKERFILE);
        let next = bkd_as(who, &["build", "--root", &root, "."], ctx.path(), &[]);
        assert!(next.code() == Some(0), "{who:?}: {}", next.explain());
        assert_nothing_left(&format!("sleep {seconds}"));
        assert_nothing_left(&root);
    }
}

#[test]
fn run_dirs_are_private_stale_ones_go_and_only_a_failed_daemon_keeps_its_log() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let xdg = user_dir();
    std::fs::set_permissions(xdg.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let base = xdg.path().join("buildkit");
    let xdg_env = xdg.path().display().to_string();
    let env = [("XDG_RUNTIME_DIR", xdg_env.as_str())];
    let mode = |p: &Path| std::fs::metadata(p).map(|m| m.mode() & 0o777).unwrap_or(0);
    let listing = || {
        let mut names: Vec<String> = std::fs::read_dir(&base)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };

    // The base bkd makes and the run dir in it are private; a Ctrl-C keeps
    // no log and leaves nothing.
    let (mut child, ctx, root) = stuck_build_env(As::User, "8631", &env);
    let runs = listing();
    let run_modes: Vec<u32> = runs.iter().map(|r| mode(&base.join(r))).collect();
    let base_mode = mode(&base);
    let pid = bkd_pid(&root).expect("bkd pid");
    // SAFETY: signalling the bkd process this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    let err = std::fs::read_to_string(ctx.path().join("stderr")).unwrap_or_default();
    assert_eq!(status.code(), Some(143), "{err}");
    assert_eq!(base_mode, 0o700, "{} made by bkd", base.display());
    assert_eq!(run_modes, [0o700], "run dirs {runs:?}");
    assert!(!err.contains("log kept"), "Ctrl-C keeps no log: {err}");
    assert_eq!(listing(), Vec::<String>::new(), "left after Ctrl-C");

    // Left by earlier runs: dead ones go, live ones stay.
    let dir = |name: &str| {
        let d = base.join(name);
        std::fs::create_dir_all(&d).expect("dir");
        d
    };
    let dead_lock = dir("bkd-deadLk");
    std::fs::write(dead_lock.join("bkd.lock"), "").expect("lock");
    let live_lock = dir("bkd-liveLk");
    let held = std::fs::File::create(live_lock.join("bkd.lock")).expect("lock");
    // SAFETY: flock on a descriptor this test owns.
    assert_eq!(
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&held), libc::LOCK_EX) },
        0
    );
    let dead_sock = dir("bkd-deadSk");
    drop(std::os::unix::net::UnixListener::bind(dead_sock.join("buildkitd.sock")).expect("bind"));
    let live_sock = dir("bkd-liveSk");
    let _listener =
        std::os::unix::net::UnixListener::bind(live_sock.join("buildkitd.sock")).expect("bind");
    chown_tree(xdg.path());

    // A failing step keeps no log either.
    let failing =
        user_context("FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\",\"false\"]\n");
    let state = failing.path().join("state").display().to_string();
    let run = bkd_as(
        As::User,
        &["build", "--root", &state, "."],
        failing.path(),
        &env,
    );
    assert_eq!(run.code(), Some(1), "{}", run.explain());
    assert!(!run.stderr().contains("log kept"), "{}", run.explain());
    assert_eq!(listing(), ["bkd-liveLk", "bkd-liveSk"]);
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
