//! The receiving side of a file-sync conversation: takes the sender's STAT
//! and DATA packets, recreates the tree under a destination directory, and
//! says which files it wants. Used for the `local` exporter, where the daemon
//! sends and bkd receives.
//!
//! The sender is not trusted. As fsutil's receiver, it requires every path
//! to be clean and relative, the STATs in strictly increasing order with
//! every parent directory announced before its entries (so no path comes
//! twice and nothing is created below a symlink), and a hard link to name a
//! file received before. Beyond that, everything is done through
//! descriptors of directories this receiver created itself, never by a
//! path that could pass through a symlink: a hostile sender can at worst
//! produce a wrong tree inside the destination, never touch anything
//! outside it.
//!
//! What it restores, as the tar exporter records it: file types (FIFOs and
//! device nodes included), permission bits with setuid, setgid and sticky,
//! modification times of everything (symlinks included), extended
//! attributes, hard links. Owners are not restored: everything belongs to
//! the user running bkd, as with buildctl. Without privileges a device node
//! cannot be created (the export fails naming it, as buildctl's does), and
//! attributes outside the `user.` namespace are refused by the kernel and
//! left out (buildctl leaves them out silently too).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use bytes::Bytes;

use super::dirfd::{self, is_plain_name, Dir};
use super::stat::{
    is_requestable, posix_perm, MODE_CHAR_DEVICE, MODE_DEVICE, MODE_DIR, MODE_NAMED_PIPE,
    MODE_SYMLINK,
};
use crate::proto::fsutil::types::{packet::PacketType, Packet, Stat};
use crate::text::escape_bytes;

#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("sender sent an unsafe path {0}")]
    UnsafePath(String),
    #[error("sender sent {path} out of order (after {after})")]
    OutOfOrder { path: String, after: String },
    #[error("sender sent a hard link {path} to {target}, which is not a file it sent before")]
    BadLink { path: String, target: String },
    #[error("sender sent data for unknown file id {0}")]
    UnknownId(u32),
    #[error("error from sender: {0}")]
    Sender(String),
    #[error("cannot write {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sender ended the transfer before all files arrived")]
    Incomplete,
    /// Without privileges the kernel refuses `mknod` of a device.
    #[error("cannot create the device node {0}: only root can (a tar output keeps device nodes)")]
    DeviceNeedsRoot(String),
}

/// What the caller should do after a packet was handled.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Send these packets (requests, or the final FIN) and keep reading.
    Reply(Vec<Packet>),
    /// The conversation is over.
    Done,
}

/// Files whose content is asked for at once; each holds a descriptor until
/// its content has arrived. The daemon sends with four workers, so a few
/// dozen keep it busy.
const REQUESTED_AT_ONCE: usize = 64;

/// A directory on the current path of the walk being received.
struct Level {
    /// Its path (empty for the destination itself).
    path: Bytes,
    /// The last name received in it.
    last: Vec<u8>,
    dir: Dir,
}

