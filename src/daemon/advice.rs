//! Known buildkitd and runc failures, recognised in the daemon log or a
//! build error, mapped to what went wrong and how to fix the pod spec.

/// What a recognised failure means and what to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advice {
    /// Stable name, used by tests and `--debug`.
    pub id: &'static str,
    /// One sentence: the likely cause.
    pub cause: &'static str,
    /// The fix, as a Kubernetes pod-spec change where there is one.
    pub fix: &'static str,
}

impl Advice {
    /// The cause and the fix as lines for stderr.
    pub fn render(&self) -> String {
        format!("likely cause: {}\nfix: {}", self.cause, self.fix)
    }
}

/// The procfs mount refused inside the process sandbox.
pub const PROCFS_MOUNT: Advice = Advice {
    id: "procfs-mount",
    cause: "the build container cannot mount a fresh /proc: this pod's /proc is masked \
            (Kubernetes without procMount: Unmasked), so buildkitd's process sandbox cannot work",
    fix: "run with --mode auto or --mode rootless-strict (adds --oci-worker-no-process-sandbox; \
          build steps can then see and signal other processes in the builder), or keep the \
          sandbox with securityContext.procMount: Unmasked and spec.hostUsers: false",
};

/// Another buildkitd holds the state directory's lock.
pub const STATE_DIR_LOCKED: Advice = Advice {
    id: "state-dir-locked",
    cause: "another buildkitd already uses this state directory",
    fix: "pass --root DIR for a separate state directory, or --addr to build on the \
          running daemon",
};

const KNOWN: &[(&[&str], Advice)] = &[
    (
        &["failed to share mount point", "permission denied"],
        Advice {
            id: "apparmor",
            cause: "AppArmor blocks the mount propagation rootlesskit needs",
            fix: "set securityContext.appArmorProfile.type: Unconfined on the container \
                  (Kubernetes >= 1.30; older: the container.apparmor.security.beta.kubernetes.io \
                  annotation set to unconfined)",
        },
    ),
    (
        &["fork/exec /proc/self/exe", "operation not permitted"],
        Advice {
            id: "seccomp",
            cause: "the seccomp profile forbids creating user namespaces, so rootlesskit \
                    cannot start its child",
            fix: "set securityContext.seccompProfile.type: Unconfined on the container",
        },
    ),
    (
        &["max_user_namespaces needs to be set to non-zero"],
        Advice {
            id: "max-user-namespaces",
            cause: "user namespaces are disabled on this node (user.max_user_namespaces = 0)",
            fix: "on the node: sysctl -w user.max_user_namespaces=28633, or run the privileged \
                  mode (securityContext.privileged: true, as root)",
        },
    ),
    (
        &["mount proc:/proc", "operation not permitted"],
        PROCFS_MOUNT,
    ),
    (
        &[
            "error mounting \"proc\" to rootfs",
            "operation not permitted",
        ],
        PROCFS_MOUNT,
    ),
    (
        &["can't enable NoProcessSandbox without Rootless"],
        Advice {
            id: "no-sandbox-needs-rootless",
            cause: "--oci-worker-no-process-sandbox was given to a buildkitd running as real root",
            fix: "drop --oci-worker-no-process-sandbox from BUILDKITD_FLAGS in privileged mode, \
                  or run as a non-root user (runAsUser: 1000) with --mode rootless-strict",
        },
    ),
    (
        &["could not lock", "another instance running"],
        STATE_DIR_LOCKED,
    ),
    (
        &["rootless mode requires to be executed as the mapped root"],
        Advice {
            id: "rootless-without-rootlesskit",
            cause: "buildkitd was started as a non-root user outside a user namespace",
            fix: "use --mode rootless (bkd starts it through rootlesskit)",
        },
    ),
    (
        &["server gave HTTP response to HTTPS client"],
        Advice {
            id: "plain-http-registry",
            cause: "the registry speaks plain HTTP and buildkitd only uses HTTPS for it",
            fix: "pass --insecure-registry HOST:PORT (bkd writes the daemon's buildkitd.toml), \
                  or give the registry TLS",
        },
    ),
    (
        &["flag provided but not defined"],
        Advice {
            id: "unknown-daemon-flag",
            cause: "buildkitd does not know a flag given in BUILDKITD_FLAGS or --buildkitd-flag",
            fix: "check the flag against `buildkitd --help` for this buildkitd version",
        },
    ),
    (
        &["write to uid_map failed", "not permitted"],
        Advice {
            id: "newuidmap-denied",
            cause: "newuidmap could not write the user namespace's uid_map: it is setuid root in \
                    a container without CAP_SYS_ADMIN, or no_new_privs is set \
                    (allowPrivilegeEscalation: false), or the subordinate ids lie outside a \
                    hostUsers: false pod's ids (bkd doctor shows which)",
            fix: "give newuidmap/newgidmap file capabilities in the image (chmod u-s, then \
                  setcap cap_setuid+ep /usr/bin/newuidmap and cap_setgid+ep \
                  /usr/bin/newgidmap), leave allowPrivilegeEscalation unset or true, and keep \
                  /etc/subuid and /etc/subgid inside the pod's ids",
        },
    ),
    (
        &["newuidmap", "executable file not found"],
        Advice {
            id: "no-newuidmap",
            cause: "newuidmap/newgidmap are missing, so rootlesskit cannot map the subordinate ids",
            fix:
                "install the uidmap package (Debian/Ubuntu) or shadow-uidmap (Alpine) in the image",
        },
    ),
    (
        &["could not find", "subuid"],
        Advice {
            id: "no-subuid",
            cause: "this user has no subordinate id range in /etc/subuid or /etc/subgid",
            fix: "add a line USER:100000:65536 to /etc/subuid and /etc/subgid in the image",
        },
    ),
];

