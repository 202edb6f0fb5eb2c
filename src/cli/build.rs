//! `bkd build`: flags, their resolution into a build spec, and the command.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use clap::Args;

use super::buildx::{self, BuildxArgs, Destination};
use super::cache::{cache_exports, cache_imports};
use super::daemon::DaemonNeeds;
use super::inputs::{BuildInputs, ContextSource, Identity};
use super::output::parse_output;
use super::progress::{build_end, display_for, ProgressMode};
use super::secret::{parse_secret, SecretSource};
use super::GlobalArgs;
use crate::client::solve::{build, BuildSpec, ExportSpec};
use crate::error::{io_reason, Error, Result};
use crate::outfile::FileDest;
use crate::session::auth::DockerConfig;
use crate::session::filesend::{parent_dir, OutputTarget};
use crate::session::filesync::LocalDirs;
use crate::text::escape_path;

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Build context: a directory, a Git or HTTP(S) URL, or - (a Dockerfile on stdin, no context)
    #[arg(default_value = ".", value_name = "CONTEXT")]
    pub context: PathBuf,

    /// Dockerfile path (default: CONTEXT/Dockerfile); - reads it from stdin
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<PathBuf>,

    /// Stage to build
    #[arg(long)]
    pub target: Option<String>,

    /// Build argument (repeatable); KEY alone takes the value from the environment
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,

    /// Image label (repeatable)
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,

    /// Do not use the build cache
    #[arg(long)]
    pub no_cache: bool,

    /// Target platform(s), comma-separated (e.g. linux/amd64)
    #[arg(long)]
    pub platform: Option<String>,

    /// Output in buildctl syntax, e.g. type=tar,dest=out.tar or type=image,name=REF,push=true (repeatable)
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,

    /// Image name to build (repeatable); with --push the image is pushed
    #[arg(short = 't', long = "tag", value_name = "REF")]
    pub tags: Vec<String>,

    /// Push the image named by --tag (or by BKD_TAGS when no --tag is given)
    #[arg(long)]
    pub push: bool,

    /// Secret for RUN --mount=type=secret: id=ID,src=PATH or id=ID,env=VAR (repeatable)
    #[arg(long = "secret", value_name = "SPEC")]
    pub secrets: Vec<String>,

    /// Export build cache: type=registry,ref=REF[,mode=max], type=inline, type=local,dest=DIR, s3, gha (repeatable)
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub cache_to: Vec<String>,

    /// Import build cache: type=registry,ref=REF, type=local,src=DIR, s3, gha, or a bare REF (repeatable)
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub cache_from: Vec<String>,

    /// Extra named context: NAME=DIR, NAME=docker-image://REF or NAME=URL (repeatable)
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_contexts: Vec<String>,

    /// Extra entitlement for RUN --network=host or --security=insecure (repeatable)
    #[arg(long = "allow", value_name = "ENTITLEMENT")]
    pub allow: Vec<String>,

    /// Registry to reach over plain HTTP, for FROM and for pushes (repeatable; spawned daemon only)
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,

    /// SSH agent for RUN --mount=type=ssh: default, ID or ID=SOCKET (repeatable)
    #[arg(long = "ssh", value_name = "SPEC")]
    pub ssh: Vec<String>,

    /// Progress output (see docs/progress.md); default: BUILDKIT_PROGRESS, else auto
    #[arg(long, value_enum, env = "BKD_PROGRESS")]
    pub progress: Option<ProgressMode>,

    /// Write the build result (image digest, ...) as JSON to this file
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,

    /// Also append every status message, as --progress=rawjson prints it, to this file
    #[arg(long, value_name = "FILE", env = "BKD_PROGRESS_RECORD")]
    pub progress_record: Option<PathBuf>,

    #[command(flatten)]
    pub route: super::route::RouteArgs,

    #[command(flatten)]
    pub buildx: BuildxArgs,

    #[command(flatten)]
    pub spawned: super::daemon::SpawnedDaemonArgs,

    #[command(flatten)]
    pub ci: super::ci::CiArgs,
}

pub(super) use super::inputs::check_dockerfile_file;

fn key_value<'a>(flag: &str, s: &'a str) -> Result<(&'a str, &'a str)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k, v)),
        _ => Err(Error::Usage(format!(
            "invalid {flag} {s:?}: expected KEY=VALUE"
        ))),
    }
}

