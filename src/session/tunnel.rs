//! The session's byte pipe: `Control.Session` carries a stream of
//! `BytesMessage` each way, and together they form one bidirectional byte
//! stream. bkd serves HTTP/2 on it (the daemon is the HTTP/2 client).
//!
//! Outgoing bytes go into one shared buffer, and the request stream takes
//! whatever has gathered each time the connection below asks for more. The
//! HTTP/2 server above flushes after every DATA frame (16 KiB, the largest
//! the daemon accepts), so sending on flush would make one message per
//! frame. Taking what has gathered instead makes messages as large as the
//! daemon's pace allows, and the daemon's cost is per message as much as per
//! byte.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::proto::moby::buildkit::v1::BytesMessage;

/// The largest message sent.
pub const MAX_OUT_MESSAGE: usize = 1 << 20;
/// Writes wait while this much is gathered and not yet taken.
const HIGH_WATER: usize = 2 << 20;

/// What went out through the tunnel, and how long bkd had data ready while
/// the daemon was not taking any more: the buffer was full because the
/// connection below it was held up by the daemon's flow control. A transfer
/// that spends most of its time waiting here is limited by the daemon, not
/// by bkd.
#[derive(Debug, Default)]
pub struct TunnelStats {
    bytes_out: AtomicU64,
    messages_out: AtomicU64,
    waited_nanos: AtomicU64,
}

impl TunnelStats {
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }

    pub fn messages_out(&self) -> u64 {
        self.messages_out.load(Ordering::Relaxed)
    }

    pub fn waited(&self) -> Duration {
        Duration::from_nanos(self.waited_nanos.load(Ordering::Relaxed))
    }
}

#[derive(Default)]
struct Shared {
    gathered: BytesMut,
    closed: bool,
    /// The request stream, waiting for bytes.
    reader: Option<Waker>,
    /// The writer, waiting for room.
    writer: Option<Waker>,
}

#[derive(Default)]
struct Outgoing {
    shared: Mutex<Shared>,
    stats: Arc<TunnelStats>,
}

impl Outgoing {
    fn lock(&self) -> std::io::Result<MutexGuard<'_, Shared>> {
        self.shared
            .lock()
            .map_err(|_| std::io::Error::other("session buffer poisoned"))
    }

    /// No more bytes go in or out: the stream ends after what was gathered,
    /// and a waiting writer fails.
    fn close(&self) {
        if let Ok(mut shared) = self.shared.lock() {
            shared.closed = true;
            for w in [shared.reader.take(), shared.writer.take()]
                .into_iter()
                .flatten()
            {
                w.wake();
            }
        }
    }
}

/// The outgoing half as the request's message stream.
pub struct OutgoingMessages {
    out: Arc<Outgoing>,
}

impl Stream for OutgoingMessages {
    type Item = BytesMessage;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<BytesMessage>> {
        let Ok(mut shared) = self.out.shared.lock() else {
            return Poll::Ready(None);
        };
        if shared.gathered.is_empty() {
            if shared.closed {
                return Poll::Ready(None);
            }
            shared.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = shared.gathered.len().min(MAX_OUT_MESSAGE);
        let data = shared.gathered.split_to(n).freeze();
        if let Some(w) = shared.writer.take() {
            w.wake();
        }
        drop(shared);
        let stats = &self.out.stats;
        stats.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
        stats.messages_out.fetch_add(1, Ordering::Relaxed);
        Poll::Ready(Some(BytesMessage { data }))
    }
}

impl Drop for OutgoingMessages {
    /// Nothing will take more: a waiting writer must learn it.
    fn drop(&mut self) {
        self.out.close();
    }
}

/// One end of the tunnel: reads what the daemon sends, writes into the
/// outgoing buffer.
pub struct TunnelIo<S> {
    inbound: S,
    pending: Bytes,
    inbound_done: bool,
    out: Arc<Outgoing>,
    /// Since when a write has been waiting for room.
    blocked_since: Option<Instant>,
}

/// The writing end of the outgoing buffer, for [`TunnelIo::new`].
pub struct Outbound(Arc<Outgoing>);

/// The outgoing buffer: its writing end, and the stream of messages that
/// drains it (the request of the session call).
pub fn outgoing() -> (Outbound, OutgoingMessages) {
    let out = Arc::new(Outgoing::default());
    (Outbound(out.clone()), OutgoingMessages { out })
}

impl<S> TunnelIo<S> {
    pub fn new(inbound: S, outbound: Outbound) -> Self {
        TunnelIo {
            inbound,
            pending: Bytes::new(),
            inbound_done: false,
            out: outbound.0,
            blocked_since: None,
        }
    }

    /// Counters that outlive the tunnel (it is moved into the connection).
    pub fn stats(&self) -> Arc<TunnelStats> {
        self.out.stats.clone()
    }

