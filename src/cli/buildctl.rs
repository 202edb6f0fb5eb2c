//! buildctl's command line, as pipelines hand it to `buildctl-daemonless.sh`:
//! bkd run through a link of that name, or `bkd daemonless ARGS`, takes the
//! same global flags, `build` with its flags, and `debug workers`, and runs
//! them on a daemon it spawns (or on `--addr`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, Parser, Subcommand};

use super::build::{
    check_dockerfile_file, docker_config, execute, local_dir, resolve_outputs, secrets, shared_key,
    Job,
};
use super::cache::{cache_exports, cache_imports};
use super::daemon::{DaemonArgs, DaemonNeeds};
use super::progress::ProgressMode;
use super::GlobalArgs;
use crate::client::solve::BuildSpec;
use crate::error::{Error, Result};
use crate::session::filesync::LocalDirs;

/// The program name that selects this command line.
pub const SCRIPT_NAME: &str = "buildctl-daemonless.sh";

/// The frontends bkd can drive.
const FRONTENDS: &[&str] = &["dockerfile.v0", "gateway.v0"];

/// buildctl's command line, run on a buildkitd that bkd starts and stops
/// (what buildctl-daemonless.sh does)
#[derive(Debug, Parser)]
#[command(name = SCRIPT_NAME, version)]
pub struct BuildctlCli {
    #[command(flatten)]
    pub global: BuildctlGlobal,

    #[command(subcommand)]
    pub command: BuildctlCommand,
}

#[derive(Debug, Args)]
pub struct BuildctlGlobal {
    /// Verbose output (also accepted after `build`)
    #[arg(long, global = true)]
    pub debug: bool,

    /// Use this running buildkitd instead of starting one
    #[arg(long, value_name = "URL")]
    pub addr: Option<String>,

    /// Log format of buildctl; bkd logs text only
    #[arg(long, value_name = "FORMAT", value_parser = ["text"])]
    pub log_format: Option<String>,

    /// Server name expected in the daemon's certificate
    #[arg(long, value_name = "NAME")]
    pub tlsservername: Option<String>,

    /// CA certificate for a tcp:// daemon
    #[arg(long, value_name = "FILE")]
    pub tlscacert: Option<PathBuf>,

    /// Client certificate for a tcp:// daemon
    #[arg(long, value_name = "FILE")]
    pub tlscert: Option<PathBuf>,

    /// Client key for a tcp:// daemon
    #[arg(long, value_name = "FILE")]
    pub tlskey: Option<PathBuf>,

    /// Directory with ca.pem, cert.pem, key.pem (or ca.crt, tls.crt, tls.key)
    #[arg(long, value_name = "DIR")]
    pub tlsdir: Option<PathBuf>,

    /// Accepted for compatibility; bkd waits for the daemon it starts (--daemon-timeout)
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,

    /// Accepted for compatibility; bkd always waits for the daemon it starts
    #[arg(long)]
    pub wait: bool,

    #[command(flatten)]
    pub daemon: DaemonArgs,
}

#[derive(Debug, Subcommand)]
pub enum BuildctlCommand {
    /// Build (buildctl build)
    #[command(visible_alias = "b")]
    Build(Box<BuildctlBuildArgs>),
    /// Debug utilities
    #[command(subcommand)]
    Debug(BuildctlDebug),
    #[command(external_subcommand)]
    Other(Vec<String>),
}

#[derive(Debug, Subcommand)]
pub enum BuildctlDebug {
    /// List the daemon's workers
    Workers(super::workers::WorkersArgs),
}

#[derive(Debug, Args)]
pub struct BuildctlBuildArgs {
    /// Export: type=image,name=REF,push=true | type=tar,dest=FILE | type=local,dest=DIR | oci | docker
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,

    /// Progress output; default: BUILDKIT_PROGRESS, else auto
    #[arg(long, value_enum, env = "BKD_PROGRESS")]
    pub progress: Option<ProgressMode>,

    /// Local directory the build can read: NAME=DIR (context, dockerfile, or a named context)
    #[arg(long = "local", value_name = "NAME=DIR")]
    pub locals: Vec<String>,

    /// Frontend: dockerfile.v0 (or gateway.v0 with --opt source=IMAGE)
    #[arg(long, value_name = "NAME")]
    pub frontend: Option<String>,

    /// Frontend option KEY=VALUE: filename, target, build-arg:K, label:K, platform, context:NAME, ...
    #[arg(long = "opt", value_name = "KEY=VALUE")]
    pub opts: Vec<String>,

    /// Do not use the build cache
    #[arg(long)]
    pub no_cache: bool,

