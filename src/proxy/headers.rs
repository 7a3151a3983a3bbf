//! Request header handling between client and upstream: hop-by-hop
//! headers are removed (RFC 9110 §7.6.1) and the `X-Forwarded-*` family is
//! set. Response heads are filtered while they are parsed (see
//! `upstream::codec`).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Facts about the client connection, formatted once per connection.
#[derive(Clone, Debug)]
pub struct ClientInfo {
    pub ip: HeaderValue,
    pub port: HeaderValue,
    pub proto: HeaderValue,
}

impl ClientInfo {
    pub fn new(peer: std::net::SocketAddr, local: std::net::SocketAddr, tls: bool) -> Self {
        let num = |n: u16| HeaderValue::from(n);
        ClientInfo {
            ip: HeaderValue::try_from(peer.ip().to_string())
                .unwrap_or(HeaderValue::from_static("unknown")),
            port: num(local.port()),
            proto: HeaderValue::from_static(if tls { "https" } else { "http" }),
        }
    }
}

/// Whether the request asks to switch to WebSocket.
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
        });
    upgrade && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers, including those the `Connection` header
/// names. With `keep_upgrade`, the upgrade handshake headers stay.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            if !(keep_upgrade && name == header::UPGRADE) {
                headers.remove(&name);
            }
        }
        headers.remove(header::CONNECTION);
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(header::TE);
    headers.remove(header::TRAILER);
    headers.remove(header::TRANSFER_ENCODING);
    // The proxy answers `Expect: 100-continue` itself when it starts
    // reading the body; passed on, the upstream's interim answer would be
    // a second one.
    headers.remove(header::EXPECT);
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// Prepares a client's request headers for the upstream.
///
/// Unless the client is a trusted proxy, forwarding headers it sent are
/// replaced rather than extended, so that a client cannot forge its
/// address for the upstream.
pub fn prepare_request(
    headers: &mut HeaderMap,
    client: &ClientInfo,
    host: Option<&HeaderValue>,
    keep_upgrade: bool,
    trust_forwarded: bool,
) {
    strip_hop_by_hop(headers, keep_upgrade);
    let xff = if trust_forwarded && headers.contains_key(&X_FORWARDED_FOR) {
        let mut joined = Vec::with_capacity(64);
        for v in headers.get_all(&X_FORWARDED_FOR) {
            if !joined.is_empty() {
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(v.as_bytes());
        }
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(client.ip.as_bytes());
        HeaderValue::from_bytes(&joined).unwrap_or_else(|_| client.ip.clone())
    } else {
        client.ip.clone()
    };
    headers.insert(X_FORWARDED_FOR.clone(), xff);
    let set = |headers: &mut HeaderMap, name: &HeaderName, value: &HeaderValue| {
        if !trust_forwarded || !headers.contains_key(name) {
            headers.insert(name.clone(), value.clone());
        }
    };
    set(headers, &X_REAL_IP, &client.ip);
    set(headers, &X_FORWARDED_PROTO, &client.proto);
    set(headers, &X_FORWARDED_PORT, &client.port);
    if let Some(host) = host {
        set(headers, &X_FORWARDED_HOST, host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> ClientInfo {
        ClientInfo::new(
            "10.0.0.9:5555".parse().unwrap(),
            "0.0.0.0:8080".parse().unwrap(),
            false,
        )
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("x-kept", "yes"),
        ]);
        prepare_request(&mut h, &client(), None, false, false);
        for gone in ["connection", "keep-alive", "x-secret", "te", "upgrade"] {
            assert!(!h.contains_key(gone), "{gone} should be removed");
        }
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn forwarded_headers_replace_untrusted_values() {
        let mut h = map(&[("x-forwarded-for", "1.2.3.4"), ("x-real-ip", "1.2.3.4")]);
        let host = HeaderValue::from_static("shop.example.com");
        prepare_request(&mut h, &client(), Some(&host), false, false);
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert_eq!(h["x-real-ip"], "10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "shop.example.com");
        assert_eq!(h["x-forwarded-port"], "8080");
    }

    #[test]
    fn forwarded_headers_extend_trusted_values() {
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        prepare_request(&mut h, &client(), None, false, true);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn websocket_upgrade_is_detected_and_kept() {
        let mut h = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert!(is_websocket_upgrade(&h));
        prepare_request(&mut h, &client(), None, true, false);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert!(!is_websocket_upgrade(&map(&[("upgrade", "websocket")])));
    }
}
