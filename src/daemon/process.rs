//! The daemon process tree. bkd does not start buildkitd itself: it starts
//! a small guardian (bkd re-executed with [`GUARD_ARG`]) that starts
//! buildkitd (or rootlesskit) and is the reaper of everything it orphans.
//! bkd holds the write end of a pipe to the guardian; when that pipe
//! closes, because bkd asked for a stop or because bkd died (even by
//! SIGKILL), the guardian stops the daemon, kills every process left in
//! its tree (runc, build steps), and exits. Nothing bkd started can
//! outlive it.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// The hidden first argument that runs the guardian.
pub const GUARD_ARG: &str = "__bkd-guard";

/// Makes this process the reaper of every process its descendants orphan.
fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The byte bkd writes before closing the pipe for an orderly stop; a pipe
/// closed without it means bkd died.
const STOP: u8 = b's';
/// How long the daemon gets to stop when bkd died without asking.
const ORPHANED_GRACE: Duration = Duration::from_secs(2);

/// A running daemon tree, seen from bkd.
pub struct Child {
    /// The guardian's pid, also the process group of the whole tree.
    pub pid: u32,
    exit: watch::Receiver<Option<ExitStatus>>,
    control: Option<std::fs::File>,
}

impl Child {
    /// Starts the guardian, which starts `argv`. The guardian inherits
    /// stdout/stderr (the daemon log) and the environment from `cmd`
    /// settings applied by `configure`.
    /// Once the daemon is gone, the guardian detaches the overlay mounts
    /// it left below `state_dir` (a killed daemon leaves its snapshot
    /// mounts; in a pod they go with the pod, on a host they would stay).
    pub fn spawn(
        argv: &[String],
        grace: Duration,
        state_dir: &std::path::Path,
        configure: impl FnOnce(&mut Command),
    ) -> std::io::Result<Child> {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe()?;
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two descriptors on success.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned here.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let mut cmd = Command::new(exe);
        cmd.arg(GUARD_ARG)
            .arg(grace.as_millis().to_string())
            .arg(state_dir)
            .arg("--")
            .args(argv)
            .stdin(Stdio::from(read_end))
            .process_group(0);
        configure(&mut cmd);
        let (pid_tx, pid_rx) = std::sync::mpsc::channel();
        let (exit_tx, exit) = watch::channel(None);
        std::thread::Builder::new()
            .name("buildkitd-owner".into())
            .spawn(move || match cmd.spawn() {
                Ok(mut child) => {
                    let _ = pid_tx.send(Ok(child.id()));
                    match child.wait() {
                        Ok(status) => {
                            let _ = exit_tx.send(Some(status));
                        }
                        Err(e) => tracing::debug!(error = %e, "lost the daemon guardian"),
                    }
                }
                Err(e) => {
                    let _ = pid_tx.send(Err(e));
                }
            })?;
        let pid = pid_rx.recv().map_err(|_| {
            std::io::Error::other("the thread that starts the daemon ended early")
        })??;
        Ok(Child {
            pid,
            exit,
            control: Some(std::fs::File::from(write_end)),
        })
    }

    /// The daemon's exit status, once the tree is gone.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    /// Resolves when the daemon has ended and its tree is cleaned up.
    pub async fn exited(&self) -> ExitStatus {
        let mut rx = self.exit.clone();
        loop {
            if let Some(status) = *rx.borrow_and_update() {
                return status;
            }
            if rx.changed().await.is_err() {
                // The owner thread lost the guardian; treat it as gone.
                return std::os::unix::process::ExitStatusExt::from_raw(0);
            }
        }
    }

    /// Asks the guardian to stop the daemon (SIGTERM, SIGKILL after the
    /// grace period it was started with) and waits for the whole tree to
    /// be gone. Returns the daemon's exit status.
    pub async fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(mut control) = self.control.take() {
            let _ = control.write_all(&[STOP]);
        }
        let waited = tokio::time::timeout(grace + Duration::from_secs(5), self.exited()).await;
        if waited.is_err() {
            tracing::warn!(
                pid = self.pid,
                "the daemon guardian did not finish; killing its group"
            );
            // SAFETY: the group was created for the guardian.
            unsafe { libc::killpg(self.pid as libc::pid_t, libc::SIGKILL) };
            let _ = tokio::time::timeout(Duration::from_secs(2), self.exited()).await;
        }
        self.exit_status()
    }
}

impl Drop for Child {
    /// Closing the pipe is enough: the guardian then cleans up on its own,
    /// whether or not bkd waits for it.
    fn drop(&mut self) {
        self.control.take();
    }
}

