//! What this environment allows, and the mode decision made from it. The
//! host is read through [`Host`] so the decision is tested without root.

use std::path::{Path, PathBuf};

/// How buildkitd runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Real root, buildkitd started directly.
    Privileged,
    /// Non-root through rootlesskit, process sandbox on.
    Rootless,
    /// Rootless with `--oci-worker-no-process-sandbox`.
    RootlessStrict,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Privileged => "privileged",
            Mode::Rootless => "rootless",
            Mode::RootlessStrict => "rootless-strict",
        }
    }

    pub fn is_rootless(self) -> bool {
        self != Mode::Privileged
    }
}

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeRequest {
    /// root: privileged; otherwise rootless, or rootless-strict when the process sandbox cannot work here
    Auto,
    /// root, buildkitd started directly
    Privileged,
    /// non-root, through rootlesskit, process sandbox on
    Rootless,
    /// rootless with --oci-worker-no-process-sandbox
    RootlessStrict,
}

/// One probe's outcome: `Err` holds why it failed.
pub type Probe = Result<String, String>;

/// Everything the mode decision looks at.
#[derive(Debug, Clone)]
pub struct Probes {
    pub uid: u32,
    pub user: String,
    /// CAP_SYS_ADMIN in the effective set.
    pub cap_sys_admin: bool,
    /// A user + mount + pid namespace can be created and a fresh procfs
    /// mounted in it: what runc's process sandbox needs.
    pub sandbox: Probe,
    /// newuidmap and newgidmap found (and setuid or capable).
    pub uidmap: Probe,
    /// A subordinate id range for this user in /etc/subuid and /etc/subgid.
    pub subids: Probe,
    /// The rootlesskit binary.
    pub rootlesskit: Probe,
    /// The buildkitd binary.
    pub buildkitd: Probe,
}

/// The mode to run and, when the sandbox was given up, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub mode: Mode,
    /// Set when auto chose rootless-strict because the sandbox cannot work.
    pub downgrade: Option<String>,
}

/// Reads the host. The real implementation runs syscalls and binaries.
pub trait Host {
    fn uid(&self) -> u32;
    fn user(&self) -> String;
    fn cap_sys_admin(&self) -> bool;
    fn sandbox(&self) -> Probe;
    fn uidmap(&self) -> Probe;
    fn subids(&self, user: &str, uid: u32) -> Probe;
    fn binary(&self, name: &str) -> Probe;
}

impl Probes {
    pub fn gather(host: &dyn Host, buildkitd: &str, rootlesskit: &str) -> Probes {
        let uid = host.uid();
        let user = host.user();
        let rootless_possible = uid != 0;
        let skip = || Err("not needed as root".to_string());
        Probes {
            uid,
            cap_sys_admin: host.cap_sys_admin(),
            sandbox: host.sandbox(),
            uidmap: if rootless_possible {
                host.uidmap()
            } else {
                skip()
            },
            subids: if rootless_possible {
                host.subids(&user, uid)
            } else {
                skip()
            },
            rootlesskit: if rootless_possible {
                host.binary(rootlesskit)
            } else {
                skip()
            },
            buildkitd: host.binary(buildkitd),
            user,
        }
    }
}

const ROOT_WITHOUT_CAPS: &str = "running as root without CAP_SYS_ADMIN (a pod that is not \
    privileged), so buildkitd cannot mount or create containers; either set \
    securityContext.privileged: true, or run as a non-root user (runAsUser: 1000) with the \
    rootless image and bkd picks rootless mode";

