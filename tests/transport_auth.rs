//! Reaching the daemon over TCP with mutual TLS, and registry credentials
//! served from the Docker config (plain entries and credential helpers).

mod common;

use std::os::unix::fs::PermissionsExt;

use base64::Engine;
use common::*;

fn tls_args(bed: &TestBed) -> Vec<String> {
    let f = |n: &str| bed.tls_dir.join(n).display().to_string();
    vec![
        "--addr".into(),
        bed.tls_addr.clone(),
        "--tlscacert".into(),
        f("ca.pem"),
        "--tlscert".into(),
        f("client.pem"),
        "--tlskey".into(),
        f("client-key.pem"),
    ]
}

#[test]
fn tcp_with_mutual_tls_runs_a_build() {
    let bed = bed();
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM scratch\nCOPY busybox /bin/busybox\n",
    );
    let dest = ctx.path().join("out.tar");
    let mut args: Vec<String> = vec!["build".into()];
    args.extend(tls_args(bed));
    args.extend(["-o".into(), tar_output(&dest), ".".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(env!("CARGO_BIN_EXE_bkd"), &args, ctx.path(), &[]).assert_ok();
    let listing = tar_listing(&dest);
    assert!(
        listing.iter().any(|e| e.path == "bin/busybox"),
        "{listing:?}"
    );
}

#[test]
fn tls_without_client_certificate_is_refused_clearly() {
    let bed = bed();
    let dir = tempfile::tempdir().expect("dir");
    let ca = bed.tls_dir.join("ca.pem").display().to_string();
    let r = run(
        env!("CARGO_BIN_EXE_bkd"),
        &[
            "debug",
            "workers",
            "--addr",
            &bed.tls_addr,
            "--tlscacert",
            &ca,
        ],
        dir.path(),
        &[],
    );
    assert_ne!(r.code(), Some(0), "{}", r.explain());
    assert!(
        r.stderr().contains(&bed.tls_addr.replace("tcp://", ""))
            || r.stderr().contains(&bed.tls_addr),
        "{}",
        r.explain()
    );
    assert_eq!(r.stderr().lines().count(), 1, "{}", r.explain());
}

fn auth_config(dir: &std::path::Path, json: &str) {
    std::fs::write(dir.join("config.json"), json).expect("config.json");
}

fn push(
    bed: &TestBed,
    repo: &str,
    docker_config: &std::path::Path,
    extra_env: &[(&str, &str)],
) -> Run {
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        &format!("FROM scratch\nCOPY busybox /bin/busybox\nLABEL repo={repo}\n"),
    );
    let image = format!("{}/{repo}:1", bed.auth_registry);
    let mut env = vec![("DOCKER_CONFIG", docker_config.to_str().expect("utf8"))];
    env.extend_from_slice(extra_env);
    bkd_env(
        &[
            "build",
            "--debug",
            "-o",
            &format!("type=image,name={image},push=true,registry.insecure=true"),
            ".",
        ],
        ctx.path(),
        &env,
    )
}

#[test]
fn push_uses_credentials_from_docker_config_and_never_prints_them() {
    let bed = bed();
    let cfg = tempfile::tempdir().expect("config dir");
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{AUTH_USER}:{AUTH_PASSWORD}"));
    auth_config(
        cfg.path(),
        &format!(
            r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#,
            bed.auth_registry
        ),
    );
    let r = push(bed, "with-auth", cfg.path(), &[]);
    r.assert_ok();
    let all = format!("{}{}", r.stdout(), r.stderr());
    assert!(
        !all.contains(AUTH_PASSWORD),
        "password leaked\n{}",
        r.explain()
    );
    assert!(
        !all.contains(&auth),
        "encoded credentials leaked\n{}",
        r.explain()
    );
}

#[test]
fn push_without_credentials_fails_naming_the_registry() {
    let bed = bed();
    let cfg = tempfile::tempdir().expect("empty config dir");
    let r = push(bed, "no-auth", cfg.path(), &[]);
    assert_eq!(r.code(), Some(1), "{}", r.explain());
    let last = r.stderr().lines().last().unwrap_or_default().to_string();
    assert!(last.starts_with("error: "), "{}", r.explain());
    assert!(last.contains(&bed.auth_registry), "{}", r.explain());
    assert!(
        last.contains("401") || last.to_lowercase().contains("unauthorized"),
        "{}",
        r.explain()
    );
}

#[test]
fn push_uses_a_credential_helper() {
    let bed = bed();
    let cfg = tempfile::tempdir().expect("config dir");
    let bin = tempfile::tempdir().expect("bin dir");
    let helper = bin.path().join("docker-credential-bkdtest");
    let asked = bin.path().join("asked");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread server\necho \"$1 $server\" >> {}\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{AUTH_USER}\",\"Secret\":\"{AUTH_PASSWORD}\"}}' \"$server\"\n",
            asked.display()
        ),
    )
    .expect("helper");
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    auth_config(
        cfg.path(),
        &format!(r#"{{"credHelpers":{{"{}":"bkdtest"}}}}"#, bed.auth_registry),
    );
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let r = push(bed, "with-helper", cfg.path(), &[("PATH", &path)]);
    r.assert_ok();
    let asked = std::fs::read_to_string(&asked).expect("helper was called");
    assert!(
        asked.contains(&format!("get {}", bed.auth_registry)),
        "{asked}"
    );
    assert!(
        !format!("{}{}", r.stdout(), r.stderr()).contains(AUTH_PASSWORD),
        "{}",
        r.explain()
    );
}