    /// Export build cache: type=registry,ref=REF[,mode=max] | type=inline | type=local,dest=DIR | s3 | gha
    #[arg(long = "export-cache", value_name = "SPEC")]
    pub export_cache: Vec<String>,

    /// Import build cache: type=registry,ref=REF | type=local,src=DIR | s3 | gha
    #[arg(long = "import-cache", value_name = "SPEC")]
    pub import_cache: Vec<String>,

    /// Secret: id=ID,src=PATH | id=ID,env=VAR
    #[arg(long = "secret", value_name = "SPEC")]
    pub secrets: Vec<String>,

    /// SSH agent for RUN --mount=type=ssh: default, ID or ID=SOCKET
    #[arg(long = "ssh", value_name = "SPEC")]
    pub ssh: Vec<String>,

    /// Extra entitlement: network.host, security.insecure, device
    #[arg(long = "allow", value_name = "ENTITLEMENT")]
    pub allow: Vec<String>,

    /// Write the build result (image digest, ...) as JSON to this file
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,

    /// Not supported (bkd --debug shows verbose status)
    #[arg(long, value_name = "FILE", hide = true)]
    pub trace: Option<String>,

    /// Not supported
    #[arg(long = "oci-layout", value_name = "NAME=DIR", hide = true)]
    pub oci_layout: Vec<String>,

    /// Not supported
    #[arg(long, value_name = "FILE", hide = true)]
    pub source_policy_file: Option<String>,

    /// Not supported
    #[arg(long, hide = true)]
    pub proxy_network: bool,

    /// Not supported
    #[arg(long, value_name = "FILE", hide = true)]
    pub ref_file: Option<String>,

    /// Not supported
    #[arg(long, value_name = "SPEC", hide = true)]
    pub registry_auth_tlscontext: Vec<String>,

    /// Not supported
    #[arg(long, value_name = "DEST", hide = true)]
    pub debug_json_cache_metrics: Option<String>,
}

/// Rewrites Go-style single-dash long flags (`-opt k=v`, `-local=...`),
/// which buildctl accepts, into `--opt`, for the names this command line
/// knows. Values are left alone: only words in flag position that name a
/// known long flag change.
pub fn normalize_args(args: Vec<String>) -> Vec<String> {
    let mut longs = Vec::new();
    collect_longs(&BuildctlCli::command(), &mut longs);
    let mut out = Vec::with_capacity(args.len());
    let mut rest_verbatim = false;
    for arg in args {
        if rest_verbatim || arg == "--" {
            rest_verbatim = true;
            out.push(arg);
            continue;
        }
        let single_dash_long = arg.starts_with('-') && !arg.starts_with("--") && arg.len() > 2;
        if single_dash_long {
            let name = arg[1..].split('=').next().unwrap_or_default();
            if longs.iter().any(|l| l == name) {
                out.push(format!("-{arg}"));
                continue;
            }
        }
        out.push(arg);
    }
    out
}

fn collect_longs(cmd: &clap::Command, into: &mut Vec<String>) {
    for a in cmd.get_arguments() {
        if let Some(l) = a.get_long() {
            into.push(l.to_string());
        }
    }
    for sub in cmd.get_subcommands() {
        collect_longs(sub, into);
    }
}

impl BuildctlGlobal {
    /// bkd's global arguments for the same request. `BUILDKIT_HOST` is not
    /// read: the script always talks to the daemon it starts.
    fn to_global(&self) -> Result<GlobalArgs> {
        let mut ca = self.tlscacert.clone();
        let mut cert = self.tlscert.clone();
        let mut key = self.tlskey.clone();
        if let Some(dir) = &self.tlsdir {
            let pick = |names: [&str; 2]| -> Result<PathBuf> {
                names
                    .iter()
                    .map(|n| dir.join(n))
                    .find(|p| p.is_file())
                    .ok_or_else(|| {
                        Error::Input(format!(
                            "--tlsdir {}: neither {} nor {} found",
                            crate::text::escape_path(dir),
                            names[0],
                            names[1]
                        ))
                    })
            };
            ca = Some(pick(["ca.pem", "ca.crt"])?);
            cert = Some(pick(["cert.pem", "tls.crt"])?);
            key = Some(pick(["key.pem", "tls.key"])?);
        }
        Ok(GlobalArgs {
            addr: self.addr.iter().cloned().collect(),
            env_addr: None,
            tlscacert: ca,
            tlscert: cert,
            tlskey: key,
            tlsservername: self.tlsservername.clone(),
            debug: self.debug,
            version: false,
            daemon: self.daemon.clone(),
        })
    }
}

