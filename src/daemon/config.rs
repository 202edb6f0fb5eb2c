//! The buildkitd.toml bkd hands a spawned daemon when the command asks
//! something of its registries (plain HTTP, mirrors, private CAs): the
//! user's own configuration (their `--config`, else buildkitd's default
//! file) with `[registry."HOST"]` entries added.

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

/// What the command asks of the spawned daemon's registry configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Registries {
    /// Registries to reach over plain HTTP (`--insecure-registry`).
    pub insecure: Vec<String>,
    /// (registry, mirror) pairs (`--registry-mirror HOST=MIRROR`).
    pub mirrors: Vec<(String, String)>,
    /// (registry, CA file) pairs (`--registry-ca HOST=FILE`).
    pub cas: Vec<(String, PathBuf)>,
}

impl Registries {
    pub fn is_empty(&self) -> bool {
        self.insecure.is_empty() && self.mirrors.is_empty() && self.cas.is_empty()
    }
}

/// Merges plain-HTTP registry entries into the configuration at `base`
/// (missing file: an empty configuration) and returns the new text.
pub fn with_insecure_registries(base: Option<&Path>, hosts: &[String]) -> Result<String, String> {
    with_registries(
        base,
        &Registries {
            insecure: hosts.to_vec(),
            ..Default::default()
        },
    )
}

/// Merges the registry entries into the configuration at `base` (missing
/// file: an empty configuration) and returns the new text. Mirrors and CAs
/// are added to any the configuration already lists.
pub fn with_registries(base: Option<&Path>, wanted: &Registries) -> Result<String, String> {
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
    for host in &wanted.insecure {
        let entry = registry_entry(registries, host)?;
        entry.insert("http".into(), toml::Value::Boolean(true));
        entry.insert("insecure".into(), toml::Value::Boolean(true));
    }
    for (host, mirror) in &wanted.mirrors {
        append_string(registry_entry(registries, host)?, "mirrors", mirror, host)?;
    }
    for (host, ca) in &wanted.cas {
        let ca = ca.display().to_string();
        let entry = registry_entry(registries, host)?;
        append_string(entry, "ca", &ca, host)?;
        // A CA means TLS, even for a registry on loopback, which buildkitd
        // would otherwise reach over plain HTTP.
        entry.entry("http").or_insert(toml::Value::Boolean(false));
    }
    toml::to_string(&doc).map_err(|e| format!("cannot write buildkitd config: {e}"))
}

/// The `[registry."HOST"]` table, created when missing.
fn registry_entry<'a>(
    registries: &'a mut toml::Table,
    host: &str,
) -> Result<&'a mut toml::Table, String> {
    match registries
        .entry(host.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
    {
        toml::Value::Table(t) => Ok(t),
        _ => Err(format!(
            "buildkitd config: registry {host:?} is not a table"
        )),
    }
}

/// Adds `value` to the string list `key` of a registry entry, once.
fn append_string(
    entry: &mut toml::Table,
    key: &str,
    value: &str,
    host: &str,
) -> Result<(), String> {
    let list = entry
        .entry(key.to_string())
        .or_insert_with(|| toml::Value::Array(Vec::new()));
    let toml::Value::Array(list) = list else {
        return Err(format!(
            "buildkitd config: registry {host:?}: {key} is not a list"
        ));
    };
    if !list.iter().any(|v| v.as_str() == Some(value)) {
        list.push(toml::Value::String(value.to_string()));
    }
    Ok(())
}

/// Parses a `--registry-mirror HOST=MIRROR` value. The mirror is a host
/// (with port and path if it has them), as buildkitd.toml takes it.
pub fn parse_mirror(value: &str) -> Result<(String, String), String> {
    let bad = || {
        format!(
            "invalid --registry-mirror {:?}: expected REGISTRY=MIRROR, e.g. docker.io=mirror.example.com",
            crate::text::escape_str(value)
        )
    };
    let (host, mirror) = value.split_once('=').ok_or_else(bad)?;
    check_registry_host(host).map_err(|_| bad())?;
    let mirror = mirror
        .strip_prefix("https://")
        .or_else(|| mirror.strip_prefix("http://"))
        .unwrap_or(mirror)
        .trim_end_matches('/');
    if mirror.is_empty() || mirror.contains(char::is_whitespace) || mirror.contains("://") {
        return Err(bad());
    }
    Ok((host.to_string(), mirror.to_string()))
}

/// Parses a `--registry-ca HOST=FILE` value; the file must be readable
/// now, and is named by its absolute path in the configuration.
pub fn parse_ca(value: &str) -> Result<(String, PathBuf), String> {
    let (host, file) = value.split_once('=').ok_or_else(|| {
        format!(
            "invalid --registry-ca {:?}: expected REGISTRY=FILE",
            crate::text::escape_str(value)
        )
    })?;
    check_registry_host(host).map_err(|_| {
        format!(
            "invalid --registry-ca {:?}: expected REGISTRY=FILE",
            crate::text::escape_str(value)
        )
    })?;
    let path = Path::new(file);
    std::fs::read(path)
        .and_then(|_| path.canonicalize())
        .map(|abs| (host.to_string(), abs))
        .map_err(|e| {
            format!(
                "--registry-ca {}: cannot read {}: {}",
                crate::text::escape_str(host),
                crate::text::escape_path(path),
                crate::error::io_reason(&e)
            )
        })
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
    fn mirrors_and_cas_join_the_users_lists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("buildkitd.toml");
        std::fs::write(
            &base,
            "[registry.\"docker.io\"]\nmirrors = [\"old.example\"]\n",
        )
        .expect("write");
        let wanted = Registries {
            insecure: vec!["mirror.local:5000".into()],
            mirrors: vec![
                ("docker.io".into(), "mirror.local:5000".into()),
                ("docker.io".into(), "old.example".into()),
            ],
            cas: vec![("registry.corp".into(), PathBuf::from("/etc/ca.pem"))],
        };
        let text = with_registries(Some(&base), &wanted).expect("merge");
        let doc: toml::Table = text.parse().expect("valid toml");
        let mirrors = doc["registry"]["docker.io"]["mirrors"]
            .as_array()
            .expect("list");
        let mirrors: Vec<&str> = mirrors.iter().filter_map(|m| m.as_str()).collect();
        assert_eq!(mirrors, ["old.example", "mirror.local:5000"]);
        assert_eq!(
            doc["registry"]["registry.corp"]["ca"][0].as_str(),
            Some("/etc/ca.pem")
        );
        assert_eq!(
            doc["registry"]["registry.corp"]["http"].as_bool(),
            Some(false)
        );
        assert_eq!(
            doc["registry"]["mirror.local:5000"]["http"].as_bool(),
            Some(true)
        );
    }

    #[test]
    fn mirror_and_ca_values_are_checked() {
        assert_eq!(
            parse_mirror("docker.io=https://mirror.example.com/").expect("valid"),
            ("docker.io".to_string(), "mirror.example.com".to_string())
        );
        assert!(parse_mirror("docker.io").is_err());
        assert!(parse_mirror("=m").is_err());
        assert!(parse_mirror("docker.io=").is_err());
        let e = parse_ca("r.example=/nonexistent/ca.pem").unwrap_err();
        assert!(e.contains("no such file"), "{e}");
        assert!(parse_ca("/ca.pem").is_err());
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
