//! Upstream response heads from arbitrary bytes, for a request method
//! chosen by the first byte: the parser never panics, bodiless answers
//! have no body, and no hop-by-hop field reaches the header map.
#![no_main]

use bytes::BytesMut;
use http::Method;
use http::header::{CONNECTION, CONTENT_LENGTH, UPGRADE};
use libfuzzer_sys::fuzz_target;
use sluicegate::http::wire::{BodyFraming, is_hop_by_hop, limits, parse_response_head};
use sluicegate_fuzz::expand;

const METHODS: [Method; 4] = [Method::GET, Method::HEAD, Method::POST, Method::OPTIONS];

fuzz_target!(|raw: &[u8]| {
    let Some((&m, rest)) = raw.split_first() else {
        return;
    };
    let method = &METHODS[usize::from(m) % METHODS.len()];
    let data = expand(rest);
    let mut buf = BytesMut::from(&data[..]);
    let head = match parse_response_head(&mut buf, method) {
        Err(_) => return,
        Ok(None) => {
            assert_eq!(&buf[..], &data[..]);
            assert!(data.len() <= limits::MAX_HEAD);
            return;
        }
        Ok(Some(head)) => head,
    };

    let consumed = data.len() - buf.len();
    assert!(consumed > 0 && consumed <= limits::MAX_HEAD);
    assert_eq!(&buf[..], &data[consumed..]);
    assert_eq!(data[consumed - 1], b'\n');
    for cut in [consumed - 1, usize::from(m) * consumed / 256] {
        let mut part = BytesMut::from(&data[..cut]);
        let r = parse_response_head(&mut part, method);
        assert!(
            matches!(r, Ok(None)),
            "prefix of {cut} bytes of an accepted head gave {r:?}"
        );
    }

    let code = head.status.as_u16();
    let bodiless =
        *method == Method::HEAD || (100..200).contains(&code) || code == 204 || code == 304;
    if bodiless {
        assert_eq!(head.framing, BodyFraming::Empty, "status {code} {method}");
    }
    match head.framing {
        BodyFraming::Length(n) => assert!(n > 0),
        BodyFraming::UntilClose | BodyFraming::Chunked => assert!(!bodiless),
        BodyFraming::Empty => {}
    }
    if head.framing == BodyFraming::Chunked {
        assert!(!head.headers.contains_key(CONTENT_LENGTH));
    }
    // A connection that cannot tell where this body ends, or that was
    // switched, is never reused.
    if head.framing == BodyFraming::UntilClose || head.upgrade {
        assert!(!head.keep_alive);
    }
    assert_eq!(head.upgrade, code == 101);

    for (name, value) in &head.headers {
        if !is_hop_by_hop(name.as_str().as_bytes()) {
            continue;
        }
        let switch = code == 101
            && (name == UPGRADE || (name == CONNECTION && value.as_bytes() == b"upgrade"));
        assert!(
            switch,
            "hop-by-hop {name}: {value:?} kept for status {code}"
        );
    }
    assert!(head.headers.get_all(CONNECTION).iter().count() <= 1);
});
