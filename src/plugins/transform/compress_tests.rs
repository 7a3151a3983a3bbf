use std::io::Read;

use super::*;

fn accept(value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_str(value).unwrap(), // ok: test code
    );
    h
}

#[test]
fn qvalues() {
    for (text, q) in [
        ("0", Some(0)),
        ("0.5", Some(500)),
        ("0.125", Some(125)),
        ("0.", Some(0)),
        ("1", Some(1000)),
        ("1.000", Some(1000)),
        ("1.5", None),
        ("2", None),
        ("0.1234", None),
        ("", None),
        ("x", None),
        ("0.x", None),
    ] {
        assert_eq!(qvalue(text), q, "{text:?}");
    }
}

#[test]
fn accept_encoding_weights() {
    let w = |v: &str| {
        (
            weight(&accept(v), Coding::Brotli),
            weight(&accept(v), Coding::Gzip),
        )
    };
    assert_eq!(weight(&HeaderMap::new(), Coding::Gzip), 0);
    assert_eq!(w("gzip"), (0, 1000));
    assert_eq!(w("br, gzip"), (1000, 1000));
    assert_eq!(w("GZIP;Q=0.5, br;q=0.4"), (400, 500));
    assert_eq!(w("gzip;q=0"), (0, 0));
    assert_eq!(w("*"), (1000, 1000));
    assert_eq!(w("*;q=0.2, gzip"), (200, 1000));
    assert_eq!(w("*, gzip;q=0"), (1000, 0));
    assert_eq!(w("identity"), (0, 0));
    assert_eq!(w("x-gzip"), (0, 1000));
    assert_eq!(w(" br ; q=0.9 ,, deflate"), (900, 0));
    // An invalid q makes the element not count.
    assert_eq!(w("br;q=2, gzip;q=abc"), (0, 0));
}

fn offer(coding: Coding, types: &[&str], min: u64, vary: bool) -> Offer {
    let types: Vec<String> = types.iter().map(|t| t.to_string()).collect();
    let range = match coding {
        Coding::Gzip => 1..=9,
        Coding::Brotli => 0..=11,
    };
    Offer {
        coding,
        settings: Arc::new(settings("x", &types, Some(min), (None, 4, range), Some(vary)).unwrap()), // ok: test code
    }
}

fn response(content_type: &str, length: Option<u64>, offers: Vec<Offer>) -> ResponseParts {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap(), // ok: test code
    );
    if let Some(n) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    ResponseParts {
        status: StatusCode::OK,
        headers,
        body: None,
        encodings: offers,
    }
}

fn chosen(
    accept_value: Option<&str>,
    method: &http::Method,
    parts: &mut ResponseParts,
) -> Option<&'static str> {
    let request = accept_value.map_or_else(HeaderMap::new, accept);
    let ctx = ResponseCtx {
        request_headers: &request,
        method,
        consumer: None,
        route: "r",
    };
    negotiate(&ctx, parts, None)?;
    let coding = parts.headers[header::CONTENT_ENCODING].to_str().unwrap(); // ok: test code
    Some(match coding {
        "br" => "br",
        "gzip" => "gzip",
        _ => "?",
    })
}

#[test]
fn negotiation_prefers_brotli_on_ties_and_follows_weights() {
    let get = http::Method::GET;
    let both = || {
        vec![
            offer(Coding::Gzip, &[], 256, true),
            offer(Coding::Brotli, &[], 256, true),
        ]
    };
    for (ae, expected) in [
        (None, None),
        (Some("gzip;q=0"), None),
        (Some("identity"), None),
        (Some("br, gzip"), Some("br")),
        (Some("gzip, br"), Some("br")),
        (Some("gzip, br;q=0.5"), Some("gzip")),
        (Some("*"), Some("br")),
        (Some("*, br;q=0"), Some("gzip")),
        (Some("gzip"), Some("gzip")),
    ] {
        let mut parts = response("application/json; charset=utf-8", Some(1000), both());
        assert_eq!(chosen(ae, &get, &mut parts), expected, "{ae:?}");
        // Eligible either way: caches must know the answer varies.
        assert_eq!(parts.headers[header::VARY], "Accept-Encoding", "{ae:?}");
        if expected.is_some() {
            assert!(parts.headers.get(header::CONTENT_LENGTH).is_none());
        } else {
            assert_eq!(parts.headers[header::CONTENT_LENGTH], "1000");
        }
    }
}