    fn note_unblocked(&mut self) {
        if let Some(since) = self.blocked_since.take() {
            let nanos = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.out
                .stats
                .waited_nanos
                .fetch_add(nanos, Ordering::Relaxed);
        }
    }
}

impl<S> Drop for TunnelIo<S> {
    /// The connection is gone: the request stream ends after what was
    /// gathered, which closes bkd's half of the session.
    fn drop(&mut self) {
        self.out.close();
    }
}

impl<S> AsyncRead for TunnelIo<S>
where
    S: Stream<Item = Result<BytesMessage, tonic::Status>> + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                let chunk = self.pending.split_to(n);
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            if self.inbound_done {
                return Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.inbound).poll_next(cx) {
                Poll::Ready(Some(Ok(msg))) => self.pending = msg.data,
                Poll::Ready(Some(Err(status))) => {
                    self.inbound_done = true;
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        format!(
                            "session stream ended: {}",
                            crate::text::one_line(status.message())
                        ),
                    )));
                }
                Poll::Ready(None) => {
                    self.inbound_done = true;
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

fn closed() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "session closed")
}

impl<S: Unpin> AsyncWrite for TunnelIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.poll_write_vectored(cx, &[std::io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let out = self.out.clone();
        let mut shared = out.lock()?;
        if shared.closed {
            return Poll::Ready(Err(closed()));
        }
        let room = HIGH_WATER.saturating_sub(shared.gathered.len());
        if room == 0 {
            shared.writer = Some(cx.waker().clone());
            drop(shared);
            self.blocked_since.get_or_insert_with(Instant::now);
            return Poll::Pending;
        }
        let mut written = 0;
        for b in bufs {
            let take = b.len().min(room - written);
            shared.gathered.extend_from_slice(&b[..take]);
            written += take;
            if written == room {
                break;
            }
        }
        drop(shared);
        self.note_unblocked();
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Hands what was written to the request stream; it is sent as soon as
    /// the connection takes more.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut shared = self.out.lock()?;
        if !shared.gathered.is_empty() {
            if let Some(w) = shared.reader.take() {
                w.wake();
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.out.close();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;

    type Inbound = futures_util::stream::Empty<Result<BytesMessage, tonic::Status>>;

    fn pair() -> (TunnelIo<Inbound>, OutgoingMessages) {
        let (outbound, messages) = outgoing();
        (
            TunnelIo::new(futures_util::stream::empty(), outbound),
            messages,
        )
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn flushed_frames_gather_into_messages_up_to_the_limit() {
        let (mut io, mut messages) = pair();
        let data = pattern(100 * 16 * 1024);
        for frame in data.chunks(16 * 1024) {
            io.write_all(frame).await.unwrap();
            io.flush().await.unwrap();
        }
        drop(io);
        let mut got = Vec::new();
        let mut sizes = Vec::new();
        while let Some(m) = messages.next().await {
            sizes.push(m.data.len());
            got.extend_from_slice(&m.data);
        }
        assert_eq!(got, data);
        assert_eq!(sizes, vec![MAX_OUT_MESSAGE, data.len() - MAX_OUT_MESSAGE]);
    }

    #[tokio::test]
    async fn a_write_waits_at_high_water_until_the_stream_takes_more() {
        let (mut io, mut messages) = pair();
        let stats = io.stats();
        let data = pattern(HIGH_WATER + 4096);
        let blocked =
            tokio::time::timeout(Duration::from_millis(100), io.write_all(&data[..])).await;
        assert!(
            blocked.is_err(),
            "a write beyond the high-water mark must wait"
        );
        // What the first write_all got in is at most the high-water mark.
        let first = messages.next().await.unwrap();
        assert!(first.data.len() <= HIGH_WATER);
        tokio::spawn(async move { while messages.next().await.is_some() {} });
        io.write_all(b"more").await.unwrap();
        assert!(stats.waited() >= Duration::from_millis(90));
        assert!(stats.bytes_out() >= first.data.len() as u64);
    }

    #[tokio::test]
    async fn writes_fail_once_the_stream_is_gone() {
        let (mut io, messages) = pair();
        drop(messages);
        let err = io.write_all(b"x").await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
    }

    #[tokio::test]
    async fn dropping_the_tunnel_ends_the_stream_after_what_was_written() {
        // The connection is dropped when the session closes: the daemon
        // must see bkd's half end, or it keeps the session open.
        let (mut io, mut messages) = pair();
        io.write_all(b"bye").await.unwrap();
        drop(io);
        assert_eq!(messages.next().await.unwrap().data.as_ref(), b"bye");
        let end = tokio::time::timeout(Duration::from_secs(1), messages.next()).await;
        assert!(matches!(end, Ok(None)), "the stream must end");
    }

    #[tokio::test]
    async fn shutdown_ends_the_stream_after_what_was_written() {
        let (mut io, mut messages) = pair();
        io.write_all(b"last words").await.unwrap();
        io.shutdown().await.unwrap();
        assert_eq!(messages.next().await.unwrap().data.as_ref(), b"last words");
        assert!(messages.next().await.is_none());
    }
}
