//! One build: a session, the Solve call and the Status stream run at once;
//! outputs are committed only when the solve succeeded.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::StreamExt;

use super::Daemon;
use crate::error::{Error, Result};
use crate::progress::Display;
use crate::proto::moby::buildkit::v1::{
    CacheOptions, CacheOptionsEntry, Exporter, SolveRequest, StatusRequest,
};
use crate::session::auth::DockerConfig;
use crate::session::filesend::OutputTarget;
use crate::session::filesync::LocalDirs;
use crate::session::secrets::SecretSource;
use crate::session::ssh::AgentSockets;
use crate::session::{random_id, Session, SessionSpec};
use crate::text::{escape_str, one_line};

/// One exporter of the build.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSpec {
    pub kind: String,
    pub attrs: HashMap<String, String>,
    /// Where client-side output goes; `None` for exporters that keep the
    /// result in the daemon or push it.
    pub target: Option<OutputTarget>,
}

/// A cache import or export entry.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSpec {
    pub kind: String,
    pub attrs: HashMap<String, String>,
}

/// Everything the daemon needs for one frontend build.
#[derive(Debug, Default)]
pub struct BuildSpec {
    pub frontend: String,
    pub frontend_attrs: HashMap<String, String>,
    pub locals: LocalDirs,
    pub exports: Vec<ExportSpec>,
    pub cache_exports: Vec<CacheSpec>,
    pub cache_imports: Vec<CacheSpec>,
    /// Where each secret comes from; read when the build asks.
    pub secrets: HashMap<String, SecretSource>,
    /// Agent sockets by ssh id, for `RUN --mount=type=ssh`.
    pub ssh: AgentSockets,
    pub docker_config: Arc<DockerConfig>,
    pub shared_key: String,
    /// Extra entitlements (`network.host`, `security.insecure`, ...).
    pub entitlements: Vec<String>,
    /// A frontend subrequest (`lint`, `outline`, `targets`) instead of a
    /// build: run through the gateway API, nothing exported.
    pub subrequest: Option<String>,
}

/// What a successful build returns.
#[derive(Debug, Default)]
pub struct BuildOutcome {
    pub exporter_response: HashMap<String, String>,
    pub written: Vec<PathBuf>,
    /// A subrequest's answer: the frontend result's metadata.
    pub call_result: HashMap<String, Vec<u8>>,
}

/// Status messages keep coming for a moment after Solve returns; this long
/// without one and the stream is considered drained.
const STATUS_DRAIN: Duration = Duration::from_secs(5);
/// Progress is drawn at most this often...
const REDRAW: Duration = Duration::from_millis(100);
/// ...and this long after the last message, so clocks move.
const IDLE: Duration = Duration::from_millis(150);

