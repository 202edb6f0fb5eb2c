//! Several daemons: the endpoints named on the command line (fixed
//! addresses, or names discovered in DNS), their order for a build's route
//! key (rendezvous hashing), and the choice of the first one that answers,
//! skipping those that refuse or time out, within an overall deadline.
//! Hands one connected daemon to the caller; knows nothing of builds.

pub mod dns;
pub mod endpoint;
pub mod key;
pub mod rendezvous;

use std::time::{Duration, Instant};

pub use endpoint::{Endpoint, EndpointSpec, SpecError, SpecKind};
pub use key::{BuildIdentity, RouteKey};

use crate::client::Daemon;
use crate::transport::TlsOptions;

/// One attempt at an endpoint (connect, TLS, and a ListWorkers answer)
/// gets this long; one that takes longer is skipped for the next.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// The least time a probe gets when little of `--daemon-timeout` is left,
/// and how long one name's lookup may take.
const LEAST_ATTEMPT: Duration = Duration::from_secs(1);
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the busy check of one endpoint may take.
const BUSY_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// How a command picks its daemon.
#[derive(Debug, Clone)]
pub struct Policy {
    pub key: RouteKey,
    /// Keep trying (re-resolving names) until this long has passed since
    /// the first attempt; `None`: one pass over the endpoints.
    pub deadline: Option<Duration>,
    /// Among the first this many endpoints that answer, prefer one with no
    /// build running (1: always the first that answers).
    pub prefer_idle: usize,
}

/// What happened while choosing, for the caller to show.
#[derive(Debug, Clone)]
pub enum Event {
    /// A name gave these endpoints.
    Discovered { spec: String, found: Vec<Endpoint> },
    /// A name could not be resolved (now).
    DiscoveryFailed { spec: String, reason: String },
    /// The key's order over the endpoints found.
    Order { endpoints: Vec<Endpoint> },
    /// An endpoint did not answer; the next in the order is tried.
    Skipped {
        endpoint: Endpoint,
        rank: usize,
        reason: String,
    },
    /// An endpoint answered but was running builds; a later one is tried.
    Busy {
        endpoint: Endpoint,
        rank: usize,
        builds: usize,
    },
    /// No endpoint answered; waiting before the next pass.
    Waiting { remaining: Duration },
}

/// The endpoint chosen, connected and answering.
pub struct Choice {
    pub endpoint: Endpoint,
    pub daemon: Daemon,
    /// Its place in the key's order (0: the key's first choice).
    pub rank: usize,
    /// How many endpoints the order had.
    pub members: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("no buildkitd answered at any of {tried} endpoint(s) ({reasons})")]
    NoneAnswered { tried: usize, reasons: String },
    #[error("no daemon found: {0}")]
    NothingFound(String),
    #[error("no daemon left to try: {0}")]
    Exhausted(String),
}

/// Chooses daemons for one command, remembering the ones that went away.
pub struct Router {
    specs: Vec<EndpointSpec>,
    tls: TlsOptions,
    policy: Policy,
    started: Option<Instant>,
    /// Endpoints that went away during this command: never chosen again.
    lost: Vec<String>,
    reported_order: Option<Vec<String>>,
    reported_failures: Vec<String>,
}

impl Router {
    pub fn new(specs: Vec<EndpointSpec>, tls: TlsOptions, policy: Policy) -> Router {
        Router {
            specs,
            tls,
            policy,
            started: None,
            lost: Vec::new(),
            reported_order: None,
            reported_failures: Vec::new(),
        }
    }

    pub fn key(&self) -> &RouteKey {
        &self.policy.key
    }

    /// Never chooses `endpoint` again in this command.
    pub fn mark_lost(&mut self, endpoint: &Endpoint) {
        self.lost.push(endpoint.id.clone());
    }

    /// The endpoints every spec names now, with the names that failed.
    pub async fn discover(&self) -> (Vec<Endpoint>, Vec<(String, String)>) {
        let mut found = Vec::new();
        let mut failed = Vec::new();
        for spec in &self.specs {
            // A resolver that never answers fails the name, not the build.
            let lookup = tokio::time::timeout(LOOKUP_TIMEOUT, discover_one(spec)).await;
            match lookup {
                Ok(Ok(list)) => found.extend(list),
                Ok(Err(reason)) => failed.push((spec.raw.clone(), reason)),
                Err(_) => failed.push((
                    spec.raw.clone(),
                    format!(
                        "no answer from the resolver within {}s",
                        LOOKUP_TIMEOUT.as_secs()
                    ),
                )),
            }
        }
        (found, failed)
    }

    /// TLS settings for one endpoint: its own server name first, then
    /// `--tlsservername`, then the name it was discovered by.
    pub fn tls_for(&self, endpoint: &Endpoint) -> TlsOptions {
        let mut tls = self.tls.clone();
        if let Some(name) = &endpoint.server_name {
            tls.server_name = Some(name.clone());
        } else if tls.server_name.is_none() {
            tls.server_name = endpoint_default_name(endpoint);
        }
        tls
    }

