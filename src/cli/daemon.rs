//! Which daemon a command runs on: the one named by `--addr`, or one bkd
//! spawns for the command (the default), with its flags resolved, the mode
//! chosen, signals and crashes handled, and the daemon stopped afterwards.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::{DaemonSource, GlobalArgs};
use crate::client::Daemon;
use crate::daemon::probe::{self, Probes, RealHost};
use crate::daemon::{self, advice, Mode, ModeRequest, RunningDaemon, SpawnPlan};
use crate::error::{Error, Result};
use crate::transport::Address;

/// Flags for the daemon bkd spawns when no `--addr` is given.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Spawned daemon (when no --addr is given)")]
pub struct DaemonArgs {
    /// How to run buildkitd
    #[arg(
        long,
        env = "BKD_MODE",
        value_enum,
        default_value = "auto",
        global = true
    )]
    pub mode: ModeRequest,

    /// buildkitd state directory [default: /var/lib/buildkit as root, ~/.local/share/buildkit otherwise]
    #[arg(long, env = "BKD_ROOT", global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Extra buildkitd flag, after those in BUILDKITD_FLAGS (repeatable)
    #[arg(
        long = "buildkitd-flag",
        global = true,
        allow_hyphen_values = true,
        value_name = "FLAG"
    )]
    pub buildkitd_flags: Vec<String>,

    /// Seconds to wait for buildkitd to become ready [default: 120, or what
    /// BUILDCTL_CONNECT_RETRIES_MAX allows buildctl-daemonless.sh]
    #[arg(long, global = true, value_name = "SECONDS")]
    pub daemon_timeout: Option<u64>,

    /// Seconds between SIGTERM and SIGKILL when stopping buildkitd
    #[arg(long, global = true, default_value_t = 10, value_name = "SECONDS")]
    pub stop_timeout: u64,

    /// Keep the buildkitd log in FILE (default: kept beside the runtime dir only when the daemon fails)
    #[arg(long, env = "BKD_DAEMON_LOG", global = true, value_name = "FILE")]
    pub daemon_log: Option<PathBuf>,

    /// The state dir is shared by concurrent jobs (a volume several pods mount): take the
    /// first free slot, STATE_DIR/slot-N, and hold it while bkd runs
    #[arg(long, env = "BKD_STATE_SLOTS", global = true)]
    pub state_slots: bool,
}

/// The readiness deadline when neither flag nor environment sets one.
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The time `buildctl-daemonless.sh` waits for a daemon given
/// `BUILDCTL_CONNECT_RETRIES_MAX`: its sleeps (100 ms, growing 20 ms per
/// try) plus one buildctl call per try, taken as 50 ms.
pub fn script_wait(retries: u64) -> Duration {
    let retries = retries.min(100_000);
    let sleeps_ms = (0..=retries).map(|t| 100 + 20 * t).sum::<u64>();
    let calls = retries + 2;
    Duration::from_millis(sleeps_ms + 50 * calls)
}

impl DaemonArgs {
    /// `--daemon-timeout`, else `BUILDCTL_CONNECT_RETRIES_MAX` mapped to
    /// the script's wait, else the default.
    pub fn ready_timeout(&self) -> Result<Duration> {
        if let Some(s) = self.daemon_timeout {
            return Ok(Duration::from_secs(s));
        }
        match std::env::var("BUILDCTL_CONNECT_RETRIES_MAX") {
            Ok(v) if !v.trim().is_empty() => {
                v.trim().parse::<u64>().map(script_wait).map_err(|_| {
                    Error::Usage(format!(
                        "invalid BUILDCTL_CONNECT_RETRIES_MAX {v:?}: expected a whole number"
                    ))
                })
            }
            _ => Ok(DEFAULT_READY_TIMEOUT),
        }
    }

    /// The requested mode as typed.
    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            ModeRequest::Auto => "auto",
            ModeRequest::Privileged => "privileged",
            ModeRequest::Rootless => "rootless",
            ModeRequest::RootlessStrict => "rootless-strict",
        }
    }
}

