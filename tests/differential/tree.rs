//! The exported trees, entry by entry: from a tar export or a local export
//! directory, with everything either can carry, and the differences between
//! two of them.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// One exported entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: String,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    /// Seconds, and nanoseconds where the format has them.
    pub mtime: (i64, u32),
    pub link: Vec<u8>,
    pub content: Vec<u8>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    pub device: (u64, u64),
}

/// A tree by path (relative, no trailing `/`; the root is the empty path).
pub type Tree = BTreeMap<Vec<u8>, Node>;

fn trim_slashes(p: &[u8]) -> Vec<u8> {
    let mut p = p;
    while let Some(rest) = p.strip_suffix(b"/") {
        p = rest;
    }
    while let Some(rest) = p.strip_prefix(b"./") {
        p = rest;
    }
    p.to_vec()
}

/// The entries of a tar file.
pub fn from_tar(path: &Path) -> Tree {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut archive = tar::Archive::new(file);
    let mut tree = Tree::new();
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        let name = trim_slashes(&entry.path_bytes());
        let mut xattrs = BTreeMap::new();
        let mut mtime_nanos = 0;
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                let key = ext.key().unwrap_or_default().to_string();
                if let Some(attr) = key.strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(attr.to_string(), ext.value_bytes().to_vec());
                } else if key == "mtime" {
                    let v = ext.value().unwrap_or_default();
                    if let Some((_, frac)) = v.split_once('.') {
                        let digits: String =
                            frac.chars().chain("000000000".chars()).take(9).collect();
                        mtime_nanos = digits.parse().unwrap_or(0);
                    }
                }
            }
        }
        let h = entry.header().clone();
        let link = entry
            .link_name_bytes()
            .map(|l| l.to_vec())
            .unwrap_or_default();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).expect("tar content");
        tree.insert(
            name,
            Node {
                kind: format!("{:?}", h.entry_type()),
                mode: h.mode().expect("mode"),
                uid: h.uid().expect("uid"),
                gid: h.gid().expect("gid"),
                size: h.size().expect("size"),
                mtime: (h.mtime().expect("mtime") as i64, mtime_nanos),
                link,
                content,
                xattrs,
                device: (
                    u64::from(h.device_major().ok().flatten().unwrap_or(0)),
                    u64::from(h.device_minor().ok().flatten().unwrap_or(0)),
                ),
            },
        );
    }
    tree
}

/// The entries below a directory (a local export), by `lstat`.
pub fn from_dir(root: &Path) -> Tree {
    let mut tree = Tree::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
        for e in rd {
            let e = e.expect("dir entry");
            let path = e.path();
            let meta = std::fs::symlink_metadata(&path).expect("lstat");
            let rel = path
                .strip_prefix(root)
                .expect("below the root")
                .as_os_str()
                .as_bytes()
                .to_vec();
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                stack.push(path.clone());
                "Directory"
            } else if ft.is_symlink() {
                "Symlink"
            } else if ft.is_fifo() {
                "Fifo"
            } else if ft.is_char_device() {
                "Char"
            } else if ft.is_block_device() {
                "Block"
            } else if ft.is_socket() {
                "Socket"
            } else {
                "Regular"
            };
            let link = if ft.is_symlink() {
                std::fs::read_link(&path)
                    .map(|l| l.as_os_str().as_bytes().to_vec())
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            let content = if ft.is_file() {
                std::fs::read(&path).unwrap_or_default()
            } else {
                Vec::new()
            };
            let rdev = meta.rdev();
            tree.insert(
                rel,
                Node {
                    kind: kind.to_string(),
                    mode: meta.mode() & 0o7777,
                    uid: u64::from(meta.uid()),
                    gid: u64::from(meta.gid()),
                    size: if ft.is_file() { meta.size() } else { 0 },
                    mtime: (meta.mtime(), meta.mtime_nsec() as u32),
                    link,
                    content,
                    xattrs: xattrs(&path),
                    device: (libc::major(rdev).into(), libc::minor(rdev).into()),
                },
            );
        }
    }
    tree
}

