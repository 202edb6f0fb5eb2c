//! `--cache-to`/`--cache-from` (and buildctl's `--export-cache`/
//! `--import-cache`): comma-separated `type=...,key=value` specs, or a bare
//! image reference meaning a registry cache.
//!
//! Cache attributes can hold credentials (`token=` for gha, S3 keys), so
//! error messages name the problem and never echo the spec.

use std::collections::HashMap;

use super::output::split_csv;
use crate::client::solve::CacheSpec;
use crate::error::Error;

/// Cache backends the daemon implements; their attributes pass through.
pub const KNOWN_TYPES: &[&str] = &["registry", "inline", "local", "s3", "gha", "azblob"];

/// Whether the spec exports or imports cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Export,
    Import,
}

impl Direction {
    fn local_key(self) -> &'static str {
        match self {
            Direction::Export => "dest",
            Direction::Import => "src",
        }
    }
}

/// Parses one cache spec; `flag` names the flag in messages.
pub fn parse_cache(flag: &str, spec: &str, direction: Direction) -> Result<CacheSpec, String> {
    if spec.trim().is_empty() {
        return Err(format!(
            "invalid {flag}: empty (expected e.g. type=registry,ref=REGISTRY/IMAGE:cache)"
        ));
    }
    if !spec.contains("type=") {
        // A bare reference, as buildctl still accepts.
        if spec.contains(',') || spec.contains('=') {
            return Err(format!(
                "invalid {flag}: type=TYPE is required (e.g. type=registry,ref=REGISTRY/IMAGE:cache)"
            ));
        }
        let mut attrs = HashMap::from([("ref".to_string(), spec.to_string())]);
        if direction == Direction::Export {
            attrs.insert("mode".into(), "min".into());
        }
        return Ok(CacheSpec {
            kind: "registry".into(),
            attrs,
        });
    }
    let fields = split_csv(spec).map_err(|e| format!("invalid {flag}: {e}"))?;
    let mut kind = None;
    let mut attrs = HashMap::new();
    for field in fields {
        let Some((key, value)) = field.split_once('=') else {
            return Err(format!(
                "invalid {flag}: a field is not key=value (fields: {})",
                field_names(spec)
            ));
        };
        let key = key.trim().to_ascii_lowercase();
        if key == "type" {
            kind = Some(value.to_string());
        } else {
            attrs.insert(key, value.to_string());
        }
    }
    let kind = kind.filter(|k| !k.is_empty()).ok_or_else(|| {
        format!(
            "invalid {flag}: type=TYPE is required (one of {})",
            KNOWN_TYPES.join(", ")
        )
    })?;
    if !KNOWN_TYPES.contains(&kind.as_str()) {
        return Err(format!(
            "invalid {flag}: unknown cache type {kind:?} (known: {})",
            KNOWN_TYPES.join(", ")
        ));
    }
    match kind.as_str() {
        "registry" if attrs.get("ref").is_none_or(|r| r.is_empty()) => {
            return Err(format!(
                "invalid {flag}: the registry cache needs ref=REGISTRY/IMAGE:TAG"
            ));
        }
        "local" => {
            let key = direction.local_key();
            if attrs.get(key).is_none_or(|d| d.is_empty()) {
                return Err(format!(
                    "invalid {flag}: the local cache needs {key}=DIRECTORY"
                ));
            }
        }
        "inline" if direction == Direction::Import => {
            return Err(format!(
                "invalid {flag}: an inline cache is imported from its image: use type=registry,ref=IMAGE"
            ));
        }
        "gha" => load_gha_env(flag, &mut attrs)?,
        _ => {}
    }
    if direction == Direction::Export {
        attrs.entry("mode".into()).or_insert_with(|| "min".into());
    }
    Ok(CacheSpec { kind, attrs })
}

/// The keys of a spec, for messages that must not show values.
fn field_names(spec: &str) -> String {
    spec.split(',')
        .map(|f| f.split_once('=').map_or("?", |(k, _)| k))
        .collect::<Vec<_>>()
        .join(",")
}