/// Runs the parsed buildctl command line.
pub async fn run(cli: BuildctlCli) -> Result<()> {
    let global = cli.global.to_global()?;
    match cli.command {
        BuildctlCommand::Build(args) => build(&global, &args).await,
        BuildctlCommand::Debug(BuildctlDebug::Workers(args)) => {
            super::workers::run(&global, &args).await
        }
        BuildctlCommand::Other(words) => Err(Error::Usage(format!(
            "buildctl command {:?} is not supported by bkd (supported: build, debug workers)",
            words.first().map(String::as_str).unwrap_or_default()
        ))),
    }
}

async fn build(global: &GlobalArgs, args: &BuildctlBuildArgs) -> Result<()> {
    reject_unsupported(args)?;
    let job = Job {
        progress: super::progress::requested(args.progress)?,
        tally: None,
        warning: None,
        metadata_file: args.metadata_file.as_deref(),
        progress_record: None,
        needs: DaemonNeeds {
            entitlements: args.allow.clone(),
            ..Default::default()
        },
    };
    execute(global, job, || resolve(args)).await.map(drop)
}

fn reject_unsupported(args: &BuildctlBuildArgs) -> Result<()> {
    let unsupported = [
        (
            args.trace.is_some(),
            "--trace",
            "--debug shows verbose status",
        ),
        (
            !args.oci_layout.is_empty(),
            "--oci-layout",
            "push the layout to a registry and use --opt context:NAME=docker-image://REF",
        ),
        (
            args.source_policy_file.is_some(),
            "--source-policy-file",
            "",
        ),
        (args.proxy_network, "--proxy-network", ""),
        (args.ref_file.is_some(), "--ref-file", ""),
        (
            !args.registry_auth_tlscontext.is_empty(),
            "--registry-auth-tlscontext",
            "configure the registry in buildkitd.toml",
        ),
        (
            args.debug_json_cache_metrics.is_some(),
            "--debug-json-cache-metrics",
            "",
        ),
    ];
    match unsupported.iter().find(|(given, _, _)| *given) {
        Some((_, flag, "")) => Err(Error::Usage(format!(
            "buildctl flag {flag} is not supported by bkd"
        ))),
        Some((_, flag, hint)) => Err(Error::Usage(format!(
            "buildctl flag {flag} is not supported by bkd; {hint}"
        ))),
        None => Ok(()),
    }
}

/// Resolves buildctl's flags into the build: `--opt` values go to the
/// frontend as they are, `--local` directories are served by name.
pub fn resolve(args: &BuildctlBuildArgs) -> Result<BuildSpec> {
    let frontend = match args.frontend.as_deref() {
        Some(f) if FRONTENDS.contains(&f) => f.to_string(),
        Some(f) => {
            return Err(Error::Usage(format!(
                "unsupported --frontend {f:?}: bkd runs {}",
                FRONTENDS.join(" and ")
            )))
        }
        None => {
            return Err(Error::Usage(
                "--frontend is required (e.g. --frontend dockerfile.v0); \
                 LLB definitions on stdin are not supported"
                    .into(),
            ))
        }
    };

    let mut attrs = HashMap::new();
    if let Ok(epoch) = std::env::var("SOURCE_DATE_EPOCH") {
        attrs.insert("build-arg:SOURCE_DATE_EPOCH".to_string(), epoch);
    }
    for opt in &args.opts {
        match opt.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                attrs.insert(k.to_string(), v.to_string());
            }
            _ => {
                return Err(Error::Usage(format!(
                    "invalid --opt {opt:?}: expected KEY=VALUE"
                )))
            }
        }
    }
    if args.no_cache {
        attrs.insert("no-cache".into(), String::new());
    }
    if frontend == "gateway.v0" && !attrs.contains_key("source") {
        return Err(Error::Usage(
            "--frontend gateway.v0 needs --opt source=IMAGE (the frontend image)".into(),
        ));
    }

    let mut locals = LocalDirs::default();
    let mut names: Vec<&str> = Vec::new();
    for spec in &args.locals {
        let (name, dir) = match spec.split_once('=') {
            Some((n, d)) if !n.is_empty() && !d.is_empty() => (n, d),
            _ => {
                return Err(Error::Usage(format!(
                    "invalid --local {spec:?}: expected NAME=DIR (e.g. context=.)"
                )))
            }
        };
        if names.contains(&name) {
            return Err(Error::Usage(format!(
                "--local {} is given twice",
                crate::text::escape_str(name)
            )));
        }
        names.push(name);
        locals.insert(name, local_dir("--local", name, Path::new(dir))?);
    }
    if frontend == "dockerfile.v0" {
        check_dockerfile(&locals, &attrs)?;
    }

    let exports = resolve_outputs(&args.outputs)?;
    for a in &args.allow {
        if a.is_empty() || a.contains(char::is_whitespace) {
            return Err(Error::Usage(format!(
                "invalid --allow {a:?}: expected an entitlement such as network.host"
            )));
        }
    }

    let key_dir = locals
        .get("context")
        .cloned()
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_default();
    Ok(BuildSpec {
        frontend,
        frontend_attrs: attrs,
        exports,
        cache_exports: cache_exports("--export-cache", &args.export_cache)?,
        cache_imports: cache_imports("--import-cache", &args.import_cache)?,
        docker_config: docker_config()?,
        secrets: secrets(&args.secrets)?,
        ssh: super::ssh::agent_sockets(&args.ssh)?,
        shared_key: shared_key(&key_dir),
        entitlements: args.allow.clone(),
        subrequest: None,
        locals,
    })
}

