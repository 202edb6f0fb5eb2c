//! A directory output (`-o type=local,dest=DIR`) is received into a staging
//! directory next to its destination and moved there once the build has
//! succeeded, so a failed build leaves nothing at `dest`.
//!
//! The destination's parent may be shared with other users (a
//! world-writable directory without the sticky bit lets anyone rename or
//! replace any entry in it). So the staging area is a directory
//! `.bkd-output-XXXX` that this process creates (`mkdirat`), opens without
//! following a link and checks to be its own and empty before using it; the
//! tree is received into `out` inside it, which nobody else can reach.
//! Everything after that goes through descriptors: the commit moves `out`
//! to `dest` with `renameat2(RENAME_NOREPLACE)` from the staging directory's
//! descriptor, so whatever another user does to the names in the parent,
//! only the tree that was received can end up at `dest`, and a symlink
//! planted at `dest` is never followed. An existing `dest` directory is
//! merged into entry by entry (`RENAME_EXCHANGE` replaces an entry
//! atomically, and what it replaced is removed inside the staging area).
//! Where the file system has no `renameat2` flags (some network file
//! systems), plain `renameat` is used after a check; it still never follows
//! a link, and renaming a directory onto anything but an empty directory
//! fails rather than replacing it.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::dirfd::{self, is_dir, Dir};

const STAGING_PREFIX: &str = ".bkd-output-";
const OUT: &[u8] = b"out";

/// A directory output being received, committed or removed as a whole.
#[derive(Debug)]
pub struct StagedDir {
    /// Where `dest` lives (or `dest` itself when it has no name of its own,
    /// such as `.`).
    parent: Dir,
    /// `dest`'s name in `parent`; `None` to merge into `parent` itself.
    dest_name: Option<Vec<u8>>,
    /// The staging directory and its name in `parent`.
    staging: Dir,
    staging_name: Vec<u8>,
}

fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..12)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn other(message: &str) -> io::Error {
    io::Error::other(message.to_string())
}

impl StagedDir {
    /// Creates the staging area for `dest` in its parent directory.
    pub fn create(dest: &Path) -> io::Result<StagedDir> {
        let (parent, dest_name) = match dest.file_name() {
            Some(name) => (
                Dir::open(&parent_dir(dest))?,
                Some(name.as_bytes().to_vec()),
            ),
            None => (Dir::open(dest)?, None),
        };
        let mut attempt = 0;
        let staging_name = loop {
            let name = format!("{STAGING_PREFIX}{}", random_suffix()).into_bytes();
            match parent.mkdir_at(&name, 0o700) {
                Ok(()) => break name,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let staging = match parent.open_dir(&staging_name) {
            Ok(d) => d,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
                return Err(other(
                    "the staging directory was replaced by another user before it could be used",
                ))
            }
            Err(e) => return Err(e),
        };
        // Between mkdirat and the open, another user who can write to the
        // parent could have put a directory of theirs in its place. Only
        // this process can have created an empty directory owned by it.
        let st = staging.stat()?;
        // SAFETY: geteuid cannot fail.
        let euid = unsafe { libc::geteuid() };
        if !is_dir(&st) || st.st_uid != euid || !staging.read_names()?.is_empty() {
            return Err(other(
                "the staging directory was replaced by another user before it could be used",
            ));
        }
        // A set-group-ID parent would hand its group and bit down to the
        // output; it gets this process's group and exactly 0700.
        // SAFETY: getegid cannot fail; fchown on an owned descriptor.
        unsafe { libc::fchown(staging.fd(), u32::MAX, libc::getegid()) };
        dirfd::set_mode(staging.fd(), 0o700)?;
        let staged = StagedDir {
            parent,
            dest_name,
            staging,
            staging_name,
        };
        staged.staging.mkdir_at(OUT, 0o700)?;
        Ok(staged)
    }

    /// The directory to receive the tree into.
    pub fn out(&self) -> io::Result<Dir> {
        self.staging.open_dir(OUT)
    }

    /// Moves the received tree to its destination: as a whole when nothing
    /// is there yet, else merged into the directory that is, replacing what
    /// has the same name, as buildctl merges.
    pub fn commit(self) -> io::Result<()> {
        let Some(name) = self.dest_name.clone() else {
            let out = self.out()?;
            return merge(&out, &self.parent);
        };
        match self
            .staging
            .rename_at(OUT, &self.parent, &name, libc::RENAME_NOREPLACE)
        {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) if no_rename_flags(&e) => match self.parent.stat_at(&name) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    match self.staging.rename_at(OUT, &self.parent, &name, 0) {
                        Ok(()) => return Ok(()),
                        // Something appeared there meanwhile: merge.
                        Err(e)
                            if matches!(
                                e.raw_os_error(),
                                Some(libc::EEXIST) | Some(libc::ENOTEMPTY)
                            ) => {}
                        Err(e) => return Err(not_a_directory(e)),
                    }
                }
                Err(e) => return Err(e),
                Ok(_) => {}
            },
            Err(e) => return Err(e),
        }
        let dest = self.parent.open_dir(&name).map_err(not_a_directory)?;
        let out = self.out()?;
        merge(&out, &dest)
    }
}

