//! The command line: what the user typed (clap structs), resolved into
//! plans for the library. No protocol code lives here.

pub mod build;
pub mod buildctl;
pub mod buildx;
pub mod cache;
pub mod call;
pub mod ci;
pub mod daemon;
pub mod doctor;
pub mod inputs;
pub mod manual;
pub mod output;
pub mod progress;
pub mod reference;
pub mod route;
pub mod secret;
pub mod ssh;
pub mod workers;

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::client::Daemon;
use crate::error::{Error, Result};
use crate::transport::{Address, TlsOptions};

/// Build container images with BuildKit, without buildctl.
#[derive(Debug, Parser)]
#[command(
    name = "bkd",
    about,
    long_about = None,
    disable_version_flag = true,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// buildkitd address: unix:///path/to/buildkitd.sock or tcp://host:port (with
    /// --daemon-timeout, waits that long for a daemon to appear there). Env BUILDKIT_HOST is
    /// used when something listens there or no buildkitd is installed here. Repeated or a
    /// comma list, or dns://NAME:PORT (every A/AAAA record) or srv://NAME (every SRV record):
    /// a pool, each build routed by its key (docs/pool.md)
    #[arg(long, global = true, env = "BKD_ADDR", value_name = "URL")]
    pub addr: Vec<String>,

    /// `BUILDKIT_HOST`, read for bkd's own command line only (the
    /// buildctl-daemonless.sh mode ignores it, as the script does).
    #[arg(skip)]
    pub env_addr: Option<String>,

    /// CA certificate to verify a tcp:// daemon with (enables TLS)
    #[arg(long, global = true, value_name = "FILE")]
    pub tlscacert: Option<PathBuf>,

    /// Client certificate for a tcp:// daemon
    #[arg(long, global = true, value_name = "FILE")]
    pub tlscert: Option<PathBuf>,

    /// Client key for a tcp:// daemon
    #[arg(long, global = true, value_name = "FILE")]
    pub tlskey: Option<PathBuf>,

    /// Server name expected in the daemon's certificate
    #[arg(long, global = true, value_name = "NAME")]
    pub tlsservername: Option<String>,

    /// Verbose output: bkd's own debug log and the daemon's log on stderr
    #[arg(long, global = true)]
    pub debug: bool,

    /// Print bkd's version and the version of the buildkitd it would run
    #[arg(short = 'V', long)]
    pub version: bool,

    #[command(flatten)]
    pub daemon: daemon::DaemonArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a Dockerfile
    Build(Box<build::BuildArgs>),
    /// Inspect the daemon
    #[command(subcommand)]
    Debug(DebugCommand),
    /// Check what this environment allows and which mode bkd would use
    Doctor,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completion {
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) of bkd, or of one command: bkd man build | man -l -
    Man {
        #[arg(value_name = "COMMAND")]
        command: Option<String>,
    },
    /// Run a buildctl command line as buildctl-daemonless.sh does (`bkd daemonless build --frontend dockerfile.v0 ...`)
    #[command(disable_help_flag = true)]
    Daemonless {
        /// buildctl's arguments: global flags, then `build ...` or `debug workers`
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// List the daemon's workers (a readiness check)
    Workers(workers::WorkersArgs),
}

impl GlobalArgs {
    pub(crate) fn tls(&self) -> TlsOptions {
        TlsOptions {
            ca_cert: self.tlscacert.clone(),
            cert: self.tlscert.clone(),
            key: self.tlskey.clone(),
            server_name: self.tlsservername.clone(),
        }
    }

    /// Connects to the daemon named by `--addr`/`BUILDKIT_HOST`.
    pub async fn connect(&self, addr: &str) -> Result<Daemon> {
        let address = Address::parse(addr).map_err(|e| Error::Usage(e.to_string()))?;
        Daemon::connect(&address, &self.tls()).await
    }
}

/// Where the daemon a command runs on comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonSource {
    /// `--addr`: used as given (waiting `--daemon-timeout` for a sidecar).
    Flag(String),
    /// `BUILDKIT_HOST` with a daemon listening there, or with no buildkitd
    /// to start here: used as given.
    Env(String),
    /// `BUILDKIT_HOST` names an address nothing listens at, while a
    /// buildkitd is installed (base images set the variable without
    /// running a daemon): bkd starts its own.
    EnvUnserved(String),
    /// Several endpoints, or names to discover them by (`--addr` repeated
    /// or a comma list, `dns://`, `srv://`): each build goes to the daemon
    /// its route key picks.
    Pool {
        /// `--addr` or `BUILDKIT_HOST`.
        from: &'static str,
        entries: Vec<String>,
    },
    /// Nothing set: bkd starts its own.
    Spawn,
}

