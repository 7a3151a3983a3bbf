//! The request head an upstream gets: the client's fields without the
//! hop-by-hop ones (RFC 9110 §7.6.1), one `Host`, and the
//! `X-Forwarded-*` family set by the proxy. Response heads are filtered
//! while they are parsed (see `wire`).

use http::Method;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::http::client::Head;
use crate::http::wire::{RequestFraming, cookie_value, digits, put, put_length};
use crate::proxy::server::ClientInfo;
use crate::telemetry::trace::{TRACEPARENT, TRACESTATE};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// Not a field of HTTP, but CGI-style backends turn it into the
/// `HTTP_PROXY` variable, which their own HTTP clients then use as their
/// proxy ("httpoxy", CVE-2016-5385 and its kin): a client could send a
/// backend's outgoing requests through a server of its choice.
static PROXY: HeaderName = HeaderName::from_static("proxy");

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

static SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
static SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");

/// Whether a `101` completes the WebSocket handshake that `request`
/// asked for: `Upgrade: websocket`, and the `Sec-WebSocket-Accept` that
/// only a server that read this request's key computes (RFC 6455 §4.2.2).
///
/// Why the gateway checks what the client will check anyway: once it
/// switches, it copies bytes both ways and no longer reads HTTP. A backend
/// that answers `101` when it did not upgrade (an endpoint that echoes a
/// status it is given, say) would leave the client a raw channel to that
/// backend's HTTP server, past the gateway's routes and plugins.
pub fn completes_websocket_handshake(request: &HeaderMap, response: &HeaderMap) -> bool {
    use base64::Engine as _;
    let upgraded = response
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.trim().eq_ignore_ascii_case("websocket"));
    let Some(key) = request.get(&SEC_WEBSOCKET_KEY) else {
        return false;
    };
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let expected = base64::engine::general_purpose::STANDARD.encode(ctx.finish());
    upgraded
        && response
            .get(&SEC_WEBSOCKET_ACCEPT)
            .is_some_and(|v| v.as_bytes() == expected.as_bytes())
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Headers never passed to the upstream as the client sent them: `Host`
/// (the request's one host is written instead), the hop-by-hop ones
/// (RFC 9110 §7.6.1), framing (the proxy frames the request itself),
/// `Expect` (the proxy answers `100-continue` itself when it starts
/// reading the body), `Proxy` (see [`PROXY`]) and the forwarding headers
/// (set below).
fn is_replaced(name: &HeaderName) -> bool {
    [
        &header::HOST,
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::CONTENT_LENGTH,
        &header::EXPECT,
        &PROXY,
        &X_FORWARDED_FOR,
        &X_FORWARDED_PROTO,
        &X_FORWARDED_HOST,
        &X_FORWARDED_PORT,
        &X_REAL_IP,
    ]
    .contains(&name)
}

/// A request as it is written to the upstream.
pub struct ForwardHead<'a> {
    pub method: &'a Method,
    /// Origin-form target: path and query.
    pub target: &'a str,
    /// The client's headers, as received, but for `Host`.
    pub headers: &'a HeaderMap,
    /// The request's one host: what it was routed by, unless a plugin
    /// rewrote it. Written as `Host` over HTTP/1.1 and as `:authority`
    /// over HTTP/2, whatever `Host` the client sent.
    pub host: Option<&'a HeaderValue>,
    pub client: &'a ClientInfo,
    /// Keep the WebSocket upgrade handshake headers.
    pub upgrade: bool,
    /// Extend the client's forwarding headers instead of replacing them.
    pub trust_forwarded: bool,
    /// The trace context the upstream gets, when the gateway traces.
    pub trace: Option<&'a TraceHeaders>,
}

/// The W3C trace context headers of a request the gateway traces. They
/// are written while the head is, not put in the client's header map:
/// every proxied request gets one when tracing is on, sampled or not.
#[derive(Debug)]
pub struct TraceHeaders {
    /// `traceparent`, naming the gateway's span as the caller; it replaces
    /// the client's.
    pub traceparent: [u8; 55],
    /// Whether the client's `tracestate` goes along: only when the trace
    /// is the client's own (its `traceparent` was valid).
    pub keep_state: bool,
}

/// Where the headers of a request head go: HTTP/1.1 text for the proxy's
/// own client, or a header map for hyper's.
trait Sink {
    fn put(&mut self, name: &HeaderName, value: &HeaderValue);
    /// A value the proxy made, known to be valid field text.
    fn put_bytes(&mut self, name: &HeaderName, value: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, name: &HeaderName, value: &HeaderValue) {
        put(self, name.as_str(), value.as_bytes());
    }

    fn put_bytes(&mut self, name: &HeaderName, value: &[u8]) {
        put(self, name.as_str(), value);
    }
}

