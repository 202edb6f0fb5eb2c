//! Encoding of file metadata as the file-sync protocol carries it: Go
//! `io/fs.FileMode` bits, nanosecond mtimes, `/`-separated relative paths of
//! any bytes.

use bytes::Bytes;

use super::dirfd::{is_dir, is_symlink, Dir, Stat as Stat64};
use crate::proto::fsutil::types::{Stat, Xattr};

pub const MODE_DIR: u32 = 1 << 31;
pub const MODE_SYMLINK: u32 = 1 << 27;
pub const MODE_DEVICE: u32 = 1 << 26;
pub const MODE_NAMED_PIPE: u32 = 1 << 25;
pub const MODE_SOCKET: u32 = 1 << 24;
pub const MODE_SETUID: u32 = 1 << 23;
pub const MODE_SETGID: u32 = 1 << 22;
pub const MODE_CHAR_DEVICE: u32 = 1 << 21;
pub const MODE_STICKY: u32 = 1 << 20;
pub const MODE_IRREGULAR: u32 = 1 << 19;
/// Every type bit: an entry with none of them is a regular file.
pub const MODE_TYPE: u32 = MODE_DIR
    | MODE_SYMLINK
    | MODE_NAMED_PIPE
    | MODE_SOCKET
    | MODE_DEVICE
    | MODE_CHAR_DEVICE
    | MODE_IRREGULAR;
pub const MODE_PERM: u32 = 0o777;

/// Go file mode of a `stat` result.
pub fn go_mode(st: &Stat64) -> u32 {
    let raw = st.st_mode;
    let mut mode = raw & MODE_PERM;
    mode |= match raw & libc::S_IFMT {
        libc::S_IFDIR => MODE_DIR,
        libc::S_IFLNK => MODE_SYMLINK,
        libc::S_IFBLK => MODE_DEVICE,
        libc::S_IFCHR => MODE_DEVICE | MODE_CHAR_DEVICE,
        libc::S_IFIFO => MODE_NAMED_PIPE,
        libc::S_IFSOCK => MODE_SOCKET,
        _ => 0,
    };
    if raw & libc::S_ISUID != 0 {
        mode |= MODE_SETUID;
    }
    if raw & libc::S_ISGID != 0 {
        mode |= MODE_SETGID;
    }
    if raw & libc::S_ISVTX != 0 {
        mode |= MODE_STICKY;
    }
    mode
}

/// POSIX `st_mode` permission and special bits for a Go file mode.
pub fn posix_perm(go_mode: u32) -> u32 {
    let mut mode = go_mode & MODE_PERM;
    if go_mode & MODE_SETUID != 0 {
        mode |= libc::S_ISUID;
    }
    if go_mode & MODE_SETGID != 0 {
        mode |= libc::S_ISGID;
    }
    if go_mode & MODE_STICKY != 0 {
        mode |= libc::S_ISVTX;
    }
    mode
}

/// Whether the receiver may ask for this entry's content.
pub fn is_requestable(mode: u32) -> bool {
    mode & MODE_TYPE == 0
}

/// Builds the protocol stat of entry `name` of `dir`, whose `fstatat` is
/// `st`. `rel` is the `/`-separated path relative to the transfer root, any
/// bytes; owner is reset to 0:0, as buildctl does, so that cache keys match
/// across machines. Hardlinks are the walk's business.
pub fn make_stat(dir: &Dir, name: &[u8], rel: Bytes, st: &Stat64) -> std::io::Result<Stat> {
    let mut stat = Stat {
        path: rel,
        mode: go_mode(st),
        mod_time: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec,
        ..Default::default()
    };
    if !is_dir(st) {
        stat.size = st.st_size;
        if is_symlink(st) {
            stat.linkname = dir.read_link_at(name)?.into();
        }
        let kind = st.st_mode & libc::S_IFMT;
        if kind == libc::S_IFBLK || kind == libc::S_IFCHR {
            stat.devmajor = libc::major(st.st_rdev) as i64;
            stat.devminor = libc::minor(st.st_rdev) as i64;
        }
    }
    let mut xattrs = dir.xattrs_at(name)?;
    // fsutil leaves out macOS's own attributes; it sends a map, so the order
    // is its own: sorted here, so the same tree gives the same bytes.
    xattrs.retain(|(k, _)| !k.starts_with(b"com.apple."));
    xattrs.sort();
    stat.xattrs = xattrs
        .into_iter()
        .map(|(key, value)| Xattr {
            key: key.into(),
            value: value.into(),
        })
        .collect();
    // The protocol never carries sockets: they go as empty regular files.
    stat.mode &= !MODE_SOCKET;
    Ok(stat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_mode_of_common_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("f"), b"x").expect("write");
        std::os::unix::fs::symlink("f", dir.path().join("l")).expect("symlink");
        std::fs::create_dir(dir.path().join("d")).expect("mkdir");
        let d = Dir::open(dir.path()).expect("open");
        let st = d.stat_at(b"f").expect("stat");
        assert_eq!(go_mode(&st) & MODE_TYPE, 0);
        assert_ne!(go_mode(&d.stat_at(b"d").expect("stat")) & MODE_DIR, 0);
        let st = d.stat_at(b"l").expect("stat");
        let s = make_stat(&d, b"l", Bytes::from_static(b"l"), &st).expect("stat");
        assert_ne!(s.mode & MODE_SYMLINK, 0);
        assert_eq!(&s.linkname[..], b"f");
        assert_eq!(s.size, 1);
    }

    #[test]
    fn special_bits_round_trip() {
        let m = MODE_SETUID | MODE_STICKY | 0o755;
        assert_eq!(posix_perm(m), libc::S_ISUID | libc::S_ISVTX | 0o755);
    }
}