fn solve_request(spec: &BuildSpec, build_ref: &str, session_id: &str) -> SolveRequest {
    let exporters: Vec<Exporter> = spec
        .exports
        .iter()
        .map(|e| Exporter {
            r#type: e.kind.clone(),
            attrs: e.attrs.clone(),
        })
        .collect();
    let mut frontend_attrs = spec.frontend_attrs.clone();
    if !spec.cache_imports.is_empty() {
        let imports: Vec<serde_json::Value> = spec
            .cache_imports
            .iter()
            .map(|c| serde_json::json!({"Type": c.kind, "Attrs": c.attrs}))
            .collect();
        frontend_attrs.insert(
            "cache-imports".into(),
            serde_json::Value::Array(imports).to_string(),
        );
    }
    let cache_entry = |c: &CacheSpec| CacheOptionsEntry {
        r#type: c.kind.clone(),
        attrs: c.attrs.clone(),
    };
    SolveRequest {
        r#ref: build_ref.to_string(),
        // Older daemons only know the single-exporter fields.
        exporter_deprecated: exporters
            .first()
            .map(|e| e.r#type.clone())
            .unwrap_or_default(),
        exporter_attrs_deprecated: exporters
            .first()
            .map(|e| e.attrs.clone())
            .unwrap_or_default(),
        session: session_id.to_string(),
        frontend: spec.frontend.clone(),
        frontend_attrs,
        cache: Some(CacheOptions {
            exports: spec.cache_exports.iter().map(cache_entry).collect(),
            imports: spec.cache_imports.iter().map(cache_entry).collect(),
        }),
        exporters,
        entitlements: spec.entitlements.clone(),
        ..Default::default()
    }
}

/// Runs the build, feeding progress to `display`. The display is handed back
/// with the outcome so the caller can print a summary after it.
pub async fn build(
    daemon: &Daemon,
    mut spec: BuildSpec,
    mut display: Box<dyn Display>,
) -> (Result<BuildOutcome>, Box<dyn Display>) {
    let build_ref = random_id();
    let session_id = random_id();
    let local_caches =
        match super::local_cache::prepare(&spec.cache_exports, &mut spec.cache_imports) {
            Ok(c) => c,
            Err(e) => return (Err(e), display),
        };
    let layout_output = match super::oci_output::prepare(&spec.exports) {
        Ok(o) => o,
        Err(e) => return (Err(e), display),
    };
    let mut content_stores = local_caches.stores.clone();
    if let Some(o) = &layout_output {
        content_stores.insert(super::oci_output::STORE_ID, o.dir.clone());
    }
    let mut request = solve_request(&spec, &build_ref, &session_id);
    let call = spec.subrequest.as_ref().map(|name| {
        let opts = super::call::subrequest_opts(&request.frontend_attrs, name);
        (spec.frontend.clone(), opts)
    });
    if call.is_some() {
        // The build is opened without a frontend; bkd names it through
        // the gateway. A subrequest exports nothing and stays out of the
        // build history.
        request.frontend.clear();
        request.frontend_attrs.clear();
        request.exporters.clear();
        request.exporter_deprecated.clear();
        request.exporter_attrs_deprecated.clear();
        request.internal = true;
    }
    let outputs: HashMap<u32, OutputTarget> = spec
        .exports
        .iter()
        .enumerate()
        .filter(|(_, e)| !super::oci_output::is_layout(e))
        .filter_map(|(i, e)| e.target.clone().map(|t| (i as u32, t)))
        .collect();
    // The session's own steps ([auth] ...) join the daemon's in the display.
    let (auth_progress, mut client_steps) = tokio::sync::mpsc::unbounded_channel();
    let session_spec = SessionSpec {
        auth_progress: Some(auth_progress),
        id: session_id,
        shared_key: spec.shared_key,
        dirs: spec.locals,
        outputs,
        docker_config: spec.docker_config,
        secrets: spec.secrets,
        ssh: spec.ssh,
        content_stores,
    };
    let session = match Session::start(daemon.control(), session_spec).await {
        Ok(s) => s,
        Err(e) => return (Err(e.into()), display),
    };
    let staged = session.staged_outputs();
    let secrets = session.secrets();

    // The status stream is followed in this same future, not a task of
    // its own: when the build is dropped (Ctrl-C), the display goes with it
    // at once and can leave a clean screen.
    let mut status_client = daemon.control();
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(false);
    let follow = async {
        let mut logs = LogTail::default();
        match status_client
            .status(StatusRequest {
                r#ref: build_ref.clone(),
            })
            .await
        {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                follow_status(
                    &mut stream,
                    &mut client_steps,
                    display.as_mut(),
                    &mut logs,
                    &mut done_rx,
                )
                .await;
            }
            Err(status) => {
                tracing::debug!(error = %status.message(), "status stream unavailable");
            }
        }
        while let Ok(update) = client_steps.try_recv() {
            display.update(&update);
        }
        display.finish();
        logs
    };
    let solve = async {
        let solved = match call {
            None => (daemon.control().solve(request).await, Ok(HashMap::new())),
            Some((frontend, opts)) => {
                let mut control = daemon.control();
                let bridge = daemon.bridge();
                tokio::join!(
                    control.solve(request),
                    super::call::run(bridge, &build_ref, &frontend, opts)
                )
            }
        };
        let _ = done_tx.send(true);
        solved
    };
    let (logs, (solved, called)) = tokio::join!(follow, solve);
    let closed = session.close().await;

    // A subrequest's own error says more than the build it ended.
    let call_result = match called {
        Ok(m) => m,
        Err(status) => return (Err(solve_error(daemon.addr(), &status, logs)), display),
    };
    let response = match solved {
        Ok(r) => r.into_inner(),
        // A local write or secret read that failed is the cause; the
        // daemon's error only echoes it.
        Err(status) => {
            if let Some(message) = staged.write_failure() {
                return (Err(Error::OutputWrite(message)), display);
            }
            if let Some(message) = secrets.failure() {
                return (Err(Error::Input(message)), display);
            }
            let details = super::errdetails::decode(&status);
            display.error_sources(&details.sources);
            return (Err(solve_error(daemon.addr(), &status, logs)), display);
        }
    };
    if let Err(e) = closed {
        tracing::debug!(error = %e, "session did not close cleanly");
    }
    // Off the async threads: a FIFO's reader sets the pace, and a signal
    // must still end bkd meanwhile.
    let committed = tokio::task::spawn_blocking(move || staged.commit()).await;
    let written = match committed {
        Ok(Ok(w)) => w,
        Ok(Err(e)) => return (Err(e.into()), display),
        Err(e) => {
            return (
                Err(Error::OutputWrite(format!("cannot write outputs: {e}"))),
                display,
            )
        }
    };
    if let Err(e) = local_caches.record(&response.exporter_response) {
        return (Err(e), display);
    }
    if let Some(o) = &layout_output {
        if let Err(e) = o.record(&response.exporter_response) {
            return (Err(e), display);
        }
    }
    (
        Ok(BuildOutcome {
            exporter_response: response.exporter_response,
            written,
            call_result,
        }),
        display,
    )
}

