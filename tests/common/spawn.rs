//! Running bkd in its default mode, where it spawns its own buildkitd: as
//! root, or as the unprivileged test user `bkdtest` created by
//! scripts/setup.sh, optionally inside a mount namespace whose /proc is
//! masked the way Kubernetes masks it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::Run;

/// The unprivileged user the rootless tests run as.
pub const TEST_USER: &str = "bkdtest";

/// Who runs bkd and where.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum As {
    Root,
    /// Root with CAP_SYS_ADMIN dropped, like uid 0 in a pod that is not
    /// privileged.
    RootWithoutSysAdmin,
    User,
    /// The test user in a mount namespace with /proc masked.
    UserMaskedProc,
}

static BINARY_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_binary_copy() {
    if let Some(dir) = BINARY_DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A copy of the bkd binary that the test user can execute, whatever the
/// permissions of the checkout it was built in; removed when the test
/// process exits.
pub fn bkd_binary() -> PathBuf {
    BINARY_DIR
        .get_or_init(|| {
            let dir = tempfile::Builder::new()
                .prefix("bkd-bin-")
                .tempdir()
                .expect("temp dir")
                .keep();
            // SAFETY: registering a plain extern "C" function.
            unsafe { libc::atexit(remove_binary_copy) };
            let bin = dir.join("bkd");
            std::fs::copy(env!("CARGO_BIN_EXE_bkd"), &bin).expect("copy bkd");
            set_mode(&dir, 0o755);
            set_mode(&bin, 0o755);
            dir
        })
        .join("bkd")
}

/// A link named `buildctl-daemonless.sh` to the bkd copy, as an image
/// that replaces the script would install it.
#[allow(dead_code)]
pub fn script_link() -> PathBuf {
    let bin = bkd_binary();
    let link = bin.with_file_name("buildctl-daemonless.sh");
    if !link.exists() {
        // Several tests may race to create it; the loser finds it there.
        let _ = std::os::unix::fs::symlink("bkd", &link);
    }
    link
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn user_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&TEST_USER)).then(|| (f[2].parse().ok(), f[3].parse().ok()))
        })
        .and_then(|(u, g)| Some((u?, g?)))
        .unwrap_or_else(|| panic!("user {TEST_USER} missing: run scripts/setup.sh"))
}

/// A temp dir the test user owns (for contexts, outputs and state dirs).
pub fn user_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("bkd-user-")
        .tempdir()
        .expect("temp dir");
    chown_tree(dir.path());
    dir
}

/// A context owned by the test user with busybox and `dockerfile` in it.
pub fn user_context(dockerfile: &str) -> tempfile::TempDir {
    let dir = user_dir();
    std::fs::copy("/bin/busybox", dir.path().join("busybox")).expect("copy busybox");
    super::write(dir.path(), "Dockerfile", dockerfile);
    chown_tree(dir.path());
    dir
}

/// Gives everything under `path` to the test user.
pub fn chown_tree(path: &Path) {
    let status = Command::new("chown")
        .arg("-R")
        .arg(TEST_USER)
        .arg(path)
        .status()
        .expect("chown");
    assert!(status.success(), "chown -R {TEST_USER} {}", path.display());
}

/// The shell prelude that masks /proc as Kubernetes does, then runs "$@".
const MASK_PROC: &str = "set -e; \
    mount --bind /dev/null /proc/keys; \
    mount --bind /dev/null /proc/timer_list; \
    if [ -d /proc/acpi ]; then mount -t tmpfs tmpfs /proc/acpi; fi; \
    exec \"$@\"";

/// The command that runs bkd (no --addr) as `who` with `env`.
pub fn command(who: As, args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Command {
    command_of(&bkd_binary(), who, args, cwd, env)
}

/// The command that runs `bin` (bkd or a link to it) as `who` with `env`.
pub fn command_of(bin: &Path, who: As, args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Command {
    let mut inner: Vec<String> = Vec::new();
    if who == As::RootWithoutSysAdmin {
        inner.extend(
            [
                "setpriv",
                "--bounding-set",
                "-sys_admin",
                "--inh-caps",
                "-sys_admin",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
    } else if who != As::Root {
        inner.extend(
            [
                "runuser",
                "-u",
                TEST_USER,
                "--",
                "env",
                "-u",
                "BUILDKIT_HOST",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        inner.push("HOME=/home/bkdtest".into());
        inner.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    }
    inner.push(bin.display().to_string());
    inner.extend(args.iter().map(|s| s.to_string()));
    let mut cmd = if who == As::UserMaskedProc {
        let mut c = Command::new("unshare");
        c.args(["-m", "sh", "-c", MASK_PROC, "sh"]).args(&inner);
        c
    } else {
        let mut c = Command::new(&inner[0]);
        c.args(&inner[1..]);
        c
    };
    cmd.current_dir(cwd)
        .stdin(Stdio::null())
        .env_remove("BUILDKIT_HOST");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs bkd to completion.
pub fn bkd_as(who: As, args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Run {
    let mut cmd = command(who, args, cwd, env);
    let out = cmd.output().expect("run bkd");
    Run {
        cmd: format!("{who:?}: bkd {}", args.join(" ")),
        cwd: cwd.to_path_buf(),
        out,
    }
}

/// Starts bkd in the background with its output captured in files.
pub fn start_bkd(who: As, args: &[&str], cwd: &Path, out_dir: &Path) -> Child {
    start_bkd_env(who, args, cwd, out_dir, &[])
}

/// [`start_bkd`] with extra environment.
pub fn start_bkd_env(
    who: As,
    args: &[&str],
    cwd: &Path,
    out_dir: &Path,
    env: &[(&str, &str)],
) -> Child {
    let mut cmd = command(who, args, cwd, env);
    let stdout = std::fs::File::create(out_dir.join("stdout")).expect("stdout file");
    let stderr = std::fs::File::create(out_dir.join("stderr")).expect("stderr file");
    cmd.stdout(stdout).stderr(stderr);
    cmd.spawn().expect("start bkd")
}

/// Live (non-zombie) processes whose command line contains `needle`.
pub fn processes_matching(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    let me = std::process::id().to_string();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) || name == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(needle) {
            found.push(format!("{name}: {}", text.trim_end()));
        }
    }
    found
}

/// Waits until `check` holds, polling; false after `limit`.
pub fn wait_for(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

/// The bkd process itself (not runuser/unshare wrappers) among `child`'s
/// descendants, found by the test's unique state dir on its command line.
pub fn bkd_pid(root_marker: &str) -> Option<i32> {
    let bin = bkd_binary().display().to_string();
    processes_matching(root_marker)
        .into_iter()
        .filter(|p| {
            let cmd = p.split_once(": ").map(|x| x.1).unwrap_or("");
            cmd.starts_with(&bin) && !cmd.contains("__bkd-guard")
        })
        .find_map(|p| p.split(':').next()?.parse().ok())
}

/// Removes the daemon log bkd said it kept (`bkd: buildkitd log kept at
/// PATH` or `full daemon log: PATH`), so the suite leaves nothing behind.
pub fn remove_kept_log(stderr: &str) {
    for line in stderr.lines() {
        let path = line
            .strip_prefix("bkd: buildkitd log kept at ")
            .or_else(|| line.strip_prefix("full daemon log: "));
        if let Some(path) = path {
            let _ = std::fs::remove_file(path);
        }
    }
}
