//! FileSync: the daemon pulls the local directories (`context`, `dockerfile`,
//! named contexts) through it. bkd is the sender: it walks the directory with
//! the daemon's filters, announces every entry, and streams the content of
//! the files the daemon asks for.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::fsync::dirfd::{self, Dir};
use crate::fsync::stat::is_requestable;
use crate::fsync::walk::{shown, walk, Filter, WalkEntry};
use crate::proto::fsutil::types::{packet::PacketType, Packet};
use crate::proto::moby::filesync::v1::file_sync_server::{FileSync, FileSyncServer};

/// Size of one DATA packet. Far below the 16 MiB message limit, large enough
/// that per-packet costs vanish next to the copy itself.
pub const CHUNK_SIZE: usize = 256 << 10;
/// Files up to this size are read where their request arrives.
const INLINE_MAX: u64 = 64 * 1024;
/// Files read at once per transfer.
const READERS: usize = 4;

/// The local directories this session offers, by name.
#[derive(Debug, Clone, Default)]
pub struct LocalDirs {
    dirs: HashMap<String, PathBuf>,
}

impl LocalDirs {
    pub fn insert(&mut self, name: impl Into<String>, dir: PathBuf) {
        self.dirs.insert(name.into(), dir);
    }

    pub fn get(&self, name: &str) -> Option<&PathBuf> {
        self.dirs.get(name)
    }
}

#[derive(Debug, Clone)]
pub struct FileSyncService {
    dirs: Arc<LocalDirs>,
}

pub fn server(dirs: LocalDirs) -> FileSyncServer<FileSyncService> {
    FileSyncServer::new(FileSyncService {
        dirs: Arc::new(dirs),
    })
    .max_decoding_message_size(crate::transport::MAX_MESSAGE_SIZE)
    .max_encoding_message_size(crate::transport::MAX_MESSAGE_SIZE)
}

/// All values of a request header, URL-decoded when the daemon says so.
fn header_values(md: &MetadataMap, key: &str) -> Vec<String> {
    let encoded = md
        .get(format!("{key}-encoded").as_str())
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "1");
    md.get_all(key)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| {
            if encoded {
                query_unescape(v)
            } else {
                v.to_string()
            }
        })
        .collect()
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte.
pub fn query_unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Packets queued at once per transfer. Most packets of a large context are
/// STATs of a hundred bytes or so, and a short queue makes the walk wait on
/// every hand-over to the connection.
const QUEUE_PACKETS: usize = 1024;
/// Content bytes queued at once per transfer.
const QUEUE_BYTES: usize = 4 << 20;

/// A queued packet, holding its share of the content budget until the
/// connection takes it.
type Queued = (Result<Packet, Status>, Option<OwnedSemaphorePermit>);

/// The packet queue of one transfer, with what went through it and how
/// long bkd had packets ready that the daemon was not taking yet (at least
/// one sender waiting on a full queue). A transfer that waits most of its
/// time is paced by the daemon, not by bkd.
#[derive(Clone)]
struct PacketTx {
    tx: mpsc::Sender<Queued>,
    budget: Arc<Semaphore>,
    stats: Arc<Mutex<TransferStats>>,
}

#[derive(Default)]
struct TransferStats {
    bytes: u64,
    files: u64,
    /// Senders now waiting on a full queue, and since when one has been.
    waiting: usize,
    since: Option<Instant>,
    waited: Duration,
    /// How long the walk took to announce every entry.
    walk: Duration,
    entries: u64,
}

/// The queue's receiving end, as the response stream.
pub struct PacketStream {
    rx: mpsc::Receiver<Queued>,
}

impl Stream for PacketStream {
    type Item = Result<Packet, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // The permit is released here, as the connection takes the packet.
        self.rx.poll_recv(cx).map(|q| q.map(|(p, _permit)| p))
    }
}

