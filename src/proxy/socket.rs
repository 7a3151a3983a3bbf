//! Reading a socket into a buffer without wasted system calls, for both
//! sides of the proxy.

use std::io;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::Interest;
use tokio::net::tcp::OwnedReadHalf;

/// Bytes read per system call, at most.
pub const READ_CHUNK: usize = 16 * 1024;

/// Reads more bytes into `buf`; `Ok(0)` means the peer closed. Waits for
/// readiness first, so no read is attempted that would block.
///
/// A read that returns less than it asked for has drained the socket, so
/// the event loop's cached readiness is cleared then, without the extra
/// read that would otherwise be needed to learn it. An idle connection
/// then usually shows no readiness, which tells that it is alive without
/// a system call.
pub fn poll_fill(
    read: &OwnedReadHalf,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    loop {
        ready!(read.as_ref().poll_read_ready(cx))?;
        let spare = buf.capacity() - buf.len();
        match read.try_read_buf(buf) {
            Ok(n) => {
                if n > 0 && n < spare {
                    clear_read_readiness(read);
                }
                return Poll::Ready(Ok(n));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

/// Forgets readiness the event loop recorded for bytes already read.
pub fn clear_read_readiness(read: &OwnedReadHalf) {
    let _ = read.as_ref().try_io(Interest::READABLE, || {
        Err::<(), _>(io::ErrorKind::WouldBlock.into())
    });
}