/// The first known failure whose every fragment occurs in one line of
/// `text`, checked line by line so unrelated lines do not combine.
pub fn classify(text: &str) -> Option<Advice> {
    text.lines().find_map(|line| {
        KNOWN
            .iter()
            .find(|(fragments, _)| fragments.iter().all(|f| line.contains(f)))
            .map(|(_, advice)| *advice)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_known_failures() {
        let cases = [
            (
                "[rootlesskit:child ] error: failed to share mount point: /: permission denied",
                "apparmor",
            ),
            (
                "[rootlesskit:parent] error: failed to start the child: fork/exec /proc/self/exe: operation not permitted",
                "seccomp",
            ),
            (
                "[rootlesskit:parent] error: failed to start the child: fork/exec /proc/self/exe: no space left on device (max_user_namespaces needs to be set to non-zero)",
                "max-user-namespaces",
            ),
            (
                "runc run failed: unable to start container process: error during container init: error mounting \"proc\" to rootfs at \"/proc\": mount proc:/proc (via /proc/self/fd/6), flags: 0xe: operation not permitted",
                "procfs-mount",
            ),
            (
                "container_linux.go:367: starting container process caused: process_linux.go:495: container init caused: rootfs_linux.go:60: mounting \"proc\" to rootfs at \"/proc\" caused: mount proc:/proc, flags: 0xe: operation not permitted",
                "procfs-mount",
            ),
            (
                "[rootlesskit:parent] error: failed to setup UID/GID map: newuidmap 41 [0 1000 1 1 100000 65536] failed: newuidmap: write to uid_map failed: Operation not permitted\n: exit status 1",
                "newuidmap-denied",
            ),
            (
                "buildkitd: can't enable NoProcessSandbox without Rootless",
                "no-sandbox-needs-rootless",
            ),
            (
                "buildkitd: could not lock /var/lib/buildkit/buildkitd.lock, another instance running?",
                "state-dir-locked",
            ),
            (
                "failed to solve: failed to push 192.0.2.2:5999/x:1: failed to do request: Head \"https://192.0.2.2:5999/v2/x/blobs/sha256:56\": http: server gave HTTP response to HTTPS client",
                "plain-http-registry",
            ),
        ];
        for (text, id) in cases {
            let got = classify(&format!("time=x level=info msg=start\n{text}\n"));
            assert_eq!(got.map(|a| a.id), Some(id), "{text}");
        }
    }

    #[test]
    fn fragments_must_share_a_line() {
        assert_eq!(
            classify("mount proc:/proc was fine\nlater: operation not permitted"),
            None
        );
        assert_eq!(classify("permission denied"), None);
        assert_eq!(classify(""), None);
    }

    #[test]
    fn seccomp_and_userns_limit_are_told_apart() {
        // The userns limit text also contains fork/exec; it must win.
        let text = "fork/exec /proc/self/exe: no space left on device (max_user_namespaces needs to be set to non-zero)";
        assert_eq!(classify(text).map(|a| a.id), Some("max-user-namespaces"));
    }
}
