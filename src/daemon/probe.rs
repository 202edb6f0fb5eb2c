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
    /// A user namespace can be created: what rootlesskit needs first.
    pub userns: Probe,
    /// A user + mount + pid namespace can be created and a fresh procfs
    /// mounted in it: what runc's process sandbox needs.
    pub sandbox: Probe,
    /// newuidmap and newgidmap found (and setuid or capable).
    pub uidmap: Probe,
    /// newuidmap/newgidmap mapped this user's subordinate ids into a new
    /// user namespace, as rootlesskit has them do (`None`: not tried).
    pub uidmap_works: Option<Probe>,
    /// newuidmap or newgidmap is setuid rather than given file capabilities.
    pub uidmap_setuid: bool,
    /// What the container's security settings show.
    pub pod: PodView,
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

/// The container's security settings as seen from inside, read from
/// /proc: what a pod spec's securityContext turned into.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodView {
    /// `Seccomp` of /proc/self/status: 0 none, 1 strict, 2 filter.
    pub seccomp: Option<u32>,
    /// `NoNewPrivs` of /proc/self/status (`allowPrivilegeEscalation: false`).
    pub no_new_privs: bool,
    /// The capability bounding set.
    pub cap_bounding: Option<u64>,
    /// The AppArmor profile, when AppArmor is on.
    pub apparmor: Option<String>,
    /// /proc/self/uid_map when it is not the identity map (a user
    /// namespace: `hostUsers: false`).
    pub uid_map: Option<String>,
    /// user.max_user_namespaces.
    pub max_user_namespaces: Option<u64>,
    /// kernel.apparmor_restrict_unprivileged_userns = 1 (Ubuntu 23.10+).
    pub apparmor_restricts_userns: bool,
    /// kernel.unprivileged_userns_clone = 0 (older Debian kernels).
    pub userns_clone_disabled: bool,
    /// Paths below /proc with something mounted over them (masked or
    /// read-only: `procMount: Default`).
    pub proc_masks: Vec<String>,
}

impl PodView {
    /// Reads the current process's view.
    pub fn read() -> PodView {
        let num =
            |path: &str| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
        let uid_map = std::fs::read_to_string("/proc/self/uid_map")
            .ok()
            .map(|m| m.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|m| m != "0 0 4294967295");
        PodView {
            seccomp: status_field("Seccomp").and_then(|v| v.parse().ok()),
            no_new_privs: status_field("NoNewPrivs").as_deref() == Some("1"),
            cap_bounding: status_field("CapBnd").and_then(|v| u64::from_str_radix(&v, 16).ok()),
            apparmor: apparmor_profile(),
            uid_map,
            max_user_namespaces: num("/proc/sys/user/max_user_namespaces"),
            apparmor_restricts_userns: num(
                "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
            ) == Some(1),
            userns_clone_disabled: num("/proc/sys/kernel/unprivileged_userns_clone") == Some(0),
            proc_masks: proc_masks(),
        }
    }

    /// Confined by an AppArmor profile other than `unconfined`.
    pub fn apparmor_confined(&self) -> bool {
        self.apparmor
            .as_deref()
            .is_some_and(|p| !p.is_empty() && !p.starts_with("unconfined"))
    }

    /// Why a user namespace cannot be created here and the fix, from what
    /// the view shows; `None` when it shows no cause.
    pub fn userns_blocker(&self) -> Option<(&'static str, &'static str)> {
        if self.max_user_namespaces == Some(0) {
            return Some((
                "user namespaces are disabled on this node (user.max_user_namespaces = 0)",
                "on the node: sysctl -w user.max_user_namespaces=28633, or use the privileged \
                 mode (securityContext.privileged: true, as root)",
            ));
        }
        if self.userns_clone_disabled {
            return Some((
                "unprivileged user namespaces are disabled on this node \
                 (kernel.unprivileged_userns_clone = 0)",
                "on the node: sysctl -w kernel.unprivileged_userns_clone=1, or use the privileged \
                 mode (securityContext.privileged: true, as root)",
            ));
        }
        if self.seccomp == Some(2) {
            return Some((
                "this container's seccomp profile forbids creating user namespaces \
                 (seccompProfile RuntimeDefault, or a node default profile)",
                FIX_SECCOMP,
            ));
        }
        if self.apparmor_restricts_userns || self.apparmor_confined() {
            return Some((
                "AppArmor forbids creating user namespaces in this container",
                FIX_APPARMOR,
            ));
        }
        None
    }
}