/// GitHub Actions cache: `url` and `token` default to the runner's
/// environment, as buildctl does.
fn load_gha_env(flag: &str, attrs: &mut HashMap<String, String>) -> Result<(), String> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let v2 = attrs.get("version").map(String::as_str) == Some("2")
        || env("ACTIONS_CACHE_SERVICE_V2").is_some_and(|v| v == "true" || v == "1");
    if v2 && !attrs.contains_key("url_v2") {
        if let Some(u) = env("ACTIONS_RESULTS_URL") {
            attrs.insert("url_v2".into(), u);
        }
    }
    if !attrs.contains_key("url") {
        if let Some(u) = env("ACTIONS_CACHE_URL").or_else(|| env("ACTIONS_RESULTS_URL")) {
            attrs.insert("url".into(), u);
        }
    }
    if !attrs.contains_key("url") && !attrs.contains_key("url_v2") {
        return Err(format!(
            "invalid {flag}: the gha cache needs url= or $ACTIONS_CACHE_URL"
        ));
    }
    if !attrs.contains_key("token") {
        let token = env("ACTIONS_RUNTIME_TOKEN").ok_or_else(|| {
            format!("invalid {flag}: the gha cache needs token= or $ACTIONS_RUNTIME_TOKEN")
        })?;
        attrs.insert("token".into(), token);
    }
    Ok(())
}

/// The cache exports of one flag; local export directories must be usable
/// before a daemon starts.
pub fn cache_exports(flag: &str, specs: &[String]) -> crate::error::Result<Vec<CacheSpec>> {
    let exports = parse_caches(flag, specs, Direction::Export).map_err(Error::Usage)?;
    for spec in exports.iter().filter(|c| c.kind == "local") {
        if let Some(dir) = spec.attrs.get("dest") {
            crate::client::local_cache::check_writable(std::path::Path::new(dir))?;
        }
    }
    Ok(exports)
}

/// The cache imports of one flag.
pub fn cache_imports(flag: &str, specs: &[String]) -> crate::error::Result<Vec<CacheSpec>> {
    parse_caches(flag, specs, Direction::Import).map_err(Error::Usage)
}

/// Parses every spec of one flag.
pub fn parse_caches(
    flag: &str,
    specs: &[String],
    direction: Direction,
) -> Result<Vec<CacheSpec>, String> {
    specs
        .iter()
        .map(|s| parse_cache(flag, s, direction))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(spec: &str, d: Direction) -> CacheSpec {
        parse_cache("--cache-to", spec, d).expect(spec)
    }

    #[test]
    fn registry_cache_like_buildctl() {
        let c = ok(
            "type=registry,ref=r.example/app:cache,mode=max",
            Direction::Export,
        );
        assert_eq!(c.kind, "registry");
        assert_eq!(c.attrs["ref"], "r.example/app:cache");
        assert_eq!(c.attrs["mode"], "max");
        let c = ok("type=registry,ref=r.example/app:cache", Direction::Export);
        assert_eq!(c.attrs["mode"], "min", "export mode defaults to min");
        let c = ok("type=registry,ref=r.example/app:cache", Direction::Import);
        assert!(!c.attrs.contains_key("mode"));
    }

    #[test]
    fn bare_reference_is_a_registry_cache() {
        let c = ok("r.example/app:cache", Direction::Export);
        assert_eq!(c.kind, "registry");
        assert_eq!(c.attrs["ref"], "r.example/app:cache");
        assert_eq!(c.attrs["mode"], "min");
        let c = ok("r.example/app:cache", Direction::Import);
        assert_eq!(c.attrs.len(), 1);
    }

    #[test]
    fn other_backends_pass_through() {
        assert_eq!(ok("type=inline", Direction::Export).kind, "inline");
        let c = ok("type=local,dest=/cache", Direction::Export);
        assert_eq!(c.attrs["dest"], "/cache");
        let c = ok("type=local,src=/cache", Direction::Import);
        assert_eq!(c.attrs["src"], "/cache");
        let c = ok(
            "type=s3,region=eu-west-1,bucket=b,name=app",
            Direction::Import,
        );
        assert_eq!(c.attrs["bucket"], "b");
        let c = ok("type=gha,url=http://cache,token=t0k3n", Direction::Export);
        assert_eq!(c.attrs["token"], "t0k3n");
    }

    #[test]
    fn bad_specs_are_explained_without_values() {
        let err = |s: &str, d| parse_cache("--cache-to", s, d).unwrap_err();
        assert!(err("", Direction::Export).contains("empty"));
        assert!(err("type=zip", Direction::Export).contains("unknown cache type \"zip\""));
        assert!(err("type=registry", Direction::Export).contains("needs ref="));
        assert!(err("type=local,src=/x", Direction::Export).contains("needs dest="));
        assert!(err("type=local,dest=/x", Direction::Import).contains("needs src="));
        assert!(err("type=inline", Direction::Import).contains("imported from its image"));
        assert!(err("ref=x,mode=max", Direction::Export).contains("type=TYPE is required"));
        let e = err("type=s3,secret_access_key=hunter2,oops", Direction::Export);
        assert!(e.contains("not key=value"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
}
