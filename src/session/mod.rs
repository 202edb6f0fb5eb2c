//! The build session: bkd opens `Control.Session`, and over that stream
//! serves an HTTP/2 gRPC server whose only client is the daemon. Each hosted
//! service lives in its own module; this one collects them, announces their
//! methods, and owns the connection task.

pub mod auth;
pub mod content;
pub mod filesend;
pub mod filesync;
pub mod health;
pub mod secrets;
pub mod ssh;
pub mod token;
pub mod tunnel;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::metadata::MetadataValue;
use tonic::service::Routes;
use tonic::transport::Channel;

use crate::proto::moby::buildkit::v1::control_client::ControlClient;
use filesend::{FileSendServer, FileSendService, OutputTarget, StagedOutputs};
use filesync::LocalDirs;

/// Everything a session offers the daemon.
#[derive(Debug, Default)]
pub struct SessionSpec {
    pub id: String,
    /// Lets the daemon reuse its copy of a local directory across builds.
    pub shared_key: String,
    pub dirs: LocalDirs,
    /// Client-side outputs by exporter index.
    pub outputs: HashMap<u32, OutputTarget>,
    pub docker_config: Arc<auth::DockerConfig>,
    /// Where the auth service reports its `[auth]` steps.
    pub auth_progress: Option<auth::AuthProgress>,
    pub secrets: HashMap<String, secrets::SecretSource>,
    pub ssh: ssh::AgentSockets,
    /// OCI layout directories the daemon reads and writes blobs in.
    pub content_stores: content::ContentStores,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot open a session with buildkitd: {0}")]
    Open(String),
    #[error("the session with buildkitd failed: {0}")]
    Serve(String),
}

/// The method names the daemon may call, announced in the session headers.
fn methods(spec: &SessionSpec) -> Vec<&'static str> {
    let mut m = vec![
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/moby.filesync.v1.FileSync/DiffCopy",
        "/moby.filesync.v1.Auth/Credentials",
        "/moby.filesync.v1.Auth/FetchToken",
        "/moby.filesync.v1.Auth/GetTokenAuthority",
        "/moby.filesync.v1.Auth/VerifyTokenAuthority",
        "/moby.buildkit.secrets.v1.Secrets/GetSecret",
        // Served even without --ssh, so a mount asking for an id that was
        // not given fails with a message naming it.
        ssh::CHECK_AGENT_PATH,
        ssh::FORWARD_AGENT_PATH,
    ];
    if !spec.outputs.is_empty() {
        m.push(filesend::DIFF_COPY_PATH);
    }
    if !spec.content_stores.is_empty() {
        m.extend_from_slice(content::METHODS);
    }
    m
}

/// A running session. Dropping it ends the session.
pub struct Session {
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), SessionError>>,
    staged: StagedOutputs,
    secrets: secrets::SecretsService,
    tunnel: Arc<tunnel::TunnelStats>,
    opened: std::time::Instant,
}

impl Session {
    /// Opens the session and starts serving. Returns once the daemon has
    /// answered the call, so a solve can be started right after.
    pub async fn start(
        mut client: ControlClient<Channel>,
        spec: SessionSpec,
    ) -> Result<Session, SessionError> {
        let (outbound, outgoing) = tunnel::outgoing();
        let mut request = tonic::Request::new(outgoing);
        let md = request.metadata_mut();
        let value = |s: &str| {
            MetadataValue::try_from(s)
                .map_err(|_| SessionError::Open(format!("bad header value {s:?}")))
        };
        md.insert("x-docker-expose-session-uuid", value(&spec.id)?);
        md.insert(
            "x-docker-expose-session-sharedkey",
            value(&spec.shared_key)?,
        );
        md.insert("x-docker-expose-session-name", value("bkd")?);
        for m in methods(&spec) {
            md.append("x-docker-expose-session-grpc-method", value(m)?);
        }

        let staged = StagedOutputs::default();
        let secrets = secrets::SecretsService::new(spec.secrets);
        let routes = Routes::new(health::server())
            .add_service(filesync::server(spec.dirs))
            .add_service(auth::server(spec.docker_config, spec.auth_progress))
            .add_service(secrets.server())
            .add_service(ssh::server(spec.ssh))
            .add_service(content::server(spec.content_stores))
            .add_service(FileSendServer::new(FileSendService::new(
                spec.outputs,
                staged.clone(),
            )))
            .prepare();

        let inbound = client
            .session(request)
            .await
            .map_err(|s| SessionError::Open(crate::text::one_line(s.message())))?
            .into_inner();
        let io = tunnel::TunnelIo::new(inbound, outbound);
        let tunnel = io.stats();
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let task = tokio::spawn(serve(io, routes, shutdown_rx));
        Ok(Session {
            shutdown: Some(shutdown_tx),
            task,
            staged,
            secrets,
            tunnel,
            opened: std::time::Instant::now(),
        })
    }

