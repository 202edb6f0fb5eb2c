//! `bkd build`: flags, their resolution into a build spec, and the command.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use clap::Args;

use super::cache::{cache_exports, cache_imports};
use super::daemon::DaemonNeeds;
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
    /// Build context directory
    #[arg(default_value = ".", value_name = "CONTEXT")]
    pub context: PathBuf,

    /// Dockerfile path (default: CONTEXT/Dockerfile)
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

    /// Progress output (see docs/progress.md)
    #[arg(long, value_enum, default_value = "auto", env = "BKD_PROGRESS")]
    pub progress: ProgressMode,

    /// Write the build result (image digest, ...) as JSON to this file
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
}

/// A Dockerfile must be a readable file, reported before any daemon starts.
pub(super) fn check_dockerfile_file(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::Input(format!(
            "cannot read Dockerfile {}: {}",
            crate::text::escape_path(path),
            io_reason(&e)
        ))
    })?;
    if !meta.is_file() {
        return Err(Error::Input(format!(
            "Dockerfile {} is not a file",
            crate::text::escape_path(path)
        )));
    }
    Ok(())
}

/// The Dockerfile location, split the way the frontend wants it: the
/// directory served as the `dockerfile` local and the name inside it.
fn dockerfile_location(context: &Path, file: Option<&Path>) -> Result<(PathBuf, String)> {
    let path = match file {
        Some(f) => f.to_path_buf(),
        None => context.join("Dockerfile"),
    };
    check_dockerfile_file(&path)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| {
            Error::Input(format!(
                "Dockerfile name {} is not valid UTF-8",
                crate::text::escape_path(&path)
            ))
        })?
        .to_string();
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = dir.canonicalize().map_err(|e| {
        Error::Input(format!(
            "cannot read directory {}: {}",
            crate::text::escape_path(dir),
            io_reason(&e)
        ))
    })?;
    Ok((dir, name))
}

fn context_dir(context: &Path) -> Result<PathBuf> {
    let meta = std::fs::metadata(context).map_err(|e| {
        Error::Input(format!(
            "cannot read build context {}: {}",
            crate::text::escape_path(context),
            io_reason(&e)
        ))
    })?;
    if !meta.is_dir() {
        return Err(Error::Input(format!(
            "build context {} is not a directory",
            crate::text::escape_path(context)
        )));
    }
    context.canonicalize().map_err(|e| {
        Error::Input(format!(
            "cannot read build context {}: {}",
            crate::text::escape_path(context),
            io_reason(&e)
        ))
    })
}

fn key_value<'a>(flag: &str, s: &'a str) -> Result<(&'a str, &'a str)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k, v)),
        _ => Err(Error::Usage(format!(
            "invalid {flag} {s:?}: expected KEY=VALUE"
        ))),
    }
}

/// Resolves the typed flags into frontend attributes and exporters.
pub fn resolve(args: &BuildArgs) -> Result<BuildSpec> {
    let context = context_dir(&args.context)?;
    let (dockerfile_dir, dockerfile_name) =
        dockerfile_location(&args.context, args.file.as_deref())?;

    let mut attrs = HashMap::new();
    attrs.insert("filename".to_string(), dockerfile_name);
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
        attrs.insert("platform".into(), p.clone());
    }

    let mut exports = resolve_outputs(&args.outputs)?;
    let tags = image_tags(args)?;
    if !tags.is_empty() {
        let mut image_attrs = HashMap::new();
        image_attrs.insert("name".to_string(), tags.join(","));
        if args.push {
            image_attrs.insert("push".into(), "true".into());
        }
        exports.push(ExportSpec {
            kind: "image".into(),
            attrs: image_attrs,
            target: None,
        });
    }

    let mut locals = LocalDirs::default();
    locals.insert("context", context.clone());
    locals.insert("dockerfile", dockerfile_dir);
    for spec in &args.build_contexts {
        named_context(spec, &mut attrs, &mut locals)?;
    }

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
        shared_key: shared_key(&context),
        entitlements: args.allow.clone(),
    })
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
    pub metadata_file: Option<&'a Path>,
    pub needs: DaemonNeeds,
}

pub async fn run(global: &GlobalArgs, args: BuildArgs) -> Result<()> {
    for host in &args.insecure_registries {
        crate::daemon::config::check_registry_host(host).map_err(Error::Usage)?;
    }
    let job = Job {
        progress: args.progress,
        metadata_file: args.metadata_file.as_deref(),
        needs: DaemonNeeds {
            insecure_registries: args.insecure_registries.clone(),
        },
    };
    execute(global, job, || resolve(&args)).await
}

/// Resolves the build (again for a retry: a build consumes its spec),
/// runs it on the daemon, and writes the metadata file.
pub async fn execute(
    global: &GlobalArgs,
    job: Job<'_>,
    resolve: impl Fn() -> Result<BuildSpec>,
) -> Result<()> {
    let started = std::time::Instant::now();
    let spec = resolve()?;
    let metadata = job.metadata_file.map(FileDest::from);
    if let Some(dest) = &metadata {
        dest.prepare().map_err(|reason| {
            Error::Input(format!(
                "cannot write metadata file {}: {reason}",
                escape_path(&dest.path)
            ))
        })?;
    }
    let mut spec = Some(spec);
    let outcome = super::daemon::run_on_daemon(global, &job.needs, |daemon| {
        let spec = spec.take().map_or_else(&resolve, Ok);
        let (progress, debug) = (job.progress, global.debug);
        let metadata = metadata.clone();
        async move {
            let (outcome, mut display) = build(&daemon, spec?, display_for(progress, debug)).await;
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
        tracing::debug!(path = %w.display(), "output written");
    }
    Ok(())
}
