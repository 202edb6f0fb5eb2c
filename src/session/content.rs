//! Content store: the containerd content API over local OCI layout
//! directories. The daemon reads and writes the blobs of a local cache (and
//! of an oci/docker directory output) through it, naming the store in the
//! `buildkit-attachable-store-id` header of every call.
//!
//! A blob is written to a temporary file in the store's `ingest/` area and
//! renamed into `blobs/sha256/` only after its size and digest check out,
//! so a blob path only ever holds complete, verified content.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use futures_util::Stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tonic::{Request, Response, Status, Streaming};

use crate::error::io_reason;
use crate::oci_layout::{Digest, Layout};
use crate::proto::containerd::services::content::v1 as api;
use api::content_server::{Content, ContentServer};

/// The request header naming the store a call is for.
pub const STORE_HEADER: &str = "buildkit-attachable-store-id";

/// The methods this service answers, for the session's announcement.
pub const METHODS: &[&str] = &[
    "/containerd.services.content.v1.Content/Info",
    "/containerd.services.content.v1.Content/Update",
    "/containerd.services.content.v1.Content/List",
    "/containerd.services.content.v1.Content/Delete",
    "/containerd.services.content.v1.Content/Read",
    "/containerd.services.content.v1.Content/Status",
    "/containerd.services.content.v1.Content/ListStatuses",
    "/containerd.services.content.v1.Content/Write",
    "/containerd.services.content.v1.Content/Abort",
];

/// Bytes per `Read` response message.
const READ_CHUNK: usize = 1 << 20;
/// containerd's writers send up to half their 16 MiB message limit per
/// `Write` message.
const MAX_MESSAGE: usize = 32 << 20;
/// `List` answers in batches of this many blobs.
const LIST_BATCH: usize = 100;

/// The stores a session offers, by id (`local:<dir>` for a local cache).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContentStores {
    roots: HashMap<String, PathBuf>,
}

impl ContentStores {
    pub fn insert(&mut self, id: impl Into<String>, root: PathBuf) {
        self.roots.insert(id.into(), root);
    }

    pub fn get(&self, id: &str) -> Option<&PathBuf> {
        self.roots.get(id)
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }
}

pub fn server(stores: ContentStores) -> ContentServer<ContentService> {
    let stores = stores
        .roots
        .into_iter()
        .map(|(id, root)| {
            let store = Store {
                layout: Layout::new(root),
                writes: Mutex::default(),
            };
            (id, Arc::new(store))
        })
        .collect();
    ContentServer::new(ContentService {
        stores: Arc::new(stores),
    })
    .max_decoding_message_size(MAX_MESSAGE)
    .max_encoding_message_size(MAX_MESSAGE)
}

#[derive(Debug)]
pub struct ContentService {
    stores: Arc<HashMap<String, Arc<Store>>>,
}

/// One layout directory and the writes in progress into it.
#[derive(Debug)]
struct Store {
    layout: Layout,
    writes: Mutex<HashMap<String, Arc<Mutex<WriteStatus>>>>,
}

#[derive(Debug, Clone)]
struct WriteStatus {
    started: SystemTime,
    updated: SystemTime,
    offset: i64,
    total: i64,
    expected: Option<Digest>,
    aborted: bool,
}

impl WriteStatus {
    fn to_proto(&self, reference: &str) -> api::Status {
        api::Status {
            started_at: Some(self.started.into()),
            updated_at: Some(self.updated.into()),
            r#ref: reference.to_string(),
            offset: self.offset,
            total: self.total,
            expected: self
                .expected
                .as_ref()
                .map(Digest::to_string)
                .unwrap_or_default(),
        }
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn parse_digest(s: &str) -> Result<Digest, Status> {
    Digest::parse(s).ok_or_else(|| Status::invalid_argument(format!("{s:?} failed validation")))
}

fn io_status(what: &str, path: &Path, e: &std::io::Error) -> Status {
    let message = format!(
        "{what} {}: {}",
        crate::text::escape_path(path),
        io_reason(e)
    );
    match e.kind() {
        std::io::ErrorKind::NotFound => Status::not_found(message),
        _ => Status::internal(message),
    }
}

impl Store {
    fn info(&self, digest: &Digest) -> Result<api::Info, Status> {
        let path = self.layout.blob_path(digest);
        let meta = std::fs::metadata(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Status::not_found(format!("content {digest}: not found"))
            }
            _ => io_status("cannot read", &path, &e),
        })?;
        let modified = meta.modified().ok().map(Into::into);
        Ok(api::Info {
            digest: digest.to_string(),
            size: meta.len() as i64,
            created_at: modified,
            updated_at: modified,
            labels: HashMap::new(),
        })
    }

