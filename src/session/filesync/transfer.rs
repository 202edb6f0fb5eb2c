//! One transfer, as the body of the DiffCopy response: packets are made
//! when the connection asks for the next frame, so nothing waits in a queue
//! and no thread hands a packet to another. Each frame holds what is ready
//! at that moment: the walker's STAT packets, and the content of the files
//! the daemon asked for, read straight into the buffer that is sent.
//!
//! File content in the page cache is read here with `RWF_NOWAIT`; a read
//! that would wait for the disk hands the file to reader threads instead,
//! so a cold cache never holds up the connection.

use std::collections::{HashMap, VecDeque};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use http::{HeaderMap, HeaderValue};
use http_body::Frame;
use tonic::{Status, Streaming};

use super::feed::{Closed, Feed, WalkState};
use super::wire;
use super::{Offer, Root};
use crate::proto::fsutil::types::{packet::PacketType, Packet};

/// Size of the content of one DATA packet of a large file.
pub const CHUNK_SIZE: usize = 256 << 10;
/// Files up to this size go whole into the frame being gathered; larger
/// ones go chunk by chunk, each chunk its own buffer.
const SMALL_MAX: u64 = 64 << 10;
/// A frame being gathered is handed out once it holds this much.
const GATHER: usize = 64 << 10;
/// Threads reading files whose content is not in the page cache.
const READERS: usize = 4;
/// Files handed to the reader threads and not sent yet, each holding an
/// open descriptor: no more are opened beyond this (a context of many files
/// not in the page cache would otherwise run out of descriptors).
const HANDED_MAX: u64 = 64;

/// A file handed to a reader thread, opened, with what was sent of it.
struct Job {
    id: u32,
    offer: Offer,
    file: std::fs::File,
    offset: u64,
}

/// A file being sent from here.
struct Sending {
    id: u32,
    offer: Offer,
    file: std::fs::File,
    offset: u64,
}

/// Where a transfer stands.
#[derive(PartialEq, Eq)]
enum Phase {
    Running,
    /// FIN or ERR is queued: the trailers follow it.
    Ending,
    Done,
}

/// What the transfer did, for its debug summary.
#[derive(Default)]
struct Account {
    entries: u64,
    walk: Duration,
    files: u64,
    bytes: u64,
    /// How long bkd had packets ready that the connection was not taking
    /// (the daemon's flow control holding the stream).
    waited: Duration,
}

pub struct Transfer {
    name: String,
    root: Arc<Root>,
    inbound: Streaming<Packet>,
    feed: Arc<Feed>,
    /// Files offered and not asked for yet.
    offered: HashMap<u32, Offer>,
    /// Files asked for, not started.
    asked: VecDeque<(u32, Offer)>,
    sending: Option<Sending>,
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    /// Files handed to the reader threads, and how many of them they sent.
    handed: u64,
    handed_done: u64,
    /// Frames ready to go, and the one being gathered.
    ready: VecDeque<Bytes>,
    gathering: BytesMut,
    walk_done: bool,
    phase: Phase,
    /// `RWF_NOWAIT` reads work on this file system.
    nowait: bool,
    started: Instant,
    /// Since when a frame was handed out while more was ready.
    ready_since: Option<Instant>,
    account: Account,
}

/// How a read into a buffer ended.
enum Got {
    /// All that was wanted.
    All,
    /// The file ended after this many bytes.
    End(usize),
    /// (`RWF_NOWAIT`) The rest is not in the page cache.
    WouldBlock,
}

/// Reads `want` bytes of `file` at `offset` into the spare capacity of
/// `buf`, with `RWF_NOWAIT` if `nowait`.
fn read_at(
    file: &std::fs::File,
    buf: &mut BytesMut,
    want: usize,
    offset: u64,
    nowait: bool,
) -> std::io::Result<Got> {
    buf.reserve(want);
    let flags = if nowait { libc::RWF_NOWAIT } else { 0 };
    let mut got = 0;
    while got < want {
        let spare = buf.spare_capacity_mut();
        let iov = libc::iovec {
            iov_base: spare.as_mut_ptr().cast(),
            iov_len: (want - got).min(spare.len()),
        };
        // SAFETY: iov describes spare capacity of buf, writable for its
        // length.
        let n = unsafe {
            libc::preadv2(
                file.as_raw_fd(),
                &iov,
                1,
                (offset + got as u64) as libc::off_t,
                flags,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::Interrupted => continue,
                std::io::ErrorKind::WouldBlock if nowait => return Ok(Got::WouldBlock),
                _ => return Err(e),
            }
        }
        if n == 0 {
            return Ok(Got::End(got));
        }
        // SAFETY: the kernel initialised n bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + n as usize) };
        got += n as usize;
    }
    Ok(Got::All)
}