/// Resolves the typed flags into frontend attributes and exporters.
pub fn resolve(args: &BuildArgs, inputs: &BuildInputs) -> Result<BuildSpec> {
    let mut attrs = HashMap::new();
    let mut locals = LocalDirs::default();
    let key_dir = inputs.apply(args.file.as_deref(), &mut attrs, &mut locals)?;
    if let Some(t) = &args.target {
        attrs.insert("target".into(), t.clone());
    }
    for a in &args.build_args {
        match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                attrs.insert(format!("build-arg:{k}"), v.to_string());
            }
            Some(_) => {
                return Err(Error::Usage(format!(
                    "invalid --build-arg {a:?}: expected KEY=VALUE"
                )))
            }
            None => {
                if a.is_empty() {
                    return Err(Error::Usage(
                        "invalid --build-arg \"\": expected KEY=VALUE".into(),
                    ));
                }
                if let Ok(v) = std::env::var(a) {
                    attrs.insert(format!("build-arg:{a}"), v);
                }
            }
        }
    }
    if let Ok(epoch) = std::env::var("SOURCE_DATE_EPOCH") {
        attrs
            .entry("build-arg:SOURCE_DATE_EPOCH".into())
            .or_insert(epoch);
    }
    for l in &args.labels {
        let (k, v) = key_value("--label", l)?;
        attrs.insert(format!("label:{k}"), v.to_string());
    }
    if args.no_cache {
        attrs.insert("no-cache".into(), String::new());
    }
    if let Some(p) = &args.platform {
        super::reference::check_platforms(p).map_err(Error::Usage)?;
        attrs.insert("platform".into(), p.clone());
    }

    let mut exports = resolve_outputs(&exporting_outputs(&args.outputs))?;
    let tags = image_tags(args)?;
    buildx::name_outputs(&tags, args.push, &mut exports);
    buildx::annotate(&args.buildx, &mut exports)?;

    for spec in &args.build_contexts {
        named_context(spec, &mut attrs, &mut locals)?;
    }
    let mut entitlements = args.allow.clone();
    buildx::frontend_attrs(&args.buildx, &mut attrs, &mut entitlements)?;

    Ok(BuildSpec {
        frontend: "dockerfile.v0".into(),
        frontend_attrs: attrs,
        locals,
        exports,
        cache_exports: cache_exports("--cache-to", &args.cache_to)?,
        cache_imports: cache_imports("--cache-from", &args.cache_from)?,
        docker_config: docker_config()?,
        secrets: secrets(&args.secrets)?,
        ssh: super::ssh::agent_sockets(&args.ssh)?,
        shared_key: match &inputs.context {
            // Shared by every build of the same work, from any directory.
            ContextSource::Dir(_) => route_key(args, inputs)?.shared_key(),
            _ => shared_key(&key_dir),
        },
        entitlements,
        subrequest: None,
    })
}

/// Checks the command line alone, before stdin is read or anything
/// starts: tags, platforms, output specs and the buildx flags (exit 2).
/// Returns where the result goes, for the one warning.
pub fn check_command_line(args: &BuildArgs) -> Result<Destination> {
    for t in &args.tags {
        super::reference::check_reference("--tag", t).map_err(Error::Usage)?;
    }
    if let Some(p) = &args.platform {
        super::reference::check_platforms(p).map_err(Error::Usage)?;
    }
    buildx::check(&args.buildx, args.no_cache)?;
    let mut exports = exporting_outputs(&args.outputs)
        .iter()
        .map(|o| parse_output(o).map_err(Error::Usage))
        .collect::<Result<Vec<ExportSpec>>>()?;
    for e in &exports {
        if let Some(name) = e.attrs.get("name") {
            for n in name.split(',').filter(|n| !n.is_empty()) {
                super::reference::check_reference("--output name", n).map_err(Error::Usage)?;
            }
        }
    }
    let tags = image_tags(args)?;
    for t in &tags {
        super::reference::check_reference("BKD_TAGS", t).map_err(Error::Usage)?;
    }
    let destination = buildx::name_outputs(&tags, args.push, &mut exports);
    // Exported cache is a result that goes somewhere, and buildx's
    // `type=cacheonly` says the cache is all that is wanted.
    let cache_only = exporting_outputs(&args.outputs).len() < args.outputs.len();
    if destination == Destination::Nowhere && (!args.cache_to.is_empty() || cache_only) {
        return Ok(Destination::Somewhere);
    }
    Ok(destination)
}