#[test]
fn what_is_never_compressed() {
    let get = http::Method::GET;
    let gz = || vec![offer(Coding::Gzip, &[], 256, true)];
    let mut p = response("text/html", Some(1000), gz());
    assert_eq!(chosen(Some("gzip"), &http::Method::HEAD, &mut p), None);
    assert!(p.headers.get(header::VARY).is_none());
    for status in [101, 103, 204, 206, 304] {
        let mut p = response("text/html", None, gz());
        p.status = StatusCode::from_u16(status).unwrap(); // ok: test code
        assert_eq!(chosen(Some("gzip"), &get, &mut p), None, "{status}");
    }
    let mut p = response("text/html", None, gz());
    p.headers
        .insert(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
    assert_eq!(chosen(Some("gzip"), &get, &mut p), None);
    assert_eq!(p.headers[header::CONTENT_ENCODING], "zstd");
    let mut p = response("text/html", None, gz());
    p.headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, No-Transform"),
    );
    assert_eq!(chosen(Some("gzip"), &get, &mut p), None);
    // Too short, of another type, or without a type.
    let mut p = response("text/html", Some(255), gz());
    assert_eq!(chosen(Some("gzip"), &get, &mut p), None);
    assert!(p.headers.get(header::VARY).is_none());
    let mut p = response("image/png", Some(5000), gz());
    assert_eq!(chosen(Some("gzip"), &get, &mut p), None);
    let mut p = response("text/html", None, gz());
    p.headers.remove(header::CONTENT_TYPE);
    assert_eq!(chosen(Some("gzip"), &get, &mut p), None);
    // Unknown length, type in any case, listed types, `*`.
    let mut p = response("TEXT/HTML;charset=utf-8", None, gz());
    assert_eq!(chosen(Some("gzip"), &get, &mut p), Some("gzip"));
    let mut p = response(
        "application/wasm",
        Some(300),
        vec![offer(Coding::Gzip, &["application/wasm"], 0, false)],
    );
    assert_eq!(chosen(Some("gzip"), &get, &mut p), Some("gzip"));
    assert!(p.headers.get(header::VARY).is_none());
    let mut p = response(
        "image/png",
        None,
        vec![offer(Coding::Gzip, &["*"], 0, true)],
    );
    assert_eq!(chosen(Some("gzip"), &get, &mut p), Some("gzip"));
    // A replaced body is measured, not the old header.
    let mut p = response("text/html", Some(5000), gz());
    p.body = Some(Bytes::from_static(b"short"));
    assert_eq!(chosen(Some("gzip"), &get, &mut p), None);
}

#[test]
fn compressed_responses_lose_ranges_and_strong_etags() {
    let mut p = response("text/css", None, vec![offer(Coding::Brotli, &[], 0, true)]);
    p.headers
        .insert(header::ETAG, HeaderValue::from_static("\"abc\""));
    p.headers
        .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    p.headers.insert(
        header::VARY,
        HeaderValue::from_static("Origin, accept-encoding"),
    );
    assert_eq!(chosen(Some("br"), &http::Method::GET, &mut p), Some("br"));
    assert_eq!(p.headers[header::ETAG], "W/\"abc\"");
    assert!(p.headers.get(header::ACCEPT_RANGES).is_none());
    assert_eq!(p.headers.get_all(header::VARY).iter().count(), 1);
    let mut p = response("text/css", None, vec![offer(Coding::Brotli, &[], 0, true)]);
    p.headers
        .insert(header::ETAG, HeaderValue::from_static("W/\"abc\""));
    chosen(Some("br"), &http::Method::GET, &mut p);
    assert_eq!(p.headers[header::ETAG], "W/\"abc\"");
}

