//! Connections to buildkitd: `unix://PATH` and `tcp://HOST:PORT` (optionally
//! TLS), as a tonic `Channel`. Knows nothing of BuildKit itself.

use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;

use crate::error::error_chain;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

/// Messages up to this size are accepted in both directions, as the daemon does.
pub const MAX_MESSAGE_SIZE: usize = 16 << 20;
/// HTTP/2 flow-control windows sized for bulk transfer.
pub const STREAM_WINDOW: u32 = 8 << 20;
pub const CONNECTION_WINDOW: u32 = 32 << 20;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(
        "unsupported daemon address {0:?}: use unix:///path/to/buildkitd.sock or tcp://host:port"
    )]
    BadAddress(String),
    #[error("cannot read {what} {}: {source}", crate::text::escape_path(path))]
    TlsFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--tlscert and --tlskey must be given together")]
    TlsPair,
    #[error(
        "cannot connect to buildkitd at {}: {reason}",
        crate::text::escape_str(addr)
    )]
    Connect { addr: String, reason: String },
}

/// TLS material for tcp addresses.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    pub ca_cert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub server_name: Option<String>,
}

impl TlsOptions {
    fn enabled(&self) -> bool {
        self.ca_cert.is_some() || self.cert.is_some() || self.key.is_some()
    }
}

/// A parsed daemon address.
#[derive(Debug, Clone, PartialEq)]
pub enum Address {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
}

impl Address {
    pub fn parse(addr: &str) -> Result<Self, TransportError> {
        let bad = || TransportError::BadAddress(addr.to_string());
        if let Some(path) = addr.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(bad());
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = addr.strip_prefix("tcp://") {
            let rest = rest.trim_end_matches('/');
            let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
            let port = port.parse().map_err(|_| bad())?;
            if host.is_empty() {
                return Err(bad());
            }
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            return Ok(Address::Tcp { host, port });
        }
        Err(bad())
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "unix://{}", p.display()),
            Address::Tcp { host, port } if host.contains(':') => write!(f, "tcp://[{host}]:{port}"),
            Address::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

fn tuned(endpoint: Endpoint) -> Endpoint {
    endpoint
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .http2_adaptive_window(false)
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(20))
}

/// Opens a channel to the daemon. The connection is made now, so an
/// unreachable daemon is reported here with its address.
pub async fn connect(addr: &Address, tls: &TlsOptions) -> Result<Channel, TransportError> {
    let connect_err = |e: &(dyn std::error::Error + 'static)| TransportError::Connect {
        addr: addr.to_string(),
        reason: error_chain(e),
    };
    match addr {
        Address::Unix(path) => {
            // The URI is only a placeholder: the connector ignores it.
            let endpoint = tuned(Endpoint::from_static("http://localhost"));
            let path = path.clone();
            endpoint
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(&path).await?;
                        Ok::<_, std::io::Error>(TokioIo::new(stream))
                    }
                }))
                .await
                .map_err(|e| connect_err(&e))
        }
        Address::Tcp { host, port } => {
            let authority = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            let scheme = if tls.enabled() { "https" } else { "http" };
            let mut endpoint = Endpoint::from_shared(format!("{scheme}://{authority}"))
                .map_err(|_| TransportError::BadAddress(addr.to_string()))?;
            if tls.enabled() {
                endpoint = endpoint
                    .tls_config(tls_config(host, tls)?)
                    .map_err(|e| connect_err(&e))?;
            }
            tuned(endpoint).connect().await.map_err(|e| connect_err(&e))
        }
    }
}

fn read(what: &'static str, path: &PathBuf) -> Result<Vec<u8>, TransportError> {
    std::fs::read(path).map_err(|source| TransportError::TlsFile {
        what,
        path: path.clone(),
        source,
    })
}

fn tls_config(host: &str, tls: &TlsOptions) -> Result<ClientTlsConfig, TransportError> {
    let mut cfg = ClientTlsConfig::new()
        .domain_name(tls.server_name.clone().unwrap_or_else(|| host.to_string()));
    if let Some(ca) = &tls.ca_cert {
        cfg = cfg.ca_certificate(Certificate::from_pem(read("CA certificate", ca)?));
    }
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            cfg = cfg.identity(Identity::from_pem(
                read("client certificate", cert)?,
                read("client key", key)?,
            ));
        }
        (None, None) => {}
        _ => return Err(TransportError::TlsPair),
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert_eq!(
            Address::parse("unix:///run/buildkit/buildkitd.sock").expect("unix"),
            Address::Unix("/run/buildkit/buildkitd.sock".into())
        );
        assert_eq!(
            Address::parse("tcp://127.0.0.1:1234").expect("tcp"),
            Address::Tcp {
                host: "127.0.0.1".into(),
                port: 1234
            }
        );
        assert!(Address::parse("/run/buildkit/buildkitd.sock").is_err());
        assert!(Address::parse("tcp://nohost").is_err());
        assert!(Address::parse("unix://").is_err());
    }
}
