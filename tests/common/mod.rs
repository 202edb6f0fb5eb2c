//! The real test bed shared by the integration tests of one test binary: a
//! privileged buildkitd on a temporary socket and state dir, and a registry
//! on a free 127.0.0.1 port. Both start on first use and are stopped when
//! the test process exits. A missing buildkitd fails the tests; it never
//! skips them.

#![allow(dead_code)]

pub mod fleet;
pub mod spawn;
pub mod token_registry;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct TestBed {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub addr: String,
    /// The same daemon on TCP with mutual TLS; certificates under `tls/`.
    pub tls_addr: String,
    pub tls_dir: PathBuf,
    /// A second registry that demands basic auth (`AUTH_USER`/`AUTH_PASSWORD`).
    pub auth_registry: String,
    pub daemon_log: PathBuf,
    pub registry: String,
}

static BED: OnceLock<TestBed> = OnceLock::new();
static DAEMON_PID: AtomicI32 = AtomicI32::new(0);
static REGISTRY_PID: AtomicI32 = AtomicI32::new(0);
static AUTH_REGISTRY_PID: AtomicI32 = AtomicI32::new(0);

pub const AUTH_USER: &str = "bkd-user";
pub const AUTH_PASSWORD: &str = "s3cret-Pa55word-for-tests";
static BED_DIR: OnceLock<PathBuf> = OnceLock::new();

/// The shared test bed, started on first use.
pub fn bed() -> &'static TestBed {
    BED.get_or_init(start)
}

fn need(bin: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {bin}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(found, "{bin} not found on PATH: run scripts/setup.sh first (the integration tests need the real test bed)");
}

/// `N` distinct free ports on 127.0.0.1: the listeners are held until all
/// are chosen, so two calls in a row cannot be handed the same port.
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port on 127.0.0.1"))
        .collect();
    std::array::from_fn(|i| {
        listeners[i]
            .local_addr()
            .map(|a| a.port())
            .expect("a bound port")
    })
}

extern "C" fn stop_all() {
    for pid in [&DAEMON_PID, &REGISTRY_PID, &AUTH_REGISTRY_PID] {
        let pid = pid.swap(0, Ordering::SeqCst);
        if pid > 0 {
            stop_process(pid);
        }
    }
    if let Some(dir) = BED_DIR.get() {
        unmount_below(dir);
        delete_runc_entries_below(dir);
        let _ = std::fs::remove_dir_all(dir);
    }
    remove_empty_ssh_socket_dirs();
}

