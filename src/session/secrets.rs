//! Secrets: values for `RUN --mount=type=secret,id=ID`, served by id. A
//! value is read only when the build asks for it (as buildctl does), from
//! a regular file or a FIFO (`src=<(vault read ...)`), never more than
//! BuildKit accepts. [`SecretValue`] never prints its content.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::error::io_reason;
use crate::proto::moby::buildkit::secrets::v1::secrets_server::{Secrets, SecretsServer};
use crate::proto::moby::buildkit::secrets::v1::{GetSecretRequest, GetSecretResponse};
use crate::text::{escape_path, escape_str};

/// The largest secret the daemon accepts (BuildKit's limit).
pub const MAX_SECRET_SIZE: u64 = 500 * 1024;
/// How long a FIFO may go without a writer before bkd gives up on it.
const FIFO_NO_WRITER: Duration = Duration::from_secs(1);
/// How long a FIFO's writer may stay silent.
const FIFO_SILENCE: Duration = Duration::from_secs(60);

#[derive(Clone, Default)]
pub struct SecretValue(pub Vec<u8>);

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

impl SecretSource {
    /// What can be told before the build: the variable is set, the file
    /// exists, is a regular file or a FIFO, and is not too big. Nothing is
    /// read.
    pub fn check(&self, id: &str) -> Result<(), String> {
        let id = escape_str(id);
        match self {
            SecretSource::Env(var) => match std::env::var_os(var) {
                Some(_) => Ok(()),
                None => Err(format!(
                    "secret {id}: environment variable {} is not set",
                    escape_str(var)
                )),
            },
            SecretSource::File(path) => {
                let meta = std::fs::metadata(path).map_err(|e| {
                    format!(
                        "secret {id}: cannot read {}: {}",
                        escape_path(path),
                        io_reason(&e)
                    )
                })?;
                let kind = meta.file_type();
                if kind.is_file() {
                    if meta.len() > MAX_SECRET_SIZE {
                        return Err(too_big(&id, path, Some(meta.len())));
                    }
                    return Ok(());
                }
                if kind.is_fifo() {
                    return Ok(());
                }
                Err(not_a_file(&id, path, &kind))
            }
        }
    }

    /// Reads the value now. Blocking (a FIFO's writer sets the pace).
    pub fn read(&self, id: &str) -> Result<SecretValue, String> {
        let id = escape_str(id);
        match self {
            SecretSource::Env(var) => std::env::var_os(var)
                .map(|v| SecretValue(v.into_encoded_bytes()))
                .ok_or_else(|| {
                    format!(
                        "secret {id}: environment variable {} is not set",
                        escape_str(var)
                    )
                }),
            SecretSource::File(path) => read_file(&id, path),
        }
    }
}

fn too_big(id: &str, path: &Path, size: Option<u64>) -> String {
    let size = size.map(|s| format!("{s} bytes, ")).unwrap_or_default();
    format!(
        "secret {id}: {} is {size}more than the {MAX_SECRET_SIZE} bytes BuildKit accepts",
        escape_path(path)
    )
}

fn not_a_file(id: &str, path: &Path, kind: &std::fs::FileType) -> String {
    let what = if kind.is_dir() {
        "a directory"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    format!(
        "secret {id}: {} is {what}; give a regular file (or a FIFO)",
        escape_path(path)
    )
}

fn read_file(id: &str, path: &Path) -> Result<SecretValue, String> {
    let cannot = |e: std::io::Error| {
        format!(
            "secret {id}: cannot read {}: {}",
            escape_path(path),
            io_reason(&e)
        )
    };
    // Without waiting: a FIFO nobody writes to must not hold the build.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(cannot)?;
    let kind = file.metadata().map_err(cannot)?.file_type();
    let mut value = Vec::new();
    if kind.is_file() {
        file.take(MAX_SECRET_SIZE + 1)
            .read_to_end(&mut value)
            .map_err(cannot)?;
    } else if kind.is_fifo() {
        read_fifo(id, path, &file, &mut value)?;
    } else {
        return Err(not_a_file(id, path, &kind));
    }
    if value.len() as u64 > MAX_SECRET_SIZE {
        return Err(too_big(id, path, None));
    }
    Ok(SecretValue(value))
}

/// Reads a FIFO opened without waiting, until its writer closes it: fails
/// if no writer shows up within [`FIFO_NO_WRITER`], if the writer is
/// silent for [`FIFO_SILENCE`], or past the size limit.
fn read_fifo(
    id: &str,
    path: &Path,
    file: &std::fs::File,
    value: &mut Vec<u8>,
) -> Result<(), String> {
    let mut writer_seen = false;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let wait = if writer_seen {
            FIFO_SILENCE
        } else {
            FIFO_NO_WRITER
        };
        let mut pfd = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, wait.as_millis() as libc::c_int) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!(
                "secret {id}: cannot read {}: {}",
                escape_path(path),
                io_reason(&e)
            ));
        }
        if n == 0 {
            let why = if writer_seen {
                format!("its writer sent nothing for {}s", FIFO_SILENCE.as_secs())
            } else {
                "no process is writing to it".to_string()
            };
            return Err(format!("secret {id}: FIFO {}: {why}", escape_path(path)));
        }
        // SAFETY: reading into a local buffer of its length.
        let r = unsafe { libc::read(file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match r {
            0 => return Ok(()),
            r if r > 0 => {
                writer_seen = true;
                value.extend_from_slice(&buf[..r as usize]);
                if value.len() as u64 > MAX_SECRET_SIZE {
                    return Ok(());
                }
            }
            _ => {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => writer_seen = true,
                    Some(libc::EINTR) => {}
                    _ => {
                        return Err(format!(
                            "secret {id}: cannot read {}: {}",
                            escape_path(path),
                            io_reason(&e)
                        ))
                    }
                }
            }
        }
    }
}