/// The securityContext fix for seccomp.
pub const FIX_SECCOMP: &str =
    "set securityContext.seccompProfile.type: Unconfined on the container";
/// The securityContext fix for AppArmor.
pub const FIX_APPARMOR: &str = "set securityContext.appArmorProfile.type: Unconfined on the \
    container (Kubernetes >= 1.30; older: the container.apparmor.security.beta.kubernetes.io \
    annotation set to unconfined)";
/// The image fix for a setuid newuidmap.
pub const FIX_UIDMAP_CAPS: &str = "give them file capabilities instead of the setuid bit in the \
    image (chmod u-s /usr/bin/newuidmap /usr/bin/newgidmap && setcap cap_setuid+ep \
    /usr/bin/newuidmap && setcap cap_setgid+ep /usr/bin/newgidmap), as bkd's rootless image \
    and moby/buildkit's do";
/// The securityContext fix for no_new_privs.
pub const FIX_NO_NEW_PRIVS: &str =
    "set securityContext.allowPrivilegeEscalation: true (or leave it unset) on the container";

/// Names of capabilities by bit, as the kernel numbers them.
pub const CAP_NAMES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The capability names in a mask.
pub fn cap_names(mask: u64) -> Vec<&'static str> {
    CAP_NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1u64 << i) != 0)
        .map(|(_, n)| *n)
        .collect()
}

/// containerd's default capability set for a container that is not
/// privileged (what Kubernetes gives without `capabilities.add`).
pub const CONTAINERD_DEFAULT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

fn apparmor_profile() -> Option<String> {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim_end_matches(['\0', '\n']).trim().to_string())
    };
    if !Path::new("/sys/module/apparmor").exists() {
        return None;
    }
    read("/proc/self/attr/apparmor/current").or_else(|| read("/proc/self/attr/current"))
}

/// Mount points strictly below /proc (other than binfmt_misc), as the
/// runtime's masked and read-only paths leave them.
fn proc_masks() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<String> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with("/proc/") && !m.starts_with("/proc/sys/fs/binfmt_misc"))
        .map(String::from)
        .collect();
    found.sort();
    found.dedup();
    found
}

/// What the namespace probe found.
#[derive(Debug, Clone)]
pub struct NamespaceProbe {
    pub userns: Probe,
    pub sandbox: Probe,
    pub uidmap_works: Option<Probe>,
}

/// The subordinate id ranges newuidmap/newgidmap are tried with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubIds {
    pub uid: (u64, u64),
    pub gid: (u64, u64),
}

/// Reads the host. The real implementation runs syscalls and binaries.
pub trait Host {
    fn uid(&self) -> u32;
    fn user(&self) -> String;
    fn cap_sys_admin(&self) -> bool;
    /// User namespace, process sandbox and, given subordinate ids,
    /// newuidmap/newgidmap.
    fn namespaces(&self, subids: Option<SubIds>) -> NamespaceProbe;
    /// newuidmap/newgidmap found, and whether either is setuid.
    fn uidmap(&self) -> (Probe, bool);
    fn subids(&self, user: &str, uid: u32) -> Result<(String, SubIds), String>;
    fn binary(&self, name: &str) -> Probe;
    fn pod_view(&self) -> PodView;
}

impl Probes {
    pub fn gather(host: &dyn Host, buildkitd: &str, rootlesskit: &str) -> Probes {
        Probes::gather_all(host, buildkitd, rootlesskit, true)
    }

    /// [`gather`](Self::gather) for starting a daemon now: as root the
    /// mode does not depend on namespaces ([`decide`] reads them only for
    /// a non-root user), so they are not probed, which keeps a run of the
    /// sandbox probe off the path to the daemon's start.
    pub fn gather_to_start(host: &dyn Host, buildkitd: &str, rootlesskit: &str) -> Probes {
        Probes::gather_all(host, buildkitd, rootlesskit, false)
    }

