//! State slots: one state directory (`ROOT/slot-N`) per concurrent daemon
//! on a volume that several pods share. A pod takes the first slot whose
//! lock (`ROOT/slot-N.lock`) it can hold and that no daemon still holds,
//! and keeps the lock for as long as it lives; the next job to take that
//! slot finds its cache warm. The lock file records who holds it, so
//! `bkd doctor` can name holders in other pods.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// More concurrent daemons on one volume than this is a mistake, not a pool.
pub const MAX_SLOTS: usize = 64;

/// A slot this process holds; released when dropped.
#[derive(Debug)]
pub struct Slot {
    pub index: usize,
    pub dir: PathBuf,
    _lock: std::fs::File,
}

/// A slot as `bkd doctor` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    pub index: usize,
    /// Who holds its lock: the text the holder recorded, and its pid here
    /// when the holder runs in this PID namespace.
    pub holder: Option<String>,
    /// A daemon holding the slot's state directory (pid, command line).
    pub daemon: Option<(u32, String)>,
}

fn slot_dir(root: &Path, index: usize) -> PathBuf {
    root.join(format!("slot-{index}"))
}

fn lock_path(root: &Path, index: usize) -> PathBuf {
    root.join(format!("slot-{index}.lock"))
}

/// Opens a lock file without following a link; with `create`, makes it.
fn open_lock(path: &Path, create: bool) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// An exclusive flock without waiting: `Ok(false)` when another holds it.
fn try_flock(file: &std::fs::File) -> std::io::Result<bool> {
    // SAFETY: flock on a descriptor owned by `file`.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(false);
    }
    Err(e)
}

/// What a holder writes into its lock file.
fn holder_text() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "pid={} host={} since={since}\n",
        std::process::id(),
        crate::text::escape_str(&host)
    )
}

/// Takes the first free slot under `root`, creating `root` and the slot's
/// directory as needed.
pub fn acquire(root: &Path) -> Result<Slot, String> {
    let shown = crate::text::escape_path(root);
    std::fs::create_dir_all(root)
        .map_err(|e| format!("cannot create the state directory {shown}: {e}"))?;
    for index in 0..MAX_SLOTS {
        let path = lock_path(root, index);
        let file = open_lock(&path, true).map_err(|e| {
            format!(
                "cannot open the slot lock {}: {e}",
                crate::text::escape_path(&path)
            )
        })?;
        let held = try_flock(&file)
            .map_err(|e| format!("cannot lock {}: {e}", crate::text::escape_path(&path)))?;
        if !held {
            continue;
        }
        let dir = slot_dir(root, index);
        // A daemon whose bkd died may still be stopping there.
        if let Some((pid, _)) = super::state::lock_holder(&dir) {
            tracing::debug!(slot = index, pid, "slot's state dir still held by a daemon");
            continue;
        }
        std::fs::create_dir_all(&dir).map_err(|e| {
            format!(
                "cannot create the state slot {}: {e}",
                crate::text::escape_path(&dir)
            )
        })?;
        let mut file = file;
        // Who holds it is only for people reading `bkd doctor`.
        let _ = file.set_len(0);
        let _ = file.write_all(holder_text().as_bytes());
        return Ok(Slot {
            index,
            dir,
            _lock: file,
        });
    }
    Err(format!(
        "all {MAX_SLOTS} state slots under {shown} are in use (--state-slots)"
    ))
}

/// Every slot under `root`, in order, with its holder.
pub fn list(root: &Path) -> Vec<SlotInfo> {
    let mut indexes: Vec<usize> = std::fs::read_dir(root)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name();
                    let name = name.to_str()?;
                    let n = name.strip_prefix("slot-")?;
                    n.strip_suffix(".lock").unwrap_or(n).parse().ok()
                })
                .collect()
        })
        .unwrap_or_default();
    indexes.sort_unstable();
    indexes.dedup();
    indexes
        .into_iter()
        .map(|index| SlotInfo {
            index,
            holder: holder(&lock_path(root, index)),
            daemon: super::state::lock_holder(&slot_dir(root, index)),
        })
        .collect()
}

