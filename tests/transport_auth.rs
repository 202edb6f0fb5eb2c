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
    // A basic-auth registry gets the password through the daemon, said
    // once, as buildctl says it on the same daemon.
    let line = format!("[auth] sharing credentials for {}", bed.auth_registry);
    assert_eq!(r.stderr().matches(&line).count(), 1, "{}", r.explain());
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM scratch\nCOPY busybox /bin/busybox\n",
    );
    let output = format!(
        "type=image,name={}/with-auth:buildctl,push=true,registry.insecure=true",
        bed.auth_registry
    );
    let mut args = vec!["--addr", &bed.addr, "build"];
    args.extend_from_slice(&DOCKERFILE_HERE);
    args.extend_from_slice(&["--progress", "plain", "--output", &output]);
    let config = cfg.path().to_str().expect("utf8");
    let b = run("buildctl", &args, ctx.path(), &[("DOCKER_CONFIG", config)]);
    b.assert_ok();
    assert_eq!(b.stderr().matches(&line).count(), 1, "{}", b.explain());
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

/// The session's auth service driven as a daemon would drive it, against
/// a registry behind token auth: the daemon gets a token authority and
/// tokens, never the password, and cannot borrow another client's key.
#[test]
fn a_hostile_daemon_gets_tokens_never_the_password() {
    use bkd::proto::moby::filesync::v1::auth_server::Auth;
    use bkd::proto::moby::filesync::v1::{
        FetchTokenRequest, GetTokenAuthorityRequest, VerifyTokenAuthorityRequest,
    };
    use common::token_registry::*;
    let reg = TokenRegistry::start();
    let cfg = tempfile::tempdir().expect("config dir");
    reg.docker_config(cfg.path());
    let config = std::sync::Arc::new(
        bkd::session::auth::DockerConfig::load(Some(&cfg.path().join("config.json")))
            .expect("config"),
    );
    let (progress, mut steps) = tokio::sync::mpsc::unbounded_channel();
    let svc = bkd::session::auth::AuthService::new(config.clone(), Some(progress));
    let other_client = bkd::session::auth::AuthService::new(config, None);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let salt = vec![7u8; 32];
    let payload = b"prove-you-hold-the-key-0123456789".to_vec();
    let scopes = vec!["repository:app:pull,push".to_string()];
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{TOKEN_USER}:{TOKEN_PASSWORD}"));
    rt.block_on(async {
        let request = || {
            tonic::Request::new(GetTokenAuthorityRequest {
                host: reg.addr.clone(),
                salt: salt.clone().into(),
            })
        };
        let key = svc
            .get_token_authority(request())
            .await
            .expect("authority")
            .into_inner()
            .public_key;
        assert_eq!(key.len(), 32, "an ed25519 public key");
        let other = other_client
            .get_token_authority(request())
            .await
            .expect("authority");
        assert_ne!(other.into_inner().public_key, key, "another client's key");

        let signed = svc
            .verify_token_authority(tonic::Request::new(VerifyTokenAuthorityRequest {
                host: reg.addr.clone(),
                salt: salt.clone().into(),
                payload: payload.clone().into(),
            }))
            .await
            .expect("verify")
            .into_inner()
            .signed;
        assert_eq!(&signed[64..], &payload[..], "signature, then the payload");
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &key[..])
            .verify(&payload, &signed[..64])
            .expect("signed with the authority's key");

        let token = svc
            .fetch_token(tonic::Request::new(FetchTokenRequest {
                client_id: "buildkit-client".into(),
                host: reg.addr.clone(),
                realm: reg.realm.clone(),
                service: "bkd-test-registry".into(),
                scopes: scopes.clone(),
            }))
            .await
            .expect("token")
            .into_inner();
        assert!(
            token.token.split('.').count() == 3,
            "a JWT: {}",
            token.token
        );
        assert_eq!(token.expires_in, 300);
        let answered = format!("{token:?}");
        assert!(!answered.contains(TOKEN_PASSWORD) && !answered.contains(&encoded));
    });
    let seen = reg.seen();
    assert!(
        seen.iter()
            .any(|r| r.carried_password && r.user_agent.starts_with("bkd/")),
        "bkd fetched the token with the password: {seen:?}"
    );
    let step = steps.try_recv().expect("an [auth] step");
    assert_eq!(
        step.vertexes[0].name,
        format!("[auth] app:pull,push token for {}", reg.addr)
    );
}

/// A push to a registry behind token auth, through a real daemon, by bkd
/// and by buildctl on the same daemon: the token server sees the password
/// only from the client's process, never from buildkitd's, and both print
/// the same `[auth]` line.
#[test]
fn a_push_to_a_token_registry_keeps_the_password_out_of_the_daemon() {
    use common::token_registry::*;
    let reg = TokenRegistry::start();
    let daemon = PrivateDaemon::start_with_config(&format!(
        "[registry.\"{0}\"]\n  http = true\n  insecure = true\n",
        reg.addr
    ));
    let cfg = tempfile::tempdir().expect("config dir");
    reg.docker_config(cfg.path());
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        &format!(
            "FROM scratch\nCOPY busybox /bin/busybox\nLABEL n={}\n",
            nonce()
        ),
    );
    let env = [("DOCKER_CONFIG", cfg.path().to_str().expect("utf8"))];
    let output = format!("type=image,name={}/app:1,push=true", reg.addr);
    let r = run(
        env!("CARGO_BIN_EXE_bkd"),
        &[
            "build",
            "--addr",
            &daemon.addr,
            "--progress",
            "plain",
            "-o",
            &output,
            ".",
        ],
        ctx.path(),
        &env,
    );
    assert!(r.out.status.success(), "{}\n{}", r.explain(), reg.log());
    let by_bkd = reg.seen();
    reg.clear();
    let b = run(
        "buildctl",
        &[
            "--addr",
            &daemon.addr,
            "build",
            "--frontend",
            "dockerfile.v0",
            "--local",
            "context=.",
            "--local",
            "dockerfile=.",
            "--progress",
            "plain",
            "--output",
            &output.replace("app:1", "app:2"),
        ],
        ctx.path(),
        &env,
    );
    assert!(b.out.status.success(), "{}", b.explain());
    let by_buildctl = reg.seen();
    for (client, seen) in [("bkd", &by_bkd), ("buildctl", &by_buildctl)] {
        let from_daemon: Vec<_> = seen
            .iter()
            .filter(|r| r.carried_password && r.process != client)
            .collect();
        assert!(
            from_daemon.is_empty(),
            "{client}: another process (the daemon) had the password: {seen:?}"
        );
        assert!(
            seen.iter().any(|r| r.carried_password && r.status == 200),
            "{client}: no token fetched with the password: {seen:?}"
        );
    }
    let auth_line = |text: &str| {
        text.lines()
            .find_map(|l| l.split_once(" [auth] ").map(|(_, rest)| rest.to_string()))
    };
    let ours = auth_line(&r.stderr());
    assert!(
        ours.as_deref()
            .is_some_and(|l| l.ends_with(&format!("token for {}", reg.addr))),
        "{}",
        r.explain()
    );
    assert_eq!(
        ours,
        auth_line(&b.stderr()),
        "bkd: {}\nbuildctl: {}",
        r.stderr(),
        b.stderr()
    );
    let all = format!("{}{}", r.stdout(), r.stderr());
    assert!(!all.contains(TOKEN_PASSWORD), "{}", r.explain());
}
