//! `bkd doctor`: every probe with its result, the mode auto would choose
//! and why, and the pod spec fragment that fits this environment (with the
//! fixes for what the probes found).

use std::path::Path;

use super::daemon::{binaries, choose};
use super::GlobalArgs;
use crate::daemon::probe::{
    cap_names, not_found, state_dir_check, status_field, which, Decision, Mode, Probe, Probes,
    StateDirCheck, CONTAINERD_DEFAULT_CAPS, FIX_UIDMAP_CAPS,
};
use crate::daemon::state::default_root;
use crate::error::{Error, Result};
use crate::text::escape_path;

#[derive(Clone, Copy)]
enum Mark {
    Ok,
    Fail,
    Warn,
    Info,
}

fn line(mark: Mark, name: &str, value: &str) {
    let mark = match mark {
        Mark::Ok => "ok  ",
        Mark::Fail => "FAIL",
        Mark::Warn => "warn",
        Mark::Info => "info",
    };
    println!("[{mark}] {name:<25} {value}");
}

fn ok_if(ok: bool) -> Mark {
    if ok {
        Mark::Ok
    } else {
        Mark::Fail
    }
}

fn probe_line(name: &str, p: &Probe) {
    match p {
        Ok(v) => line(Mark::Ok, name, v),
        Err(e) if e == "not needed as root" => line(Mark::Info, name, e),
        Err(e) => line(Mark::Fail, name, e),
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
        .map_err(|e| format!("cannot run {}: {e}", escape_path(&path)))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or("").trim();
    Ok(format!(
        "{} ({})",
        escape_path(&path),
        crate::text::escape_str(first)
    ))
}

/// The capability bounding set, named against containerd's default.
fn bounding_set(mask: u64) -> String {
    let names = cap_names(mask);
    let default: Vec<&str> = CONTAINERD_DEFAULT_CAPS.to_vec();
    let mut sorted_names = names.clone();
    sorted_names.sort_unstable();
    let mut sorted_default = default.clone();
    sorted_default.sort_unstable();
    if sorted_names == sorted_default {
        return format!(
            "containerd's default ({} capabilities, no SYS_ADMIN)",
            names.len()
        );
    }
    if names.contains(&"SYS_ADMIN") && names.len() >= 38 {
        let missing: Vec<&str> = crate::daemon::probe::CAP_NAMES
            .iter()
            .copied()
            .filter(|n| !names.contains(n))
            .collect();
        return if missing.is_empty() {
            format!("all {} capabilities (privileged)", names.len())
        } else {
            format!(
                "{} capabilities (privileged), without {}",
                names.len(),
                missing.join(",")
            )
        };
    }
    format!("{} capabilities: {}", names.len(), names.join(","))
}

fn why(decision: &Decision, probes: &Probes, global: &GlobalArgs) -> String {
    match (decision.mode, &decision.downgrade) {
        (Mode::Privileged, _) => "running as root with CAP_SYS_ADMIN".into(),
        (Mode::RootlessStrict, Some(reason)) => format!(
            "running as {} (non-root) and the process sandbox cannot work: {reason}",
            probes.user
        ),
        (Mode::RootlessStrict, None) => {
            if global.daemon.mode == crate::daemon::ModeRequest::RootlessStrict {
                "rootless-strict was asked for (--mode or BKD_MODE)".into()
            } else {
                "BUILDKITD_FLAGS or --buildkitd-flag has --oci-worker-no-process-sandbox".into()
            }
        }
        (Mode::Rootless, _) => format!(
            "running as {} (non-root), user namespaces and a fresh procfs work",
            probes.user
        ),
    }
}

/// The pod spec fragment for `mode` (or, when no mode can run, the one
/// the environment should move to), with the fixes for what was found.
fn pod_fragment(mode: Option<Mode>, probes: &Probes, state: Option<&StateDirCheck>) -> String {
    let rootless = match mode {
        Some(m) => m.is_rootless(),
        None => probes.uid != 0,
    };
    let mut lines: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    if !rootless {
        lines.push("securityContext:".into());
        lines.push("  privileged: true".into());
    } else {
        let sandboxed = mode == Some(Mode::Rootless) || probes.sandbox.is_ok();
        if sandboxed && probes.pod.uid_map.is_some() {
            lines.push("hostUsers: false              # pod spec level".into());
        }
        lines.push("securityContext:".into());
        lines.push("  runAsNonRoot: true".into());
        lines.push(format!(
            "  runAsUser: {}",
            if probes.uid == 0 { 1000 } else { probes.uid }
        ));
        // SAFETY: getegid cannot fail.
        let gid = unsafe { libc::getegid() };
        lines.push(format!(
            "  runAsGroup: {}",
            if probes.uid == 0 { 1000 } else { gid }
        ));
        if probes.pod.no_new_privs {
            lines.push("  allowPrivilegeEscalation: true   # no_new_privs is set here".into());
        }
        if sandboxed && !probes.pod.proc_masks.is_empty() {
            // Only reached when the sandbox works anyway: keep it that way.
        } else if sandboxed && probes.pod.uid_map.is_some() {
            lines.push("  procMount: Unmasked".into());
        }
        let seccomp_note = if probes.pod.seccomp == Some(2) && probes.userns.is_err() {
            "   # the current profile forbids user namespaces"
        } else {
            ""
        };
        lines.push("  seccompProfile:".into());
        lines.push(format!("    type: Unconfined{seccomp_note}"));
        lines
            .push("  appArmorProfile:                 # Kubernetes >= 1.30, AppArmor nodes".into());
        lines.push("    type: Unconfined".into());
        if mode == Some(Mode::RootlessStrict) {
            notes.push(
                "# process sandbox off: BUILDKITD_FLAGS=--oci-worker-no-process-sandbox, which \
                 bkd adds itself in auto mode; to keep the sandbox, set spec.hostUsers: false \
                 and securityContext.procMount: Unmasked"
                    .into(),
            );
        }
        if probes.uidmap_setuid && matches!(&probes.uidmap_works, Some(Err(_))) {
            notes.push(format!("# image: newuidmap/newgidmap: {FIX_UIDMAP_CAPS}"));
        }
    }
    if let Some(s) = state {
        if rootless && s.overlay {
            notes.push(
                "# state dir on the container's overlayfs: mount an emptyDir volume there \
                 (volumeMounts: - name: buildkit-cache, mountPath: /home/user/.local/share/buildkit)"
                    .into(),
            );
        }
        if !s.writable {
            notes.push(
                "# state dir not writable: mount an emptyDir volume there, or fsGroup: 1000 \
                 for a volume owned by another user"
                    .into(),
            );
        }
    }
    lines.extend(notes);
    lines.join("\n")
}

pub async fn run(global: &GlobalArgs) -> Result<()> {
    let (probes, decision) = choose(&global.daemon)?;
    let (buildkitd, rootlesskit) = binaries();
    let pod = &probes.pod;
    let rootless = probes.uid != 0;
    line(
        Mark::Info,
        "user",
        &format!(
            "{} (uid {})",
            crate::text::escape_str(&probes.user),
            probes.uid
        ),
    );
    line(
        Mark::Info,
        "user namespace map",
        &match &pod.uid_map {
            None => "host ids (no user namespace: hostUsers: true)".to_string(),
            Some(m) => format!("{m} (a user namespace: hostUsers: false)"),
        },
    );
    let caps = status_field("CapEff").unwrap_or_default();
    line(
        ok_if(probes.cap_sys_admin || rootless),
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
    if let Some(bnd) = pod.cap_bounding {
        let lacks_setid =
            !(cap_names(bnd).contains(&"SETUID") && cap_names(bnd).contains(&"SETGID"));
        let mark = if rootless && lacks_setid {
            Mark::Fail
        } else {
            Mark::Info
        };
        let mut text = bounding_set(bnd);
        if rootless && lacks_setid {
            text.push_str(": newuidmap/newgidmap need SETUID and SETGID");
        }
        line(mark, "capability bounding set", &text);
    }
    line(
        if pod.no_new_privs && rootless {
            Mark::Fail
        } else {
            Mark::Info
        },
        "NoNewPrivs",
        if pod.no_new_privs {
            "1 (allowPrivilegeEscalation: false): setuid bits and file capabilities do not apply"
        } else {
            "0 (allowPrivilegeEscalation unset or true)"
        },
    );
    let seccomp = match pod.seccomp {
        Some(0) => "disabled (unconfined)".to_string(),
        Some(1) => "strict".to_string(),
        Some(2) => "filter (a seccomp profile applies: RuntimeDefault or Localhost)".to_string(),
        Some(n) => format!("unknown mode {n}"),
        None => "not reported".to_string(),
    };
    line(Mark::Info, "seccomp", &seccomp);
    line(
        Mark::Info,
        "AppArmor",
        &pod.apparmor
            .clone()
            .map(|p| crate::text::escape_str(&p))
            .unwrap_or_else(|| "not enabled on this kernel".into()),
    );
    let max_userns = read_trimmed("/proc/sys/user/max_user_namespaces").unwrap_or_default();
    line(
        ok_if(max_userns != "0"),
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
            line(Mark::Info, name, &v);
        }
    }
    probe_line("user namespace", &probes.userns);
    line(
        Mark::Info,
        "/proc",
        &if pod.proc_masks.is_empty() {
            "not masked (procMount: Unmasked, or privileged)".to_string()
        } else {
            format!(
                "masked: {} paths covered, e.g. {} (procMount: Default)",
                pod.proc_masks.len(),
                pod.proc_masks
                    .iter()
                    .take(3)
                    .map(|p| crate::text::escape_str(p))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
    );
    probe_line("sandbox (procfs)", &probes.sandbox);
    probe_line("newuidmap/newgidmap", &probes.uidmap);
    if let Some(works) = &probes.uidmap_works {
        probe_line("newuidmap works", works);
    }
    probe_line("subuid/subgid", &probes.subids);
    let cgroup = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "v2 (unified)"
    } else {
        "v1"
    };
    line(Mark::Info, "cgroup", cgroup);
    let root = match &global.daemon.root {
        Some(r) => Ok(r.clone()),
        None => default_root(probes.uid),
    };
    let state = match root.and_then(|r| state_dir_check(&r)) {
        Ok(check) => {
            let mark = if !check.writable {
                Mark::Fail
            } else if check.overlay && rootless {
                Mark::Warn
            } else {
                Mark::Ok
            };
            line(mark, "state dir", &check.summary);
            if check.overlay && rootless {
                line(
                    Mark::Warn,
                    "",
                    "on overlayfs rootless buildkitd cannot stack its overlay snapshots and \
                     falls back to the native snapshotter (full copies per layer: slow, large); \
                     mount an emptyDir volume at the state dir",
                );
            }
            Some(check)
        }
        Err(e) => {
            line(Mark::Fail, "state dir", &e);
            None
        }
    };
    probe_line("buildkitd", &version(&buildkitd));
    if rootless {
        probe_line("rootlesskit", &version(&rootlesskit));
    }
    probe_line("runc", &version("runc"));
    super::address_report(global).await;
    println!();
    match decision {
        Ok(d) => {
            println!(
                "mode: {} would run buildkitd in {} mode: {}",
                global.daemon.mode_name(),
                d.mode.name(),
                why(&d, &probes, global)
            );
            println!(
                "\nA Kubernetes container spec that fits:\n{}",
                pod_fragment(Some(d.mode), &probes, state.as_ref())
            );
            Ok(())
        }
        Err(e) => {
            println!("mode: none can run here: {e}");
            println!(
                "\nA Kubernetes container spec that fits:\n{}",
                pod_fragment(None, &probes, state.as_ref())
            );
            Err(Error::Daemon(format!("no build can run here: {e}")))
        }
    }
}
