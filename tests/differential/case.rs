//! What a differential case is: a context tree, its `.dockerignore`, and
//! optionally a Dockerfile of its own, written compactly with a builder.
//!
//! ```ignore
//! Case::new("issue/a???b")
//!     .ignore(&["a???b"])          // the .dockerignore lines
//!     .files(&["a☺b", "aXYZb"])     // files (content: their own path)
//!     .absent("aXYZb")             // what buildctl must do, as a check of
//!     .present("a☺b")              // the case itself (optional)
//! ```
//!
//! A case without a Dockerfile is built as one named context among many in
//! one build (`COPY --from=<context> / /<n>/`), which is how the harness
//! gets through hundreds of cases quickly; its `.dockerignore` applies to
//! that context as it would to a main context, through the same frontend
//! code in both tools. A case that needs the main context (its own
//! Dockerfile, `Dockerfile.dockerignore`, COPY sources that become follow
//! paths) or another output sets [`Case::dockerfile`] or
//! [`Case::output`] and is built alone.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One entry of a context tree. Parents are created as needed (0755).
#[derive(Debug, Clone)]
pub enum Kind {
    File {
        content: Vec<u8>,
        mode: u32,
    },
    Dir {
        mode: u32,
    },
    Symlink {
        target: Vec<u8>,
    },
    /// A hard link to an earlier entry of the case.
    Hardlink {
        target: Vec<u8>,
    },
    Fifo {
        mode: u32,
    },
}

#[derive(Debug, Clone)]
pub struct Entry {
    /// Relative to the context, `/`-separated, any bytes but NUL.
    pub path: Vec<u8>,
    pub kind: Kind,
    /// Extended attributes (`user.…` for an unprivileged reader).
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// How the result of a build is exported and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// `type=tar`: the image's files, entry by entry.
    Tar,
    /// `type=local`: the directory written on this machine.
    Local,
}

#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub entries: Vec<Entry>,
    /// The `.dockerignore` file's bytes, if there is one.
    pub dockerignore: Option<Vec<u8>>,
    /// A Dockerfile of its own (file name, content): the context is then the
    /// main context, built alone, with `-f <name>`.
    pub dockerfile: Option<(String, String)>,
    pub output: Output,
    /// Paths buildctl's result must have, and must not have.
    pub present: Vec<Vec<u8>>,
    pub absent: Vec<Vec<u8>>,
    /// Whether buildctl must fail (`Some(true)`), succeed (`Some(false)`),
    /// or either (`None`); bkd must do the same in any case.
    pub fails: Option<bool>,
    /// For a failing build: text bkd's error line must contain.
    pub bkd_error: Vec<String>,
    /// Exported directories the build itself creates (COPY destinations):
    /// their time is the build's, so it is not compared.
    pub build_time_dirs: Vec<Vec<u8>>,
}

impl Case {
    pub fn new(name: impl Into<String>) -> Case {
        Case {
            name: name.into(),
            entries: Vec::new(),
            dockerignore: None,
            dockerfile: None,
            output: Output::Tar,
            present: Vec::new(),
            absent: Vec::new(),
            fails: None,
            bkd_error: Vec::new(),
            build_time_dirs: Vec::new(),
        }
    }

    /// `.dockerignore` with these lines (after a comment line naming the
    /// case, so that nothing depends on being the first line).
    pub fn ignore(mut self, lines: &[&str]) -> Case {
        let mut text = format!("# {}\n", self.name.replace('\n', " "));
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
        self.dockerignore = Some(text.into_bytes());
        self
    }

    /// `.dockerignore` exactly as these bytes.
    pub fn ignore_bytes(mut self, bytes: &[u8]) -> Case {
        self.dockerignore = Some(bytes.to_vec());
        self
    }

    /// Files whose content is their own path.
    pub fn files(mut self, paths: &[&str]) -> Case {
        for p in paths {
            self = self.file(p, p.as_bytes());
        }
        self
    }

    pub fn file(self, path: impl AsRef<[u8]>, content: impl AsRef<[u8]>) -> Case {
        self.entry(
            path,
            Kind::File {
                content: content.as_ref().to_vec(),
                mode: 0o644,
            },
        )
    }

    pub fn file_mode(self, path: impl AsRef<[u8]>, content: impl AsRef<[u8]>, mode: u32) -> Case {
        let content = content.as_ref().to_vec();
        self.entry(path, Kind::File { content, mode })
    }

    pub fn dir(self, path: impl AsRef<[u8]>, mode: u32) -> Case {
        self.entry(path, Kind::Dir { mode })
    }

