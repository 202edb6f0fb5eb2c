//! buildkitd's lifecycle when bkd runs it: the mode decision, spawning it
//! (directly or through rootlesskit) on a private socket, readiness, its
//! log, and stopping it so that nothing is left behind. Knows nothing of
//! builds or Dockerfiles.

pub mod advice;
pub mod config;
pub mod probe;
pub mod process;
pub mod slots;
pub mod state;

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::transport::{Address, TlsOptions};
pub use probe::{Mode, ModeRequest};
use process::Child;

/// How to spawn the daemon, resolved from flags and environment.
#[derive(Debug, Clone)]
pub struct SpawnPlan {
    pub mode: Mode,
    pub buildkitd: String,
    pub rootlesskit: String,
    pub root: PathBuf,
    /// Extra daemon flags (`BUILDKITD_FLAGS`, `--buildkitd-flag`).
    pub flags: Vec<String>,
    pub ready_timeout: Duration,
    pub stop_timeout: Duration,
    /// Echo the daemon log live to stderr.
    pub echo_log: bool,
    /// Where to keep the daemon log; default: in the per-run directory.
    pub log_file: Option<PathBuf>,
    /// A rootless daemon gets a PID namespace of its own (rootlesskit
    /// `--pidns`): only where a fresh /proc can be mounted, since runc
    /// needs one that matches its namespace.
    pub pid_namespace: bool,
    /// Registry settings for the daemon's buildkitd.toml (plain HTTP,
    /// mirrors, CAs).
    pub registries: config::Registries,
    /// Extra environment for buildkitd (the step log limits).
    pub env: Vec<(String, String)>,
}

/// The daemon failed to come up.
#[derive(Debug)]
pub struct StartFailure {
    pub summary: String,
    pub log_path: PathBuf,
    pub log_tail: String,
    pub advice: Option<advice::Advice>,
}

impl std::error::Error for StartFailure {}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.summary)?;
        if let Some(a) = &self.advice {
            write!(f, "\n{}", a.render())?;
        }
        if !self.log_path.as_os_str().is_empty() {
            write!(
                f,
                "\nfull daemon log: {}",
                crate::text::escape_path(&self.log_path)
            )?;
        }
        Ok(())
    }
}

/// A daemon bkd started and owns.
pub struct RunningDaemon {
    pub address: Address,
    pub mode: Mode,
    pub log_path: PathBuf,
    /// Spawn to ready.
    pub ready_after: Duration,
    child: Child,
    run_dir: Option<state::RunDir>,
    echo: Option<tokio::task::JoinHandle<()>>,
    stop_timeout: Duration,
}

/// Names inside the per-run directory.
const SOCKET: &str = "buildkitd.sock";
const NOTIFY_SOCKET: &str = "notify.sock";
const TRACE_SOCKET: &str = "otel-grpc.sock";
const ROOTLESSKIT_STATE: &str = "rootlesskit";
const CONFIG: &str = "buildkitd.toml";

/// The daemon's command line for a mode: buildkitd directly, or through
/// rootlesskit, with bkd's socket, state dir and trace socket first and the
/// user's flags after them (so a user flag wins where buildkitd keeps the
/// last value).
pub fn command_line(plan: &SpawnPlan, run_dir: &Path) -> Vec<String> {
    let mut args = Vec::new();
    if plan.mode.is_rootless() {
        args.push(plan.rootlesskit.clone());
        args.push("--state-dir".into());
        args.push(run_dir.join(ROOTLESSKIT_STATE).display().to_string());
        if plan.pid_namespace {
            // The daemon and its steps in a PID namespace whose first
            // process is rootlesskit's: whichever of bkd's processes is
            // killed, the kernel takes the build down with it.
            args.push("--pidns".into());
        }
    }
    args.push(plan.buildkitd.clone());
    let flags = if plan.registries.is_empty() {
        plan.flags.clone()
    } else {
        args.push("--config".into());
        args.push(run_dir.join(CONFIG).display().to_string());
        config::without_config_flag(&plan.flags)
    };
    if plan.mode.is_rootless() {
        // buildkitd otherwise decides from $USER, which pods may not set.
        args.push("--rootless".into());
    }
    args.push("--root".into());
    args.push(plan.root.display().to_string());
    args.push("--addr".into());
    args.push(format!("unix://{}", run_dir.join(SOCKET).display()));
    if !flags.iter().any(|f| f.starts_with("--otel-socket-path")) {
        args.push("--otel-socket-path".into());
        args.push(run_dir.join(TRACE_SOCKET).display().to_string());
    }
    if plan.mode == Mode::RootlessStrict && !flags.iter().any(|f| is_no_sandbox_flag(f)) {
        args.push("--oci-worker-no-process-sandbox".into());
    }
    args.extend(flags);
    args
}

/// `--oci-worker-no-process-sandbox`, alone or `=true`.
pub fn is_no_sandbox_flag(flag: &str) -> bool {
    flag == "--oci-worker-no-process-sandbox" || flag == "--oci-worker-no-process-sandbox=true"
}

/// The last `n` lines of the daemon log.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Lines shown when the daemon fails.
pub const LOG_TAIL_LINES: usize = 100;

