//! What the user names as a daemon: a fixed address, or a name to discover
//! the pool's members by in DNS. Parsed once; discovery turns specs into
//! endpoints (one address each).

use crate::transport::Address;

/// One entry of `--addr` (or of a comma list in `BUILDKIT_HOST`/`BKD_ADDR`).
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointSpec {
    /// The entry as given, for messages.
    pub raw: String,
    pub kind: SpecKind,
    /// The TLS server name this entry's daemons are checked against
    /// (`?servername=NAME`); otherwise `--tlsservername` or the default.
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SpecKind {
    /// `unix://PATH` or `tcp://HOST:PORT`: one daemon.
    Fixed(Address),
    /// `dns://NAME:PORT`: every A and AAAA record of NAME, on PORT (a
    /// Kubernetes headless Service's name lists its ready pods).
    Records { name: String, port: u16 },
    /// `srv://NAME`: every SRV record of NAME (for a headless Service,
    /// `_PORTNAME._tcp.SERVICE`), each target host on its port.
    Srv { name: String },
}

/// One daemon to try: where to connect and how to check its certificate.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// What the route key is hashed with: stable for as long as the member
    /// is (a fixed address or an SRV target as written; for A/AAAA records
    /// the address, which changes when a pod is rescheduled).
    pub id: String,
    pub address: Address,
    /// Overrides `--tlsservername` for this endpoint.
    pub server_name: Option<String>,
    /// The spec it came from, for messages (`dns://…`, `srv://…`).
    pub origin: Option<String>,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let address = crate::text::escape_str(&self.address.to_string());
        match &self.origin {
            Some(o) => write!(f, "{address} (from {})", crate::text::escape_str(o)),
            None => f.write_str(&address),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid daemon address {raw:?}: {reason}")]
pub struct SpecError {
    pub raw: String,
    pub reason: String,
}

const FORMS: &str = "use unix:///path/to/buildkitd.sock, tcp://host:port, dns://name:port or \
                     srv://_port._tcp.name, optionally with ?servername=NAME";

impl EndpointSpec {
    pub fn parse(raw: &str) -> Result<EndpointSpec, SpecError> {
        let bad = |reason: &str| SpecError {
            raw: raw.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(bad("empty entry"));
        }
        let (base, query) = match trimmed.split_once('?') {
            // A socket path may hold any byte; only network forms take options.
            Some((b, q)) if !b.starts_with("unix://") => (b, Some(q)),
            _ => (trimmed, None),
        };
        let mut server_name = None;
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            match pair.split_once('=') {
                Some(("servername", v)) if !v.is_empty() => server_name = Some(v.to_string()),
                _ => {
                    return Err(bad(&format!(
                        "unknown option {pair:?} (only servername=NAME)"
                    )))
                }
            }
        }
        let kind = if let Some(rest) = base.strip_prefix("dns://") {
            let (name, port) = rest
                .trim_end_matches('/')
                .rsplit_once(':')
                .ok_or_else(|| bad("dns:// needs a port: dns://name:port"))?;
            let port = port
                .parse()
                .map_err(|_| bad("dns:// needs a port: dns://name:port"))?;
            check_name(name).map_err(|r| bad(&r))?;
            SpecKind::Records {
                name: name.to_string(),
                port,
            }
        } else if let Some(rest) = base.strip_prefix("srv://") {
            let name = rest.trim_end_matches('/');
            check_name(name).map_err(|r| bad(&r))?;
            SpecKind::Srv {
                name: name.to_string(),
            }
        } else {
            let address = Address::parse(base).map_err(|_| bad(FORMS))?;
            if server_name.is_some() && matches!(address, Address::Unix(_)) {
                return Err(bad("servername applies to tcp:// only"));
            }
            SpecKind::Fixed(address)
        };
        Ok(EndpointSpec {
            raw: trimmed.to_string(),
            kind,
            server_name,
        })
    }

    /// Parses every entry of every value, each value a comma list.
    pub fn parse_all(values: &[String]) -> Result<Vec<EndpointSpec>, SpecError> {
        let mut specs = Vec::new();
        for value in values {
            for entry in split_list(value) {
                specs.push(EndpointSpec::parse(&entry)?);
            }
        }
        Ok(specs)
    }

    /// The endpoint of a fixed address (none for names to discover).
    pub fn fixed(&self) -> Option<Endpoint> {
        match &self.kind {
            SpecKind::Fixed(address) => Some(Endpoint {
                id: address.to_string(),
                address: address.clone(),
                server_name: self.server_name.clone(),
                origin: None,
            }),
            _ => None,
        }
    }
}

/// The entries of a comma list. A piece that starts with no scheme
/// continues a socket path that held a comma.
pub fn split_list(value: &str) -> Vec<String> {
    const SCHEMES: [&str; 4] = ["unix://", "tcp://", "dns://", "srv://"];
    let mut entries: Vec<String> = Vec::new();
    for piece in value.split(',') {
        if piece.trim().is_empty() {
            continue;
        }
        let starts = SCHEMES.iter().any(|s| piece.trim_start().starts_with(s));
        match entries.last_mut() {
            Some(last) if !starts && last.starts_with("unix://") => {
                last.push(',');
                last.push_str(piece);
            }
            _ => entries.push(piece.trim().to_string()),
        }
    }
    entries
}

fn check_name(name: &str) -> Result<(), String> {
    let name = name.trim_end_matches('.');
    if name.is_empty() || name.len() > 253 {
        return Err("a DNS name is needed".into());
    }
    let ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if !ok {
        return Err(format!("{name:?} is not a DNS name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(s: &str) -> SpecKind {
        EndpointSpec::parse(s).expect(s).kind
    }

    #[test]
    fn parses_each_form() {
        assert_eq!(
            kind("tcp://10.0.0.5:1234"),
            SpecKind::Fixed(Address::Tcp {
                host: "10.0.0.5".into(),
                port: 1234
            })
        );
        assert_eq!(
            kind("unix:///run/buildkit/buildkitd.sock"),
            SpecKind::Fixed(Address::Unix("/run/buildkit/buildkitd.sock".into()))
        );
        assert_eq!(
            kind("dns://buildkitd.ci.svc.cluster.local:1234"),
            SpecKind::Records {
                name: "buildkitd.ci.svc.cluster.local".into(),
                port: 1234
            }
        );
        assert_eq!(
            kind("srv://_buildkitd._tcp.buildkitd"),
            SpecKind::Srv {
                name: "_buildkitd._tcp.buildkitd".into()
            }
        );
        let s = EndpointSpec::parse("tcp://10.0.0.5:1234?servername=buildkitd-0").expect("sn");
        assert_eq!(s.server_name.as_deref(), Some("buildkitd-0"));
        let s = EndpointSpec::parse("dns://pool:1234?servername=pool.example").expect("sn");
        assert_eq!(s.server_name.as_deref(), Some("pool.example"));
    }

    #[test]
    fn refuses_what_cannot_work() {
        for bad in [
            "",
            "buildkitd:1234",
            "dns://pool",
            "dns://pool:x",
            "dns://bad name:1",
            "srv://",
            "tcp://a:1?servername=",
            "tcp://a:1?timeout=3",
            "unix:///x.sock?servername=a",
        ] {
            let e = EndpointSpec::parse(bad);
            // A unix path may contain '?': it is a path, not an option.
            if bad.starts_with("unix://") {
                assert!(e.is_ok(), "{bad}");
                continue;
            }
            assert!(e.is_err(), "{bad} parsed as {e:?}");
        }
    }

    #[test]
    fn comma_lists_split_but_a_lone_socket_path_stays_whole() {
        let all = EndpointSpec::parse_all(&[
            "tcp://a:1,tcp://b:2".into(),
            "dns://pool:3".into(),
            "unix:///odd,name.sock".into(),
        ])
        .expect("list");
        let raws: Vec<&str> = all.iter().map(|s| s.raw.as_str()).collect();
        assert_eq!(
            raws,
            [
                "tcp://a:1",
                "tcp://b:2",
                "dns://pool:3",
                "unix:///odd,name.sock"
            ]
        );
        assert_eq!(
            split_list("unix:///a.sock,tcp://b:2"),
            ["unix:///a.sock", "tcp://b:2"]
        );
        assert_eq!(
            split_list("tcp://a:1,,tcp://b:2,"),
            ["tcp://a:1", "tcp://b:2"]
        );
    }
}
