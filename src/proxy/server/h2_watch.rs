//! What the HTTP/2 server cannot see for itself: request heads that never
//! finish, and a client that stops reading.
//!
//! hyper's HTTP/2 server has no head timeout, and a HEADERS frame without
//! END_HEADERS followed by silence would hold its connection for good. The
//! stream a connection reads is watched here, frame by frame (only the
//! 9-byte frame headers are looked at): while a header block is open,
//! either inside a HEADERS, PUSH_PROMISE or CONTINUATION frame or between
//! such frames waiting for END_HEADERS, the connection's supervisor is
//! told when it began.
//!
//! Writes that make no progress for the send timeout fail the
//! connection, as on HTTP/1.1: a client that stops reading at the TCP
//! level releases everything its streams hold.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// Frame types whose payload is a header block fragment (RFC 9113 §6).
const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

/// The client connection preface, which precedes the first frame.
const PREFACE_LEN: usize = 24;

/// Follows the frame boundaries of what a client sends.
#[derive(Debug)]
pub struct FrameTracker {
    /// Preface bytes still to skip.
    preface: usize,
    /// The frame header being read, and how much of it is in.
    header: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to come.
    payload: u64,
    /// Whether the current frame carries a header block fragment.
    in_head_frame: bool,
    /// A header block was started and END_HEADERS not seen yet.
    block_open: bool,
}

impl Default for FrameTracker {
    fn default() -> Self {
        FrameTracker {
            preface: PREFACE_LEN,
            header: [0; 9],
            have: 0,
            payload: 0,
            in_head_frame: false,
            block_open: false,
        }
    }
}

impl FrameTracker {
    /// Follows `bytes`; returns whether a request head is incomplete after
    /// them.
    pub fn feed(&mut self, mut bytes: &[u8]) -> bool {
        let skip = self.preface.min(bytes.len());
        self.preface -= skip;
        bytes = &bytes[skip..];
        while !bytes.is_empty() {
            if self.payload > 0 {
                let n = (self.payload.min(bytes.len() as u64)) as usize;
                self.payload -= n as u64;
                bytes = &bytes[n..];
                if self.payload == 0 {
                    self.in_head_frame = false;
                }
                continue;
            }
            let n = (9 - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have < 9 {
                break;
            }
            self.have = 0;
            let h = &self.header;
            let len = u64::from(h[0]) << 16 | u64::from(h[1]) << 8 | u64::from(h[2]);
            let (kind, flags) = (h[3], h[4]);
            let fragment = matches!(kind, HEADERS | PUSH_PROMISE | CONTINUATION);
            if fragment {
                self.block_open = flags & END_HEADERS == 0;
            }
            self.payload = len;
            self.in_head_frame = fragment && len > 0;
        }
        self.head_pending()
    }

    /// Whether a request head has begun and is not complete: a header
    /// frame partly read, or a header block waiting for its end.
    pub fn head_pending(&self) -> bool {
        self.block_open || self.in_head_frame || (self.have > 0 && self.preface == 0)
    }
}

/// What the watched stream tells the connection's supervisor.
#[derive(Debug, Default)]
pub struct Signals {
    /// When the current incomplete head began, as milliseconds since
    /// `origin`; 0 when none is pending.
    head_since: AtomicU64,
    /// Woken when a head starts to be pending.
    pub changed: Notify,
}

impl Signals {
    /// When the pending head began, if one is pending.
    pub fn head_since(&self, origin: Instant) -> Option<Instant> {
        match self.head_since.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(origin + Duration::from_millis(ms - 1)),
        }
    }
}

/// A client stream as the HTTP/2 server reads and writes it.
pub struct Watched<T> {
    inner: T,
    frames: FrameTracker,
    signals: Arc<Signals>,
    origin: Instant,
    /// Armed while a write waits; fails the write when it fires.
    stall: Option<Pin<Box<Sleep>>>,
    send_timeout: Duration,
}

impl<T> Watched<T> {
    pub fn new(inner: T, signals: Arc<Signals>, origin: Instant, send_timeout: Duration) -> Self {
        Watched {
            inner,
            frames: FrameTracker::default(),
            signals,
            origin,
            stall: None,
            send_timeout,
        }
    }

    /// A write's outcome: progress disarms the stall timer, a wait arms
    /// it, and a wait past the send timeout fails the write.
    fn watch_write<R>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match r {
            Poll::Pending => match self.poll_stall(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
            done => {
                self.stall = None;
                done
            }
        }
    }

    /// Fails a write that has waited too long; arms the timer for one
    /// that starts to wait.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let timeout = self.send_timeout;
        let sleep = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing within the send timeout",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let was = this.frames.head_pending();
            let now = this.frames.feed(&buf.filled()[before..]);
            if now != was {
                let ms = if now {
                    // +1 so that 0 means "none".
                    this.origin.elapsed().as_millis() as u64 + 1
                } else {
                    0
                };
                this.signals.head_since.store(ms, Ordering::Relaxed);
                if now {
                    this.signals.changed.notify_one();
                }
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch_write(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch_write(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, len: usize) -> Vec<u8> {
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        f.extend(std::iter::repeat_n(0u8, len));
        f
    }

    #[test]
    fn header_blocks_are_followed_across_frames_and_reads() {
        let mut t = FrameTracker::default();
        assert!(!t.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        // SETTINGS, then a complete HEADERS frame.
        assert!(!t.feed(&frame(0x4, 0, 6)));
        assert!(!t.feed(&frame(HEADERS, END_HEADERS | 0x1, 10)));
        // HEADERS without END_HEADERS: pending until the CONTINUATION
        // that ends it.
        assert!(t.feed(&frame(HEADERS, 0, 5)));
        assert!(t.feed(&frame(CONTINUATION, 0, 5)));
        let last = frame(CONTINUATION, END_HEADERS, 5);
        for (i, b) in last.iter().enumerate() {
            let pending = t.feed(&[*b]);
            assert_eq!(pending, i + 1 < last.len(), "byte {i}");
        }
        // A HEADERS frame cut inside its payload is pending too; a DATA
        // frame cut the same way is not a head.
        let h = frame(HEADERS, END_HEADERS, 20);
        assert!(t.feed(&h[..15]));
        assert!(!t.feed(&h[15..]));
        let d = frame(0x0, 0, 20);
        assert!(!t.feed(&d[..15]));
        assert!(!t.feed(&d[15..]));
        // Half a frame header is a head in progress, whatever it becomes.
        assert!(t.feed(&d[..4]));
        assert!(!t.feed(&d[4..]));
    }
}