impl GlobalArgs {
    /// Resolves `--addr` and `BUILDKIT_HOST` into the daemon to use.
    pub fn daemon_source(&self) -> DaemonSource {
        if !self.addr.is_empty() {
            if route::is_pool(&self.addr) {
                return DaemonSource::Pool {
                    from: "--addr",
                    entries: self.addr.clone(),
                };
            }
            return DaemonSource::Flag(self.addr.join(","));
        }
        let Some(env) = &self.env_addr else {
            return DaemonSource::Spawn;
        };
        if route::is_pool(std::slice::from_ref(env)) {
            // A list is written on purpose: used as given.
            return DaemonSource::Pool {
                from: "BUILDKIT_HOST",
                entries: vec![env.clone()],
            };
        }
        let (buildkitd, _) = daemon::binaries();
        let installed = crate::daemon::probe::which(&buildkitd).is_some();
        match Address::parse(env) {
            // A malformed value is the user's to fix: connecting names it.
            Err(_) => DaemonSource::Env(env.clone()),
            Ok(a) if !installed || listens(&a) => DaemonSource::Env(env.clone()),
            Ok(_) => DaemonSource::EnvUnserved(env.clone()),
        }
    }
}

/// Whether anything accepts connections at `addr` now: false for a missing
/// socket or a refused connection; true for anything else (a daemon, or a
/// listener whose errors the real connection reports).
pub fn listens(addr: &Address) -> bool {
    use std::io::ErrorKind::{ConnectionRefused, NotFound};
    let attempt = match addr {
        Address::Unix(path) => std::os::unix::net::UnixStream::connect(path).map(drop),
        Address::Tcp { host, port } => {
            use std::net::ToSocketAddrs;
            match (host.as_str(), *port).to_socket_addrs() {
                Ok(mut addrs) => match addrs.next() {
                    Some(sa) => {
                        std::net::TcpStream::connect_timeout(&sa, std::time::Duration::from_secs(2))
                            .map(drop)
                    }
                    None => return false,
                },
                Err(_) => return false,
            }
        }
    };
    !matches!(attempt, Err(e) if matches!(e.kind(), NotFound | ConnectionRefused))
}

/// The `address` line of `bkd doctor`: where the address comes from and
/// whether a daemon answers there.
pub async fn address_report(global: &GlobalArgs) {
    let name = "address";
    let answers = |addr: String| async move {
        let Ok(a) = Address::parse(&addr) else {
            return Err(format!(
                "\"{}\" is not unix://PATH or tcp://HOST:PORT",
                crate::text::escape_str(&addr)
            ));
        };
        if !listens(&a) {
            return Err("nothing listens there".to_string());
        }
        let attempt = async {
            let d = Daemon::connect(&a, &global.tls()).await?;
            d.workers().await
        };
        match tokio::time::timeout(std::time::Duration::from_secs(5), attempt).await {
            Ok(Ok(w)) => Ok(format!("a daemon answers ({} workers)", w.len())),
            Ok(Err(e)) => Err(format!("no daemon answers: {e}")),
            Err(_) => Err("no answer within 5s".to_string()),
        }
    };
    let show = |s: &str| crate::text::escape_str(s);
    let (mark, text) = match global.daemon_source() {
        DaemonSource::Pool { from, entries } => {
            for (mark, text) in route::pool_report(global, from, &entries).await {
                println!("[{mark}] {name:<25} {text}");
            }
            return;
        }
        DaemonSource::Spawn => (
            "info",
            "none set (--addr, BUILDKIT_HOST): bkd starts its own buildkitd".to_string(),
        ),
        DaemonSource::EnvUnserved(a) => (
            "warn",
            format!(
                "BUILDKIT_HOST={} (environment, e.g. from the base image): nothing listens \
                 there, so bkd starts its own buildkitd; pass --addr (with --daemon-timeout to \
                 wait) to use it",
                show(&a)
            ),
        ),
        DaemonSource::Env(a) => match answers(a.clone()).await {
            Ok(t) => (
                "ok  ",
                format!("BUILDKIT_HOST={} (environment): {t}", show(&a)),
            ),
            Err(t) => (
                "FAIL",
                format!("BUILDKIT_HOST={} (environment): {t}", show(&a)),
            ),
        },
        DaemonSource::Flag(a) => match answers(a.clone()).await {
            Ok(t) => ("ok  ", format!("--addr {}: {t}", show(&a))),
            Err(t) => (
                "FAIL",
                format!(
                    "--addr {}: {t} (with --daemon-timeout a build waits that long for a \
                     daemon to appear there)",
                    show(&a)
                ),
            ),
        },
    };
    println!("[{mark}] {name:<25} {text}");
}

/// A command line: bkd's own, or buildctl's as `buildctl-daemonless.sh`
/// passes it on.
#[derive(Debug)]
pub enum Invocation {
    Bkd(Cli),
    Buildctl(buildctl::BuildctlCli),
}