/// The `--output` values that export something: buildx's
/// `type=cacheonly` only silences the no-output warning.
fn exporting_outputs(outputs: &[String]) -> Vec<String> {
    outputs
        .iter()
        .filter(|o| {
            super::output::parse_attrs("--output", o).map_or(true, |a| {
                a.get("type").map(String::as_str) != Some("cacheonly")
            })
        })
        .cloned()
        .collect()
}

/// One `--build-context NAME=VALUE`: a directory becomes an extra local
/// synced through the session; image references and URLs go to the
/// frontend as they are.
fn named_context(
    spec: &str,
    attrs: &mut HashMap<String, String>,
    locals: &mut LocalDirs,
) -> Result<()> {
    let (name, value) = key_value("--build-context", spec)?;
    if value.is_empty() {
        return Err(Error::Usage(format!(
            "invalid --build-context {spec:?}: expected NAME=DIR or NAME=docker-image://REF"
        )));
    }
    if name == "context" || name == "dockerfile" {
        return Err(Error::Usage(format!(
            "invalid --build-context {spec:?}: {name:?} names the main build input; pick another name"
        )));
    }
    if value.starts_with("oci-layout://") {
        return Err(Error::Usage(format!(
            "invalid --build-context {spec:?}: oci-layout:// contexts are not supported; \
             push the layout to a registry and use docker-image://REF"
        )));
    }
    let is_reference = ["docker-image://", "https://", "http://", "git@", "git://"]
        .iter()
        .any(|p| value.starts_with(p));
    if is_reference {
        attrs.insert(format!("context:{name}"), value.to_string());
        return Ok(());
    }
    let dir = local_dir("--build-context", name, Path::new(value))?;
    attrs.insert(format!("context:{name}"), format!("local:{name}"));
    locals.insert(name, dir);
    Ok(())
}

/// A directory given on the command line, checked and made absolute.
pub(super) fn local_dir(flag: &str, name: &str, path: &Path) -> Result<PathBuf> {
    let fail = |reason: String| {
        Error::Input(format!(
            "{flag} {name}={}: {reason}",
            crate::text::escape_path(path)
        ))
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(io_reason(&e)))?;
    if !meta.is_dir() {
        return Err(fail("not a directory".into()));
    }
    path.canonicalize().map_err(|e| fail(io_reason(&e)))
}

/// Parses `--output` values; client-side destinations must be writable
/// before the build starts.
pub(super) fn resolve_outputs(specs: &[String]) -> Result<Vec<ExportSpec>> {
    let exports = specs
        .iter()
        .map(|o| parse_output(o).map_err(Error::Usage))
        .collect::<Result<Vec<ExportSpec>>>()?;
    for e in &exports {
        match &e.target {
            Some(OutputTarget::File(dest)) => dest.prepare().map_err(|reason| {
                Error::Input(format!(
                    "cannot write output {}: {reason}",
                    escape_path(&dest.path)
                ))
            })?,
            Some(OutputTarget::Dir(p)) => check_output_parent(p)?,
            _ => {}
        }
        if e.target == Some(OutputTarget::Stdout) && std::io::stdout().is_terminal() {
            return Err(Error::Usage(format!(
                "refusing to write the {} output to a terminal: redirect stdout (dest=- > FILE) \
                 or give dest=FILE",
                e.kind
            )));
        }
    }
    Ok(exports)
}

/// Registry credentials from the Docker config, for the session's auth.
pub(super) fn docker_config() -> Result<Arc<DockerConfig>> {
    DockerConfig::load(DockerConfig::default_path().as_deref())
        .map(Arc::new)
        .map_err(|e| Error::Input(e.to_string()))
}

/// The image names: `--tag`, or with `--push` and no `--tag`, the
/// comma-separated `BKD_TAGS`, so a pipeline names its image once.
fn image_tags(args: &BuildArgs) -> Result<Vec<String>> {
    if !args.tags.is_empty() || !args.push {
        return Ok(args.tags.clone());
    }
    let from_env: Vec<String> = std::env::var("BKD_TAGS")
        .unwrap_or_default()
        .split(',')
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    if from_env.is_empty() {
        return Err(Error::Usage(
            "--push needs an image name: add -t REGISTRY/IMAGE:TAG or set BKD_TAGS".into(),
        ));
    }
    Ok(from_env)
}