    fn has(&self, digest: &Digest) -> bool {
        self.layout.blob_path(digest).is_file()
    }

    fn all_blobs(&self) -> Result<Vec<api::Info>, Status> {
        let dir = self.layout.blobs_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_status("cannot list", &dir, &e)),
        };
        let mut infos = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_status("cannot list", &dir, &e))?;
            let name = entry.file_name();
            let Some(digest) = name
                .to_str()
                .and_then(|n| Digest::parse(&format!("sha256:{n}")))
            else {
                continue;
            };
            infos.push(self.info(&digest)?);
        }
        Ok(infos)
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl ContentService {
    /// The store a call names in its header.
    fn choose<T>(&self, request: &Request<T>) -> Result<Arc<Store>, Status> {
        let value = request.metadata().get(STORE_HEADER).ok_or_else(|| {
            Status::invalid_argument(format!("request lacks metadata {STORE_HEADER:?}"))
        })?;
        let id = value
            .to_str()
            .map_err(|_| Status::invalid_argument(format!("{STORE_HEADER} is not text")))?;
        self.stores
            .get(id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("unknown store {id}")))
    }
}

#[tonic::async_trait]
impl Content for ContentService {
    async fn info(
        &self,
        request: Request<api::InfoRequest>,
    ) -> Result<Response<api::InfoResponse>, Status> {
        let store = self.choose(&request)?;
        let digest = parse_digest(&request.get_ref().digest)?;
        Ok(Response::new(api::InfoResponse {
            info: Some(store.info(&digest)?),
        }))
    }

    async fn update(
        &self,
        request: Request<api::UpdateRequest>,
    ) -> Result<Response<api::UpdateResponse>, Status> {
        self.choose(&request)?;
        // Labels are not kept, as in buildctl's store.
        Err(Status::failed_precondition(
            "update not supported on immutable content store",
        ))
    }

    type ListStream = BoxStream<api::ListContentResponse>;