/// Chooses the mode, or explains why none can run here.
pub fn decide(request: ModeRequest, p: &Probes) -> Result<Decision, String> {
    if let Err(e) = &p.buildkitd {
        return Err(format!("buildkitd not found: {e}"));
    }
    let rootless_ready =
        |strict: bool| -> Result<(), String> {
            if p.uid == 0 {
                return Err(format!(
                "{} mode runs as a non-root user, but bkd runs as root; use --mode privileged, \
                 or run as a non-root user (runAsUser: 1000)",
                if strict { "rootless-strict" } else { "rootless" }
            ));
            }
            if let Err(e) = &p.rootlesskit {
                return Err(format!("rootless mode needs rootlesskit: {e}"));
            }
            if let Err(e) = &p.uidmap {
                return Err(format!("rootless mode needs newuidmap/newgidmap: {e}"));
            }
            if let Err(e) = &p.subids {
                return Err(format!("rootless mode needs subordinate ids: {e}"));
            }
            Ok(())
        };
    let plain = |mode| Decision {
        mode,
        downgrade: None,
    };
    match request {
        ModeRequest::Privileged => {
            if p.uid != 0 {
                return Err(format!(
                    "privileged mode needs root, but bkd runs as {} (uid {}); use --mode rootless \
                     or --mode auto",
                    p.user, p.uid
                ));
            }
            if !p.cap_sys_admin {
                return Err(ROOT_WITHOUT_CAPS.into());
            }
            Ok(plain(Mode::Privileged))
        }
        ModeRequest::Rootless => rootless_ready(false).map(|()| plain(Mode::Rootless)),
        ModeRequest::RootlessStrict => rootless_ready(true).map(|()| plain(Mode::RootlessStrict)),
        ModeRequest::Auto => {
            if p.uid == 0 {
                if !p.cap_sys_admin {
                    return Err(ROOT_WITHOUT_CAPS.into());
                }
                return Ok(plain(Mode::Privileged));
            }
            rootless_ready(false)?;
            match &p.sandbox {
                Ok(_) => Ok(plain(Mode::Rootless)),
                Err(why) => Ok(Decision {
                    mode: Mode::RootlessStrict,
                    downgrade: Some(why.clone()),
                }),
            }
        }
    }
}

/// The warning printed once when the sandbox is given up.
pub fn downgrade_warning(why: &str) -> String {
    format!(
        "warning: the process sandbox cannot work here ({why}); running buildkitd in \
         rootless-strict mode (--oci-worker-no-process-sandbox): build steps can see and signal \
         other processes in the builder container. To keep the sandbox in Kubernetes, set \
         securityContext.procMount: Unmasked with spec.hostUsers: false, or pass --mode rootless \
         to fail instead"
    )
}

/// The real host.
pub struct RealHost;

impl Host for RealHost {
    fn uid(&self) -> u32 {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() }
    }

    fn user(&self) -> String {
        std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(|| user_name(self.uid()))
            .unwrap_or_else(|| self.uid().to_string())
    }

    fn cap_sys_admin(&self) -> bool {
        const CAP_SYS_ADMIN: u32 = 21;
        status_field("CapEff")
            .and_then(|v| u64::from_str_radix(&v, 16).ok())
            .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
    }

    fn sandbox(&self) -> Probe {
        if std::env::var("BKD_SANDBOX_PROBE").as_deref() == Ok("skip") {
            // The safety net after a failed build still applies.
            return Ok("assumed to work (BKD_SANDBOX_PROBE=skip)".into());
        }
        sandbox_probe()
    }

    fn uidmap(&self) -> Probe {
        let mut found = Vec::new();
        for name in ["newuidmap", "newgidmap"] {
            let path = which(name).ok_or_else(|| not_found(name))?;
            let meta = std::fs::metadata(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            use std::os::unix::fs::PermissionsExt;
            let setuid = meta.permissions().mode() & 0o4000 != 0;
            let caps = xattr_present(&path, "security.capability");
            if !setuid && !caps {
                return Err(format!(
                    "{} is neither setuid root nor has file capabilities",
                    path.display()
                ));
            }
            found.push(path.display().to_string());
        }
        Ok(found.join(", "))
    }

    fn subids(&self, user: &str, uid: u32) -> Probe {
        let mut ranges = Vec::new();
        for file in ["/etc/subuid", "/etc/subgid"] {
            let text =
                std::fs::read_to_string(file).map_err(|e| format!("cannot read {file}: {e}"))?;
            let range = subid_range(&text, user, uid)
                .ok_or_else(|| format!("no range for {user} (uid {uid}) in {file}"))?;
            ranges.push(format!("{file} {}:{}", range.0, range.1));
        }
        Ok(ranges.join(", "))
    }

    fn binary(&self, name: &str) -> Probe {
        let path = which(name).ok_or_else(|| not_found(name))?;
        Ok(path.display().to_string())
    }
}