#[test]
fn settings_are_checked() {
    let env_consumers = |_: &std::collections::BTreeMap<String, String>| Vec::new();
    let env = BuildEnv {
        namespace: "default",
        redis: None,
        secret: &|_, _| None,
        consumers: &env_consumers,
    };
    let e = CompressPlugin::build_gzip(
        &Gzip {
            level: Some(10),
            ..Default::default()
        },
        &env,
    )
    .unwrap_err();
    assert_eq!(e.field, "gzip.level");
    assert!(e.message.contains("1 (fastest) to 9"), "{}", e.message);
    let e = CompressPlugin::build_gzip(
        &Gzip {
            level: Some(0),
            ..Default::default()
        },
        &env,
    )
    .unwrap_err();
    assert_eq!(e.field, "gzip.level");
    let e = CompressPlugin::build_brotli(
        &Brotli {
            level: Some(12),
            ..Default::default()
        },
        &env,
    )
    .unwrap_err();
    assert_eq!(e.field, "brotli.level");
    assert!(
        CompressPlugin::build_brotli(
            &Brotli {
                level: Some(0),
                ..Default::default()
            },
            &env
        )
        .is_ok()
    );
    for bad in [
        "text",
        "text/html; charset=utf-8",
        "a/b/c",
        "/x",
        "text/ html",
    ] {
        let c = Gzip {
            types: vec!["text/css".into(), bad.into()],
            ..Default::default()
        };
        let e = CompressPlugin::build_gzip(&c, &env).unwrap_err();
        assert_eq!(e.field, "gzip.types[1]", "{bad}");
    }
    let built = CompressPlugin::build_brotli(&Brotli::default(), &env);
    let p = built.unwrap(); // ok: test code
    assert_eq!((p.name(), p.priority()), ("brotli", 996));
    assert!(p.has_response_phase());
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let read = flate2::read::GzDecoder::new(data).read_to_end(&mut out);
    read.unwrap(); // ok: test code
    out
}

fn unbrotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let read = brotli::Decompressor::new(data, 4096).read_to_end(&mut out);
    read.unwrap(); // ok: test code
    out
}

#[test]
fn encoders_stream_and_flush() {
    let text: Vec<u8> = (0..2000)
        .flat_map(|i| format!("line {i} of the body\n").into_bytes())
        .collect();
    for coding in [Coding::Gzip, Coding::Brotli] {
        let mut e = Encoder::new(coding, 5, None);
        let mut out = Vec::new();
        for chunk in text.chunks(1000) {
            e.write(chunk).unwrap(); // ok: test code
            if e.ready() > 0 {
                out.extend_from_slice(&e.take());
            }
        }
        // A flush makes everything so far decodable without the end.
        let flushed = e.flush().unwrap(); // ok: test code
        out.extend_from_slice(&flushed);
        let mut partial = Vec::new();
        match coding {
            Coding::Gzip => {
                let mut d = flate2::write::GzDecoder::new(Vec::new());
                d.write_all(&out).unwrap(); // ok: test code
                d.flush().unwrap(); // ok: test code
                partial = d.get_ref().clone();
            }
            Coding::Brotli => {
                // The stream as far as it goes: all of the output a
                // decoder can give without the end of the stream.
                let mut state = brotli::BrotliState::new(
                    brotli::enc::StandardAlloc::default(),
                    brotli::enc::StandardAlloc::default(),
                    brotli::enc::StandardAlloc::default(),
                );
                let mut buf = vec![0u8; 1 << 20];
                let (mut avail_in, mut in_at, mut avail_out, mut out_at, mut total) =
                    (out.len(), 0, buf.len(), 0, 0);
                let r = brotli::BrotliDecompressStream(
                    &mut avail_in,
                    &mut in_at,
                    &out,
                    &mut avail_out,
                    &mut out_at,
                    &mut buf,
                    &mut total,
                    &mut state,
                );
                assert!(matches!(r, brotli::BrotliResult::NeedsMoreInput));
                partial.extend_from_slice(&buf[..out_at]);
            }
        }
        assert!(
            partial == text,
            "{coding:?}: decoded {} of {} bytes after a flush",
            partial.len(),
            text.len()
        );
        // Nothing written since: nothing to flush.
        let flushed = e.flush().unwrap(); // ok: test code
        assert!(flushed.is_empty());
        e.write(b"the end\n").unwrap(); // ok: test code
        let finished = e.finish().unwrap(); // ok: test code
        out.extend_from_slice(&finished);
        let decoded = match coding {
            Coding::Gzip => gunzip(&out),
            Coding::Brotli => unbrotli(&out),
        };
        let mut expected = text.clone();
        expected.extend_from_slice(b"the end\n");
        assert_eq!(decoded, expected, "{coding:?}");
        assert!(out.len() < text.len() / 4, "{coding:?}: {}", out.len());
        assert!(e.write(b"more").is_err());
        assert!(e.finish().is_err());
    }
}