/// The parent directory of `dest` (`.` for a bare name).
pub fn parent_dir(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn no_rename_flags(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS))
}

fn not_a_directory(e: io::Error) -> io::Error {
    if matches!(e.raw_os_error(), Some(libc::ENOTDIR) | Some(libc::ELOOP)) {
        io::Error::new(
            io::ErrorKind::AlreadyExists,
            "exists and is not a directory",
        )
    } else {
        e
    }
}

impl Drop for StagedDir {
    /// Removes the staging area: its content through its own descriptor,
    /// then the (then empty) directory by name, only if that name still is
    /// this directory. Another user can at most have put something else at
    /// that name, which is left alone.
    fn drop(&mut self) {
        if let Ok(names) = self.staging.read_names() {
            for name in names {
                let _ = self.staging.remove_tree_at(&name);
            }
        }
        let ours = self.staging.stat();
        let there = self.parent.stat_at(&self.staging_name);
        if let (Ok(a), Ok(b)) = (ours, there) {
            if a.st_dev == b.st_dev && a.st_ino == b.st_ino {
                let _ = self.parent.unlink_at(&self.staging_name, true);
            }
        }
    }
}

/// One directory being merged: the staged one, the destination's, what is
/// left to move, and the staged directory's metadata to give the
/// destination's once its content is in.
struct Merging {
    from: Dir,
    to: Dir,
    names: std::vec::IntoIter<Vec<u8>>,
    finish: Option<DirMeta>,
}