/// Parses every `--secret` and checks its source now, so a missing file
/// fails before the build; the values are read when the build asks.
pub(super) fn secrets(specs: &[String]) -> Result<HashMap<String, SecretSource>> {
    let mut sources = HashMap::new();
    for spec in specs {
        let (id, source) = parse_secret(spec).map_err(Error::Usage)?;
        source.check(&id).map_err(Error::Input)?;
        sources.insert(id, source);
    }
    Ok(sources)
}

/// The output's directory must exist and be writable before the build
/// starts, so a long build does not fail at the very end.
pub(super) fn check_output_parent(dest: &Path) -> Result<()> {
    let parent = parent_dir(dest);
    let meta = std::fs::metadata(&parent).map_err(|e| {
        Error::Input(format!(
            "cannot write output {}: {}: {}",
            escape_path(dest),
            escape_path(&parent),
            io_reason(&e)
        ))
    })?;
    if !meta.is_dir() {
        return Err(Error::Input(format!(
            "cannot write output {}: {} is not a directory",
            escape_path(dest),
            escape_path(&parent)
        )));
    }
    let probe = tempfile::Builder::new()
        .prefix(".bkd-probe-")
        .tempfile_in(&parent);
    probe.map(drop).map_err(|e| {
        Error::Input(format!(
            "cannot write output {}: {}: {}",
            escape_path(dest),
            escape_path(&parent),
            io_reason(&e)
        ))
    })
}

/// The build's route key: `--route-key`, or the repository, the
/// Dockerfile's path in it, the target and the platform. The session's
/// shared key derives from it, so the daemon's warm copy of the context is
/// found again from any machine or directory.
fn route_key(args: &BuildArgs, inputs: &BuildInputs) -> Result<crate::route::RouteKey> {
    let (target, platform) = (args.target.as_deref(), args.platform.as_deref());
    Ok(match inputs.identity(args.file.as_deref())? {
        Identity::Local {
            context,
            dockerfile,
        } => args.route.key(&context, &dockerfile, target, platform),
        Identity::Remote { url, dockerfile } => {
            args.route.remote_key(&url, &dockerfile, target, platform)
        }
    })
}

/// One warm copy of the context per project directory in the daemon.
pub(super) fn shared_key(context: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    context.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// The exporter response as JSON, like buildctl writes it: values that
/// are base64-encoded JSON are embedded as JSON.
pub fn metadata_json(response: &HashMap<String, String>) -> Result<Vec<u8>> {
    let mut map = serde_json::Map::new();
    let mut keys: Vec<_> = response.keys().collect();
    keys.sort();
    for k in keys {
        let v = &response[k];
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(v)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .filter(|j| j.is_object() || j.is_array());
        map.insert(
            k.clone(),
            decoded.unwrap_or_else(|| serde_json::Value::String(v.clone())),
        );
    }
    serde_json::to_vec_pretty(&serde_json::Value::Object(map))
        .map_err(|e| Error::OutputWrite(format!("cannot encode metadata: {e}")))
}

/// Writes the metadata file (see [`crate::outfile`] for where), off the
/// async threads: a FIFO's reader sets the pace, and a signal must still
/// end bkd meanwhile.
pub async fn write_metadata(dest: &FileDest, response: &HashMap<String, String>) -> Result<()> {
    let text = metadata_json(response)?;
    let dest = dest.clone();
    let path = dest.path.clone();
    let written = tokio::task::spawn_blocking(move || dest.write_all(&text))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|r| r);
    written.map_err(|e| {
        Error::OutputWrite(format!(
            "cannot write metadata file {}: {}",
            escape_path(&path),
            io_reason(&e)
        ))
    })
}

/// How a build is run, apart from what it builds.
pub struct Job<'a> {
    pub progress: ProgressMode,
    /// Filled with the build's steps for a CI report.
    pub tally: Option<crate::ci::record::SharedTally>,
    /// Said once, when the build starts on a daemon.
    pub warning: Option<String>,
    pub metadata_file: Option<&'a Path>,
    /// `--progress-record`: where the raw status stream is appended.
    pub progress_record: Option<&'a Path>,
    pub needs: DaemonNeeds,
}