/// Splits `BUILDKITD_FLAGS` like a shell: whitespace separates words,
/// single and double quotes group, backslash escapes.
pub fn shell_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err("trailing backslash".into()),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// The daemon flags from `BUILDKITD_FLAGS` then `--buildkitd-flag`.
fn daemon_flags(args: &DaemonArgs) -> Result<Vec<String>> {
    let mut flags = match std::env::var("BUILDKITD_FLAGS") {
        Ok(text) => shell_words(&text)
            .map_err(|e| Error::Usage(format!("invalid BUILDKITD_FLAGS {text:?}: {e}")))?,
        Err(_) => Vec::new(),
    };
    flags.extend(args.buildkitd_flags.iter().cloned());
    Ok(flags)
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// The binaries to run: `BUILDKITD` and `ROOTLESSKIT`, as the script reads them.
pub fn binaries() -> (String, String) {
    (
        env_or("BUILDKITD", "buildkitd"),
        env_or("ROOTLESSKIT", "rootlesskit"),
    )
}

/// The decision for this environment: the probes, and the chosen mode or
/// why no mode can run. Flags asking for no sandbox count as a request for
/// rootless-strict, as the pipeline recipes set them.
pub fn choose(args: &DaemonArgs) -> Result<(Probes, Result<probe::Decision, String>)> {
    let flags = daemon_flags(args)?;
    let (buildkitd, rootlesskit) = binaries();
    let probes = Probes::gather(&RealHost, &buildkitd, &rootlesskit);
    Ok(decide_with(args, &flags, probes))
}

fn decide_with(
    args: &DaemonArgs,
    flags: &[String],
    probes: Probes,
) -> (Probes, Result<probe::Decision, String>) {
    let mut request = args.mode;
    if request == ModeRequest::Auto
        && probes.uid != 0
        && flags.iter().any(|f| daemon::is_no_sandbox_flag(f))
    {
        request = ModeRequest::RootlessStrict;
    }
    let decision = probe::decide(request, &probes);
    (probes, decision)
}

/// SIGINT and SIGTERM, listened to for the whole command.
pub struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    pub fn install() -> Result<Signals> {
        let listen = |kind| {
            signal(kind).map_err(|e| Error::Daemon(format!("cannot listen for signals: {e}")))
        };
        Ok(Signals {
            int: listen(SignalKind::interrupt())?,
            term: listen(SignalKind::terminate())?,
        })
    }

    /// Resolves with the signal number of the first one received.
    pub async fn received(&mut self) -> i32 {
        tokio::select! {
            _ = self.int.recv() => libc::SIGINT,
            _ = self.term.recv() => libc::SIGTERM,
        }
    }
}

/// Runs `job` until it ends or a signal arrives; dropping the job cancels
/// its gRPC calls, which cancels the solve in the daemon.
pub(super) async fn interruptible<T>(
    signals: &mut Signals,
    job: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::select! {
        r = job => r,
        sig = signals.received() => Err(Error::Interrupted(sig)),
    }
}

/// Prints the last lines of the daemon log to stderr.
fn show_log_tail(tail: &str) {
    eprintln!(
        "----- buildkitd log (last {} lines) -----",
        daemon::LOG_TAIL_LINES
    );
    for line in tail.lines() {
        eprintln!("{}", crate::text::one_line(line));
    }
    eprintln!("-----");
}

async fn spawn(plan: &SpawnPlan, signals: &mut Signals, debug: bool) -> Result<RunningDaemon> {
    let started = interruptible(signals, async {
        daemon::start(plan).await.map_err(|failure| {
            if !failure.log_tail.is_empty() {
                show_log_tail(&failure.log_tail);
            }
            Error::DaemonStart(failure)
        })
    })
    .await?;
    if debug {
        eprintln!(
            "bkd: buildkitd ready in {:.2}s ({} mode, pid {}, socket {}, log {})",
            started.ready_after.as_secs_f64(),
            started.mode.name(),
            started.pid(),
            started.address,
            crate::text::escape_path(&started.log_path)
        );
    }
    Ok(started)
}

/// What a job on the spawned daemon came to: its result, and whether the
/// daemon itself failed (then its log is worth keeping).
struct Outcome<T> {
    result: Result<T>,
    daemon_failed: bool,
}

