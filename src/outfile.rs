//! The files bkd writes for the user: `-o type=tar|oci|docker,dest=FILE`,
//! `--metadata-file FILE` and `--daemon-log FILE`. One rule for the three,
//! decided on what is at FILE when bkd starts:
//!
//! - nothing, a regular file, or a symbolic link: a new file is written
//!   beside it and renamed onto FILE when done. A link is replaced, never
//!   written through: a link in a checked-out repository may have been
//!   planted (`image.tar -> /etc/shadow`), and in CI the checkout belongs to
//!   the very user bkd runs as, so who owns the link proves nothing.
//! - a FIFO or a character device (`/dev/null`, a terminal): written in
//!   place, as the user named it. A FIFO is opened without waiting: with no
//!   process reading it, bkd fails at once, before the build.
//! - the system's own links, in `/dev` or in a `/proc/.../fd` directory
//!   (`/dev/stdout`, `/dev/fd/3`, what a shell's `>(...)` hands out): opened
//!   through the link and written in place. Nobody but the kernel and root
//!   makes links there.
//! - a directory, a socket or a block device: refused.
//!
//! A file being written has no name until it is complete (`O_TMPFILE`), so
//! a bkd killed during an export leaves nothing; where the file system
//! cannot do that, it is a `.bkd-output-*` file bkd keeps locked while it
//! lives, and the next bkd writing to that directory removes the ones whose
//! writer is gone.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The name prefix of a partial output that has a name.
pub const PARTIAL_PREFIX: &str = ".bkd-output-";
/// A partial output nobody holds the lock of is left alone this long: it
/// may have been created a moment ago, or by a bkd that did not lock.
const PARTIAL_GRACE: Duration = Duration::from_secs(60);

/// Where an output goes, decided once before the build.
#[derive(Debug)]
pub enum Target {
    /// Written beside `path` and renamed onto it.
    Replace(PathBuf),
    /// Written in place, through this descriptor (opened before the build).
    InPlace { path: PathBuf, file: File },
}

impl Target {
    pub fn path(&self) -> &Path {
        match self {
            Target::Replace(p) => p,
            Target::InPlace { path, .. } => path,
        }
    }
}

/// Decides where `path` is written, opening it now when it is written in
/// place. The error is the reason alone (the caller names the file).
pub fn prepare(path: &Path) -> Result<Target, String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            check_dir(&parent_dir(path))?;
            sweep_partials(&parent_dir(path));
            return Ok(Target::Replace(path.to_path_buf()));
        }
        Err(e) => return Err(crate::error::io_reason(&e)),
    };
    let kind = meta.file_type();
    if kind.is_symlink() && is_system_link(path) {
        let file = open_in_place(path, true)?;
        return Ok(Target::InPlace {
            path: path.to_path_buf(),
            file,
        });
    }
    if kind.is_symlink() || kind.is_file() {
        check_dir(&parent_dir(path))?;
        sweep_partials(&parent_dir(path));
        return Ok(Target::Replace(path.to_path_buf()));
    }
    if kind.is_fifo() || kind.is_char_device() {
        let file = open_in_place(path, false)?;
        return Ok(Target::InPlace {
            path: path.to_path_buf(),
            file,
        });
    }
    Err(refusal(&meta))
}

fn refusal(meta: &std::fs::Metadata) -> String {
    let kind = meta.file_type();
    let what = if kind.is_dir() {
        "a directory"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    };
    format!("it is {what}; name a file, a FIFO or a character device")
}

/// A link the system made: its directory is `/dev` itself, or an `fd`
/// directory of a process (`/dev/fd` leads there).
fn is_system_link(path: &Path) -> bool {
    let dir = parent_dir(path);
    let Ok(dir) = std::fs::canonicalize(dir) else {
        return false;
    };
    if dir == Path::new("/dev") {
        return true;
    }
    let parts: Vec<_> = dir.components().map(|c| c.as_os_str().to_owned()).collect();
    // /proc/PID/fd, /proc/PID/task/TID/fd, /proc/self/fd, /proc/thread-self/fd
    parts.len() >= 4
        && parts[1] == "proc"
        && parts.last().is_some_and(|l| l == "fd")
        && std::fs::metadata("/proc").is_ok_and(|m| m.dev() != 0)
}

