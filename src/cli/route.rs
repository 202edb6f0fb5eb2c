//! Building on a pool of daemons: the routing flags of `bkd build`, the
//! default route key of a build, what bkd prints as it routes, and the
//! failover rule (a build moves to the next daemon only if no step had
//! started on the one that went away, unless `--retry-after-start`).

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Args;

use super::daemon::{interruptible, with_advice, DaemonNeeds, Signals};
use super::GlobalArgs;
use crate::client::Daemon;
use crate::error::{exit, Error, Result};
use crate::progress::{BuildEnd, Display, Update};
use crate::route::{ordinal, EndpointSpec, Event, Policy, RouteKey, Router};
use crate::text::escape_str;

/// `bkd build` flags for several daemons.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Daemon pool (several --addr, dns://NAME:PORT or srv://NAME)")]
pub struct RouteArgs {
    /// Builds with the same key go to the same daemon (its cache stays warm)
    /// [default: the repository (CI variables, else the git remote, else the
    /// context's path), the Dockerfile's path in it, --target, --platform]
    #[arg(long, env = "BKD_ROUTE_KEY", value_name = "KEY")]
    pub route_key: Option<String>,

    /// Retry on the next daemon even when the one that went away had started
    /// a build step (the step may then run twice)
    #[arg(long)]
    pub retry_after_start: bool,

    /// Among the first N daemons of the key's order that answer, take one
    /// running no build (asks each daemon's build history)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub prefer_idle: u32,
}

/// What routing needs from the command.
#[derive(Debug, Clone)]
pub struct RouteNeeds {
    pub key: RouteKey,
    pub retry_after_start: bool,
    pub prefer_idle: usize,
    /// Print the choice (not in the quiet and JSON progress modes).
    pub announce: bool,
}

impl Default for RouteNeeds {
    fn default() -> Self {
        RouteNeeds {
            key: RouteKey {
                key: String::new(),
                source: "no build".into(),
            },
            retry_after_start: false,
            prefer_idle: 1,
            announce: true,
        }
    }
}

impl RouteArgs {
    /// The route key of a build: `--route-key`, else the default.
    pub fn key(
        &self,
        context: &Path,
        dockerfile: &Path,
        target: Option<&str>,
        platform: Option<&str>,
    ) -> RouteKey {
        if let Some(k) = self.route_key.as_deref().filter(|k| !k.is_empty()) {
            return RouteKey::given(k);
        }
        let env = |name: &str| std::env::var(name).ok();
        RouteKey::for_build(
            &crate::route::BuildIdentity {
                context,
                dockerfile,
                target,
                platform,
            },
            &env,
        )
    }

    /// The route key of a build of a context the daemon fetches (a Git or
    /// HTTP(S) URL): `--route-key`, else the URL without credentials.
    pub fn remote_key(
        &self,
        url: &str,
        dockerfile: &str,
        target: Option<&str>,
        platform: Option<&str>,
    ) -> RouteKey {
        if let Some(k) = self.route_key.as_deref().filter(|k| !k.is_empty()) {
            return RouteKey::given(k);
        }
        RouteKey::for_remote(url, dockerfile, target, platform)
    }

    pub fn needs(&self, key: RouteKey, announce: bool) -> RouteNeeds {
        RouteNeeds {
            key,
            retry_after_start: self.retry_after_start,
            prefer_idle: self.prefer_idle as usize,
            announce,
        }
    }
}

/// Whether a build step (not bkd's internal loads) has started, as seen in
/// the progress stream: shared by the display and the failover rule.
#[derive(Debug, Clone, Default)]
pub struct StepWatch(Arc<AtomicBool>);

