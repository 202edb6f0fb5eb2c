//! `--secret` in buildctl's syntax: `id=ID,src=PATH`, `id=ID,env=VAR`,
//! `type=file|env`, or `id=ID` alone (the variable ID if set, else the file
//! ID). As in buildctl, a missing file or variable fails before the build;
//! values are read only when the build asks for them (see
//! [`crate::session::secrets`]).

use super::output::split_csv;
pub use crate::session::secrets::SecretSource;

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
        (Some(path), None) => SecretSource::File(path.into()),
        (None, Some(var)) => SecretSource::Env(var),
        (None, None) if kind.as_deref() == Some("env") => SecretSource::Env(id.clone()),
        (None, None) if std::env::var_os(&id).is_some() => SecretSource::Env(id.clone()),
        (None, None) => SecretSource::File(id.clone().into()),
    };
    Ok((id, source))
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
}