impl Sink for HeaderMap {
    fn put(&mut self, name: &HeaderName, value: &HeaderValue) {
        self.append(name.clone(), value.clone());
    }

    fn put_bytes(&mut self, name: &HeaderName, value: &[u8]) {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            self.append(name.clone(), v);
        }
    }
}

impl Head for ForwardHead<'_> {
    fn method(&self) -> &Method {
        self.method
    }

    fn target(&self) -> &str {
        self.target
    }

    fn authority(&self) -> Option<&HeaderValue> {
        self.host
    }

    fn upgrade(&self) -> bool {
        self.upgrade
    }

    /// Writes the head in HTTP/1.1 form. Header policy is applied while
    /// writing rather than by editing the header map, which would hash
    /// every removed and inserted name once more.
    fn encode(&self, out: &mut Vec<u8>, framing: RequestFraming) {
        out.clear();
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        self.headers_into(out, true);
        if self.upgrade {
            put(out, "connection", b"upgrade");
        }
        match framing {
            RequestFraming::None => {}
            RequestFraming::Length(n) => put_length(out, n),
            RequestFraming::Chunked => put(out, "transfer-encoding", b"chunked"),
        }
        out.extend_from_slice(b"\r\n");
    }

    /// The headers to send through hyper's client, under the same policy
    /// as [`Self::encode`]; hyper adds the framing. Over HTTP/2 the host
    /// travels as `:authority` instead of `Host`, and `TE: trailers`, which
    /// gRPC requires, is kept.
    fn header_map(&self, http2: bool) -> HeaderMap {
        let mut out = HeaderMap::with_capacity(self.headers.len() + 6);
        self.headers_into(&mut out, !http2);
        if http2 {
            let trailers = self
                .headers
                .get_all(header::TE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
            if trailers {
                out.insert(header::TE, HeaderValue::from_static("trailers"));
            }
        } else if self.upgrade {
            out.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        out
    }
}

impl ForwardHead<'_> {
    /// `Host` first, from the request's one host, then the client's
    /// headers that pass, then the forwarding headers.
    ///
    /// `h1`: the upstream speaks HTTP/1.1, which gets `Host`, and the
    /// client's `Cookie` fields as one (see [`cookie_value`]).
    fn headers_into(&self, out: &mut impl Sink, h1: bool) {
        let named: Vec<&str> = if self.headers.contains_key(header::CONNECTION) {
            self.headers
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .collect()
        } else {
            Vec::new()
        };
        if h1 && let Some(h) = self.host {
            out.put(&header::HOST, h);
        }
        let mut cookies_joined = false;
        if let Some(t) = self.trace {
            out.put_bytes(&TRACEPARENT, &t.traceparent);
        }
        for (name, value) in self.headers {
            if is_replaced(name) {
                continue;
            }
            if let Some(t) = self.trace
                && (*name == TRACEPARENT || (*name == TRACESTATE && !t.keep_state))
            {
                continue;
            }
            if *name == header::UPGRADE && !self.upgrade {
                continue;
            }
            if *name == header::MAX_FORWARDS && *self.method == Method::OPTIONS {
                // One hop fewer (RFC 9110 §7.6.2); a request that arrived
                // with 0 was answered by the gateway. An invalid value
                // goes on as it is.
                if let Some(n) = digits(value.as_bytes()).filter(|n| *n > 0) {
                    out.put_bytes(name, itoa::Buffer::new().format(n - 1).as_bytes());
                    continue;
                }
            }
            if !named.is_empty()
                && named.iter().any(|n| n.eq_ignore_ascii_case(name.as_str()))
                && *name != header::UPGRADE
            {
                continue;
            }
            if h1 && *name == header::COOKIE {
                // A map yields a name's values one after another: the
                // first writes them all.
                if !cookies_joined {
                    cookies_joined = true;
                    if let Some(v) = cookie_value(self.headers) {
                        out.put(name, &v);
                    }
                }
                continue;
            }
            out.put(name, value);
        }
        self.forwarded(out);
    }

    /// Unless the client is a trusted proxy, forwarding headers it sent are
    /// replaced rather than extended, so that a client cannot forge its
    /// address for the upstream.
    fn forwarded(&self, out: &mut impl Sink) {
        let client = self.client;
        let trusted = |name: &HeaderName| {
            if self.trust_forwarded {
                self.headers.get(name)
            } else {
                None
            }
        };
        let chain = if self.trust_forwarded && self.headers.contains_key(&X_FORWARDED_FOR) {
            let mut v = Vec::new();
            for prior in self.headers.get_all(&X_FORWARDED_FOR) {
                v.extend_from_slice(prior.as_bytes());
                v.extend_from_slice(b", ");
            }
            v.extend_from_slice(client.ip.as_bytes());
            HeaderValue::from_bytes(&v).ok()
        } else {
            None
        };
        out.put(&X_FORWARDED_FOR, chain.as_ref().unwrap_or(&client.ip));
        out.put(&X_REAL_IP, trusted(&X_REAL_IP).unwrap_or(&client.ip));
        out.put(
            &X_FORWARDED_PROTO,
            trusted(&X_FORWARDED_PROTO).unwrap_or(&client.proto),
        );
        out.put(
            &X_FORWARDED_PORT,
            trusted(&X_FORWARDED_PORT).unwrap_or(&client.port),
        );
        if let Some(host) = trusted(&X_FORWARDED_HOST).or(self.host) {
            out.put(&X_FORWARDED_HOST, host);
        }
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

    /// A GET of `/` with `h`, no host, upgrade, trust or trace.
    fn plain<'a>(h: &'a HeaderMap, client: &'a ClientInfo) -> ForwardHead<'a> {
        ForwardHead {
            method: &Method::GET,
            target: "/",
            headers: h,
            host: None,
            client,
            upgrade: false,
            trust_forwarded: false,
            trace: None,
        }
    }

    fn encode(
        h: &HeaderMap,
        host: Option<&HeaderValue>,
        upgrade: bool,
        trust: bool,
        framing: RequestFraming,
    ) -> String {
        let client = client();
        let head = ForwardHead {
            method: &Method::GET,
            target: "/p?q=1",
            headers: h,
            host,
            client: &client,
            upgrade,
            trust_forwarded: trust,
            trace: None,
        };
        let mut out = Vec::new();
        head.encode(&mut out, framing);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_not_sent() {
        let h = map(&[
            ("host", "a.example"),
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("expect", "100-continue"),
            ("content-length", "999"),
            ("proxy", "http://evil.example:3128"),
            ("x-kept", "yes"),
        ]);
        let host = HeaderValue::from_static("a.example");
        let text = encode(&h, Some(&host), false, false, RequestFraming::Length(3));
        assert!(
            text.starts_with("GET /p?q=1 HTTP/1.1\r\nhost: a.example\r\nx-kept: yes\r\n"),
            "{text}"
        );
        for gone in [
            "connection",
            "keep-alive",
            "x-secret",
            "te:",
            "upgrade",
            "expect",
            "999",
            "proxy",
            "evil",
        ] {
            assert!(!text.contains(gone), "{gone} must not be sent: {text}");
        }
        assert!(text.ends_with("content-length: 3\r\n\r\n"), "{text}");
    }

    #[test]
    fn only_the_handshake_asked_for_completes_a_switch() {
        // RFC 6455 §1.3's example.
        let request = map(&[("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")]);
        let good = map(&[
            ("upgrade", "websocket"),
            ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ]);
        assert!(completes_websocket_handshake(&request, &good));
        let no_upgrade = map(&[("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")]);
        assert!(!completes_websocket_handshake(&request, &no_upgrade));
        let other = map(&[
            ("upgrade", "h2c"),
            ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ]);
        assert!(!completes_websocket_handshake(&request, &other));
        let wrong = map(&[
            ("upgrade", "websocket"),
            ("sec-websocket-accept", "AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
        ]);
        assert!(!completes_websocket_handshake(&request, &wrong));
        assert!(!completes_websocket_handshake(&HeaderMap::new(), &good));
    }

    #[test]
    fn cookies_are_one_field_for_http1_and_stay_apart_for_http2() {
        let h = map(&[("cookie", "a=1"), ("x-b", "2"), ("cookie", "c=3; d=4")]);
        let text = encode(&h, None, false, false, RequestFraming::None);
        assert_eq!(text.matches("cookie: ").count(), 1, "{text}");
        assert!(text.contains("cookie: a=1; c=3; d=4\r\n"), "{text}");
        let client = client();
        let head = plain(&h, &client);
        let over_h2: Vec<_> = head
            .header_map(true)
            .get_all("cookie")
            .iter()
            .cloned()
            .collect();
        assert_eq!(over_h2, ["a=1", "c=3; d=4"]);
        let over_h1: Vec<_> = head
            .header_map(false)
            .get_all("cookie")
            .iter()
            .cloned()
            .collect();
        assert_eq!(over_h1, ["a=1; c=3; d=4"]);
        // One cookie field goes as it is.
        let one = map(&[("cookie", "a=1")]);
        let text = encode(&one, None, false, false, RequestFraming::None);
        assert!(text.contains("cookie: a=1\r\n"), "{text}");
    }

    #[test]
    fn max_forwards_counts_down_on_options_only() {
        let client = client();
        let sent = |method: &Method, value: &str| {
            let h = map(&[("max-forwards", value)]);
            let head = ForwardHead {
                method,
                ..plain(&h, &client)
            };
            let mut out = Vec::new();
            head.encode(&mut out, RequestFraming::None);
            let over_h2 = head.header_map(true);
            let text = String::from_utf8(out).unwrap(); // ok: test code
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix("max-forwards: "))
                .map(str::to_owned);
            let mapped = over_h2
                .get("max-forwards")
                .map(|v| v.to_str().unwrap().to_owned()); // ok: test code
            assert_eq!(line, mapped, "HTTP/1.1 and HTTP/2 agree");
            line
        };
        assert_eq!(sent(&Method::OPTIONS, "5").as_deref(), Some("4"));
        assert_eq!(sent(&Method::OPTIONS, "1").as_deref(), Some("0"));
        // Any other method ignores it (RFC 9110 §7.6.2 lets it).
        assert_eq!(sent(&Method::GET, "5").as_deref(), Some("5"));
        // Not a number: passed on as it came.
        assert_eq!(sent(&Method::OPTIONS, "x1").as_deref(), Some("x1"));
    }

    #[test]
    fn the_one_host_replaces_the_clients() {
        let h = map(&[("host", "b.test"), ("x-a", "1")]);
        let host = HeaderValue::from_static("a.test");
        let text = encode(&h, Some(&host), false, false, RequestFraming::None);
        assert!(text.contains("host: a.test\r\n"), "{text}");
        assert!(!text.contains("b.test"), "{text}");
        let client = client();
        let head = ForwardHead {
            host: Some(&host),
            ..plain(&h, &client)
        };
        let map = head.header_map(true);
        assert!(!map.contains_key("host"), "{map:?}");
        assert_eq!(map["x-forwarded-host"], "a.test");
    }

    #[test]
    fn forwarded_headers_replace_untrusted_values() {
        let h = map(&[("x-forwarded-for", "1.2.3.4"), ("x-real-ip", "1.2.3.4")]);
        let host = HeaderValue::from_static("shop.example.com");
        let text = encode(&h, Some(&host), false, false, RequestFraming::None);
        assert!(
            text.contains("host: shop.example.com\r\n"),
            "missing Host is added: {text}"
        );
        assert!(text.contains("x-forwarded-for: 10.0.0.9\r\n"), "{text}");
        assert!(text.contains("x-real-ip: 10.0.0.9\r\n"), "{text}");
        assert!(text.contains("x-forwarded-proto: http\r\n"), "{text}");
        assert!(
            text.contains("x-forwarded-host: shop.example.com\r\n"),
            "{text}"
        );
        assert!(text.contains("x-forwarded-port: 8080\r\n"), "{text}");
        assert!(!text.contains("1.2.3.4"), "{text}");
    }

    #[test]
    fn forwarded_headers_extend_trusted_values() {
        let h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        let text = encode(&h, None, false, true, RequestFraming::None);
        assert!(
            text.contains("x-forwarded-for: 1.2.3.4, 10.0.0.9\r\n"),
            "{text}"
        );
        assert!(text.contains("x-forwarded-proto: https\r\n"), "{text}");
    }

    #[test]
    fn websocket_upgrade_is_detected_and_kept() {
        let h = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert!(is_websocket_upgrade(&h));
        let text = encode(&h, None, true, false, RequestFraming::None);
        assert!(text.contains("upgrade: websocket\r\n"), "{text}");
        assert!(text.contains("connection: upgrade\r\n"), "{text}");
        assert!(!is_websocket_upgrade(&map(&[("upgrade", "websocket")])));
    }

    #[test]
    fn chunked_framing() {
        let text = encode(
            &HeaderMap::new(),
            None,
            false,
            false,
            RequestFraming::Chunked,
        );
        assert!(
            text.ends_with("transfer-encoding: chunked\r\n\r\n"),
            "{text}"
        );
    }

    #[test]
    fn the_gateways_trace_context_replaces_the_clients() {
        let h = map(&[
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("tracestate", "vendor=1"),
            ("x-a", "1"),
        ]);
        let client = client();
        let ours = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        for keep_state in [true, false] {
            let trace = TraceHeaders {
                traceparent: *ours,
                keep_state,
            };
            let head = ForwardHead {
                trace: Some(&trace),
                ..plain(&h, &client)
            };
            let mut out = Vec::new();
            head.encode(&mut out, RequestFraming::None);
            let text = String::from_utf8(out).unwrap();
            assert_eq!(text.matches("traceparent: ").count(), 1, "{text}");
            assert!(
                text.contains(
                    "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
                ),
                "{text}"
            );
            assert_eq!(
                text.contains("tracestate: vendor=1\r\n"),
                keep_state,
                "{text}"
            );
            assert!(text.contains("x-a: 1\r\n"), "{text}");
            let map = head.header_map(true);
            assert_eq!(map.get_all("traceparent").iter().count(), 1);
            assert_eq!(map["traceparent"].as_bytes(), ours);
            assert_eq!(map.contains_key("tracestate"), keep_state);
        }
    }
}
