//! Registry tokens fetched by bkd on the daemon's behalf (the session's
//! `FetchToken`), as buildctl fetches them: the OAuth2 password or refresh
//! grant by POST, falling back to GET with basic auth where a token server
//! refuses the POST, or an anonymous GET. The credentials go to the token
//! endpoint the registry named, over its own connection; the daemon only
//! ever sees the token.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;

/// What the daemon asks for, with the credentials bkd adds.
pub struct TokenRequest<'a> {
    pub realm: &'a str,
    pub service: &'a str,
    pub scopes: &'a [String],
    pub username: &'a str,
    pub secret: &'a str,
}

/// A token and how long it lives (seconds; `issued_at` 0 when unknown).
#[derive(Debug, PartialEq)]
pub struct Token {
    pub token: String,
    pub expires_in: i64,
    pub issued_at: i64,
}

/// The client id buildctl sends in the OAuth2 grant.
const CLIENT_ID: &str = "buildkit-client";
/// A token lives this long when the server does not say (as buildctl).
const DEFAULT_EXPIRY: i64 = 60;
const TIMEOUT: Duration = Duration::from_secs(30);
/// More than any token response needs.
const MAX_BODY: usize = 1 << 20;

/// Fetches a token for `req`. With a secret: POST first, GET with basic
/// auth when the server answers 401, 404, or 405 with a user name; without
/// one: an anonymous GET. The error never holds the secret.
pub async fn fetch(req: &TokenRequest<'_>) -> Result<Token, String> {
    if req.secret.is_empty() {
        return get(req, false)
            .await
            .map_err(|e| format!("failed to fetch anonymous token: {e}"));
    }
    let posted = post(req).await;
    let fetched = match posted {
        Err(Failure::Status(code, _))
            if code == 401 || code == 404 || (code == 405 && !req.username.is_empty()) =>
        {
            get(req, true).await
        }
        other => other,
    };
    fetched.map_err(|e| format!("failed to fetch oauth token: {e}"))
}

enum Failure {
    /// The server answered with this status (and the request's method and
    /// realm for the message).
    Status(u16, String),
    Other(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status(_, m) | Failure::Other(m) => f.write_str(m),
        }
    }
}

impl From<Failure> for String {
    fn from(f: Failure) -> String {
        f.to_string()
    }
}

async fn post(req: &TokenRequest<'_>) -> Result<Token, Failure> {
    let mut form = vec![];
    if !req.scopes.is_empty() {
        form.push(("scope", req.scopes.join(" ")));
    }
    form.push(("service", req.service.to_string()));
    form.push(("client_id", CLIENT_ID.to_string()));
    if req.username.is_empty() {
        form.push(("grant_type", "refresh_token".into()));
        form.push(("refresh_token", req.secret.to_string()));
    } else {
        form.push(("grant_type", "password".into()));
        form.push(("username", req.username.to_string()));
        form.push(("password", req.secret.to_string()));
    }
    let body = form
        .iter()
        .map(|(k, v)| format!("{}={}", form_escape(k), form_escape(v)))
        .collect::<Vec<_>>()
        .join("&");
    let uri: http::Uri = req
        .realm
        .parse()
        .map_err(|_| Failure::Other(format!("invalid token realm {:?}", req.realm)))?;
    let request = http::Request::post(uri)
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded; charset=utf-8",
        )
        .body(Bytes::from(body))
        .map_err(|e| Failure::Other(e.to_string()))?;
    let (status, body) = send(request).await?;
    if !(200..400).contains(&status) {
        return Err(unexpected(status, "POST", req.realm));
    }
    parse(&body)
}