    pub fn symlink(self, path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Case {
        let target = target.as_ref().to_vec();
        self.entry(path, Kind::Symlink { target })
    }

    pub fn hardlink(self, path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Case {
        let target = target.as_ref().to_vec();
        self.entry(path, Kind::Hardlink { target })
    }

    pub fn fifo(self, path: impl AsRef<[u8]>, mode: u32) -> Case {
        self.entry(path, Kind::Fifo { mode })
    }

    pub fn entry(mut self, path: impl AsRef<[u8]>, kind: Kind) -> Case {
        self.entries.push(Entry {
            path: path.as_ref().to_vec(),
            kind,
            xattrs: Vec::new(),
        });
        self
    }

    /// An extended attribute on the last entry added.
    pub fn xattr(mut self, name: &str, value: impl AsRef<[u8]>) -> Case {
        if let Some(e) = self.entries.last_mut() {
            e.xattrs.push((name.to_string(), value.as_ref().to_vec()));
        }
        self
    }

    /// Builds alone, as the main context, with this Dockerfile (`-f name`).
    pub fn dockerfile(mut self, name: &str, content: &str) -> Case {
        self.dockerfile = Some((name.to_string(), content.to_string()));
        self
    }

    /// Directories the Dockerfile creates (whose time is the build's).
    pub fn created_by_build(mut self, dirs: &[&str]) -> Case {
        self.build_time_dirs
            .extend(dirs.iter().map(|d| d.as_bytes().to_vec()));
        self
    }

    pub fn output(mut self, output: Output) -> Case {
        self.output = output;
        self
    }

    pub fn present(mut self, path: impl AsRef<[u8]>) -> Case {
        self.present.push(path.as_ref().to_vec());
        self
    }

    pub fn absent(mut self, path: impl AsRef<[u8]>) -> Case {
        self.absent.push(path.as_ref().to_vec());
        self
    }

    /// buildctl must fail, and bkd's error line contain each of `texts`.
    pub fn fails(mut self, texts: &[&str]) -> Case {
        self.fails = Some(true);
        self.bkd_error = texts.iter().map(|t| t.to_string()).collect();
        self
    }

    pub fn builds(mut self) -> Case {
        self.fails = Some(false);
        self
    }

    /// Whether the case shares a build with others.
    pub fn batchable(&self) -> bool {
        self.dockerfile.is_none() && self.output == Output::Tar && self.fails != Some(true)
    }

    /// Writes the context into `dir` (which must exist and be empty).
    pub fn write(&self, dir: &Path) {
        if let Some(bytes) = &self.dockerignore {
            std::fs::write(dir.join(".dockerignore"), bytes).expect("write .dockerignore");
        }
        if let Some((name, content)) = &self.dockerfile {
            std::fs::write(dir.join(name), content).expect("write the Dockerfile");
        }
        for e in &self.entries {
            let path = dir.join(std::ffi::OsStr::from_bytes(&e.path));
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("create parents");
            }
            write_entry(dir, &path, &e.kind)
                .and_then(|()| set_xattrs(&path, &e.xattrs))
                .unwrap_or_else(|err| panic!("case {}: {}: {err}", self.name, path.display()));
        }
    }
}

fn write_entry(root: &Path, path: &PathBuf, kind: &Kind) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match kind {
        Kind::File { content, mode } => {
            std::fs::write(path, content)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))
        }
        Kind::Dir { mode } => {
            std::fs::create_dir_all(path)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))
        }
        Kind::Symlink { target } => {
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), path)
        }
        Kind::Hardlink { target } => {
            std::fs::hard_link(root.join(std::ffi::OsStr::from_bytes(target)), path)
        }
        Kind::Fifo { mode } => {
            let c = std::ffi::CString::new(path.as_os_str().as_bytes())
                .map_err(|_| std::io::Error::other("NUL in a name"))?;
            // SAFETY: a plain mkfifo on a NUL-terminated path.
            if unsafe { libc::mkfifo(c.as_ptr(), *mode) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))
        }
    }
}

fn set_xattrs(path: &Path, xattrs: &[(String, Vec<u8>)]) -> std::io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("NUL in a name"))?;
    for (name, value) in xattrs {
        let n = std::ffi::CString::new(name.as_bytes()).map_err(std::io::Error::other)?;
        // SAFETY: NUL-terminated strings and a buffer of the stated size.
        let r = unsafe {
            libc::lsetxattr(
                c.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
