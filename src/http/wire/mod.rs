//! HTTP/1.1 messages on the wire (RFC 9112), for both roles: the server
//! parses request heads and writes response heads, the client writes
//! request heads and parses response heads, and both read and write
//! chunked bodies with the same codec.
//!
//! The framing rules are strict on the way in, since a proxy that reads a
//! message one way while the next hop reads it another lets a client
//! smuggle a request past routing and plugins. Messages are always framed
//! anew on the way out, never copied: the next hop sees only what this
//! codec understood.
//!
//! Hand-written over `httparse` (which tokenizes a head, no more) because
//! the proxy needs the framing decisions, the hop-by-hop filtering and
//! the buffer-sharing header map in one pass per head; hyper's codec is
//! not public.

mod chunked;
mod fields;
mod request;
mod response;

pub use chunked::{Chunk, ChunkedDecoder, encode_chunk, encode_last_chunk, put_size};
pub use fields::{
    Span, TransferCoding, allowed_in_trailers, content_length, cookie_value, digits, header_map,
    is_hop_by_hop, put, put_date, put_length, retain_trailers, retain_trailers_in,
};
pub use request::{RequestFraming, RequestHead, Target, parse_request_head};
pub use response::{
    BodyFraming, ResponseFraming, ResponseHead, encode_response_head, error_response,
    parse_response_head,
};

use http::StatusCode;

/// The limits of the codec, in one place, for both roles.
pub mod limits {
    /// Largest head accepted, start line included, in either direction;
    /// also the largest trailer section.
    pub const MAX_HEAD: usize = 64 * 1024;
    /// Longest request target; a longer one is answered `414`.
    pub const MAX_TARGET: usize = 16 * 1024;
    /// Most request header fields accepted.
    pub const MAX_REQUEST_HEADERS: usize = 100;
    /// Most response header fields (and trailer fields) accepted.
    pub const MAX_RESPONSE_HEADERS: usize = 128;
    /// Longest chunk-size line, extensions included.
    pub const MAX_CHUNK_LINE: usize = 4096;
}

/// Why bytes could not be read as an HTTP/1.1 message. The same error in
/// both roles: on a request it maps to the status the client gets (see
/// [`WireError::status`]); on a response it is the upstream's fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum WireError {
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    #[error("head larger than {} bytes", limits::MAX_HEAD)]
    HeadTooLarge,
    #[error("request target longer than {} bytes", limits::MAX_TARGET)]
    TargetTooLong,
    #[error("too many header fields")]
    TooManyHeaders,
    #[error("unsupported transfer coding")]
    UnsupportedCoding,
    #[error("conflicting Content-Length")]
    ConflictingLength,
    #[error("malformed chunked encoding: {0}")]
    Chunked(&'static str),
}

impl WireError {
    /// The status a client gets for a request that failed this way.
    pub fn status(self) -> StatusCode {
        match self {
            WireError::Malformed(_) | WireError::ConflictingLength | WireError::Chunked(_) => {
                StatusCode::BAD_REQUEST
            }
            WireError::HeadTooLarge | WireError::TooManyHeaders => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            WireError::TargetTooLong => StatusCode::URI_TOO_LONG,
            WireError::UnsupportedCoding => StatusCode::NOT_IMPLEMENTED,
        }
    }
}