/// The secrets of one build, and the first that could not be read.
#[derive(Debug, Default, Clone)]
pub struct SecretsService {
    sources: Arc<HashMap<String, SecretSource>>,
    /// Values read from a FIFO: it gives them once, and several steps may
    /// mount the same secret.
    once: Arc<Mutex<HashMap<String, SecretValue>>>,
    failure: Arc<Mutex<Option<String>>>,
}

impl SecretsService {
    pub fn new(sources: HashMap<String, SecretSource>) -> Self {
        SecretsService {
            sources: Arc::new(sources),
            once: Arc::default(),
            failure: Arc::default(),
        }
    }

    /// Why a secret the build asked for could not be read, if one could
    /// not: the daemon only passes it on inside its own error.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    pub fn server(&self) -> SecretsServer<SecretsService> {
        SecretsServer::new(self.clone())
    }
}

#[tonic::async_trait]
impl Secrets for SecretsService {
    async fn get_secret(
        &self,
        req: Request<GetSecretRequest>,
    ) -> Result<Response<GetSecretResponse>, Status> {
        let id = req.into_inner().id;
        let Some(source) = self.sources.get(&id).cloned() else {
            return Err(Status::not_found(format!(
                "secret {} not found",
                escape_str(&id)
            )));
        };
        let kept = self.once.lock().ok().and_then(|m| m.get(&id).cloned());
        let value = match kept {
            Some(v) => Ok(v),
            None => {
                let read_id = id.clone();
                let once = self.once.clone();
                tokio::task::spawn_blocking(move || {
                    let is_fifo = matches!(&source, SecretSource::File(p)
                        if std::fs::metadata(p).is_ok_and(|m| m.file_type().is_fifo()));
                    let v = source.read(&read_id)?;
                    if is_fifo {
                        if let Ok(mut m) = once.lock() {
                            m.insert(read_id, v.clone());
                        }
                    }
                    Ok::<_, String>(v)
                })
                .await
                .map_err(|_| Status::internal("secret read failed"))?
            }
        };
        match value {
            Ok(v) => {
                tracing::debug!(id = %escape_str(&id), "secret read for the build");
                Ok(Response::new(GetSecretResponse { data: v.0.into() }))
            }
            Err(message) => {
                if let Ok(mut f) = self.failure.lock() {
                    f.get_or_insert(message.clone());
                }
                Err(Status::failed_precondition(message))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkfifo(path: &Path) {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("c");
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn devices_and_directories_are_refused_before_anything_is_read() {
        let started = std::time::Instant::now();
        let e = SecretSource::File("/dev/zero".into())
            .check("z")
            .expect_err("/dev/zero");
        assert_eq!(
            e,
            "secret z: /dev/zero is a character device; give a regular file (or a FIFO)"
        );
        let e = SecretSource::File("/dev/zero".into())
            .read("z")
            .expect_err("read");
        assert!(e.contains("character device"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(1));
        let e = SecretSource::File("/".into()).check("d").expect_err("dir");
        assert!(e.contains("a directory"), "{e}");
    }

    #[test]
    fn the_limit_holds_for_files_that_grow_and_for_fifos() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s");
        std::fs::write(&path, b"small").expect("write");
        let source = SecretSource::File(path.clone());
        source.check("s").expect("small");
        // Grown past the limit after the check: caught while reading.
        std::fs::write(&path, vec![b'z'; MAX_SECRET_SIZE as usize + 10]).expect("grow");
        let e = source.read("s").expect_err("grown");
        assert!(e.contains("more than") && !e.contains("zzz"), "{e}");

        let fifo = dir.path().join("f");
        mkfifo(&fifo);
        let writer = std::thread::spawn({
            let fifo = fifo.clone();
            move || {
                use std::io::Write;
                let mut w = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&fifo)
                    .expect("open writer");
                let _ = w.write_all(&vec![b'y'; MAX_SECRET_SIZE as usize + 1]);
            }
        });
        let e = SecretSource::File(fifo.clone())
            .read("f")
            .expect_err("too much");
        assert!(e.contains("more than"), "{e}");
        let _ = writer.join();
    }

    #[test]
    fn a_fifo_gives_what_its_writer_wrote_and_fails_fast_without_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("f");
        mkfifo(&fifo);
        let started = std::time::Instant::now();
        let e = SecretSource::File(fifo.clone())
            .read("f")
            .expect_err("no writer");
        assert!(e.ends_with("no process is writing to it"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(3));

        // A writer waiting for a reader, as `echo s > fifo &` does.
        let writer = std::thread::spawn({
            let fifo = fifo.clone();
            move || std::fs::write(&fifo, b"s3cret").expect("write")
        });
        std::thread::sleep(Duration::from_millis(100));
        let v = SecretSource::File(fifo.clone()).read("f").expect("value");
        assert_eq!(v.0, b"s3cret");
        writer.join().expect("writer");
    }

    #[test]
    fn errors_name_the_secret_never_the_value() {
        let e = SecretSource::File("/no/such/file".into())
            .check("m")
            .expect_err("missing");
        assert_eq!(
            e,
            "secret m: cannot read /no/such/file: no such file or directory"
        );
        let e = SecretSource::Env("BKD_TEST_UNSET_VARIABLE".into())
            .check("v")
            .expect_err("unset");
        assert!(e.contains("BKD_TEST_UNSET_VARIABLE is not set"), "{e}");
        let e = SecretSource::File("/tmp/x\nerror: forged".into())
            .check("a\nb")
            .expect_err("forged");
        assert!(!e.contains('\n'), "{e}");
    }
}