pub async fn run(global: &GlobalArgs, args: BuildArgs) -> Result<()> {
    for host in &args.insecure_registries {
        crate::daemon::config::check_registry_host(host).map_err(Error::Usage)?;
    }
    let destination = check_command_line(&args)?;
    let call = buildx::call_request(&args.buildx)?;
    let spawned_config = args.spawned.resolve()?;
    let mut entitlements = args.allow.clone();
    buildx::frontend_attrs(&args.buildx, &mut HashMap::new(), &mut entitlements)?;
    let image_id = ImageIdOutputs::check(&args.buildx, &exporting_outputs(&args.outputs))?;
    let progress = if args.buildx.quiet {
        ProgressMode::Quiet
    } else {
        super::progress::requested(args.progress)?
    };
    let ci = args
        .ci
        .resolve(|text| notice(progress, global.debug, text))?;
    let inputs = BuildInputs::prepare(&args.context, args.file.as_deref())?;
    let warning = destination
        .warning(global.addr.is_empty())
        .filter(|_| call.is_none());
    image_id.clear_stale()?;
    let started = std::time::Instant::now();
    let job = Job {
        tally: ci.tally(),
        warning,
        progress,
        metadata_file: args.metadata_file.as_deref(),
        progress_record: args.progress_record.as_deref(),
        needs: DaemonNeeds {
            insecure_registries: args.insecure_registries.clone(),
            route: args.route.needs(
                route_key(&args, &inputs)?,
                !matches!(progress, ProgressMode::Quiet | ProgressMode::Rawjson),
            ),
            steps: Default::default(),
            config: spawned_config,
            entitlements,
        },
    };
    let subrequest = call.as_ref().map(|c| c.name.clone());
    let outcome = execute(global, job, || {
        let mut spec = resolve(&args, &inputs)?;
        if subrequest.is_some() {
            spec.subrequest = subrequest.clone();
            spec.exports.clear();
            spec.cache_exports.clear();
        }
        Ok(spec)
    })
    .await;
    let published = ci.publish(&build_end(started, &outcome));
    let outcome = outcome?;
    if let Some(call) = &call {
        return super::call::print(call, &outcome.call_result);
    }
    image_id.write(&outcome.exporter_response)?;
    published
}

/// One line for the user before the build, in the form the progress mode
/// keeps: timestamped on Buildkite; left out where stderr is only errors
/// and the result (quiet) or a JSON stream (rawjson).
pub(super) fn notice(mode: ProgressMode, debug: bool, text: &str) {
    use super::progress::Resolved;
    use crate::progress::plain::Flavor;
    let stderr_is_tty = std::io::stderr().is_terminal();
    match super::progress::resolve(mode, debug, stderr_is_tty, crate::ci::CiSystem::detect()) {
        Resolved::Quiet | Resolved::Rawjson => {}
        Resolved::Text {
            flavor: Flavor::Buildkite,
            ..
        } => {
            let stamp = crate::progress::cilog::buildkite_timestamp(std::time::SystemTime::now());
            eprintln!("{stamp}{text}");
        }
        Resolved::Text { .. } | Resolved::Tty => eprintln!("{text}"),
    }
}

/// `--iidfile` and `-q`: the image ID, as buildx defines it, to a file and
/// to stdout.
struct ImageIdOutputs<'a> {
    file: Option<&'a Path>,
    print: bool,
}

impl<'a> ImageIdOutputs<'a> {
    fn check(args: &'a BuildxArgs, outputs: &[String]) -> Result<ImageIdOutputs<'a>> {
        let exports = outputs
            .iter()
            .map(|o| parse_output(o).map_err(Error::Usage))
            .collect::<Result<Vec<ExportSpec>>>()?;
        if args.iidfile.is_some() && exports.iter().any(|e| e.kind == "tar" || e.kind == "local") {
            return Err(Error::Usage(
                "--iidfile cannot be used with tar or local outputs, which have no image ID".into(),
            ));
        }
        if args.quiet
            && exports
                .iter()
                .any(|e| e.target == Some(OutputTarget::Stdout))
        {
            return Err(Error::Usage(
                "-q prints the image ID on stdout, where dest=- writes the output: drop one".into(),
            ));
        }
        if let Some(f) = &args.iidfile {
            check_output_parent(f)?;
        }
        Ok(ImageIdOutputs {
            file: args.iidfile.as_deref(),
            print: args.quiet,
        })
    }

    /// A failed build must not leave an earlier build's ID behind.
    fn clear_stale(&self) -> Result<()> {
        let Some(f) = self.file else { return Ok(()) };
        match std::fs::remove_file(f) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::OutputWrite(format!(
                "cannot remove the old image ID file {}: {}",
                escape_path(f),
                io_reason(&e)
            ))),
        }
    }

    fn write(&self, response: &HashMap<String, String>) -> Result<()> {
        let id = image_id(response);
        if let Some(f) = self.file {
            write_file_atomic(f, id.as_bytes(), "image ID file")?;
        }
        if self.print {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{id}")
                .and_then(|()| out.flush())
                .map_err(|e| {
                    Error::OutputWrite(format!("cannot print the image ID: {}", io_reason(&e)))
                })?;
        }
        Ok(())
    }
}