/// Hands every status message to the display, in order and one by one
/// (nothing merged, so no state change is lost), and has it redraw at most
/// every [`REDRAW`] and after [`IDLE`] without messages, as buildctl does.
/// After the solve is done the stream is read until it ends or stays quiet
/// for [`STATUS_DRAIN`].
async fn follow_status(
    stream: &mut tonic::Streaming<crate::proto::moby::buildkit::v1::StatusResponse>,
    client: &mut tokio::sync::mpsc::UnboundedReceiver<crate::progress::Update>,
    display: &mut dyn Display,
    logs: &mut LogTail,
    done: &mut tokio::sync::watch::Receiver<bool>,
) {
    let mut solved = *done.borrow();
    let mut quiet = Duration::ZERO;
    let mut last_draw: Option<tokio::time::Instant> = None;
    loop {
        let next = tokio::select! {
            n = stream.next() => Some(n),
            // bkd's own steps ([auth] ...), drawn with the next refresh.
            Some(update) = client.recv() => {
                display.update(&update);
                continue;
            }
            changed = done.changed(), if !solved => {
                solved = changed.is_err() || *done.borrow();
                continue;
            }
            _ = tokio::time::sleep(IDLE) => None,
        };
        match next {
            None => {
                display.refresh();
                last_draw = Some(tokio::time::Instant::now());
                if solved {
                    quiet += IDLE;
                    if quiet >= STATUS_DRAIN {
                        return;
                    }
                }
            }
            Some(Some(Ok(msg))) => {
                quiet = Duration::ZERO;
                let update = super::status::convert(msg);
                logs.extend(&update);
                display.update(&update);
                if last_draw.is_none_or(|t| t.elapsed() >= REDRAW) {
                    display.refresh();
                    last_draw = Some(tokio::time::Instant::now());
                }
            }
            Some(Some(Err(status))) => {
                tracing::debug!(error = %status.message(), "status stream ended");
                return;
            }
            Some(None) => return,
        }
    }
}

/// Turns a failed Solve into the user's error: the daemon's own message,
/// which names the failing step, or a daemon error when it went away.
fn solve_error(addr: &str, status: &tonic::Status, logs: LogTail) -> Error {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown if lost_connection(status) => {
            Error::Daemon(format!(
                "lost the connection to buildkitd at {}: {}",
                escape_str(addr),
                one_line(status.message())
            ))
        }
        // The daemon's text is printed as one line: a name in it (or a
        // daemon that is not to be trusted) cannot start a line of its own.
        _ => Error::BuildFailed {
            message: match crate::session::explain_error(status.message()) {
                Some(why) => format!("failed to solve: {}: {why}", one_line(status.message())),
                None => format!("failed to solve: {}", one_line(status.message())),
            },
            step_logs: logs.text,
        },
    }
}

/// Whether the call failed here, in the connection, rather than in the
/// daemon. Only tonic's own errors carry a source; a status the daemon sent
/// has none, even when its text speaks of connections (a registry that
/// refused one, for instance).
fn lost_connection(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    status.source().is_some()
        || status.message() == "transport error"
        || status.message().starts_with("h2 protocol error")
}

/// The last [`LogTail::LIMIT`] bytes of all step logs, kept so a failed
/// build can be matched against known failures.
#[derive(Debug, Default)]
struct LogTail {
    text: String,
}

impl LogTail {
    const LIMIT: usize = 64 * 1024;

    /// Keeps up to twice the limit before cutting, so the cost per byte
    /// stays constant however much the steps log.
    fn extend(&mut self, update: &crate::progress::Update) {
        for log in &update.logs {
            let data = &log.data[log.data.len().saturating_sub(Self::LIMIT)..];
            self.text.push_str(&String::from_utf8_lossy(data));
        }
        if self.text.len() > 2 * Self::LIMIT {
            let mut cut = self.text.len() - Self::LIMIT;
            while !self.text.is_char_boundary(cut) {
                cut += 1;
            }
            self.text.drain(..cut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_refusing_connections_is_a_build_failure_not_a_lost_daemon() {
        let status = tonic::Status::unavailable(
            "failed to push 127.0.0.1:1/x: failed to do request: Head \"http://127.0.0.1:1/v2/x/blobs/sha256:00\": dial tcp 127.0.0.1:1: connect: connection refused",
        );
        let e = solve_error("unix:///s", &status, LogTail::default());
        assert_eq!(e.exit_code(), crate::error::exit::BUILD_FAILED, "{e}");
        assert!(e
            .to_string()
            .starts_with("failed to solve: failed to push 127.0.0.1:1/x"));
    }

    #[test]
    fn a_broken_connection_is_a_lost_daemon() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let status = tonic::Status::from_error(Box::new(io));
        let e = solve_error("unix:///s", &status, LogTail::default());
        assert_eq!(e.exit_code(), crate::error::exit::DAEMON, "{e}");
        let e = solve_error(
            "unix:///s",
            &tonic::Status::unavailable("transport error"),
            LogTail::default(),
        );
        assert!(e
            .to_string()
            .starts_with("lost the connection to buildkitd at unix:///s"));
    }
}