/// Who holds the lock at `path`, or `None` when it is free: what the
/// holder recorded (pid, host, since when) and, when it runs in this PID
/// namespace, its command line.
fn holder(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let file = open_lock(path, false).ok()?;
    if try_flock(&file).ok()? {
        return None;
    }
    let recorded = std::fs::read_to_string(path).unwrap_or_default();
    let field = |name: &str| {
        recorded
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_string)
    };
    let mut text = match (field("pid"), field("host")) {
        (Some(pid), Some(host)) => format!(
            "pid {} on host {}",
            crate::text::escape_str(&pid),
            crate::text::escape_str(&host)
        ),
        _ => "a process that recorded nothing".to_string(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if let Some(since) = field("since").and_then(|s| s.parse::<u64>().ok()) {
        let secs = now.saturating_sub(since);
        text.push_str(&format!(" for {}m{:02}s", secs / 60, secs % 60));
    }
    let inode = file.metadata().ok()?.ino();
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    let local = super::state::lock_owner(&locks, inode).filter(|p| *p != 0);
    if let Some(pid) = local {
        // The program and its subcommand only: the rest of a command line
        // can hold build arguments and other values that must not reach a
        // CI log.
        if let Ok(b) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let words: Vec<String> = b
                .split(|c| *c == 0)
                .filter(|w| !w.is_empty())
                .take(2)
                .map(crate::text::escape_bytes)
                .collect();
            text.push_str(&format!(" (here pid {pid}: {} …)", words.join(" ")));
        }
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_holders_get_distinct_slots_and_a_freed_one_is_reused() {
        let root = tempfile::tempdir().expect("root");
        let a = acquire(root.path()).expect("a");
        let b = acquire(root.path()).expect("b");
        let c = acquire(root.path()).expect("c");
        assert_eq!((a.index, b.index, c.index), (0, 1, 2));
        assert!(a.dir.is_dir() && a.dir.ends_with("slot-0"));
        drop(b);
        let again = acquire(root.path()).expect("again");
        assert_eq!(again.index, 1, "the first free slot");
        let listed = list(root.path());
        assert_eq!(listed.len(), 3);
        assert!(listed.iter().all(|s| s.holder.is_some()), "{listed:?}");
        let text = listed[0].holder.clone().unwrap_or_default();
        let me = std::process::id();
        assert!(
            text.starts_with(&format!("pid {me} on host "))
                && text.contains(&format!("(here pid {me}: ")),
            "{text}"
        );
        drop(a);
        assert_eq!(list(root.path())[0].holder, None);
    }

    #[test]
    fn a_slot_whose_state_dir_a_daemon_still_holds_is_skipped() {
        let root = tempfile::tempdir().expect("root");
        std::fs::create_dir_all(root.path().join("slot-0")).expect("slot dir");
        let daemon_lock =
            std::fs::File::create(root.path().join("slot-0/buildkitd.lock")).expect("lock");
        assert!(try_flock(&daemon_lock).expect("flock"));
        let slot = acquire(root.path()).expect("slot");
        assert_eq!(slot.index, 1);
        let listed = list(root.path());
        assert!(listed[0].daemon.is_some() && listed[0].holder.is_none());
    }

    #[test]
    fn a_link_planted_as_a_lock_file_is_refused() {
        let root = tempfile::tempdir().expect("root");
        let victim = root.path().join("victim");
        std::fs::write(&victim, "keep").expect("victim");
        std::os::unix::fs::symlink(&victim, root.path().join("slot-0.lock")).expect("link");
        let e = acquire(root.path()).expect_err("a link");
        assert!(e.contains("slot-0.lock"), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "keep");
    }
}
