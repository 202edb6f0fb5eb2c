//! FileSend: the daemon streams exporter output back through it. `tar`,
//! `oci` and `docker` outputs arrive as raw bytes of the output file; the
//! `local` output arrives as file-sync packets on the same method, so the
//! service decodes messages by hand, choosing by exporter.
//!
//! Nothing reaches its destination until the build has succeeded: files are
//! staged (see [`crate::outfile`]) and put in place by
//! [`StagedOutputs::commit`]; directories are received into a staging area
//! beside theirs (see [`crate::fsync::stage`]).

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Request, Response, Status, Streaming};

use crate::fsync::receive::{ReceiveError, Receiver, Step};
pub use crate::fsync::stage::parent_dir;
use crate::fsync::stage::StagedDir;
use crate::outfile::{FileDest, Staging};
use crate::proto::fsutil::types::Packet;
use crate::proto::moby::filesync::v1::BytesMessage;

pub const SERVICE_NAME: &str = "moby.filesync.v1.FileSend";
pub const DIFF_COPY_PATH: &str = "/moby.filesync.v1.FileSend/DiffCopy";

/// Where one exporter's output goes on this machine.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputTarget {
    /// A single file (`tar`, `oci`, `docker`).
    File(FileDest),
    /// Standard output (`dest=-`).
    Stdout,
    /// A directory (`local`).
    Dir(PathBuf),
}

/// Received output waiting for the build to succeed.
#[derive(Debug)]
enum Staged {
    File { temp: Staging, dest: FileDest },
    Dir { staged: StagedDir, dest: PathBuf },
}

/// Outputs written so far, committed or dropped as a whole.
#[derive(Debug, Default, Clone)]
pub struct StagedOutputs {
    inner: Arc<Mutex<Vec<Staged>>>,
    /// The first local write that failed. The daemon only learns that the
    /// transfer broke (often as a bare "EOF"); this is the reason to show.
    failure: Arc<Mutex<Option<String>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot write output {}: {source}", crate::text::escape_path(dest))]
pub struct CommitError {
    pub dest: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl StagedOutputs {
    fn push(&self, s: Staged) {
        if let Ok(mut v) = self.inner.lock() {
            v.push(s);
        }
    }

    fn record_failure(&self, message: String) {
        if let Ok(mut f) = self.failure.lock() {
            f.get_or_insert(message);
        }
    }

    /// Why writing an output failed during the build, if it did.
    pub fn write_failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    /// Moves every staged output to its destination. Blocking (writing
    /// into a FIFO goes at its reader's pace): call it off the async threads.
    pub fn commit(&self) -> Result<Vec<PathBuf>, CommitError> {
        let staged = match self.inner.lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(_) => Vec::new(),
        };
        let mut done = Vec::new();
        for s in staged {
            match s {
                Staged::File { temp, dest } => {
                    dest.finish(temp).map_err(|source| CommitError {
                        dest: dest.path.clone(),
                        source,
                    })?;
                    done.push(dest.path);
                }
                Staged::Dir { staged, dest } => {
                    staged.commit().map_err(|e| CommitError {
                        dest: dest.clone(),
                        source: std::io::Error::new(e.kind(), write_reason(&e)),
                    })?;
                    done.push(dest);
                }
            }
        }
        Ok(done)
    }
}

/// The hand-written FileSend service.
#[derive(Debug, Clone)]
pub struct FileSendService {
    targets: Arc<HashMap<u32, OutputTarget>>,
    staged: StagedOutputs,
}

impl FileSendService {
    pub fn new(targets: HashMap<u32, OutputTarget>, staged: StagedOutputs) -> Self {
        FileSendService {
            targets: Arc::new(targets),
            staged,
        }
    }

