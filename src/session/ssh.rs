//! SSH agent forwarding for `RUN --mount=type=ssh`. The daemon asks whether
//! an ssh id was given (`CheckAgent`), then opens one `ForwardAgent` call per
//! connection a build step makes to its agent socket. bkd connects to the
//! agent named by that id for each call and relays the agent protocol.
//!
//! The relay is read-only, as buildctl's default is: a build step may list
//! identities and ask for signatures, but requests that change the agent
//! (adding, removing, locking, extensions) are answered with a failure and
//! never reach it.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tonic::{Request, Response, Status, Streaming};

use crate::error::io_reason;
use crate::proto::moby::sshforward::v1::ssh_server::{Ssh, SshServer};
use crate::proto::moby::sshforward::v1::{BytesMessage, CheckAgentRequest, CheckAgentResponse};

/// The id a mount without `id=` asks for.
pub const DEFAULT_ID: &str = "default";
/// Request metadata naming the ssh id of a `ForwardAgent` call.
const ID_HEADER: &str = "buildkit.ssh.id";
pub const CHECK_AGENT_PATH: &str = "/moby.sshforward.v1.SSH/CheckAgent";
pub const FORWARD_AGENT_PATH: &str = "/moby.sshforward.v1.SSH/ForwardAgent";

/// The largest agent message accepted in either direction (OpenSSH's own
/// limit).
const MAX_MESSAGE: usize = 256 * 1024;

/// Agent protocol message numbers (draft-miller-ssh-agent).
const SSH_AGENT_FAILURE: u8 = 5;
const SSH_AGENTC_REQUEST_IDENTITIES: u8 = 11;
const SSH_AGENTC_SIGN_REQUEST: u8 = 13;

/// Agent sockets by ssh id, as given with `--ssh`.
pub type AgentSockets = HashMap<String, PathBuf>;

#[derive(Debug, Default)]
pub struct SshService {
    agents: Arc<AgentSockets>,
}

pub fn server(agents: AgentSockets) -> SshServer<SshService> {
    SshServer::new(SshService {
        agents: Arc::new(agents),
    })
}

fn id_or_default(id: &str) -> &str {
    if id.is_empty() {
        DEFAULT_ID
    } else {
        id
    }
}

fn unknown_id(id: &str) -> Status {
    Status::not_found(format!(
        "ssh id {id:?} was not given to bkd: add --ssh {id}=SOCKET, or --ssh {id} for the agent at $SSH_AUTH_SOCK"
    ))
}

impl SshService {
    fn socket(&self, id: &str) -> Result<&Path, Status> {
        self.agents
            .get(id)
            .map(PathBuf::as_path)
            .ok_or_else(|| unknown_id(id))
    }
}

#[tonic::async_trait]
impl Ssh for SshService {
    async fn check_agent(
        &self,
        req: Request<CheckAgentRequest>,
    ) -> Result<Response<CheckAgentResponse>, Status> {
        let id = req.into_inner().id;
        self.socket(id_or_default(&id))?;
        Ok(Response::new(CheckAgentResponse {}))
    }

    type ForwardAgentStream = Pin<Box<dyn Stream<Item = Result<BytesMessage, Status>> + Send>>;

