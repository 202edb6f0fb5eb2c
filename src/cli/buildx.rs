//! The flags `docker buildx build` users type beyond buildctl's: parsed
//! with buildx's syntax and mapped onto the dockerfile frontend's options
//! and the exporters' attributes the way buildx maps them.

use std::collections::HashMap;
use std::path::PathBuf;

use clap::Args;

use super::output::split_csv;
use crate::client::solve::ExportSpec;
use crate::error::{Error, Result};
use crate::text::escape_str;

#[derive(Debug, Default, Clone, Args)]
pub struct BuildxArgs {
    /// Attestation to attach: type=sbom[,generator=IMAGE] or type=provenance[,mode=min|max] (repeatable)
    #[arg(long = "attest", value_name = "SPEC")]
    pub attest: Vec<String>,

    /// SBOM attestation: true, false or generator=IMAGE (short for --attest type=sbom)
    #[arg(long, value_name = "VALUE")]
    pub sbom: Option<String>,

    /// Provenance attestation: true, false, mode=min or mode=max (short for --attest type=provenance)
    #[arg(long, value_name = "VALUE")]
    pub provenance: Option<String>,

    /// Extra /etc/hosts entry for RUN steps: HOST:IP or HOST=IP (repeatable)
    #[arg(long = "add-host", value_name = "HOST:IP")]
    pub add_hosts: Vec<String>,

    /// Size of /dev/shm in RUN steps, e.g. 128m or 1g
    #[arg(long, value_name = "SIZE")]
    pub shm_size: Option<String>,

    /// Resource limit for RUN steps: NAME=SOFT[:HARD], e.g. nofile=1024:2048 (repeatable)
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    pub ulimits: Vec<String>,

    /// Network of RUN steps: default, none, or host (grants network.host)
    #[arg(long, value_name = "MODE")]
    pub network: Option<String>,

    /// Always fetch the newest version of base images
    #[arg(long)]
    pub pull: bool,

    /// Do not use the cache for this stage (repeatable)
    #[arg(long = "no-cache-filter", value_name = "STAGE")]
    pub no_cache_filter: Vec<String>,

    /// Image annotation: [TYPE[PLATFORM]:]KEY=VALUE, TYPE manifest, index, manifest-descriptor or index-descriptor (repeatable)
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,

    /// Write the image ID (as buildx: the config digest, or the index digest of a multi-manifest image) to FILE
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,

    /// No progress; print the image ID on stdout when done
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Frontend option passed on as it is: KEY=VALUE (repeatable)
    #[arg(long = "opt", value_name = "KEY=VALUE")]
    pub opts: Vec<String>,

    /// Refused: there is no Docker daemon to load into; use -o type=docker,dest=- | docker load
    #[arg(long)]
    pub load: bool,

    /// Evaluate instead of building: check, outline or targets[,format=json][,ignorestatus=true]
    #[arg(long, value_name = "METHOD")]
    pub call: Option<String>,

    /// Short for --call=check: lint the Dockerfile, exit 1 on warnings
    #[arg(long)]
    pub check: bool,
}

/// A `--call` request, parsed as buildx parses it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CallRequest {
    /// The frontend's subrequest name (`check` is `lint`).
    pub name: String,
    pub json: bool,
    pub ignore_status: bool,
}

/// `--call`/`--check`: `None` for an ordinary build (`--call build`).
pub fn call_request(args: &BuildxArgs) -> Result<Option<CallRequest>> {
    let value = match (&args.call, args.check) {
        (Some(c), true) if c != "check" => {
            return Err(Error::Usage(
                "--check is --call=check: give one of them".into(),
            ))
        }
        (_, true) => "check".to_string(),
        (Some(c), false) => c.clone(),
        (None, false) => return Ok(None),
    };
    let bad = |why: &str| Error::Usage(format!("invalid --call {:?}: {why}", escape_str(&value)));
    let mut request = CallRequest::default();
    for field in split_csv(&value).map_err(|e| bad(&e))? {
        match field.split_once('=') {
            Some(("format", f)) => match f {
                "json" => request.json = true,
                "" | "text" => {}
                _ => return Err(bad("format is json or text")),
            },
            Some(("ignorestatus", v)) => {
                request.ignore_status =
                    parse_bool(v).ok_or_else(|| bad("ignorestatus takes true or false"))?
            }
            Some(_) => return Err(bad(&format!("unknown field {:?}", escape_str(&field)))),
            None if request.name.is_empty() => request.name = field,
            None => return Err(bad("one method only")),
        }
    }
    match request.name.as_str() {
        "build" | "" => Ok(None),
        "check" | "lint" => Ok(Some(CallRequest {
            name: "lint".into(),
            ..request
        })),
        "outline" | "targets" | "subrequests.describe" => Ok(Some(request)),
        _ => Err(bad("expected build, check, outline or targets")),
    }
}