/// Extended attributes of a path (not followed).
fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return out;
    };
    let mut names = vec![0u8; 64 << 10];
    // SAFETY: buffers of the stated sizes, a NUL-terminated path.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return out;
    }
    for name in names[..n as usize]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
    {
        let Ok(cname) = std::ffi::CString::new(name) else {
            continue;
        };
        let mut value = vec![0u8; 64 << 10];
        // SAFETY: as above.
        let len = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if len >= 0 {
            value.truncate(len as usize);
            out.insert(String::from_utf8_lossy(name).into_owned(), value);
        }
    }
    out
}

/// The part of `tree` below `top` (a batch puts each case under `/<n>/`),
/// with paths relative to it; the directory itself becomes the root.
pub fn subtree(tree: &Tree, top: &[u8]) -> Tree {
    let mut prefix = top.to_vec();
    prefix.push(b'/');
    tree.iter()
        .filter_map(|(path, node)| {
            if path == top {
                Some((Vec::new(), node.clone()))
            } else {
                path.strip_prefix(prefix.as_slice())
                    .map(|rest| (rest.to_vec(), node.clone()))
            }
        })
        .collect()
}

pub fn show(path: &[u8]) -> String {
    if path.is_empty() {
        return "(root)".into();
    }
    format!("{:?}", String::from_utf8_lossy(path))
}

/// Every difference between buildctl's tree and bkd's, one line each. The
/// times of the root and of `build_time` directories are left out: the
/// build makes those when it copies.
pub fn differences(buildctl: &Tree, bkd: &Tree, build_time: &[Vec<u8>]) -> Vec<String> {
    let mut out = Vec::new();
    for (path, theirs) in buildctl {
        match bkd.get(path) {
            None => out.push(format!(
                "{} only in buildctl's result ({})",
                show(path),
                theirs.kind
            )),
            Some(ours) => {
                let mut fields = Vec::new();
                let mut field = |name: &str, differ: bool, t: String, o: String| {
                    if differ {
                        fields.push(format!("{name} {t} vs {o}"));
                    }
                };
                field(
                    "type",
                    theirs.kind != ours.kind,
                    theirs.kind.clone(),
                    ours.kind.clone(),
                );
                field(
                    "mode",
                    theirs.mode != ours.mode,
                    format!("{:o}", theirs.mode),
                    format!("{:o}", ours.mode),
                );
                field(
                    "owner",
                    (theirs.uid, theirs.gid) != (ours.uid, ours.gid),
                    format!("{}:{}", theirs.uid, theirs.gid),
                    format!("{}:{}", ours.uid, ours.gid),
                );
                field(
                    "size",
                    theirs.size != ours.size,
                    theirs.size.to_string(),
                    ours.size.to_string(),
                );
                if !path.is_empty() && !build_time.contains(path) {
                    field(
                        "mtime",
                        theirs.mtime != ours.mtime,
                        format!("{:?}", theirs.mtime),
                        format!("{:?}", ours.mtime),
                    );
                }
                field(
                    "link",
                    theirs.link != ours.link,
                    show(&theirs.link),
                    show(&ours.link),
                );
                field(
                    "content",
                    theirs.content != ours.content,
                    format!("{} bytes", theirs.content.len()),
                    format!("{} bytes", ours.content.len()),
                );
                field(
                    "xattrs",
                    theirs.xattrs != ours.xattrs,
                    format!("{:?}", theirs.xattrs.keys()),
                    format!("{:?}", ours.xattrs.keys()),
                );
                field(
                    "device",
                    theirs.device != ours.device,
                    format!("{:?}", theirs.device),
                    format!("{:?}", ours.device),
                );
                if !fields.is_empty() {
                    out.push(format!(
                        "{}: {} (buildctl vs bkd)",
                        show(path),
                        fields.join(", ")
                    ));
                }
            }
        }
    }
    for (path, ours) in bkd {
        if !buildctl.contains_key(path) {
            out.push(format!(
                "{} only in bkd's result ({})",
                show(path),
                ours.kind
            ));
        }
    }
    out
}
