//! Where the build context and the Dockerfile come from: a local
//! directory, a Git or HTTP(S) URL the frontend fetches itself (as buildx
//! passes it), or stdin (`-f -`, or `-` as the context for a Dockerfile
//! with no context). Stdin is read once, before anything starts, so a
//! retried build sees the same Dockerfile.

use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use crate::error::{io_reason, Error, Result};
use crate::session::filesync::LocalDirs;
use crate::text::{escape_path, escape_str};

/// The build context as given.
#[derive(Debug)]
pub enum ContextSource {
    /// A local directory, served through the session.
    Dir(PathBuf),
    /// A Git or HTTP(S) URL: the daemon fetches it.
    Remote(String),
    /// No context (`-`): an empty directory.
    Empty(tempfile::TempDir),
}

/// The context and, when it came on stdin, the Dockerfile, held for the
/// whole command.
#[derive(Debug)]
pub struct BuildInputs {
    pub context: ContextSource,
    stdin_dockerfile: Option<tempfile::TempDir>,
}

/// Whether a context argument names something the frontend fetches, as
/// buildx tells them apart: HTTP(S) URLs and Git references.
pub fn is_remote(context: &str) -> bool {
    [
        "http://",
        "https://",
        "git://",
        "ssh://",
        "git@",
        "github.com/",
    ]
    .iter()
    .any(|p| context.starts_with(p))
}

/// The name a Dockerfile read from stdin gets.
const STDIN_DOCKERFILE: &str = "Dockerfile";

/// Tar archives carry `ustar` at offset 257.
fn looks_like_tar(head: &[u8]) -> bool {
    head.get(257..262) == Some(b"ustar".as_slice())
}

fn read_stdin_dockerfile(what: &str) -> Result<tempfile::TempDir> {
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err(Error::Usage(format!(
            "{what} reads the Dockerfile from stdin, which is a terminal: pipe it in \
             (bkd build -f - . < Dockerfile)"
        )));
    }
    let mut text = Vec::new();
    stdin.read_to_end(&mut text).map_err(|e| {
        Error::Input(format!(
            "cannot read the Dockerfile from stdin: {}",
            io_reason(&e)
        ))
    })?;
    if looks_like_tar(&text) {
        return Err(Error::Usage(
            "a tar archive on stdin as the build context is not supported: unpack it and pass \
             the directory"
                .into(),
        ));
    }
    if text.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::Input(
            "the Dockerfile read from stdin is empty".into(),
        ));
    }
    let dir = tempfile::Builder::new()
        .prefix("bkd-stdin-")
        .tempdir()
        .map_err(|e| {
            Error::Input(format!(
                "cannot keep the Dockerfile from stdin: {}",
                io_reason(&e)
            ))
        })?;
    std::fs::write(dir.path().join(STDIN_DOCKERFILE), &text).map_err(|e| {
        Error::Input(format!(
            "cannot keep the Dockerfile from stdin: {}",
            io_reason(&e)
        ))
    })?;
    Ok(dir)
}

impl BuildInputs {
    /// Reads what comes on stdin and tells the context kind apart.
    pub fn prepare(context: &Path, file: Option<&Path>) -> Result<BuildInputs> {
        let file_is_stdin = file == Some(Path::new("-"));
        if context == Path::new("-") {
            if file_is_stdin {
                return Err(Error::Usage(
                    "the build context and the Dockerfile cannot both come from stdin".into(),
                ));
            }
            if file.is_some() {
                return Err(Error::Usage(
                    "with - as the context the Dockerfile comes from stdin; drop -f".into(),
                ));
            }
            let dockerfile = read_stdin_dockerfile("- as the build context")?;
            let empty = tempfile::Builder::new()
                .prefix("bkd-empty-context-")
                .tempdir()
                .map_err(|e| {
                    Error::Input(format!("cannot create an empty context: {}", io_reason(&e)))
                })?;
            return Ok(BuildInputs {
                context: ContextSource::Empty(empty),
                stdin_dockerfile: Some(dockerfile),
            });
        }
        let text = context.to_str().unwrap_or_default();
        let source = if is_remote(text) && !context.is_dir() {
            ContextSource::Remote(text.to_string())
        } else {
            ContextSource::Dir(context.to_path_buf())
        };
        let stdin_dockerfile = if file_is_stdin {
            Some(read_stdin_dockerfile("-f -")?)
        } else {
            None
        };
        Ok(BuildInputs {
            context: source,
            stdin_dockerfile,
        })
    }

