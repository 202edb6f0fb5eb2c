//! A simulated buildkitd pool on this machine, set up as docs/pool.md
//! tells: certificates made by the document's own script, daemons started
//! with the StatefulSet's arguments (its `tcp://0.0.0.0:1234` becomes
//! loopback addresses and `/certs` the test's directory), and a DNS server
//! (dnsmasq on a loopback address) answering for the headless Service as
//! CoreDNS would. bkd runs in a private mount namespace whose
//! `/etc/resolv.conf` is a pod's in namespace `ci`; the machine's own is
//! never touched.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::spawn::{processes_matching, wait_for};
use super::{delete_runc_entries_below, stop_daemon_with, unmount_below, Run};

/// The Service's names, as in docs/pool.md.
pub const SERVICE_FQDN: &str = "buildkitd.ci.svc.cluster.local";
pub const SRV_NAME: &str = "_buildkitd._tcp.buildkitd.ci.svc.cluster.local";

/// The fenced block that follows `<!-- test: NAME -->` in docs/pool.md.
pub fn doc_block(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/pool.md");
    let text = std::fs::read_to_string(&path).expect("docs/pool.md");
    let marker = format!("<!-- test: {name} -->");
    let after = text
        .split_once(&marker)
        .unwrap_or_else(|| panic!("docs/pool.md has no {marker}"))
        .1;
    let body = after
        .split_once("```")
        .and_then(|(_, rest)| rest.split_once('\n'))
        .map(|(_, rest)| rest)
        .expect("a fenced block after the marker");
    body.split_once("\n```")
        .map(|(b, _)| b)
        .expect("the fenced block ends")
        .to_string()
}