impl StepWatch {
    pub fn started(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    fn reset(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    /// `inner`, noting when a step starts.
    pub fn watch(&self, inner: Box<dyn Display>) -> Box<dyn Display> {
        Box::new(Watched {
            inner,
            flag: self.0.clone(),
        })
    }
}

struct Watched {
    inner: Box<dyn Display>,
    flag: Arc<AtomicBool>,
}

/// A step that ran (not one answered from the cache): the frontend's own
/// loads are named `[internal] ...` and are safe to repeat.
fn is_started_step(v: &crate::progress::Vertex) -> bool {
    v.started.is_some() && !v.cached && !v.name.starts_with("[internal]")
}

impl Display for Watched {
    fn update(&mut self, update: &Update) {
        if update.vertexes.iter().any(is_started_step) {
            self.flag.store(true, Ordering::SeqCst);
        }
        self.inner.update(update);
    }

    fn refresh(&mut self) {
        self.inner.refresh();
    }

    fn finish(&mut self) {
        self.inner.finish();
    }

    fn error_sources(&mut self, sources: &[crate::progress::ErrorSource]) {
        self.inner.error_sources(sources);
    }

    fn summary(&mut self, end: &BuildEnd) {
        self.inner.summary(end);
    }
}

fn say(line: &str) {
    eprintln!("bkd: route: {line}");
}

fn show_event(event: Event, debug: bool, key: &RouteKey) {
    match event {
        Event::Discovered { spec, found } if debug => say(&format!(
            "{} gave {} endpoint(s): {}",
            escape_str(&spec),
            found.len(),
            found
                .iter()
                .map(|e| escape_str(&e.address.to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Event::Discovered { .. } => {}
        Event::DiscoveryFailed { spec, reason } => {
            say(&format!("cannot use {}: {reason}", escape_str(&spec)))
        }
        Event::Order { endpoints } if debug => say(&format!(
            "key \"{}\" (from {}); order: {}",
            escape_str(&key.key),
            key.source,
            endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| format!("{}. {}", i + 1, escape_str(&e.address.to_string())))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Event::Order { .. } => {}
        Event::Skipped {
            endpoint,
            rank,
            reason,
        } => say(&format!(
            "{endpoint} ({} for this key) did not answer: {reason}; trying the next",
            ordinal(rank)
        )),
        Event::Busy {
            endpoint,
            rank,
            builds,
        } => say(&format!(
            "{endpoint} ({} for this key) is running {builds} build(s); trying the next \
             (--prefer-idle)",
            ordinal(rank)
        )),
        Event::Waiting { remaining } => say(&format!(
            "no daemon answered; trying again for up to {}s (--daemon-timeout)",
            remaining.as_secs()
        )),
    }
}

/// The endpoints named by `entries`, or the usage error naming a bad one.
pub fn specs(entries: &[String]) -> Result<Vec<EndpointSpec>> {
    EndpointSpec::parse_all(entries).map_err(|e| Error::Usage(e.to_string()))
}

/// Whether these entries make a pool (routed) rather than one fixed
/// address (used exactly as before).
pub fn is_pool(entries: &[String]) -> bool {
    match EndpointSpec::parse_all(entries) {
        Ok(specs) => {
            specs.len() > 1
                || specs
                    .iter()
                    .any(|s| s.fixed().is_none() || s.server_name.is_some())
        }
        Err(_) => {
            entries
                .iter()
                .map(|e| crate::route::endpoint::split_list(e).len())
                .sum::<usize>()
                > 1
        }
    }
}

/// Runs `job` on the pool: the key's first daemon that answers; when that
/// daemon goes away before any step started (or at all, with
/// `--retry-after-start`), on the next.
pub(super) async fn on_pool<T, Fut>(
    global: &GlobalArgs,
    needs: &DaemonNeeds,
    signals: &mut Signals,
    entries: &[String],
    job: &mut impl FnMut(Daemon) -> Fut,
) -> Result<T>
where
    Fut: Future<Output = Result<T>>,
{
    let specs = specs(entries)?;
    let route = &needs.route;
    let policy = Policy {
        key: route.key.clone(),
        deadline: global
            .daemon
            .daemon_timeout
            .map(std::time::Duration::from_secs),
        prefer_idle: route.prefer_idle.max(1),
    };
    let mut router = Router::new(specs, global.tls(), policy);
    let debug = global.debug;
    loop {
        let key = router.key().clone();
        let mut report = |e: Event| show_event(e, debug, &key);
        let choice = interruptible(signals, async {
            router
                .choose(&mut report)
                .await
                .map_err(|e| Error::Daemon(e.to_string()))
        })
        .await?;
        if route.announce {
            say(&format!(
                "building on {} ({} of {} for this key)",
                choice.endpoint,
                ordinal(choice.rank),
                choice.members
            ));
        }
        needs.steps.reset();
        let result = interruptible(signals, job(choice.daemon)).await;
        let lost = matches!(&result, Err(e) if e.exit_code() == exit::DAEMON);
        if !lost {
            return result.map_err(with_advice);
        }
        let started = needs.steps.started();
        let Err(e) = result else {
            return result;
        };
        if started && !route.retry_after_start {
            return Err(Error::Daemon(format!(
                "{e} (not retried on another daemon: a build step had started there; \
                 --retry-after-start allows it)"
            )));
        }
        say(&format!(
            "lost {} {}: {e}; retrying on the next daemon",
            choice.endpoint,
            if started {
                "after a build step had started (--retry-after-start)"
            } else {
                "before any build step started"
            }
        ));
        router.mark_lost(&choice.endpoint);
    }
}

/// The `address` lines of `bkd doctor` for a pool: what each name gives
/// and whether each endpoint answers.
pub async fn pool_report(
    global: &GlobalArgs,
    from: &str,
    entries: &[String],
) -> Vec<(&'static str, String)> {
    let specs = match specs(entries) {
        Ok(s) => s,
        Err(e) => return vec![("FAIL", format!("{from}: {e}"))],
    };
    let router = Router::new(
        specs,
        global.tls(),
        Policy {
            key: RouteKey::given(""),
            deadline: None,
            prefer_idle: 1,
        },
    );
    let (endpoints, failures) = router.discover().await;
    let mut lines = vec![(
        "info",
        format!(
            "{from}: a pool of {} endpoint(s); each build goes to the first that answers in \
             its route key's order",
            endpoints.len()
        ),
    )];
    for (spec, reason) in failures {
        lines.push(("FAIL", format!("{}: {reason}", escape_str(&spec))));
    }
    for endpoint in endpoints {
        let line = match router.probe(&endpoint).await {
            Ok(d) => {
                let workers = d.workers().await.map(|w| w.len()).unwrap_or(0);
                (
                    "ok  ",
                    format!("{endpoint}: a daemon answers ({workers} workers)"),
                )
            }
            Err(reason) => ("FAIL", format!("{endpoint}: {reason}")),
        };
        lines.push(line);
    }
    lines
}