/// How long a state directory held by a daemon that is being stopped
/// (its bkd is gone) is waited for before it counts as in use.
const DYING_HOLDER_WAIT: Duration = Duration::from_secs(15);

/// Waits until no other daemon holds `root`: at once when it is free,
/// briefly when its holder is a daemon whose bkd died and that its guardian
/// is stopping (or a holder that just went), else fails naming the holder.
async fn wait_for_state_dir(root: &Path) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + DYING_HOLDER_WAIT;
    let mut waited = false;
    loop {
        let Some((pid, cmdline)) = state::lock_holder(root) else {
            if waited {
                tracing::debug!(root = %root.display(), "the state dir's last holder is gone");
            }
            return Ok(());
        };
        let dying = pid == 0 || state::is_orphaned_bkd_daemon(pid);
        if !dying || tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "state directory {} is in use by another buildkitd (pid {pid}: {})",
                crate::text::escape_path(root),
                crate::text::escape_str(&cmdline)
            ));
        }
        if !waited {
            tracing::debug!(pid, "state dir held by a daemon being stopped; waiting");
            waited = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts buildkitd as planned and waits until it answers.
pub async fn start(plan: &SpawnPlan) -> Result<RunningDaemon, StartFailure> {
    let started = Instant::now();
    let early = |summary: String| StartFailure {
        summary,
        log_path: PathBuf::new(),
        log_tail: String::new(),
        advice: None,
    };
    wait_for_state_dir(&plan.root)
        .await
        .map_err(|summary| StartFailure {
            advice: Some(advice::STATE_DIR_LOCKED),
            ..early(summary)
        })?;
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    for dir in state::sweep_stale_run_dirs(uid) {
        tracing::debug!(dir = %dir.display(), "removed the run dir an earlier bkd left");
    }
    let run_dir = state::run_dir(uid).map_err(early)?;
    let dir = run_dir.dir.path().to_path_buf();
    let (log, log_path) = match &plan.log_file {
        Some(path) => (
            crate::outfile::open_log(path).map_err(|e| {
                early(format!(
                    "cannot write the daemon log {}: {}",
                    crate::text::escape_path(path),
                    e
                ))
            })?,
            path.clone(),
        ),
        None => {
            let path = dir.join("buildkitd.log");
            let file = std::fs::OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
                .map_err(|e| {
                    early(format!(
                        "cannot create the daemon log {}: {e}",
                        crate::text::escape_path(&path)
                    ))
                })?;
            (file, path)
        }
    };
    let log_err = log
        .try_clone()
        .map_err(|e| early(format!("cannot share the daemon log: {e}")))?;
    if !plan.registries.is_empty() {
        let base = config::flag_value(&plan.flags)
            .or_else(|| config::default_path(plan.mode.is_rootless()));
        let text = config::with_registries(base.as_deref(), &plan.registries).map_err(early)?;
        let path = dir.join(CONFIG);
        std::fs::write(&path, text).map_err(|e| {
            early(format!(
                "cannot write {}: {e}",
                crate::text::escape_path(&path)
            ))
        })?;
    }
    let notify_path = dir.join(NOTIFY_SOCKET);
    let notify = tokio::net::UnixDatagram::bind(&notify_path).map_err(|e| {
        early(format!(
            "cannot create {}: {e}",
            crate::text::escape_path(&notify_path)
        ))
    })?;

    let args = command_line(plan, &dir);
    tracing::debug!(mode = plan.mode.name(), command = %args.join(" "), "starting buildkitd");
    let rootless_runtime = plan.mode.is_rootless().then(|| dir.clone());
    let guard = process::GuardPlan {
        grace: plan.stop_timeout,
        state_dir: plan.root.clone(),
        run_dir: dir.clone(),
        lock_fd: -1,
        isolate: plan.mode == Mode::Privileged,
    };
    let child = Child::spawn(&args, &guard, Some(&run_dir.lock), |cmd| {
        cmd.stdout(log)
            .stderr(log_err)
            .env("NOTIFY_SOCKET", &notify_path)
            .envs(plan.env.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = rootless_runtime {
            // buildkitd puts its own sockets under XDG_RUNTIME_DIR when rootless.
            cmd.env("XDG_RUNTIME_DIR", dir);
        }
    })
    .map_err(|e| early(format!("cannot start the daemon guardian: {e}")))?;
    let echo = plan
        .echo_log
        .then(|| tokio::spawn(echo_log(log_path.clone())));
    let address = Address::Unix(dir.join(SOCKET));
    let mut daemon = RunningDaemon {
        address,
        mode: plan.mode,
        log_path,
        ready_after: Duration::ZERO,
        child,
        run_dir: Some(run_dir),
        echo,
        stop_timeout: plan.stop_timeout,
    };
    match wait_ready(&daemon, notify, plan.ready_timeout).await {
        Ok(()) => {
            daemon.ready_after = started.elapsed();
            Ok(daemon)
        }
        Err(summary) => {
            let log_tail = log_tail(&daemon.log_path, LOG_TAIL_LINES);
            let log_path = daemon.stop(true).await;
            Err(StartFailure {
                summary,
                advice: advice::classify(&log_tail),
                log_path,
                log_tail,
            })
        }
    }
}

/// Ready when buildkitd says READY=1 on the notify socket or, failing
/// that, when its socket answers ListWorkers; fails as soon as the process
/// exits or the deadline passes.
async fn wait_ready(
    daemon: &RunningDaemon,
    notify: tokio::net::UnixDatagram,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let notified = async {
        let mut buf = [0u8; 512];
        loop {
            match notify.recv(&mut buf).await {
                Ok(n) if buf[..n].split(|b| *b == b'\n').any(|l| l == b"READY=1") => return,
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "notify socket failed; polling instead");
                    std::future::pending::<()>().await;
                }
            }
        }
    };
    let polled = async {
        // Only a fallback: a daemon that never notifies is still found.
        let mut wait = Duration::from_millis(250);
        loop {
            tokio::time::sleep(wait).await;
            if answers(&daemon.address).await {
                return;
            }
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    };
    tokio::select! {
        _ = notified => {}
        _ = polled => {}
        status = daemon.child.exited() => {
            return Err(format!("buildkitd exited during startup ({})", describe_exit(status)));
        }
        _ = tokio::time::sleep_until(deadline) => {
            return Err(format!(
                "buildkitd did not become ready within {}s (--daemon-timeout, or BUILDCTL_CONNECT_RETRIES_MAX)",
                timeout.as_secs_f64()
            ));
        }
    }
    // READY is sent once the listener exists; confirm the API answers.
    loop {
        if answers(&daemon.address).await {
            return Ok(());
        }
        if let Some(status) = daemon.child.exit_status() {
            return Err(format!(
                "buildkitd exited during startup ({})",
                describe_exit(status)
            ));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "buildkitd did not answer within {}s (--daemon-timeout)",
                timeout.as_secs_f64()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn answers(address: &Address) -> bool {
    if let Address::Unix(p) = address {
        if !p.exists() {
            return false;
        }
    }
    let attempt = async {
        let daemon = crate::client::Daemon::connect(address, &TlsOptions::default()).await?;
        daemon.workers().await
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), attempt).await,
        Ok(Ok(w)) if !w.is_empty()
    )
}

/// "exit status 1", "killed by signal 9".
pub fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    }
}