/// The image ID as buildx reports it: the config digest of a
/// single-manifest image, else the digest of the manifest or index.
pub fn image_id(response: &HashMap<String, String>) -> String {
    response
        .get("containerimage.config.digest")
        .or_else(|| response.get("containerimage.digest"))
        .cloned()
        .unwrap_or_default()
}

/// Writes `bytes` to `path` through a temporary file beside it, so a
/// reader never sees half of it.
pub fn write_file_atomic(path: &Path, bytes: &[u8], what: &str) -> Result<()> {
    let parent = parent_dir(path);
    let fail = |e: std::io::Error| {
        Error::OutputWrite(format!(
            "cannot write {what} {}: {}",
            escape_path(path),
            io_reason(&e)
        ))
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".bkd-write-")
        .tempfile_in(&parent)
        .map_err(fail)?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

/// Resolves the build (again for a retry: a build consumes its spec),
/// runs it on the daemon, and writes the metadata file.
pub async fn execute(
    global: &GlobalArgs,
    job: Job<'_>,
    resolve: impl Fn() -> Result<BuildSpec>,
) -> Result<crate::client::solve::BuildOutcome> {
    let started = std::time::Instant::now();
    let spec = resolve()?;
    let metadata = job.metadata_file.map(FileDest::from);
    // Opened (and so checked) before anything starts; a retried build
    // appends its own stream after the first one's.
    let record = job
        .progress_record
        .map(|path| {
            crate::outfile::open_log(path).map_err(|reason| {
                Error::Input(format!(
                    "cannot write progress record {}: {reason}",
                    escape_path(path)
                ))
            })
        })
        .transpose()?;
    if let Some(dest) = &metadata {
        dest.prepare().map_err(|reason| {
            Error::Input(format!(
                "cannot write metadata file {}: {reason}",
                escape_path(&dest.path)
            ))
        })?;
    }

    let mut spec = Some(spec);
    let mut warning = job.warning.clone();
    let outcome = super::daemon::run_on_daemon(global, &job.needs, |daemon| {
        let spec = spec.take().map_or_else(&resolve, Ok);
        let (progress, debug) = (job.progress, global.debug);
        let metadata = metadata.clone();
        // Said once, when a daemon is there to build (not again on a retry).
        if let Some(w) = warning.take() {
            notice(progress, debug, &w);
        }
        let tally = job.tally.clone();
        let steps = job.needs.steps.clone();
        let record_file = record.as_ref().map(std::fs::File::try_clone);
        async move {
            let mut display = steps.watch(display_for(progress, debug));
            if let Some(file) = record_file {
                let file = file.map_err(|e| {
                    Error::Input(format!("cannot write progress record: {}", io_reason(&e)))
                })?;
                display = crate::progress::rawjson::recorded(display, file);
            }
            if let Some(t) = tally {
                // A retried build reports its own steps only.
                if let Ok(mut fresh) = t.lock() {
                    *fresh = Default::default();
                }
                display = crate::ci::record::recording(display, t);
            }
            let (outcome, mut display) = build(&daemon, spec?, display).await;
            display.summary(&build_end(started, &outcome));
            let outcome = outcome?;
            if let Some(dest) = &metadata {
                write_metadata(dest, &outcome.exporter_response).await?;
            }
            Ok(outcome)
        }
    })
    .await?;
    for w in &outcome.written {
        tracing::debug!(path = %escape_path(w), "output written");
    }
    Ok(outcome)
}