/// Opens a FIFO, character device or system link for writing without
/// waiting for a reader; then makes writes wait as usual. Checks what was
/// opened is what may be written in place.
fn open_in_place(path: &Path, through_link: bool) -> Result<File, String> {
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    if !through_link {
        flags |= libc::O_NOFOLLOW;
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENXIO) => "no process is reading the FIFO".to_string(),
            Some(libc::ELOOP) => "it was replaced by a link".to_string(),
            _ => crate::error::io_reason(&e),
        })?;
    let meta = file.metadata().map_err(|e| crate::error::io_reason(&e))?;
    let kind = meta.file_type();
    let fits = kind.is_fifo() || kind.is_char_device() || (through_link && kind.is_file());
    if !fits {
        return Err(refusal(&meta));
    }
    if through_link && kind.is_file() {
        // `dest=/dev/stdout` with stdout sent to a file: the file is the
        // output, written from its start as a shell's `>` would.
        file.set_len(0).map_err(|e| crate::error::io_reason(&e))?;
    }
    // SAFETY: fcntl on a descriptor owned here.
    unsafe {
        let fl = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
        if fl >= 0 {
            libc::fcntl(file.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
    }
    Ok(file)
}

/// The directory a file lives in (`.` for a bare name).
pub fn parent_dir(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The directory must exist and take a new file.
fn check_dir(dir: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(dir).map_err(|e| {
        format!(
            "{}: {}",
            crate::text::escape_path(dir),
            crate::error::io_reason(&e)
        )
    })?;
    if !meta.is_dir() {
        return Err(format!(
            "{} is not a directory",
            crate::text::escape_path(dir)
        ));
    }
    Staging::new(dir).map(drop).map_err(|e| {
        format!(
            "{}: {}",
            crate::text::escape_path(dir),
            crate::error::io_reason(&e)
        )
    })
}

/// An output being written: a file without a name in the destination's
/// directory, or a locked `.bkd-output-*` file where that is not possible.
/// Dropped unfinished, it leaves nothing.
#[derive(Debug)]
pub struct Staging {
    file: File,
    dir: PathBuf,
    /// The fallback's name, removed on drop unless persisted.
    named: Option<PathBuf>,
}

impl Staging {
    /// A new, empty, private (0600) file in `dir`.
    pub fn new(dir: &Path) -> std::io::Result<Staging> {
        let unnamed = std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE)
            .open(dir);
        match unnamed {
            Ok(file) => Ok(Staging {
                file,
                dir: dir.to_path_buf(),
                named: None,
            }),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
                ) =>
            {
                let (file, path) = tempfile::Builder::new()
                    .prefix(PARTIAL_PREFIX)
                    .permissions(std::fs::Permissions::from_mode(0o600))
                    .tempfile_in(dir)?
                    .keep()
                    .map_err(|e| e.error)?;
                // SAFETY: flock on a descriptor owned here; held until the
                // file closes, so a sweep knows a live writer's file.
                unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
                Ok(Staging {
                    file,
                    dir: dir.to_path_buf(),
                    named: Some(path),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Where the bytes go.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Finishes the output at `target`: renamed onto it, or copied into
    /// the descriptor opened for it. Blocking; call off the async threads.
    pub fn finish(mut self, target: &mut Target) -> std::io::Result<()> {
        match target {
            Target::InPlace { file, .. } => {
                self.file.rewind()?;
                let mut from = &self.file;
                copy_all(&mut from, file)?;
                file.flush()
            }
            Target::Replace(dest) => self.persist(dest),
        }
    }

    /// Gives the file its final mode (as a new file would get) and renames
    /// it onto `dest`, replacing what is there but a directory.
    fn persist(&mut self, dest: &Path) -> std::io::Result<()> {
        self.file.sync_data().ok();
        let mode = 0o666 & !umask();
        self.file
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
        let named = match self.named.take() {
            Some(p) => p,
            None => self.link_into_dir()?,
        };
        std::fs::rename(&named, dest).inspect_err(|_| {
            let _ = std::fs::remove_file(&named);
        })
    }

    /// Gives the unnamed file a temporary name in its directory.
    fn link_into_dir(&self) -> std::io::Result<PathBuf> {
        let from = CString::new(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
            .map_err(std::io::Error::other)?;
        for _ in 0..16 {
            let name = self
                .dir
                .join(format!("{PARTIAL_PREFIX}{}", random_suffix()));
            let to = CString::new(name.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
            // SAFETY: valid C strings; linkat gives the open file a name.
            let r = unsafe {
                libc::linkat(
                    libc::AT_FDCWD,
                    from.as_ptr(),
                    libc::AT_FDCWD,
                    to.as_ptr(),
                    libc::AT_SYMLINK_FOLLOW,
                )
            };
            if r == 0 {
                return Ok(name);
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e);
            }
        }
        Err(std::io::Error::other("no free temporary name"))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(p) = self.named.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Copies everything, retrying interrupted calls.
fn copy_all(from: &mut impl Read, to: &mut File) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
    }
}

fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::rng();
    (0..8)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The process umask, read without changing it.
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// Removes the partial outputs in `dir` whose writer is gone: regular
/// `.bkd-output-*` files of this user that nobody holds locked and nobody
/// has written to for a while. Returns what was removed.
pub fn sweep_partials(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.as_bytes().starts_with(PARTIAL_PREFIX.as_bytes()) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let idle = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > PARTIAL_GRACE);
        if !meta.is_file() || meta.uid() != uid || !idle {
            continue;
        }
        let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
        else {
            continue;
        };
        // SAFETY: flock on a descriptor owned here.
        let free = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if free && std::fs::remove_file(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// Opens `--daemon-log FILE` for appending, by the same rule: a regular
/// file is appended to (opened without following a link); a link outside
/// the system's own, or a hard link, is replaced by a new empty file; a FIFO or character
/// device is written in place.
pub fn open_log(path: &Path) -> Result<File, String> {
    let append = || {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
            .open(path)
    };
    match prepare(path)? {
        Target::InPlace { file, .. } => Ok(file),
        Target::Replace(dest) => {
            // A hard link counts as a link: appending would write to the
            // file it shares its inode with.
            let is_link = std::fs::symlink_metadata(&dest)
                .is_ok_and(|m| m.is_symlink() || (m.is_file() && m.nlink() > 1));
            if is_link {
                let mut staging =
                    Staging::new(&parent_dir(&dest)).map_err(|e| crate::error::io_reason(&e))?;
                staging
                    .persist(&dest)
                    .map_err(|e| crate::error::io_reason(&e))?;
            }
            append().map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => "it was replaced by a link".to_string(),
                _ => crate::error::io_reason(&e),
            })
        }
    }
}

/// A file output's destination as the command line named it, and once
/// prepared (before the build), where it is written. Clones share the
/// prepared destination; two destinations are equal when their paths are.
#[derive(Clone)]
pub struct FileDest {
    pub path: PathBuf,
    target: Arc<Mutex<Option<Target>>>,
}

impl std::fmt::Debug for FileDest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileDest({:?})", self.path)
    }
}

impl PartialEq for FileDest {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

impl<P: Into<PathBuf>> From<P> for FileDest {
    fn from(path: P) -> Self {
        FileDest {
            path: path.into(),
            target: Arc::new(Mutex::new(None)),
        }
    }
}

impl FileDest {
    /// Decides and, for a FIFO or device, opens the destination now; a
    /// second call keeps the first decision.
    pub fn prepare(&self) -> Result<(), String> {
        let mut slot = self
            .target
            .lock()
            .map_err(|_| "output state poisoned".to_string())?;
        if slot.is_none() {
            *slot = Some(prepare(&self.path)?);
        }
        Ok(())
    }

    /// A new staging file: beside a file that is replaced, in the temp
    /// directory for one written in place.
    pub fn staging(&self) -> std::io::Result<Staging> {
        self.prepare().map_err(std::io::Error::other)?;
        let in_place = self
            .target
            .lock()
            .map(|t| matches!(*t, Some(Target::InPlace { .. })))
            .unwrap_or(false);
        if in_place {
            Staging::new(&std::env::temp_dir())
        } else {
            Staging::new(&parent_dir(&self.path))
        }
    }

    /// Puts the staged output at the destination. Blocking (a FIFO's
    /// reader sets the pace): call it off the async threads.
    pub fn finish(&self, staging: Staging) -> std::io::Result<()> {
        self.prepare().map_err(std::io::Error::other)?;
        let mut slot = self
            .target
            .lock()
            .map_err(|_| std::io::Error::other("output state poisoned"))?;
        match slot.as_mut() {
            Some(target) => staging.finish(target),
            None => Err(std::io::Error::other("output destination not prepared")),
        }
    }

    /// Writes `data` whole to the destination (the metadata file).
    /// Blocking, like [`FileDest::finish`].
    pub fn write_all(&self, data: &[u8]) -> std::io::Result<()> {
        let mut staging = self.staging()?;
        staging.file().write_all(data)?;
        self.finish(staging)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    /// A file descriptor's path as /proc shows it.
    fn fd_path(file: &File) -> PathBuf {
        std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap_or_default()
    }

    /// A log path that is a hard link to another file is replaced, not
    /// appended to: the other file keeps its content.
    #[test]
    fn a_hard_linked_log_is_replaced() {
        let dir = tempfile::tempdir().expect("dir");
        let other = dir.path().join("other");
        std::fs::write(&other, "keep\n").expect("write");
        let log = dir.path().join("daemon.log");
        std::fs::hard_link(&other, &log).expect("link");
        let mut f = open_log(&log).expect("open");
        f.write_all(b"daemon line\n").expect("write");
        drop(f);
        assert_eq!(std::fs::read_to_string(&other).expect("read"), "keep\n");
        assert_eq!(
            std::fs::read_to_string(&log).expect("read"),
            "daemon line\n"
        );
    }

    /// Turns an owned raw descriptor into a file (for pipes).
    fn file_from_fd(fd: i32) -> File {
        // SAFETY: the caller hands over a descriptor it owns.
        unsafe { File::from_raw_fd(fd) }
    }

    fn write_through(path: &Path, data: &[u8]) -> Result<(), String> {
        let dest = FileDest::from(path);
        dest.prepare()?;
        dest.write_all(data).map_err(|e| e.to_string())
    }

    #[test]
    fn a_planted_link_is_replaced_and_its_target_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").expect("write");
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let link = dir.path().join("image.tar");
        std::os::unix::fs::symlink(&victim, &link).expect("symlink");
        write_through(&link, b"image").expect("write");
        assert_eq!(std::fs::read(&victim).expect("victim"), b"precious");
        let meta = std::fs::symlink_metadata(&link).expect("dest");
        assert!(meta.is_file(), "the link is now the output");
        assert_eq!(std::fs::read(&link).expect("dest"), b"image");
        assert_eq!(meta.permissions().mode() & 0o777, 0o666 & !umask());
        // A dangling link too.
        let dangling = dir.path().join("d.tar");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).expect("symlink");
        write_through(&dangling, b"x").expect("write");
        assert!(!dir.path().join("nowhere").exists());
        assert!(std::fs::symlink_metadata(&dangling).expect("d").is_file());
    }

    #[test]
    fn devices_and_system_links_are_written_in_place() {
        write_through(Path::new("/dev/null"), b"gone").expect("/dev/null");
        // /proc/self/fd/N of a pipe: what `>(cat)` hands out.
        let mut fds = [0; 2];
        // SAFETY: pipe fills two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let (mut r, w) = (file_from_fd(fds[0]), file_from_fd(fds[1]));
        let path = PathBuf::from(format!("/proc/self/fd/{}", w.as_raw_fd()));
        write_through(&path, b"through the pipe").expect("pipe");
        drop(w);
        let mut got = String::new();
        r.read_to_string(&mut got).expect("read");
        assert_eq!(got, "through the pipe");
        // A regular file behind /proc/self/fd/N is written, not replaced.
        let dir = tempfile::tempdir().expect("tempdir");
        let f = File::create(dir.path().join("out")).expect("create");
        let path = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
        write_through(&path, b"via fd").expect("fd");
        assert_eq!(fd_path(&f), dir.path().join("out"));
        assert_eq!(
            std::fs::read(dir.path().join("out")).expect("out"),
            b"via fd"
        );
    }

    #[test]
    fn a_fifo_without_reader_fails_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        let c = CString::new(fifo.as_os_str().as_bytes()).expect("c");
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let started = std::time::Instant::now();
        let e = prepare(&fifo).expect_err("no reader");
        assert_eq!(e, "no process is reading the FIFO");
        assert!(started.elapsed() < Duration::from_secs(1));
        // A link to a FIFO (not the system's) is replaced, not followed.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&fifo, &link).expect("symlink");
        assert!(matches!(prepare(&link), Ok(Target::Replace(_))));
    }

    #[test]
    fn directories_sockets_and_block_devices_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = prepare(dir.path()).expect_err("dir");
        assert!(e.contains("a directory"), "{e}");
        let sock = dir.path().join("s");
        let _l = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
        assert!(prepare(&sock).expect_err("socket").contains("a socket"));
        assert!(prepare(&dir.path().join("no/such/dir/x")).is_err());
    }

    #[test]
    fn an_unfinished_output_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut staging = Staging::new(dir.path()).expect("staging");
        staging.file().write_all(b"partial").expect("write");
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("ls").count(),
            0,
            "a partial output has no name"
        );
        drop(staging);
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
    }

    #[test]
    fn the_sweep_removes_only_idle_unlocked_partials() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = |name: &str| {
            let p = dir.path().join(name);
            let f = File::create(&p).expect("create");
            let past = std::time::SystemTime::now() - Duration::from_secs(3600);
            f.set_modified(past).expect("mtime");
            (p, f)
        };
        let (stale, _f1) = old(".bkd-output-stale1");
        let (held, f2) = old(".bkd-output-held01");
        // SAFETY: flock on a descriptor this test owns.
        assert_eq!(unsafe { libc::flock(f2.as_raw_fd(), libc::LOCK_EX) }, 0);
        let fresh = dir.path().join(".bkd-output-fresh1");
        std::fs::write(&fresh, "x").expect("fresh");
        let (other, _f3) = old("image.tar");
        let removed = sweep_partials(dir.path());
        assert_eq!(removed, vec![stale.clone()]);
        assert!(!stale.exists() && held.exists() && fresh.exists() && other.exists());
    }
}