impl Invocation {
    /// Parses the process arguments: through a link named
    /// `buildctl-daemonless.sh`, or as `bkd daemonless ...`, they are
    /// buildctl's; otherwise bkd's. Prints help or the error and exits on
    /// a malformed command line.
    pub fn from_args(args: Vec<String>) -> Invocation {
        let program = args
            .first()
            .map(|a| {
                Path::new(a)
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .unwrap_or_default();
        if program == buildctl::SCRIPT_NAME {
            return Invocation::Buildctl(buildctl::BuildctlCli::parse_from(
                buildctl::normalize_args(args),
            ));
        }
        let cli = Cli::parse_from(&args);
        if let Some(Command::Daemonless { args: rest }) = cli.command {
            let mut words = vec!["bkd daemonless".to_string()];
            words.extend(rest);
            let mut parsed = buildctl::BuildctlCli::parse_from(buildctl::normalize_args(words));
            parsed.global.debug |= cli.global.debug;
            return Invocation::Buildctl(parsed);
        }
        let mut cli = cli;
        cli.global.env_addr = std::env::var("BUILDKIT_HOST")
            .ok()
            .filter(|v| !v.trim().is_empty());
        Invocation::Bkd(cli)
    }

    pub fn debug(&self) -> bool {
        match self {
            Invocation::Bkd(c) => c.global.debug,
            Invocation::Buildctl(c) => c.global.debug,
        }
    }
}

/// Runs the parsed command line.
pub async fn run(invocation: Invocation) -> Result<()> {
    let cli = match invocation {
        Invocation::Bkd(cli) => cli,
        Invocation::Buildctl(cli) => return buildctl::run(cli).await,
    };
    if cli.global.version {
        return print_stdout(&format!("{}\n", version_report()));
    }
    match cli.command {
        Some(Command::Build(args)) => build::run(&cli.global, *args).await,
        Some(Command::Debug(DebugCommand::Workers(args))) => workers::run(&cli.global, &args).await,
        Some(Command::Doctor) => doctor::run(&cli.global).await,
        Some(Command::Completion { shell }) => manual::completion(shell),
        Some(Command::Man { command }) => manual::man(command.as_deref()),
        Some(Command::Daemonless { .. }) | None => Err(Error::Usage(
            "a command is required (see bkd --help)".into(),
        )),
    }
}

/// Data on stdout; a reader that went away is an output error, not a
/// panic.
pub(crate) fn print_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| {
            Error::OutputWrite(format!(
                "cannot write to stdout: {}",
                crate::error::io_reason(&e)
            ))
        })
}

/// `bkd --version`: bkd's version, then the buildkitd bkd would spawn.
fn version_report() -> String {
    let (buildkitd, _) = daemon::binaries();
    let daemon_version = std::process::Command::new(&buildkitd)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| crate::text::one_line(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|v| !v.is_empty());
    let daemon_line = match daemon_version {
        Some(v) => v,
        None => format!(
            "buildkitd: {} not found or not runnable",
            crate::text::escape_str(&buildkitd)
        ),
    };
    format!("bkd {}\n{daemon_line}", env!("CARGO_PKG_VERSION"))
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listens_tells_a_missing_or_refusing_socket_from_a_listener() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("d.sock");
        assert!(!listens(&Address::Unix(path.clone())));
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        assert!(listens(&Address::Unix(path.clone())));
        drop(listener);
        // The socket file remains but nothing accepts: refused.
        assert!(!listens(&Address::Unix(path)));
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = tcp.local_addr().expect("addr").port();
        let addr = Address::Tcp {
            host: "127.0.0.1".into(),
            port,
        };
        assert!(listens(&addr));
        drop(tcp);
        assert!(!listens(&addr));
    }

    #[test]
    fn addr_flag_wins_and_an_unset_variable_spawns() {
        let mut global = Cli::parse_from(["bkd", "doctor"]).global;
        assert_eq!(global.daemon_source(), DaemonSource::Spawn);
        global.env_addr = Some("tcp://127.0.0.1:1".into());
        global.addr = vec!["unix:///x.sock".into()];
        assert_eq!(
            global.daemon_source(),
            DaemonSource::Flag("unix:///x.sock".into())
        );
        // Several addresses, or one to discover, make a pool.
        global.addr = vec!["tcp://a:1".into(), "tcp://b:2".into()];
        assert!(matches!(
            global.daemon_source(),
            DaemonSource::Pool { from: "--addr", .. }
        ));
        global.addr = vec!["srv://_bk._tcp.pool".into()];
        assert!(matches!(global.daemon_source(), DaemonSource::Pool { .. }));
        global.addr = vec![];
        global.env_addr = Some("tcp://127.0.0.1:1,tcp://127.0.0.1:2".into());
        assert!(matches!(
            global.daemon_source(),
            DaemonSource::Pool {
                from: "BUILDKIT_HOST",
                ..
            }
        ));
        // A malformed variable is used as given, so connecting names it.
        global.env_addr = Some("bogus://x".into());
        assert_eq!(
            global.daemon_source(),
            DaemonSource::Env("bogus://x".into())
        );
    }
}