    fn gather_all(
        host: &dyn Host,
        buildkitd: &str,
        rootlesskit: &str,
        namespaces_as_root: bool,
    ) -> Probes {
        let uid = host.uid();
        let user = host.user();
        let rootless_possible = uid != 0;
        let skip = || Err("not needed as root".to_string());
        let (uidmap, uidmap_setuid) = if rootless_possible {
            host.uidmap()
        } else {
            (skip(), false)
        };
        let subids = if rootless_possible {
            host.subids(&user, uid)
        } else {
            Err("not needed as root".to_string())
        };
        let ranges = match (&subids, &uidmap) {
            (Ok((_, r)), Ok(_)) => Some(*r),
            _ => None,
        };
        let ns = if rootless_possible || namespaces_as_root {
            host.namespaces(ranges)
        } else {
            NamespaceProbe {
                userns: skip(),
                sandbox: skip(),
                uidmap_works: None,
            }
        };
        Probes {
            uid,
            cap_sys_admin: host.cap_sys_admin(),
            userns: ns.userns,
            sandbox: ns.sandbox,
            uidmap,
            uidmap_works: ns.uidmap_works,
            uidmap_setuid,
            subids: subids.map(|(text, _)| text),
            pod: host.pod_view(),
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
            if let Err(e) = &p.userns {
                return Err(userns_refusal(e, &p.pod));
            }
            if let Some(Err(e)) = &p.uidmap_works {
                return Err(uidmap_refusal(e, p));
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

/// Why rootless mode cannot start when no user namespace can be made.
fn userns_refusal(error: &str, pod: &PodView) -> String {
    match pod.userns_blocker() {
        Some((cause, fix)) => {
            format!("rootless mode needs a user namespace, but {cause} ({error}); fix: {fix}")
        }
        None => format!("rootless mode needs a user namespace, but none can be created: {error}"),
    }
}

/// Why rootless mode cannot start when newuidmap/newgidmap fail.
fn uidmap_refusal(error: &str, p: &Probes) -> String {
    let start = format!("newuidmap/newgidmap cannot map this user's subordinate ids ({error})");
    if p.pod.no_new_privs {
        return format!(
            "{start}: no_new_privs is set (allowPrivilegeEscalation: false), so their file \
             capabilities or setuid bit do not apply; fix: {FIX_NO_NEW_PRIVS}"
        );
    }
    if let Some(map) = &p.pod.uid_map {
        if let Ok(ranges) = &p.subids {
            return format!(
                "{start}: this container runs in a user namespace (hostUsers: false, uid_map \
                 {map}) and the subordinate ids ({ranges}) must lie inside the ids it maps; fix: \
                 in the image, give the user a range inside the pod's 65536 ids (for example \
                 user:1001:64535 in /etc/subuid and /etc/subgid), or set spec.hostUsers: true"
            );
        }
    }
    if p.uidmap_setuid && !p.cap_sys_admin {
        return format!(
            "{start}: they are setuid root, and a setuid-root newuidmap cannot write uid_map in \
             a container without CAP_SYS_ADMIN (any pod that is not privileged); fix: \
             {FIX_UIDMAP_CAPS}"
        );
    }
    start
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

    fn namespaces(&self, subids: Option<SubIds>) -> NamespaceProbe {
        if std::env::var("BKD_SANDBOX_PROBE").as_deref() == Ok("skip") {
            // The safety net after a failed build still applies.
            return NamespaceProbe {
                userns: Ok("assumed to work (BKD_SANDBOX_PROBE=skip)".into()),
                sandbox: Ok("assumed to work (BKD_SANDBOX_PROBE=skip)".into()),
                uidmap_works: None,
            };
        }
        namespace_probe(subids)
    }

    fn uidmap(&self) -> (Probe, bool) {
        let mut found = Vec::new();
        let mut any_setuid = false;
        for (name, cap) in [("newuidmap", "setuid"), ("newgidmap", "setgid")] {
            let Some(path) = which(name) else {
                return (Err(not_found(name)), any_setuid);
            };
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    return (
                        Err(format!(
                            "cannot read {}: {e}",
                            crate::text::escape_path(&path)
                        )),
                        false,
                    )
                }
            };
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            let setuid = meta.permissions().mode() & 0o4000 != 0 && meta.uid() == 0;
            let caps = file_caps(&path);
            let kind = match (&caps, setuid) {
                (Some(c), _) => format!("file capabilities {c}"),
                (None, true) => "setuid root".to_string(),
                (None, false) => {
                    return (
                        Err(format!(
                            "{} is neither setuid root nor has file capabilities (cap_{cap}+ep)",
                            crate::text::escape_path(&path)
                        )),
                        false,
                    )
                }
            };
            any_setuid |= setuid && caps.is_none();
            found.push(format!("{} ({kind})", crate::text::escape_path(&path)));
        }
        (Ok(found.join(", ")), any_setuid)
    }

    fn subids(&self, user: &str, uid: u32) -> Result<(String, SubIds), String> {
        let mut ranges = Vec::new();
        let mut found = Vec::new();
        for file in ["/etc/subuid", "/etc/subgid"] {
            let text =
                std::fs::read_to_string(file).map_err(|e| format!("cannot read {file}: {e}"))?;
            let range = subid_range(&text, user, uid).ok_or_else(|| {
                format!(
                    "no range for {} (uid {uid}) in {file}",
                    crate::text::escape_str(user)
                )
            })?;
            ranges.push(format!("{file} {}:{}", range.0, range.1));
            found.push(range);
        }
        Ok((
            ranges.join(", "),
            SubIds {
                uid: found[0],
                gid: found[1],
            },
        ))
    }

    fn pod_view(&self) -> PodView {
        PodView::read()
    }

    fn binary(&self, name: &str) -> Probe {
        let path = which(name).ok_or_else(|| not_found(name))?;
        Ok(crate::text::escape_path(&path))
    }
}

/// What the state directory (or, before it exists, its nearest existing
/// parent) looks like to buildkitd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDirCheck {
    /// One line: path, writability, owner, file system, free space.
    pub summary: String,
    pub writable: bool,
    /// The file system is an overlayfs (the container's own root, not a volume).
    pub overlay: bool,
}

const OVERLAYFS_MAGIC: i64 = 0x794c_7630;

fn fs_name(magic: i64) -> String {
    match magic {
        OVERLAYFS_MAGIC => "overlayfs".into(),
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x0102_1994 => "tmpfs".into(),
        0x6573_5546 => "fuse".into(),
        0x6969 => "nfs".into(),
        0x2FC1_2FC1 => "zfs".into(),
        other => format!("file system 0x{other:x}"),
    }
}

/// Writability, owner, file system and free space of `root`.
pub fn state_dir_check(root: &Path) -> Result<StateDirCheck, String> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let mut dir = root.to_path_buf();
    while std::fs::symlink_metadata(&dir).is_err() {
        if !dir.pop() {
            return Err(format!(
                "no existing parent of {}",
                crate::text::escape_path(root)
            ));
        }
    }
    let shown = crate::text::escape_path(&dir);
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| format!("{shown} contains a NUL byte"))?;
    // SAFETY: a valid NUL-terminated path; statfs fills the struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(format!("cannot stat {shown}: {}", errno()));
    }
    let meta = std::fs::metadata(&dir).map_err(|e| format!("cannot stat {shown}: {e}"))?;
    // SAFETY: as above; access only checks permissions.
    let writable = unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0;
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as i64;
    #[allow(clippy::unnecessary_cast)]
    let free = (st.f_bavail as u64).saturating_mul(st.f_bsize as u64);
    let note = if dir == root {
        String::new()
    } else {
        format!(" (created on first use under {shown})")
    };
    Ok(StateDirCheck {
        summary: format!(
            "{}{note}: {}, owner {}:{} mode {:o}, {}, {} free",
            crate::text::escape_path(root),
            if writable { "writable" } else { "not writable" },
            meta.uid(),
            meta.gid(),
            meta.mode() & 0o7777,
            fs_name(magic),
            crate::progress::format_bytes(i64::try_from(free).unwrap_or(i64::MAX))
        ),
        writable,
        overlay: magic == OVERLAYFS_MAGIC,
    })
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