async fn get(req: &TokenRequest<'_>, with_secret: bool) -> Result<Token, Failure> {
    let mut query = Vec::new();
    if !req.service.is_empty() {
        query.push(format!("service={}", form_escape(req.service)));
    }
    for s in req.scopes {
        query.push(format!("scope={}", form_escape(s)));
    }
    let mut url = req.realm.to_string();
    if !query.is_empty() {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&query.join("&"));
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|_| Failure::Other(format!("invalid token realm {:?}", req.realm)))?;
    let mut request = http::Request::get(uri);
    if with_secret {
        use base64::Engine;
        let pair = format!("{}:{}", req.username, req.secret);
        let basic = base64::engine::general_purpose::STANDARD.encode(pair);
        request = request.header(http::header::AUTHORIZATION, format!("Basic {basic}"));
    }
    let request = request
        .body(Bytes::new())
        .map_err(|e| Failure::Other(e.to_string()))?;
    let (status, body) = send(request).await?;
    if !(200..400).contains(&status) {
        return Err(unexpected(status, "GET", req.realm));
    }
    parse(&body)
}

fn unexpected(status: u16, method: &str, realm: &str) -> Failure {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    Failure::Status(
        status,
        format!(
            "unexpected status from {method} request to {}: {status} {reason}",
            crate::text::escape_str(realm)
        ),
    )
}

/// The token in a response: `token` or `access_token` (the latter wins,
/// as in containerd), with its lifetime.
fn parse(body: &[u8]) -> Result<Token, Failure> {
    #[derive(serde::Deserialize)]
    struct Reply {
        #[serde(default)]
        token: String,
        #[serde(default)]
        access_token: String,
        #[serde(default)]
        expires_in: i64,
        #[serde(default)]
        issued_at: String,
    }
    let reply: Reply = serde_json::from_slice(body)
        .map_err(|e| Failure::Other(format!("unable to decode token response: {e}")))?;
    let token = if reply.access_token.is_empty() {
        reply.token
    } else {
        reply.access_token
    };
    if token.is_empty() {
        return Err(Failure::Other(
            "authorization server did not include a token in the response".into(),
        ));
    }
    Ok(Token {
        token,
        expires_in: if reply.expires_in > 0 {
            reply.expires_in
        } else {
            DEFAULT_EXPIRY
        },
        issued_at: rfc3339_seconds(&reply.issued_at).unwrap_or(0),
    })
}

/// Percent-encoding for `application/x-www-form-urlencoded` and queries.
fn form_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Seconds since the epoch of an RFC 3339 time (`2024-05-01T10:00:00Z`,
/// fractions and offsets allowed).
fn rfc3339_seconds(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = s.split_once(['T', 't'])?;
    let mut d = date.splitn(3, '-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let (clock, offset) = match time.find(['Z', 'z', '+', '-']) {
        Some(i) => (&time[..i], &time[i..]),
        None => return None,
    };
    let clock = clock.split('.').next()?;
    let mut c = clock.splitn(3, ':');
    let (hh, mm, ss): (i64, i64, i64) = (
        c.next()?.parse().ok()?,
        c.next()?.parse().ok()?,
        c.next()?.parse().ok()?,
    );
    let offset_s = match offset.as_bytes().first()? {
        b'Z' | b'z' => 0,
        sign => {
            let (oh, om) = offset[1..].split_once(':')?;
            let v = oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60;
            if *sign == b'-' {
                -v
            } else {
                v
            }
        }
    };
    // Days from the civil date (proleptic Gregorian), Howard Hinnant's way.
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + hh * 3600 + mm * 60 + ss - offset_s)
}

/// Whether the environment names an HTTP proxy, which bkd's token client
/// does not go through.
pub fn proxy_configured() -> bool {
    [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()))
}

/// One request over its own connection (HTTP/1.1, TLS for https).
async fn send(request: http::Request<Bytes>) -> Result<(u16, Bytes), Failure> {
    let uri = request.uri().clone();
    let host = uri
        .host()
        .ok_or_else(|| Failure::Other("token realm without a host".into()))?
        .trim_matches(['[', ']'])
        .to_string();
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            return Err(Failure::Other(format!(
                "token realm {} is not http(s)",
                crate::text::escape_str(&uri.to_string())
            )))
        }
    };
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| Failure::Other(format!("cannot connect to {host}:{port}: {e}")))?;
        if https {
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| Failure::Other(format!("bad server name {host:?}: {e}")))?;
            let tls = tokio_rustls::TlsConnector::from(tls_config()?)
                .connect(name, tcp)
                .await
                .map_err(|e| Failure::Other(format!("TLS with {host}:{port}: {e}")))?;
            exchange(TokioIo::new(tls), request, &host, port).await
        } else {
            exchange(TokioIo::new(tcp), request, &host, port).await
        }
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| Failure::Other(format!("no answer from {host}:{port} within 30s")))?
}