/// Runs `job` on the spawned daemon, racing it against signals and the
/// daemon's own exit.
async fn on_spawned<T, Fut>(
    spawned: &RunningDaemon,
    signals: &mut Signals,
    job: &mut impl FnMut(Daemon) -> Fut,
) -> Outcome<T>
where
    Fut: Future<Output = Result<T>>,
{
    let work = async {
        let daemon = Daemon::connect(&spawned.address, &Default::default()).await?;
        job(daemon).await
    };
    let crash = |status| Outcome {
        result: Err(crashed(spawned, status)),
        daemon_failed: true,
    };
    let result = tokio::select! {
        r = interruptible(signals, work) => r,
        status = spawned.exited() => return crash(status),
    };
    // A lost connection is usually the daemon dying; say so if it did.
    if let Err(Error::Daemon(_) | Error::Session(_) | Error::Transport(_)) = &result {
        if let Ok(status) = tokio::time::timeout(Duration::from_secs(2), spawned.exited()).await {
            return crash(status);
        }
    }
    Outcome {
        result,
        daemon_failed: false,
    }
}

/// The error for a daemon that ended on its own, with its log tail shown.
fn crashed(spawned: &RunningDaemon, status: std::process::ExitStatus) -> Error {
    let tail = daemon::log_tail(&spawned.log_path, daemon::LOG_TAIL_LINES);
    show_log_tail(&tail);
    let mut message = format!(
        "buildkitd exited unexpectedly ({})",
        daemon::describe_exit(status)
    );
    if let Some(a) = advice::classify(&tail) {
        message = format!("{message}\n{}", a.render());
    }
    // The log's path is in the "kept" line.
    Error::Daemon(message)
}

/// Adds the advice for a recognised failure to a failed build's message.
pub(super) fn with_advice(e: Error) -> Error {
    match e {
        Error::BuildFailed { message, step_logs } => {
            let found = advice::classify(&step_logs).or_else(|| advice::classify(&message));
            let message = match found {
                Some(a) => format!("{message}\n{}", a.render()),
                None => message,
            };
            Error::BuildFailed { message, step_logs }
        }
        other => other,
    }
}

fn is_sandbox_failure(e: &Error) -> bool {
    matches!(e, Error::BuildFailed { step_logs, .. }
        if advice::classify(step_logs) == Some(advice::PROCFS_MOUNT))
}

/// `--daemon-timeout` as given: with an address, how long to wait for a
/// daemon to appear there (a sidecar starting alongside); unset, a missing
/// daemon is an error at once.
fn args_timeout(global: &GlobalArgs) -> Option<Duration> {
    global.daemon.daemon_timeout.map(Duration::from_secs)
}

