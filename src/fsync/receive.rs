//! The receiving side of a file-sync conversation: takes the sender's STAT
//! and DATA packets, recreates the tree under a destination directory, and
//! says which files it wants. Used for the `local` exporter, where the daemon
//! sends and bkd receives.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::stat::{
    is_requestable, posix_perm, MODE_CHAR_DEVICE, MODE_DEVICE, MODE_DIR, MODE_NAMED_PIPE,
    MODE_SYMLINK,
};
use crate::proto::fsutil::types::{packet::PacketType, Packet, Stat};

#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("sender sent an unsafe path {0:?}")]
    UnsafePath(String),
    #[error("sender sent data for unknown file id {0}")]
    UnknownId(u32),
    #[error("error from sender: {0}")]
    Sender(String),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sender ended the transfer before all files arrived")]
    Incomplete,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ReceiveError + '_ {
    move |source| ReceiveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the caller should do after a packet was handled.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Send these packets (requests, or the final FIN) and keep reading.
    Reply(Vec<Packet>),
    /// The conversation is over.
    Done,
}

/// Recreates a sent tree under `dest`.
pub struct Receiver {
    dest: PathBuf,
    next_id: u32,
    open: HashMap<u32, (File, PathBuf, Stat)>,
    walk_done: bool,
    sent_fin: bool,
    /// Directory metadata is applied at the end, after their content exists.
    dirs: Vec<(PathBuf, Stat)>,
    pub bytes: u64,
}

impl Receiver {
    pub fn new(dest: PathBuf) -> Self {
        Receiver {
            dest,
            next_id: 0,
            open: HashMap::new(),
            walk_done: false,
            sent_fin: false,
            dirs: Vec::new(),
            bytes: 0,
        }
    }

    pub fn handle(&mut self, packet: Packet) -> Result<Step, ReceiveError> {
        match PacketType::try_from(packet.r#type) {
            Ok(PacketType::PacketStat) => match packet.stat {
                Some(stat) => {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.create(id, stat)
                }
                None => {
                    self.walk_done = true;
                    self.maybe_finish()
                }
            },
            Ok(PacketType::PacketData) => self.data(packet.id, &packet.data),
            Ok(PacketType::PacketFin) => {
                if self.sent_fin {
                    Ok(Step::Done)
                } else {
                    Err(ReceiveError::Incomplete)
                }
            }
            Ok(PacketType::PacketErr) => Err(ReceiveError::Sender(
                String::from_utf8_lossy(&packet.data).into_owned(),
            )),
            Ok(PacketType::PacketReq) | Err(_) => Ok(Step::Reply(Vec::new())),
        }
    }

    /// Whether both FINs have been exchanged.
    pub fn finished(&self) -> bool {
        self.sent_fin
    }

    fn target(&self, rel: &str) -> Result<PathBuf, ReceiveError> {
        let p = Path::new(rel);
        let safe = !rel.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
        if !safe {
            return Err(ReceiveError::UnsafePath(rel.to_string()));
        }
        // A parent that is a symlink would let a later entry land outside
        // the destination.
        let mut parent = self.dest.clone();
        if let Some(dir) = p.parent() {
            for c in dir.components() {
                parent.push(c);
                if std::fs::symlink_metadata(&parent).is_ok_and(|m| m.file_type().is_symlink()) {
                    return Err(ReceiveError::UnsafePath(rel.to_string()));
                }
            }
        }
        Ok(self.dest.join(p))
    }