fn packet_queue() -> (PacketTx, PacketStream) {
    let (tx, rx) = mpsc::channel(QUEUE_PACKETS);
    let tx = PacketTx {
        tx,
        budget: Arc::new(Semaphore::new(QUEUE_BYTES)),
        stats: Arc::default(),
    };
    (tx, PacketStream { rx })
}

/// The budget a packet takes: its content, at most the whole budget.
fn cost(p: &Packet) -> u32 {
    p.data.len().min(QUEUE_BYTES) as u32
}

impl PacketTx {
    fn count(&self, p: &Packet) {
        if p.r#type == PacketType::PacketData as i32 {
            if let Ok(mut s) = self.stats.lock() {
                if p.data.is_empty() {
                    s.files += 1;
                } else {
                    s.bytes += p.data.len() as u64;
                }
            }
        }
    }

    fn wait_starts(&self) {
        if let Ok(mut s) = self.stats.lock() {
            if s.waiting == 0 {
                s.since = Some(Instant::now());
            }
            s.waiting += 1;
        }
    }

    fn wait_ends(&self) {
        if let Ok(mut s) = self.stats.lock() {
            s.waiting = s.waiting.saturating_sub(1);
            if s.waiting == 0 {
                if let Some(since) = s.since.take() {
                    s.waited += since.elapsed();
                }
            }
        }
    }

    /// Queues a packet, waiting for room in the queue and in the content
    /// budget; `Err` when the receiver went away.
    async fn send(&self, p: Packet) -> Result<(), ()> {
        self.count(&p);
        let n = cost(&p);
        let permit = if n == 0 {
            None
        } else {
            Some(match self.budget.clone().try_acquire_many_owned(n) {
                Ok(permit) => permit,
                Err(TryAcquireError::Closed) => return Err(()),
                Err(TryAcquireError::NoPermits) => {
                    self.wait_starts();
                    let permit = self.budget.clone().acquire_many_owned(n).await;
                    self.wait_ends();
                    permit.map_err(|_| ())?
                }
            })
        };
        match self.tx.try_send((Ok(p), permit)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
            Err(mpsc::error::TrySendError::Full(q)) => {
                self.wait_starts();
                let sent = self.tx.send(q).await.map_err(|_| ());
                self.wait_ends();
                sent
            }
        }
    }

    /// [`send`](Self::send) from a blocking thread.
    fn blocking_send(&self, p: Packet) -> Result<(), ()> {
        tokio::runtime::Handle::current().block_on(self.send(p))
    }
}

fn packet(kind: PacketType) -> Packet {
    Packet {
        r#type: kind as i32,
        ..Default::default()
    }
}

fn err_packet(msg: &str) -> Packet {
    Packet {
        data: Bytes::from(msg.to_string()),
        ..packet(PacketType::PacketErr)
    }
}

#[tonic::async_trait]
impl FileSync for FileSyncService {
    type DiffCopyStream = PacketStream;

    async fn diff_copy(
        &self,
        req: Request<Streaming<Packet>>,
    ) -> Result<Response<Self::DiffCopyStream>, Status> {
        let md = req.metadata();
        let name = header_values(md, "dir-name")
            .into_iter()
            .next()
            .ok_or_else(|| Status::invalid_argument("request names no directory (dir-name)"))?;
        let root = self
            .dirs
            .get(&name)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no access allowed to dir {name:?}")))?;
        let filter = Filter {
            include_patterns: header_values(md, "include-patterns"),
            exclude_patterns: header_values(md, "exclude-patterns"),
            follow_paths: header_values(md, "followpaths"),
        };
        tracing::debug!(dir = %name, root = %root.display(), ?filter, "file sync requested");
        let inbound = req.into_inner();
        let (tx, stream) = packet_queue();
        tokio::spawn(async move {
            let started = Instant::now();
            if let Err(e) = send_dir(root, filter, inbound, tx.clone()).await {
                tracing::debug!(dir = %name, error = %e, "file sync ended with an error");
                let _ = tx.send(err_packet(&e)).await;
                return;
            }
            if let Ok(s) = tx.stats.lock() {
                tracing::debug!(
                    dir = %name,
                    entries = s.entries,
                    walk_s = format!("{:.3}", s.walk.as_secs_f64()),
                    files = s.files,
                    bytes = s.bytes,
                    seconds = format!("{:.3}", started.elapsed().as_secs_f64()),
                    waited_for_daemon_s = format!("{:.3}", s.waited.as_secs_f64()),
                    "file sync done"
                );
            }
        });
        Ok(Response::new(stream))
    }

