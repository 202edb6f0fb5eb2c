//! The session's byte pipe: `Control.Session` carries a stream of
//! `BytesMessage` each way, and together they form one bidirectional byte
//! stream. bkd serves HTTP/2 on it (the daemon is the HTTP/2 client).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

use crate::proto::moby::buildkit::v1::BytesMessage;

/// One end of the tunnel: reads what the daemon sends, writes into the
/// outgoing message stream.
pub struct TunnelIo<S> {
    inbound: S,
    pending: Bytes,
    inbound_done: bool,
    outbound: PollSender<BytesMessage>,
}

impl<S> TunnelIo<S> {
    pub fn new(inbound: S, outbound: mpsc::Sender<BytesMessage>) -> Self {
        TunnelIo {
            inbound,
            pending: Bytes::new(),
            inbound_done: false,
            outbound: PollSender::new(outbound),
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
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let closed = || std::io::Error::new(std::io::ErrorKind::BrokenPipe, "session closed");
        match self.outbound.poll_reserve(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => return Poll::Ready(Err(closed())),
            Poll::Pending => return Poll::Pending,
        }
        let msg = BytesMessage {
            data: Bytes::copy_from_slice(buf),
        };
        match self.outbound.send_item(msg) {
            Ok(()) => Poll::Ready(Ok(buf.len())),
            Err(_) => Poll::Ready(Err(closed())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.outbound.close();
        Poll::Ready(Ok(()))
    }
}
