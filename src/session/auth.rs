//! Auth: registry access for the daemon from the Docker client
//! configuration (`$DOCKER_CONFIG/config.json`, default
//! `~/.docker/config.json`): `auths` entries, `credHelpers` and `credsStore`.
//!
//! As buildctl does, bkd fetches registry tokens itself: the daemon asks
//! for a token authority (a key bkd derives per registry), then for tokens
//! (`FetchToken`), and bkd sends the password to the registry's token
//! server, never to the daemon. Only a registry that wants basic auth gets
//! the password through the daemon (`Credentials`), as with buildctl.
//! Credentials never reach a log line: [`Credentials`] redacts itself.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde::Deserialize;
use tonic::{Request, Response, Status};

use super::token;
use crate::proto::moby::filesync::v1::auth_server::{Auth, AuthServer};
use crate::proto::moby::filesync::v1::{
    CredentialsRequest, CredentialsResponse, FetchTokenRequest, FetchTokenResponse,
    GetTokenAuthorityRequest, GetTokenAuthorityResponse, VerifyTokenAuthorityRequest,
    VerifyTokenAuthorityResponse,
};

/// The key Docker Hub credentials are stored under.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// A user name and secret for one registry.
#[derive(Clone, Default, PartialEq)]
pub struct Credentials {
    pub username: String,
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    identitytoken: String,
}

#[derive(Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: String,
}

/// The parsed Docker client configuration.
#[derive(Default)]
pub struct DockerConfig {
    file: ConfigFile,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for DockerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerConfig")
            .field("path", &self.path)
            .field("registries", &self.file.auths.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot read Docker config {}: {reason}",
    crate::text::escape_path(path)
)]
pub struct ConfigError {
    pub path: PathBuf,
    pub reason: String,
}

impl DockerConfig {
    /// Where the config lives: `$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`.
    pub fn default_path() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            return Some(PathBuf::from(dir).join("config.json"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
    }

    /// Loads the config; a missing file is an empty config.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Ok(DockerConfig::default());
        };
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(DockerConfig::default())
            }
            Err(e) => {
                return Err(ConfigError {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
            }
        };
        // The parse error is reported without the text: it holds secrets.
        let file: ConfigFile = serde_json::from_slice(&text).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            reason: format!("invalid JSON at line {} column {}", e.line(), e.column()),
        })?;
        Ok(DockerConfig {
            file,
            path: Some(path.to_path_buf()),
        })
    }

    /// Credentials for a registry host as the daemon names it.
    pub fn credentials(&self, host: &str) -> Result<Credentials, String> {
        let key = config_key(host);
        let helper = self
            .file
            .cred_helpers
            .get(&key)
            .or_else(|| self.file.cred_helpers.get(host))
            .or(Some(&self.file.creds_store).filter(|s| !s.is_empty()));
        if let Some(entry) = self.find_entry(&key) {
            let from_file = decode_entry(entry).map_err(|e| format!("{key}: {e}"))?;
            if from_file != Credentials::default() {
                return Ok(from_file);
            }
        }
        match helper {
            Some(helper) => run_helper(helper, &key),
            None => Ok(Credentials::default()),
        }
    }

    fn find_entry(&self, key: &str) -> Option<&AuthEntry> {
        if let Some(e) = self.file.auths.get(key) {
            return Some(e);
        }
        let want = normalize(key);
        self.file
            .auths
            .iter()
            .find(|(k, _)| normalize(k) == want)
            .map(|(_, e)| e)
    }
}

/// The config key for a registry host.
fn config_key(host: &str) -> String {
    match host {
        "registry-1.docker.io" | "docker.io" | "index.docker.io" => DOCKER_HUB_KEY.to_string(),
        h => h.to_string(),
    }
}

/// `https://host/v1/` and `host` name the same registry.
fn normalize(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.split('/').next().unwrap_or(k);
    match k {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".into(),
        other => other.to_string(),
    }
}

fn decode_entry(e: &AuthEntry) -> Result<Credentials, String> {
    if !e.identitytoken.is_empty() {
        return Ok(Credentials {
            username: String::new(),
            secret: e.identitytoken.clone(),
        });
    }
    if !e.auth.is_empty() {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(e.auth.trim())
            .map_err(|_| "the auth field is not valid base64".to_string())?;
        let text = String::from_utf8(raw).map_err(|_| "the auth field is not UTF-8".to_string())?;
        let (user, pass) = text
            .split_once(':')
            .ok_or_else(|| "the auth field is not user:password".to_string())?;
        return Ok(Credentials {
            username: user.to_string(),
            secret: pass.to_string(),
        });
    }
    Ok(Credentials {
        username: e.username.clone(),
        secret: e.password.clone(),
    })
}

