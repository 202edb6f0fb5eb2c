//! A registry behind token auth, as Docker Hub and most hosted registries
//! are: `docker-registry` configured for bearer tokens, and a token server
//! of the test's own that signs them (ES256, with a certificate made by
//! openssl for the registry to trust). The token server records which
//! process asked for a token (found from the connection's socket) and
//! whether the request carried the password, so a test can tell the
//! client's requests from the daemon's.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;

pub const TOKEN_USER: &str = "bkd-token-user";
pub const TOKEN_PASSWORD: &str = "t0ken-Registry-pa55-for-tests";
const SERVICE: &str = "bkd-test-registry";
const ISSUER: &str = "bkd-test-token-issuer";

/// One request the token server answered.
#[derive(Debug, Clone)]
pub struct TokenRequestSeen {
    pub method: String,
    pub user_agent: String,
    /// The name of the process that connected (`buildkitd`, `bkd`,
    /// `buildctl`), found from its socket.
    pub process: String,
    /// The password was in it (basic auth or the form).
    pub carried_password: bool,
    pub scopes: Vec<String>,
    pub status: u16,
}

pub struct TokenRegistry {
    /// The registry, `127.0.0.1:PORT`.
    pub addr: String,
    /// The token server's realm URL.
    pub realm: String,
    seen: Arc<Mutex<Vec<TokenRequestSeen>>>,
    registry: std::process::Child,
    _dir: tempfile::TempDir,
}

