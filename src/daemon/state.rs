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

/// The name of a per-run directory starts with this.
pub const RUN_DIR_PREFIX: &str = "bkd-";
/// The lock file inside a per-run directory: held (flock) for as long as
/// bkd or the daemon's guardian lives, so an unlocked one is provably dead.
pub const RUN_LOCK: &str = "bkd.lock";
/// A run directory whose lock file is missing is left alone this long:
/// the lock is made right after the directory, or the directory comes from
/// a bkd that did not lock (then its socket says whether it still runs).
const UNLOCKED_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// A private per-run directory and the lock that marks it as in use.
#[derive(Debug)]
pub struct RunDir {
    pub dir: tempfile::TempDir,
    pub lock: std::fs::File,
}

/// Creates a private (0700) per-run directory under the first usable base
/// (a base bkd creates is 0700 too), locked as in use.
pub fn run_dir(uid: u32) -> Result<RunDir, String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let mut tried = Vec::new();
    for base in runtime_bases(uid) {
        let made = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&base)
            .and_then(|()| {
                tempfile::Builder::new()
                    .prefix(RUN_DIR_PREFIX)
                    .permissions(std::fs::Permissions::from_mode(0o700))
                    .tempdir_in(&base)
            })
            .and_then(|dir| {
                let lock = lock_file(&dir.path().join(RUN_LOCK), true)?;
                Ok(RunDir { dir, lock })
            });
        match made {
            Ok(dir) => return Ok(dir),
            Err(e) => {
                tracing::debug!(base = %base.display(), error = %e, "runtime dir unusable");
                tried.push(format!("{}: {e}", crate::text::escape_path(&base)));
            }
        }
    }
    Err(format!(
        "cannot create a runtime directory for the daemon socket ({})",
        tried.join("; ")
    ))
}

/// Opens (or creates) `path` without following a link and takes an
/// exclusive flock on it without waiting; `WouldBlock` when it is held.
fn lock_file(path: &Path, create: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(create)
        .create(create)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    // SAFETY: flock on a descriptor owned here.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

/// What a run directory holds; a directory holding anything else is not
/// one, whatever its name.
const RUN_DIR_ENTRIES: &[&str] = &[
    RUN_LOCK,
    "buildkitd.sock",
    "notify.sock",
    "otel-grpc.sock",
    "buildkitd.log",
    "buildkitd.toml",
    "rootlesskit",
    "runc",
    "buildkit",
];

/// Removes the run directories that earlier bkd runs of this user left
/// (killed with SIGKILL, their guardian too): only ones provably dead,
/// whose lock nobody holds or, for one made before run directories were
/// locked, whose socket nobody listens on. Returns the directories removed.
pub fn sweep_stale_run_dirs(uid: u32) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for base in runtime_bases(uid) {
        let Ok(entries) = std::fs::read_dir(&base) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if is_run_dir_name(&entry.file_name()) && is_stale_run_dir(&path, uid) {
                match std::fs::remove_dir_all(&path) {
                    Ok(()) => removed.push(path),
                    Err(e) => {
                        tracing::debug!(dir = %path.display(), error = %e, "cannot remove a stale run dir")
                    }
                }
            }
        }
    }
    removed
}

/// `bkd-` and six letters or digits, as [`run_dir`] names them.
fn is_run_dir_name(name: &std::ffi::OsStr) -> bool {
    name.to_str()
        .and_then(|n| n.strip_prefix(RUN_DIR_PREFIX))
        .is_some_and(|rest| rest.len() == 6 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn is_stale_run_dir(dir: &Path, uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return false;
    };
    if !meta.is_dir() || meta.uid() != uid {
        return false;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let names: Vec<std::ffi::OsString> = entries.flatten().map(|e| e.file_name()).collect();
    let only_ours = names
        .iter()
        .all(|n| RUN_DIR_ENTRIES.iter().any(|r| n.as_os_str() == *r));
    if !only_ours {
        return false;
    }
    match lock_file(&dir.join(RUN_LOCK), false) {
        // Nobody holds it: the bkd and guardian that did are gone. The
        // flock taken here is released as the file closes.
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let old = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > UNLOCKED_GRACE);
            let socket = dir.join("buildkitd.sock");
            match std::os::unix::net::UnixStream::connect(&socket) {
                Ok(_) => false,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => true,
                Err(_) => old,
            }
        }
        Err(_) => false,
    }
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

/// Whether `pid` is a daemon started by a bkd guardian whose bkd is gone:
/// the guardian is then stopping it, and the state directory it holds
/// will be free within seconds.
pub fn is_orphaned_bkd_daemon(pid: u32) -> bool {
    let mut guardian = None;
    let mut cur = pid;
    for _ in 0..8 {
        let Some(parent) = super::process::parent_of(cur as libc::pid_t) else {
            break;
        };
        if is_guardian(parent) {
            guardian = Some(parent);
        } else if guardian.is_some() {
            break;
        }
        if parent <= 1 {
            break;
        }
        cur = parent;
    }
    let Some(guardian) = guardian else {
        return false;
    };
    // The topmost guardian's parent is its bkd while bkd lives; after bkd
    // dies it is init or some other reaper, which runs another program.
    match super::process::parent_of(guardian as libc::pid_t) {
        None | Some(0) | Some(1) => true,
        Some(parent) => {
            let exe = |p: u32| std::fs::read_link(format!("/proc/{p}/exe")).ok();
            match (exe(parent), exe(guardian)) {
                (Some(a), Some(b)) => a != b,
                _ => false,
            }
        }
    }
}

fn is_guardian(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| b.split(|c| *c == 0).nth(1) == Some(super::process::GUARD_ARG.as_bytes()))
        .unwrap_or(false)
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
    fn only_directories_that_are_run_directories_are_swept() {
        use std::os::unix::fs::MetadataExt;
        let base = tempfile::tempdir().expect("tempdir");
        let uid = std::fs::metadata(base.path()).expect("meta").uid();
        let make = |name: &str, files: &[&str]| {
            let d = base.path().join(name);
            std::fs::create_dir_all(&d).expect("mkdir");
            for f in files {
                std::fs::write(d.join(f), "").expect("file");
            }
            d
        };
        let dead = make("bkd-AbC123", &[RUN_LOCK, "buildkitd.log"]);
        let foreign = make("bkd-old123", &[RUN_LOCK, "Cargo.toml"]);
        let named = make("bkd-ctx-AbC123", &[RUN_LOCK]);
        let empty = make("bkd-Empty1", &[]);
        assert!(is_run_dir_name(dead.file_name().expect("name")));
        assert!(!is_run_dir_name(named.file_name().expect("name")));
        assert!(!is_run_dir_name(std::ffi::OsStr::new("bkd-AbC123.log")));
        assert!(is_stale_run_dir(&dead, uid));
        assert!(
            !is_stale_run_dir(&foreign, uid),
            "holds what a run dir never does"
        );
        assert!(!is_stale_run_dir(&empty, uid), "empty and new: being made");
        let past = std::time::SystemTime::now() - UNLOCKED_GRACE * 2;
        std::fs::File::open(&empty)
            .and_then(|d| d.set_modified(past))
            .expect("mtime");
        assert!(
            is_stale_run_dir(&empty, uid),
            "empty and old: left by an older bkd"
        );
        assert!(!is_stale_run_dir(&dead, uid + 1), "another user's");
        let held = lock_file(&dead.join(RUN_LOCK), false).expect("lock");
        assert!(!is_stale_run_dir(&dead, uid), "a held lock is a live run");
        drop(held);
    }

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
