//! The flags buildx users type, through the real daemon and registry:
//! what a RUN step sees (--add-host, --shm-size, --ulimit, --network), the
//! attestations and annotations a pushed index holds, the image ID
//! (--iidfile, -q), tarballs named by -t, contexts from stdin, Git and
//! HTTP, and the command lines refused before anything starts.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

fn bkd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_bkd")
}

/// bkd with a daemon address that cannot answer: anything that reaches
/// the daemon fails with exit 4, so exit 2 proves the check came first.
fn bkd_offline(args: &[&str], cwd: &Path) -> Run {
    let mut all = vec![args[0], "--addr", "unix:///nonexistent/bkd-test.sock"];
    all.extend_from_slice(&args[1..]);
    run(bkd_bin(), &all, cwd, &[])
}

#[test]
fn run_steps_see_hosts_shm_ulimits_and_no_network() {
    let ctx = context();
    let n = nonce();
    write(
        ctx.path(),
        "Dockerfile",
        &format!(
            "FROM scratch\nCOPY busybox /bin/busybox\n\
             RUN [\"/bin/busybox\",\"sh\",\"-c\",\"echo {n}; /bin/busybox cat /etc/hosts; \
             /bin/busybox df -k /dev/shm; ulimit -n; /bin/busybox cat /proc/net/dev\"]\n"
        ),
    );
    let r = bkd(
        &[
            "build",
            "--progress=plain",
            "--add-host",
            "db.internal:10.9.8.7",
            "--add-host",
            "v6host=[fd00::1]",
            "--shm-size",
            "96m",
            "--ulimit",
            "nofile=777:888",
            "--network",
            "none",
            ".",
        ],
        ctx.path(),
    );
    r.assert_ok();
    let err = r.stderr();
    assert!(
        err.lines().any(|l| l.ends_with("10.9.8.7\tdb.internal")),
        "no --add-host entry in /etc/hosts\n{}",
        r.explain()
    );
    assert!(
        err.lines().any(|l| l.ends_with("fd00::1\tv6host")),
        "{}",
        r.explain()
    );
    let shm = err
        .lines()
        .find(|l| l.contains("/dev/shm") && l.contains("tmpfs"))
        .unwrap_or_else(|| panic!("no df line for /dev/shm\n{}", r.explain()));
    assert!(
        shm.split_whitespace().any(|w| w == "98304"),
        "/dev/shm is not 96 MiB: {shm}"
    );
    assert!(
        err.lines().any(|l| l.ends_with(" 777")),
        "ulimit -n is not 777\n{}",
        r.explain()
    );
    // /proc/net/dev lists lo and nothing else without a network.
    let iface = regex::Regex::new(r"^#\d+ [\d.]+\s+([A-Za-z0-9_.-]+):\s+\d").expect("regex");
    let interfaces: Vec<&str> = err
        .lines()
        .filter_map(|l| iface.captures(l).and_then(|c| c.get(1)).map(|m| m.as_str()))
        .collect();
    assert_eq!(interfaces, ["lo"], "{}", r.explain());
    assert!(
        err.matches("warning: no output specified").count() == 1,
        "a build with no output says so once\n{}",
        r.explain()
    );
}