/// Waits until something listens at `addr`, up to `timeout`.
async fn wait_for_listener(addr: &str, timeout: Duration) -> Result<()> {
    let Ok(address) = Address::parse(addr) else {
        // The connection names the malformed address.
        return Ok(());
    };
    let started = std::time::Instant::now();
    let mut told = false;
    loop {
        let probe = address.clone();
        if tokio::task::spawn_blocking(move || super::listens(&probe))
            .await
            .unwrap_or(false)
        {
            return Ok(());
        }
        let waited = started.elapsed();
        if waited >= timeout {
            return Err(Error::Daemon(format!(
                "no buildkitd at {} after waiting {}s (--daemon-timeout)",
                crate::text::escape_str(addr),
                timeout.as_secs()
            )));
        }
        if !told && waited >= Duration::from_secs(1) {
            eprintln!(
                "bkd: waiting up to {}s for buildkitd at {}",
                timeout.as_secs(),
                crate::text::escape_str(addr)
            );
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a command asks of the daemon it runs on.
#[derive(Debug, Default)]
pub struct DaemonNeeds {
    /// Registries to reach over plain HTTP; only a spawned daemon can be
    /// configured that way.
    pub insecure_registries: Vec<String>,
    /// How to choose among several daemons.
    pub route: super::route::RouteNeeds,
    /// Whether a build step started, for the failover rule.
    pub steps: super::route::StepWatch,
    /// Mirrors, CAs and step log limits for the daemon bkd starts.
    pub config: SpawnedConfig,
    /// Entitlements the build asks for (`--allow`): granted to the daemon
    /// bkd starts.
    pub entitlements: Vec<String>,
}

/// `--insecure-registry` configures only a daemon bkd starts.
fn refuse_insecure_registries(needs: &DaemonNeeds) -> Result<()> {
    match needs.insecure_registries.first() {
        Some(host) => Err(Error::Usage(format!(
            "--insecure-registry {} configures the buildkitd bkd starts; with --addr \
             add [registry.\"{}\"] http = true to that daemon's buildkitd.toml",
            crate::text::escape_str(host),
            crate::text::escape_str(host)
        ))),
        None => Ok(()),
    }
}

/// Settings of the daemon bkd starts, from `bkd build`'s flags.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Spawned daemon (when no --addr is given)")]
pub struct SpawnedDaemonArgs {
    /// Pull REGISTRY's images through MIRROR: REGISTRY=MIRROR, e.g. docker.io=mirror.example.com (repeatable)
    #[arg(long = "registry-mirror", value_name = "REGISTRY=MIRROR")]
    pub registry_mirrors: Vec<String>,

    /// Trust the CA certificate in FILE for REGISTRY: REGISTRY=FILE (repeatable)
    #[arg(long = "registry-ca", value_name = "REGISTRY=FILE")]
    pub registry_cas: Vec<String>,

    /// Most bytes of output kept per build step, e.g. 10m; -1 for no limit [buildkitd's default: 2m]
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    pub step_log_max_size: Option<String>,

    /// Most bytes of output per second kept per build step, e.g. 1m; -1 for no limit [buildkitd's default: 200k]
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    pub step_log_max_speed: Option<String>,
}

/// [`SpawnedDaemonArgs`], checked.
#[derive(Debug, Clone, Default)]
pub struct SpawnedConfig {
    pub mirrors: Vec<(String, String)>,
    pub cas: Vec<(String, PathBuf)>,
    /// buildkitd's environment for the step log limits.
    pub env: Vec<(String, String)>,
}

impl SpawnedDaemonArgs {
    /// Checks the values (a CA file must be readable now).
    pub fn resolve(&self) -> Result<SpawnedConfig> {
        let mut config = SpawnedConfig::default();
        for m in &self.registry_mirrors {
            config
                .mirrors
                .push(daemon::config::parse_mirror(m).map_err(Error::Usage)?);
        }
        for c in &self.registry_cas {
            config
                .cas
                .push(daemon::config::parse_ca(c).map_err(Error::Input)?);
        }
        for (flag, value, var) in [
            (
                "--step-log-max-size",
                &self.step_log_max_size,
                STEP_LOG_MAX_SIZE,
            ),
            (
                "--step-log-max-speed",
                &self.step_log_max_speed,
                STEP_LOG_MAX_SPEED,
            ),
        ] {
            if let Some(v) = value {
                config.env.push((var.to_string(), step_log_limit(flag, v)?));
            }
        }
        Ok(config)
    }
}

const STEP_LOG_MAX_SIZE: &str = "BUILDKIT_STEP_LOG_MAX_SIZE";
const STEP_LOG_MAX_SPEED: &str = "BUILDKIT_STEP_LOG_MAX_SPEED";

/// A step log limit as buildkitd reads it: bytes that fit in 32 bits, or
/// -1 for none.
fn step_log_limit(flag: &str, value: &str) -> Result<String> {
    if value.trim() == "-1" {
        return Ok("-1".into());
    }
    super::buildx::parse_mem_bytes(value)
        .filter(|b| *b <= i32::MAX as u64)
        .map(|b| b.to_string())
        .ok_or_else(|| {
            Error::Usage(format!(
                "invalid {flag} {:?}: expected a size below 2g such as 10m, or -1 for no limit",
                crate::text::escape_str(value)
            ))
        })
}

/// The entitlements buildkitd grants only when started with
/// `--allow-insecure-entitlement`.
const DAEMON_ENTITLEMENTS: &[&str] = &["network.host", "security.insecure", "device"];

/// The daemon flags that grant what the build asks for and the flags do
/// not grant already.
fn entitlement_flags(wanted: &[String], flags: &[String]) -> Vec<String> {
    let granted = |name: &str| {
        flags
            .windows(2)
            .any(|w| w[0] == "--allow-insecure-entitlement" && w[1] == name)
            || flags
                .iter()
                .any(|f| f == &format!("--allow-insecure-entitlement={name}"))
    };
    let mut out: Vec<String> = Vec::new();
    for w in wanted {
        let name = w.split_once('=').map_or(w.as_str(), |(n, _)| n);
        if DAEMON_ENTITLEMENTS.contains(&name) && !granted(name) && !out.iter().any(|o| o == name) {
            out.push(name.to_string());
        }
    }
    out
}

/// Runs `job` on the daemon this command uses. With `--addr` that daemon is
/// only connected to; otherwise bkd spawns one, and stops it whatever the
/// outcome. The job's result is the command's result: stopping the daemon
/// never changes it. In auto mode a build that fails because the process
/// sandbox cannot mount /proc is retried once in rootless-strict mode.
pub async fn run_on_daemon<T, Fut>(
    global: &GlobalArgs,
    needs: &DaemonNeeds,
    mut job: impl FnMut(Daemon) -> Fut,
) -> Result<T>
where
    Fut: Future<Output = Result<T>>,
{
    let mut signals = Signals::install()?;
    let target = match global.daemon_source() {
        DaemonSource::Pool { entries, .. } => {
            refuse_insecure_registries(needs)?;
            return super::route::on_pool(global, needs, &mut signals, &entries, &mut job).await;
        }
        DaemonSource::Flag(a) | DaemonSource::Env(a) => Some(a),
        DaemonSource::EnvUnserved(a) => {
            eprintln!(
                "bkd: nothing listens at BUILDKIT_HOST={} (base images set it without running a \
                 daemon); starting buildkitd for this command (pass --addr to use that address)",
                crate::text::escape_str(&a)
            );
            None
        }
        DaemonSource::Spawn => None,
    };
    if let Some(addr) = &target {
        refuse_insecure_registries(needs)?;
        refuse_spawned_config(&needs.config)?;
        if let Some(secs) = args_timeout(global) {
            interruptible(&mut signals, wait_for_listener(addr, secs)).await?;
        }
        let daemon = global.connect(addr).await?;
        return interruptible(&mut signals, job(daemon))
            .await
            .map_err(with_advice);
    }
    let args = &global.daemon;
    let mut flags = daemon_flags(args)?;
    let grants = entitlement_flags(&needs.entitlements, &flags);
    if !grants.is_empty() {
        eprintln!(
            "bkd: granting {} to the buildkitd bkd starts (--allow-insecure-entitlement), as --allow asks",
            grants.join(", ")
        );
        for g in grants {
            flags.push("--allow-insecure-entitlement".into());
            flags.push(g);
        }
    }
    let (buildkitd, rootlesskit) = binaries();
    let probes = Probes::gather_to_start(&RealHost, &buildkitd, &rootlesskit);
    let (probes, decision) = decide_with(args, &flags, probes);
    let decision = decision.map_err(Error::Input)?;
    if let Some(why) = &decision.downgrade {
        eprintln!("{}", probe::downgrade_warning(why));
    }
    let root = match &args.root {
        Some(r) => r.clone(),
        None => daemon::state::default_root(probes.uid).map_err(Error::Input)?,
    };
    // Held until the daemon is stopped, when this function returns.
    let slot = match args.state_slots {
        true => Some(daemon::slots::acquire(&root).map_err(Error::Input)?),
        false => None,
    };
    let root = match &slot {
        Some(s) => {
            if global.debug {
                eprintln!(
                    "bkd: state slot {} ({})",
                    s.index,
                    crate::text::escape_path(&s.dir)
                );
            }
            s.dir.clone()
        }
        None => root,
    };
    let mut plan = SpawnPlan {
        mode: decision.mode,
        buildkitd,
        rootlesskit,
        root,
        flags,
        ready_timeout: args.ready_timeout()?,
        stop_timeout: Duration::from_secs(args.stop_timeout),
        echo_log: global.debug,
        log_file: args.daemon_log.clone(),
        pid_namespace: probes.sandbox.is_ok(),
        registries: daemon::config::Registries {
            insecure: needs.insecure_registries.clone(),
            mirrors: needs.config.mirrors.clone(),
            cas: needs.config.cas.clone(),
        },
        env: needs.config.env.clone(),
    };
    let mut spawned = spawn(&plan, &mut signals, global.debug).await?;
    let mut outcome = on_spawned(&spawned, &mut signals, &mut job).await;
    let retry = args.mode == ModeRequest::Auto
        && spawned.mode == Mode::Rootless
        && outcome
            .result
            .as_ref()
            .err()
            .is_some_and(is_sandbox_failure);
    if retry {
        eprintln!(
            "warning: the build failed because the process sandbox cannot mount /proc here; \
             restarting buildkitd in rootless-strict mode (--oci-worker-no-process-sandbox: \
             build steps can see and signal other processes in the builder) and retrying the \
             build once"
        );
        spawned.stop(false).await;
        plan.mode = Mode::RootlessStrict;
        // No fresh /proc here, so no PID namespace either (runc needs a
        // /proc that matches it).
        plan.pid_namespace = false;
        spawned = spawn(&plan, &mut signals, global.debug).await?;
        outcome = on_spawned(&spawned, &mut signals, &mut job).await;
    }
    // A failed step or a Ctrl-C says nothing about the daemon: its log is
    // kept only when the daemon itself failed.
    let log = spawned.stop(outcome.daemon_failed).await;
    if outcome.daemon_failed {
        eprintln!(
            "bkd: buildkitd log kept at {}",
            crate::text::escape_path(&log)
        );
    }
    outcome.result.map_err(with_advice)
}

/// Mirrors, CAs and step log limits configure the daemon bkd starts; a
/// daemon behind `--addr` has its own configuration, so say what to set
/// there.
fn refuse_spawned_config(config: &SpawnedConfig) -> Result<()> {
    use crate::text::{escape_path, escape_str};
    if let Some((host, mirror)) = config.mirrors.first() {
        return Err(Error::Usage(format!(
            "--registry-mirror configures the buildkitd bkd starts; with --addr add \
             [registry.\"{}\"] mirrors = [\"{}\"] to that daemon's buildkitd.toml",
            escape_str(host),
            escape_str(mirror)
        )));
    }
    if let Some((host, ca)) = config.cas.first() {
        return Err(Error::Usage(format!(
            "--registry-ca configures the buildkitd bkd starts; with --addr add \
             [registry.\"{}\"] ca = [\"{}\"] to that daemon's buildkitd.toml",
            escape_str(host),
            escape_path(ca)
        )));
    }
    if let Some((var, value)) = config.env.first() {
        return Err(Error::Usage(format!(
            "the step log limits configure the buildkitd bkd starts; with --addr start that \
             daemon with {var}={value} in its environment"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entitlements_are_granted_once_and_only_when_missing() {
        let wanted: Vec<String> = ["network.host", "security.insecure", "network.host", "other"]
            .map(String::from)
            .into();
        assert_eq!(
            entitlement_flags(&wanted, &[]),
            ["network.host", "security.insecure"]
        );
        let flags: Vec<String> = ["--allow-insecure-entitlement", "network.host"]
            .map(String::from)
            .into();
        assert_eq!(entitlement_flags(&wanted, &flags), ["security.insecure"]);
        let flags = vec!["--allow-insecure-entitlement=security.insecure".to_string()];
        assert_eq!(entitlement_flags(&wanted, &flags), ["network.host"]);
        assert_eq!(
            entitlement_flags(&["device=/dev/kvm".to_string()], &[]),
            ["device"]
        );
    }

    #[test]
    fn step_log_limits_fit_buildkitd() {
        assert_eq!(step_log_limit("f", "10m").expect("size"), "10485760");
        assert_eq!(step_log_limit("f", "-1").expect("none"), "-1");
        assert_eq!(step_log_limit("f", "4096").expect("bytes"), "4096");
        assert!(step_log_limit("f", "3g").is_err());
        assert!(step_log_limit("f", "lots").is_err());
    }

    #[test]
    fn retries_map_to_the_scripts_wait() {
        // The script's default of 10 retries: 11 sleeps (2.2 s) and 12 calls.
        assert_eq!(script_wait(10), Duration::from_millis(2_200 + 600));
        assert_eq!(script_wait(0), Duration::from_millis(100 + 100));
    }

    #[test]
    fn shell_words_split_like_sh() {
        let ok = |s: &str| shell_words(s).expect(s);
        assert_eq!(ok(""), Vec::<String>::new());
        assert_eq!(ok("  --a   --b=1 "), vec!["--a", "--b=1"]);
        assert_eq!(ok("--x 'a b' \"c d\""), vec!["--x", "a b", "c d"]);
        assert_eq!(ok("a\\ b \"q\\\"x\" ''"), vec!["a b", "q\"x", ""]);
        assert_eq!(
            ok("--oci-worker-no-process-sandbox"),
            vec!["--oci-worker-no-process-sandbox"]
        );
        assert!(shell_words("'open").is_err());
        assert!(shell_words("\"open").is_err());
        assert!(shell_words("end\\").is_err());
    }
}