    async fn forward_agent(
        &self,
        req: Request<Streaming<BytesMessage>>,
    ) -> Result<Response<Self::ForwardAgentStream>, Status> {
        let id = req
            .metadata()
            .get(ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let id = id_or_default(id).to_string();
        let socket = self.socket(&id)?;
        let agent = UnixStream::connect(socket).await.map_err(|e| {
            Status::unavailable(format!(
                "ssh {id}: cannot connect to the agent at {}: {}",
                crate::text::escape_path(socket),
                io_reason(&e)
            ))
        })?;
        tracing::debug!(id, socket = %socket.display(), "forwarding ssh agent");
        let relay = Relay {
            agent,
            requests: req.into_inner(),
            pending: BytesMut::new(),
        };
        Ok(Response::new(Box::pin(relay.into_stream())))
    }
}

/// One forwarded agent connection. The response stream drives it, so the
/// relay lives exactly as long as the call: when the daemon half-closes,
/// the agent connection is shut down and the response stream ends; when
/// the call is dropped, the connection is dropped with it.
struct Relay<S> {
    agent: UnixStream,
    requests: S,
    /// Request bytes received but not yet forming a whole message.
    pending: BytesMut,
}

/// The source of request chunks: the call's inbound stream.
trait Chunks {
    fn next_chunk(&mut self) -> impl Future<Output = Result<Option<Bytes>, Status>> + Send;
}

impl Chunks for Streaming<BytesMessage> {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, Status> {
        Ok(self.message().await?.map(|m| m.data))
    }
}

/// A whole message: 4-byte big-endian length, then that many bytes.
fn frame_len(header: [u8; 4]) -> Result<usize, Status> {
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 || len > MAX_MESSAGE {
        return Err(Status::invalid_argument(format!(
            "ssh agent message of {len} bytes (at most {MAX_MESSAGE})"
        )));
    }
    Ok(len)
}

fn failure_reply() -> Bytes {
    Bytes::from_static(&[0, 0, 0, 1, SSH_AGENT_FAILURE])
}

impl<S: Chunks + Send + 'static> Relay<S> {
    fn into_stream(self) -> impl Stream<Item = Result<BytesMessage, Status>> + Send {
        futures_util::stream::unfold(Some(self), |relay| async move {
            let mut relay = relay?;
            match relay.step().await {
                Ok(Some(reply)) => Some((Ok(BytesMessage { data: reply }), Some(relay))),
                Ok(None) => None,
                Err(status) => Some((Err(status), None)),
            }
        })
    }

    /// Answers the next request: `None` once either side has closed.
    async fn step(&mut self) -> Result<Option<Bytes>, Status> {
        let Some(request) = self.next_request().await? else {
            // The build step closed its end; let the agent see it too.
            let _ = self.agent.shutdown().await;
            return Ok(None);
        };
        match request[4] {
            SSH_AGENTC_REQUEST_IDENTITIES | SSH_AGENTC_SIGN_REQUEST => {
                self.exchange(&request).await
            }
            kind => {
                tracing::debug!(kind, "refused an ssh agent request that changes the agent");
                Ok(Some(failure_reply()))
            }
        }
    }

    /// The next whole request message, header included.
    async fn next_request(&mut self) -> Result<Option<Bytes>, Status> {
        loop {
            if self.pending.len() >= 4 {
                let mut header = [0; 4];
                header.copy_from_slice(&self.pending[..4]);
                let len = frame_len(header)?;
                if self.pending.len() >= 4 + len {
                    return Ok(Some(self.pending.split_to(4 + len).freeze()));
                }
            }
            match self.requests.next_chunk().await? {
                Some(chunk) => self.pending.extend_from_slice(&chunk),
                // A partial message at the end has no one to answer it.
                None => return Ok(None),
            }
        }
    }