/// What is applied to an entry once its content is there. Copied out of
/// the packet: a part of a received message would keep the whole receive
/// buffer it came in alive.
struct Meta {
    mode: u32,
    mod_time: i64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Meta {
    fn of(stat: &Stat) -> Meta {
        Meta {
            mode: stat.mode,
            mod_time: stat.mod_time,
            xattrs: stat
                .xattrs
                .iter()
                .map(|x| (x.key.to_vec(), x.value.to_vec()))
                .collect(),
        }
    }

    /// Applies attributes, mode and time to an open file or directory.
    /// Attributes the kernel refuses are left out, as buildctl does.
    fn apply(&self, fd: std::os::fd::RawFd) -> std::io::Result<()> {
        for (key, value) in &self.xattrs {
            let _ = dirfd::set_xattr(fd, key, value);
        }
        dirfd::set_mode(fd, posix_perm(self.mode))?;
        dirfd::set_times(fd, self.mod_time)
    }
}

/// A regular file announced and created, waiting for its content.
struct Incoming {
    path: Bytes,
    meta: Meta,
    ino: u64,
    /// Open while requested.
    file: Option<File>,
}

/// Recreates a sent tree under a destination directory.
pub struct Receiver {
    /// The destination's path, for messages only.
    shown: PathBuf,
    stack: Vec<Level>,
    next_id: u32,
    incoming: HashMap<u32, Incoming>,
    /// Created files not asked for yet, in order.
    waiting: VecDeque<u32>,
    requested: usize,
    /// Paths of the regular files received, for hard links to name.
    files: HashSet<Bytes>,
    walk_done: bool,
    sent_fin: bool,
    /// Directory metadata is applied at the end, after their content exists.
    dirs: Vec<(Bytes, Meta)>,
    pub bytes: u64,
}

/// fsutil's path order: byte order, except that `/` sorts before every
/// other byte, so a directory's entries come right after it.
fn compare_paths(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    for (x, y) in a.iter().zip(b) {
        if x == y {
            continue;
        }
        if *x == b'/' {
            return std::cmp::Ordering::Less;
        }
        if *y == b'/' {
            return std::cmp::Ordering::Greater;
        }
        return x.cmp(y);
    }
    a.len().cmp(&b.len())
}

impl Receiver {
    /// Receives into `dest`, an empty directory of this process; `shown` is
    /// where the tree will end up, for messages.
    pub fn new(dest: Dir, shown: PathBuf) -> Self {
        dirfd::raise_open_files_limit();
        Receiver {
            shown,
            stack: vec![Level {
                path: Bytes::new(),
                last: Vec::new(),
                dir: dest,
            }],
            next_id: 0,
            incoming: HashMap::new(),
            waiting: VecDeque::new(),
            requested: 0,
            files: HashSet::new(),
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
                    self.next_id = self.next_id.wrapping_add(1);
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

    fn shown(&self, rel: &[u8]) -> String {
        crate::fsync::walk::shown(&self.shown, rel)
    }

    fn io_err(&self, rel: &[u8]) -> impl FnOnce(std::io::Error) -> ReceiveError + '_ {
        let path = self.shown(rel);
        move |source| ReceiveError::Io { path, source }
    }

    /// Checks `path` comes next in fsutil's order, inside the directory on
    /// top of the stack (popping finished ones); returns its name there.
    fn place<'p>(&mut self, path: &'p [u8]) -> Result<&'p [u8], ReceiveError> {
        // A path the kernel could not take is refused too: it bounds the
        // depth, and the directories held open with it.
        let clean = !path.is_empty()
            && path.len() < dirfd::PATH_MAX
            && path.split(|b| *b == b'/').all(is_plain_name);
        if !clean {
            return Err(ReceiveError::UnsafePath(escape_bytes(path)));
        }
        let (dir, name) = match path.iter().rposition(|b| *b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&path[..0], path),
        };
        while self.stack.len() > 1
            && self
                .stack
                .last()
                .is_some_and(|top| compare_paths(&top.path, dir) == std::cmp::Ordering::Greater)
        {
            self.stack.pop();
        }
        let top = self.stack.last_mut().ok_or(ReceiveError::Incomplete)?;
        if top.path != dir || top.last.as_slice() >= name {
            let mut after = top.path.to_vec();
            if !top.last.is_empty() {
                if !after.is_empty() {
                    after.push(b'/');
                }
                after.extend_from_slice(&top.last);
            }
            return Err(ReceiveError::OutOfOrder {
                path: escape_bytes(path),
                after: escape_bytes(&after),
            });
        }
        top.last = name.to_vec();
        Ok(name)
    }

    fn create(&mut self, id: u32, stat: Stat) -> Result<Step, ReceiveError> {
        let path = Bytes::copy_from_slice(&stat.path);
        let name = self.place(&path)?;
        let mode = stat.mode;
        let top = self.stack.len() - 1;
        let dir = &self.stack[top].dir;
        if mode & MODE_DIR != 0 {
            dir.mkdir_at(name, 0o700).map_err(self.io_err(&path))?;
            let sub = dir.open_dir(name).map_err(self.io_err(&path))?;
            self.stack.push(Level {
                path: path.clone(),
                last: Vec::new(),
                dir: sub,
            });
            self.dirs.push((path, Meta::of(&stat)));
            return Ok(Step::Reply(Vec::new()));
        }
        if mode & MODE_SYMLINK != 0 {
            dir.symlink_at(&stat.linkname, name)
                .map_err(self.io_err(&path))?;
            dir.set_times_at(name, stat.mod_time)
                .map_err(self.io_err(&path))?;
            return Ok(Step::Reply(Vec::new()));
        }
        if mode & (MODE_NAMED_PIPE | MODE_DEVICE) != 0 {
            self.make_node(top, name, &stat)?;
            return Ok(Step::Reply(Vec::new()));
        }
        if !stat.linkname.is_empty() && is_requestable(mode) {
            self.link(top, name, &stat)?;
            return Ok(Step::Reply(Vec::new()));
        }
        let fd = dir
            .open_at(name, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o600)
            .map_err(self.io_err(&path))?;
        let ino = dirfd::fstat(fd.as_raw_fd())
            .map_err(self.io_err(&path))?
            .st_ino;
        self.files.insert(path.clone());
        let mut incoming = Incoming {
            path,
            meta: Meta::of(&stat),
            ino,
            file: None,
        };
        let mut replies = Vec::new();
        if self.requested < REQUESTED_AT_ONCE && self.waiting.is_empty() {
            incoming.file = Some(File::from(fd));
            self.requested += 1;
            replies.push(request(id));
        } else {
            self.waiting.push_back(id);
        }
        self.incoming.insert(id, incoming);
        Ok(Step::Reply(replies))
    }

    /// A FIFO or device node, with its mode, xattrs and time. They cannot
    /// be opened without side effects, so they are set by name, in a
    /// directory only this process writes to, right after creating them.
    fn make_node(&self, top: usize, name: &[u8], stat: &Stat) -> Result<(), ReceiveError> {
        let dir = &self.stack[top].dir;
        let kind = if stat.mode & MODE_NAMED_PIPE != 0 {
            libc::S_IFIFO
        } else if stat.mode & MODE_CHAR_DEVICE != 0 {
            libc::S_IFCHR
        } else {
            libc::S_IFBLK
        };
        let dev = libc::makedev(stat.devmajor as u32, stat.devminor as u32);
        match dir.mknod_at(name, kind | 0o600, dev) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) && kind != libc::S_IFIFO => {
                return Err(ReceiveError::DeviceNeedsRoot(escape_bytes(&stat.path)))
            }
            r => r.map_err(self.io_err(&stat.path))?,
        }
        for x in &stat.xattrs {
            // As buildctl: an attribute the kernel refuses is left out.
            let _ = dir.set_xattr_at(name, &x.key, &x.value);
        }
        dir.chmod_at(name, posix_perm(stat.mode))
            .map_err(self.io_err(&stat.path))?;
        dir.set_times_at(name, stat.mod_time)
            .map_err(self.io_err(&stat.path))
    }

    fn link(&self, top: usize, name: &[u8], stat: &Stat) -> Result<(), ReceiveError> {
        let target = &stat.linkname;
        if !self.files.contains(target) {
            return Err(ReceiveError::BadLink {
                path: escape_bytes(&stat.path),
                target: escape_bytes(target),
            });
        }
        // The target is a file this receiver created; its directory is
        // reached from the destination without following any link.
        let (parent, base) = match target.iter().rposition(|b| *b == b'/') {
            Some(i) => (&target[..i], &target[i + 1..]),
            None => (&target[..0], &target[..]),
        };
        let from = if parent.is_empty() {
            self.stack[0].dir.try_clone()
        } else {
            self.stack[0].dir.open_dir_beneath(parent)
        }
        .map_err(self.io_err(&stat.path))?;
        self.stack[top]
            .dir
            .link_at(&from, base, name)
            .map_err(self.io_err(&stat.path))
    }

    fn data(&mut self, id: u32, data: &[u8]) -> Result<Step, ReceiveError> {
        let incoming = self
            .incoming
            .get_mut(&id)
            .filter(|f| f.file.is_some())
            .ok_or(ReceiveError::UnknownId(id))?;
        if data.is_empty() {
            if let Some(incoming) = self.incoming.remove(&id) {
                self.complete(incoming)?;
            }
            self.requested -= 1;
            let mut replies = self.request_more()?;
            if let Step::Reply(fin) = self.maybe_finish()? {
                replies.extend(fin);
            }
            return Ok(Step::Reply(replies));
        }
        let written = match incoming.file.as_mut() {
            Some(file) => file.write_all(data),
            None => Ok(()),
        };
        if let Err(e) = written {
            let path = incoming.path.clone();
            return Err(self.io_err(&path)(e));
        }
        self.bytes += data.len() as u64;
        Ok(Step::Reply(Vec::new()))
    }

    /// A file's content is all there: its attributes, then its mode (a
    /// write by someone else would have cleared setuid bits and file
    /// capabilities, so they come after the content), then its time.
    fn complete(&self, incoming: Incoming) -> Result<(), ReceiveError> {
        let Some(file) = incoming.file else {
            return Ok(());
        };
        incoming
            .meta
            .apply(file.as_raw_fd())
            .map_err(self.io_err(&incoming.path))
    }

    /// Asks for waiting files while fewer than [`REQUESTED_AT_ONCE`] are
    /// under way, opening each again below the destination (never through
    /// a link) and checking it is the file created for it.
    fn request_more(&mut self) -> Result<Vec<Packet>, ReceiveError> {
        let mut replies = Vec::new();
        while self.requested < REQUESTED_AT_ONCE {
            let Some(id) = self.waiting.pop_front() else {
                break;
            };
            let Some(incoming) = self.incoming.get(&id) else {
                continue;
            };
            let path = incoming.path.clone();
            let fd: OwnedFd = self.stack[0]
                .dir
                .open_beneath(&path, libc::O_WRONLY)
                .map_err(self.io_err(&path))?;
            let st = dirfd::fstat(fd.as_raw_fd()).map_err(self.io_err(&path))?;
            if st.st_ino != incoming.ino || !dirfd::is_file(&st) {
                return Err(self.io_err(&path)(std::io::Error::other(
                    "replaced while the output was being received",
                )));
            }
            if let Some(incoming) = self.incoming.get_mut(&id) {
                incoming.file = Some(File::from(fd));
            }
            self.requested += 1;
            replies.push(request(id));
        }
        Ok(replies)
    }

    fn maybe_finish(&mut self) -> Result<Step, ReceiveError> {
        if !self.walk_done || !self.incoming.is_empty() || self.sent_fin {
            return Ok(Step::Reply(Vec::new()));
        }
        // Only the destination stays open.
        self.stack.truncate(1);
        // Each directory before its parent, so every lookup passes only
        // through directories that still have the permissions they were
        // created with, and a parent's time is set after its content.
        let dirs = std::mem::take(&mut self.dirs);
        for (path, meta) in dirs.iter().rev() {
            let dir = self.stack[0]
                .dir
                .open_dir_beneath(path)
                .map_err(self.io_err(path))?;
            meta.apply(dir.fd()).map_err(self.io_err(path))?;
        }
        self.sent_fin = true;
        Ok(Step::Reply(vec![Packet {
            r#type: PacketType::PacketFin as i32,
            ..Default::default()
        }]))
    }
}

