//! Progress state stays bounded in memory and linear in time whatever the
//! steps print: a daemon of the test's own with its step log limits off
//! (`BUILDKIT_STEP_LOG_MAX_SIZE=-1`, `BUILDKIT_STEP_LOG_MAX_SPEED=-1`)
//! sends 200 MB of step output, and a single 50 MB line, through each
//! view that keeps state. Bounds are generous; the times and peak RSS are
//! printed.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{context, nonce, stop_daemon, write, BUSYBOX_STAGE};

/// A buildkitd with no step log limits, stopped when dropped.
struct UnlimitedDaemon {
    child: std::process::Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl UnlimitedDaemon {
    fn start() -> UnlimitedDaemon {
        let dir = tempfile::Builder::new()
            .prefix("bkd-volume-daemon-")
            .tempdir()
            .expect("temp dir");
        let addr = format!("unix://{}", dir.path().join("buildkitd.sock").display());
        let log = std::fs::File::create(dir.path().join("buildkitd.log")).expect("log");
        let child = Command::new("buildkitd")
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--otel-socket-path")
            .arg(dir.path().join("otel.sock"))
            .args(["--addr", &addr])
            .env("BUILDKIT_STEP_LOG_MAX_SIZE", "-1")
            .env("BUILDKIT_STEP_LOG_MAX_SPEED", "-1")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start buildkitd (run scripts/setup.sh)");
        let daemon = UnlimitedDaemon { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new("buildctl")
                .args(["--addr", &daemon.addr, "debug", "workers"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return daemon;
            }
            assert!(Instant::now() < deadline, "buildkitd not ready in 60s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for UnlimitedDaemon {
    fn drop(&mut self) {
        stop_daemon(&mut self.child, self.dir.path());
    }
}

/// Wall time, peak RSS in MB and exit code of one bkd build, killed after
/// `limit`.
struct Measured {
    seconds: f64,
    rss_mb: f64,
    code: i32,
}

// The child is reaped by wait4 below, by pid, for its rusage.
#[allow(clippy::zombie_processes)]
fn measure(daemon: &UnlimitedDaemon, mode: &str, dir: &Path, limit: Duration) -> Measured {
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_bkd"))
        .args([
            "build",
            "--addr",
            &daemon.addr,
            &format!("--progress={mode}"),
            ".",
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run bkd");
    let pid = child.id() as i32;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waiting on the child spawned above, by pid.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        assert!(r == 0, "wait4 failed");
        if started.elapsed() > limit {
            // SAFETY: killing and reaping the child spawned above.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::wait4(pid, &mut status, 0, &mut usage);
            }
            panic!("bkd --progress={mode} took over {}s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Measured {
        seconds: started.elapsed().as_secs_f64(),
        rss_mb: usage.ru_maxrss as f64 / 1024.0,
        code: libc::WEXITSTATUS(status),
    }
}

fn step_context(run: &str) -> tempfile::TempDir {
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        &format!("{BUSYBOX_STAGE}FROM bb\nRUN {run} # {}\n", nonce()),
    );
    ctx
}

/// 64-byte lines, `mb` million bytes of them.
fn lines_step(mb: u32) -> String {
    format!(
        "yes 'a line of step output, sixty-four bytes long with its newline' | head -c {mb}000000"
    )
}

#[test]
fn log_volume_is_bounded_and_linear() {
    let daemon = UnlimitedDaemon::start();
    let limit = Duration::from_secs(90);
    let mut report = Vec::new();
    let mut run = |what: &str, mode: &str, step: &str| {
        let ctx = step_context(step);
        let m = measure(&daemon, mode, ctx.path(), limit);
        assert_eq!(m.code, 0, "{what} in {mode} failed");
        report.push(format!(
            "{what}, --progress={mode}: {:.1}s, peak RSS {:.0} MB",
            m.seconds, m.rss_mb
        ));
        m
    };
    let plain = run("200 MB of lines", "plain", &lines_step(200));
    let quiet_50 = run("50 MB of lines", "quiet", &lines_step(50));
    let quiet = run("200 MB of lines", "quiet", &lines_step(200));
    let tty = run("200 MB of lines", "tty", &lines_step(200));
    let line_quiet = run(
        "one 50 MB line",
        "quiet",
        "head -c 50000000 /dev/zero | tr '\\0' x; echo",
    );
    let line_tty = run(
        "one 50 MB line",
        "tty",
        "head -c 50000000 /dev/zero | tr '\\0' x; echo",
    );
    let report = report.join("\n");
    eprintln!("{report}");
    // Before: 115 s in tty and quiet for what plain did in 4.6 s, and 178 s
    // for the single line.
    for m in [&quiet, &tty] {
        assert!(m.seconds < 3.0 * plain.seconds + 10.0, "{report}");
    }
    // Linear: four times the output, not sixteen times the time.
    assert!(quiet.seconds < 8.0 * quiet_50.seconds + 5.0, "{report}");
    for m in [&line_quiet, &line_tty] {
        assert!(m.seconds < 30.0, "{report}");
    }
    for m in [&plain, &quiet, &tty, &line_quiet, &line_tty] {
        assert!(m.rss_mb < 200.0, "{report}");
    }
}
