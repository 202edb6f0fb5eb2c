//! The daemon process tree. bkd does not start buildkitd itself: it starts
//! a small guardian (bkd re-executed with [`GUARD_ARG`]) that starts
//! buildkitd (or rootlesskit) and is the reaper of everything it orphans.
//! bkd holds the write end of a pipe to the guardian; when that pipe
//! closes, because bkd asked for a stop or because bkd died (even by
//! SIGKILL), the guardian stops the daemon, kills every process left in
//! its tree (runc, build steps), and exits. Nothing bkd started can
//! outlive it.
//!
//! A privileged daemon runs with the guardian as process 1 of a PID
//! namespace of its own, in a mount namespace of its own: killing the
//! guardian (even by SIGKILL) makes the kernel kill every process of the
//! build, and the daemon's mounts (snapshots, step roots, its temporary
//! mounts) and runc's state live and die with that namespace instead of
//! staying on the host. A rootless daemon gets the same from rootlesskit
//! (`--pidns`, and the mount namespace rootlesskit always makes).

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
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

/// What the guardian is told at its start, in this order on its command
/// line: `GRACE_MS STATE_DIR RUN_DIR LOCK_FD ISOLATE -- ARGV...`.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardPlan {
    /// SIGTERM to SIGKILL when bkd asks for a stop.
    pub grace: Duration,
    /// The daemon's `--root`.
    pub state_dir: PathBuf,
    /// bkd's per-run directory: removed by the guardian when bkd died.
    pub run_dir: PathBuf,
    /// The run directory's lock, held open by the guardian as long as it
    /// lives (-1: none).
    pub lock_fd: i32,
    /// Give the daemon a PID and a mount namespace of its own (privileged).
    pub isolate: bool,
}

impl GuardPlan {
    fn to_args(&self) -> Vec<std::ffi::OsString> {
        vec![
            self.grace.as_millis().to_string().into(),
            self.state_dir.clone().into(),
            self.run_dir.clone().into(),
            self.lock_fd.to_string().into(),
            if self.isolate { "isolate" } else { "shared" }.into(),
        ]
    }