/// A stand-in SBOM scanner image: writes one SPDX in-toto statement where
/// BuildKit asks for it, so no scanner has to come from the internet.
fn push_scanner(registry: &str, n: &str) -> String {
    let ctx = context();
    let statement = format!(
        "{{\"_type\":\"https://in-toto.io/Statement/v0.1\",\"predicateType\":\"https://spdx.dev/Document\",\
         \"subject\":[],\"predicate\":{{\"spdxVersion\":\"SPDX-2.3\",\"SPDXID\":\"SPDXRef-DOCUMENT\",\
         \"name\":\"bkd-test-{n}\"}}}}"
    );
    write(ctx.path(), "statement.json", &statement);
    write(
        ctx.path(),
        "Dockerfile",
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY statement.json /statement.json\n\
         ENTRYPOINT [\"/bin/busybox\",\"sh\",\"-c\",\
         \"/bin/busybox cp /statement.json $BUILDKIT_SCAN_DESTINATION/sbom.spdx.json\"]\n",
    );
    let image = format!("{registry}/bkd/scanner:{n}");
    bkd(&["build", "--push", "-t", &image, "."], ctx.path()).assert_ok();
    image
}

fn json_get(registry: &str, repo: &str, reference: &str) -> (String, serde_json::Value) {
    let (status, headers, body) = registry_get(
        registry,
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Accept", MANIFEST_ACCEPT)],
    )
    .expect("registry answers");
    assert!(status.contains("200"), "{status} for {repo}:{reference}");
    let digest = headers
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("docker-content-digest")
                .then(|| v.trim().to_string())
        })
        .expect("Docker-Content-Digest header");
    (
        digest,
        serde_json::from_slice(&body).expect("manifest JSON"),
    )
}

#[test]
fn pushed_index_holds_sbom_and_provenance_and_the_image_id_matches() {
    let registry = &bed().registry;
    let n = nonce();
    let scanner = push_scanner(registry, &n);
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        &format!("FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\",\"sh\",\"-c\",\"echo {n} > /n\"]\n"),
    );
    let image = format!("{registry}/bkd/attested:{n}");
    let iid = ctx.path().join("iid");
    let r = bkd(
        &[
            "build",
            "-q",
            "--push",
            "-t",
            &image,
            "--sbom",
            &format!("generator={scanner}"),
            "--provenance",
            "mode=max",
            "--annotation",
            "index:org.opencontainers.image.title=bkd-attested",
            "--iidfile",
            iid.to_str().expect("utf8"),
            ".",
        ],
        ctx.path(),
    );
    r.assert_ok();
    let (digest, index) = json_get(registry, "bkd/attested", &n);
    let manifests = index["manifests"].as_array().expect("an index");
    let attestation = manifests
        .iter()
        .find(|m| m["annotations"]["vnd.docker.reference.type"] == "attestation-manifest")
        .unwrap_or_else(|| panic!("no attestation manifest in {index:#}"));
    assert_eq!(
        index["annotations"]["org.opencontainers.image.title"], "bkd-attested",
        "{index:#}"
    );
    let att_digest = attestation["digest"].as_str().expect("digest");
    let (_, att) = json_get(registry, "bkd/attested", att_digest);
    let predicates: Vec<&str> = att["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .filter_map(|l| l["annotations"]["in-toto.io/predicate-type"].as_str())
        .collect();
    assert!(
        predicates.contains(&"https://spdx.dev/Document"),
        "no SBOM: {predicates:?}"
    );
    assert!(
        predicates
            .iter()
            .any(|p| p.starts_with("https://slsa.dev/provenance/")),
        "no provenance: {predicates:?}"
    );
    // An index has no single config: the image ID is the pushed digest.
    let id = std::fs::read_to_string(&iid).expect("iidfile written");
    assert_eq!(id, digest, "--iidfile is the registry's digest");
    assert_eq!(r.stdout().trim(), digest, "-q prints the image ID alone");
}