/// The file capabilities of `path` as setcap writes them
/// (`cap_setuid+ep`), from its `security.capability` attribute.
fn file_caps(path: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut buf = [0u8; 64];
    // SAFETY: NUL-terminated strings and a buffer of the given size.
    let n = unsafe {
        libc::getxattr(
            p.as_ptr(),
            c"security.capability".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).ok()?;
    decode_file_caps(&buf[..n])
}

/// Decodes a `security.capability` value (VFS_CAP_REVISION 2 or 3).
pub fn decode_file_caps(raw: &[u8]) -> Option<String> {
    let word = |i: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            raw.get(i * 4..i * 4 + 4)?.try_into().ok()?,
        ))
    };
    let magic = word(0)?;
    let effective = magic & 1 != 0;
    let permitted = u64::from(word(1)?) | (u64::from(word(3).unwrap_or(0)) << 32);
    let names: Vec<String> = cap_names(permitted)
        .iter()
        .map(|n| format!("cap_{}", n.to_lowercase()))
        .collect();
    if names.is_empty() {
        return None;
    }
    Some(format!(
        "{}+{}",
        names.join(","),
        if effective { "ep" } else { "p" }
    ))
}

/// Why `which(name)` found nothing.
pub fn not_found(name: &str) -> String {
    let name = crate::text::escape_str(name);
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

/// The hidden argument that makes bkd run the namespace probes in a
/// fresh single-threaded process.
pub const SANDBOX_PROBE_ARG: &str = "__bkd-sandbox-probe";

/// Runs `bkd __bkd-sandbox-probe [UIDSTART UIDCOUNT GIDSTART GIDCOUNT]`
/// and reads its verdicts, one line each: `userns`, `uidmap` (when ranges
/// were given), `sandbox`, followed by `ok` or `fail:` and why.
fn namespace_probe(subids: Option<SubIds>) -> NamespaceProbe {
    let failed = |why: String| NamespaceProbe {
        userns: Err(why.clone()),
        sandbox: Err(why),
        uidmap_works: None,
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return failed(format!("cannot find bkd itself: {e}")),
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.arg(SANDBOX_PROBE_ARG)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(ids) = subids {
        for n in [ids.uid.0, ids.uid.1, ids.gid.0, ids.gid.1] {
            cmd.arg(n.to_string());
        }
    }
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => return failed(format!("cannot run the namespace probe: {e}")),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let verdict = |name: &str| -> Option<Probe> {
        let rest = text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))?;
        Some(match rest.strip_prefix("fail: ") {
            Some(why) => Err(why.to_string()),
            None => Ok(rest.strip_prefix("ok: ").unwrap_or(rest).to_string()),
        })
    };
    let lost = || {
        Err(format!(
            "the namespace probe ended without a verdict ({})",
            out.status
        ))
    };
    NamespaceProbe {
        userns: verdict("userns").unwrap_or_else(lost),
        sandbox: verdict("sandbox").unwrap_or_else(lost),
        uidmap_works: verdict("uidmap"),
    }
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// The probes themselves: must run before any other thread exists. First,
/// given subordinate ranges, newuidmap/newgidmap map them for a child in
/// a new user namespace, as rootlesskit has them do; then the sandbox:
/// a user, mount and pid namespace with the current ids mapped to root,
/// and a fresh procfs mounted in a child inside the new pid namespace, as
/// runc does for a build step. Prints one verdict line per probe.
pub fn run_sandbox_probe() -> i32 {
    let numbers: Vec<u64> = std::env::args()
        .skip(2)
        .filter_map(|a| a.parse().ok())
        .collect();
    if let [us, uc, gs, gc] = numbers[..] {
        match uidmap_probe(SubIds {
            uid: (us, uc),
            gid: (gs, gc),
        }) {
            Ok(how) => println!("uidmap ok: {how}"),
            Err(why) => println!("uidmap fail: {why}"),
        }
    }
    match sandbox_steps() {
        Ok(()) => {
            println!("userns ok: created, own ids mapped");
            println!("sandbox ok: user+mount+pid namespace created, fresh procfs mounted");
        }
        Err(SandboxFailure::Userns(why)) => {
            println!("userns fail: {why}");
            println!("sandbox fail: {why}");
        }
        Err(SandboxFailure::Sandbox(why)) => {
            println!("userns ok: created, own ids mapped");
            println!("sandbox fail: {why}");
        }
    }
    0
}

/// A child in a new user namespace whose maps newuidmap and newgidmap
/// write from outside.
fn uidmap_probe(ids: SubIds) -> Result<String, String> {
    let newuidmap = which("newuidmap").ok_or_else(|| not_found("newuidmap"))?;
    let newgidmap = which("newgidmap").ok_or_else(|| not_found("newgidmap"))?;
    let mut ready = [0i32; 2];
    let mut go = [0i32; 2];
    // SAFETY: plain syscalls on a single-threaded process; the forked
    // child only calls unshare, read, write and _exit.
    unsafe {
        if libc::pipe(ready.as_mut_ptr()) != 0 || libc::pipe(go.as_mut_ptr()) != 0 {
            return Err(format!("cannot create a pipe: {}", errno()));
        }
        let pid = libc::fork();
        if pid < 0 {
            return Err(format!("cannot fork: {}", errno()));
        }
        if pid == 0 {
            let code: u8 = if libc::unshare(libc::CLONE_NEWUSER) == 0 {
                0
            } else {
                u8::try_from(*libc::__errno_location()).unwrap_or(u8::MAX)
            };
            libc::write(ready[1], (&code as *const u8).cast(), 1);
            let mut b = 0u8;
            libc::read(go[0], (&mut b as *mut u8).cast(), 1);
            libc::_exit(0);
        }
        libc::close(ready[1]);
        libc::close(go[0]);
        let mut code = 0u8;
        let got = libc::read(ready[0], (&mut code as *mut u8).cast(), 1);
        let result = if got != 1 {
            Err("the probe child died".to_string())
        } else if code != 0 {
            Err(format!(
                "cannot create a user namespace: {}",
                std::io::Error::from_raw_os_error(i32::from(code))
            ))
        } else {
            let run = |prog: &Path, id: u32, (start, count): (u64, u64)| -> Result<(), String> {
                let out = std::process::Command::new(prog)
                    .args([pid.to_string(), "0".into(), id.to_string(), "1".into()])
                    .args(["1".to_string(), start.to_string(), count.to_string()])
                    .stdin(std::process::Stdio::null())
                    .output()
                    .map_err(|e| format!("cannot run {}: {e}", crate::text::escape_path(prog)))?;
                if out.status.success() {
                    return Ok(());
                }
                let text = String::from_utf8_lossy(&out.stderr);
                let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                Err(if first.is_empty() {
                    format!("{} failed ({})", crate::text::escape_path(prog), out.status)
                } else {
                    crate::text::escape_str(first.trim())
                })
            };
            run(&newuidmap, libc::geteuid(), ids.uid)
                .and_then(|()| run(&newgidmap, libc::getegid(), ids.gid))
                .map(|()| {
                    format!(
                        "mapped {}:{} and {}:{} into a new user namespace",
                        ids.uid.0, ids.uid.1, ids.gid.0, ids.gid.1
                    )
                })
        };
        let b = 1u8;
        libc::write(go[1], (&b as *const u8).cast(), 1);
        libc::close(go[1]);
        libc::close(ready[0]);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        result
    }
}

enum SandboxFailure {
    Userns(String),
    Sandbox(String),
}

fn sandbox_steps() -> Result<(), SandboxFailure> {
    use SandboxFailure::{Sandbox, Userns};
    // SAFETY: plain syscalls on a single-threaded process; the forked child
    // only calls mount and _exit.
    unsafe {
        let uid = libc::geteuid();
        let gid = libc::getegid();
        if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWPID) != 0 {
            return Err(Userns(format!(
                "cannot create a user namespace: {}",
                errno()
            )));
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
                    return Err(Userns(format!(
                        "cannot map ids in a user namespace ({file}): {e}"
                    )));
                }
            }
        }
        let pid = libc::fork();
        if pid < 0 {
            return Err(Sandbox(format!(
                "cannot fork into the new pid namespace: {}",
                errno()
            )));
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
            return Err(Sandbox(format!("lost the probe child: {}", errno())));
        }
        match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
            Some(0) => Ok(()),
            Some(20) => Err(Sandbox(
                "cannot make mounts private in a new mount namespace".into(),
            )),
            Some(21) => Err(Sandbox(
                "mounting a fresh procfs in a new user namespace is not permitted \
                 (/proc is masked, as in a Kubernetes pod without procMount: Unmasked)"
                    .into(),
            )),
            _ => Err(Sandbox(
                "mounting a fresh procfs in a new user namespace failed".into(),
            )),
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
            userns: Ok("ok".into()),
            sandbox: Ok("ok".into()),
            uidmap: Ok("ok".into()),
            uidmap_works: Some(Ok("ok".into())),
            uidmap_setuid: false,
            pod: PodView::default(),
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

    /// A host whose namespace probe fails, counting how often it runs.
    struct CountingHost {
        uid: u32,
        namespace_probes: std::cell::Cell<u32>,
    }

    impl Host for CountingHost {
        fn uid(&self) -> u32 {
            self.uid
        }
        fn user(&self) -> String {
            "someone".into()
        }
        fn cap_sys_admin(&self) -> bool {
            self.uid == 0
        }
        fn namespaces(&self, _: Option<SubIds>) -> NamespaceProbe {
            self.namespace_probes.set(self.namespace_probes.get() + 1);
            NamespaceProbe {
                userns: Err("blocked".into()),
                sandbox: Err("blocked".into()),
                uidmap_works: None,
            }
        }
        fn uidmap(&self) -> (Probe, bool) {
            (Ok("ok".into()), false)
        }
        fn subids(&self, _: &str, _: u32) -> Result<(String, SubIds), String> {
            Ok((
                "ok".into(),
                SubIds {
                    uid: (100000, 65536),
                    gid: (100000, 65536),
                },
            ))
        }
        fn binary(&self, name: &str) -> Probe {
            Ok(format!("/usr/bin/{name}"))
        }
        fn pod_view(&self) -> PodView {
            PodView::default()
        }
    }

    #[test]
    fn starting_as_root_skips_the_namespace_probe_and_decides_the_same() {
        let host = |uid| CountingHost {
            uid,
            namespace_probes: std::cell::Cell::new(0),
        };
        let requests = [
            ModeRequest::Auto,
            ModeRequest::Privileged,
            ModeRequest::Rootless,
            ModeRequest::RootlessStrict,
        ];
        let (full_host, start_host) = (host(0), host(0));
        let full = Probes::gather(&full_host, "buildkitd", "rootlesskit");
        let start = Probes::gather_to_start(&start_host, "buildkitd", "rootlesskit");
        assert_eq!(full_host.namespace_probes.get(), 1);
        assert_eq!(start_host.namespace_probes.get(), 0);
        for r in requests {
            assert_eq!(decide(r, &start), decide(r, &full), "{r:?}");
        }
        // A non-root user's mode depends on namespaces: always probed.
        let (full_host, start_host) = (host(1000), host(1000));
        let full = Probes::gather(&full_host, "buildkitd", "rootlesskit");
        let start = Probes::gather_to_start(&start_host, "buildkitd", "rootlesskit");
        assert_eq!(start_host.namespace_probes.get(), 1);
        for r in requests {
            assert_eq!(decide(r, &start), decide(r, &full), "{r:?}");
        }
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
    fn no_user_namespace_refuses_rootless_with_the_cause_the_pod_shows() {
        let mut p = probes(1000);
        p.userns = Err("cannot create a user namespace: Operation not permitted".into());
        p.pod.seccomp = Some(2);
        for req in [
            ModeRequest::Auto,
            ModeRequest::Rootless,
            ModeRequest::RootlessStrict,
        ] {
            let e = decide(req, &p).expect_err("must refuse");
            assert!(
                e.contains("seccomp profile forbids") && e.contains(FIX_SECCOMP),
                "{e}"
            );
        }
        p.pod.max_user_namespaces = Some(0);
        let e = decide(ModeRequest::Auto, &p).expect_err("must refuse");
        assert!(e.contains("user.max_user_namespaces = 0"), "{e}");
        p.pod = PodView {
            apparmor: Some("cri-containerd.apparmor.d (enforce)".into()),
            ..PodView::default()
        };
        let e = decide(ModeRequest::Auto, &p).expect_err("must refuse");
        assert!(e.contains(FIX_APPARMOR), "{e}");
        p.pod = PodView::default();
        let e = decide(ModeRequest::Auto, &p).expect_err("must refuse");
        assert!(e.contains("none can be created"), "{e}");
        // Root never needs one.
        let mut root = probes(0);
        root.userns = p.userns.clone();
        assert_eq!(
            decide(ModeRequest::Auto, &root).map(|d| d.mode),
            Ok(Mode::Privileged)
        );
    }

    #[test]
    fn failing_newuidmap_is_explained_by_what_the_pod_shows() {
        let mut p = probes(1000);
        p.uidmap_works = Some(Err(
            "newuidmap: write to uid_map failed: Operation not permitted".into(),
        ));
        p.uidmap_setuid = true;
        let e = decide(ModeRequest::Auto, &p).expect_err("must refuse");
        assert!(
            e.contains("setuid-root newuidmap") && e.contains(FIX_UIDMAP_CAPS),
            "{e}"
        );
        p.pod.no_new_privs = true;
        let e = decide(ModeRequest::Auto, &p).expect_err("must refuse");
        assert!(e.contains(FIX_NO_NEW_PRIVS), "{e}");
        p.pod.no_new_privs = false;
        p.pod.uid_map = Some("0 3000000 65536".into());
        let e = decide(ModeRequest::Rootless, &p).expect_err("must refuse");
        assert!(
            e.contains("hostUsers: false") && e.contains("user:1001:64535"),
            "{e}"
        );
        // Not tried (root, or the probe skipped): no refusal on its account.
        p.uidmap_works = None;
        assert!(decide(ModeRequest::Auto, &p).is_ok());
    }

    #[test]
    fn file_capabilities_decode_as_setcap_writes_them() {
        let v2 = |magic: u32, lo: u32| -> Vec<u8> {
            [magic, lo, 0, 0, 0]
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .collect()
        };
        assert_eq!(
            decode_file_caps(&v2(0x0200_0001, 1 << 7)).as_deref(),
            Some("cap_setuid+ep")
        );
        assert_eq!(
            decode_file_caps(&v2(0x0200_0000, (1 << 6) | (1 << 7))).as_deref(),
            Some("cap_setgid,cap_setuid+p")
        );
        // Revision 3 carries the namespace's root id after the same words.
        let mut v3 = v2(0x0300_0001, 1 << 6);
        v3.extend(1000u32.to_le_bytes());
        assert_eq!(decode_file_caps(&v3).as_deref(), Some("cap_setgid+ep"));
        assert_eq!(decode_file_caps(&v2(0x0200_0001, 0)), None);
        assert_eq!(decode_file_caps(&[1, 2]), None);
    }

    #[test]
    fn capability_names_follow_the_kernels_numbering() {
        assert_eq!(cap_names(1 << 21), vec!["SYS_ADMIN"]);
        assert_eq!(cap_names((1 << 6) | (1 << 7)), vec!["SETGID", "SETUID"]);
        let default: u64 = CONTAINERD_DEFAULT_CAPS
            .iter()
            .map(|n| 1u64 << CAP_NAMES.iter().position(|c| c == n).expect("known"))
            .sum();
        assert_eq!(default, 0xa80425fb, "containerd's default set");
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
