//! `--ssh` in buildctl's syntax: `default`, `ID` (both mean the agent at
//! `$SSH_AUTH_SOCK`) or `ID=PATH[,PATH...]`. Every agent socket is checked
//! before the build, so a missing or dead agent fails at once rather than
//! inside a build step.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use crate::error::{io_reason, Error, Result};
use crate::session::ssh::{AgentSockets, DEFAULT_ID};

/// One `--ssh` value as typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshSpec {
    pub id: String,
    /// Empty: the agent at `$SSH_AUTH_SOCK`.
    pub paths: Vec<String>,
}

/// Parses one `--ssh` value.
pub fn parse_ssh(spec: &str) -> Result<SshSpec, String> {
    let bad = |why: &str| format!("invalid --ssh {spec:?}: {why}");
    if spec.is_empty() {
        return Err(bad("expected default, ID or ID=SOCKET"));
    }
    let (id, paths) = match spec.split_once('=') {
        Some((id, "")) => (id, Vec::new()),
        Some((id, list)) => (id, list.split(',').map(str::to_string).collect()),
        None => (spec, Vec::new()),
    };
    // buildctl treats an empty id as the default one.
    let id = if id.is_empty() { DEFAULT_ID } else { id };
    if id.contains(',') {
        return Err(bad("an ssh id cannot contain ','"));
    }
    if paths.iter().any(String::is_empty) {
        return Err(bad("empty path in the list"));
    }
    if paths.iter().any(|p| p.starts_with("raw=")) {
        return Err(bad("raw= is not supported"));
    }
    Ok(SshSpec {
        id: id.to_string(),
        paths,
    })
}

/// The agent socket for one spec; `auth_sock` is `$SSH_AUTH_SOCK`. The
/// socket must accept a connection now.
pub fn agent_socket(spec: &SshSpec, auth_sock: Option<&OsStr>) -> Result<PathBuf, String> {
    let id = &spec.id;
    let paths: Vec<PathBuf> = if spec.paths.is_empty() {
        match auth_sock.filter(|s| !s.is_empty()) {
            Some(sock) => vec![PathBuf::from(sock)],
            None => {
                return Err(format!(
                "--ssh {id}: SSH_AUTH_SOCK is not set; start ssh-agent or give --ssh {id}=SOCKET"
            ))
            }
        }
    } else {
        spec.paths.iter().map(PathBuf::from).collect()
    };
    let mut socket = None;
    for path in paths {
        let meta = std::fs::metadata(&path).map_err(|e| {
            format!(
                "--ssh {id}: cannot use {}: {}",
                crate::text::escape_path(&path),
                io_reason(&e)
            )
        })?;
        if meta.file_type().is_socket() {
            if socket.is_some() {
                return Err(format!(
                    "--ssh {}: give one agent socket, not several",
                    crate::text::escape_str(id)
                ));
            }
            socket = Some(path);
        } else if meta.is_file() {
            return Err(format!(
                "--ssh {id}: {} is a key file; key files are not supported yet: load the key into ssh-agent (ssh-add) and pass its socket",
                crate::text::escape_path(&path)
            ));
        } else {
            return Err(format!(
                "--ssh {id}: {} is not an ssh agent socket",
                crate::text::escape_path(&path)
            ));
        }
    }
    let socket = socket.ok_or_else(|| {
        format!(
            "--ssh {}: no agent socket given",
            crate::text::escape_str(id)
        )
    })?;
    std::os::unix::net::UnixStream::connect(&socket).map_err(|e| {
        format!(
            "--ssh {id}: cannot connect to the ssh agent at {}: {}",
            crate::text::escape_path(&socket),
            io_reason(&e)
        )
    })?;
    Ok(socket)
}

/// Resolves every `--ssh` flag into agent sockets by id. All flags are
/// parsed before any socket is looked at, so a typo is reported as such.
pub fn agent_sockets(flags: &[String]) -> Result<AgentSockets> {
    let mut specs: Vec<SshSpec> = Vec::new();
    for flag in flags {
        let spec = parse_ssh(flag).map_err(Error::Usage)?;
        if specs.iter().any(|s| s.id == spec.id) {
            return Err(Error::Usage(format!("--ssh {} is given twice", spec.id)));
        }
        specs.push(spec);
    }
    let auth_sock = std::env::var_os("SSH_AUTH_SOCK");
    let mut sockets = HashMap::new();
    for spec in specs {
        let socket = agent_socket(&spec, auth_sock.as_deref()).map_err(Error::Input)?;
        sockets.insert(spec.id, socket);
    }
    Ok(sockets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, paths: &[&str]) -> SshSpec {
        SshSpec {
            id: id.into(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn parses_buildctl_forms() {
        let p = |s: &str| parse_ssh(s).expect(s);
        assert_eq!(p("default"), spec("default", &[]));
        assert_eq!(p("deploy"), spec("deploy", &[]));
        assert_eq!(p("deploy="), spec("deploy", &[]));
        assert_eq!(p("=/a.sock"), spec("default", &["/a.sock"]));
        assert_eq!(p("deploy=/a.sock"), spec("deploy", &["/a.sock"]));
        assert_eq!(p("k=/a,/b"), spec("k", &["/a", "/b"]));
    }

    #[test]
    fn rejects_malformed_specs() {
        for bad in ["", "a,b", "a=/x,", "a=,/x", "a=raw=true"] {
            let e = parse_ssh(bad).expect_err(bad);
            assert!(e.starts_with("invalid --ssh"), "{e}");
        }
    }

    #[test]
    fn finds_live_sockets_and_explains_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("agent.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
        let sock_str = sock.display().to_string();

        let found = agent_socket(&spec("default", &[]), Some(sock.as_os_str())).expect("env");
        assert_eq!(found, sock);
        let found = agent_socket(&spec("a", &[&sock_str]), None).expect("path");
        assert_eq!(found, sock);

        let e = agent_socket(&spec("default", &[]), None).expect_err("no env");
        assert_eq!(
            e,
            "--ssh default: SSH_AUTH_SOCK is not set; start ssh-agent or give --ssh default=SOCKET"
        );
        let e = agent_socket(&spec("a", &["/no/such.sock"]), None).expect_err("missing");
        assert_eq!(
            e,
            "--ssh a: cannot use /no/such.sock: no such file or directory"
        );
        let e = agent_socket(&spec("a", &[&sock_str, &sock_str]), None).expect_err("two");
        assert!(e.contains("one agent socket"), "{e}");
        let key = dir.path().join("id_ed25519");
        std::fs::write(&key, "not shown").expect("write");
        let e = agent_socket(&spec("a", &[&key.display().to_string()]), None).expect_err("key");
        assert!(e.contains("key files are not supported yet"), "{e}");
        let e =
            agent_socket(&spec("a", &[&dir.path().display().to_string()]), None).expect_err("dir");
        assert!(e.ends_with("is not an ssh agent socket"), "{e}");

        // A socket file whose agent is gone.
        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
        let e = agent_socket(&spec("a", &[&stale.display().to_string()]), None).expect_err("stale");
        assert!(e.contains("cannot connect to the ssh agent at"), "{e}");
    }

    #[test]
    fn duplicate_ids_are_a_usage_error() {
        let e = agent_sockets(&["x=/a".into(), "x=/b".into()]).expect_err("dup");
        assert!(
            matches!(e, Error::Usage(ref m) if m == "--ssh x is given twice"),
            "{e}"
        );
    }
}
