//! The session's byte pipe: `Control.Session` carries a stream of
//! `BytesMessage` each way, and together they form one bidirectional byte
//! stream. bkd serves HTTP/2 on it (the daemon is the HTTP/2 client).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

use crate::proto::moby::buildkit::v1::BytesMessage;

/// Outgoing bytes are gathered up to this size before they become one
/// message: the HTTP/2 layer above writes a frame header and its payload
/// separately, and the daemon's cost is per message as much as per byte.
pub const MAX_OUT_MESSAGE: usize = 1 << 20;

/// One end of the tunnel: reads what the daemon sends, writes into the
/// outgoing message stream.
pub struct TunnelIo<S> {
    inbound: S,
    pending: Bytes,
    inbound_done: bool,
    outbound: PollSender<BytesMessage>,
    /// Written but not yet sent; sent on flush or when full.
    gathered: BytesMut,
}

impl<S> TunnelIo<S> {
    pub fn new(inbound: S, outbound: mpsc::Sender<BytesMessage>) -> Self {
        TunnelIo {
            inbound,
            pending: Bytes::new(),
            inbound_done: false,
            outbound: PollSender::new(outbound),
            gathered: BytesMut::new(),
        }
    }

    /// Sends what was gathered as one message; Pending while the stream is
    /// full.
    fn poll_send_gathered(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.gathered.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let closed = || std::io::Error::new(std::io::ErrorKind::BrokenPipe, "session closed");
        match self.outbound.poll_reserve(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => return Poll::Ready(Err(closed())),
            Poll::Pending => return Poll::Pending,
        }
        let msg = BytesMessage {
            data: self.gathered.split().freeze(),
        };
        match self.outbound.send_item(msg) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(_) => Poll::Ready(Err(closed())),
        }
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
                        format!("session stream ended: {}", status.message()),
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
        if self.gathered.len() >= MAX_OUT_MESSAGE {
            match self.poll_send_gathered(cx) {
                Poll::Ready(Ok(())) => {}
                other => return other.map_ok(|()| 0),
            }
        }
        let room = MAX_OUT_MESSAGE - self.gathered.len();
        let mut written = 0;
        for b in bufs {
            let take = b.len().min(room - written);
            if self.gathered.capacity() - self.gathered.len() < take {
                self.gathered.reserve(MAX_OUT_MESSAGE.max(take));
            }
            self.gathered.extend_from_slice(&b[..take]);
            written += take;
            if written == room {
                break;
            }
        }
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_send_gathered(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.poll_send_gathered(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        self.outbound.close();
        Poll::Ready(Ok(()))
    }
}