    fn create(&mut self, id: u32, stat: Stat) -> Result<Step, ReceiveError> {
        let path = self.target(&stat.path)?;
        remove_existing(&path, stat.mode & MODE_DIR != 0)?;
        let mode = stat.mode;
        if mode & MODE_DIR != 0 {
            match std::fs::create_dir(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
            self.dirs.push((path, stat));
            return Ok(Step::Reply(Vec::new()));
        }
        if mode & MODE_SYMLINK != 0 {
            symlink(&stat.linkname, &path).map_err(io_err(&path))?;
            set_mtime(&path, stat.mod_time, false)?;
            return Ok(Step::Reply(Vec::new()));
        }
        if mode & (MODE_NAMED_PIPE | MODE_DEVICE) != 0 {
            make_node(&path, &stat)?;
            return Ok(Step::Reply(Vec::new()));
        }
        if !stat.linkname.is_empty() && is_requestable(mode) {
            let first = self.target(&stat.linkname)?;
            std::fs::hard_link(&first, &path).map_err(io_err(&path))?;
            return Ok(Step::Reply(Vec::new()));
        }
        let file = File::create(&path).map_err(io_err(&path))?;
        self.open.insert(id, (file, path, stat));
        Ok(Step::Reply(vec![Packet {
            r#type: PacketType::PacketReq as i32,
            id,
            ..Default::default()
        }]))
    }

    fn data(&mut self, id: u32, data: &[u8]) -> Result<Step, ReceiveError> {
        if data.is_empty() {
            let (file, path, stat) = self.open.remove(&id).ok_or(ReceiveError::UnknownId(id))?;
            drop(file);
            std::fs::set_permissions(
                &path,
                std::fs::Permissions::from_mode(posix_perm(stat.mode)),
            )
            .map_err(io_err(&path))?;
            set_mtime(&path, stat.mod_time, true)?;
            return self.maybe_finish();
        }
        let (file, path, _) = self.open.get_mut(&id).ok_or(ReceiveError::UnknownId(id))?;
        file.write_all(data).map_err(io_err(path))?;
        self.bytes += data.len() as u64;
        Ok(Step::Reply(Vec::new()))
    }

    fn maybe_finish(&mut self) -> Result<Step, ReceiveError> {
        if !self.walk_done || !self.open.is_empty() || self.sent_fin {
            return Ok(Step::Reply(Vec::new()));
        }
        // Deepest directories first, so setting a parent's mtime is last.
        for (path, stat) in self.dirs.drain(..).rev() {
            std::fs::set_permissions(
                &path,
                std::fs::Permissions::from_mode(posix_perm(stat.mode)),
            )
            .map_err(io_err(&path))?;
            set_mtime(&path, stat.mod_time, true)?;
        }
        self.sent_fin = true;
        Ok(Step::Reply(vec![Packet {
            r#type: PacketType::PacketFin as i32,
            ..Default::default()
        }]))
    }
}

fn remove_existing(path: &Path, want_dir: bool) -> Result<(), ReceiveError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() && want_dir => Ok(()),
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path).map_err(io_err(path)),
        Ok(_) => std::fs::remove_file(path).map_err(io_err(path)),
        Err(_) => Ok(()),
    }
}

fn make_node(path: &Path, stat: &Stat) -> Result<(), ReceiveError> {
    use std::os::unix::ffi::OsStrExt;
    let kind = if stat.mode & MODE_NAMED_PIPE != 0 {
        libc::S_IFIFO
    } else if stat.mode & MODE_CHAR_DEVICE != 0 {
        libc::S_IFCHR
    } else {
        libc::S_IFBLK
    };
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io_err(path)(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    let dev = libc::makedev(stat.devmajor as u32, stat.devminor as u32);
    // SAFETY: c is a valid NUL-terminated path.
    let rc = unsafe { libc::mknod(c.as_ptr(), kind | posix_perm(stat.mode), dev) };
    if rc != 0 {
        return Err(io_err(path)(std::io::Error::last_os_error()));
    }
    Ok(())
}

fn set_mtime(path: &Path, nanos: i64, follow: bool) -> Result<(), ReceiveError> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io_err(path)(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    let ts = libc::timespec {
        tv_sec: nanos.div_euclid(1_000_000_000),
        tv_nsec: nanos.rem_euclid(1_000_000_000),
    };
    let times = [ts, ts];
    let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
    // SAFETY: c is a valid path and times points at two timespecs.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), flags) };
    if rc != 0 {
        return Err(io_err(path)(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(path: &str, mode: u32) -> Packet {
        Packet {
            r#type: PacketType::PacketStat as i32,
            stat: Some(Stat {
                path: path.into(),
                mode,
                mod_time: 1_000_000_000,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn receives_a_small_tree_and_finishes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut r = Receiver::new(dir.path().to_path_buf());
        assert_eq!(
            r.handle(stat("d", MODE_DIR | 0o755)).expect("dir"),
            Step::Reply(vec![])
        );
        let Step::Reply(req) = r.handle(stat("d/f", 0o644)).expect("file") else {
            panic!("expected a request");
        };
        assert_eq!(req[0].id, 1);
        let end = Packet::default();
        assert_eq!(r.handle(end).expect("end"), Step::Reply(vec![]));
        let data = |d: &[u8]| Packet {
            r#type: PacketType::PacketData as i32,
            id: 1,
            data: d.to_vec().into(),
            ..Default::default()
        };
        r.handle(data(b"hello")).expect("data");
        let Step::Reply(fin) = r.handle(data(b"")).expect("eof") else {
            panic!("expected fin");
        };
        assert_eq!(fin[0].r#type, PacketType::PacketFin as i32);
        assert_eq!(
            std::fs::read(dir.path().join("d/f")).expect("read"),
            b"hello"
        );
    }

    #[test]
    fn refuses_paths_that_escape() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut r = Receiver::new(dir.path().to_path_buf());
        assert!(matches!(
            r.handle(stat("../x", 0o644)),
            Err(ReceiveError::UnsafePath(_))
        ));
        assert!(matches!(
            r.handle(stat("/etc/x", 0o644)),
            Err(ReceiveError::UnsafePath(_))
        ));
    }
}
