//! bkd in its habitat: its own images (scripts/image.sh) run under runc
//! with the configs Kubernetes would give the seed's three pod specs and
//! the variants users meet. In each, `bkd doctor` names the mode and why,
//! and the seed's two commands (`buildctl-daemonless.sh build ...` as the
//! recipes write it, `bkd build --target production --push -t ...`) either
//! build and push to the test registry, or fail with one line naming the
//! cause and the securityContext fix. Nothing may be left running or
//! mounted on the host afterwards (checked by the harness).

#[path = "../common/mod.rs"]
mod common;
#[path = "../common/pod.rs"]
mod pod;

use std::time::Duration;

use pod::{PodRun, PodSpec};

const POD_TIMEOUT: Duration = Duration::from_secs(420);

/// The seed's Dockerfile shape: a base stage and a `production` target
/// whose RUN step goes through the build container's sandbox.
fn workspace(owner: (u32, u32)) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("bkd-pod-ws-")
        .tempdir_in("/var/tmp")
        .expect("workspace");
    std::fs::copy("/bin/busybox", dir.path().join("busybox")).expect("copy busybox");
    let nonce = common::nonce();
    common::write(
        dir.path(),
        "Dockerfile",
        &format!(
            "{}FROM bb AS production\nRUN echo built-{nonce} > /built && grep -E '^(Uid|NoNewPrivs)' /proc/self/status\n",
            common::BUSYBOX_STAGE
        ),
    );
    let q = dir.path().display();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "chmod -R a+rX {q} && chown -R {}:{} {q}",
            owner.0, owner.1
        ))
        .status()
        .expect("chown workspace");
    assert!(out.success());
    dir
}

/// The step's commands: doctor, the seed's script command unchanged, then
/// bkd's own build and push.
fn seed_script(tag: &str) -> String {
    let registry = &common::bed().registry;
    format!(
        "exec 2>&1\n\
         echo '== doctor'; bkd doctor; echo \"doctor-exit=$?\"\n\
         echo '== script'\n\
         buildctl-daemonless.sh build \\\n  --frontend dockerfile.v0 \\\n  --local context=. \\\n  --local dockerfile=. \\\n  --opt filename=Dockerfile \\\n  --progress=plain\n\
         echo \"script-exit=$?\"\n\
         echo '== bkd'; bkd build --target production --push -t {registry}/app:{tag} .; echo \"bkd-exit=$?\"\n\
         echo '== end'\n"
    )
}

fn run_seed(spec: &PodSpec, owner: (u32, u32)) -> PodRun {
    let ws = workspace(owner);
    pod::run_pod(spec, ws.path(), &seed_script(&spec.name), POD_TIMEOUT)
}

fn pushed(tag: &str) -> bool {
    let (status, _) = common::manifest(&common::bed().registry, "app", tag);
    status.contains(" 200")
}

/// Asserts a seed pod that must build: doctor names `mode` and `why`,
/// both commands succeed and the image reached the registry.
fn assert_builds(run: &PodRun, mode: &str, why: &str) {
    let doctor = run.section("doctor");
    let expected = format!("would run buildkitd in {mode} mode: ");
    let mode_line = doctor
        .lines()
        .find(|l| l.starts_with("mode: "))
        .unwrap_or_default();
    assert!(
        mode_line.contains(&expected) && mode_line.contains(why),
        "doctor must say `{expected}` because `{why}`\n{}",
        run.explain()
    );
    assert_eq!(run.exit_of("doctor"), Some(0), "{}", run.explain());
    assert_eq!(run.exit_of("script"), Some(0), "{}", run.explain());
    assert_eq!(run.exit_of("bkd"), Some(0), "{}", run.explain());
    assert!(
        run.section("bkd").contains("built-") || run.section("bkd").contains("pushed"),
        "{}",
        run.explain()
    );
    assert!(
        pushed(&run.spec),
        "app:{} not in the registry\n{}",
        run.spec,
        run.explain()
    );
}

#[test]
fn privileged_pod_builds_and_pushes() {
    let spec = PodSpec::privileged();
    let run = run_seed(&spec, (0, 0));
    assert_builds(&run, "privileged", "running as root with CAP_SYS_ADMIN");
}

#[test]
fn rootless_pod_falls_back_to_strict_under_masked_proc_and_builds() {
    let spec = PodSpec::rootless();
    let run = run_seed(&spec, (1000, 1000));
    assert_builds(&run, "rootless-strict", "/proc is masked");
    // The fallback is announced once per command, never silent.
    for section in ["script", "bkd"] {
        assert!(
            run.section(section)
                .contains("warning: the process sandbox cannot work here"),
            "{section}: no downgrade warning\n{}",
            run.explain()
        );
    }
}

#[test]
fn rootless_strict_pod_builds_and_pushes() {
    let spec = PodSpec::rootless_strict();
    let run = run_seed(&spec, (1000, 1000));
    assert_builds(&run, "rootless-strict", "--oci-worker-no-process-sandbox");
    assert!(
        !run.output
            .contains("warning: the process sandbox cannot work here"),
        "asked-for strict mode must not warn\n{}",
        run.explain()
    );
}

