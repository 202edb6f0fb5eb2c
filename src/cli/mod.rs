//! The command line: what the user typed (clap structs), resolved into
//! plans for the library. No protocol code lives here.

pub mod build;
pub mod buildctl;
pub mod cache;
pub mod daemon;
pub mod doctor;
pub mod output;
pub mod progress;
pub mod secret;
pub mod ssh;

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
    /// buildkitd address: unix:///path/to/buildkitd.sock or tcp://host:port
    #[arg(long, env = "BUILDKIT_HOST", global = true, value_name = "URL")]
    pub addr: Option<String>,

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
    Workers,
}

impl GlobalArgs {
    fn tls(&self) -> TlsOptions {
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
        println!("{}", version_report());
        return Ok(());
    }
    match cli.command {
        Some(Command::Build(args)) => build::run(&cli.global, *args).await,
        Some(Command::Debug(DebugCommand::Workers)) => workers(&cli.global).await,
        Some(Command::Doctor) => doctor::run(&cli.global).await,
        Some(Command::Daemonless { .. }) | None => Err(Error::Usage(
            "a command is required (see bkd --help)".into(),
        )),
    }
}

/// `bkd --version`: bkd's version, then the buildkitd bkd would spawn.
fn version_report() -> String {
    let (buildkitd, _) = daemon::binaries();
    let daemon_version = std::process::Command::new(&buildkitd)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty());
    let daemon_line = match daemon_version {
        Some(v) => v,
        None => format!("buildkitd: {buildkitd} not found or not runnable"),
    };
    format!("bkd {}\n{daemon_line}", env!("CARGO_PKG_VERSION"))
}

pub(crate) async fn workers(global: &GlobalArgs) -> Result<()> {
    let workers =
        daemon::run_on_daemon(
            global,
            &Default::default(),
            |d| async move { d.workers().await },
        )
        .await?;
    println!("{:<30}\tPLATFORMS", "ID");
    for w in workers {
        // What the daemon says, each kept to its line.
        use crate::text::escape_str;
        println!(
            "{:<30}\t{}",
            escape_str(&w.id),
            escape_str(&w.platforms.join(","))
        );
        if global.debug {
            for (k, v) in &w.labels {
                println!("  {}={}", escape_str(k), escape_str(v));
            }
        }
    }
    Ok(())
}
