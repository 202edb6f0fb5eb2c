//! Auth: answers the daemon's requests for registry credentials from the
//! Docker client configuration (`$DOCKER_CONFIG/config.json`, default
//! `~/.docker/config.json`): `auths` entries, `credHelpers` and `credsStore`.
//! Credentials never reach a log line: [`Credentials`] redacts itself.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde::Deserialize;
use tonic::{Request, Response, Status};

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

#[derive(Debug)]
pub struct AuthService {
    config: std::sync::Arc<DockerConfig>,
}

pub fn server(config: std::sync::Arc<DockerConfig>) -> AuthServer<AuthService> {
    AuthServer::new(AuthService { config })
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn credentials(
        &self,
        req: Request<CredentialsRequest>,
    ) -> Result<Response<CredentialsResponse>, Status> {
        let host = req.into_inner().host;
        let config = self.config.clone();
        let host2 = host.clone();
        let creds = tokio::task::spawn_blocking(move || config.credentials(&host2))
            .await
            .map_err(|_| Status::internal("credential lookup failed"))?
            .map_err(Status::unavailable)?;
        tracing::debug!(%host, anonymous = creds.username.is_empty() && creds.secret.is_empty(), "registry credentials requested");
        Ok(Response::new(CredentialsResponse {
            username: creds.username,
            secret: creds.secret,
        }))
    }

    async fn fetch_token(
        &self,
        _req: Request<FetchTokenRequest>,
    ) -> Result<Response<FetchTokenResponse>, Status> {
        Err(Status::unimplemented(
            "bkd lets the daemon fetch tokens itself",
        ))
    }

    async fn get_token_authority(
        &self,
        _req: Request<GetTokenAuthorityRequest>,
    ) -> Result<Response<GetTokenAuthorityResponse>, Status> {
        Err(Status::unimplemented(
            "bkd lets the daemon fetch tokens itself",
        ))
    }

    async fn verify_token_authority(
        &self,
        _req: Request<VerifyTokenAuthorityRequest>,
    ) -> Result<Response<VerifyTokenAuthorityResponse>, Status> {
        Err(Status::unimplemented(
            "bkd lets the daemon fetch tokens itself",
        ))
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