    async fn list(
        &self,
        request: Request<api::ListContentRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let store = self.choose(&request)?;
        if !request.get_ref().filters.is_empty() {
            return Err(Status::unimplemented("list filters are not supported"));
        }
        let infos = store.all_blobs()?;
        let batches: Vec<Result<api::ListContentResponse, Status>> = infos
            .chunks(LIST_BATCH)
            .map(|c| Ok(api::ListContentResponse { info: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(futures_util::stream::iter(batches))))
    }

    async fn delete(
        &self,
        request: Request<api::DeleteContentRequest>,
    ) -> Result<Response<()>, Status> {
        let store = self.choose(&request)?;
        let digest = parse_digest(&request.get_ref().digest)?;
        let path = store.layout.blob_path(&digest);
        std::fs::remove_file(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Status::not_found(format!("content {digest}: not found"))
            }
            _ => io_status("cannot delete", &path, &e),
        })?;
        Ok(Response::new(()))
    }

    type ReadStream = BoxStream<api::ReadContentResponse>;

    async fn read(
        &self,
        request: Request<api::ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let store = self.choose(&request)?;
        let req = request.into_inner();
        let digest = parse_digest(&req.digest)?;
        let size = store.info(&digest)?.size;
        let offset = req.offset.max(0);
        if offset > size {
            return Err(Status::out_of_range(format!(
                "read past object length {size} bytes"
            )));
        }
        let len = if req.size <= 0 || offset + req.size > size {
            size - offset
        } else {
            req.size
        };
        let path = store.layout.blob_path(&digest);
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| io_status("cannot read", &path, &e))?;
        file.seek(SeekFrom::Start(offset as u64))
            .await
            .map_err(|e| io_status("cannot read", &path, &e))?;
        let stream = futures_util::stream::unfold(
            (file, path, offset, len),
            |(mut file, path, offset, left)| async move {
                if left <= 0 {
                    return None;
                }
                let n = (left as usize).min(READ_CHUNK);
                let mut data = vec![0u8; n];
                match file.read_exact(&mut data).await {
                    Ok(_) => {
                        let msg = api::ReadContentResponse {
                            offset,
                            data: data.into(),
                        };
                        Some((Ok(msg), (file, path, offset + n as i64, left - n as i64)))
                    }
                    Err(e) => {
                        let status = io_status("cannot read", &path, &e);
                        Some((Err(status), (file, path, offset, 0)))
                    }
                }
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn status(
        &self,
        request: Request<api::StatusRequest>,
    ) -> Result<Response<api::StatusResponse>, Status> {
        let store = self.choose(&request)?;
        let reference = &request.get_ref().r#ref;
        let writes = lock(&store.writes);
        let status = writes
            .get(reference)
            .ok_or_else(|| Status::not_found(format!("ref {reference}: not found")))?;
        let status = lock(status).to_proto(reference);
        Ok(Response::new(api::StatusResponse {
            status: Some(status),
        }))
    }

    async fn list_statuses(
        &self,
        request: Request<api::ListStatusesRequest>,
    ) -> Result<Response<api::ListStatusesResponse>, Status> {
        let store = self.choose(&request)?;
        let statuses = lock(&store.writes)
            .iter()
            .map(|(reference, s)| lock(s).to_proto(reference))
            .collect();
        Ok(Response::new(api::ListStatusesResponse { statuses }))
    }

    type WriteStream = BoxStream<api::WriteContentResponse>;

    async fn write(
        &self,
        request: Request<Streaming<api::WriteContentRequest>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        let store = self.choose(&request)?;
        let call = WriteCall {
            requests: request.into_inner(),
            store,
            ingest: None,
            done: false,
        };
        let stream = futures_util::stream::unfold(call, |mut call| async move {
            if call.done {
                return None;
            }
            let req = match call.requests.message().await {
                Ok(Some(r)) => r,
                // The daemon closed or dropped the call: an unfinished
                // ingest is discarded with `call`.
                Ok(None) | Err(_) => return None,
            };
            match call.step(req).await {
                Ok((msg, committed)) => {
                    call.done = committed;
                    Some((Ok(msg), call))
                }
                Err(status) => {
                    call.done = true;
                    call.ingest = None;
                    Some((Err(status), call))
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn abort(&self, request: Request<api::AbortRequest>) -> Result<Response<()>, Status> {
        let store = self.choose(&request)?;
        let reference = &request.get_ref().r#ref;
        let writes = lock(&store.writes);
        let status = writes
            .get(reference)
            .ok_or_else(|| Status::not_found(format!("ref {reference}: not found")))?;
        // The writing call fails at its next message and removes its file.
        lock(status).aborted = true;
        Ok(Response::new(()))
    }
}

/// One `Write` call: a conversation of STAT, WRITE and COMMIT messages, each
/// answered once, about one ingest.
struct WriteCall {
    requests: Streaming<api::WriteContentRequest>,
    store: Arc<Store>,
    ingest: Option<Ingest>,
    done: bool,
}

impl WriteCall {
    /// Handles one message; the flag says the blob was committed.
    async fn step(
        &mut self,
        req: api::WriteContentRequest,
    ) -> Result<(api::WriteContentResponse, bool), Status> {
        let ingest = match self.ingest.take() {
            Some(i) => i,
            None => Ingest::open(&self.store, &req)?,
        };
        let ingest = self.ingest.insert(ingest);
        ingest.step(req).await
    }
}

/// A blob being written: a temporary file in `ingest/`, its running digest,
/// and the status other calls can see. Dropping it removes the file unless
/// it was committed, and releases the ref.
struct Ingest {
    reference: String,
    store: Arc<Store>,
    file: tokio::fs::File,
    temp: Option<tempfile::TempPath>,
    hasher: ring::digest::Context,
    offset: i64,
    total: i64,
    expected: Option<Digest>,
    started: SystemTime,
    status: Arc<Mutex<WriteStatus>>,
}

impl Ingest {
    fn open(store: &Arc<Store>, req: &api::WriteContentRequest) -> Result<Ingest, Status> {
        let reference = req.r#ref.clone();
        if reference.is_empty() {
            return Err(Status::invalid_argument(
                "first message must have a reference",
            ));
        }
        let expected = match req.expected.as_str() {
            "" => None,
            s => Some(parse_digest(s)?),
        };
        if let Some(d) = &expected {
            if store.has(d) {
                return Err(Status::already_exists(format!(
                    "content {d}: already exists"
                )));
            }
        }
        let dir = store.layout.ingest_dir();
        std::fs::create_dir_all(&dir).map_err(|e| io_status("cannot create", &dir, &e))?;
        let started = SystemTime::now();
        let status = Arc::new(Mutex::new(WriteStatus {
            started,
            updated: started,
            offset: 0,
            total: req.total.max(0),
            expected: expected.clone(),
            aborted: false,
        }));
        {
            let mut writes = lock(&store.writes);
            if writes.contains_key(&reference) {
                return Err(Status::unavailable(format!("ref {reference} locked")));
            }
            writes.insert(reference.clone(), status.clone());
        }
        // From here on the ref is released by dropping the ingest, so build
        // it before anything else can fail.
        let temp = tempfile::Builder::new()
            .prefix("write-")
            .tempfile_in(&dir)
            .map_err(|e| {
                lock(&store.writes).remove(&reference);
                io_status("cannot write in", &dir, &e)
            })?;
        let (file, temp) = temp.into_parts();
        Ok(Ingest {
            reference,
            store: store.clone(),
            file: tokio::fs::File::from_std(file),
            temp: Some(temp),
            hasher: ring::digest::Context::new(&ring::digest::SHA256),
            offset: 0,
            total: req.total.max(0),
            expected,
            started,
            status,
        })
    }

    fn digest(&self) -> Digest {
        Digest::from_sha256(self.hasher.clone().finish().as_ref())
    }

    fn path(&self) -> PathBuf {
        self.temp
            .as_ref()
            .map(|t| t.to_path_buf())
            .unwrap_or_else(|| self.store.layout.ingest_dir())
    }

    async fn step(
        &mut self,
        req: api::WriteContentRequest,
    ) -> Result<(api::WriteContentResponse, bool), Status> {
        if lock(&self.status).aborted {
            return Err(Status::aborted(format!(
                "write of {} aborted",
                self.reference
            )));
        }
        if !req.expected.is_empty() {
            let digest = parse_digest(&req.expected)?;
            if self.store.has(&digest) {
                return Err(Status::already_exists(format!(
                    "blob with expected digest {digest} exists"
                )));
            }
            self.expected = Some(digest);
        }
        if req.total > 0 {
            self.total = req.total;
        }
        let action = api::WriteAction::try_from(req.action).map_err(|_| {
            Status::invalid_argument(format!("unknown write action {}", req.action))
        })?;
        let mut msg = api::WriteContentResponse {
            action: req.action,
            offset: self.offset,
            ..Default::default()
        };
        let mut committed = false;
        match action {
            api::WriteAction::Stat => {
                msg.started_at = Some(self.started.into());
                msg.updated_at = Some(lock(&self.status).updated.into());
                msg.total = self.total;
            }
            api::WriteAction::Write | api::WriteAction::Commit => {
                if req.offset > 0 && req.offset != self.offset {
                    return Err(Status::out_of_range(format!(
                        "write @{} must occur at current offset {}",
                        req.offset, self.offset
                    )));
                }
                if req.offset == 0 && self.offset > 0 {
                    self.restart().await?;
                }
                if !req.data.is_empty() {
                    self.file
                        .write_all(&req.data)
                        .await
                        .map_err(|e| io_status("cannot write", &self.path(), &e))?;
                    self.hasher.update(&req.data);
                    self.offset += req.data.len() as i64;
                }
                msg.offset = self.offset;
                if action == api::WriteAction::Commit {
                    self.commit().await?;
                    committed = true;
                }
            }
        }
        msg.digest = self.digest().to_string();
        let mut status = lock(&self.status);
        status.offset = self.offset;
        status.total = self.total;
        status.expected = self.expected.clone();
        status.updated = SystemTime::now();
        Ok((msg, committed))
    }

    /// Starts the blob over, as a write at offset 0 asks.
    async fn restart(&mut self) -> Result<(), Status> {
        let path = self.path();
        self.file
            .set_len(0)
            .await
            .map_err(|e| io_status("cannot truncate", &path, &e))?;
        self.file
            .seek(SeekFrom::Start(0))
            .await
            .map_err(|e| io_status("cannot truncate", &path, &e))?;
        self.hasher = ring::digest::Context::new(&ring::digest::SHA256);
        self.offset = 0;
        Ok(())
    }

    /// Checks size and digest, then moves the file to its blob path.
    async fn commit(&mut self) -> Result<(), Status> {
        let path = self.path();
        self.file
            .flush()
            .await
            .map_err(|e| io_status("cannot write", &path, &e))?;
        self.file
            .sync_all()
            .await
            .map_err(|e| io_status("cannot write", &path, &e))?;
        if self.total > 0 && self.total != self.offset {
            return Err(Status::failed_precondition(format!(
                "unexpected commit size {}, expected {}",
                self.offset, self.total
            )));
        }
        let actual = self.digest();
        if let Some(expected) = &self.expected {
            if *expected != actual {
                return Err(Status::failed_precondition(format!(
                    "unexpected commit digest {actual}, expected {expected}"
                )));
            }
        }
        let blobs = self.store.layout.blobs_dir();
        std::fs::create_dir_all(&blobs).map_err(|e| io_status("cannot create", &blobs, &e))?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o444))
            .map_err(|e| io_status("cannot write", &path, &e))?;
        let Some(temp) = self.temp.take() else {
            return Err(Status::failed_precondition("already committed"));
        };
        let target = self.store.layout.blob_path(&actual);
        match temp.persist_noclobber(&target) {
            Ok(()) => Ok(()),
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Err(
                Status::already_exists(format!("content {actual}: already exists")),
            ),
            Err(e) => Err(io_status("cannot write", &target, &e.error)),
        }
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        lock(&self.store.writes).remove(&self.reference);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci_layout::sha256;
    use futures_util::StreamExt;

    fn store(dir: &Path) -> Arc<Store> {
        Arc::new(Store {
            layout: Layout::new(dir),
            writes: Mutex::default(),
        })
    }

    fn req(
        action: api::WriteAction,
        offset: i64,
        data: &[u8],
        total: i64,
        expected: &str,
    ) -> api::WriteContentRequest {
        api::WriteContentRequest {
            action: action as i32,
            r#ref: "layer-1".into(),
            total,
            expected: expected.into(),
            offset,
            data: data.to_vec().into(),
            labels: HashMap::new(),
        }
    }

    fn ingest_is_empty(dir: &Path) -> bool {
        std::fs::read_dir(dir.join("ingest")).map_or(true, |mut d| d.next().is_none())
    }

    #[tokio::test]
    async fn a_verified_write_lands_in_blobs() {
        let dir = tempfile::tempdir().expect("dir");
        let s = store(dir.path());
        let digest = sha256(b"hello world").to_string();
        let stat = req(api::WriteAction::Stat, 0, b"", 11, &digest);
        let mut ingest = Ingest::open(&s, &stat).expect("open");
        let (msg, done) = ingest.step(stat).await.expect("stat");
        assert_eq!((msg.offset, msg.total, done), (0, 11, false));
        let write = req(api::WriteAction::Write, 0, b"hello ", 0, "");
        assert_eq!(ingest.step(write).await.expect("write").0.offset, 6);
        let commit = req(api::WriteAction::Commit, 6, b"world", 11, &digest);
        let (msg, done) = ingest.step(commit).await.expect("commit");
        assert!(done);
        assert_eq!((msg.offset, msg.digest.as_str()), (11, digest.as_str()));
        drop(ingest);
        let blob = s.layout.blob_path(&sha256(b"hello world"));
        assert_eq!(std::fs::read(&blob).expect("blob"), b"hello world");
        assert!(ingest_is_empty(dir.path()));
        assert!(lock(&s.writes).is_empty(), "the ref is released");
        // Writing it again is refused as already there.
        let again = req(api::WriteAction::Stat, 0, b"", 11, &digest);
        let err = Ingest::open(&s, &again).err().expect("exists");
        assert_eq!(err.code(), tonic::Code::AlreadyExists);
    }

    #[tokio::test]
    async fn bad_content_never_reaches_blobs() {
        let dir = tempfile::tempdir().expect("dir");
        let s = store(dir.path());
        let wrong = sha256(b"something else").to_string();
        let first = req(api::WriteAction::Write, 0, b"data", 0, "");
        let mut ingest = Ingest::open(&s, &first).expect("open");
        ingest.step(first).await.expect("write");
        let commit = req(api::WriteAction::Commit, 4, b"", 4, &wrong);
        let err = ingest.step(commit).await.expect_err("digest mismatch");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        let short = req(api::WriteAction::Commit, 4, b"", 5, "");
        let err = ingest.step(short).await.expect_err("size mismatch");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        let gap = req(api::WriteAction::Write, 9, b"x", 0, "");
        let err = ingest.step(gap).await.expect_err("offset gap");
        assert_eq!(err.code(), tonic::Code::OutOfRange);
        // The same ref cannot be written twice at once.
        let other = req(api::WriteAction::Stat, 0, b"", 0, "");
        let err = Ingest::open(&s, &other).err().expect("locked");
        assert_eq!(err.code(), tonic::Code::Unavailable);
        drop(ingest);
        assert!(ingest_is_empty(dir.path()));
        assert!(!s.layout.blobs_dir().exists());
    }

    fn with_header<T>(id: &str, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut()
            .insert(STORE_HEADER, id.parse().expect("header"));
        r
    }

    #[tokio::test]
    async fn stores_are_chosen_by_header_and_read_in_ranges() {
        let dir = tempfile::tempdir().expect("dir");
        let layout = Layout::new(dir.path());
        let data = b"0123456789";
        let digest = sha256(data);
        std::fs::create_dir_all(layout.blobs_dir()).expect("blobs");
        std::fs::write(layout.blob_path(&digest), data).expect("blob");
        let svc = ContentService {
            stores: Arc::new(HashMap::from([(
                "local:cache".to_string(),
                store(dir.path()),
            )])),
        };
        let info_req = || api::InfoRequest {
            digest: digest.to_string(),
        };
        let info = svc
            .info(with_header("local:cache", info_req()))
            .await
            .expect("info");
        assert_eq!(info.into_inner().info.map(|i| i.size), Some(10));
        let err = svc
            .info(Request::new(info_req()))
            .await
            .expect_err("no header");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let err = svc
            .info(with_header("local:other", info_req()))
            .await
            .expect_err("unknown store");
        assert_eq!(err.code(), tonic::Code::NotFound);

        let read = api::ReadContentRequest {
            digest: digest.to_string(),
            offset: 3,
            size: 4,
        };
        let mut stream = svc
            .read(with_header("local:cache", read))
            .await
            .expect("read")
            .into_inner();
        let mut got = Vec::new();
        while let Some(msg) = stream.next().await {
            got.extend_from_slice(&msg.expect("chunk").data);
        }
        assert_eq!(got, b"3456");
    }
}