#[derive(Deserialize)]
struct HelperReply {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Runs `docker-credential-NAME get` with the server on stdin.
fn run_helper(name: &str, server: &str) -> Result<Credentials, String> {
    let program = format!("docker-credential-{name}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run credential helper {program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("credential helper {program} failed: {e}"))?;
    if !out.status.success() {
        // "credentials not found" is anonymous access, not an error.
        return Ok(Credentials::default());
    }
    let reply: HelperReply = serde_json::from_slice(&out.stdout)
        .map_err(|_| format!("credential helper {program} printed something that is not JSON"))?;
    if reply.username == "<token>" {
        return Ok(Credentials {
            username: String::new(),
            secret: reply.secret,
        });
    }
    Ok(Credentials {
        username: reply.username,
        secret: reply.secret,
    })
}

/// Progress lines the auth service adds to the build's display, as
/// buildctl's `[auth] ...` steps.
pub type AuthProgress = tokio::sync::mpsc::UnboundedSender<crate::progress::Update>;

pub struct AuthService {
    config: std::sync::Arc<DockerConfig>,
    progress: Option<AuthProgress>,
    /// Per registry, a random seed of this run: the token authority's key
    /// is derived from it, so no other client of a shared daemon can use
    /// the tokens bkd fetched.
    seeds: std::sync::Mutex<HashMap<String, [u8; 16]>>,
    /// Registries whose credentials were shared (said once per registry).
    shared: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for AuthService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

pub fn server(
    config: std::sync::Arc<DockerConfig>,
    progress: Option<AuthProgress>,
) -> AuthServer<AuthService> {
    AuthServer::new(AuthService::new(config, progress))
}

impl AuthService {
    pub fn new(config: std::sync::Arc<DockerConfig>, progress: Option<AuthProgress>) -> Self {
        AuthService {
            config,
            progress,
            seeds: Default::default(),
            shared: Default::default(),
        }
    }

    async fn lookup(&self, host: &str) -> Result<Credentials, Status> {
        let config = self.config.clone();
        let host = host.to_string();
        tokio::task::spawn_blocking(move || config.credentials(&host))
            .await
            .map_err(|_| Status::internal("credential lookup failed"))?
            .map_err(|e| Status::unavailable(crate::text::one_line(&e)))
    }

    /// A step of its own in the build's progress, as buildctl shows one.
    fn announce(&self, name: String, started: std::time::SystemTime, error: Option<&str>) {
        let Some(progress) = &self.progress else {
            return;
        };
        use ring::digest::{digest, SHA256};
        let id = super::random_id();
        let hex: String = digest(&SHA256, id.as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let vertex = crate::progress::events::Vertex {
            digest: format!("sha256:{hex}"),
            name,
            started: Some(started),
            completed: Some(std::time::SystemTime::now()),
            error: error.map(str::to_string).unwrap_or_default(),
            ..Default::default()
        };
        let _ = progress.send(crate::progress::Update {
            vertexes: vec![vertex],
            ..Default::default()
        });
    }

    /// The token authority's key for `host` and the daemon's `salt`: an
    /// ed25519 key from HMAC-SHA256(salt, seed), the seed left out for a
    /// registry without credentials (so anonymous tokens stay shareable),
    /// as buildctl derives it.
    fn authority_key(
        &self,
        host: &str,
        salt: &[u8],
        has_secret: bool,
    ) -> Result<ring::signature::Ed25519KeyPair, Status> {
        if std::env::var("BUILDKIT_NO_CLIENT_TOKEN")
            .is_ok_and(|v| matches!(v.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True"))
        {
            return Err(Status::unavailable("client side tokens disabled"));
        }
        if token::proxy_configured() {
            // bkd's token client has no proxy support; the daemon's has.
            return Err(Status::unavailable(
                "client side tokens unavailable behind a proxy",
            ));
        }
        let seed = {
            let mut seeds = self
                .seeds
                .lock()
                .map_err(|_| Status::internal("token seeds poisoned"))?;
            *seeds.entry(host.to_string()).or_insert_with(|| {
                use rand::Rng;
                rand::rng().random()
            })
        };
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, salt);
        let mut ctx = ring::hmac::Context::with_key(&key);
        if has_secret {
            ctx.update(&seed);
        }
        let sum = ctx.sign();
        ring::signature::Ed25519KeyPair::from_seed_unchecked(&sum.as_ref()[..32])
            .map_err(|_| Status::internal("cannot derive the token authority key"))
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    /// The raw credentials: only for a registry that wants basic auth
    /// (token registries get tokens through [`Auth::fetch_token`]).
    async fn credentials(
        &self,
        req: Request<CredentialsRequest>,
    ) -> Result<Response<CredentialsResponse>, Status> {
        let host = req.into_inner().host;
        let started = std::time::SystemTime::now();
        let creds = self.lookup(&host).await?;
        let shown = crate::text::escape_str(&host);
        tracing::debug!(host = %shown, anonymous = creds.username.is_empty() && creds.secret.is_empty(), "registry credentials requested");
        if !creds.secret.is_empty() {
            let first = self
                .shared
                .lock()
                .map(|mut s| s.insert(host.clone()))
                .unwrap_or(false);
            if first {
                self.announce(
                    format!("[auth] sharing credentials for {shown}"),
                    started,
                    None,
                );
            }
        }
        Ok(Response::new(CredentialsResponse {
            username: creds.username,
            secret: creds.secret,
        }))
    }

    async fn fetch_token(
        &self,
        req: Request<FetchTokenRequest>,
    ) -> Result<Response<FetchTokenResponse>, Status> {
        let req = req.into_inner();
        let started = std::time::SystemTime::now();
        let creds = self.lookup(&req.host).await?;
        let request = token::TokenRequest {
            realm: &req.realm,
            service: &req.service,
            scopes: &req.scopes,
            username: &creds.username,
            secret: &creds.secret,
        };
        let fetched = token::fetch(&request).await;
        if !creds.secret.is_empty() {
            let scopes: Vec<String> = req
                .scopes
                .iter()
                .map(|s| crate::text::escape_str(s.strip_prefix("repository:").unwrap_or(s)))
                .collect();
            let name = format!(
                "[auth] {} token for {}",
                scopes.join(" "),
                crate::text::escape_str(&req.host)
            );
            self.announce(name, started, fetched.as_ref().err().map(String::as_str));
        }
        let fetched = fetched.map_err(Status::unknown)?;
        tracing::debug!(host = %crate::text::escape_str(&req.host), "registry token fetched for the daemon");
        Ok(Response::new(FetchTokenResponse {
            token: fetched.token,
            expires_in: fetched.expires_in,
            issued_at: fetched.issued_at,
        }))
    }

    async fn get_token_authority(
        &self,
        req: Request<GetTokenAuthorityRequest>,
    ) -> Result<Response<GetTokenAuthorityResponse>, Status> {
        use ring::signature::KeyPair;
        let req = req.into_inner();
        let creds = self.lookup(&req.host).await?;
        let key = self.authority_key(&req.host, &req.salt, !creds.secret.is_empty())?;
        Ok(Response::new(GetTokenAuthorityResponse {
            public_key: key.public_key().as_ref().to_vec().into(),
        }))
    }

    /// Proves bkd holds the authority's key: the payload signed (the
    /// signature, then the payload, as NaCl's sign does).
    async fn verify_token_authority(
        &self,
        req: Request<VerifyTokenAuthorityRequest>,
    ) -> Result<Response<VerifyTokenAuthorityResponse>, Status> {
        let req = req.into_inner();
        let creds = self.lookup(&req.host).await?;
        let key = self.authority_key(&req.host, &req.salt, !creds.secret.is_empty())?;
        let mut signed = key.sign(&req.payload).as_ref().to_vec();
        signed.extend_from_slice(&req.payload);
        Ok(Response::new(VerifyTokenAuthorityResponse {
            signed: signed.into(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> DockerConfig {
        DockerConfig {
            file: serde_json::from_str(json).expect("json"),
            path: None,
        }
    }

    #[test]
    fn reads_base64_auth_and_plain_fields() {
        let c = config(
            r#"{"auths":{"localhost:5000":{"auth":"dXNlcjpwYXNz"},"https://ghcr.io/v1/":{"username":"u","password":"p"}}}"#,
        );
        assert_eq!(
            c.credentials("localhost:5000").expect("creds"),
            Credentials {
                username: "user".into(),
                secret: "pass".into()
            }
        );
        assert_eq!(c.credentials("ghcr.io").expect("creds").secret, "p");
        assert_eq!(
            c.credentials("other.io").expect("creds"),
            Credentials::default()
        );
    }

    #[test]
    fn docker_hub_hosts_map_to_the_hub_key() {
        let c = config(r#"{"auths":{"https://index.docker.io/v1/":{"identitytoken":"tok"}}}"#);
        let creds = c.credentials("registry-1.docker.io").expect("creds");
        assert_eq!(creds.username, "");
        assert_eq!(creds.secret, "tok");
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let creds = Credentials {
            username: "u".into(),
            secret: "hunter2".into(),
        };
        assert!(!format!("{creds:?}").contains("hunter2"));
    }
}