    type TarStreamStream = ReceiverStream<Result<Packet, Status>>;

    async fn tar_stream(
        &self,
        _req: Request<Streaming<Packet>>,
    ) -> Result<Response<Self::TarStreamStream>, Status> {
        Err(Status::unimplemented(
            "tar stream transfers are not supported",
        ))
    }
}

/// A file the daemon may ask for: where it is below the root, and the size
/// and identity it was announced with.
struct Offer {
    path: Bytes,
    size: u64,
    dev: u64,
    ino: u64,
}

/// Ids the daemon may ask for.
type Offered = Arc<Mutex<HashMap<u32, Offer>>>;

/// The directory being sent: its descriptor, which every open goes
/// through, and its path for messages.
struct Root {
    dir: Dir,
    path: PathBuf,
}

impl Root {
    fn shown(&self, rel: &[u8]) -> String {
        shown(&self.path, rel)
    }
}

/// Runs one transfer: the walk (blocking, on its own thread), the readers,
/// and the loop answering the daemon's requests.
async fn send_dir(
    root: PathBuf,
    filter: Filter,
    mut inbound: Streaming<Packet>,
    tx: PacketTx,
) -> Result<(), String> {
    let dir = Dir::open(&root).map_err(|e| {
        format!(
            "cannot read {}: {}",
            crate::text::escape_path(&root),
            crate::error::io_reason(&e)
        )
    })?;
    let root = Arc::new(Root { dir, path: root });
    let offered: Offered = Arc::default();
    let (req_tx, req_rx) = std::sync::mpsc::channel::<(u32, Offer)>();
    let req_rx = Arc::new(Mutex::new(req_rx));

    let walker = {
        let offered = offered.clone();
        let tx = tx.clone();
        let root = root.clone();
        tokio::task::spawn_blocking(move || walk_and_announce(&root, &filter, &offered, &tx))
    };
    let mut readers = Vec::with_capacity(READERS);
    for _ in 0..READERS {
        let rx = req_rx.clone();
        let tx = tx.clone();
        let root = root.clone();
        readers.push(tokio::task::spawn_blocking(move || {
            read_loop(&root, &rx, &tx)
        }));
    }

    let mut answer_requests = Box::pin(async {
        loop {
            let p = match inbound.next().await {
                Some(Ok(p)) => p,
                Some(Err(status)) => return Err(format!("receiver failed: {}", status.message())),
                None => return Err("receiver closed the transfer early".to_string()),
            };
            match PacketType::try_from(p.r#type) {
                Ok(PacketType::PacketReq) => {
                    let entry = offered
                        .lock()
                        .map_err(|_| "file table poisoned".to_string())?
                        .remove(&p.id);
                    let Some(offer) = entry else {
                        return Err(format!("invalid file id {}", p.id));
                    };
                    if offer.size <= INLINE_MAX {
                        let data = read_small(&root, &offer)?;
                        let closed = || "receiver closed the transfer early".to_string();
                        if !data.is_empty() {
                            tx.send(data_packet(p.id, data))
                                .await
                                .map_err(|_| closed())?;
                        }
                        tx.send(data_packet(p.id, Vec::new()))
                            .await
                            .map_err(|_| closed())?;
                        continue;
                    }
                    req_tx
                        .send((p.id, offer))
                        .map_err(|_| "file readers stopped".to_string())?;
                }
                Ok(PacketType::PacketFin) => {
                    // The receiver has everything it asked for.
                    drop(req_tx);
                    let _ = tx.send(packet(PacketType::PacketFin)).await;
                    return Ok(());
                }
                Ok(PacketType::PacketErr) => {
                    return Err(format!(
                        "error from receiver: {}",
                        String::from_utf8_lossy(&p.data)
                    ))
                }
                _ => {}
            }
        }
    });
    let mut walker = walker;
    // A walk that fails must end the transfer at once: the receiver waits
    // for the end of the walk and would never send FIN.
    let result = tokio::select! {
        r = &mut answer_requests => {
            let walked = (&mut walker).await.map_err(|e| e.to_string());
            r.and(walked?)
        }
        walked = &mut walker => match walked.map_err(|e| e.to_string())? {
            Ok(()) => (&mut answer_requests).await,
            Err(e) => Err(e),
        },
    };
    // Ends the readers' request queue, so they finish.
    drop(answer_requests);
    for r in readers {
        let _ = r.await;
    }
    result
}