    /// Parses the guardian's arguments (after [`GUARD_ARG`]).
    pub fn parse(args: &[String]) -> Result<(GuardPlan, &[String]), String> {
        match args {
            [grace, state_dir, run_dir, lock_fd, isolate, sep, argv @ ..]
                if sep == "--" && !argv.is_empty() =>
            {
                let grace = grace
                    .parse::<u64>()
                    .map_err(|_| "bad grace period".to_string())?;
                let lock_fd = lock_fd
                    .parse::<i32>()
                    .map_err(|_| "bad lock descriptor".to_string())?;
                Ok((
                    GuardPlan {
                        grace: Duration::from_millis(grace),
                        state_dir: PathBuf::from(state_dir),
                        run_dir: PathBuf::from(run_dir),
                        lock_fd,
                        isolate: isolate == "isolate",
                    },
                    argv,
                ))
            }
            _ => {
                Err("usage: GRACE_MS STATE_DIR RUN_DIR LOCK_FD isolate|shared -- COMMAND...".into())
            }
        }
    }
}

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
    /// settings applied by `configure`, and the run directory's lock
    /// (`lock`), which it holds until it is gone.
    pub fn spawn(
        argv: &[String],
        plan: &GuardPlan,
        lock: Option<&std::fs::File>,
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
        let lock_fd = lock.map_or(-1, |f| f.as_raw_fd());
        let plan = GuardPlan {
            lock_fd,
            ..plan.clone()
        };
        let mut cmd = Command::new(exe);
        cmd.arg(GUARD_ARG)
            .args(plan.to_args())
            .arg("--")
            .args(argv)
            .stdin(Stdio::from(read_end))
            .process_group(0);
        if lock_fd >= 0 {
            // SAFETY: only fcntl, async-signal-safe, between fork and exec:
            // the lock descriptor (close-on-exec here) stays open across
            // the exec, under the same number.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::fcntl(lock_fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        configure(&mut cmd);
        // Where the daemon has no PID namespace (rootless without a fresh
        // /proc), a killed guardian would hand the build steps to init;
        // this way they come to bkd, which kills them.
        if let Err(e) = become_subreaper() {
            tracing::debug!(error = %e, "cannot become a subreaper");
        }
        let (pid_tx, pid_rx) = std::sync::mpsc::channel();
        let (exit_tx, exit) = watch::channel(None);
        std::thread::Builder::new()
            .name("buildkitd-owner".into())
            .spawn(move || match cmd.spawn() {
                Ok(mut child) => {
                    let _ = pid_tx.send(Ok(child.id()));
                    match child.wait() {
                        Ok(status) => {
                            // Whatever the guardian left (it was killed)
                            // is now bkd's to end.
                            kill_orphans(Duration::from_secs(5));
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

/// The guardian's main (see [`GuardPlan`] for its arguments). Runs before
/// any thread exists in its process. Returns the exit code, or ends by the
/// daemon's own terminating signal so bkd sees the daemon's status.
pub fn run_guard(args: &[String]) -> i32 {
    let (plan, argv) = match GuardPlan::parse(args) {
        Ok(parsed) => parsed,
        Err(e) => return guard_fail(&e),
    };
    if plan.lock_fd >= 0 {
        // Held here, not passed on to the daemon.
        // SAFETY: fcntl on a descriptor number; harmless if it is not open.
        unsafe { libc::fcntl(plan.lock_fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // bkd talks to the guardian only through the pipe; terminal and pod
    // signals go to bkd, which then closes it.
    // SAFETY: setting dispositions in a single-threaded process.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let status_pipe = if plan.isolate {
        enter_own_namespaces()
    } else {
        None
    };
    if let Err(e) = become_subreaper() {
        return guard_fail(&format!("cannot become a subreaper: {e}"));
    }
    let status = match guard(&plan, argv, status_pipe.is_some()) {
        Ok(status) => status,
        Err(code) => return code,
    };
    if let Some(pipe) = status_pipe {
        // Process 1 of a PID namespace cannot raise a signal on itself:
        // the process outside ends as the daemon ended.
        let mut pipe = std::fs::File::from(pipe);
        let _ = pipe.write_all(&status.to_ne_bytes());
        return 0;
    }
    end_as(status)
}

/// Ends this process as a wait status says: by the same signal (with its
/// default action, so the parent sees the same status) or exit code.
fn end_as(status: libc::c_int) -> i32 {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // SAFETY: resetting and raising a signal on ourselves.
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

/// Moves the guardian into a PID namespace of its own, as its process 1,
/// and a mount namespace of its own whose mounts never reach the host, with
/// its own /proc and a private runc state directory. The process bkd
/// started stays outside, waits for the one inside and ends as the daemon
/// did (told through the returned pipe); it returns only in the one
/// inside. `None` when the namespaces cannot be made: the guardian then
/// goes on without them, saying so in the log.
fn enter_own_namespaces() -> Option<OwnedFd> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        eprintln!(
            "bkd guardian: cannot make a pipe: {}",
            std::io::Error::last_os_error()
        );
        return None;
    }
    // SAFETY: both descriptors were just created and are owned here.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: unshare with a flag; affects only children made after it.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        eprintln!(
            "bkd guardian: cannot make a PID namespace ({}); a killed guardian may leave build steps running",
            std::io::Error::last_os_error()
        );
        return None;
    }
    // SAFETY: fork in a single-threaded process.
    let inner = unsafe { libc::fork() };
    if inner < 0 {
        eprintln!(
            "bkd guardian: cannot fork into the PID namespace: {}",
            std::io::Error::last_os_error()
        );
        return None;
    }
    if inner > 0 {
        drop(write_end);
        std::process::exit(relay_exit(inner, read_end));
    }
    drop(read_end);
    // Inside, as process 1: die with the outer process, whatever kills it.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    if let Err(e) = private_mounts() {
        eprintln!("bkd guardian: {e}; the daemon's mounts may stay on the host if it is killed");
    }
    Some(write_end)
}

/// Waits for the guardian inside the PID namespace and ends as the daemon
/// ended (its wait status comes through `status`), or as the guardian
/// inside ended if it could not say.
fn relay_exit(inner: libc::pid_t, status: OwnedFd) -> i32 {
    use std::io::Read;
    let mut told = [0u8; 4];
    let told = std::fs::File::from(status)
        .read_exact(&mut told)
        .ok()
        .map(|()| libc::c_int::from_ne_bytes(told));
    let mut own = 0;
    loop {
        // SAFETY: waiting for our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(inner, &mut own, 0) };
        if r == inner {
            break;
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break;
        }
    }
    end_as(told.unwrap_or(own))
}

/// Where runc keeps the state of the containers it runs as root.
const RUNC_STATE: &str = "/run/runc";

/// A mount namespace whose mounts stay in it (slave: the host's new mounts
/// still show inside), a /proc of the new PID namespace, and an empty
/// runc state directory, so a killed daemon leaves no container entries.
fn private_mounts() -> Result<(), String> {
    let mount = |source: &str, target: &str, fstype: &str, flags: libc::c_ulong| {
        let c = |s: &str| std::ffi::CString::new(s).map_err(|e| e.to_string());
        let (source, target, fstype) = (c(source)?, c(target)?, c(fstype)?);
        // SAFETY: valid C strings and a null data pointer.
        let r = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                flags,
                std::ptr::null(),
            )
        };
        if r != 0 {
            return Err(format!(
                "cannot mount {} on {}: {}",
                source.to_string_lossy(),
                target.to_string_lossy(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    };
    // SAFETY: unshare with a flag.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(format!(
            "cannot make a mount namespace: {}",
            std::io::Error::last_os_error()
        ));
    }
    mount("none", "/", "", libc::MS_REC | libc::MS_SLAVE)?;
    mount(
        "proc",
        "/proc",
        "proc",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
    )?;
    std::fs::create_dir_all(RUNC_STATE).map_err(|e| format!("cannot create {RUNC_STATE}: {e}"))?;
    mount(
        "tmpfs",
        RUNC_STATE,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
    )?;
    Ok(())
}

/// Starts the daemon, watches the control pipe and the daemon, stops it,
/// and cleans up. Returns the daemon's wait status.
fn guard(plan: &GuardPlan, argv: &[String], isolated: bool) -> Result<libc::c_int, i32> {
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
    let started = std::time::SystemTime::now();
    let daemon = match cmd.spawn() {
        Ok(c) => c.id() as libc::pid_t,
        Err(e) => {
            return Err(guard_fail(&format!(
                "cannot start {}: {}",
                argv[0],
                crate::error::io_reason(&e)
            )))
        }
    };

    let exit = ExitWatch::open(daemon);
    let mut status = None;
    let mut stop_at: Option<Instant> = None;
    let mut orphaned = false;
    let mut asked = false;
    let mut killed = false;
    while status.is_none() {
        if stop_at.is_none() {
            if let Some(orderly) = control_closed(Duration::from_millis(100), &exit) {
                orphaned = !orderly;
                asked = orderly;
                let grace = if orderly { plan.grace } else { ORPHANED_GRACE };
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
    if isolated {
        delete_runc_containers();
        detach_temporary_mounts();
    }
    remove_ssh_socket_dirs(started);
    if orphaned || (!asked && control_gone()) {
        // Nobody is left to remove it or to be told where a log is.
        if let Err(e) = std::fs::remove_dir_all(&plan.run_dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!(
                    "bkd: cannot remove {}: {e}",
                    crate::text::escape_path(&plan.run_dir)
                );
            }
        }
    }
    Ok(status.unwrap_or(0))
}

/// Whether bkd is gone without having asked for a stop (the daemon ended
/// on its own and the pipe was closed by bkd's death).
fn control_gone() -> bool {
    let mut pfd = libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no waiting.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    if n <= 0 || pfd.revents == 0 {
        return false;
    }
    let mut byte = 0u8;
    // SAFETY: reading one byte into a local.
    let r = unsafe { libc::read(0, (&mut byte as *mut u8).cast(), 1) };
    r == 0
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

/// Removes the containers runc still lists in this namespace's private
/// state directory (a killed daemon's steps): their processes are gone, and
/// `runc delete` also removes the cgroups runc made for them.
fn delete_runc_containers() {
    let Ok(entries) = std::fs::read_dir(RUNC_STATE) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(id) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let deleted = Command::new("runc")
            .args(["--root", RUNC_STATE, "delete", "--force", &id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !deleted {
            eprintln!(
                "bkd: runc could not delete container {} left by buildkitd",
                crate::text::escape_str(&id)
            );
        }
    }
}

/// Removes the empty `.buildkit-ssh-sock*` directories made in the temp
/// dir since the daemon started: buildkitd removes the ssh-agent socket of
/// a `RUN --mount=type=ssh` but leaves its directory. A live one holds its
/// socket, so only empty ones go (`remove_dir` fails on any other).
fn remove_ssh_socket_dirs(since: std::time::SystemTime) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let ours = entry
            .file_name()
            .as_encoded_bytes()
            .starts_with(b".buildkit-ssh-sock");
        let recent = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|m| m >= since);
        if ours && recent && entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// Detaches the mounts the daemon left in its temporary directory
/// (`buildkit-mount*`, `containerd-mount*`) and removes their empty mount
/// points. Only called inside the guardian's own mount namespace, where
/// every such mount is the daemon's.
fn detach_temporary_mounts() {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let tmp = std::env::temp_dir();
    let tmp = std::fs::canonicalize(&tmp).unwrap_or(tmp);
    for point in temporary_mounts(&table, &tmp) {
        let Ok(c) = std::ffi::CString::new(point.as_os_str().as_encoded_bytes()) else {
            continue;
        };
        // SAFETY: a valid C string; MNT_DETACH only unhooks the mount.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
            let _ = std::fs::remove_dir(&point);
        }
    }
}

/// The daemon's temporary mount points directly in `tmp`, from a mountinfo
/// table, deepest first.
fn temporary_mounts(mountinfo: &str, tmp: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| {
            // Fields: id parent dev root point options [optional...] - type source super
            let point = unescape_mount_path(line.split(' ').nth(4)?);
            let name = point.strip_prefix(tmp).ok()?.to_str()?.to_string();
            let daemons = ["buildkit-mount", "containerd-mount"];
            (!name.contains('/') && daemons.iter().any(|p| name.starts_with(p))).then_some(point)
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

/// A mountinfo path: space, tab, newline and backslash are octal escapes.
fn unescape_mount_path(s: &str) -> PathBuf {
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
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// In bkd, once the guardian is gone: kills the processes of its tree that
/// were handed to bkd as the subreaper, each waited for by its own pid so
/// no other child's status is taken.
fn kill_orphans(limit: Duration) {
    let started = Instant::now();
    loop {
        let orphans = child_pids();
        if orphans.is_empty() || started.elapsed() > limit {
            return;
        }
        for pid in &orphans {
            // SAFETY: signalling and reaping children of this process.
            unsafe {
                libc::kill(*pid, libc::SIGKILL);
                libc::waitpid(*pid, std::ptr::null_mut(), libc::WNOHANG);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Direct children of this process, read from /proc.
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
    fn only_the_daemons_temporary_mounts_directly_in_tmp() {
        let table = "\
22 1 0:21 / /tmp rw - tmpfs tmpfs rw
30 22 0:40 / /tmp/buildkit-mount123 ro - overlay overlay rw,lowerdir=x
31 22 0:41 / /tmp/containerd-mount9 rw - overlay overlay rw
32 22 0:42 / /tmp/buildkit-mount123 ro - overlay overlay rw
33 22 0:43 / /tmp/other rw - ext4 /dev/vdb rw
34 22 0:44 / /tmp/x/buildkit-mount1 rw - overlay overlay rw
35 1 0:45 / /var/tmp/buildkit-mount2 rw - overlay overlay rw
36 22 0:46 / /tmp/buildkit-mount\\040x rw shared:1 - bind none rw
";
        let found = temporary_mounts(table, Path::new("/tmp"));
        let names: Vec<String> = found.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            names,
            [
                "/tmp/buildkit-mount x",
                "/tmp/buildkit-mount123",
                "/tmp/containerd-mount9",
            ]
        );
    }

    #[test]
    fn guard_arguments_round_trip() {
        let plan = GuardPlan {
            grace: Duration::from_millis(1500),
            state_dir: "/var/lib/buildkit".into(),
            run_dir: "/run/buildkit/bkd-x".into(),
            lock_fd: 7,
            isolate: true,
        };
        let mut args: Vec<String> = plan
            .to_args()
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        args.extend(["--".to_string(), "buildkitd".to_string()]);
        let (parsed, argv) = GuardPlan::parse(&args).expect("parse");
        assert_eq!(parsed, plan);
        assert_eq!(argv, ["buildkitd"]);
        assert!(GuardPlan::parse(&args[..5]).is_err());
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