/// What became of an attempt to read the rest of a file here.
enum Read {
    /// All of it is in the buffer.
    Done,
    /// Part of it was sent; more remains.
    More,
    /// Its content is not in the page cache: for a reader thread.
    WouldBlock,
}

/// Why a piece of a file could not be read.
enum Failed {
    /// This file system refuses `RWF_NOWAIT`.
    NoWait,
    /// The file cannot be sent as announced.
    File(String),
}

fn short_read(root: &Root, offer: &Offer, read: u64) -> Failed {
    Failed::File(format!(
        "{} changed while the build context was being sent ({} bytes announced, {} read)",
        root.shown(&offer.path),
        offer.size,
        read
    ))
}

fn read_error(root: &Root, offer: &Offer, e: &std::io::Error, nowait: bool) -> Failed {
    if nowait && e.raw_os_error() == Some(libc::EOPNOTSUPP) {
        return Failed::NoWait;
    }
    Failed::File(format!(
        "cannot read {}: {}",
        root.shown(&offer.path),
        crate::error::io_reason(e)
    ))
}

/// Appends the next piece of a file to `out`: the whole rest of a small
/// file with the packet ending it, or one chunk of a large one (with that
/// packet after the last). Returns what became of it and how many content
/// bytes were appended. Nothing is appended unless the read succeeds, so a
/// read that would wait leaves `out` as it was.
fn read_piece(
    root: &Root,
    s: &mut Sending,
    out: &mut BytesMut,
    nowait: bool,
) -> Result<(Read, u64), Failed> {
    let remaining = s.offer.size - s.offset;
    let want = if remaining <= SMALL_MAX {
        remaining as usize
    } else {
        remaining.min(CHUNK_SIZE as u64) as usize
    };
    let mark = out.len();
    out.reserve(wire::data_header_len(s.id, want) + want + wire::data_header_len(s.id, 0));
    if want > 0 {
        wire::put_data_header(out, s.id, want);
        match read_at(&s.file, out, want, s.offset, nowait) {
            Ok(Got::All) => {}
            Ok(Got::WouldBlock) => {
                out.truncate(mark);
                return Ok((Read::WouldBlock, 0));
            }
            Ok(Got::End(got)) => {
                out.truncate(mark);
                return Err(short_read(root, &s.offer, s.offset + got as u64));
            }
            Err(e) => {
                out.truncate(mark);
                return Err(read_error(root, &s.offer, &e, nowait));
            }
        }
        s.offset += want as u64;
    }
    if s.offset < s.offer.size {
        return Ok((Read::More, want as u64));
    }
    wire::put_data_header(out, s.id, 0);
    Ok((Read::Done, want as u64))
}

impl Transfer {
    pub(super) fn new(
        name: String,
        root: Arc<Root>,
        inbound: Streaming<Packet>,
        feed: Arc<Feed>,
    ) -> Transfer {
        Transfer {
            name,
            root,
            inbound,
            feed,
            offered: HashMap::new(),
            asked: VecDeque::new(),
            sending: None,
            jobs: None,
            handed: 0,
            handed_done: 0,
            ready: VecDeque::new(),
            gathering: BytesMut::new(),
            walk_done: false,
            phase: Phase::Running,
            nowait: true,
            started: Instant::now(),
            ready_since: None,
            account: Account::default(),
        }
    }

