//! Build options that reach beyond one daemon's state: registry and inline
//! cache carried across fresh daemon states (as across ephemeral pods),
//! named contexts, and plain-HTTP registries with --insecure-registry.

mod common;

use std::path::Path;

use common::spawn::*;
use common::*;

fn cache_dockerfile(nonce: &str) -> String {
    format!(
        "FROM scratch\nCOPY busybox /bin/busybox\n\
         RUN [\"/bin/busybox\",\"sh\",\"-c\",\"echo {nonce} > /made\"]\n"
    )
}

/// Whether the plain progress shows the step whose header contains
/// `needle` as CACHED.
fn step_cached(stderr: &str, needle: &str) -> bool {
    let Some(index) = stderr.lines().find_map(|l| {
        let rest = l.strip_prefix('#')?;
        let (n, title) = rest.split_once(' ')?;
        title.contains(needle).then(|| n.to_string())
    }) else {
        panic!("no step {needle:?} in:\n{stderr}");
    };
    stderr.lines().any(|l| l == format!("#{index} CACHED"))
}

/// bkd spawning its own daemon as root on the state dir `root`.
fn spawned(args: &[&str], ctx: &Path, root: &Path, env: &[(&str, &str)]) -> Run {
    let root = root.display().to_string();
    let mut all = vec![args[0], "--root", &root];
    all.extend_from_slice(&args[1..]);
    bkd_as(As::Root, &all, ctx, env)
}

#[test]
fn registry_cache_is_reused_by_a_fresh_daemon_state() {
    let registry = &bed().registry;
    let n = nonce();
    let ctx = context();
    write(ctx.path(), "Dockerfile", &cache_dockerfile(&n));
    let cache_ref = format!("{registry}/bkd/cache:{n}");

    let first = spawned(
        &[
            "build",
            "--progress=plain",
            "--cache-to",
            &format!("type=registry,ref={cache_ref},mode=max"),
            ".",
        ],
        ctx.path(),
        &ctx.path().join("state-1"),
        &[],
    );
    first.assert_ok();
    assert!(!step_cached(&first.stderr(), "RUN"), "{}", first.explain());
    let (status, _) = manifest(registry, "bkd/cache", &n);
    assert!(status.contains("200"), "cache not pushed: {status}");

    // A new pod: empty state, the cache comes from the registry. This one
    // uses the buildctl spelling through the script's name.
    let link = script_link();
    let root_2 = ctx.path().join("state-2").display().to_string();
    let import = format!("type=registry,ref={cache_ref}");
    let mut cmd = command_of(
        &link,
        As::Root,
        &[
            &["build"][..],
            &DOCKERFILE_HERE,
            &["--progress=plain", "--import-cache", &import],
        ]
        .concat(),
        ctx.path(),
        &[("BKD_ROOT", &root_2)],
    );
    let out = cmd.output().expect("run the link");
    let second = Run {
        cmd: "buildctl-daemonless.sh build ... --import-cache".into(),
        cwd: ctx.path().to_path_buf(),
        out,
    };
    second.assert_ok();
    assert!(step_cached(&second.stderr(), "RUN"), "{}", second.explain());

    // Without the import, a fresh state runs the step again.
    let third = spawned(
        &["build", "--progress=plain", "."],
        ctx.path(),
        &ctx.path().join("state-3"),
        &[],
    );
    third.assert_ok();
    assert!(!step_cached(&third.stderr(), "RUN"), "{}", third.explain());
}

#[test]
fn inline_cache_travels_with_the_pushed_image() {
    let registry = &bed().registry;
    let n = nonce();
    let ctx = context();
    write(ctx.path(), "Dockerfile", &cache_dockerfile(&n));
    let image = format!("{registry}/bkd/inline:{n}");
    let first = spawned(
        &[
            "build",
            "--progress=plain",
            "--cache-to",
            "type=inline",
            "--push",
            "-t",
            &image,
            ".",
        ],
        ctx.path(),
        &ctx.path().join("state-1"),
        &[],
    );
    first.assert_ok();
    // A bare reference is a registry cache, as buildctl reads it.
    let second = spawned(
        &["build", "--progress=plain", "--cache-from", &image, "."],
        ctx.path(),
        &ctx.path().join("state-2"),
        &[],
    );
    second.assert_ok();
    assert!(step_cached(&second.stderr(), "RUN"), "{}", second.explain());
}