/// buildkitd leaves an empty `.buildkit-ssh-sock*` directory in the temp
/// dir for every `RUN --mount=type=ssh` (it removes only the socket); the
/// test bed's daemon is gone now, so the empty ones go.
fn remove_empty_ssh_socket_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name()
            .to_string_lossy()
            .starts_with(".buildkit-ssh-sock")
        {
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

/// SIGTERM, then SIGKILL after a grace period; reaps the process.
fn stop_process(pid: i32) {
    // SAFETY: plain signal and wait calls on a child of this process.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut status = 0;
            let r = libc::waitpid(pid, &mut status, libc::WNOHANG);
            if r == pid || r < 0 {
                return;
            }
            if Instant::now() > deadline {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

// The children are reaped by `stop_all` at process exit, by pid.
#[allow(clippy::zombie_processes)]
fn start() -> TestBed {
    need("buildkitd");
    need("buildctl");
    need("runc");
    need("docker-registry");
    let dir = tempfile::Builder::new()
        .prefix("bkd-testbed-")
        .tempdir()
        .expect("temp dir")
        .keep();
    let _ = BED_DIR.set(dir.clone());
    // SAFETY: registering a plain extern "C" function.
    unsafe {
        libc::atexit(stop_all);
    }

    let [registry_port, auth_port, tls_port] = free_ports::<3>();
    let registry = start_registry(&dir, "registry", registry_port, None, &REGISTRY_PID);
    let htpasswd = dir.join("htpasswd");
    let hash = Command::new("htpasswd")
        .args(["-Bbn", AUTH_USER, AUTH_PASSWORD])
        .output()
        .expect("htpasswd (package apache2-utils): run scripts/setup.sh");
    std::fs::write(&htpasswd, &hash.stdout).expect("htpasswd file");
    let auth_registry = start_registry(
        &dir,
        "auth-registry",
        auth_port,
        Some(&htpasswd),
        &AUTH_REGISTRY_PID,
    );
    let tls_dir = dir.join("tls");
    make_certs(&tls_dir);
    let tls_addr = format!("tcp://127.0.0.1:{tls_port}");
    let socket = dir.join("buildkitd.sock");
    let addr = format!("unix://{}", socket.display());
    let config = dir.join("buildkitd.toml");
    std::fs::write(
        &config,
        format!(
            "[registry.\"{registry}\"]\n  http = true\n  insecure = true\n[registry.\"{auth_registry}\"]\n  http = true\n  insecure = true\n"
        ),
    )
    .expect("buildkitd config");
    let daemon_log = dir.join("buildkitd.log");
    let log = std::fs::File::create(&daemon_log).expect("daemon log");
    let child = Command::new("buildkitd")
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--otel-socket-path")
        .arg(dir.join("otel.sock"))
        .arg("--addr")
        .arg(&addr)
        .arg("--addr")
        .arg(&tls_addr)
        .arg("--tlscert")
        .arg(tls_dir.join("server.pem"))
        .arg("--tlskey")
        .arg(tls_dir.join("server-key.pem"))
        .arg("--tlscacert")
        .arg(tls_dir.join("ca.pem"))
        .arg("--config")
        .arg(&config)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start buildkitd");
    DAEMON_PID.store(child.id() as i32, Ordering::SeqCst);
    let bed = TestBed {
        dir,
        socket,
        addr,
        tls_addr,
        tls_dir,
        auth_registry,
        daemon_log,
        registry,
    };
    bed.wait_ready();
    bed
}

/// Starts a registry on a free port, optionally behind basic auth. Reaped
/// by `stop_all` at process exit, by pid.
#[allow(clippy::zombie_processes)]
fn start_registry(
    dir: &Path,
    name: &str,
    port: u16,
    htpasswd: Option<&Path>,
    pid: &AtomicI32,
) -> String {
    let addr = format!("127.0.0.1:{port}");
    let child = spawn_registry(dir, name, &addr, htpasswd);
    pid.store(child.id() as i32, Ordering::SeqCst);
    addr
}

/// A registry a test owns, on an address of its choice; killed on drop.
#[allow(dead_code)]
pub struct OwnRegistry {
    pub addr: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl OwnRegistry {
    /// Starts a plain-HTTP registry on `host` and a free port, and waits
    /// until it answers.
    #[allow(dead_code)]
    pub fn start(host: &str) -> OwnRegistry {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = TcpListener::bind(format!("{host}:0"))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free port on {host}: {e}"));
        let addr = format!("{host}:{port}");
        let child = spawn_registry(dir.path(), "registry", &addr, None);
        let reg = OwnRegistry {
            addr,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while registry_get(&reg.addr, "/v2/", &[]).is_none() {
            assert!(
                Instant::now() < deadline,
                "registry on {} did not start",
                reg.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }
}

impl OwnRegistry {
    /// Where the registry keeps its blobs and uploads.
    pub fn storage(&self) -> PathBuf {
        self._dir.path().join("registry")
    }

    /// SIGKILLs the registry now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_registry(
    dir: &Path,
    name: &str,
    addr: &str,
    htpasswd: Option<&Path>,
) -> std::process::Child {
    let storage = dir.join(name);
    std::fs::create_dir_all(&storage).expect("registry dir");
    let mut config = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
        storage.display()
    );
    if let Some(h) = htpasswd {
        config += &format!(
            "auth:\n  htpasswd:\n    realm: bkd-test\n    path: {}\n",
            h.display()
        );
    }
    let config_path = dir.join(format!("{name}.yml"));
    std::fs::write(&config_path, config).expect("registry config");
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("registry log");
    Command::new("docker-registry")
        .arg("serve")
        .arg(&config_path)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start docker-registry")
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate.
fn make_certs(dir: &Path) {
    std::fs::create_dir_all(dir).expect("tls dir");
    let sh = |script: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .output()
            .expect("openssl: run scripts/setup.sh");
        assert!(
            out.status.success(),
            "openssl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh(
        "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bkd-test-ca \\
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \\
        -keyout ca-key.pem -out ca.pem",
    );
    sh("printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth\\nbasicConstraints=CA:FALSE\\n' > server.ext && \\
        openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server-key.pem -out server.csr && \\
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 -extfile server.ext -out server.pem");
    sh("printf 'extendedKeyUsage=clientAuth\\nbasicConstraints=CA:FALSE\\n' > client.ext && \\
        openssl req -newkey rsa:2048 -nodes -subj /CN=bkd-client -keyout client-key.pem -out client.csr && \\
        openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 -extfile client.ext -out client.pem");
}

impl TestBed {
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Command::new("buildctl")
                .args(["--addr", &self.addr, "debug", "workers"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok
                && registry_get(&self.registry, "/v2/", &[]).is_some()
                && registry_get(&self.auth_registry, "/v2/", &[]).is_some()
            {
                return;
            }
            if Instant::now() >= deadline {
                let log = self.daemon_log_tail();
                // Another test may start a bed of its own after this panic:
                // this one's processes go now, not with the process.
                stop_all();
                panic!("test bed did not become ready in 60s\n--- buildkitd log ---\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn daemon_log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.daemon_log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// A plain HTTP/1.1 GET against the registry: (status line, headers, body).
pub fn registry_get(
    registry: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(String, String, Vec<u8>)> {
    let mut s = TcpStream::connect(registry).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {registry}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let body = buf[split + 4..].to_vec();
    let (status, headers) = head.split_once("\r\n").unwrap_or((&head, ""));
    Some((status.to_string(), headers.to_string(), body))
}

/// Every manifest media type a pushed image may have.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// The registry's answer for `repo:reference`: (status line, headers).
pub fn manifest(registry: &str, repo: &str, reference: &str) -> (String, String) {
    let (status, headers, _) = registry_get(
        registry,
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Accept", MANIFEST_ACCEPT)],
    )
    .expect("registry answers");
    (status, headers)
}

/// A fresh context directory with busybox in it, so builds need no
/// internet: `FROM scratch` + `COPY busybox /bin/busybox`.
pub fn context() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("bkd-ctx-")
        .tempdir()
        .expect("context dir");
    std::fs::copy("/bin/busybox", dir.path().join("busybox"))
        .expect("copy /bin/busybox (package busybox-static)");
    dir
}

/// A string no earlier run has used: the daemons' state persists between
/// runs, so a Dockerfile carrying it really runs its steps.
pub fn nonce() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    )
}

pub const BUSYBOX_STAGE: &str = "FROM scratch AS bb\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\",\"--install\",\"-s\",\"/bin\"]\n";

pub fn write(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(p, text).expect("write");
}

/// A finished command with everything needed to explain a failure.
pub struct Run {
    pub cmd: String,
    pub cwd: PathBuf,
    pub out: Output,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }

    pub fn code(&self) -> Option<i32> {
        self.out.status.code()
    }

    pub fn explain(&self) -> String {
        format!(
            "command: {}\ncwd: {}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- buildkitd log (tail) ---\n{}",
            self.cmd,
            self.cwd.display(),
            self.out.status,
            self.stdout(),
            self.stderr(),
            BED.get().map(|b| b.daemon_log_tail()).unwrap_or_default()
        )
    }

    pub fn assert_ok(&self) -> &Self {
        assert!(
            self.out.status.success(),
            "command failed\n{}",
            self.explain()
        );
        self
    }
}

pub fn run(program: &str, args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(cwd).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    Run {
        cmd: format!("{program} {}", args.join(" ")),
        cwd: cwd.to_path_buf(),
        out,
    }
}

/// Runs bkd against the test bed's daemon.
pub fn bkd(args: &[&str], cwd: &Path) -> Run {
    bkd_env(args, cwd, &[])
}

/// Runs bkd against the test bed's daemon with extra environment.
pub fn bkd_env(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Run {
    let bed = bed();
    let mut all = vec![args[0], "--addr", &bed.addr];
    all.extend_from_slice(&args[1..]);
    run(env!("CARGO_BIN_EXE_bkd"), &all, cwd, env)
}

/// Runs buildctl against the test bed's daemon.
pub fn buildctl(args: &[&str], cwd: &Path) -> Run {
    let bed = bed();
    let mut all = vec!["--addr", &bed.addr];
    all.extend_from_slice(args);
    run("buildctl", &all, cwd, &[])
}

/// buildctl's arguments for a Dockerfile build of the working directory.
pub const DOCKERFILE_HERE: [&str; 6] = [
    "--frontend",
    "dockerfile.v0",
    "--local",
    "context=.",
    "--local",
    "dockerfile=.",
];

/// `buildctl build` of the working directory's Dockerfile against the test
/// bed's daemon, with `extra` arguments.
pub fn buildctl_build(extra: &[&str], cwd: &Path) -> Run {
    let mut args = vec!["build"];
    args.extend_from_slice(&DOCKERFILE_HERE);
    args.extend_from_slice(extra);
    buildctl(&args, cwd)
}

/// One tar entry, as compared between bkd and buildctl outputs.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone)]
pub struct Entry {
    pub path: String,
    pub kind: String,
    pub mode: u32,
    pub size: u64,
    pub link: String,
    pub mtime: u64,
}

/// The listing of a tar file: names, types, modes, sizes, link targets, mtimes.
pub fn tar_listing(path: &Path) -> Vec<Entry> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut archive = tar::Archive::new(file);
    let mut out = Vec::new();
    for entry in archive.entries().expect("tar entries") {
        let entry = entry.expect("tar entry");
        let h = entry.header();
        out.push(Entry {
            path: String::from_utf8_lossy(&entry.path_bytes())
                .trim_end_matches('/')
                .to_string(),
            kind: format!("{:?}", h.entry_type()),
            mode: h.mode().expect("mode"),
            size: h.size().expect("size"),
            link: entry
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .unwrap_or_default(),
            mtime: h.mtime().expect("mtime"),
        });
    }
    out.sort();
    out
}

/// The content of one file inside a tar.
pub fn tar_file(path: &Path, name: &str) -> Option<Vec<u8>> {
    let file = std::fs::File::open(path).ok()?;
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries().ok()? {
        let mut entry = entry.ok()?;
        if entry.path_bytes().as_ref() == name.as_bytes() {
            let mut buf = Vec::new();
            entry.read_to_end(&mut buf).ok()?;
            return Some(buf);
        }
    }
    None
}

/// The `--output` value that writes a tar file to `dest`.
pub fn tar_output(dest: &Path) -> String {
    format!("type=tar,dest={}", dest.display())
}

/// A buildkitd of the test's own, on a fresh state dir, for builds that
/// must not find anything cached; stopped when dropped.
pub struct PrivateDaemon {
    pub child: std::process::Child,
    pub addr: String,
    dir: tempfile::TempDir,
}

impl PrivateDaemon {
    pub fn start() -> PrivateDaemon {
        PrivateDaemon::start_with_config("")
    }

    /// A private daemon with this `buildkitd.toml` text.
    pub fn start_with_config(config: &str) -> PrivateDaemon {
        let dir = tempfile::Builder::new()
            .prefix("bkd-private-daemon-")
            .tempdir()
            .expect("temp dir");
        let addr = format!("unix://{}", dir.path().join("buildkitd.sock").display());
        let log = std::fs::File::create(dir.path().join("buildkitd.log")).expect("log");
        let config_path = dir.path().join("buildkitd.toml");
        std::fs::write(&config_path, config).expect("buildkitd.toml");
        let child = Command::new("buildkitd")
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--otel-socket-path")
            .arg(dir.path().join("otel.sock"))
            .arg("--config")
            .arg(&config_path)
            .args(["--addr", &addr])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start buildkitd");
        let daemon = PrivateDaemon { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !daemon.ready() {
            assert!(
                Instant::now() < deadline,
                "private buildkitd not ready in 60s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        daemon
    }

    pub fn ready(&self) -> bool {
        Command::new("buildctl")
            .args(["--addr", &self.addr, "debug", "workers"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for PrivateDaemon {
    fn drop(&mut self) {
        stop_daemon(&mut self.child, self.dir.path());
    }
}

/// Deterministic bytes that do not compress: `len` of them for `seed`.
#[allow(dead_code)]
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Stops a buildkitd a test started with its state below `dir`: SIGTERM,
/// SIGKILL after 10 s, then the mounts and runc entries a killed daemon
/// leaves there.
pub fn stop_daemon(child: &mut std::process::Child, dir: &Path) {
    stop_daemon_with(child, libc::SIGTERM, Duration::from_secs(10), dir);
}

/// [`stop_daemon`] with the first signal and the time it is given.
pub fn stop_daemon_with(child: &mut std::process::Child, signal: i32, grace: Duration, dir: &Path) {
    // SAFETY: signalling a child the caller owns.
    unsafe { libc::kill(child.id() as i32, signal) };
    let deadline = Instant::now() + grace;
    while !matches!(child.try_wait(), Ok(Some(_))) {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    unmount_below(dir);
    delete_runc_entries_below(dir);
}

/// Deletes root's runc containers whose files lie below `dir` (a killed
/// daemon leaves its steps' entries behind) once their processes are gone.
pub fn delete_runc_entries_below(dir: &Path) {
    let needle = format!("{}/", dir.display());
    let Ok(entries) = std::fs::read_dir("/run/runc") else {
        return;
    };
    for e in entries.flatten() {
        let mentions =
            std::fs::read_to_string(e.path().join("state.json")).is_ok_and(|s| s.contains(&needle));
        if mentions {
            let _ = Command::new("runc")
                .arg("delete")
                .arg("--force")
                .arg(e.file_name())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Detaches every mount below `dir`, deepest first: a daemon that was
/// killed leaves its snapshot mounts behind, and the directory cannot be
/// removed while they are there.
pub fn unmount_below(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let prefix = format!("{}/", dir.display());
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").args(["-l", p]).status();
    }
}
