//! `--output` in buildctl's syntax: comma-separated `key=value` attributes,
//! with CSV quoting so a value may itself contain commas
//! (`type=image,"name=a,b",push=true`).

use std::collections::HashMap;
use std::path::PathBuf;

use crate::client::solve::ExportSpec;
use crate::session::filesend::OutputTarget;

pub const FILE_TYPES: &[&str] = &["tar", "oci", "docker"];
pub const KNOWN_TYPES: &[&str] = &["image", "registry", "tar", "oci", "docker", "local"];

/// Splits one CSV record: fields separated by `,`, a field may be quoted
/// with `"`, and `""` inside quotes is one quote.
pub fn split_csv(s: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut in_quotes = false;
    let mut field_started_quoted = false;
    while let Some(c) = chars.next() {
        match (c, in_quotes) {
            ('"', false) if cur.is_empty() && !field_started_quoted => {
                in_quotes = true;
                field_started_quoted = true;
            }
            ('"', true) => {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    in_quotes = false;
                }
            }
            (',', false) => {
                fields.push(std::mem::take(&mut cur));
                field_started_quoted = false;
            }
            (c, _) => {
                if field_started_quoted && !in_quotes {
                    return Err(format!("unexpected {c:?} after a closing quote"));
                }
                cur.push(c)
            }
        }
    }
    if in_quotes {
        return Err("unterminated quote".into());
    }
    fields.push(cur);
    Ok(fields)
}

/// Parses `key=value` fields into a map; keys are lower-cased.
pub fn parse_attrs(flag: &str, s: &str) -> Result<HashMap<String, String>, String> {
    let mut attrs = HashMap::new();
    for field in split_csv(s).map_err(|e| format!("invalid {flag} {s:?}: {e}"))? {
        let field = field.trim();
        if field.is_empty() {
            continue;
        }
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| format!("invalid {flag} {s:?}: {field:?} is not key=value"))?;
        attrs.insert(k.trim().to_ascii_lowercase(), v.to_string());
    }
    Ok(attrs)
}

/// `false` in the spellings Go's strconv.ParseBool accepts.
fn parses_false(v: &str) -> bool {
    matches!(v, "0" | "f" | "F" | "false" | "FALSE" | "False")
}

/// Parses one `--output` value.
pub fn parse_output(s: &str) -> Result<ExportSpec, String> {
    let mut attrs = parse_attrs("--output", s)?;
    let kind = attrs.remove("type").ok_or_else(|| {
        format!("invalid --output {s:?}: type is required (e.g. type=tar,dest=out.tar)")
    })?;
    if !KNOWN_TYPES.contains(&kind.as_str()) {
        return Err(format!(
            "invalid --output {s:?}: unknown output type {kind:?} (known: {})",
            KNOWN_TYPES.join(", ")
        ));
    }
    let dest = attrs.remove("dest");
    let target = match kind.as_str() {
        "local" => {
            let dest = dest.filter(|d| !d.is_empty()).ok_or_else(|| {
                format!("invalid --output {s:?}: the local output needs dest=DIRECTORY")
            })?;
            Some(OutputTarget::Dir(PathBuf::from(dest)))
        }
        // An OCI layout directory, written through the session's content
        // store; an unreadable `tar` value means a tar file, as in buildctl.
        "oci" | "docker" if attrs.get("tar").is_some_and(|t| parses_false(t)) => {
            let dest = dest.filter(|d| !d.is_empty()).ok_or_else(|| {
                format!(
                    "invalid --output {s:?}: the {kind} output with tar=false needs dest=DIRECTORY"
                )
            })?;
            Some(OutputTarget::Dir(PathBuf::from(dest)))
        }
        k if FILE_TYPES.contains(&k) => match dest.as_deref() {
            Some("-") => Some(OutputTarget::Stdout),
            Some(d) if !d.is_empty() => Some(OutputTarget::File(d.into())),
            _ => {
                return Err(format!(
                    "invalid --output {s:?}: the {k} output needs dest=FILE (or dest=- for stdout)"
                ))
            }
        },
        _ => {
            if dest.is_some() {
                return Err(format!(
                    "invalid --output {s:?}: the {kind} output takes no dest"
                ));
            }
            None
        }
    };
    let kind = if kind == "registry" {
        attrs.insert("push".into(), "true".into());
        "image".to_string()
    } else {
        kind
    };
    Ok(ExportSpec {
        kind,
        attrs,
        target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_without_tar_is_a_directory() {
        let spec = parse_output("type=oci,dest=out,tar=false").expect("parse");
        assert_eq!(spec.target, Some(OutputTarget::Dir("out".into())));
        assert_eq!(spec.attrs["tar"], "false", "the daemon needs tar=false");
        let spec = parse_output("type=docker,dest=out.tar,tar=bogus").expect("parse");
        assert_eq!(spec.target, Some(OutputTarget::File("out.tar".into())));
        assert!(parse_output("type=oci,tar=false").is_err());
    }

    #[test]
    fn csv_quoting_like_buildctl() {
        assert_eq!(split_csv("a=1,b=2").expect("csv"), ["a=1", "b=2"]);
        assert_eq!(
            split_csv("type=image,\"name=a,b\",push=true").expect("csv"),
            ["type=image", "name=a,b", "push=true"]
        );
        assert_eq!(split_csv("\"x=\"\"q\"\"\"").expect("csv"), ["x=\"q\""]);
        assert!(split_csv("\"open").is_err());
    }

    #[test]
    fn tar_output_with_dest() {
        let spec = parse_output("type=tar,dest=out.tar").expect("parse");
        assert_eq!(spec.kind, "tar");
        assert!(spec.attrs.is_empty(), "dest stays on the client");
        assert_eq!(spec.target, Some(OutputTarget::File("out.tar".into())));
        assert_eq!(
            parse_output("type=tar,dest=-").expect("parse").target,
            Some(OutputTarget::Stdout)
        );
    }

    #[test]
    fn image_output_keeps_its_attributes() {
        let spec = parse_output("type=image,\"name=r/a:1,r/a:2\",push=true,registry.insecure=true")
            .expect("parse");
        assert_eq!(spec.kind, "image");
        assert_eq!(spec.attrs["name"], "r/a:1,r/a:2");
        assert_eq!(spec.attrs["push"], "true");
        assert_eq!(spec.target, None);
    }

    #[test]
    fn bad_outputs_are_explained() {
        assert!(parse_output("dest=x")
            .unwrap_err()
            .contains("type is required"));
        assert!(parse_output("type=zip,dest=x")
            .unwrap_err()
            .contains("unknown output type \"zip\""));
        assert!(parse_output("type=tar")
            .unwrap_err()
            .contains("needs dest=FILE"));
        assert!(parse_output("type=local")
            .unwrap_err()
            .contains("needs dest=DIRECTORY"));
        assert!(parse_output("type=tar,oops")
            .unwrap_err()
            .contains("not key=value"));
    }
}
