//! `--secret` in buildctl's syntax: `id=ID,src=PATH`, `id=ID,env=VAR`,
//! `type=file|env`, or `id=ID` alone (the variable ID if set, else the file
//! ID). Values are read once, before the build, so a missing file fails
//! early; they live only in [`SecretValue`]s, which never print.

use super::output::split_csv;
use crate::error::io_reason;
use crate::session::secrets::SecretValue;

/// The largest secret the daemon accepts (BuildKit's limit).
pub const MAX_SECRET_SIZE: u64 = 500 * 1024;

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(String),
    Env(String),
}

/// Parses one `--secret` value into its id and source.
pub fn parse_secret(spec: &str) -> Result<(String, SecretSource), String> {
    let bad = |why: String| format!("invalid --secret {spec:?}: {why}");
    let fields = split_csv(spec).map_err(bad)?;
    let (mut kind, mut id, mut src, mut env) = (None, None, None, None);
    for field in fields {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| bad(format!("field {field:?} must be key=value")))?;
        match key.to_ascii_lowercase().as_str() {
            "type" if value == "file" || value == "env" => kind = Some(value.to_string()),
            "type" => return Err(bad(format!("unsupported type {value:?} (file or env)"))),
            "id" => id = Some(value.to_string()),
            "src" | "source" => src = Some(value.to_string()),
            "env" => env = Some(value.to_string()),
            other => return Err(bad(format!("unknown key {other:?}"))),
        }
    }
    let id = id
        .filter(|i| !i.is_empty())
        .ok_or_else(|| bad("missing id=".into()))?;
    if kind.as_deref() == Some("env") && env.is_none() {
        env = src.take();
    }
    let source = match (src, env) {
        (Some(_), Some(_)) => return Err(bad("give src= or env=, not both".into())),
        (Some(path), None) => SecretSource::File(path),
        (None, Some(var)) => SecretSource::Env(var),
        (None, None) if kind.as_deref() == Some("env") => SecretSource::Env(id.clone()),
        (None, None) if std::env::var_os(&id).is_some() => SecretSource::Env(id.clone()),
        (None, None) => SecretSource::File(id.clone()),
    };
    Ok((id, source))
}

/// Reads the secret's value now. Errors name the secret and the file or
/// variable, never the value.
pub fn load_secret(id: &str, source: &SecretSource) -> Result<SecretValue, String> {
    match source {
        SecretSource::Env(var) => std::env::var_os(var)
            .map(|v| SecretValue(v.into_encoded_bytes()))
            .ok_or_else(|| format!("secret {id}: environment variable {var} is not set")),
        SecretSource::File(path) => {
            let meta = std::fs::metadata(path)
                .map_err(|e| format!("secret {id}: cannot read {path}: {}", io_reason(&e)))?;
            if meta.len() > MAX_SECRET_SIZE {
                return Err(format!(
                    "secret {id}: {path} is {} bytes, more than the {MAX_SECRET_SIZE} bytes BuildKit accepts",
                    meta.len()
                ));
            }
            std::fs::read(path)
                .map(SecretValue)
                .map_err(|e| format!("secret {id}: cannot read {path}: {}", io_reason(&e)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildctl_forms() {
        let p = |s: &str| parse_secret(s).expect(s);
        assert_eq!(
            p("id=a,src=/x"),
            ("a".into(), SecretSource::File("/x".into()))
        );
        assert_eq!(
            p("id=a,source=/x"),
            ("a".into(), SecretSource::File("/x".into()))
        );
        assert_eq!(p("id=a,env=V"), ("a".into(), SecretSource::Env("V".into())));
        assert_eq!(
            p("type=env,id=a,src=V"),
            ("a".into(), SecretSource::Env("V".into()))
        );
        assert_eq!(
            p("type=env,id=a"),
            ("a".into(), SecretSource::Env("a".into()))
        );
        assert_eq!(
            p("type=file,id=a"),
            ("a".into(), SecretSource::File("a".into()))
        );
    }

    #[test]
    fn rejects_malformed_specs() {
        for bad in [
            "",
            "src=/x",
            "id=",
            "id=a,src",
            "id=a,type=ssh",
            "id=a,color=red",
            "id=a,src=/x,env=V",
            "id=a,\"src=/x",
        ] {
            let e = parse_secret(bad).expect_err(bad);
            assert!(e.starts_with("invalid --secret"), "{e}");
        }
    }

    #[test]
    fn load_errors_never_contain_the_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'z'; MAX_SECRET_SIZE as usize + 1]).expect("write");
        let e =
            load_secret("b", &SecretSource::File(big.display().to_string())).expect_err("too big");
        assert!(e.contains("more than") && !e.contains("zzz"), "{e}");
        let e = load_secret("m", &SecretSource::File("/no/such/file".into())).expect_err("missing");
        assert_eq!(
            e,
            "secret m: cannot read /no/such/file: no such file or directory"
        );
        let e = load_secret("v", &SecretSource::Env("BKD_TEST_UNSET_VARIABLE".into()))
            .expect_err("unset");
        assert!(e.contains("BKD_TEST_UNSET_VARIABLE is not set"), "{e}");
    }
}