impl TokenRegistry {
    pub fn start() -> TokenRegistry {
        let dir = tempfile::tempdir().expect("temp dir");
        let sh = |script: &str| {
            let out = Command::new("sh")
                .arg("-c")
                .arg(script)
                .current_dir(dir.path())
                .output()
                .expect("openssl: run scripts/setup.sh");
            assert!(
                out.status.success(),
                "openssl failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        sh("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out key.pem && \
            openssl pkcs8 -topk8 -nocrypt -in key.pem -outform DER -out key.der && \
            openssl req -x509 -new -key key.pem -subj /CN=bkd-test-token-issuer -days 2 -out cert.pem && \
            openssl x509 -in cert.pem -outform DER -out cert.der");
        let key_der = std::fs::read(dir.path().join("key.der")).expect("key");
        let cert_der = std::fs::read(dir.path().join("cert.der")).expect("cert");
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key_der,
            &rng,
        )
        .expect("the token key");

        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the token server");
        let realm = format!(
            "http://{}/token",
            listener.local_addr().expect("token server address")
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let signer = Arc::new(Signer {
            key,
            x5c: base64::engine::general_purpose::STANDARD.encode(cert_der),
        });
        std::thread::spawn({
            let seen = seen.clone();
            move || {
                for stream in listener.incoming().flatten() {
                    let (seen, signer) = (seen.clone(), signer.clone());
                    std::thread::spawn(move || serve(stream, &seen, &signer));
                }
            }
        });

        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let addr = format!("127.0.0.1:{port}");
        let storage = dir.path().join("storage");
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n\
             auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            storage.display(),
            dir.path().join("cert.pem").display()
        );
        let config_path = dir.path().join("registry.yml");
        std::fs::write(&config_path, config).expect("registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
        let registry = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let reg = TokenRegistry {
            addr,
            realm,
            seen,
            registry,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while super::registry_get(&reg.addr, "/v2/", &[]).is_none() {
            assert!(Instant::now() < deadline, "token registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    /// A Docker config directory with the password for this registry.
    pub fn docker_config(&self, dir: &Path) {
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("{TOKEN_USER}:{TOKEN_PASSWORD}"));
        std::fs::write(
            dir.join("config.json"),
            format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, self.addr),
        )
        .expect("config.json");
    }

    /// The token requests seen so far.
    pub fn seen(&self) -> Vec<TokenRequestSeen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn clear(&self) {
        if let Ok(mut s) = self.seen.lock() {
            s.clear();
        }
    }

    /// The registry's log (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for TokenRegistry {
    fn drop(&mut self) {
        let _ = self.registry.kill();
        let _ = self.registry.wait();
    }
}

struct Signer {
    key: ring::signature::EcdsaKeyPair,
    x5c: String,
}

impl Signer {
    fn token(&self, subject: &str, scopes: &[String], authorized: bool) -> String {
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let access: Vec<serde_json::Value> = scopes
            .iter()
            .filter_map(|s| {
                let mut parts = s.splitn(3, ':');
                let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                let actions: Vec<&str> = if authorized {
                    actions.split(',').collect()
                } else {
                    Vec::new()
                };
                Some(serde_json::json!({"type": kind, "name": name, "actions": actions}))
            })
            .collect();
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [self.x5c]});
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": subject, "aud": SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now,
            "jti": format!("{now}-{}", std::process::id()), "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rng = ring::rand::SystemRandom::new();
        let signature = self
            .key
            .sign(&rng, signing_input.as_bytes())
            .expect("sign the token");
        format!("{signing_input}.{}", b64(signature.as_ref()))
    }
}

/// Query or form fields: `a=1&b=2`, percent-decoded.
fn fields(text: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let bytes = s.replace('+', " ").into_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                if let Ok(b) =
                    u8::from_str_radix(&String::from_utf8_lossy(&bytes[i + 1..i + 3]), 16)
                {
                    out.push(b);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    text.split('&')
        .filter(|f| !f.is_empty())
        .map(|f| {
            let (k, v) = f.split_once('=').unwrap_or((f, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// The command name of the process whose TCP socket has local port
/// `port` on 127.0.0.1 (the peer of a connection accepted here).
fn process_on_port(port: u16) -> String {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let inode = table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let local_port = f.get(1)?.rsplit(':').next()?;
        (u16::from_str_radix(local_port, 16).ok()? == port)
            .then(|| f.get(9).map(|s| s.to_string()))?
    });
    let Some(inode) = inode else {
        return "unknown".into();
    };
    let target = format!("socket:[{inode}]");
    for proc_entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == target) {
                return std::fs::read_to_string(proc_entry.path().join("comm"))
                    .map(|c| c.trim().to_string())
                    .unwrap_or_default();
            }
        }
    }
    "unknown".into()
}

fn serve(stream: TcpStream, seen: &Mutex<Vec<TokenRequestSeen>>, signer: &Signer) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let process = stream
        .peer_addr()
        .map(|a| process_on_port(a.port()))
        .unwrap_or_default();
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let (mut length, mut agent, mut authorization) = (0usize, String::new(), String::new());
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = v.trim().parse().unwrap_or(0),
                    "user-agent" => agent = v.trim().to_string(),
                    "authorization" => authorization = v.trim().to_string(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
        let mut fields = fields(query);
        if method == "POST" {
            fields.extend(self::fields(&String::from_utf8_lossy(&body)));
        }
        let scopes: Vec<String> = fields
            .iter()
            .filter(|(k, _)| k == "scope")
            .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
            .collect();
        let field = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let basic = authorization
            .strip_prefix("Basic ")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let (user, password) = match (basic, field("password")) {
            (Some(pair), _) => {
                let (u, p) = pair.split_once(':').unwrap_or((&pair, ""));
                (u.to_string(), Some(p.to_string()))
            }
            (None, Some(p)) => (field("username").unwrap_or_default(), Some(p)),
            (None, None) => (String::new(), None),
        };
        let carried_password = password.as_deref() == Some(TOKEN_PASSWORD)
            || String::from_utf8_lossy(&body).contains(TOKEN_PASSWORD)
            || target.contains(TOKEN_PASSWORD);
        let (status, reply) = match password {
            Some(p) if user == TOKEN_USER && p == TOKEN_PASSWORD => {
                (200, Some(signer.token(&user, &scopes, true)))
            }
            Some(_) => (401, None),
            None => (200, Some(signer.token("", &scopes, false))),
        };
        if let Ok(mut s) = seen.lock() {
            s.push(TokenRequestSeen {
                method: method.clone(),
                user_agent: agent,
                process: process.clone(),
                carried_password,
                scopes: scopes.clone(),
                status,
            });
        }
        let response = match reply {
            Some(token) => {
                let body = serde_json::json!({
                    "token": token, "access_token": token, "expires_in": 300,
                })
                .to_string();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            }
            None => "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n".to_string(),
        };
        if stream.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}