/// A daemon log line as echoed on stderr: prefixed `buildkitd: `, unless
/// buildkitd already put its name in front (its own fatal messages).
fn daemon_log_line(line: &str) -> String {
    let line = crate::text::one_line(line);
    if line.starts_with("buildkitd: ") {
        line
    } else {
        format!("buildkitd: {line}")
    }
}

/// Copies new daemon log lines to stderr, prefixed, until aborted.
async fn echo_log(path: PathBuf) {
    let mut offset = 0u64;
    let mut partial = String::new();
    loop {
        let chunk = tokio::task::spawn_blocking({
            let path = path.clone();
            move || -> std::io::Result<Vec<u8>> {
                let mut f = std::fs::File::open(&path)?;
                f.seek(SeekFrom::Start(offset))?;
                let mut buf = Vec::new();
                f.read_to_end(&mut buf)?;
                Ok(buf)
            }
        })
        .await;
        if let Ok(Ok(buf)) = chunk {
            offset += buf.len() as u64;
            partial.push_str(&String::from_utf8_lossy(&buf));
            while let Some(end) = partial.find('\n') {
                eprintln!("{}", daemon_log_line(&partial[..end]));
                partial.drain(..=end);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl RunningDaemon {
    /// Resolves with the exit status if the daemon ends on its own.
    pub async fn exited(&self) -> ExitStatus {
        self.child.exited().await
    }

    /// The daemon's pid (rootlesskit's when rootless).
    pub fn pid(&self) -> u32 {
        self.child.pid
    }

    /// Stops the daemon and everything it started, and removes the per-run
    /// directory. With `keep_log` (the daemon itself failed) its log is
    /// kept beside the directory, as `bkd-XXXXXX.log`. Returns where the
    /// log is now.
    pub async fn stop(&mut self, keep_log: bool) -> PathBuf {
        tracing::debug!("stopping buildkitd");
        let status = self.child.stop(self.stop_timeout).await;
        tracing::debug!(
            status = status.map(describe_exit).unwrap_or_default(),
            "buildkitd stopped"
        );
        if let Some(echo) = self.echo.take() {
            // Let the last lines through before the echo ends.
            tokio::time::sleep(Duration::from_millis(150)).await;
            echo.abort();
        }
        if let Some(run_dir) = self.run_dir.take() {
            let dir = run_dir.dir.path().to_path_buf();
            if keep_log && self.log_path.starts_with(&dir) {
                let kept = dir.with_extension("log");
                match std::fs::rename(&self.log_path, &kept) {
                    Ok(()) => self.log_path = kept,
                    Err(e) => tracing::debug!(error = %e, "cannot keep the daemon log"),
                }
            }
            if let Err(e) = run_dir.dir.close() {
                tracing::debug!(error = %e, "cannot remove the daemon's runtime dir");
            }
            drop(run_dir.lock);
        }
        self.log_path.clone()
    }
}