/// The first `start:count` range for `user` or `uid` in a subuid file.
pub fn subid_range(text: &str, user: &str, uid: u32) -> Option<(u64, u64)> {
    text.lines().find_map(|line| {
        let mut parts = line.trim().split(':');
        let owner = parts.next()?;
        let start = parts.next()?.parse().ok()?;
        let count: u64 = parts.next()?.parse().ok()?;
        ((owner == user || owner == uid.to_string()) && count > 0).then_some((start, count))
    })
}

/// A field of /proc/self/status.
pub fn status_field(name: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == name).then(|| v.trim().to_string())
    })
}

fn user_name(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_string())
    })
}

fn xattr_present(path: &Path, name: &str) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let (Ok(p), Ok(n)) = (
        std::ffi::CString::new(path.as_os_str().as_bytes()),
        std::ffi::CString::new(name),
    ) else {
        return false;
    };
    // SAFETY: both strings are NUL-terminated; a zero-size query writes nothing.
    unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) > 0 }
}

/// Why `which(name)` found nothing.
pub fn not_found(name: &str) -> String {
    if name.contains('/') {
        format!("{name} does not exist or is not executable")
    } else {
        format!("{name} not found on PATH")
    }
}

/// A program on PATH, or a path given directly.
pub fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| executable(p))
}

/// The hidden argument that makes bkd run the sandbox probe in a fresh
/// single-threaded process.
pub const SANDBOX_PROBE_ARG: &str = "__bkd-sandbox-probe";

/// Runs `bkd __bkd-sandbox-probe` and reads its verdict.
fn sandbox_probe() -> Probe {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find bkd itself: {e}"))?;
    let out = std::process::Command::new(exe)
        .arg(SANDBOX_PROBE_ARG)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run the sandbox probe: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        Ok("user+mount+pid namespace created, fresh procfs mounted".into())
    } else if text.is_empty() {
        Err(format!("sandbox probe failed: {}", out.status))
    } else {
        Err(text)
    }
}