    /// Sets the frontend options and locals for the context and the
    /// Dockerfile; returns the directory that keys the daemon's warm copy.
    pub fn apply(
        &self,
        file: Option<&Path>,
        attrs: &mut HashMap<String, String>,
        locals: &mut LocalDirs,
    ) -> Result<PathBuf> {
        let stdin_dir = self
            .stdin_dockerfile
            .as_ref()
            .map(|d| d.path().to_path_buf());
        let key_dir = match &self.context {
            ContextSource::Dir(dir) => {
                let context = context_dir(dir)?;
                locals.insert("context", context.clone());
                let (dockerfile_dir, name) = match &stdin_dir {
                    Some(d) => (d.clone(), STDIN_DOCKERFILE.to_string()),
                    None => dockerfile_location(dir, file)?,
                };
                locals.insert("dockerfile", dockerfile_dir);
                attrs.insert("filename".into(), name);
                context
            }
            ContextSource::Empty(empty) => {
                locals.insert("context", empty.path().to_path_buf());
                if let Some(d) = &stdin_dir {
                    locals.insert("dockerfile", d.clone());
                }
                attrs.insert("filename".into(), STDIN_DOCKERFILE.into());
                empty.path().to_path_buf()
            }
            ContextSource::Remote(url) => {
                attrs.insert("context".into(), url.clone());
                let local_file = match (&stdin_dir, file) {
                    (Some(d), _) => Some((d.clone(), STDIN_DOCKERFILE.to_string())),
                    // An absolute path is a local file; anything else is a
                    // path inside the fetched context, as buildx reads it.
                    (None, Some(f)) if f.is_absolute() => {
                        Some(dockerfile_location(Path::new("/"), Some(f))?)
                    }
                    _ => None,
                };
                match local_file {
                    Some((dir, name)) => {
                        locals.insert("dockerfile", dir);
                        attrs.insert("dockerfilekey".into(), "dockerfile".into());
                        attrs.insert("filename".into(), name);
                    }
                    None => {
                        let name = file
                            .map(|f| f.to_string_lossy().into_owned())
                            .unwrap_or_else(|| "Dockerfile".into());
                        attrs.insert("filename".into(), name);
                    }
                }
                std::env::current_dir().unwrap_or_default()
            }
        };
        Ok(key_dir)
    }
}

/// A Dockerfile must be a readable file, reported before any daemon starts.
pub fn check_dockerfile_file(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::Input(format!(
            "cannot read Dockerfile {}: {}",
            escape_path(path),
            io_reason(&e)
        ))
    })?;
    if !meta.is_file() {
        return Err(Error::Input(format!(
            "Dockerfile {} is not a file",
            escape_path(path)
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
                escape_path(&path)
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
            escape_path(dir),
            io_reason(&e)
        ))
    })?;
    Ok((dir, name))
}

fn context_dir(context: &Path) -> Result<PathBuf> {
    let fail = |e: &std::io::Error| {
        Error::Input(format!(
            "cannot read build context {}: {}",
            escape_path(context),
            io_reason(e)
        ))
    };
    let meta = std::fs::metadata(context).map_err(|e| fail(&e))?;
    if !meta.is_dir() {
        return Err(Error::Input(format!(
            "build context {} is not a directory",
            escape_path(context)
        )));
    }
    context.canonicalize().map_err(|e| fail(&e))
}

/// A remote context named in an error.
pub fn describe(source: &ContextSource) -> String {
    match source {
        ContextSource::Dir(d) => escape_path(d),
        ContextSource::Remote(u) => escape_str(u),
        ContextSource::Empty(_) => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_contexts_are_told_apart_like_buildx() {
        for c in [
            "https://example.com/ctx.tar.gz",
            "http://127.0.0.1:8000/Dockerfile",
            "git://127.0.0.1:9418/repo.git#main",
            "git@github.com:moby/buildkit.git",
            "github.com/moby/buildkit",
            "ssh://git@example.com/repo.git",
        ] {
            assert!(is_remote(c), "{c}");
        }
        for c in [".", "dir", "/abs/dir", "file:///x", "docker-image://x"] {
            assert!(!is_remote(c), "{c}");
        }
    }

    #[test]
    fn remote_context_reads_its_own_dockerfile() {
        let inputs = BuildInputs {
            context: ContextSource::Remote("git://h/r.git".into()),
            stdin_dockerfile: None,
        };
        let mut attrs = HashMap::new();
        let mut locals = LocalDirs::default();
        inputs
            .apply(
                Some(Path::new("sub/Dockerfile.ci")),
                &mut attrs,
                &mut locals,
            )
            .expect("apply");
        assert_eq!(attrs["context"], "git://h/r.git");
        assert_eq!(attrs["filename"], "sub/Dockerfile.ci");
        assert!(locals.get("context").is_none() && locals.get("dockerfile").is_none());
        assert!(!attrs.contains_key("dockerfilekey"));
    }

    #[test]
    fn tar_on_stdin_is_recognised() {
        let mut head = vec![0u8; 512];
        head[257..262].copy_from_slice(b"ustar");
        assert!(looks_like_tar(&head));
        assert!(!looks_like_tar(b"FROM scratch\n"));
    }
}