async fn exchange<T>(
    io: TokioIo<T>,
    request: http::Request<Bytes>,
    host: &str,
    port: u16,
) -> Result<(u16, Bytes), Failure>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| Failure::Other(format!("{host}:{port}: {e}")))?;
    let driver = tokio::spawn(conn);
    let (mut parts, body) = request.into_parts();
    let authority = if port == 80 || port == 443 {
        host.to_string()
    } else {
        format!("{host}:{port}")
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    parts.uri = path
        .parse()
        .map_err(|_| Failure::Other("bad token path".into()))?;
    let headers = &mut parts.headers;
    if let Ok(v) = http::HeaderValue::from_str(&authority) {
        headers.insert(http::header::HOST, v);
    }
    headers.insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static(concat!("bkd/", env!("CARGO_PKG_VERSION"))),
    );
    let request = http::Request::from_parts(parts, Full::new(body));
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| Failure::Other(format!("{host}:{port}: {e}")))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| Failure::Other(format!("{host}:{port}: {e}")))?
            .to_bytes();
        Ok((status, body))
    }
    .await;
    driver.abort();
    result
}

/// TLS with the system's certificate authorities (`SSL_CERT_FILE`, else
/// the distribution's bundle), as buildctl's default.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, Failure> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let bundle = std::env::var_os("SSL_CERT_FILE")
                .map(std::path::PathBuf::from)
                .into_iter()
                .chain(
                    [
                        "/etc/ssl/certs/ca-certificates.crt",
                        "/etc/pki/tls/certs/ca-bundle.crt",
                        "/etc/ssl/cert.pem",
                    ]
                    .map(std::path::PathBuf::from),
                )
                .find_map(|p| std::fs::read(p).ok())
                .unwrap_or_default();
            for der in pem_certificates(&bundle) {
                let _ = roots.add(rustls::pki_types::CertificateDer::from(der));
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(Failure::Other)
}

/// The DER certificates in a PEM bundle.
fn pem_certificates(pem: &[u8]) -> Vec<Vec<u8>> {
    use base64::Engine;
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line == "-----BEGIN CERTIFICATE-----" {
            current = Some(String::new());
        } else if line == "-----END CERTIFICATE-----" {
            if let Some(b64) = current.take() {
                if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b64) {
                    out.push(der);
                }
            }
        } else if let Some(b64) = current.as_mut() {
            b64.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_forms() {
        assert_eq!(rfc3339_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_seconds("2024-05-01T10:00:00Z"), Some(1714557600));
        assert_eq!(
            rfc3339_seconds("2024-05-01T12:00:00.123456+02:00"),
            Some(1714557600)
        );
        assert_eq!(rfc3339_seconds("yesterday"), None);
        assert_eq!(
            form_escape("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
        assert_eq!(form_escape("a b&c=d"), "a+b%26c%3Dd");
    }

    #[test]
    fn a_response_names_its_token_either_way() {
        let t = parse(br#"{"token":"t1","expires_in":300,"issued_at":"1970-01-01T00:01:00Z"}"#)
            .map_err(String::from)
            .expect("token");
        assert_eq!(
            t,
            Token {
                token: "t1".into(),
                expires_in: 300,
                issued_at: 60
            }
        );
        let t = parse(br#"{"token":"t1","access_token":"t2"}"#)
            .map_err(String::from)
            .expect("token");
        assert_eq!((t.token.as_str(), t.expires_in), ("t2", 60));
        assert!(parse(b"{}").is_err());
        assert!(parse(b"not json").is_err());
    }
}