/// Exporter kinds that produce an image and take a `name`.
const IMAGE_KINDS: &[&str] = &["image", "oci", "docker"];

/// What the build's outputs come to, for the one warning buildx gives.
#[derive(Debug, Clone, PartialEq)]
pub enum Destination {
    /// Something is pushed or written.
    Somewhere,
    /// No output at all: the result stays in the build cache.
    Nowhere,
    /// Named with `-t` but neither pushed nor written.
    Unexported(Vec<String>),
}

impl Destination {
    /// The warning for a build whose result goes nowhere, if it does.
    pub fn warning(&self, spawned: bool) -> Option<String> {
        let kept = if spawned {
            "stays only in the build cache of the buildkitd bkd starts"
        } else {
            "stays only in the daemon's build cache and image store"
        };
        match self {
            Destination::Somewhere => None,
            Destination::Nowhere => Some(format!(
                "warning: no output specified: the build result {kept}; push it with --push -t \
                 REF, or write it with -o type=docker,dest=FILE (or oci, tar, local)"
            )),
            Destination::Unexported(names) => Some(format!(
                "warning: {} is neither pushed nor written: the image {kept}; add --push, or -o \
                 type=docker,dest=FILE to write it",
                names
                    .iter()
                    .map(|n| escape_str(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

/// Names and pushes as buildx does: the tags name every image, OCI and
/// docker output; `--push` pushes the image output (adding one when there
/// is none). Tags that no output takes still get an image exporter, so the
/// image is built and its digest known, and the caller warns.
pub fn name_outputs(tags: &[String], push: bool, exports: &mut Vec<ExportSpec>) -> Destination {
    if !tags.is_empty() {
        for e in exports.iter_mut() {
            if IMAGE_KINDS.contains(&e.kind.as_str()) {
                e.attrs.insert("name".into(), tags.join(","));
            }
        }
    }
    let mut named_output = exports
        .iter()
        .any(|e| e.kind != "image" && IMAGE_KINDS.contains(&e.kind.as_str()));
    if push {
        let mut pushed = false;
        for e in exports.iter_mut().filter(|e| e.kind == "image") {
            e.attrs.insert("push".into(), "true".into());
            pushed = true;
        }
        if !pushed {
            let mut attrs = HashMap::new();
            attrs.insert("name".to_string(), tags.join(","));
            attrs.insert("push".into(), "true".into());
            exports.push(ExportSpec {
                kind: "image".into(),
                attrs,
                target: None,
            });
        }
        named_output = true;
    } else if !tags.is_empty() && !named_output && !exports.iter().any(|e| e.kind == "image") {
        let mut attrs = HashMap::new();
        attrs.insert("name".to_string(), tags.join(","));
        exports.push(ExportSpec {
            kind: "image".into(),
            attrs,
            target: None,
        });
    }
    let goes_somewhere = named_output
        || exports
            .iter()
            .any(|e| e.target.is_some() || e.attrs.get("push").is_some_and(|p| parses_true(p)));
    match (goes_somewhere, exports.is_empty()) {
        (true, _) => Destination::Somewhere,
        (false, true) => Destination::Nowhere,
        (false, false) => {
            let names: Vec<String> = exports
                .iter()
                .filter_map(|e| e.attrs.get("name"))
                .flat_map(|n| n.split(',').map(str::to_string))
                .filter(|n| !n.is_empty())
                .collect();
            if names.is_empty() {
                Destination::Nowhere
            } else {
                Destination::Unexported(names)
            }
        }
    }
}

/// `true` in the spellings Go's strconv.ParseBool accepts.
fn parses_true(v: &str) -> bool {
    matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Checks the flags that need no file system or environment: run before
/// anything starts.
pub fn check(args: &BuildxArgs, no_cache: bool) -> Result<()> {
    if args.load {
        return Err(Error::Usage(
            "--load needs a Docker daemon, which bkd does not use: write the image with \
             -o type=docker,dest=- and pipe it to `docker load`"
                .into(),
        ));
    }
    if no_cache && !args.no_cache_filter.is_empty() {
        return Err(Error::Usage(
            "--no-cache and --no-cache-filter cannot be used together".into(),
        ));
    }
    let mut attrs = HashMap::new();
    frontend_attrs(args, &mut attrs, &mut Vec::new())?;
    annotations(&args.annotations)?;
    call_request(args)?;
    Ok(())
}

/// Adds the frontend options these flags map to, and the entitlements
/// they need.
pub fn frontend_attrs(
    args: &BuildxArgs,
    attrs: &mut HashMap<String, String>,
    entitlements: &mut Vec<String>,
) -> Result<()> {
    for (kind, value) in attestations(args)? {
        attrs.insert(format!("attest:{kind}"), value);
    }
    let hosts = extra_hosts(&args.add_hosts)?;
    if !hosts.is_empty() {
        attrs.insert("add-hosts".into(), hosts);
    }
    if let Some(size) = &args.shm_size {
        let bytes = parse_mem_bytes(size).ok_or_else(|| {
            Error::Usage(format!(
                "invalid --shm-size {:?}: expected a size such as 64m or 1g",
                escape_str(size)
            ))
        })?;
        if bytes > 0 {
            attrs.insert("shm-size".into(), bytes.to_string());
        }
    }
    let limits = ulimits(&args.ulimits)?;
    if !limits.is_empty() {
        attrs.insert("ulimit".into(), limits);
    }
    match args.network.as_deref() {
        None | Some("") | Some("default") => {}
        Some("host") => {
            attrs.insert("force-network-mode".into(), "host".into());
            if !entitlements.iter().any(|e| e == "network.host") {
                entitlements.push("network.host".into());
            }
        }
        Some("none") => {
            attrs.insert("force-network-mode".into(), "none".into());
        }
        Some(other) => {
            return Err(Error::Usage(format!(
                "invalid --network {:?}: expected default, none or host",
                escape_str(other)
            )))
        }
    }
    if args.pull {
        attrs.insert("image-resolve-mode".into(), "pull".into());
    }
    if !args.no_cache_filter.is_empty() {
        attrs.insert("no-cache".into(), args.no_cache_filter.join(","));
    }
    for o in &args.opts {
        match o.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                attrs.insert(k.to_string(), v.to_string());
            }
            _ => {
                return Err(Error::Usage(format!(
                    "invalid --opt {:?}: expected KEY=VALUE",
                    escape_str(o)
                )))
            }
        }
    }
    Ok(())
}

/// Adds the annotations to every image, OCI and docker output.
pub fn annotate(args: &BuildxArgs, exports: &mut [ExportSpec]) -> Result<()> {
    let parsed = annotations(&args.annotations)?;
    for e in exports
        .iter_mut()
        .filter(|e| IMAGE_KINDS.contains(&e.kind.as_str()))
    {
        for (k, v) in &parsed {
            e.attrs.insert(k.clone(), v.clone());
        }
    }
    Ok(())
}

/// `--attest`, then `--provenance` and `--sbom`, as `attest:TYPE` values;
/// the first mention of a type wins and a disabled one is left out.
fn attestations(args: &BuildxArgs) -> Result<Vec<(String, String)>> {
    let mut specs = args.attest.clone();
    for (kind, value) in [("provenance", &args.provenance), ("sbom", &args.sbom)] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            specs.push(match parse_bool(v) {
                Some(on) => format!("type={kind},disabled={}", !on),
                None => format!("type={kind},{v}"),
            });
        }
    }
    let mut out: Vec<(String, String)> = Vec::new();
    let mut seen = Vec::new();
    for spec in &specs {
        let bad =
            |why: &str| Error::Usage(format!("invalid --attest {:?}: {why}", escape_str(spec)));
        let fields = split_csv(spec).map_err(|e| bad(&e))?;
        let mut kind = None;
        let mut disabled = false;
        let mut rest: Vec<(String, String)> = Vec::new();
        for field in fields.iter().filter(|f| !f.is_empty()) {
            let (k, v) = field
                .split_once('=')
                .ok_or_else(|| bad(&format!("{:?} is not key=value", escape_str(field))))?;
            match k.trim().to_ascii_lowercase().as_str() {
                "type" => kind = Some(v.to_string()),
                "disabled" => {
                    disabled = parse_bool(v).ok_or_else(|| bad("disabled takes true or false"))?
                }
                _ => rest.push((k.to_string(), v.to_string())),
            }
        }
        let kind = kind
            .filter(|k| !k.is_empty())
            .ok_or_else(|| bad("type is required (type=sbom or type=provenance)"))?;
        if seen.contains(&kind) {
            continue;
        }
        seen.push(kind.clone());
        if disabled {
            continue;
        }
        rest.sort();
        let mut value = vec![format!("type={kind}")];
        value.extend(
            rest.into_iter()
                .map(|(k, v)| csv_field(&format!("{k}={v}"))),
        );
        out.push((kind, value.join(",")));
    }
    Ok(out)
}

/// One CSV field, quoted when it holds a comma or a quote.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `--add-host` values as the frontend's `add-hosts`: `host=ip,...`.
fn extra_hosts(values: &[String]) -> Result<String> {
    let mut hosts = Vec::new();
    for value in values {
        for entry in value.split(',').filter(|e| !e.is_empty()) {
            let bad = || {
                Error::Usage(format!(
                    "invalid --add-host {:?}: expected HOST:IP",
                    escape_str(entry)
                ))
            };
            let (host, ip) = entry
                .split_once('=')
                .or_else(|| entry.split_once(':'))
                .ok_or_else(bad)?;
            if host.is_empty() || ip.is_empty() {
                return Err(bad());
            }
            if ip == "host-gateway" {
                return Err(Error::Usage(format!(
                    "invalid --add-host {:?}: host-gateway is a Docker daemon feature; give the IP",
                    escape_str(entry)
                )));
            }
            let ip = ip
                .strip_prefix('[')
                .and_then(|i| i.strip_suffix(']'))
                .unwrap_or(ip);
            if ip.parse::<std::net::IpAddr>().is_err() {
                return Err(bad());
            }
            hosts.push(format!("{host}={ip}"));
        }
    }
    Ok(hosts.join(","))
}

/// A size as Docker reads `--shm-size`: a number with an optional binary
/// unit (b, k, m, g, t, p, optionally followed by `b` or `ib`).
pub fn parse_mem_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number.parse().ok()?;
    let unit = unit.trim_start().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(&unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return None,
    };
    let bytes = number * (1u64 << shift) as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

const ULIMIT_NAMES: &[&str] = &[
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// `--ulimit` values as the frontend's `ulimit`: `name=soft:hard,...`, one
/// entry per name (the last one given wins).
fn ulimits(values: &[String]) -> Result<String> {
    let mut by_name: Vec<(String, String)> = Vec::new();
    for value in values {
        let bad =
            |why: &str| Error::Usage(format!("invalid --ulimit {:?}: {why}", escape_str(value)));
        let (name, limits) = value
            .split_once('=')
            .ok_or_else(|| bad("expected NAME=SOFT[:HARD]"))?;
        if !ULIMIT_NAMES.contains(&name) {
            return Err(bad(&format!(
                "unknown limit {:?} (known: {})",
                escape_str(name),
                ULIMIT_NAMES.join(", ")
            )));
        }
        let (soft, hard) = limits.split_once(':').unwrap_or((limits, limits));
        let soft: i64 = soft.parse().map_err(|_| bad("limits are whole numbers"))?;
        let hard: i64 = hard.parse().map_err(|_| bad("limits are whole numbers"))?;
        if soft > hard && hard != -1 {
            return Err(bad("the soft limit is greater than the hard limit"));
        }
        by_name.retain(|(n, _)| n != name);
        by_name.push((name.to_string(), format!("{name}={soft}:{hard}")));
    }
    Ok(by_name
        .into_iter()
        .map(|(_, v)| v)
        .collect::<Vec<_>>()
        .join(","))
}

const ANNOTATION_TYPES: &[&str] = &[
    "manifest",
    "manifest-descriptor",
    "index",
    "index-descriptor",
];

/// `--annotation` values as exporter attributes:
/// `annotation[-TYPE][[PLATFORM]].KEY` = VALUE.
fn annotations(values: &[String]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for value in values.iter().filter(|v| !v.is_empty()) {
        let bad = |why: String| {
            Error::Usage(format!(
                "invalid --annotation {:?}: {why}",
                escape_str(value)
            ))
        };
        let (k, v) = value
            .split_once('=')
            .ok_or_else(|| bad("expected KEY=VALUE".into()))?;
        let Some((types, key)) = k.split_once(':') else {
            out.push((format!("annotation.{k}"), v.to_string()));
            continue;
        };
        for type_and_platform in types.split(',') {
            let (kind, platform) = match type_and_platform.split_once('[') {
                Some((t, p)) => (
                    t,
                    Some(
                        p.strip_suffix(']')
                            .ok_or_else(|| bad("a platform ends with ]".into()))?,
                    ),
                ),
                None => (type_and_platform, None),
            };
            if !ANNOTATION_TYPES.contains(&kind) {
                return Err(bad(format!(
                    "unknown annotation type {:?} (known: {})",
                    escape_str(kind),
                    ANNOTATION_TYPES.join(", ")
                )));
            }
            let mut prefix = format!("annotation-{kind}");
            if let Some(p) = platform {
                super::reference::check_platform(p).map_err(&bad)?;
                if kind.starts_with("manifest") {
                    prefix += &format!("[{p}]");
                }
            }
            out.push((format!("{prefix}.{key}"), v.to_string()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::filesend::OutputTarget;

    fn attrs_of(args: &BuildxArgs) -> (HashMap<String, String>, Vec<String>) {
        let mut attrs = HashMap::new();
        let mut ent = Vec::new();
        frontend_attrs(args, &mut attrs, &mut ent).expect("valid flags");
        (attrs, ent)
    }

    #[test]
    fn attestations_map_like_buildx() {
        let args = BuildxArgs {
            attest: vec!["type=sbom,generator=r/scanner:1".into()],
            provenance: Some("mode=max".into()),
            sbom: Some("false".into()),
            ..Default::default()
        };
        let (attrs, _) = attrs_of(&args);
        // --attest came first, so the later --sbom=false does not turn it off.
        assert_eq!(attrs["attest:sbom"], "type=sbom,generator=r/scanner:1");
        assert_eq!(attrs["attest:provenance"], "type=provenance,mode=max");
        let (attrs, _) = attrs_of(&BuildxArgs {
            provenance: Some("true".into()),
            sbom: Some("false".into()),
            ..Default::default()
        });
        assert_eq!(attrs["attest:provenance"], "type=provenance");
        assert!(!attrs.contains_key("attest:sbom"));
        let err = frontend_attrs(
            &BuildxArgs {
                attest: vec!["generator=x".into()],
                ..Default::default()
            },
            &mut HashMap::new(),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("type is required"), "{err}");
    }

    #[test]
    fn run_step_options_map_to_frontend_attrs() {
        let args = BuildxArgs {
            add_hosts: vec!["db:10.0.0.2".into(), "v6=[::1],cache:10.0.0.3".into()],
            shm_size: Some("128m".into()),
            ulimits: vec![
                "nofile=1024:2048".into(),
                "nproc=10".into(),
                "nofile=100:200".into(),
            ],
            network: Some("host".into()),
            pull: true,
            no_cache_filter: vec!["build".into(), "test".into()],
            opts: vec!["build-arg:X=1".into(), "contextsubdir=sub".into()],
            ..Default::default()
        };
        let (attrs, ent) = attrs_of(&args);
        assert_eq!(attrs["add-hosts"], "db=10.0.0.2,v6=::1,cache=10.0.0.3");
        assert_eq!(attrs["shm-size"], "134217728");
        assert_eq!(attrs["ulimit"], "nproc=10:10,nofile=100:200");
        assert_eq!(attrs["force-network-mode"], "host");
        assert_eq!(ent, ["network.host"]);
        assert_eq!(attrs["image-resolve-mode"], "pull");
        assert_eq!(attrs["no-cache"], "build,test");
        assert_eq!(attrs["build-arg:X"], "1");
        assert_eq!(attrs["contextsubdir"], "sub");
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            BuildxArgs {
                add_hosts: vec!["nohost".into()],
                ..Default::default()
            },
            BuildxArgs {
                add_hosts: vec!["h:not-an-ip".into()],
                ..Default::default()
            },
            BuildxArgs {
                shm_size: Some("12q".into()),
                ..Default::default()
            },
            BuildxArgs {
                ulimits: vec!["nofiles=1".into()],
                ..Default::default()
            },
            BuildxArgs {
                ulimits: vec!["nofile=20:10".into()],
                ..Default::default()
            },
            BuildxArgs {
                network: Some("bridge".into()),
                ..Default::default()
            },
            BuildxArgs {
                opts: vec!["novalue".into()],
                ..Default::default()
            },
            BuildxArgs {
                annotations: vec!["bogus:k=v".into()],
                ..Default::default()
            },
            BuildxArgs {
                load: true,
                ..Default::default()
            },
        ] {
            let e = check(&args, false).expect_err(&format!("{args:?}"));
            assert_eq!(e.exit_code(), crate::error::exit::USAGE, "{e}");
        }
        let both = BuildxArgs {
            no_cache_filter: vec!["x".into()],
            ..Default::default()
        };
        assert!(check(&both, true).is_err());
    }

    #[test]
    fn call_like_buildx() {
        let call = |c: &str| {
            call_request(&BuildxArgs {
                call: Some(c.into()),
                ..Default::default()
            })
        };
        assert_eq!(call("build").expect("valid"), None);
        let lint = call("check,format=json").expect("valid").expect("a call");
        assert_eq!((lint.name.as_str(), lint.json), ("lint", true));
        assert_eq!(
            call("targets").expect("valid").expect("a call").name,
            "targets"
        );
        assert!(call("nonsense").is_err());
        assert!(call("outline,format=yaml").is_err());
        let check = call_request(&BuildxArgs {
            check: true,
            ..Default::default()
        });
        assert_eq!(check.expect("valid").expect("a call").name, "lint");
    }

    #[test]
    fn sizes_like_docker() {
        assert_eq!(parse_mem_bytes("64m"), Some(64 << 20));
        assert_eq!(parse_mem_bytes("1g"), Some(1 << 30));
        assert_eq!(parse_mem_bytes("1GiB"), Some(1 << 30));
        assert_eq!(parse_mem_bytes("512"), Some(512));
        assert_eq!(parse_mem_bytes("1.5k"), Some(1536));
        assert_eq!(parse_mem_bytes("10 MB"), Some(10 << 20));
        assert_eq!(parse_mem_bytes("-1"), None);
        assert_eq!(parse_mem_bytes("m"), None);
    }

    #[test]
    fn annotations_like_buildx() {
        let got = annotations(&[
            "org.opencontainers.image.title=app".into(),
            "index,manifest:k=v".into(),
            "manifest[linux/amd64]:p=1".into(),
        ])
        .expect("valid");
        assert_eq!(
            got,
            [
                (
                    "annotation.org.opencontainers.image.title".to_string(),
                    "app".to_string()
                ),
                ("annotation-index.k".into(), "v".into()),
                ("annotation-manifest.k".into(), "v".into()),
                ("annotation-manifest[linux/amd64].p".into(), "1".into()),
            ]
        );
    }

    fn export(kind: &str, target: Option<OutputTarget>) -> ExportSpec {
        ExportSpec {
            kind: kind.into(),
            attrs: HashMap::new(),
            target,
        }
    }

    #[test]
    fn tags_name_image_outputs_and_push_adds_one() {
        let tags = vec!["r/app:1".to_string(), "r/app:latest".to_string()];
        let mut exports = vec![
            export("docker", Some(OutputTarget::File("d.tar".into()))),
            export("tar", Some(OutputTarget::File("t.tar".into()))),
        ];
        assert_eq!(
            name_outputs(&tags, false, &mut exports),
            Destination::Somewhere
        );
        assert_eq!(exports.len(), 2, "the tarball takes the names: {exports:?}");
        assert_eq!(exports[0].attrs["name"], "r/app:1,r/app:latest");
        assert!(!exports[1].attrs.contains_key("name"));

        let mut exports = vec![];
        assert_eq!(
            name_outputs(&tags, true, &mut exports),
            Destination::Somewhere
        );
        assert_eq!(exports[0].kind, "image");
        assert_eq!(exports[0].attrs["push"], "true");

        let mut exports = vec![];
        assert_eq!(
            name_outputs(&tags[..1], false, &mut exports),
            Destination::Unexported(vec!["r/app:1".into()])
        );
        assert_eq!(exports[0].kind, "image", "the image is still built");
        assert!(!exports[0].attrs.contains_key("push"));

        let mut exports = vec![];
        assert_eq!(name_outputs(&[], false, &mut exports), Destination::Nowhere);
        assert!(Destination::Nowhere.warning(true).is_some());
        assert!(Destination::Somewhere.warning(true).is_none());
    }
}
