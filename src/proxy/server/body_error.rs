//! Why a client's request body could not be read, whichever server read
//! it.

use std::io;

use crate::http::wire::WireError;

/// Why a client's request body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    #[error("reading the request body failed: {0}")]
    Io(#[from] io::Error),
    #[error("the client closed the connection in the middle of the request body")]
    Closed,
    #[error("the request body failed earlier")]
    Failed,
    #[error("invalid request body framing: {0}")]
    Framing(#[from] WireError),
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    #[error("reading the HTTP/3 request stream failed: {0}")]
    H3(String),
}

impl ClientBodyError {
    /// Whether the body's own bytes were wrong, rather than the client
    /// gone.
    pub fn is_framing(&self) -> bool {
        matches!(self, ClientBodyError::Framing(_))
    }
}
