//! Encoding of file metadata as the file-sync protocol carries it: Go
//! `io/fs.FileMode` bits, nanosecond mtimes, `/`-separated relative paths.

use std::ffi::{CString, OsStr};
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::proto::fsutil::types::Stat;

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

/// Go file mode of an lstat result.
pub fn go_mode(meta: &Metadata) -> u32 {
    let ft = meta.file_type();
    let raw = meta.mode();
    let mut mode = raw & MODE_PERM;
    if ft.is_dir() {
        mode |= MODE_DIR;
    } else if ft.is_symlink() {
        mode |= MODE_SYMLINK;
    } else if ft.is_block_device() {
        mode |= MODE_DEVICE;
    } else if ft.is_char_device() {
        mode |= MODE_DEVICE | MODE_CHAR_DEVICE;
    } else if ft.is_fifo() {
        mode |= MODE_NAMED_PIPE;
    } else if ft.is_socket() {
        mode |= MODE_SOCKET;
    }
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

/// Builds the protocol stat of one entry. `rel` is the `/`-separated path
/// relative to the transfer root; owner is reset to 0:0, as buildctl does, so
/// that cache keys match across machines.
pub fn make_stat(abs: &Path, rel: String, meta: &Metadata) -> std::io::Result<Stat> {
    let mut mode = go_mode(meta);
    let mut stat = Stat {
        path: rel,
        mode: 0,
        uid: 0,
        gid: 0,
        size: 0,
        mod_time: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        linkname: String::new(),
        devmajor: 0,
        devminor: 0,
        xattrs: Default::default(),
    };
    if !meta.is_dir() {
        stat.size = meta.size() as i64;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(abs)?;
            stat.linkname = target
                .to_str()
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "symlink target is not valid UTF-8",
                    )
                })?
                .to_string();
        }
        let ft = meta.file_type();
        if ft.is_block_device() || ft.is_char_device() {
            let rdev = meta.rdev();
            stat.devmajor = libc::major(rdev) as i64;
            stat.devminor = libc::minor(rdev) as i64;
        }
    }
    load_xattrs(abs, &mut stat)?;
    // The protocol never carries sockets: they go as empty regular files.
    mode &= !MODE_SOCKET;
    stat.mode = mode;
    Ok(stat)
}

fn load_xattrs(abs: &Path, stat: &mut Stat) -> std::io::Result<()> {
    let Ok(cpath) = CString::new(abs.as_os_str().as_bytes()) else {
        return Ok(());
    };
    // SAFETY: cpath is a valid NUL-terminated string; a null buffer with size
    // 0 asks only for the needed length.
    let len = unsafe { libc::llistxattr(cpath.as_ptr(), std::ptr::null_mut(), 0) };
    if len < 0 {
        let err = std::io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOTSUP) | Some(libc::ENODATA) => Ok(()),
            _ => Err(err),
        };
    }
    if len == 0 {
        return Ok(());
    }
    let mut names = vec![0u8; len as usize];
    // SAFETY: names has exactly `len` writable bytes.
    let len = unsafe { libc::llistxattr(cpath.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if len < 0 {
        return Ok(());
    }
    names.truncate(len as usize);
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(b"com.apple.") {
            continue;
        }
        let (Ok(key), Ok(cname)) = (std::str::from_utf8(name), CString::new(name)) else {
            continue;
        };
        if let Some(value) = get_xattr(&cpath, &cname) {
            stat.xattrs.insert(key.to_string(), value.into());
        }
    }
    Ok(())
}

fn get_xattr(path: &CString, name: &CString) -> Option<Vec<u8>> {
    // SAFETY: both strings are NUL-terminated; null buffer asks for the size.
    let len = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
    if len < 0 {
        return None;
    }
    let mut buf = vec![0u8; len as usize];
    // SAFETY: buf has `len` writable bytes.
    let len = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if len < 0 {
        return None;
    }
    buf.truncate(len as usize);
    Some(buf)
}

/// A relative path as the protocol wants it, or `None` when the name is not
/// valid UTF-8 (the wire format carries names as protobuf strings).
pub fn rel_to_string(rel: &OsStr) -> Option<String> {
    rel.to_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_mode_of_common_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").expect("write");
        let meta = std::fs::symlink_metadata(&f).expect("meta");
        assert_eq!(go_mode(&meta) & MODE_TYPE, 0);
        let meta = std::fs::symlink_metadata(dir.path()).expect("meta");
        assert_ne!(go_mode(&meta) & MODE_DIR, 0);
        std::os::unix::fs::symlink("f", dir.path().join("l")).expect("symlink");
        let l = dir.path().join("l");
        let meta = std::fs::symlink_metadata(&l).expect("meta");
        let st = make_stat(&l, "l".into(), &meta).expect("stat");
        assert_ne!(st.mode & MODE_SYMLINK, 0);
        assert_eq!(st.linkname, "f");
        assert_eq!(st.size, 1);
    }

    #[test]
    fn special_bits_round_trip() {
        let m = MODE_SETUID | MODE_STICKY | 0o755;
        assert_eq!(posix_perm(m), libc::S_ISUID | libc::S_ISVTX | 0o755);
    }
}
