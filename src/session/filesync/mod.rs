//! FileSync: the daemon pulls the local directories (`context`, `dockerfile`,
//! named contexts) through it. bkd is the sender: it walks the directory with
//! the daemon's filters, announces every entry, and streams the content of
//! the files the daemon asks for.
//!
//! The service is written by hand rather than generated: its response is a
//! body that makes each frame when the connection asks for it
//! ([`transfer`]), from what the walker thread hands over ([`feed`]) and
//! from files read into the very buffers that are sent ([`wire`]).

mod feed;
mod transfer;
mod wire;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tonic::codec::Codec;
use tonic::metadata::MetadataMap;
use tonic::{Status, Streaming};

use crate::fsync::dirfd::{self, Dir};
use crate::fsync::stat::is_requestable;
use crate::fsync::walk::{shown, walk, Filter, WalkEntry, WalkError};
use crate::proto::fsutil::types::Packet;
use feed::{Feed, WalkState};
pub use transfer::CHUNK_SIZE;

pub const SERVICE_NAME: &str = "moby.filesync.v1.FileSync";
pub const DIFF_COPY_PATH: &str = "/moby.filesync.v1.FileSync/DiffCopy";

/// STAT packets the walker gathers before handing them over, in bytes,
/// unless the transfer is waiting for them.
const STAT_BATCH: usize = 16 << 10;

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

/// A file the daemon may ask for: where it is below the root, and the size
/// and identity it was announced with.
struct Offer {
    path: Bytes,
    size: u64,
    dev: u64,
    ino: u64,
}

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

/// The FileSync service, written by hand (see the module's comment).
#[derive(Debug, Clone)]
pub struct FileSyncServer {
    dirs: Arc<LocalDirs>,
}

pub fn server(dirs: LocalDirs) -> FileSyncServer {
    FileSyncServer {
        dirs: Arc::new(dirs),
    }
}

impl tonic::server::NamedService for FileSyncServer {
    const NAME: &'static str = SERVICE_NAME;
}

impl<B> tower::Service<http::Request<B>> for FileSyncServer
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let response = if req.uri().path() == DIFF_COPY_PATH {
            match self.diff_copy(req) {
                Ok(r) => r,
                Err(status) => status.into_http(),
            }
        } else {
            Status::unimplemented("tar stream transfers are not supported").into_http()
        };
        std::future::ready(Ok(response))
    }
}

impl FileSyncServer {
    /// Starts one transfer: the walk on its own thread, and the response
    /// whose body sends the packets.
    fn diff_copy<B>(
        &self,
        req: http::Request<B>,
    ) -> Result<http::Response<tonic::body::Body>, Status>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    {
        let (parts, body) = req.into_parts();
        let md = MetadataMap::from_headers(parts.headers);
        let name = header_values(&md, "dir-name")
            .into_iter()
            .next()
            .ok_or_else(|| Status::invalid_argument("request names no directory (dir-name)"))?;
        let path = self
            .dirs
            .get(&name)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no access allowed to dir {name:?}")))?;
        let filter = Filter {
            include_patterns: header_values(&md, "include-patterns"),
            exclude_patterns: header_values(&md, "exclude-patterns"),
            follow_paths: header_values(&md, "followpaths"),
        };
        tracing::debug!(dir = %name, root = %path.display(), ?filter, "file sync requested");
        let dir = match Dir::open(&path) {
            Ok(dir) => dir,
            // Reported in the transfer, as a walk that fails is.
            Err(e) => {
                let message = format!(
                    "cannot read {}: {}",
                    crate::text::escape_path(&path),
                    crate::error::io_reason(&e)
                );
                tracing::debug!(dir = %name, error = %message, "file sync ended with an error");
                return Ok(grpc_response(transfer::Refusal::new(&message)));
            }
        };
        let root = Arc::new(Root { dir, path });
        let feed = Arc::new(Feed::default());
        let (walk_root, walk_feed) = (root.clone(), feed.clone());
        // Ends with the walk, or at its next hand-over once the transfer is
        // gone.
        tokio::task::spawn_blocking(move || walk_into(&walk_root, &filter, &walk_feed));
        let mut decoder = tonic_prost::ProstCodec::<Packet, Packet>::default();
        let inbound = Streaming::new_request(
            decoder.decoder(),
            body,
            None,
            Some(crate::transport::MAX_MESSAGE_SIZE),
        );
        Ok(grpc_response(transfer::Transfer::new(
            name, root, inbound, feed,
        )))
    }
}

/// A gRPC response with `body`.
fn grpc_response<T>(body: T) -> http::Response<tonic::body::Body>
where
    T: http_body::Body<Data = Bytes, Error = Status> + Send + 'static,
{
    let mut response = http::Response::new(tonic::body::Body::new(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// The walk, on its own thread: STAT packets encoded here and handed over
/// in batches, each with the files it offers.
fn walk_into(root: &Root, filter: &Filter, feed: &Feed) {
    let started = Instant::now();
    let mut id: u32 = 0;
    let mut batch = BytesMut::new();
    let mut offers = Vec::new();
    let mut stopped = false;
    let res = walk(&root.dir, &root.path, filter, |entry: WalkEntry| {
        if is_requestable(entry.stat.mode) && entry.stat.linkname.is_empty() {
            offers.push((
                id,
                Offer {
                    path: entry.stat.path.clone(),
                    size: entry.stat.size.max(0) as u64,
                    dev: entry.dev,
                    ino: entry.ino,
                },
            ));
        }
        id = id.wrapping_add(1);
        wire::put_stat(&mut batch, Some(entry.stat));
        if batch.len() >= STAT_BATCH || feed.hungry() {
            // Offers go with the packets that announce them, so a request
            // can never outrun its offer.
            let handed = feed.push_stats(batch.split().freeze(), std::mem::take(&mut offers));
            stopped = handed.is_err();
            return !stopped;
        }
        true
    });
    if stopped {
        return;
    }
    if !batch.is_empty() && feed.push_stats(batch.freeze(), offers).is_err() {
        return;
    }
    feed.walk_ended(match res {
        Ok(()) => WalkState::Done {
            entries: u64::from(id),
            took: started.elapsed(),
        },
        Err(WalkError::Stopped) => return,
        Err(e) => WalkState::Failed(e.to_string()),
    });
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