    /// Sends one request to the agent and reads its one reply.
    async fn exchange(&mut self, request: &[u8]) -> Result<Option<Bytes>, Status> {
        let agent_error = |e: std::io::Error| {
            Status::unavailable(format!("ssh agent connection failed: {}", io_reason(&e)))
        };
        self.agent.write_all(request).await.map_err(agent_error)?;
        let mut header = [0; 4];
        match self.agent.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(agent_error(e)),
        }
        let len = frame_len(header)?;
        let mut reply = BytesMut::zeroed(4 + len);
        reply[..4].copy_from_slice(&header);
        self.agent
            .read_exact(&mut reply[4..])
            .await
            .map_err(agent_error)?;
        Ok(Some(reply.freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use tokio::net::UnixListener;

    /// Request chunks as the daemon might cut them.
    struct Scripted(VecDeque<Bytes>);

    impl Chunks for Scripted {
        async fn next_chunk(&mut self) -> Result<Option<Bytes>, Status> {
            Ok(self.0.pop_front())
        }
    }

    fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut f = ((body.len() + 1) as u32).to_be_bytes().to_vec();
        f.push(kind);
        f.extend_from_slice(body);
        f
    }

    /// A stand-in agent that answers every request with a reply echoing
    /// its kind, and records what reached it.
    async fn fake_agent(listener: UnixListener) -> Vec<u8> {
        let (mut conn, _) = listener.accept().await.expect("accept");
        let mut seen = Vec::new();
        loop {
            let mut header = [0; 4];
            if conn.read_exact(&mut header).await.is_err() {
                return seen;
            }
            let mut body = vec![0; u32::from_be_bytes(header) as usize];
            conn.read_exact(&mut body).await.expect("body");
            seen.push(body[0]);
            conn.write_all(&frame(100 + body[0], b"ok"))
                .await
                .expect("reply");
        }
    }

    #[tokio::test]
    async fn relays_reads_refuses_changes_and_passes_on_the_close() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let agent_task = tokio::spawn(fake_agent(listener));

        let mut wire = frame(SSH_AGENTC_REQUEST_IDENTITIES, b"");
        wire.extend(frame(17, b"add-a-key"));
        wire.extend(frame(SSH_AGENTC_SIGN_REQUEST, b"sign-this"));
        wire.extend(frame(19, b""));
        // Chunk boundaries fall inside headers and bodies.
        let chunks = wire.chunks(3).map(Bytes::copy_from_slice).collect();
        let relay = Relay {
            agent: UnixStream::connect(&path).await.expect("connect"),
            requests: Scripted(chunks),
            pending: BytesMut::new(),
        };
        let replies: Vec<Vec<u8>> = futures_util::StreamExt::collect::<Vec<_>>(relay.into_stream())
            .await
            .into_iter()
            .map(|r| r.expect("reply").data.to_vec())
            .collect();
        assert_eq!(
            replies,
            vec![
                frame(100 + SSH_AGENTC_REQUEST_IDENTITIES, b"ok"),
                vec![0, 0, 0, 1, SSH_AGENT_FAILURE],
                frame(100 + SSH_AGENTC_SIGN_REQUEST, b"ok"),
                vec![0, 0, 0, 1, SSH_AGENT_FAILURE],
            ]
        );
        // The agent saw only the read requests, then the end of the stream.
        let seen = agent_task.await.expect("agent");
        assert_eq!(
            seen,
            vec![SSH_AGENTC_REQUEST_IDENTITIES, SSH_AGENTC_SIGN_REQUEST]
        );
    }

    #[tokio::test]
    async fn oversized_messages_end_the_call() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.sock");
        let _listener = UnixListener::bind(&path).expect("bind");
        let relay = Relay {
            agent: UnixStream::connect(&path).await.expect("connect"),
            requests: Scripted(VecDeque::from([Bytes::from_static(&[0xff, 0, 0, 0])])),
            pending: BytesMut::new(),
        };
        let replies: Vec<_> = futures_util::StreamExt::collect(relay.into_stream()).await;
        assert_eq!(replies.len(), 1);
        let status = replies.into_iter().next().expect("one").expect_err("error");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }

    #[tokio::test]
    async fn check_agent_knows_only_the_given_ids() {
        let service = SshService {
            agents: Arc::new(AgentSockets::from([(
                DEFAULT_ID.to_string(),
                PathBuf::from("/run/agent.sock"),
            )])),
        };
        let check =
            |id: &str| service.check_agent(Request::new(CheckAgentRequest { id: id.into() }));
        assert!(check("").await.is_ok());
        assert!(check("default").await.is_ok());
        let status = check("deploy").await.expect_err("unknown id");
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert!(
            status.message().contains("\"deploy\""),
            "{}",
            status.message()
        );
    }
}
