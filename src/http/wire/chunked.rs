//! The chunked transfer coding (RFC 9112 §7.1), both ways, for request
//! and response bodies alike.
//!
//! Decoding is strict about what decides where a body ends (sizes in hex
//! digits only, CRLF after each chunk's data, bounded size lines and
//! trailer sections) and lenient only where nothing depends on it (chunk
//! extensions are read and dropped). Trailer fields that a trailer may not
//! carry are dropped on the way in and never written on the way out
//! (RFC 9110 §6.5.1).

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::WireError;
use super::fields::{allowed_in_trailers, retain_trailers};
use super::limits::{MAX_CHUNK_LINE, MAX_HEAD, MAX_RESPONSE_HEADERS};

/// Appends one chunk of a chunked body. Empty data appends nothing: a
/// chunk of size zero is the last chunk (RFC 9112 §7.1), and writing one
/// mid-body would end the message early and turn the rest of the body
/// into what the next hop reads as another message.
pub fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    put_size(out, data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends a chunk-size line.
pub fn put_size(out: &mut Vec<u8>, n: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// The end of a chunked body, with the trailers that may be sent.
pub fn encode_last_chunk(out: &mut Vec<u8>, trailers: Option<&HeaderMap>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        if !allowed_in_trailers(name) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// What a chunked decoder produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    Data(Bytes),
    /// The body ended, with these trailers (possibly empty).
    End(HeaderMap),
    /// More input is needed.
    NeedMore,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

/// Incremental decoder of `Transfer-Encoding: chunked`.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
    trailers: HeaderMap,
    /// Bytes of trailer section read so far.
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
            trailers: HeaderMap::new(),
            trailer_bytes: 0,
        }
    }
}

/// The size of a chunk-size line: 1*HEXDIG, then optional whitespace and
/// extensions after a `;`.
fn chunk_size(line: &[u8]) -> Result<u64, WireError> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits == 0 || digits > 15 {
        return Err(WireError::Chunked("invalid chunk size"));
    }
    let rest = line[digits..].trim_ascii_start();
    if !rest.is_empty() && rest[0] != b';' {
        return Err(WireError::Chunked("invalid chunk size"));
    }
    Ok(line[..digits].iter().fold(0u64, |size, &b| {
        // Hex digits only, checked above; at most 15 of them fit.
        size * 16 + u64::from((b as char).to_digit(16).unwrap_or(0))
    }))
}