#[test]
fn tags_name_docker_and_oci_tarballs() {
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM scratch\nCOPY busybox /bin/busybox\n",
    );
    let r = bkd(
        &[
            "build",
            "-t",
            "example.com/team/app:1",
            "-o",
            "type=docker,dest=d.tar",
            "-o",
            "type=oci,dest=o.tar",
            "--iidfile",
            "iid",
            ".",
        ],
        ctx.path(),
    );
    r.assert_ok();
    let manifest = tar_file(&ctx.path().join("d.tar"), "manifest.json").expect("manifest.json");
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).expect("json");
    assert_eq!(
        manifest[0]["RepoTags"],
        serde_json::json!(["example.com/team/app:1"]),
        "{manifest:#}"
    );
    let index = tar_file(&ctx.path().join("o.tar"), "index.json").expect("index.json");
    let index: serde_json::Value = serde_json::from_slice(&index).expect("json");
    let names = &index["manifests"][0]["annotations"];
    assert_eq!(
        names["io.containerd.image.name"], "example.com/team/app:1",
        "{index:#}"
    );
    assert_eq!(names["org.opencontainers.image.ref.name"], "1", "{index:#}");
    // A single-platform image: the ID is its config digest, as buildx has it.
    let config = manifest[0]["Config"].as_str().expect("Config");
    let id = std::fs::read_to_string(ctx.path().join("iid")).expect("iid");
    assert_eq!(
        config.trim_start_matches("blobs/sha256/"),
        id.trim_start_matches("sha256:")
    );
    assert!(!r.stderr().contains("warning:"), "{}", r.explain());

    // buildx's cacheonly output: no output, and no warning about it.
    let r = bkd(&["build", "-o", "type=cacheonly", "."], ctx.path());
    r.assert_ok();
    assert!(!r.stderr().contains("warning:"), "{}", r.explain());

    // A tag alone builds the image and says once that it goes nowhere.
    let r = bkd(&["build", "-t", "example.com/team/app:1", "."], ctx.path());
    r.assert_ok();
    assert_eq!(
        r.stderr().matches("is neither pushed nor written").count(),
        1,
        "{}",
        r.explain()
    );
}

