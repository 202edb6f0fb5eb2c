//! The buildkitd.toml bkd hands a spawned daemon when registries must be
//! reached over plain HTTP: the user's own configuration (their `--config`,
//! else buildkitd's default file) with `[registry."HOST"]` entries added.

use std::path::{Path, PathBuf};

/// buildkitd's configuration file when no `--config` is given.
pub fn default_path(rootless: bool) -> Option<PathBuf> {
    if !rootless {
        return Some(PathBuf::from("/etc/buildkit/buildkitd.toml"));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    Some(base.join("buildkit").join("buildkitd.toml"))
}

/// The `--config` value among the daemon flags, if any.
pub fn flag_value(flags: &[String]) -> Option<PathBuf> {
    let mut it = flags.iter();
    while let Some(f) = it.next() {
        if f == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = f.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    None
}

/// The daemon flags without `--config`, which bkd replaces.
pub fn without_config_flag(flags: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = flags.iter();
    while let Some(f) = it.next() {
        if f == "--config" {
            it.next();
        } else if !f.starts_with("--config=") {
            out.push(f.clone());
        }
    }
    out
}

/// Merges plain-HTTP registry entries into the configuration at `base`
/// (missing file: an empty configuration) and returns the new text.
pub fn with_insecure_registries(base: Option<&Path>, hosts: &[String]) -> Result<String, String> {
    let mut doc: toml::Table = match base {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => text.parse().map_err(|e| {
                format!(
                    "cannot parse buildkitd config {}: {e}",
                    crate::text::escape_path(path)
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
            Err(e) => {
                return Err(format!(
                    "cannot read buildkitd config {}: {e}",
                    crate::text::escape_path(path)
                ))
            }
        },
        None => toml::Table::new(),
    };
    let registries = doc
        .entry("registry")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let toml::Value::Table(registries) = registries else {
        return Err("buildkitd config: `registry` is not a table".into());
    };
    for host in hosts {
        let entry = registries
            .entry(host.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(entry) = entry else {
            return Err(format!(
                "buildkitd config: registry {host:?} is not a table"
            ));
        };
        entry.insert("http".into(), toml::Value::Boolean(true));
        entry.insert("insecure".into(), toml::Value::Boolean(true));
    }
    toml::to_string(&doc).map_err(|e| format!("cannot write buildkitd config: {e}"))
}

/// Checks an `--insecure-registry` value: a host, optionally with a port.
pub fn check_registry_host(host: &str) -> Result<(), String> {
    let valid = !host.is_empty()
        && !host.contains("://")
        && !host.contains('/')
        && !host.contains(char::is_whitespace);
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid --insecure-registry {host:?}: expected HOST or HOST:PORT"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_are_added_to_the_users_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("buildkitd.toml");
        std::fs::write(
            &base,
            "debug = true\n[registry.\"a.example\"]\nmirrors = [\"m.example\"]\n",
        )
        .expect("write");
        let text =
            with_insecure_registries(Some(&base), &["a.example".into(), "127.0.0.1:5000".into()])
                .expect("merge");
        let doc: toml::Table = text.parse().expect("valid toml");
        assert_eq!(doc["debug"].as_bool(), Some(true));
        let a = &doc["registry"]["a.example"];
        assert_eq!(a["mirrors"][0].as_str(), Some("m.example"));
        assert_eq!(a["http"].as_bool(), Some(true));
        let b = &doc["registry"]["127.0.0.1:5000"];
        assert_eq!(b["insecure"].as_bool(), Some(true));
    }

    #[test]
    fn missing_base_is_empty_and_broken_base_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = with_insecure_registries(Some(&dir.path().join("none.toml")), &["h".into()])
            .expect("merge");
        assert!(text.contains("[registry.h]"), "{text}");
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "registry = [").expect("write");
        let err = with_insecure_registries(Some(&bad), &["h".into()]).unwrap_err();
        assert!(err.contains("cannot parse buildkitd config"), "{err}");
    }

    #[test]
    fn config_flag_is_found_and_replaced() {
        let flags: Vec<String> = ["--debug", "--config", "/c.toml", "--x"]
            .map(String::from)
            .into();
        assert_eq!(flag_value(&flags), Some(PathBuf::from("/c.toml")));
        assert_eq!(without_config_flag(&flags), ["--debug", "--x"]);
        let flags: Vec<String> = ["--config=/d.toml"].map(String::from).into();
        assert_eq!(flag_value(&flags), Some(PathBuf::from("/d.toml")));
        assert!(without_config_flag(&flags).is_empty());
    }

    #[test]
    fn registry_hosts_are_checked() {
        assert!(check_registry_host("127.0.0.1:5000").is_ok());
        assert!(check_registry_host("http://x").is_err());
        assert!(check_registry_host("x/y").is_err());
        assert!(check_registry_host("").is_err());
    }
}