impl ChunkedDecoder {
    /// Decodes as much of `buf` as possible, consuming what it used.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Chunk, WireError> {
        loop {
            match self.state {
                ChunkState::Done => return Ok(Chunk::End(std::mem::take(&mut self.trailers))),
                ChunkState::Size => {
                    let Some(eol) = find_crlf(buf) else {
                        return if buf.len() > MAX_CHUNK_LINE {
                            Err(WireError::Chunked("chunk size line too long"))
                        } else {
                            Ok(Chunk::NeedMore)
                        };
                    };
                    if eol > MAX_CHUNK_LINE {
                        return Err(WireError::Chunked("chunk size line too long"));
                    }
                    let size = chunk_size(&buf[..eol])?;
                    buf.advance(eol + 2);
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(Chunk::NeedMore);
                    }
                    let n = (buf.len() as u64).min(remaining) as usize;
                    let data = buf.split_to(n).freeze();
                    let left = remaining - n as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                    return Ok(Chunk::Data(data));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Chunk::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(WireError::Chunked("missing CRLF after chunk data"));
                    }
                    buf.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let Some(eol) = find_crlf(buf) else {
                        return if self.trailer_bytes + buf.len() > MAX_HEAD {
                            Err(WireError::Chunked("trailers too large"))
                        } else {
                            Ok(Chunk::NeedMore)
                        };
                    };
                    self.trailer_bytes += eol + 2;
                    if self.trailer_bytes > MAX_HEAD {
                        return Err(WireError::Chunked("trailers too large"));
                    }
                    if eol == 0 {
                        buf.advance(2);
                        retain_trailers(&mut self.trailers);
                        self.state = ChunkState::Done;
                        continue;
                    }
                    let line = buf.split_to(eol + 2);
                    self.trailer(&line[..eol])?;
                }
            }
        }
    }

    /// One trailer field line; the same syntax as a header field, without
    /// obsolete line folding.
    fn trailer(&mut self, line: &[u8]) -> Result<(), WireError> {
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(WireError::Chunked("folded trailer line"));
        }
        let colon = line
            .iter()
            .position(|b| *b == b':')
            .ok_or(WireError::Chunked("malformed trailer"))?;
        let name = HeaderName::from_bytes(&line[..colon])
            .map_err(|_| WireError::Chunked("malformed trailer name"))?;
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii())
            .map_err(|_| WireError::Chunked("malformed trailer value"))?;
        if self.trailers.len() >= MAX_RESPONSE_HEADERS {
            return Err(WireError::Chunked("too many trailers"));
        }
        self.trailers.append(name, value);
        Ok(())
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = buf[from..].iter().position(|b| *b == b'\n') {
        let at = from + i;
        if at > 0 && buf[at - 1] == b'\r' {
            return Some(at - 1);
        }
        // A bare LF is not a line end in a chunked body.
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` to a decoder in pieces of `step` bytes.
    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, HeaderMap), WireError> {
        let mut dec = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match dec.decode(&mut buf)? {
                Chunk::Data(d) => out.extend_from_slice(&d),
                Chunk::End(t) => return Ok((out, t)),
                Chunk::NeedMore => {
                    if fed >= input.len() {
                        return Err(WireError::Chunked("truncated"));
                    }
                    let end = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let input =
            b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\ngrpc-status: 0\r\n\r\n";
        for step in 1..input.len() {
            let (body, trailers) = decode_all(input, step).unwrap();
            assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
            assert_eq!(trailers["grpc-status"], "0");
        }
    }

    #[test]
    fn malformed_chunked_bodies_are_errors() {
        for bad in [
            &b"zz\r\n"[..],
            b"5\r\nhelloXX",
            b"5\r\nhello\r\n0\r\nno colon\r\n\r\n",
            b"1234567890abcdef0\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"5 5\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\n0\n\n",
            b"5\r\nhello\r\n0\r\nx-a: 1\r\n folded\r\n\r\n",
            b"-1\r\n",
            b"\r\n",
        ] {
            assert!(
                matches!(decode_all(bad, 3), Err(WireError::Chunked(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"1".repeat(MAX_CHUNK_LINE + 10), b"\r\n".to_vec()].concat();
        assert!(decode_all(&long, 1000).is_err());
        let ext = [
            b"1;".to_vec(),
            b"x".repeat(MAX_CHUNK_LINE),
            b"\r\n".to_vec(),
        ]
        .concat();
        assert!(decode_all(&ext, 7).is_err());
        let big_trailers: Vec<u8> = [
            b"0\r\n".to_vec(),
            (0..100)
                .flat_map(|i| format!("x-t{i:03}: {}\r\n", "v".repeat(700)).into_bytes())
                .collect(),
            b"\r\n".to_vec(),
        ]
        .concat();
        assert!(decode_all(&big_trailers, 4096).is_err());
    }

    #[test]
    fn sizes_allow_whitespace_only_before_extensions() {
        let (body, _) = decode_all(b"5 ;a=b\r\nhello\r\n3\t\r\nabc\r\n0\r\n\r\n", 4).unwrap();
        assert_eq!(body, b"helloabc");
    }

    #[test]
    fn forbidden_trailers_are_dropped_both_ways() {
        let (_, trailers) = decode_all(
            b"0\r\ncontent-length: 50\r\nhost: x\r\nx-sum: 1\r\ntransfer-encoding: chunked\r\n\r\n",
            5,
        )
        .unwrap();
        assert_eq!(trailers.len(), 1);
        assert_eq!(trailers["x-sum"], "1");
        let mut map = HeaderMap::new();
        map.insert("content-length", HeaderValue::from_static("9"));
        map.insert("x-sum", HeaderValue::from_static("2"));
        let mut out = Vec::new();
        encode_last_chunk(&mut out, Some(&map));
        assert_eq!(out, b"0\r\nx-sum: 2\r\n\r\n");
    }

    #[test]
    fn empty_data_never_ends_the_body() {
        let mut out = Vec::new();
        encode_chunk(&mut out, b"ab");
        encode_chunk(&mut out, b"");
        encode_chunk(&mut out, b"cd");
        encode_last_chunk(&mut out, None);
        assert_eq!(out, b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n");
        let (body, _) = decode_all(&out, 3).unwrap();
        assert_eq!(body, b"abcd");
    }

    #[test]
    fn chunks_encode_with_hex_sizes() {
        let mut out = Vec::new();
        encode_chunk(&mut out, &[b'a'; 26]);
        assert!(out.starts_with(b"1a\r\naaa"));
        let mut out = Vec::new();
        put_size(&mut out, 0x10000);
        assert_eq!(out, b"10000\r\n");
    }
}