fn walk_and_announce(
    root: &Root,
    filter: &Filter,
    offered: &Offered,
    tx: &PacketTx,
) -> Result<(), String> {
    let started = Instant::now();
    let mut id: u32 = 0;
    let mut stopped = false;
    let res = walk(&root.dir, &root.path, filter, |entry: WalkEntry| {
        // Register before announcing, so a request can never outrun it.
        if is_requestable(entry.stat.mode) && entry.stat.linkname.is_empty() {
            if let Ok(mut map) = offered.lock() {
                let offer = Offer {
                    path: entry.stat.path.clone(),
                    size: entry.stat.size.max(0) as u64,
                    dev: entry.dev,
                    ino: entry.ino,
                };
                map.insert(id, offer);
            }
        }
        id += 1;
        let p = Packet {
            stat: Some(entry.stat),
            ..packet(PacketType::PacketStat)
        };
        if tx.blocking_send(p).is_err() {
            stopped = true;
            return false;
        }
        true
    });
    if stopped {
        return Ok(());
    }
    res.map_err(|e| e.to_string())?;
    let _ = tx.blocking_send(packet(PacketType::PacketStat));
    if let Ok(mut s) = tx.stats.lock() {
        s.walk = started.elapsed();
        s.entries = u64::from(id);
    }
    Ok(())
}

fn read_loop(root: &Root, rx: &Mutex<std::sync::mpsc::Receiver<(u32, Offer)>>, tx: &PacketTx) {
    loop {
        let next = match rx.lock() {
            Ok(guard) => guard.recv(),
            Err(_) => return,
        };
        let Ok((id, offer)) = next else { return };
        if send_file(root, id, &offer, tx).is_err() {
            return;
        }
    }
}

/// Streams one file as DATA packets and the empty terminator. A socket
/// (announced as an empty regular file) is sent empty, as the reference
/// sender does. A file that cannot be read, vanished, shrank or is no
/// longer the file announced ends the transfer with an error naming it: an
/// empty or short file in the build would be a silent corruption, another
/// file in its place could be anything. The content never exceeds the size
/// announced in its STAT, so a growing file is cut there.
fn send_file(root: &Root, id: u32, offer: &Offer, tx: &PacketTx) -> Result<(), ()> {
    if let Err(message) = send_content(root, id, offer, tx)? {
        let _ = tx.blocking_send(err_packet(&message));
        return Err(());
    }
    tx.blocking_send(Packet {
        id,
        ..packet(PacketType::PacketData)
    })
}

/// The DATA packets of one file: `Err(())` when the receiver went away,
/// `Ok(Err(message))` when the file could not be sent as announced.
fn send_content(
    root: &Root,
    id: u32,
    offer: &Offer,
    tx: &PacketTx,
) -> Result<Result<(), String>, ()> {
    let mut file = match open_for_send(root, offer) {
        Ok(Some(f)) => f,
        Ok(None) => return Ok(Ok(())),
        Err(message) => return Ok(Err(message)),
    };
    let mut remaining = offer.size;
    while remaining > 0 {
        let chunk = match next_chunk(&mut file, root, offer, remaining) {
            Ok(c) => c,
            Err(message) => return Ok(Err(message)),
        };
        remaining -= chunk.len() as u64;
        tx.blocking_send(data_packet(id, chunk))?;
    }
    Ok(Ok(()))
}