/// The guardian's main: `GRACE_MS STATE_DIR -- ARGV...`. Runs before any
/// thread exists in its process. Returns the exit code, or ends by the
/// daemon's own terminating signal so bkd sees the daemon's status.
pub fn run_guard(args: &[String]) -> i32 {
    let (grace, state_dir, argv) = match args {
        [grace, state_dir, sep, argv @ ..] if sep == "--" && !argv.is_empty() => {
            match grace.parse::<u64>() {
                Ok(ms) => (Duration::from_millis(ms), state_dir, argv),
                Err(_) => return guard_fail("bad grace period"),
            }
        }
        _ => return guard_fail("usage: GRACE_MS STATE_DIR -- COMMAND..."),
    };
    if let Err(e) = become_subreaper() {
        return guard_fail(&format!("cannot become a subreaper: {e}"));
    }
    // bkd talks to the guardian only through the pipe; terminal and pod
    // signals go to bkd, which then closes it.
    // SAFETY: setting dispositions in a single-threaded process.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).stdin(Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        let guardian = libc::getpid();
        cmd.pre_exec(move || {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != guardian {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let daemon = match cmd.spawn() {
        Ok(c) => c.id() as libc::pid_t,
        Err(e) => {
            return guard_fail(&format!(
                "cannot start {}: {}",
                argv[0],
                crate::error::io_reason(&e)
            ))
        }
    };

    let exit = ExitWatch::open(daemon);
    let mut status = None;
    let mut stop_at: Option<Instant> = None;
    let mut killed = false;
    while status.is_none() {
        if stop_at.is_none() {
            if let Some(orderly) = control_closed(Duration::from_millis(100), &exit) {
                let grace = if orderly { grace } else { ORPHANED_GRACE };
                // SAFETY: signalling our own child.
                unsafe { libc::kill(daemon, libc::SIGTERM) };
                stop_at = Some(Instant::now() + grace);
            }
        } else {
            exit.wait(Duration::from_millis(20));
        }
        if !killed && stop_at.is_some_and(|t| Instant::now() >= t) {
            eprintln!("bkd: buildkitd did not stop in time; killing it");
            // SAFETY: as above.
            unsafe { libc::kill(daemon, libc::SIGKILL) };
            killed = true;
        }
        status = reap_all(daemon);
    }
    kill_descendants(Duration::from_secs(5));
    detach_overlays_below(std::path::Path::new(state_dir));
    let status = status.unwrap_or(0);
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // SAFETY: re-raising the daemon's signal on ourselves with the
        // default action, so the parent sees the same status.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        1
    }
}

fn guard_fail(message: &str) -> i32 {
    eprintln!("bkd guardian: {message}");
    125
}

/// The daemon's exit as something to poll: a pidfd, so the guardian learns
/// of the exit at once instead of at its next check. Without pidfds (Linux
/// before 5.3) the waits simply run to their timeout.
struct ExitWatch(Option<std::os::fd::OwnedFd>);

impl ExitWatch {
    fn open(pid: libc::pid_t) -> ExitWatch {
        // SAFETY: pidfd_open takes a pid and flags; it returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let fd = libc::c_int::try_from(fd).ok().filter(|fd| *fd >= 0);
        // SAFETY: a fresh fd this process owns and nothing else closes.
        ExitWatch(fd.map(|fd| unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }))
    }

    fn pollfd(&self) -> libc::pollfd {
        use std::os::fd::AsRawFd;
        libc::pollfd {
            fd: self.0.as_ref().map_or(-1, |fd| fd.as_raw_fd()),
            events: libc::POLLIN,
            revents: 0,
        }
    }

    /// Waits up to `timeout` for the daemon to exit.
    fn wait(&self, timeout: Duration) {
        let mut pfd = self.pollfd();
        // SAFETY: one pollfd (a negative fd is ignored by poll).
        unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
    }
}

/// Waits up to `timeout` for the control pipe (stdin) or the daemon's exit:
/// `Some(true)` when bkd asked for a stop, `Some(false)` when it closed
/// without asking (bkd died), `None` when nothing happened to the pipe.
fn control_closed(timeout: Duration, exit: &ExitWatch) -> Option<bool> {
    let mut pfds = [
        libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        },
        exit.pollfd(),
    ];
    // SAFETY: two valid pollfds (a negative fd is ignored by poll).
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), 2, timeout.as_millis() as libc::c_int) };
    if n <= 0 || pfds[0].revents == 0 {
        return None;
    }
    let mut byte = 0u8;
    // SAFETY: reading one byte into a local.
    let r = unsafe { libc::read(0, (&mut byte as *mut u8).cast(), 1) };
    Some(r == 1 && byte == STOP)
}