    /// Outputs received through this session, waiting to be committed.
    pub fn staged_outputs(&self) -> StagedOutputs {
        self.staged.clone()
    }

    /// The build's secrets, and the first that could not be read.
    pub fn secrets(&self) -> secrets::SecretsService {
        self.secrets.clone()
    }

    /// Ends the session and closes the stream.
    pub async fn close(mut self) -> Result<(), SessionError> {
        tracing::debug!(
            open_s = format!("{:.3}", self.opened.elapsed().as_secs_f64()),
            bytes_out = self.tunnel.bytes_out(),
            messages_out = self.tunnel.messages_out(),
            waited_for_daemon_s = format!("{:.3}", self.tunnel.waited().as_secs_f64()),
            "session tunnel totals"
        );
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match tokio::time::timeout(Duration::from_secs(5), &mut self.task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(SessionError::Serve(e.to_string())),
            Err(_) => {
                self.task.abort();
                Ok(())
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve<S>(
    io: tunnel::TunnelIo<S>,
    routes: Routes,
    shutdown: oneshot::Receiver<()>,
) -> Result<(), SessionError>
where
    S: futures_util::Stream<
            Item = Result<crate::proto::moby::buildkit::v1::BytesMessage, tonic::Status>,
        > + Unpin
        + Send
        + 'static,
{
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .initial_stream_window_size(crate::transport::STREAM_WINDOW)
        .initial_connection_window_size(crate::transport::CONNECTION_WINDOW)
        .max_frame_size(1 << 20)
        .max_send_buf_size(4 << 20)
        .max_concurrent_streams(1000)
        // The daemon sends a transfer's .dockerignore patterns, include
        // patterns and follow paths as request headers. hyper's default of
        // 16 KiB stops at about 300 patterns; buildctl's session (Go's
        // HTTP/2 server) takes 1 MiB, about 15,000 short patterns; bkd
        // takes 16 MiB, its largest message.
        .max_header_list_size(MAX_HEADER_LIST_SIZE);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(routes));
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => res.map_err(|e| SessionError::Serve(crate::error::error_chain(&e))),
        // The build is over: dropping the connection closes our half of the
        // session stream, and the daemon forgets the session.
        _ = shutdown => Ok(()),
    }
}

/// The largest header list the daemon may send on one call: as large as
/// the largest message, so memory stays bounded against a hostile daemon.
pub const MAX_HEADER_LIST_SIZE: u32 = 16 << 20;

/// What the daemon reports when the headers of a call (a file transfer's
/// patterns) are over [`MAX_HEADER_LIST_SIZE`]; it says nothing of where
/// they come from.
const HEADERS_TOO_LARGE: &str = "header list size to send violates the maximum size";

/// The explanation to add to a daemon error about headers over the limit.
pub fn explain_error(message: &str) -> Option<String> {
    message.contains(HEADERS_TOO_LARGE).then(|| {
        format!(
            "the .dockerignore patterns (or the include patterns or follow paths) of a build \
             context are over the {} MiB a transfer can carry: shorten the .dockerignore \
             (buildctl stops at 1 MiB)",
            MAX_HEADER_LIST_SIZE >> 20
        )
    })
}

/// A random identifier like the ones buildctl uses: 25 lowercase base-36
/// characters.
pub fn random_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..25)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_error_about_headers_over_the_limit_names_dockerignore() {
        let daemon = "rpc error: code = Internal desc = header list size to send violates \
                      the maximum size (16777216 bytes) set by server";
        let why = explain_error(daemon).expect("explained");
        assert!(
            why.contains(".dockerignore") && why.contains("16 MiB"),
            "{why}"
        );
        assert_eq!(explain_error("failed to compute cache key"), None);
    }
}
