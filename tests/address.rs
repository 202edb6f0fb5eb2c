//! Which daemon bkd's own commands use: `--addr` as given (waiting
//! `--daemon-timeout` for a sidecar to appear), `BUILDKIT_HOST` where a
//! daemon listens, and its own daemon when the variable names a socket
//! nothing serves (BuildKit's rootless base image sets one).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const DOCKERFILE: &str = "FROM scratch\nCOPY busybox /bin/busybox\n";

/// `bkd ARGS` with `BUILDKIT_HOST` set as given (or removed).
fn bkd_with_host(args: &[&str], cwd: &Path, host: Option<&str>) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bkd"));
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .env_remove("BUILDKIT_HOST");
    if let Some(h) = host {
        cmd.env("BUILDKIT_HOST", h);
    }
    let out = cmd.output().expect("run bkd");
    Run {
        cmd: format!("BUILDKIT_HOST={host:?} bkd {}", args.join(" ")),
        cwd: cwd.to_path_buf(),
        out,
    }
}

#[test]
fn buildkit_host_naming_a_socket_nothing_serves_is_noted_and_bkd_runs_its_own_daemon() {
    let ctx = context();
    write(ctx.path(), "Dockerfile", DOCKERFILE);
    let state = tempfile::tempdir().expect("state dir");
    let host = format!(
        "unix://{}",
        ctx.path()
            .join("run/user/1000/buildkit/buildkitd.sock")
            .display()
    );
    let out = ctx.path().join("out.tar");
    let run = bkd_with_host(
        &[
            "build",
            "--debug",
            "--root",
            &state.path().display().to_string(),
            "-o",
            &tar_output(&out),
            ".",
        ],
        ctx.path(),
        Some(&host),
    );
    run.assert_ok();
    let err = run.stderr();
    assert!(
        err.contains(&format!("nothing listens at BUILDKIT_HOST={host}"))
            && err.contains("buildkitd ready in"),
        "{}",
        run.explain()
    );
    assert!(tar_file(&out, "bin/busybox").is_some(), "{}", run.explain());
    unmount_below(state.path());
    let doctor = bkd_with_host(&["doctor"], ctx.path(), Some(&host));
    assert!(
        doctor.stdout().contains("[warn] address")
            && doctor.stdout().contains("nothing listens there"),
        "{}",
        doctor.explain()
    );
}

#[test]
fn buildkit_host_where_a_daemon_listens_is_used() {
    let ctx = context();
    write(ctx.path(), "Dockerfile", DOCKERFILE);
    let bed = bed();
    let out = ctx.path().join("out.tar");
    let run = bkd_with_host(
        &["build", "--debug", "-o", &tar_output(&out), "."],
        ctx.path(),
        Some(&bed.addr),
    );
    run.assert_ok();
    assert!(
        !run.stderr().contains("buildkitd ready in") && !run.stderr().contains("nothing listens"),
        "must build on the daemon BUILDKIT_HOST names\n{}",
        run.explain()
    );
    let doctor = bkd_with_host(&["doctor"], ctx.path(), Some(&bed.addr));
    assert!(
        doctor.stdout().contains(&format!(
            "[ok  ] address                   BUILDKIT_HOST={} (environment): a daemon answers",
            bed.addr
        )),
        "{}",
        doctor.explain()
    );
}

/// A buildkitd started by the test on a socket path chosen in advance.
struct LateDaemon {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Drop for LateDaemon {
    fn drop(&mut self) {
        stop_daemon(&mut self.child, self.dir.path());
    }
}

#[test]
fn addr_with_daemon_timeout_waits_for_a_sidecar_daemon_that_starts_later() {
    let ctx = context();
    write(ctx.path(), "Dockerfile", DOCKERFILE);
    let dir = tempfile::tempdir().expect("dir");
    let addr = format!("unix://{}", dir.path().join("buildkitd.sock").display());
    let out = ctx.path().join("out.tar");
    let bkd = Command::new(env!("CARGO_BIN_EXE_bkd"))
        .args(["build", "--addr", &addr, "--daemon-timeout", "90"])
        .args(["-o", &tar_output(&out), "."])
        .current_dir(ctx.path())
        .env_remove("BUILDKIT_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start bkd");
    std::thread::sleep(Duration::from_secs(2));
    let log = std::fs::File::create(dir.path().join("buildkitd.log")).expect("log");
    let child = Command::new("buildkitd")
        .arg("--root")
        .arg(dir.path().join("root"))
        .args(["--addr", &addr])
        .arg("--otel-socket-path")
        .arg(dir.path().join("otel.sock"))
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start buildkitd");
    let _daemon = LateDaemon { child, dir };
    let result = bkd.wait_with_output().expect("wait for bkd");
    let run = Run {
        cmd: format!("bkd build --addr {addr} --daemon-timeout 90"),
        cwd: ctx.path().to_path_buf(),
        out: result,
    };
    run.assert_ok();
    assert!(
        run.stderr()
            .contains(&format!("waiting up to 90s for buildkitd at {addr}")),
        "{}",
        run.explain()
    );
    assert!(tar_file(&out, "bin/busybox").is_some(), "{}", run.explain());
}

#[test]
fn addr_with_daemon_timeout_gives_up_with_exit_4_naming_the_address() {
    let dir = tempfile::tempdir().expect("dir");
    let addr = format!("unix://{}", dir.path().join("none.sock").display());
    let started = Instant::now();
    let run = bkd_with_host(
        &["debug", "workers", "--addr", &addr, "--daemon-timeout", "2"],
        dir.path(),
        None,
    );
    assert_eq!(run.code(), Some(4), "{}", run.explain());
    assert!(
        run.stderr()
            .lines()
            .last()
            .is_some_and(|l| l
                == format!("error: no buildkitd at {addr} after waiting 2s (--daemon-timeout)")),
        "{}",
        run.explain()
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}