fn request(id: u32) -> Packet {
    Packet {
        r#type: PacketType::PacketReq as i32,
        id,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(path: &str, mode: u32) -> Packet {
        stat_link(path, mode, "")
    }

    fn stat_link(path: &str, mode: u32, link: &str) -> Packet {
        Packet {
            r#type: PacketType::PacketStat as i32,
            stat: Some(Stat {
                path: Bytes::copy_from_slice(path.as_bytes()),
                mode,
                mod_time: 1_000_000_000,
                linkname: Bytes::copy_from_slice(link.as_bytes()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn data(id: u32, d: &[u8]) -> Packet {
        Packet {
            r#type: PacketType::PacketData as i32,
            id,
            data: d.to_vec().into(),
            ..Default::default()
        }
    }

    fn receiver(dir: &std::path::Path) -> Receiver {
        Receiver::new(Dir::open(dir).expect("open"), dir.to_path_buf())
    }

    #[test]
    fn receives_a_small_tree_and_finishes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut r = receiver(dir.path());
        assert_eq!(
            r.handle(stat("d", MODE_DIR | 0o755)).expect("dir"),
            Step::Reply(vec![])
        );
        let Step::Reply(req) = r.handle(stat("d/f", 0o644)).expect("file") else {
            panic!("expected a request");
        };
        assert_eq!(req[0].id, 1);
        r.handle(stat_link("d/g", 0o644, "d/f")).expect("hard link");
        let end = Packet::default();
        assert_eq!(r.handle(end).expect("end"), Step::Reply(vec![]));
        r.handle(data(1, b"hello")).expect("data");
        let Step::Reply(fin) = r.handle(data(1, b"")).expect("eof") else {
            panic!("expected fin");
        };
        assert_eq!(fin[0].r#type, PacketType::PacketFin as i32);
        assert_eq!(
            std::fs::read(dir.path().join("d/f")).expect("read"),
            b"hello"
        );
        assert_eq!(
            std::fs::read(dir.path().join("d/g")).expect("read"),
            b"hello"
        );
    }

    #[test]
    fn refuses_paths_that_escape_or_are_unclean() {
        for bad in ["../x", "/etc/x", "a//b", "a/", "./a", "a/./b", "", "a/../b"] {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut r = receiver(dir.path());
            assert!(
                matches!(r.handle(stat(bad, 0o644)), Err(ReceiveError::UnsafePath(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn requires_fsutil_order() {
        let order_ok = ["a", "a/b", "a/b/c", "a/c", "a-b", "b"];
        let dir = tempfile::tempdir().expect("tempdir");
        let mut r = receiver(dir.path());
        for p in order_ok {
            let mode = if p.ends_with('c') {
                0o644
            } else {
                MODE_DIR | 0o755
            };
            r.handle(stat(p, mode))
                .unwrap_or_else(|e| panic!("{p}: {e}"));
        }
        let bad: &[&[&str]] = &[
            &["b", "a"],
            &["a", "a"],
            &["x/y"],
            &["a", "a/b", "b", "a/c"],
            // A file, then a path below it.
            &["f", "f/x"],
        ];
        for seq in bad {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut r = receiver(dir.path());
            let mut failed = false;
            for p in seq.iter() {
                let mode = if *p == "f" { 0o644 } else { MODE_DIR | 0o755 };
                if let Err(e) = r.handle(stat(p, mode)) {
                    assert!(matches!(e, ReceiveError::OutOfOrder { .. }), "{seq:?}: {e}");
                    failed = true;
                    break;
                }
            }
            assert!(failed, "{seq:?} accepted");
        }
    }

    #[test]
    fn a_link_must_name_a_file_sent_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut r = receiver(dir.path());
        r.handle(stat_link("l", MODE_SYMLINK | 0o777, "/etc/passwd"))
            .expect("symlink");
        for target in ["l", "nosuch", "../x", "/etc/passwd"] {
            assert!(
                matches!(
                    r.handle(stat_link("m", 0o644, target)),
                    Err(ReceiveError::BadLink { .. })
                ),
                "{target}"
            );
            r = receiver(dir.path());
        }
    }
}