    /// The first endpoint in the key's order that answers (or, with
    /// `prefer_idle`, the first idle one among the first that answer).
    pub async fn choose(
        &mut self,
        report: &mut (dyn FnMut(Event) + Send),
    ) -> Result<Choice, RouteError> {
        let started = *self.started.get_or_insert_with(Instant::now);
        let mut pause = Duration::from_millis(500);
        loop {
            let (endpoints, failures) = self.discover().await;
            for (spec, reason) in &failures {
                let note = format!("{spec}\0{reason}");
                if !self.reported_failures.contains(&note) {
                    self.reported_failures.push(note);
                    report(Event::DiscoveryFailed {
                        spec: spec.clone(),
                        reason: reason.clone(),
                    });
                }
            }
            for spec in self.specs.iter().filter(|s| s.fixed().is_none()) {
                let from_spec: Vec<Endpoint> = endpoints
                    .iter()
                    .filter(|e| e.origin.as_deref() == Some(spec.raw.as_str()))
                    .cloned()
                    .collect();
                if !from_spec.is_empty() && self.reported_order.is_none() {
                    report(Event::Discovered {
                        spec: spec.raw.clone(),
                        found: from_spec,
                    });
                }
            }
            let order = rendezvous::order(&self.policy.key.key, &endpoints);
            let ids: Vec<String> = order.iter().map(|e| e.id.clone()).collect();
            if !order.is_empty() && self.reported_order.as_ref() != Some(&ids) {
                self.reported_order = Some(ids);
                report(Event::Order {
                    endpoints: order.clone(),
                });
            }
            let mut reasons = Vec::new();
            let mut answering: Vec<(usize, Endpoint, Daemon)> = Vec::new();
            // A name can list thousands of targets: only the first of the
            // key's order are tried, each pass.
            for (rank, endpoint) in order.iter().enumerate().take(MAX_TRIED) {
                if self.lost.contains(&endpoint.id) {
                    reasons.push(format!("{endpoint}: went away during this build"));
                    continue;
                }
                // Within --daemon-timeout: once it is spent, the pass
                // ends (the first endpoint of a pass is always tried).
                let left = self
                    .policy
                    .deadline
                    .map(|d| d.saturating_sub(started.elapsed()));
                if rank > 0 && left.is_some_and(|l| l.is_zero()) {
                    reasons.push(format!("{endpoint}: not tried, --daemon-timeout spent"));
                    continue;
                }
                let limit =
                    left.map_or(ATTEMPT_TIMEOUT, |l| l.clamp(LEAST_ATTEMPT, ATTEMPT_TIMEOUT));
                let daemon = match self.probe_within(endpoint, limit).await {
                    Ok(d) => d,
                    Err(reason) => {
                        reasons.push(format!("{endpoint}: {reason}"));
                        report(Event::Skipped {
                            endpoint: endpoint.clone(),
                            rank,
                            reason,
                        });
                        continue;
                    }
                };
                if self.policy.prefer_idle <= 1 {
                    return Ok(Choice {
                        endpoint: endpoint.clone(),
                        daemon,
                        rank,
                        members: order.len(),
                    });
                }
                let busy = tokio::time::timeout(BUSY_CHECK_TIMEOUT, daemon.active_builds()).await;
                match busy {
                    Ok(Ok(builds)) if builds > 0 => {
                        report(Event::Busy {
                            endpoint: endpoint.clone(),
                            rank,
                            builds,
                        });
                        answering.push((rank, endpoint.clone(), daemon));
                        if answering.len() >= self.policy.prefer_idle {
                            break;
                        }
                    }
                    // Idle, or a daemon that cannot say: take it.
                    _ => {
                        return Ok(Choice {
                            endpoint: endpoint.clone(),
                            daemon,
                            rank,
                            members: order.len(),
                        })
                    }
                }
            }
            if let Some((rank, endpoint, daemon)) = answering.into_iter().next() {
                return Ok(Choice {
                    endpoint,
                    daemon,
                    rank,
                    members: order.len(),
                });
            }
            let waited = started.elapsed();
            let remaining = self
                .policy
                .deadline
                .and_then(|d| d.checked_sub(waited))
                .filter(|r| !r.is_zero());
            let Some(remaining) = remaining else {
                return Err(self.failure(order.len(), reasons, failures));
            };
            report(Event::Waiting { remaining });
            tokio::time::sleep(pause.min(remaining)).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    fn failure(
        &self,
        members: usize,
        reasons: Vec<String>,
        failures: Vec<(String, String)>,
    ) -> RouteError {
        let mut all = reasons;
        all.extend(
            failures
                .iter()
                .map(|(s, r)| format!("{}: {r}", crate::text::escape_str(s))),
        );
        let text = all.join("; ");
        if members == 0 {
            RouteError::NothingFound(text)
        } else if !self.lost.is_empty() && self.lost.len() >= members {
            RouteError::Exhausted(text)
        } else {
            RouteError::NoneAnswered {
                tried: members,
                reasons: text,
            }
        }
    }

    /// Connects to one endpoint and asks for its workers, within
    /// [`ATTEMPT_TIMEOUT`].
    pub async fn probe(&self, endpoint: &Endpoint) -> Result<Daemon, String> {
        self.probe_within(endpoint, ATTEMPT_TIMEOUT).await
    }

    async fn probe_within(&self, endpoint: &Endpoint, limit: Duration) -> Result<Daemon, String> {
        let tls = self.tls_for(endpoint);
        let attempt = async {
            let daemon = Daemon::connect(&endpoint.address, &tls).await?;
            let workers = daemon.workers().await?;
            if workers.is_empty() {
                return Err(crate::Error::Daemon("it has no workers".into()));
            }
            Ok(daemon)
        };
        match tokio::time::timeout(limit, attempt).await {
            Ok(Ok(d)) => Ok(d),
            Ok(Err(e)) => Err(short_reason(&e.to_string(), &endpoint.address.to_string())),
            Err(_) if limit.subsec_millis() == 0 => {
                Err(format!("no answer within {}s", limit.as_secs()))
            }
            Err(_) => Err(format!("no answer within {:.1}s", limit.as_secs_f64())),
        }
    }
}

/// An error without the address the caller already shows.
fn short_reason(text: &str, address: &str) -> String {
    let prefixes = [
        format!("cannot connect to buildkitd at {address}: "),
        format!("buildkitd at {address}: "),
    ];
    let mut t = text;
    for p in &prefixes {
        if let Some(rest) = t.strip_prefix(p.as_str()) {
            t = rest;
        }
    }
    crate::text::escape_str(t)
}

/// The server name an endpoint found by A/AAAA records is checked
/// against: the name it was found by (its address is not in the
/// certificate of a pod whose address changes).
fn endpoint_default_name(endpoint: &Endpoint) -> Option<String> {
    let origin = endpoint.origin.as_deref()?;
    let spec = EndpointSpec::parse(origin).ok()?;
    match spec.kind {
        SpecKind::Records { name, .. } => Some(name.trim_end_matches('.').to_string()),
        _ => None,
    }
}

/// How many endpoints, in the key's order, one pass tries at most.
const MAX_TRIED: usize = 64;

/// A TCP endpoint that `spec`'s name led to.
fn found_endpoint(spec: &EndpointSpec, host: String, port: u16) -> Endpoint {
    let address = crate::transport::Address::Tcp { host, port };
    Endpoint {
        id: address.to_string(),
        address,
        server_name: spec.server_name.clone(),
        origin: Some(spec.raw.clone()),
    }
}

async fn discover_one(spec: &EndpointSpec) -> Result<Vec<Endpoint>, String> {
    match &spec.kind {
        SpecKind::Fixed(_) => Ok(spec.fixed().into_iter().collect()),
        SpecKind::Records { name, port } => {
            let ips = dns::addresses(name, *port).await?;
            Ok(ips
                .into_iter()
                .map(|ip| found_endpoint(spec, ip.to_string(), *port))
                .collect())
        }
        SpecKind::Srv { name } => {
            let targets = dns::srv(name).await?;
            Ok(targets
                .into_iter()
                // "." is a name's way of saying it has no such service.
                .filter(|t| t.port != 0 && !t.host.is_empty() && t.host != ".")
                .map(|t| found_endpoint(spec, t.host, t.port))
                .collect())
        }
    }
}

/// "1st", "2nd", "3rd", "4th", ... for a 0-based rank.
pub fn ordinal(rank: usize) -> String {
    let n = rank + 1;
    let suffix = match (n % 10, n % 100) {
        (1, 11) | (2, 12) | (3, 13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals() {
        let got: Vec<String> = [0, 1, 2, 3, 10, 11, 12, 20, 21, 111]
            .iter()
            .map(|r| ordinal(*r))
            .collect();
        assert_eq!(
            got,
            ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "112th"]
        );
    }

    #[tokio::test]
    async fn refused_endpoints_are_skipped_in_order_and_reported() {
        // Two ports nothing listens on: both refuse at once.
        let ports: Vec<u16> = (0..2)
            .map(|_| {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .map(|a| a.port())
                    .expect("port")
            })
            .collect();
        let specs = EndpointSpec::parse_all(&[format!(
            "tcp://127.0.0.1:{},tcp://127.0.0.1:{}",
            ports[0], ports[1]
        )])
        .expect("specs");
        let mut router = Router::new(
            specs,
            TlsOptions::default(),
            Policy {
                key: RouteKey::given("k"),
                deadline: None,
                prefer_idle: 1,
            },
        );
        let mut events = Vec::new();
        let result = router.choose(&mut |e| events.push(e)).await;
        let Err(RouteError::NoneAnswered { tried, .. }) = result else {
            panic!("expected NoneAnswered");
        };
        assert_eq!(tried, 2);
        let skipped: Vec<usize> = events
            .iter()
            .filter_map(|e| match e {
                Event::Skipped { rank, .. } => Some(*rank),
                _ => None,
            })
            .collect();
        assert_eq!(skipped, [0, 1]);
    }
}