    /// Takes the daemon's requests as they arrive.
    fn poll_requests(&mut self, cx: &mut Context<'_>) -> Result<(), String> {
        loop {
            let p = match Pin::new(&mut self.inbound).poll_next(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(Some(Ok(p))) => p,
                Poll::Ready(Some(Err(status))) => {
                    return Err(format!("receiver failed: {}", status.message()))
                }
                Poll::Ready(None) => return Err("receiver closed the transfer early".into()),
            };
            match PacketType::try_from(p.r#type) {
                Ok(PacketType::PacketReq) => {
                    // Each offered file once.
                    let Some(offer) = self.offered.remove(&p.id) else {
                        return Err(format!("invalid file id {}", p.id));
                    };
                    self.asked.push_back((p.id, offer));
                }
                Ok(PacketType::PacketFin) => {
                    // The receiver has everything it asked for.
                    wire::put_simple(&mut self.gathering, PacketType::PacketFin, b"");
                    self.phase = Phase::Ending;
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
    }

    /// Takes what the walker and the reader threads handed over.
    fn take_feed(&mut self, cx: &mut Context<'_>) -> Result<(), String> {
        let taken = self.feed.take(cx.waker());
        self.offered.extend(taken.offers);
        if !taken.stats.is_empty() || !taken.data.is_empty() {
            self.flush_gathering();
            self.ready.extend(taken.stats);
            self.ready.extend(taken.data);
        }
        self.account.bytes += taken.bytes;
        self.account.files += taken.files;
        self.handed_done += taken.files;
        if let Some(message) = taken.failure {
            return Err(message);
        }
        match taken.walk {
            WalkState::Running => {}
            WalkState::Done { entries, took } => {
                self.account.entries = entries;
                self.account.walk = took;
                self.walk_done = true;
                // The empty STAT that ends the walk.
                wire::put_stat(&mut self.gathering, None);
            }
            WalkState::Failed(message) => return Err(message),
        }
        Ok(())
    }

    fn flush_gathering(&mut self) {
        if !self.gathering.is_empty() {
            self.ready.push_back(self.gathering.split().freeze());
        }
    }

    /// Opens the next file asked for; `None` when there is none.
    fn next_file(&mut self) -> Result<Option<Sending>, String> {
        while let Some((id, offer)) = self.asked.pop_front() {
            match super::open_for_send(&self.root, &offer)? {
                Some(file) => {
                    return Ok(Some(Sending {
                        id,
                        offer,
                        file,
                        offset: 0,
                    }))
                }
                // A socket goes as an empty file.
                None => {
                    wire::put_data_header(&mut self.gathering, id, 0);
                    self.account.files += 1;
                }
            }
        }
        Ok(None)
    }

    /// Reads what was asked for until a frame's worth is ready.
    fn read_files(&mut self) -> Result<(), String> {
        while self.gathering.len() < GATHER && self.ready.is_empty() {
            let mut s = match self.sending.take() {
                Some(s) => s,
                // The readers' next hand-over wakes the transfer.
                None if self.handed - self.handed_done >= HANDED_MAX => return Ok(()),
                None => match self.next_file()? {
                    Some(s) => s,
                    None => return Ok(()),
                },
            };
            let small = s.offer.size - s.offset <= SMALL_MAX;
            // Without RWF_NOWAIT only small files are read here, as a
            // read where the request arrives costs less than a hand-over.
            if !self.nowait && !small {
                self.hand_off(s)?;
                continue;
            }
            let read = if small {
                read_piece(&self.root, &mut s, &mut self.gathering, self.nowait)
            } else {
                let mut chunk = BytesMut::new();
                let r = read_piece(&self.root, &mut s, &mut chunk, self.nowait);
                if !chunk.is_empty() {
                    self.flush_gathering();
                    self.ready.push_back(chunk.freeze());
                }
                r
            };
            match read {
                Ok((Read::Done, n)) => {
                    self.account.bytes += n;
                    self.account.files += 1;
                }
                Ok((Read::More, n)) => {
                    self.account.bytes += n;
                    self.sending = Some(s);
                }
                Ok((Read::WouldBlock, _)) => self.hand_off(s)?,
                Err(Failed::NoWait) => {
                    // This file system cannot tell a read that would wait:
                    // small files are read in place, large ones on reader
                    // threads.
                    tracing::debug!(dir = %self.name, "RWF_NOWAIT unsupported");
                    self.nowait = false;
                    self.sending = Some(s);
                }
                Err(Failed::File(message)) => return Err(message),
            }
        }
        Ok(())
    }

    /// Gives a file to the reader threads, starting them on first use.
    fn hand_off(&mut self, s: Sending) -> Result<(), String> {
        let jobs = match &self.jobs {
            Some(j) => j,
            None => {
                let (tx, rx) = std::sync::mpsc::channel::<Job>();
                let rx = Arc::new(Mutex::new(rx));
                for _ in 0..READERS {
                    let (rx, root, feed) = (rx.clone(), self.root.clone(), self.feed.clone());
                    // Ends when the job queue closes or the transfer does.
                    tokio::task::spawn_blocking(move || read_jobs(&root, &rx, &feed));
                }
                self.jobs.insert(tx)
            }
        };
        self.handed += 1;
        jobs.send(Job {
            id: s.id,
            offer: s.offer,
            file: s.file,
            offset: s.offset,
        })
        .map_err(|_| "file readers stopped".to_string())
    }

    /// Makes the next frames; `Err` ends the transfer with that message.
    fn step(&mut self, cx: &mut Context<'_>) -> Result<(), String> {
        self.poll_requests(cx)?;
        if self.phase != Phase::Running {
            return Ok(());
        }
        self.take_feed(cx)?;
        self.read_files()?;
        if self.ready.is_empty() {
            self.flush_gathering();
        }
        Ok(())
    }

    /// Whether more is ready to go than what was just handed out.
    fn has_more(&self) -> bool {
        !self.ready.is_empty()
            || !self.gathering.is_empty()
            || self.sending.is_some()
            || !self.asked.is_empty()
    }

    fn summary(&self) {
        tracing::debug!(
            dir = %self.name,
            entries = self.account.entries,
            walk_s = format!("{:.3}", self.account.walk.as_secs_f64()),
            files = self.account.files,
            bytes = self.account.bytes,
            seconds = format!("{:.3}", self.started.elapsed().as_secs_f64()),
            waited_for_daemon_s = format!("{:.3}", self.account.waited.as_secs_f64()),
            "file sync done"
        );
    }
}

impl http_body::Body for Transfer {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if let Some(since) = this.ready_since.take() {
            this.account.waited += since.elapsed();
        }
        loop {
            if let Some(frame) = this.ready.pop_front() {
                if this.has_more() {
                    this.ready_since = Some(Instant::now());
                }
                return Poll::Ready(Some(Ok(Frame::data(frame))));
            }
            match this.phase {
                Phase::Done => return Poll::Ready(None),
                Phase::Ending => {
                    if !this.gathering.is_empty() {
                        this.flush_gathering();
                        continue;
                    }
                    this.phase = Phase::Done;
                    this.feed.close();
                    this.jobs = None;
                    return Poll::Ready(Some(Ok(Frame::trailers(ok_trailers()))));
                }
                Phase::Running => {}
            }
            if let Err(message) = this.step(cx) {
                tracing::debug!(dir = %this.name, error = %message, "file sync ended with an error");
                this.feed.close();
                this.ready.clear();
                this.gathering.clear();
                wire::put_simple(
                    &mut this.gathering,
                    PacketType::PacketErr,
                    message.as_bytes(),
                );
                this.phase = Phase::Ending;
                continue;
            }
            if this.phase == Phase::Ending {
                this.summary();
                continue;
            }
            if this.ready.is_empty() {
                return Poll::Pending;
            }
        }
    }
}

/// The trailers of a transfer that ended: its errors travel as ERR
/// packets, as fsutil's do, so the call itself succeeds.
fn ok_trailers() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers
}

/// The response to a transfer that cannot start: its ERR packet.
pub struct Refusal {
    frames: VecDeque<Frame<Bytes>>,
}

impl Refusal {
    pub fn new(message: &str) -> Refusal {
        let mut err = BytesMut::new();
        wire::put_simple(&mut err, PacketType::PacketErr, message.as_bytes());
        Refusal {
            frames: VecDeque::from([Frame::data(err.freeze()), Frame::trailers(ok_trailers())]),
        }
    }
}

impl http_body::Body for Refusal {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Poll::Ready(self.frames.pop_front().map(Ok))
    }
}