/// With a `dockerfile` local, its Dockerfile must exist: a missing one is
/// reported before any daemon starts.
fn check_dockerfile(locals: &LocalDirs, attrs: &HashMap<String, String>) -> Result<()> {
    let Some(dir) = locals.get("dockerfile") else {
        return Ok(());
    };
    let name = attrs
        .get("filename")
        .filter(|f| !f.is_empty())
        .map_or("Dockerfile", String::as_str);
    check_dockerfile_file(&dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(words: &[&str]) -> BuildctlCli {
        let mut args = vec![SCRIPT_NAME.to_string()];
        args.extend(words.iter().map(|s| s.to_string()));
        BuildctlCli::try_parse_from(normalize_args(args)).expect("parse")
    }

    fn build_args(cli: BuildctlCli) -> Box<BuildctlBuildArgs> {
        match cli.command {
            BuildctlCommand::Build(b) => b,
            other => panic!("not a build: {other:?}"),
        }
    }

    #[test]
    fn recipe_command_parses() {
        let cli = parse(&[
            "build",
            "--frontend",
            "dockerfile.v0",
            "--local",
            "context=.",
            "--local",
            "dockerfile=.",
            "--opt",
            "filename=Dockerfile",
            "--opt",
            "build-arg:VERSION=1",
            "--output",
            "type=image,name=r/a:1,push=true",
            "--progress=plain",
            "--debug",
        ]);
        assert!(cli.global.debug, "--debug after build is the global flag");
        let b = build_args(cli);
        assert_eq!(b.frontend.as_deref(), Some("dockerfile.v0"));
        assert_eq!(b.locals, ["context=.", "dockerfile=."]);
        assert_eq!(b.opts, ["filename=Dockerfile", "build-arg:VERSION=1"]);
        assert_eq!(b.progress, Some(ProgressMode::Plain));
    }

    #[test]
    fn go_style_single_dash_flags_are_accepted() {
        let b = build_args(parse(&[
            "--debug",
            "b",
            "-frontend=dockerfile.v0",
            "-opt",
            "target=-x",
            "-o",
            "type=tar,dest=-",
        ]));
        assert_eq!(b.frontend.as_deref(), Some("dockerfile.v0"));
        assert_eq!(b.opts, ["target=-x"]);
        assert_eq!(b.outputs, ["type=tar,dest=-"]);
    }

    #[test]
    fn bad_flags_are_named() {
        let b = build_args(parse(&["build", "--frontend", "dockerfile.v1"]));
        let err = resolve(&b).unwrap_err().to_string();
        assert!(
            err.contains("unsupported --frontend \"dockerfile.v1\""),
            "{err}"
        );
        let b = build_args(parse(&["build"]));
        assert!(resolve(&b)
            .unwrap_err()
            .to_string()
            .contains("--frontend is required"));
        let b = build_args(parse(&[
            "build",
            "--frontend=dockerfile.v0",
            "--opt",
            "novalue",
        ]));
        assert!(resolve(&b)
            .unwrap_err()
            .to_string()
            .contains("invalid --opt"));
        let b = build_args(parse(&[
            "build",
            "--frontend=dockerfile.v0",
            "--local",
            "context",
        ]));
        assert!(resolve(&b)
            .unwrap_err()
            .to_string()
            .contains("invalid --local"));
        let b = build_args(parse(&["build", "--trace", "t.json"]));
        let err = reject_unsupported(&b).unwrap_err().to_string();
        assert!(err.contains("--trace is not supported"), "{err}");
    }
}
