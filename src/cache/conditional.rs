//! A client's own conditional request answered from the cache (RFC 9110
//! §13.1.1, §13.1.3, RFC 9111 §4.3.2): an entry that still matches the
//! client's `If-None-Match` (or, without one, is not newer than its
//! `If-Modified-Since`) is answered with `304` and no body.
//!
//! `http-cache-semantics` decides how the cache revalidates its own
//! entries with the upstream, not how it answers clients' validators, so
//! these few rules are written here.

use http::{HeaderMap, Method, StatusCode, header};

/// Whether a `GET` or `HEAD` with `request` headers may get `304` for a
/// stored `200` with `stored` headers.
pub fn not_modified(
    method: &Method,
    request: &HeaderMap,
    status: StatusCode,
    stored: &HeaderMap,
) -> bool {
    if (*method != Method::GET && *method != Method::HEAD) || status != StatusCode::OK {
        return false;
    }
    if request.contains_key(header::IF_NONE_MATCH) {
        let Some(etag) = stored.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        return request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|tag| tag == "*" || weak_eq(tag, etag));
    }
    let since = request
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let modified = stored
        .get(header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    matches!((since, modified), (Some(s), Some(m)) if m <= s)
}

/// Weak comparison of two entity tags (RFC 9110 §8.8.3.2).
fn weak_eq(a: &str, b: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    strip(a) == strip(b)
}

/// The fields a `304` carries over from the full response (RFC 9110
/// §15.4.5).
pub const KEPT_IN_304: [header::HeaderName; 6] = [
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::VARY,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    #[test]
    fn if_none_match_compares_weakly() {
        let stored = h(&[("etag", "\"v1\"")]);
        let ok = StatusCode::OK;
        assert!(not_modified(
            &Method::GET,
            &h(&[("if-none-match", "\"v1\"")]),
            ok,
            &stored
        ));
        assert!(not_modified(
            &Method::GET,
            &h(&[("if-none-match", "W/\"v1\"")]),
            ok,
            &stored
        ));
        assert!(not_modified(
            &Method::HEAD,
            &h(&[("if-none-match", "\"x\", \"v1\"")]),
            ok,
            &stored
        ));
        assert!(not_modified(
            &Method::GET,
            &h(&[("if-none-match", "*")]),
            ok,
            &stored
        ));
        assert!(!not_modified(
            &Method::GET,
            &h(&[("if-none-match", "\"v2\"")]),
            ok,
            &stored
        ));
        // If-None-Match wins over If-Modified-Since.
        let both = h(&[
            ("if-none-match", "\"v2\""),
            ("if-modified-since", "Sun, 06 Nov 2050 08:49:37 GMT"),
        ]);
        assert!(!not_modified(&Method::GET, &both, ok, &stored));
        assert!(!not_modified(
            &Method::POST,
            &h(&[("if-none-match", "\"v1\"")]),
            ok,
            &stored
        ));
        assert!(!not_modified(
            &Method::GET,
            &h(&[("if-none-match", "\"v1\"")]),
            StatusCode::NOT_FOUND,
            &stored
        ));
    }

    #[test]
    fn if_modified_since_compares_dates() {
        let stored = h(&[("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT")]);
        let ok = StatusCode::OK;
        let since = |d: &str| h(&[("if-modified-since", d)]);
        assert!(not_modified(
            &Method::GET,
            &since("Sun, 06 Nov 1994 08:49:37 GMT"),
            ok,
            &stored
        ));
        assert!(not_modified(
            &Method::GET,
            &since("Mon, 07 Nov 1994 08:49:37 GMT"),
            ok,
            &stored
        ));
        assert!(!not_modified(
            &Method::GET,
            &since("Sat, 05 Nov 1994 08:49:37 GMT"),
            ok,
            &stored
        ));
        assert!(!not_modified(&Method::GET, &since("garbage"), ok, &stored));
        assert!(!not_modified(
            &Method::GET,
            &since("Sun, 06 Nov 1994 08:49:37 GMT"),
            ok,
            &HeaderMap::new()
        ));
    }
}