/// The `args:` of the first container of a YAML block, in order.
fn yaml_args(yaml: &str) -> Vec<String> {
    let mut lines = yaml.lines();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let start = lines
        .by_ref()
        .find(|l| l.trim() == "args:")
        .expect("the StatefulSet's container has args");
    let base = indent(start);
    lines
        .take_while(|l| indent(l) > base && l.trim_start().starts_with("- "))
        .map(|l| l.trim_start()[2..].trim().to_string())
        .collect()
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A port free on every one of `hosts` at once.
fn port_free_on(hosts: &[String]) -> u16 {
    for _ in 0..100 {
        let port = free_port();
        let all = hosts
            .iter()
            .all(|h| std::net::TcpListener::bind((h.as_str(), port)).is_ok());
        if all {
            return port;
        }
    }
    panic!("no port free on all of {hosts:?}");
}

/// One daemon of the pool.
pub struct PoolDaemon {
    child: Option<Child>,
    /// `tcp://127.0.0.1:PORT`, as a fixed `--addr`.
    pub addr: String,
    pub port: u16,
    /// Its own unix socket, for buildctl's history queries.
    pub socket: String,
    pub root: PathBuf,
    pub log: PathBuf,
    /// The pod name its SRV record gives.
    pub pod: String,
}

impl PoolDaemon {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn ready(&self) -> bool {
        Command::new("buildctl")
            .args(["--addr", &self.socket, "debug", "workers"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn stop(&mut self, signal: i32) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        stop_daemon_with(&mut child, signal, Duration::from_secs(15), &self.root);
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// dnsmasq serving the Service's records, and a pod's resolv.conf.
struct Dns {
    child: Child,
    resolv: PathBuf,
    log: PathBuf,
}

pub struct Fleet {
    pub daemons: Vec<PoolDaemon>,
    pub certs: PathBuf,
    /// The port every daemon also listens on at its own 127.0.1.N address
    /// (and daemon 0 at [::1]), for the A/AAAA records.
    pub shared_port: u16,
    dns: Option<Dns>,
    dir: tempfile::TempDir,
    /// Step processes a killed daemon leaves, killed on drop.
    pub leftovers: Vec<String>,
}

/// The loopback address of daemon `i` in the Service's A records.
pub fn record_ip(i: usize) -> String {
    format!("127.0.1.{}", i + 1)
}

impl Fleet {
    /// `n` daemons with fixed addresses only.
    pub fn start(n: usize) -> Fleet {
        Fleet::start_inner(n, false)
    }

    /// `n` daemons, plus DNS records for them.
    pub fn start_with_dns(n: usize) -> Fleet {
        Fleet::start_inner(n, true)
    }

    fn start_inner(n: usize, with_dns: bool) -> Fleet {
        for bin in ["buildkitd", "buildctl", "openssl", "unshare", "dnsmasq"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {bin}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(found, "{bin} not found: run scripts/setup.sh");
        }
        let dir = tempfile::Builder::new()
            .prefix("bkd-pool-")
            .tempdir()
            .expect("temp dir");
        let certs = dir.path().join("certs");
        std::fs::create_dir_all(&certs).expect("certs dir");
        let mut extra = vec!["IP:127.0.0.1".to_string(), "IP:0:0:0:0:0:0:0:1".into()];
        extra.extend((0..n).map(|i| format!("IP:{}", record_ip(i))));
        let out = Command::new("sh")
            .args(["-e", "-c", &doc_block("certs")])
            .current_dir(&certs)
            .env("EXTRA_SANS", extra.join(","))
            .env("DAYS", "2")
            .output()
            .expect("run the certificate script");
        assert!(
            out.status.success(),
            "docs/pool.md's certificate script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut hosts: Vec<String> = (0..n).map(record_ip).collect();
        hosts.push("::1".into());
        let shared_port = port_free_on(&hosts);
        let args = yaml_args(&doc_block("statefulset"));
        let mut daemons = Vec::new();
        for i in 0..n {
            let port = free_port();
            let root = dir.path().join(format!("root{i}"));
            let socket = format!("unix://{}", dir.path().join(format!("d{i}.sock")).display());
            let mut listen = vec![format!("tcp://127.0.0.1:{port}")];
            if with_dns {
                listen.push(format!("tcp://{}:{shared_port}", record_ip(i)));
                if i == 0 {
                    listen.push(format!("tcp://[::1]:{shared_port}"));
                }
            }
            // Each daemon its own tracing socket: on one machine they would
            // all bind /run/buildkit/otel-grpc.sock, and two starting at once
            // fail (a pod has a /run of its own).
            let otel = dir.path().join(format!("otel{i}.sock"));
            let mut argv: Vec<String> = vec![
                "--root".into(),
                root.display().to_string(),
                "--otel-socket-path".into(),
                otel.display().to_string(),
            ];
            let mut iter = args.iter().peekable();
            while let Some(a) = iter.next() {
                match a.as_str() {
                    "--addr" if iter.peek().is_some_and(|v| v.starts_with("tcp://")) => {
                        iter.next();
                        for l in &listen {
                            argv.push("--addr".into());
                            argv.push(l.clone());
                        }
                    }
                    "unix:///run/buildkit/buildkitd.sock" => argv.push(socket.clone()),
                    v if v.starts_with("/certs/") => {
                        argv.push(certs.join(&v["/certs/".len()..]).display().to_string())
                    }
                    v => {
                        assert!(!v.starts_with('/'), "unmapped path {v} in the StatefulSet");
                        argv.push(v.to_string());
                    }
                }
            }
            let log = dir.path().join(format!("buildkitd{i}.log"));
            let file = std::fs::File::create(&log).expect("log");
            let child = Command::new("buildkitd")
                .args(&argv)
                .stdout(file.try_clone().expect("log"))
                .stderr(file)
                .spawn()
                .expect("start buildkitd");
            daemons.push(PoolDaemon {
                child: Some(child),
                addr: format!("tcp://127.0.0.1:{port}"),
                port,
                socket,
                root,
                log,
                pod: format!("buildkitd-{i}.{SERVICE_FQDN}"),
            });
        }
        let mut fleet = Fleet {
            daemons,
            certs,
            shared_port,
            dns: None,
            dir,
            leftovers: Vec::new(),
        };
        for d in &fleet.daemons {
            let ready = wait_for(Duration::from_secs(60), || d.ready());
            assert!(ready, "buildkitd {} not ready:\n{}", d.addr, d.log_tail());
        }
        if with_dns {
            fleet.dns = Some(fleet.start_dns());
        }
        fleet
    }

    fn start_dns(&self) -> Dns {
        let pid = std::process::id();
        let mut records = Vec::new();
        for (i, d) in self.daemons.iter().enumerate() {
            let mut a = format!("--host-record={SERVICE_FQDN},{}", record_ip(i));
            if i == 0 {
                a.push_str(",::1");
            }
            records.push(a);
            records.push(format!("--srv-host={SRV_NAME},{},{},0,10", d.pod, d.port));
            records.push(format!("--host-record={},127.0.0.1", d.pod));
        }
        for attempt in 0..20u32 {
            let ip = format!(
                "127.53.{}.{}",
                (pid + attempt) % 250 + 1,
                (pid / 250 + attempt) % 250 + 1
            );
            let log = self.dir.path().join("dnsmasq.log");
            let mut child = Command::new("dnsmasq")
                .args([
                    "--keep-in-foreground",
                    "--no-resolv",
                    "--no-hosts",
                    "--bind-interfaces",
                    "--port=53",
                    "--pid-file=",
                    "--user=root",
                    "--local=/cluster.local/",
                    "--log-queries",
                ])
                .arg(format!("--listen-address={ip}"))
                .arg(format!("--log-facility={}", log.display()))
                .args(&records)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start dnsmasq");
            let up = wait_for(Duration::from_secs(5), || {
                matches!(child.try_wait(), Ok(Some(_)))
                    || std::net::TcpStream::connect((ip.as_str(), 53)).is_ok()
            });
            if up && matches!(child.try_wait(), Ok(None)) {
                let resolv = self.dir.path().join("resolv.conf");
                std::fs::write(
                    &resolv,
                    format!(
                        "nameserver {ip}\nsearch ci.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 timeout:2 attempts:2\n"
                    ),
                )
                .expect("resolv.conf");
                return Dns { child, resolv, log };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("dnsmasq did not start on any 127.53.x.y address");
    }

    /// bkd's TLS flags for the pool.
    pub fn tls_flags(&self) -> Vec<String> {
        let c = |n: &str| self.certs.join(n).display().to_string();
        vec![
            "--tlscacert".into(),
            c("ca.pem"),
            "--tlscert".into(),
            c("client.pem"),
            "--tlskey".into(),
            c("client-key.pem"),
        ]
    }

    /// Every daemon's fixed address, as one comma list.
    pub fn addr_list(&self) -> String {
        self.daemons
            .iter()
            .map(|d| d.addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The command that runs bkd with `args` (in the pod's DNS view when
    /// the fleet has DNS), killed after five minutes.
    pub fn command(&self, args: &[String], cwd: &Path, env: &[(&str, &str)]) -> Command {
        let bkd = env!("CARGO_BIN_EXE_bkd");
        let mut cmd = match &self.dns {
            Some(dns) => {
                let mut c = Command::new("unshare");
                c.args(["-m", "--", "sh", "-c"])
                    .arg("mount --bind \"$0\" /etc/resolv.conf && exec \"$@\"")
                    .arg(&dns.resolv)
                    .args(["timeout", "300", bkd]);
                c
            }
            None => {
                let mut c = Command::new("timeout");
                c.args(["300", bkd]);
                c
            }
        };
        cmd.args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .env_remove("BUILDKIT_HOST")
            .env_remove("BKD_ADDR");
        for var in [
            "BUILDKITE",
            "BUILDKITE_REPO",
            "BUILDKITE_BUILD_CHECKOUT_PATH",
            "GITHUB_REPOSITORY",
            "GITHUB_WORKSPACE",
            "CI_PROJECT_PATH",
            "CI_PROJECT_DIR",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs bkd to the end.
    pub fn bkd(&self, args: &[String], cwd: &Path, env: &[(&str, &str)]) -> Run {
        let out = self.command(args, cwd, env).output().expect("run bkd");
        let env_text: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        Run {
            cmd: format!("{} bkd {}", env_text.join(" "), args.join(" ")),
            cwd: cwd.to_path_buf(),
            out,
        }
    }

    /// SIGKILLs daemon `i`, as a node failure would.
    pub fn kill(&mut self, i: usize) {
        self.daemons[i].stop(libc::SIGKILL);
    }

    /// The daemon's build history records, as buildctl prints them.
    pub fn histories(&self, i: usize) -> Vec<serde_json::Value> {
        let out = Command::new("buildctl")
            .args([
                "--addr",
                &self.daemons[i].socket,
                "debug",
                "histories",
                "--format",
                "{{json .}}",
            ])
            .output()
            .expect("buildctl debug histories");
        assert!(
            out.status.success(),
            "buildctl debug histories: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let value: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            // One JSON value per record, one per line, in older versions.
            let lines: Result<Vec<serde_json::Value>, _> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(serde_json::from_str)
                .collect();
            serde_json::Value::Array(lines.unwrap_or_else(|_| panic!("history JSON: {e}\n{text}")))
        });
        match value {
            serde_json::Value::Array(a) => a,
            serde_json::Value::Null => Vec::new(),
            other => vec![other],
        }
    }

    /// What the DNS server answered, for failure messages.
    pub fn dns_log(&self) -> String {
        self.dns
            .as_ref()
            .map(|d| std::fs::read_to_string(&d.log).unwrap_or_default())
            .unwrap_or_default()
    }

    /// Every daemon's log tail, for failure messages.
    pub fn logs(&self) -> String {
        self.daemons
            .iter()
            .map(|d| format!("--- {} ---\n{}", d.addr, d.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            d.stop(libc::SIGTERM);
        }
        for marker in &self.leftovers {
            for p in processes_matching(marker) {
                if let Some(pid) = p.split(':').next().and_then(|p| p.parse::<i32>().ok()) {
                    // SAFETY: signalling a leftover step process this test started.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        if let Some(dns) = &mut self.dns {
            let _ = dns.child.kill();
            let _ = dns.child.wait();
        }
        unmount_below(self.dir.path());
        // A daemon killed during a step leaves that step's runc entry.
        delete_runc_entries_below(self.dir.path());
    }
}