/// Permission bits, modification time and extended attributes of a
/// directory.
struct DirMeta {
    mode: u32,
    mtime: i64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Moves every entry of `from` into `to`, replacing entries of the same
/// name, descending where both are directories. No recursion.
fn merge(from: &Dir, to: &Dir) -> io::Result<()> {
    let mut stack = vec![Merging {
        from: from.try_clone()?,
        to: to.try_clone()?,
        names: from.read_names()?.into_iter(),
        finish: None,
    }];
    while let Some(level) = stack.last_mut() {
        let Some(name) = level.names.next() else {
            if let Some(level) = stack.pop() {
                if let Some(meta) = level.finish {
                    for (k, v) in &meta.xattrs {
                        let _ = dirfd::set_xattr(level.to.fd(), k, v);
                    }
                    dirfd::set_mode(level.to.fd(), meta.mode)?;
                    dirfd::set_times(level.to.fd(), meta.mtime)?;
                }
            }
            continue;
        };
        if let Some(next) = move_entry(&level.from, &level.to, &name)? {
            stack.push(next);
        }
    }
    Ok(())
}

/// Moves one entry; when both sides are directories, returns the level to
/// merge them.
fn move_entry(from: &Dir, to: &Dir, name: &[u8]) -> io::Result<Option<Merging>> {
    let flags_work = match from.rename_at(name, to, name, libc::RENAME_NOREPLACE) {
        Ok(()) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => true,
        Err(e) if no_rename_flags(&e) => false,
        Err(e) => return Err(e),
    };
    let src = from.stat_at(name)?;
    let dst = match to.stat_at(name) {
        Ok(st) => Some(st),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    if let Some(dst) = &dst {
        if is_dir(&src) && is_dir(dst) {
            match to.open_dir(name) {
                Ok(dest_dir) => {
                    // Entries are moved into it: a directory of ours that
                    // an earlier export left read-only gets write
                    // permission until the staged one's mode replaces it.
                    let dest_st = dest_dir.stat()?;
                    // SAFETY: geteuid cannot fail.
                    if dest_st.st_uid == unsafe { libc::geteuid() }
                        && dest_st.st_mode & 0o700 != 0o700
                    {
                        dirfd::set_mode(dest_dir.fd(), (dest_st.st_mode & 0o7777) | 0o700)?;
                    }
                    let staged = from.open_dir(name)?;
                    let xattrs = from.xattrs_at(name).unwrap_or_default();
                    // The staged directory is emptied by moving its entries
                    // out, which its final mode may not allow.
                    dirfd::set_mode(staged.fd(), 0o700)?;
                    let names = staged.read_names()?;
                    return Ok(Some(Merging {
                        from: staged,
                        to: dest_dir,
                        names: names.into_iter(),
                        finish: Some(DirMeta {
                            mode: src.st_mode & 0o7777,
                            mtime: src.st_mtime * 1_000_000_000 + src.st_mtime_nsec,
                            xattrs,
                        }),
                    }));
                }
                // Replaced by a link meanwhile: replaced in turn below.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    if flags_work {
        // Swap atomically, then remove what was there, now on this side.
        from.rename_at(name, to, name, libc::RENAME_EXCHANGE)?;
        return from.remove_tree_at(name).map(|()| None);
    }
    // Without renameat2 flags: a directory cannot be renamed over a
    // non-empty directory or a non-directory, nor the reverse.
    if dst.as_ref().is_some_and(|d| is_dir(d) || is_dir(&src)) {
        to.remove_tree_at(name)?;
    }
    from.rename_at(name, to, name, 0).map(|()| None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn commit_moves_into_place_or_merges_and_never_follows_a_link_at_dest() {
        let parent = tempfile::tempdir().expect("tempdir");
        let dest = parent.path().join("out");
        let fill = |s: &StagedDir, names: &[&str]| {
            let out = s.out().expect("out");
            for n in names {
                if let Some(d) = n.strip_suffix('/') {
                    out.mkdir_at(d.as_bytes(), 0o755).expect("mkdir");
                } else {
                    let fd = out
                        .open_at(n.as_bytes(), libc::O_WRONLY | libc::O_CREAT, 0o644)
                        .expect("create");
                    drop(fd);
                }
            }
        };
        let s = StagedDir::create(&dest).expect("stage");
        fill(&s, &["a", "d/"]);
        s.commit().expect("commit");
        assert!(dest.join("a").is_file() && dest.join("d").is_dir());
        std::fs::write(dest.join("keep"), "x").expect("write");
        std::fs::create_dir(dest.join("d/old")).expect("mkdir");
        let s = StagedDir::create(&dest).expect("stage");
        fill(&s, &["a/", "d/"]);
        s.commit().expect("merge");
        assert!(dest.join("a").is_dir() && dest.join("keep").is_file());
        assert!(dest.join("d/old").is_dir());
        let leftovers: Vec<_> = std::fs::read_dir(parent.path())
            .expect("read")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers, ["out"]);

        let victim = tempfile::tempdir().expect("tempdir");
        let linked = parent.path().join("linked");
        symlink(victim.path(), &linked).expect("symlink");
        let s = StagedDir::create(&linked).expect("stage");
        fill(&s, &["a"]);
        let err = s.commit().expect_err("a link at dest");
        assert_eq!(err.to_string(), "exists and is not a directory");
        assert_eq!(std::fs::read_dir(victim.path()).expect("read").count(), 0);
    }

    #[test]
    fn dropping_removes_the_staging_area_only() {
        let parent = tempfile::tempdir().expect("tempdir");
        let s = StagedDir::create(&parent.path().join("out")).expect("stage");
        let out = s.out().expect("out");
        out.mkdir_at(b"deep", 0o500).expect("mkdir");
        drop(out);
        drop(s);
        assert_eq!(std::fs::read_dir(parent.path()).expect("read").count(), 0);
    }
}
