//! The HTTP/1.1 codec's work per request: parsing a request head as a
//! client sends it, parsing a response head as an upstream (nginx, a
//! typical application server) sends it, and writing the response head
//! to the client.
//!
//! Each parse starts from a fresh buffer holding the head, as the proxy's
//! read buffer does; the copy into it is part of every iteration and the
//! same for all, so differences between builds are the codec's.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Method, StatusCode};
use sluicegate::http::wire::{
    ResponseFraming, encode_response_head, parse_request_head, parse_response_head,
};

const REQUEST: &[u8] = b"GET /api/v1/orders/1234567?expand=items HTTP/1.1\r\n\
Host: shop.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: application/json\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Accept-Language: en-GB,en;q=0.5\r\n\
Cookie: session=3f1c9a7e5b2d4c6a8e0f1a2b3c4d5e6f\r\n\
Connection: keep-alive\r\n\r\n";

/// What nginx's `return 200` sends: the load scripts' backend.
const NGINX_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Server: nginx/1.22.1\r\n\
Date: Tue, 08 Dec 2026 04:00:00 GMT\r\n\
Content-Type: text/plain\r\n\
Content-Length: 2\r\n\
Connection: keep-alive\r\n\r\n";

/// An application's JSON response with the usual extra fields.
const APP_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Content-Type: application/json; charset=utf-8\r\n\
Content-Length: 1532\r\n\
Date: Tue, 08 Dec 2026 04:00:00 GMT\r\n\
Cache-Control: private, max-age=0\r\n\
Vary: Accept-Encoding\r\n\
ETag: \"5f2a-1b3c4d5e\"\r\n\
X-Request-Id: 0f8fad5b-d9cb-469f-a165-70867728950e\r\n\
Set-Cookie: cart=9; Path=/; HttpOnly; Secure; SameSite=Lax\r\n\
Strict-Transport-Security: max-age=31536000\r\n\
Keep-Alive: timeout=5\r\n\r\n";

fn parse(c: &mut Criterion) {
    // Each head must parse whole, or the figures would be an error path's.
    assert!(matches!(
        parse_request_head(&mut BytesMut::from(REQUEST)),
        Ok(Some(_))
    ));
    for head in [NGINX_RESPONSE, APP_RESPONSE] {
        assert!(matches!(
            parse_response_head(&mut BytesMut::from(head), &Method::GET),
            Ok(Some(_))
        ));
    }
    let mut g = c.benchmark_group("wire");
    let mut buf = BytesMut::with_capacity(8192);
    g.bench_function("parse_request_head", |b| {
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(REQUEST);
            black_box(parse_request_head(&mut buf).ok().flatten())
        })
    });
    for (name, head) in [
        ("parse_response_head/nginx", NGINX_RESPONSE),
        ("parse_response_head/app", APP_RESPONSE),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                buf.clear();
                buf.extend_from_slice(head);
                black_box(parse_response_head(&mut buf, &Method::GET).ok().flatten())
            })
        });
    }
    let mut app = BytesMut::from(APP_RESPONSE);
    let Ok(Some(parsed)) = parse_response_head(&mut app, &Method::GET) else {
        panic!("the application's response head parses");
    };
    let mut out = Vec::with_capacity(4096);
    g.bench_function("encode_response_head/app", |b| {
        b.iter(|| {
            out.clear();
            encode_response_head(
                &mut out,
                StatusCode::OK,
                black_box(&parsed.headers),
                ResponseFraming::Length(1532),
                true,
                false,
            );
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