/// The probe itself: must run before any other thread exists. Creates a
/// user, mount and pid namespace, maps the current ids to root, and mounts
/// a fresh procfs in a child inside the new pid namespace, as runc does
/// for a build step. Prints why it failed and returns the exit code.
pub fn run_sandbox_probe() -> i32 {
    fn errno() -> std::io::Error {
        std::io::Error::last_os_error()
    }
    // SAFETY: plain syscalls on a single-threaded process; the forked child
    // only calls mount and _exit.
    unsafe {
        let uid = libc::geteuid();
        let gid = libc::getegid();
        if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWPID) != 0 {
            println!("cannot create a user namespace: {}", errno());
            return 10;
        }
        let maps = [
            ("/proc/self/setgroups", "deny".to_string()),
            ("/proc/self/uid_map", format!("0 {uid} 1")),
            ("/proc/self/gid_map", format!("0 {gid} 1")),
        ];
        for (file, text) in maps {
            if let Err(e) = std::fs::write(file, text) {
                // setgroups is absent on old kernels; the maps are not.
                if file != "/proc/self/setgroups" {
                    println!("cannot map ids in a user namespace ({file}): {e}");
                    return 11;
                }
            }
        }
        let pid = libc::fork();
        if pid < 0 {
            println!("cannot fork into the new pid namespace: {}", errno());
            return 12;
        }
        if pid == 0 {
            let root = c"/";
            let proc_ = c"proc";
            let target = c"/proc";
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                libc::_exit(20);
            }
            let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            if libc::mount(
                proc_.as_ptr(),
                target.as_ptr(),
                proc_.as_ptr(),
                flags,
                std::ptr::null(),
            ) != 0
            {
                let code = *libc::__errno_location();
                libc::_exit(if code == libc::EPERM { 21 } else { 22 });
            }
            libc::_exit(0);
        }
        let mut status = 0;
        if libc::waitpid(pid, &mut status, 0) != pid {
            println!("lost the probe child: {}", errno());
            return 13;
        }
        match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
            Some(0) => 0,
            Some(20) => {
                println!("cannot make mounts private in a new mount namespace");
                14
            }
            Some(21) => {
                println!(
                    "mounting a fresh procfs in a new user namespace is not permitted \
                     (/proc is masked, as in a Kubernetes pod without procMount: Unmasked)"
                );
                15
            }
            _ => {
                println!("mounting a fresh procfs in a new user namespace failed");
                16
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probes(uid: u32) -> Probes {
        Probes {
            uid,
            user: if uid == 0 {
                "root".into()
            } else {
                "user".into()
            },
            cap_sys_admin: uid == 0,
            sandbox: Ok("ok".into()),
            uidmap: Ok("ok".into()),
            subids: Ok("ok".into()),
            rootlesskit: Ok("/usr/bin/rootlesskit".into()),
            buildkitd: Ok("/usr/bin/buildkitd".into()),
        }
    }

    #[test]
    fn auto_picks_privileged_for_root_and_rootless_otherwise() {
        assert_eq!(
            decide(ModeRequest::Auto, &probes(0)).map(|d| d.mode),
            Ok(Mode::Privileged)
        );
        assert_eq!(
            decide(ModeRequest::Auto, &probes(1000)),
            Ok(Decision {
                mode: Mode::Rootless,
                downgrade: None
            })
        );
    }

    #[test]
    fn auto_falls_back_to_strict_and_says_why() {
        let mut p = probes(1000);
        p.sandbox = Err("procfs masked".into());
        let d = decide(ModeRequest::Auto, &p).expect("decision");
        assert_eq!(d.mode, Mode::RootlessStrict);
        assert_eq!(d.downgrade.as_deref(), Some("procfs masked"));
        // An explicit rootless request never downgrades.
        assert_eq!(
            decide(ModeRequest::Rootless, &p).map(|d| d.mode),
            Ok(Mode::Rootless)
        );
    }

    #[test]
    fn root_without_sys_admin_is_explained() {
        let mut p = probes(0);
        p.cap_sys_admin = false;
        for req in [ModeRequest::Auto, ModeRequest::Privileged] {
            let e = decide(req, &p).expect_err("must refuse");
            assert!(
                e.contains("privileged: true") && e.contains("non-root"),
                "{e}"
            );
        }
    }

    #[test]
    fn missing_pieces_are_named() {
        let mut p = probes(1000);
        p.rootlesskit = Err("rootlesskit not found on PATH".into());
        let e = decide(ModeRequest::Auto, &p).expect_err("must refuse");
        assert!(e.contains("rootlesskit not found"), "{e}");
        let mut p = probes(1000);
        p.subids = Err("no range for user".into());
        assert!(decide(ModeRequest::RootlessStrict, &p)
            .expect_err("must refuse")
            .contains("subordinate ids"));
        let mut p = probes(0);
        p.buildkitd = Err("buildkitd not found on PATH".into());
        assert!(decide(ModeRequest::Auto, &p)
            .expect_err("must refuse")
            .contains("buildkitd not found"));
        assert!(decide(ModeRequest::Privileged, &probes(1000))
            .expect_err("must refuse")
            .contains("needs root"));
        assert!(decide(ModeRequest::Rootless, &probes(0))
            .expect_err("must refuse")
            .contains("non-root"));
    }

    #[test]
    fn subid_ranges_match_by_name_or_uid() {
        let text = "other:1:2\nuser:100000:65536\n";
        assert_eq!(subid_range(text, "user", 5), Some((100000, 65536)));
        assert_eq!(subid_range("1000:7:9\n", "user", 1000), Some((7, 9)));
        assert_eq!(subid_range("user:1:0\n", "user", 1000), None);
        assert_eq!(subid_range("garbage\n", "user", 1000), None);
    }
}