    async fn diff_copy(
        &self,
        req: Request<Streaming<Bytes>>,
    ) -> Result<Response<ReceiverStream<Result<Bytes, Status>>>, Status> {
        let id = req
            .metadata()
            .get("buildkit-attachable-exporter-id")
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.parse::<u32>()
                    .map_err(|_| Status::invalid_argument(format!("bad exporter id {v:?}")))
            })
            .transpose()?
            .unwrap_or(0);
        let target = self
            .targets
            .get(&id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no output for exporter {id}")))?;
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        match target {
            OutputTarget::File(dest) => match receive_file(&dest, &mut inbound).await {
                Ok(temp) => self.staged.push(Staged::File { temp, dest }),
                Err(Failure::Write(message)) => {
                    self.staged.record_failure(message.clone());
                    return Err(Status::aborted(message));
                }
                Err(Failure::Transfer(status)) => return Err(status),
            },
            OutputTarget::Stdout => {
                let staged = self.staged.clone();
                let fail = move |e: std::io::Error| {
                    let message = if e.kind() == std::io::ErrorKind::BrokenPipe {
                        "cannot write output to stdout: the reading end was closed".to_string()
                    } else {
                        format!("cannot write output to stdout: {}", write_reason(&e))
                    };
                    staged.record_failure(message.clone());
                    Status::aborted(message)
                };
                while let Some(msg) = inbound.next().await {
                    let data = decode_bytes_message(msg?)?;
                    std::io::stdout().write_all(&data).map_err(&fail)?;
                }
                std::io::stdout().flush().map_err(&fail)?;
            }
            OutputTarget::Dir(dest) => {
                let fail = |e: std::io::Error| {
                    let message = format!(
                        "cannot create output in {}: {}",
                        crate::text::escape_path(&parent_dir(&dest)),
                        write_reason(&e)
                    );
                    self.staged.record_failure(message.clone());
                    Status::aborted(message)
                };
                let staged_dir = StagedDir::create(&dest).map_err(fail)?;
                let out = staged_dir.out().map_err(fail)?;
                let receiver = Receiver::new(out, dest.clone());
                let staged = self.staged.clone();
                tokio::spawn(async move {
                    match receive_dir(receiver, inbound, &tx).await {
                        Ok(()) => staged.push(Staged::Dir {
                            staged: staged_dir,
                            dest,
                        }),
                        Err(Failure::Write(message)) => {
                            staged.record_failure(format!(
                                "cannot write output {}: {message}",
                                crate::text::escape_path(&dest)
                            ));
                            let _ = tx.send(Err(Status::aborted(message))).await;
                        }
                        Err(Failure::Transfer(status)) => {
                            let _ = tx.send(Err(status)).await;
                        }
                    }
                });
            }
        }
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn decode_bytes_message(raw: Bytes) -> Result<Bytes, Status> {
    BytesMessage::decode(raw)
        .map(|m| m.data)
        .map_err(|e| Status::invalid_argument(format!("bad output chunk: {e}")))
}

/// Why receiving an output stopped: a local write failed (the user's
/// problem, exit code 5), or the transfer itself broke.
enum Failure {
    Write(String),
    Transfer(Status),
}

impl From<Status> for Failure {
    fn from(s: Status) -> Self {
        Failure::Transfer(s)
    }
}

/// A short reason for a failed write, without the OS error number.
fn write_reason(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOSPC) => "no space left on device".into(),
        Some(libc::EDQUOT) => "disk quota exceeded".into(),
        Some(libc::EROFS) => "read-only file system".into(),
        _ => crate::error::io_reason(e),
    }
}

/// Bytes gathered before a hand-off to the file writer.
const WRITE_BATCH: usize = 1 << 20;