/// Asserts a pod in which no build can run: doctor says so with the fix,
/// and both commands end with one `error:` line naming the cause and the
/// fix, before any daemon starts (exit 3), with nothing pushed.
fn assert_refused(run: &PodRun, cause: &str, fix: &str) {
    let doctor = run.section("doctor");
    assert!(
        doctor.contains("mode: none can run here") && doctor.contains(cause),
        "doctor must name `{cause}`\n{}",
        run.explain()
    );
    assert_ne!(run.exit_of("doctor"), Some(0), "{}", run.explain());
    for section in ["script", "bkd"] {
        let text = run.section(section);
        let exit_line = format!("{section}-exit=");
        let last = text
            .lines()
            .rfind(|l| !l.starts_with(&exit_line))
            .unwrap_or_default();
        assert!(
            last.starts_with("error: ") && last.contains(cause) && last.contains(fix),
            "{section}: the last line must be one error naming `{cause}` and `{fix}`\n{}",
            run.explain()
        );
        assert_eq!(
            text.lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "{}",
            run.explain()
        );
        assert_eq!(run.exit_of(section), Some(3), "{}", run.explain());
    }
    assert!(!pushed(&run.spec), "{}", run.explain());
}

#[test]
fn runtime_default_seccomp_is_refused_with_the_seccomp_fix() {
    let mut spec = PodSpec::rootless();
    spec.name = "seccomp-runtime-default".into();
    spec.seccomp = pod::Seccomp::RuntimeDefault;
    let run = run_seed(&spec, (1000, 1000));
    assert_refused(
        &run,
        "seccomp profile forbids creating user namespaces",
        "securityContext.seccompProfile.type: Unconfined",
    );
    assert!(
        run.section("doctor")
            .contains("[info] seccomp                   filter"),
        "{}",
        run.explain()
    );
}

#[test]
fn setuid_newuidmap_is_refused_with_the_file_capabilities_fix() {
    let mut spec = PodSpec::rootless();
    spec.name = "setuid-newuidmap".into();
    spec.setuid_uidmap = true;
    let run = run_seed(&spec, (1000, 1000));
    assert_refused(
        &run,
        "a setuid-root newuidmap cannot write uid_map in a container without CAP_SYS_ADMIN",
        "setcap cap_setuid+ep /usr/bin/newuidmap",
    );
    assert!(
        run.section("doctor").contains("newuidmap works")
            && run.section("doctor").contains("write to uid_map failed"),
        "{}",
        run.explain()
    );
}

#[test]
fn state_dir_on_the_containers_overlayfs_builds_with_the_native_snapshotter_warning() {
    let mut spec = PodSpec::rootless();
    spec.name = "state-on-overlay".into();
    spec.volumes
        .retain(|v| v.mount_path != "/home/user/.local/share/buildkit");
    let run = run_seed(&spec, (1000, 1000));
    assert_builds(&run, "rootless-strict", "/proc is masked");
    let doctor = run.section("doctor");
    assert!(
        doctor.contains("[warn] state dir")
            && doctor.contains("overlayfs")
            && doctor.contains("native snapshotter"),
        "{}",
        run.explain()
    );
}

#[test]
fn workspace_owned_by_another_user_builds() {
    let mut spec = PodSpec::rootless();
    spec.name = "workspace-other-owner".into();
    let run = run_seed(&spec, (2000, 2000));
    assert_builds(&run, "rootless-strict", "/proc is masked");
}

#[test]
fn buildkit_host_from_the_base_image_is_noted_and_bkd_builds_daemonless() {
    let mut spec = PodSpec::rootless();
    spec.name = "inherited-buildkit-host".into();
    spec.env.push((
        "BUILDKIT_HOST".into(),
        "unix:///run/user/1000/buildkit/buildkitd.sock".into(),
    ));
    let run = run_seed(&spec, (1000, 1000));
    assert_builds(&run, "rootless-strict", "/proc is masked");
    assert!(
        run.section("doctor").contains("[warn] address")
            && run.section("doctor").contains("nothing listens"),
        "{}",
        run.explain()
    );
    assert!(
        run.section("bkd").contains(
            "nothing listens at BUILDKIT_HOST=unix:///run/user/1000/buildkit/buildkitd.sock"
        ),
        "{}",
        run.explain()
    );
}

#[test]
fn proc_unmasked_with_host_users_false_keeps_the_sandbox_once_subids_fit() {
    // As the images ship: the subordinate ids (100000:65536) lie outside
    // the 65536 ids a hostUsers: false pod maps.
    let mut spec = PodSpec::rootless();
    spec.name = "proc-unmasked".into();
    spec.proc_unmasked = true;
    spec.host_users = false;
    let run = run_seed(&spec, (1000, 1000));
    assert_refused(
        &run,
        "must lie inside the ids it maps",
        "user:1001:64535 in /etc/subuid and /etc/subgid",
    );
    assert!(
        run.section("doctor")
            .contains("(a user namespace: hostUsers: false)"),
        "{}",
        run.explain()
    );
    // With the fix applied to the image: the sandbox works, no downgrade.
    spec.name = "proc-unmasked-fixed".into();
    spec.image_edit =
        Some("echo user:1001:64535 > etc/subuid && echo user:1001:64535 > etc/subgid".into());
    let run = run_seed(&spec, (1000, 1000));
    assert_builds(&run, "rootless", "user namespaces and a fresh procfs work");
    assert!(
        !run.output
            .contains("warning: the process sandbox cannot work here"),
        "{}",
        run.explain()
    );
}