#[test]
fn named_contexts_from_a_directory_and_an_image() {
    let registry = &bed().registry;
    let n = nonce();
    // An image to use as a named context.
    let base_ctx = context();
    write(
        base_ctx.path(),
        "Dockerfile",
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY base.txt /base.txt\n",
    );
    write(base_ctx.path(), "base.txt", &format!("base {n}\n"));
    let base = format!("{registry}/bkd/named-base:{n}");
    bkd(&["build", "--push", "-t", &base, "."], base_ctx.path()).assert_ok();

    let ctx = context();
    let extra = tempfile::tempdir().expect("temp dir");
    write(extra.path(), "extra.txt", &format!("extra {n}\n"));
    write(
        ctx.path(),
        "Dockerfile",
        "FROM base\nCOPY --from=extra extra.txt /extra.txt\n",
    );
    let out = ctx.path().join("out.tar");
    let extra_dir = extra.path().display().to_string();
    bkd(
        &[
            "build",
            "--build-context",
            &format!("extra={extra_dir}"),
            "--build-context",
            &format!("base=docker-image://{base}"),
            "-o",
            &tar_output(&out),
            ".",
        ],
        ctx.path(),
    )
    .assert_ok();
    let text = |name: &str| {
        String::from_utf8_lossy(&tar_file(&out, name).unwrap_or_default()).into_owned()
    };
    assert_eq!(text("extra.txt"), format!("extra {n}\n"));
    assert_eq!(text("base.txt"), format!("base {n}\n"));

    // buildctl's spelling: an extra --local and a context: option.
    let out_2 = ctx.path().join("out2.tar");
    let bed_addr = &bed().addr;
    let run = run(
        env!("CARGO_BIN_EXE_bkd"),
        &[
            &["daemonless", "--addr", bed_addr, "build"][..],
            &DOCKERFILE_HERE,
            &[
                "--local",
                &format!("extra={extra_dir}"),
                "--opt",
                "context:extra=local:extra",
                "--opt",
                &format!("context:base=docker-image://{base}"),
                "--output",
                &format!("type=tar,dest={}", out_2.display()),
            ],
        ]
        .concat(),
        ctx.path(),
        &[],
    );
    run.assert_ok();
    assert_eq!(
        tar_file(&out_2, "extra.txt").unwrap_or_default(),
        format!("extra {n}\n").into_bytes()
    );

    // Bad values are named before the build.
    for (value, code, needle) in [
        ("context=/tmp", 2, "names the main build input"),
        ("x=./missing-dir", 3, "--build-context x=./missing-dir"),
        ("novalue", 2, "expected KEY=VALUE"),
    ] {
        let r = bkd(&["build", "--build-context", value, "."], ctx.path());
        assert_eq!(r.code(), Some(code), "{}", r.explain());
        assert!(r.stderr().contains(needle), "{}", r.explain());
    }
}

/// This machine's first non-loopback IPv4 address: registries there are
/// not plain-HTTP by default, as a registry in another pod would not be.
fn outside_address() -> String {
    let out = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .expect("hostname -I");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .map(str::to_string)
        .expect("the test needs a non-loopback IPv4 address on this machine")
}

#[test]
fn insecure_registry_serves_pushes_and_pulls_over_http() {
    let registry = OwnRegistry::start(&outside_address());
    let n = nonce();
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        &format!("FROM scratch\nCOPY busybox /bin/busybox\nLABEL n={n}\n"),
    );
    let image = format!("{}/bkd/insecure:{n}", registry.addr);
    let root = ctx.path().join("state");

    // Without the flag the daemon speaks HTTPS to it and fails, naming it.
    let refused = spawned(
        &["build", "--push", "-t", &image, "."],
        ctx.path(),
        &root,
        &[],
    );
    assert_eq!(refused.code(), Some(1), "{}", refused.explain());
    assert!(
        refused.stderr().contains(&registry.addr),
        "{}",
        refused.explain()
    );
    assert!(
        refused.stderr().contains("--insecure-registry HOST:PORT"),
        "the fix is named: {}",
        refused.explain()
    );

    let pushed = spawned(
        &[
            "build",
            "--insecure-registry",
            &registry.addr,
            "--push",
            "-t",
            &image,
            ".",
        ],
        ctx.path(),
        &root,
        &[],
    );
    pushed.assert_ok();
    let (status, _) = manifest(&registry.addr, "bkd/insecure", &n);
    assert!(status.contains("200"), "{status}");

    // FROM the plain-HTTP registry.
    let from_ctx = context();
    write(
        from_ctx.path(),
        "Dockerfile",
        &format!("FROM {image}\nRUN [\"/bin/busybox\",\"true\"]\n"),
    );
    let out = from_ctx.path().join("out.tar");
    let pulled = spawned(
        &[
            "build",
            "--insecure-registry",
            &registry.addr,
            "-o",
            &tar_output(&out),
            ".",
        ],
        from_ctx.path(),
        &from_ctx.path().join("state"),
        &[],
    );
    pulled.assert_ok();
    assert!(tar_file(&out, "bin/busybox").is_some());

    // With --addr the daemon is not bkd's to configure.
    let r = bkd(
        &["build", "--insecure-registry", &registry.addr, "."],
        ctx.path(),
    );
    assert_eq!(r.code(), Some(2), "{}", r.explain());
    assert!(r.stderr().contains("buildkitd.toml"), "{}", r.explain());
}