async fn receive_file(dest: &FileDest, inbound: &mut Streaming<Bytes>) -> Result<Staging, Failure> {
    let fail = |e: std::io::Error| {
        Failure::Write(format!(
            "cannot write output {}: {}",
            crate::text::escape_path(&dest.path),
            write_reason(&e)
        ))
    };
    let mut staging = dest.staging().map_err(fail)?;
    let file = staging.file().try_clone().map_err(fail)?;
    // One writer thread takes batches of about WRITE_BATCH bytes: a
    // thread hand-off per message (tokio::fs) costs more than the writes.
    let (batches, mut queue) = tokio::sync::mpsc::channel::<Vec<Bytes>>(4);
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut file = file;
        while let Some(batch) = queue.blocking_recv() {
            for chunk in batch {
                std::io::Write::write_all(&mut file, &chunk)?;
            }
        }
        Ok(())
    });
    let mut batch = Vec::new();
    let mut batched = 0;
    let mut received = Ok(());
    while let Some(msg) = inbound.next().await {
        let data = match msg.and_then(decode_bytes_message) {
            Ok(d) => d,
            Err(e) => {
                received = Err(Failure::from(e));
                break;
            }
        };
        batched += data.len();
        batch.push(data);
        if batched >= WRITE_BATCH {
            batched = 0;
            if batches.send(std::mem::take(&mut batch)).await.is_err() {
                break; // the writer failed; its error is below
            }
        }
    }
    if !batch.is_empty() && received.is_ok() {
        let _ = batches.send(batch).await;
    }
    drop(batches);
    let written = writer
        .await
        .map_err(|e| fail(std::io::Error::other(e.to_string())))?;
    written.map_err(fail)?;
    received?;
    Ok(staging)
}

/// Runs the receiving side of a `local` export until both FINs are exchanged.
async fn receive_dir(
    mut receiver: Receiver,
    mut inbound: Streaming<Bytes>,
    tx: &mpsc::Sender<Result<Bytes, Status>>,
) -> Result<(), Failure> {
    while let Some(msg) = inbound.next().await {
        let raw = match msg {
            Ok(raw) => raw,
            // After FIN the daemon may just cancel the call.
            Err(_) if receiver.finished() => return Ok(()),
            Err(status) => return Err(status.into()),
        };
        let packet = Packet::decode(raw)
            .map_err(|e| Status::invalid_argument(format!("bad file-sync packet: {e}")))?;
        let step = match receiver.handle(packet) {
            Ok(step) => step,
            Err(ReceiveError::Io { source, .. }) => {
                return Err(Failure::Write(write_reason(&source)))
            }
            Err(e @ ReceiveError::DeviceNeedsRoot(_)) => return Err(Failure::Write(e.to_string())),
            Err(e) => return Err(Status::aborted(e.to_string()).into()),
        };
        match step {
            Step::Done => return Ok(()),
            Step::Reply(replies) => {
                for r in replies {
                    if tx.send(Ok(r.encode_to_vec().into())).await.is_err() && !receiver.finished()
                    {
                        return Err(Status::cancelled("output transfer cancelled").into());
                    }
                }
            }
        }
    }
    if receiver.finished() {
        Ok(())
    } else {
        Err(Status::aborted("output transfer ended early").into())
    }
}

/// Passes message bytes through untouched; the service decodes them.
#[derive(Debug, Clone, Default)]
pub struct RawCodec;

#[derive(Debug, Clone, Default)]
pub struct RawEncoder;

#[derive(Debug, Clone, Default)]
pub struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

/// Tower service routing the one FileSend method to [`FileSendService`].
#[derive(Debug, Clone)]
pub struct FileSendServer {
    inner: FileSendService,
}

impl FileSendServer {
    pub fn new(inner: FileSendService) -> Self {
        FileSendServer { inner }
    }
}

impl tonic::server::NamedService for FileSendServer {
    const NAME: &'static str = SERVICE_NAME;
}

struct DiffCopyMethod(FileSendService);

impl tonic::server::StreamingService<Bytes> for DiffCopyMethod {
    type Response = Bytes;
    type ResponseStream = ReceiverStream<Result<Bytes, Status>>;
    type Future =
        futures_util::future::BoxFuture<'static, Result<Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: Request<Streaming<Bytes>>) -> Self::Future {
        let svc = self.0.clone();
        Box::pin(async move { svc.diff_copy(request).await })
    }
}

impl<B> tower::Service<http::Request<B>> for FileSendServer
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            if req.uri().path() != DIFF_COPY_PATH {
                return Ok(Status::unimplemented("unknown FileSend method").into_http());
            }
            let mut grpc = tonic::server::Grpc::new(RawCodec).apply_max_message_size_config(
                Some(crate::transport::MAX_MESSAGE_SIZE),
                Some(crate::transport::MAX_MESSAGE_SIZE),
            );
            Ok(grpc.streaming(DiffCopyMethod(inner), req).await)
        })
    }
}