/// Reaps every ended child without blocking; the daemon's wait status
/// when it is among them.
fn reap_all(daemon: libc::pid_t) -> Option<libc::c_int> {
    let mut found = None;
    loop {
        let mut status = 0;
        // SAFETY: waitpid on any child with a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return found;
        }
        if pid == daemon {
            found = Some(status);
        }
    }
}

/// Kills and reaps every remaining child: as a subreaper the guardian
/// inherits what the daemon orphaned, and each one killed may orphan
/// more, so this repeats until none is left.
fn kill_descendants(limit: Duration) {
    let started = Instant::now();
    loop {
        reap_all(0);
        let children = child_pids();
        if children.is_empty() {
            return;
        }
        if started.elapsed() > limit {
            eprintln!("bkd: processes left after stopping buildkitd: {children:?}");
            return;
        }
        for pid in &children {
            // SAFETY: signalling our own children.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Direct children of this process, read from /proc.
/// Detaches the overlay mounts below `dir` that this process can see,
/// deepest first. Only overlays (snapshots) are touched, never `dir`
/// itself or other mounts below it, which may be volumes someone put there.
/// Rootless daemons mount in their own namespace, gone with them, so there
/// is nothing to see. Done only while holding the state dir's lock: if
/// another buildkitd holds it (this one lost a race to start on the same
/// dir), the mounts are that daemon's.
fn detach_overlays_below(dir: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let Ok(lock) = std::fs::File::open(dir.join("buildkitd.lock")) else {
        return;
    };
    // SAFETY: flock on a descriptor owned here; released when it closes.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return;
    }
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    // The table holds resolved absolute paths; the guardian shares bkd's
    // working directory, so a relative --root resolves as buildkitd saw it.
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    for point in overlays_below(&table, &dir) {
        let Ok(c) = std::ffi::CString::new(point.as_os_str().as_encoded_bytes()) else {
            continue;
        };
        // SAFETY: a valid C string; MNT_DETACH only unhooks the mount.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            eprintln!(
                "bkd: cannot detach {} left by buildkitd: {}",
                point.display(),
                std::io::Error::last_os_error()
            );
        }
    }
}

/// The mount points of overlay mounts strictly below `dir` in a mountinfo
/// table, deepest first.
fn overlays_below(mountinfo: &str, dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found: Vec<std::path::PathBuf> = mountinfo
        .lines()
        .filter_map(|line| {
            // Fields: id parent dev root point options [optional...] - type source super
            let (left, right) = line.split_once(" - ")?;
            let point = unescape_mount_path(left.split(' ').nth(4)?);
            let fstype = right.split(' ').next()?;
            (fstype == "overlay" && point != dir && point.starts_with(dir)).then_some(point)
        })
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// A mountinfo path: space, tab, newline and backslash are octal escapes.
fn unescape_mount_path(s: &str) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    std::path::PathBuf::from(std::ffi::OsString::from_vec(out))
}

fn child_pids() -> Vec<libc::pid_t> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|pid| parent_of(*pid) == Some(me))
        .collect()
}

/// The parent pid from /proc/PID/stat (the field after the parenthesised
/// command name, which may itself contain spaces and parentheses).
pub fn parent_of(pid: libc::pid_t) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_overlays_strictly_below_the_state_dir_deepest_first() {
        let table = "\
22 1 0:21 / /var/lib/buildkit rw - ext4 /dev/vda rw
30 22 0:40 / /var/lib/buildkit/runc-overlayfs/cachemounts/b1 rw - overlay overlay rw,lowerdir=x
31 22 0:41 / /var/lib/buildkit/runc-overlayfs/executor/abc/rootfs rw - overlay overlay rw
32 31 0:42 / /var/lib/buildkit/runc-overlayfs/executor/abc/rootfs/proc rw - proc proc rw
33 22 0:43 / /var/lib/buildkit/vol rw - ext4 /dev/vdb rw
34 1 0:44 / /var/lib/buildkit2/x rw - overlay overlay rw
35 1 0:45 / /var/lib/buildkit rw - overlay overlay rw
36 22 0:46 / /var/lib/buildkit/with\\040space rw shared:1 - overlay overlay rw
";
        let found = overlays_below(table, std::path::Path::new("/var/lib/buildkit"));
        let names: Vec<String> = found.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            names,
            [
                "/var/lib/buildkit/runc-overlayfs/executor/abc/rootfs",
                "/var/lib/buildkit/runc-overlayfs/cachemounts/b1",
                "/var/lib/buildkit/with space",
            ]
        );
    }

    #[test]
    fn parent_of_reads_this_process() {
        let me = std::process::id() as libc::pid_t;
        // SAFETY: getppid has no preconditions.
        let parent = unsafe { libc::getppid() } as u32;
        assert_eq!(parent_of(me), Some(parent));
        assert_eq!(parent_of(-5), None);
    }
}
