//! Where a spawned daemon keeps its state and its socket, and who holds a
//! state directory's lock.

use std::path::{Path, PathBuf};

/// The state directory buildkitd itself defaults to, and the one Kubernetes
/// pod specs mount cache volumes at: `/var/lib/buildkit` for root,
/// `$XDG_DATA_HOME/buildkit` or `~/.local/share/buildkit` otherwise.
pub fn default_root(uid: u32) -> Result<PathBuf, String> {
    if uid == 0 {
        return Ok(PathBuf::from("/var/lib/buildkit"));
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(data).join("buildkit"));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/share/buildkit")),
        None => Err(
            "cannot choose a state directory: neither XDG_DATA_HOME nor HOME is set; pass --root DIR"
                .into(),
        ),
    }
}

/// Candidate parents of the private per-run directory that holds the
/// socket, in order: `/run/buildkit` (root) or `$XDG_RUNTIME_DIR/buildkit`,
/// then the temp dir.
pub fn runtime_bases(uid: u32) -> Vec<PathBuf> {
    let mut bases = Vec::new();
    if uid == 0 {
        bases.push(PathBuf::from("/run/buildkit"));
    } else if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        // Like buildkitd, only the first element of a list is used.
        let first = dir.to_string_lossy().split(':').next().map(PathBuf::from);
        if let Some(first) = first {
            bases.push(first.join("buildkit"));
        }
    }
    bases.push(std::env::temp_dir());
    bases
}

/// Creates a private (0700) per-run directory under the first usable base.
pub fn run_dir(uid: u32) -> Result<tempfile::TempDir, String> {
    let mut tried = Vec::new();
    for base in runtime_bases(uid) {
        let made = std::fs::create_dir_all(&base)
            .and_then(|()| tempfile::Builder::new().prefix("bkd-").tempdir_in(&base));
        match made {
            Ok(dir) => return Ok(dir),
            Err(e) => {
                tracing::debug!(base = %base.display(), error = %e, "runtime dir unusable");
                tried.push(format!("{}: {e}", base.display()));
            }
        }
    }
    Err(format!(
        "cannot create a runtime directory for the daemon socket ({})",
        tried.join("; ")
    ))
}

/// The process holding `root/buildkitd.lock`, if another one does: its pid
/// and command line. `None` when the lock is free or absent.
pub fn lock_holder(root: &Path) -> Option<(u32, String)> {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::io::AsRawFd;
    let path = root.join("buildkitd.lock");
    let file = std::fs::File::open(&path).ok()?;
    // SAFETY: flock on a descriptor we own; released when `file` drops.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked == 0 {
        return None;
    }
    let inode = file.metadata().ok()?.ino();
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    let pid = lock_owner(&locks, inode).unwrap_or(0);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .split('\0')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown process".into());
    Some((pid, cmdline))
}

/// The pid of the process holding a lock on `inode` in /proc/locks text
/// (`1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`).
pub fn lock_owner(locks: &str, inode: u64) -> Option<u32> {
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Blocked waiters are listed with "->" and are not holders.
        if fields.get(1) == Some(&"->") {
            return None;
        }
        let pid: u32 = fields.get(4)?.parse().ok()?;
        let ino: u64 = fields.get(5)?.rsplit(':').next()?.parse().ok()?;
        (ino == inode).then_some(pid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_owner_matches_the_inode() {
        let locks = "1: POSIX  ADVISORY  WRITE 77 00:19:12 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 999 08:01:5678 0 EOF\n";
        assert_eq!(lock_owner(locks, 5678), Some(1234));
        assert_eq!(lock_owner(locks, 12), Some(77));
        assert_eq!(lock_owner(locks, 1), None);
    }

    #[test]
    fn a_held_lock_names_its_holder() {
        use std::os::unix::io::AsRawFd;
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(lock_holder(dir.path()), None, "absent lock file");
        let file = std::fs::File::create(dir.path().join("buildkitd.lock")).expect("create");
        assert_eq!(lock_holder(dir.path()), None, "free lock");
        // SAFETY: flock on a descriptor this test owns.
        assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
        // flock locks belong to the open file description, so a second open
        // in this process conflicts just as another process would.
        let (pid, cmdline) = lock_holder(dir.path()).expect("held lock");
        assert_eq!(pid, std::process::id());
        assert!(!cmdline.is_empty());
    }
}
