//! Request heads from arbitrary bytes: the parser never panics, and a
//! head it accepts is framed in exactly one unambiguous way.
#![no_main]

use bytes::BytesMut;
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{Method, Version};
use libfuzzer_sys::fuzz_target;
use sluicegate::http::wire::{RequestFraming, Target, limits, parse_request_head};
use sluicegate_fuzz::expand;

/// A `Content-Length` value read independently of the codec: digits only,
/// optional surrounding whitespace.
fn length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn tokens<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<Vec<u8>> {
    values
        .flat_map(|v| v.split(|b| *b == b','))
        .map(|t| t.trim_ascii().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

fuzz_target!(|raw: &[u8]| {
    let data = expand(raw);
    let mut buf = BytesMut::from(&data[..]);
    let head = match parse_request_head(&mut buf) {
        Err(e) => {
            let s = e.status();
            assert!(s.is_client_error() || s == http::StatusCode::NOT_IMPLEMENTED);
            return;
        }
        Ok(None) => {
            // Waiting for more never consumes anything, and never waits
            // past the limit.
            assert_eq!(&buf[..], &data[..]);
            assert!(data.len() <= limits::MAX_HEAD);
            return;
        }
        Ok(Some(head)) => head,
    };

    // Consumed exactly the head: a prefix ending in a line feed, within
    // the limit, the rest left for the body.
    let consumed = data.len() - buf.len();
    assert!(consumed > 0 && consumed <= limits::MAX_HEAD);
    assert_eq!(&buf[..], &data[consumed..]);
    assert_eq!(data[consumed - 1], b'\n');
    assert!(head.headers.len() <= limits::MAX_REQUEST_HEADERS);

    // A prefix of an accepted head is incomplete, never an error (the
    // server parses again as bytes arrive).
    for cut in [consumed - 1, usize::from(raw[0]) * consumed / 256] {
        let mut part = BytesMut::from(&data[..cut]);
        let r = parse_request_head(&mut part);
        assert!(
            matches!(r, Ok(None)),
            "prefix of {cut} bytes of an accepted head gave {r:?}"
        );
    }

    // Framing: one of length or chunked, never both, and as the fields
    // say.
    let h = &head.headers;
    let lengths: Vec<Option<u64>> = h
        .get_all(CONTENT_LENGTH)
        .iter()
        .map(|v| length(v.as_bytes()))
        .collect();
    let codings = tokens(h.get_all(TRANSFER_ENCODING).iter().map(|v| v.as_bytes()));
    let has_te = h.contains_key(TRANSFER_ENCODING);
    assert!(!(has_te && !lengths.is_empty()), "both framings accepted");
    assert!(lengths.iter().all(Option::is_some), "bad length accepted");
    match head.framing {
        RequestFraming::Chunked => {
            assert_eq!(codings, [b"chunked".to_vec()]);
            assert_eq!(head.version, Version::HTTP_11);
        }
        RequestFraming::Length(n) => {
            assert!(n > 0);
            assert!(!has_te);
            assert!(!lengths.is_empty());
            assert!(
                lengths.iter().all(|l| *l == Some(n)),
                "length {n} vs {lengths:?}"
            );
        }
        RequestFraming::None => {
            assert!(!has_te);
            assert!(lengths.iter().all(|l| *l == Some(0)));
        }
    }
    assert!(!head.expect_continue || head.framing != RequestFraming::None);

    // One Host, required in HTTP/1.1.
    let hosts = h.get_all(HOST).iter().count();
    match head.version {
        Version::HTTP_11 => assert_eq!(hosts, 1),
        Version::HTTP_10 => assert!(hosts <= 1),
        v => panic!("version {v:?}"),
    }

    // Persistence as RFC 9112 §9.3 says.
    let conn = tokens(h.get_all(CONNECTION).iter().map(|v| v.as_bytes()));
    let close = conn.iter().any(|t| t == b"close");
    let keep = conn.iter().any(|t| t == b"keep-alive");
    let want = match head.version {
        Version::HTTP_10 => keep && !close,
        _ => !close,
    };
    assert_eq!(head.keep_alive, want);

    // The target's form fits the method.
    let uri = &head.uri;
    assert!(uri.to_string().len() <= limits::MAX_TARGET);
    match head.target {
        Target::Asterisk => {
            assert_eq!(head.method, Method::OPTIONS);
            assert_eq!(uri.path(), "*");
        }
        Target::Authority => {
            assert_eq!(head.method, Method::CONNECT);
            assert!(uri.scheme().is_none() && uri.authority().is_some());
        }
        Target::Origin => {
            assert_ne!(head.method, Method::CONNECT);
            assert!(uri.scheme().is_none() && uri.authority().is_none());
            assert!(uri.path().starts_with('/'));
        }
        Target::Absolute => {
            assert_ne!(head.method, Method::CONNECT);
            let scheme = uri.scheme_str().unwrap_or("").to_ascii_lowercase();
            assert!(scheme == "http" || scheme == "https");
            let a = uri.authority().expect("absolute form has an authority");
            assert!(!a.host().is_empty());
            assert!(!a.as_str().contains('@'));
        }
    }
    if head.method == Method::CONNECT {
        assert_eq!(head.target, Target::Authority);
    }
});