fn data_packet(id: u32, data: Vec<u8>) -> Packet {
    Packet {
        id,
        data: Bytes::from(data),
        ..packet(PacketType::PacketData)
    }
}

/// The whole content of a small file, read where the request arrives:
/// handing thousands of tiny files to reader threads costs more in thread
/// wake-ups than the reads themselves.
fn read_small(root: &Root, offer: &Offer) -> Result<Vec<u8>, String> {
    let mut data = Vec::new();
    if let Some(mut file) = open_for_send(root, offer)? {
        let mut remaining = offer.size;
        while remaining > 0 {
            let chunk = next_chunk(&mut file, root, offer, remaining)?;
            remaining -= chunk.len() as u64;
            if data.is_empty() {
                data = chunk;
            } else {
                data.extend_from_slice(&chunk);
            }
        }
    }
    Ok(data)
}

/// Opens a file to send, below the root without following any symlink,
/// and checks it is the file announced; `None` for a socket (carried as an
/// empty file).
fn open_for_send(root: &Root, offer: &Offer) -> Result<Option<std::fs::File>, String> {
    let changed = || {
        format!(
            "{} changed while the build context was being sent (it is no longer the file announced)",
            root.shown(&offer.path)
        )
    };
    let fd = match root
        .dir
        .open_beneath(&offer.path, libc::O_RDONLY | libc::O_NONBLOCK)
    {
        Ok(fd) => fd,
        // ENXIO: a socket, which the protocol carries as an empty file.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "{} vanished while the build context was being sent",
                root.shown(&offer.path)
            ))
        }
        // A symlink or a non-directory on the way: something was swapped in.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ELOOP) | Some(libc::ENOTDIR) | Some(libc::EXDEV)
            ) =>
        {
            return Err(changed())
        }
        Err(e) => {
            return Err(format!(
                "cannot read {}: {}",
                root.shown(&offer.path),
                crate::error::io_reason(&e)
            ))
        }
    };
    let st = dirfd::fstat(std::os::fd::AsRawFd::as_raw_fd(&fd)).map_err(|e| {
        format!(
            "cannot read {}: {}",
            root.shown(&offer.path),
            crate::error::io_reason(&e)
        )
    })?;
    if st.st_dev != offer.dev || st.st_ino != offer.ino || !dirfd::is_file(&st) {
        return Err(changed());
    }
    Ok(Some(std::fs::File::from(fd)))
}

/// The next chunk of a file of announced size with `remaining` bytes still
/// to send; a file that ends early is an error.
fn next_chunk(
    file: &mut std::fs::File,
    root: &Root,
    offer: &Offer,
    remaining: u64,
) -> Result<Vec<u8>, String> {
    let want = remaining.min(CHUNK_SIZE as u64);
    // read_to_end fills spare capacity: no zeroing of the buffer.
    let mut chunk = Vec::with_capacity(want as usize);
    let n = read_up_to(file, want, &mut chunk).map_err(|e| {
        format!(
            "cannot read {}: {}",
            root.shown(&offer.path),
            crate::error::io_reason(&e)
        )
    })?;
    if n == 0 {
        return Err(format!(
            "{} changed while the build context was being sent ({} bytes announced, {} read)",
            root.shown(&offer.path),
            offer.size,
            offer.size - remaining
        ));
    }
    Ok(chunk)
}

/// Appends up to `limit` bytes of the file to `buf` (read_to_end retries
/// interrupted reads itself); returns how many.
fn read_up_to(file: &mut std::fs::File, limit: u64, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    file.by_ref().take(limit).read_to_end(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_unescape_like_go() {
        assert_eq!(query_unescape("a+b%2Fc"), "a b/c");
        assert_eq!(query_unescape("%E2%9C%93"), "✓");
        assert_eq!(query_unescape("100%"), "100%");
    }
}
