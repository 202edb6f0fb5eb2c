//! The command line: what the user typed (clap structs), resolved into
//! plans for the library. No protocol code lives here.

pub mod build;
pub mod daemon;
pub mod doctor;
pub mod output;
pub mod progress;
pub mod secret;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::client::Daemon;
use crate::error::{Error, Result};
use crate::transport::{Address, TlsOptions};

/// Build container images with BuildKit, without buildctl.
#[derive(Debug, Parser)]
#[command(name = "bkd", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
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

/// Runs the parsed command.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Build(args) => build::run(&cli.global, *args).await,
        Command::Debug(DebugCommand::Workers) => workers(&cli.global).await,
        Command::Doctor => doctor::run(&cli.global).await,
    }
}

async fn workers(global: &GlobalArgs) -> Result<()> {
    let workers = daemon::run_on_daemon(global, |d| async move { d.workers().await }).await?;
    println!("{:<30}\tPLATFORMS", "ID");
    for w in workers {
        println!("{:<30}\t{}", w.id, w.platforms.join(","));
        if global.debug {
            for (k, v) in &w.labels {
                println!("  {k}={v}");
            }
        }
    }
    Ok(())
}