impl Drop for Transfer {
    /// The walker and the readers stop at their next hand-over.
    fn drop(&mut self) {
        self.feed.close();
    }
}

fn read_jobs(root: &Root, jobs: &Mutex<std::sync::mpsc::Receiver<Job>>, feed: &Feed) {
    loop {
        let next = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = next else { return };
        match read_job(root, job, feed) {
            Ok(Ok(())) => {}
            Ok(Err(message)) => {
                feed.fail(message);
                return;
            }
            Err(Closed) => return,
        }
    }
}

/// Sends the rest of a file from a reader thread: `Err` when the transfer
/// is gone, `Ok(Err(message))` when the file could not be sent as
/// announced.
fn read_job(root: &Root, job: Job, feed: &Feed) -> Result<Result<(), String>, Closed> {
    let mut s = Sending {
        id: job.id,
        offer: job.offer,
        file: job.file,
        offset: job.offset,
    };
    loop {
        let mut out = BytesMut::new();
        let (read, n) = match read_piece(root, &mut s, &mut out, false) {
            Ok(r) => r,
            Err(Failed::File(message)) => return Ok(Err(message)),
            // Not asked for.
            Err(Failed::NoWait) => return Ok(Err("RWF_NOWAIT".into())),
        };
        let done = matches!(read, Read::Done);
        feed.push_data(out.freeze(), n, done)?;
        if done {
            return Ok(Ok(()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fill_exactly_and_stop_at_the_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").expect("write");
        let file = std::fs::File::open(&path).expect("open");
        for nowait in [false, true] {
            let mut buf = BytesMut::from(&b"hdr"[..]);
            assert!(matches!(
                read_at(&file, &mut buf, 4, 2, nowait).expect("read"),
                Got::All
            ));
            assert_eq!(&buf[..], b"hdr2345");
            assert!(matches!(
                read_at(&file, &mut buf, 8, 6, nowait).expect("read"),
                Got::End(4)
            ));
            assert_eq!(&buf[..], b"hdr23456789");
        }
    }
}