#[test]
fn dockerfile_from_stdin() {
    let ctx = context();
    write(ctx.path(), "hello.txt", "from the context\n");
    write(
        ctx.path(),
        "Dockerfile",
        "FROM scratch\nCOPY busybox /wrong\n",
    );
    let bed = bed();
    let build = |args: &[&str], stdin: &str| {
        let mut child = Command::new(bkd_bin())
            .arg("build")
            .args(["--addr", &bed.addr])
            .args(args)
            .current_dir(ctx.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bkd");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("bkd output")
    };
    let out = build(
        &["-f", "-", "-o", "type=tar,dest=out.tar", "."],
        "FROM scratch\nCOPY hello.txt /hello.txt\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = tar_listing(&ctx.path().join("out.tar"));
    assert!(listing.iter().any(|e| e.path == "hello.txt"), "{listing:?}");
    assert!(!listing.iter().any(|e| e.path == "wrong"), "{listing:?}");

    // `-` as the context: the Dockerfile alone, with no context to copy from.
    let out = build(
        &["-o", "type=tar,dest=alone.tar", "-"],
        "FROM scratch\nENV A=1\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A helper server, started in a process group of its own and killed with
/// everything in it on drop: `git daemon` runs the real server as a child
/// of `git`, which killing `git` alone would leave running (holding
/// whatever descriptors the test inherited, such as a suite lock).
struct Served(std::process::Child);

impl Served {
    fn spawn(cmd: &mut Command) -> Served {
        use std::os::unix::process::CommandExt;
        let what = format!("{:?}", cmd.get_program());
        Served(
            cmd.process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("{what}: {e} (run scripts/setup.sh)")),
        )
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // SAFETY: signalling the process group this test started.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

fn wait_port(port: u16) {
    let ok = spawn_wait(|| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(ok, "nothing listens on 127.0.0.1:{port}");
}

fn spawn_wait(mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

#[test]
fn git_and_http_contexts_are_fetched_by_the_daemon() {
    let n = nonce();
    let served = tempfile::tempdir().expect("dir");
    let repo = served.path().join("repo.git");
    std::fs::create_dir(&repo).expect("mkdir");
    let git = |args: &[&str]| {
        run(
            "git",
            &[
                &["-c", "user.name=bkd", "-c", "user.email=bkd@test", "-C"],
                &[repo.to_str().expect("utf8")][..],
                args,
            ]
            .concat(),
            served.path(),
            &[],
        )
        .assert_ok();
    };
    git(&["init", "-q", "-b", "main"]);
    write(&repo, "hello.txt", &format!("{n} from git\n"));
    write(
        &repo,
        "sub/Dockerfile.ci",
        "FROM scratch\nCOPY hello.txt /from-git.txt\n",
    );
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "context"]);

    let port = free_port();
    let _daemon = Served::spawn(
        Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={}", served.path().display()),
            ])
            .arg(served.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_port(port);
    let out_dir = tempfile::tempdir().expect("dir");
    let url = format!("git://127.0.0.1:{port}/repo.git#main");
    let r = bkd(
        &[
            "build",
            "-f",
            "sub/Dockerfile.ci",
            "-o",
            "type=tar,dest=git.tar",
            &url,
        ],
        out_dir.path(),
    );
    r.assert_ok();
    assert_eq!(
        tar_file(&out_dir.path().join("git.tar"), "from-git.txt"),
        Some(format!("{n} from git\n").into_bytes()),
        "{}",
        r.explain()
    );

    // An HTTP URL of a tar archive is a context too.
    let www = tempfile::tempdir().expect("dir");
    let ctx = tempfile::tempdir().expect("dir");
    write(ctx.path(), "hello.txt", &format!("{n} from http\n"));
    write(
        ctx.path(),
        "Dockerfile",
        "FROM scratch\nCOPY hello.txt /from-http.txt\n",
    );
    run(
        "tar",
        &[
            "-cf",
            www.path().join("ctx.tar").to_str().expect("utf8"),
            "-C",
            ctx.path().to_str().expect("utf8"),
            ".",
        ],
        ctx.path(),
        &[],
    )
    .assert_ok();
    let port = free_port();
    let _httpd = Served::spawn(
        Command::new("busybox")
            .args(["httpd", "-f", "-p", &format!("127.0.0.1:{port}"), "-h"])
            .arg(www.path()),
    );
    wait_port(port);
    let url = format!("http://127.0.0.1:{port}/ctx.tar");
    let r = bkd(
        &["build", "-o", "type=tar,dest=http.tar", &url],
        out_dir.path(),
    );
    r.assert_ok();
    assert_eq!(
        tar_file(&out_dir.path().join("http.tar"), "from-http.txt"),
        Some(format!("{n} from http\n").into_bytes()),
        "{}",
        r.explain()
    );
}

#[test]
fn bad_command_lines_fail_before_anything_starts() {
    let ctx = context();
    write(ctx.path(), "Dockerfile", "FROM scratch\n");
    for (args, needle) in [
        (
            vec!["build", "-t", "App:UPPER", "."],
            "repository name must be lowercase",
        ),
        (
            vec!["build", "--push", "-t", "r/a:b:c", "."],
            "invalid reference format",
        ),
        (
            vec!["build", "--platform", "linux/amd64,bogus", "."],
            "invalid --platform \"bogus\"",
        ),
        (
            vec!["build", "-o", "type=image,name=Bad", "."],
            "must be lowercase",
        ),
        (vec!["build", "--load", "."], "docker load"),
        (
            vec!["build", "--add-host", "nohost", "."],
            "invalid --add-host",
        ),
        (
            vec!["build", "--network", "bridge", "."],
            "invalid --network",
        ),
        (
            vec!["build", "--shm-size", "lots", "."],
            "invalid --shm-size",
        ),
        (vec!["build", "--ulimit", "files=1", "."], "unknown limit"),
        (
            vec!["build", "--annotation", "bogus:k=v", "."],
            "unknown annotation type",
        ),
        (
            vec!["build", "--attest", "mode=max", "."],
            "type is required",
        ),
        (vec!["build", "--opt", "novalue", "."], "invalid --opt"),
        (
            vec!["build", "--no-cache", "--no-cache-filter", "a", "."],
            "cannot be used together",
        ),
        (
            vec!["build", "--iidfile", "id", "-o", "type=tar,dest=x.tar", "."],
            "--iidfile",
        ),
        (
            vec!["build", "-q", "-o", "type=tar,dest=-", "."],
            "-q prints",
        ),
    ] {
        let r = bkd_offline(&args, ctx.path());
        assert_eq!(r.code(), Some(2), "{}", r.explain());
        let last = r.stderr().lines().last().unwrap_or_default().to_string();
        assert!(
            last.starts_with("error: ") && last.contains(needle),
            "{needle}: {}",
            r.explain()
        );
    }
}

#[test]
fn dest_dash_refuses_a_terminal() {
    let ctx = context();
    write(ctx.path(), "Dockerfile", "FROM scratch\n");
    let command = format!(
        "{} build --addr unix:///nonexistent/bkd.sock -o type=tar,dest=- .",
        bkd_bin()
    );
    // `script` gives bkd a terminal for stdout.
    let r = run("script", &["-qec", &command, "/dev/null"], ctx.path(), &[]);
    assert_eq!(r.code(), Some(2), "{}", r.explain());
    assert!(
        r.stdout()
            .contains("refusing to write the tar output to a terminal"),
        "{}",
        r.explain()
    );
}

/// A registry serving TLS with the test bed's server certificate (signed
/// by its CA, for 127.0.0.1); killed on drop.
fn tls_registry(dir: &Path) -> (Served, String) {
    let tls = &bed().tls_dir;
    let addr = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
         http:\n  addr: {addr}\n  tls:\n    certificate: {}\n    key: {}\n",
        dir.join("storage").display(),
        tls.join("server.pem").display(),
        tls.join("server-key.pem").display()
    );
    let config_path = dir.join("tls-registry.yml");
    std::fs::write(&config_path, config).expect("registry config");
    let served = Served::spawn(
        Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let port = addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    wait_port(port);
    (served, addr)
}

/// One build on a daemon bkd spawns, asking of it what only bkd can set:
/// network.host granted, Docker Hub pulled through a mirror (the test
/// registry), a push to a TLS registry whose CA only --registry-ca names,
/// and a 1 KiB step log limit.
#[test]
fn the_spawned_daemon_follows_the_command() {
    let bed = bed();
    let n = nonce();
    let base_ctx = context();
    write(base_ctx.path(), "Dockerfile", BUSYBOX_STAGE);
    let base = format!("{}/library/bkd-mirror-{n}:1", bed.registry);
    bkd(&["build", "--push", "-t", &base, "."], base_ctx.path()).assert_ok();

    let state = tempfile::tempdir().expect("state dir");
    let (_registry, tls_addr) = tls_registry(state.path());
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        &format!(
            "FROM bkd-mirror-{n}:1\n\
             RUN --network=host cat /proc/net/dev\n\
             RUN yes 0123456789abcdef | head -c 20000\n"
        ),
    );
    let image = format!("{tls_addr}/bkd/tls:{n}");
    let root = state.path().join("root");
    let ca = bed.tls_dir.join("ca.pem");
    let r = common::spawn::bkd_as(
        common::spawn::As::Root,
        &[
            "build",
            "--root",
            root.to_str().expect("utf8"),
            "--progress=plain",
            "--allow",
            "network.host",
            "--registry-mirror",
            &format!("docker.io={}", bed.registry),
            "--registry-ca",
            &format!("{tls_addr}={}", ca.display()),
            "--step-log-max-size",
            "1k",
            "--push",
            "-t",
            &image,
            ".",
        ],
        ctx.path(),
        &[],
    );
    r.assert_ok();
    let err = r.stderr();
    assert_eq!(
        err.matches("granting network.host to the buildkitd")
            .count(),
        1,
        "one notice line\n{}",
        r.explain()
    );
    // The host's interfaces: the step ran in the host network.
    let host_ifaces = std::fs::read_to_string("/proc/net/dev").expect("/proc/net/dev");
    let host_iface = host_ifaces
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim().to_string()))
        .find(|n| n != "lo")
        .expect("a host interface besides lo");
    assert!(
        err.contains(&format!(" {host_iface}:")),
        "{host_iface} not seen by the host-network step\n{}",
        r.explain()
    );
    assert!(
        err.contains("log limit 1KiB reached") || err.contains("log limit 1.0KiB reached"),
        "the step log was not clipped at 1 KiB\n{}",
        r.explain()
    );
    assert!(
        err.matches("0123456789abcdef").count() < 200,
        "too much of the step log came through\n{}",
        r.explain()
    );
    let request = format!(
        "HEAD /v2/bkd/tls/manifests/{n} HTTP/1.1\r\nHost: {tls_addr}\r\nAccept: {MANIFEST_ACCEPT}\r\nConnection: close\r\n\r\n"
    );
    let mut client = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect", &tls_addr, "-CAfile"])
        .arg(&ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl");
    client
        .stdin
        .take()
        .expect("stdin")
        .write_all(request.as_bytes())
        .expect("request");
    let answer = client.wait_with_output().expect("openssl output");
    let answer = String::from_utf8_lossy(&answer.stdout);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the image is not in the TLS registry: {answer}"
    );
}

/// `debug workers` prints what buildctl prints, byte for byte, for the
/// table, -v and --format json, on the same daemon.
#[test]
fn debug_workers_matches_buildctl() {
    let dir = tempfile::tempdir().expect("dir");
    for args in [
        vec!["debug", "workers"],
        vec!["debug", "workers", "-v"],
        vec!["debug", "workers", "--format", "{{json .}}"],
        vec!["debug", "workers", "--format", "json"],
    ] {
        let ours = bkd(&args, dir.path());
        ours.assert_ok();
        let theirs = buildctl(&args, dir.path());
        theirs.assert_ok();
        assert_eq!(
            ours.stdout(),
            theirs.stdout(),
            "{args:?}\n{}",
            ours.explain()
        );
    }
    let r = bkd_offline(&["debug", "workers", "--format", "{{.ID}}"], dir.path());
    assert_eq!(r.code(), Some(2), "{}", r.explain());
}

/// --check and --call run the frontend's subrequests through the gateway
/// API and print its answer, as buildx does; nothing is built.
#[test]
fn check_and_call_print_the_frontends_answer() {
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        "from scratch AS base\nCOPY busybox /bin/busybox\nFROM base as final\nENV A 1\n",
    );
    let r = bkd(&["build", "--progress=quiet", "--check", "."], ctx.path());
    assert_eq!(r.code(), Some(1), "{}", r.explain());
    let out = r.stdout();
    assert!(
        out.starts_with("Check complete, 4 warnings have been found!\n"),
        "{}",
        r.explain()
    );
    for rule in [
        "FromAsCasing",
        "ConsistentInstructionCasing",
        "LegacyKeyValueFormat",
    ] {
        assert!(
            out.contains(&format!("WARNING: {rule}")),
            "{rule}\n{}",
            r.explain()
        );
    }
    let r = bkd(
        &[
            "build",
            "--progress=quiet",
            "--call",
            "check,ignorestatus=true,format=json",
            ".",
        ],
        ctx.path(),
    );
    r.assert_ok();
    let lint: serde_json::Value = serde_json::from_str(&r.stdout()).expect("JSON lint result");
    assert_eq!(
        lint["warnings"].as_array().map(Vec::len),
        Some(4),
        "{lint:#}"
    );

    let r = bkd(
        &["build", "--progress=quiet", "--call", "targets", "."],
        ctx.path(),
    );
    r.assert_ok();
    let stdout = r.stdout();
    let targets: Vec<&str> = stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap_or_default())
        .collect();
    assert_eq!(targets, ["base", "final"], "{}", r.explain());

    write(
        ctx.path(),
        "Dockerfile",
        "FROM scratch\nCOPY busybox /bin/busybox\n",
    );
    let r = bkd(&["build", "--progress=quiet", "--check", "."], ctx.path());
    r.assert_ok();
    assert_eq!(
        r.stdout(),
        "Check complete, no warnings found.\n",
        "{}",
        r.explain()
    );
    assert!(
        !r.stderr().contains("warning: no output"),
        "{}",
        r.explain()
    );
}
