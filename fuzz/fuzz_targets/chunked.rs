//! The chunked codec. The first byte picks a check:
//! - even: arbitrary bytes decoded whole and in pieces give the same
//!   outcome (data, trailers or error, and where the body ends), since a
//!   decoder whose result depends on how TCP split the stream reads a
//!   different body than the next hop does;
//! - odd: arbitrary chunks and trailers, encoded, decode to the same data
//!   and to the trailers a trailer section may carry, and the bytes after
//!   the body are left untouched.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use bytes::BytesMut;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sluicegate::http::wire::{
    Chunk, ChunkedDecoder, WireError, allowed_in_trailers, encode_chunk, encode_last_chunk,
};
use sluicegate_fuzz::{expand, split_points};

#[derive(Debug, PartialEq)]
enum End {
    /// The body ended, with these trailers and this many bytes after it.
    Done(HeaderMap, usize),
    Error(WireError),
    /// The input ended inside the body.
    Truncated,
}

/// Decodes `input`, fed in pieces ending at `points`.
fn decode(input: &[u8], points: &[usize]) -> (Vec<u8>, End) {
    let mut dec = ChunkedDecoder::default();
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    let mut fed = 0;
    let mut next = points.iter();
    loop {
        match dec.decode(&mut buf) {
            Ok(Chunk::Data(d)) => {
                assert!(!d.is_empty(), "empty data chunk");
                data.extend_from_slice(&d);
            }
            Ok(Chunk::End(t)) => return (data, End::Done(t, buf.len() + input.len() - fed)),
            Ok(Chunk::NeedMore) => match next.next() {
                Some(&p) => {
                    buf.extend_from_slice(&input[fed..p]);
                    fed = p;
                }
                None => return (data, End::Truncated),
            },
            Err(e) => return (data, End::Error(e)),
        }
    }
}

fn same_across_splits(raw: &[u8]) {
    let (seed, rest) = raw.split_at(raw.len().min(8));
    let input = expand(rest);
    let whole = decode(&input, &[input.len()]);
    let pieces = decode(&input, &split_points(input.len(), seed));
    assert_eq!(whole, pieces, "outcome depends on how the input was split");
}

#[derive(Debug, Arbitrary)]
struct Message {
    chunks: Vec<Vec<u8>>,
    trailers: Option<Vec<(String, Vec<u8>)>>,
    after: Vec<u8>,
    seed: Vec<u8>,
}

fn round_trip(raw: &[u8]) {
    let Ok(msg) = Message::arbitrary_take_rest(Unstructured::new(raw)) else {
        return;
    };
    let trailers = msg.trailers.map(|list| {
        let mut map = HeaderMap::new();
        for (n, v) in list.into_iter().take(32) {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(n.as_bytes()),
                HeaderValue::from_bytes(&v),
            ) {
                map.append(n, v);
            }
        }
        map
    });
    let mut wire = Vec::new();
    let mut body = Vec::new();
    for c in &msg.chunks {
        encode_chunk(&mut wire, c);
        body.extend_from_slice(c);
    }
    encode_last_chunk(&mut wire, trailers.as_ref());
    let body_len = wire.len();
    wire.extend_from_slice(&msg.after);

    // What the other side should see: the trailers a trailer section may
    // carry, with the whitespace around values dropped (RFC 9110 §5.5).
    let mut want = HeaderMap::new();
    for (n, v) in trailers.iter().flatten() {
        if allowed_in_trailers(n) {
            let v = HeaderValue::from_bytes(v.as_bytes().trim_ascii()).expect("trimmed value");
            want.append(n.clone(), v);
        }
    }
    let (data, end) = decode(&wire, &split_points(wire.len(), &msg.seed));
    assert_eq!(data, body, "data changed in a round trip");
    assert_eq!(end, End::Done(want, wire.len() - body_len));
}

fuzz_target!(|raw: &[u8]| {
    let Some((&mode, rest)) = raw.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        same_across_splits(rest);
    } else {
        round_trip(rest);
    }
});
