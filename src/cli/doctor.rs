//! `bkd doctor`: every probe with its result, the mode auto would choose
//! and why, and the pod securityContext that fits this environment.

use std::path::Path;

use super::daemon::{binaries, choose};
use super::GlobalArgs;
use crate::daemon::probe::{not_found, status_field, which, Decision, Mode, Probe, Probes};
use crate::daemon::state::default_root;
use crate::error::{Error, Result};

fn line(ok: Option<bool>, name: &str, value: &str) {
    let mark = match ok {
        Some(true) => "ok  ",
        Some(false) => "FAIL",
        None => "info",
    };
    println!("[{mark}] {name:<25} {value}");
}

fn probe_line(name: &str, p: &Probe) {
    match p {
        Ok(v) => line(Some(true), name, v),
        Err(e) if e == "not needed as root" => line(None, name, e),
        Err(e) => line(Some(false), name, e),
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The first line of `PROGRAM --version`.
fn version(program: &str) -> Probe {
    let path = which(program).ok_or_else(|| not_found(program))?;
    let out = std::process::Command::new(&path)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or("").trim();
    Ok(format!("{} ({first})", path.display()))
}

/// Free space and writability of the state dir, or of the nearest existing
/// parent when it does not exist yet (buildkitd creates it).
fn state_dir(root: &Path) -> Probe {
    let mut dir = root.to_path_buf();
    while !dir.exists() {
        if !dir.pop() {
            return Err(format!("no existing parent of {}", root.display()));
        }
    }
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{} contains a NUL byte", dir.display()))?;
    // SAFETY: a valid NUL-terminated path; statvfs fills the struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(format!(
            "cannot stat {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: as above; access only checks permissions.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 {
        return Err(format!("{} is not writable", dir.display()));
    }
    let free = st.f_bavail as u64 * st.f_frsize as u64;
    let note = if dir == root {
        String::new()
    } else {
        format!(", created on first use under {}", dir.display())
    };
    Ok(format!(
        "{} writable, {} free{note}",
        root.display(),
        crate::progress::format_bytes(i64::try_from(free).unwrap_or(i64::MAX))
    ))
}

fn security_context(mode: Mode) -> &'static str {
    match mode {
        Mode::Privileged => "securityContext:\n  privileged: true",
        Mode::Rootless => {
            "securityContext:\n  runAsNonRoot: true\n  runAsUser: 1000\n  runAsGroup: 1000"
        }
        Mode::RootlessStrict => {
            "securityContext:\n  runAsNonRoot: true\n  runAsUser: 1000\n  runAsGroup: 1000\n  \
             seccompProfile:\n    type: Unconfined\n  appArmorProfile:\n    type: Unconfined\n\
             env: BUILDKITD_FLAGS=--oci-worker-no-process-sandbox (bkd adds it itself in auto mode)"
        }
    }
}

fn why(decision: &Decision, probes: &Probes) -> String {
    match (decision.mode, &decision.downgrade) {
        (Mode::Privileged, _) => "running as root with CAP_SYS_ADMIN".into(),
        (Mode::RootlessStrict, Some(reason)) => format!(
            "running as {} (non-root) and the process sandbox cannot work: {reason}",
            probes.user
        ),
        (Mode::RootlessStrict, None) => "rootless-strict was asked for".into(),
        (Mode::Rootless, _) => format!(
            "running as {} (non-root), user namespaces and a fresh procfs work",
            probes.user
        ),
    }
}

pub async fn run(global: &GlobalArgs) -> Result<()> {
    let (probes, decision) = choose(&global.daemon)?;
    let (buildkitd, rootlesskit) = binaries();
    line(
        None,
        "user",
        &format!("{} (uid {})", probes.user, probes.uid),
    );
    let caps = status_field("CapEff").unwrap_or_default();
    line(
        Some(probes.cap_sys_admin || probes.uid != 0),
        "CAP_SYS_ADMIN",
        &format!(
            "{} (CapEff {caps})",
            if probes.cap_sys_admin {
                "present"
            } else {
                "absent"
            }
        ),
    );
    let max_userns = read_trimmed("/proc/sys/user/max_user_namespaces").unwrap_or_default();
    line(
        Some(max_userns != "0"),
        "user.max_user_namespaces",
        &max_userns,
    );
    for (name, path) in [
        (
            "unprivileged_userns_clone",
            "/proc/sys/kernel/unprivileged_userns_clone",
        ),
        (
            "apparmor_restrict_userns",
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
        ),
    ] {
        if let Some(v) = read_trimmed(path) {
            line(None, name, &v);
        }
    }
    probe_line("sandbox (procfs)", &probes.sandbox);
    probe_line("newuidmap/newgidmap", &probes.uidmap);
    probe_line("subuid/subgid", &probes.subids);
    let seccomp = match status_field("Seccomp").as_deref() {
        Some("0") => "disabled (unconfined)".to_string(),
        Some("1") => "strict".to_string(),
        Some("2") => "filter (a seccomp profile applies)".to_string(),
        other => format!("unknown ({})", other.unwrap_or("not reported")),
    };
    line(None, "seccomp", &seccomp);
    let apparmor = read_trimmed("/proc/self/attr/apparmor/current")
        .or_else(|| read_trimmed("/proc/self/attr/current"))
        .map(|s| s.trim_end_matches('\0').to_string())
        .unwrap_or_else(|| "not available".into());
    line(None, "AppArmor", &apparmor);
    let cgroup = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "v2 (unified)"
    } else {
        "v1"
    };
    line(None, "cgroup", cgroup);
    let root = match &global.daemon.root {
        Some(r) => Ok(r.clone()),
        None => default_root(probes.uid),
    };
    match root {
        Ok(r) => probe_line("state dir", &state_dir(&r)),
        Err(e) => line(Some(false), "state dir", &e),
    }
    probe_line("buildkitd", &version(&buildkitd));
    if probes.uid != 0 {
        probe_line("rootlesskit", &version(&rootlesskit));
    }
    probe_line("runc", &version("runc"));
    println!();
    match decision {
        Ok(d) => {
            println!(
                "mode: {} would run buildkitd in {} mode: {}",
                global.daemon.mode_name(),
                d.mode.name(),
                why(&d, &probes)
            );
            println!(
                "\nA Kubernetes container spec that fits:\n{}",
                security_context(d.mode)
            );
            Ok(())
        }
        Err(e) => Err(Error::Daemon(format!("no build can run here: {e}"))),
    }
}
