//! `forwardAuth`: an authorization service decides about every request
//! (ingress-nginx's `auth-url`, Traefik's and APISIX's forward-auth).
//!
//! The service gets a `GET` describing the original request in
//! `X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri` and `-For`, plus the
//! client headers named in `requestHeaders`. The gateway's own
//! `X-Forwarded-*` values replace any the client sent under those names:
//! the service must be able to trust them.
//!
//! A 2xx answer lets the request through. Any other answer is what the
//! client gets: its status, at most [`MAX_BODY`] of its body, and the
//! headers named in `clientHeaders` plus `WWW-Authenticate` and
//! `Location`, so that challenges and login redirects work unconfigured.
//! A service that cannot be reached, is too slow or answers something that
//! is not HTTP gets the client a `503`: failing open would make an outage
//! of the service an outage of authentication.
//!
//! Headers named in `upstreamHeaders` are removed from the upstream
//! request whatever the answer, so that a client cannot pose as having
//! been vouched for by sending them itself.
//!
//! Connections to the service are kept alive and reused: a call per
//! request is the point of the plugin, a handshake per request need not
//! be.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::api::ForwardAuth;
use crate::plugins::{BuildEnv, ConfigError, Outcome, Plugin, Rejection, RequestCtx};

const FIELD: &str = "forwardAuth";
/// Time allowed for a call when `timeout` is not set.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// The most of a refusal's body passed on to the client; the rest is
/// dropped (and with it the connection, which cannot be reused mid-body).
pub const MAX_BODY: usize = 64 * 1024;
/// Idle connections kept; more would only hold sockets the next burst
/// does not need.
const MAX_IDLE: usize = 16;
/// How long a name's addresses are used before resolving it again: short,
/// so that a moved service is followed quickly, yet not a lookup per
/// request.
const DNS_TTL: Duration = Duration::from_secs(5);

/// Headers that describe a connection or a message's framing, not the
/// request: copying them would corrupt the message they land in.
const FRAMING: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

type Sender = SendRequest<Empty<Bytes>>;

/// Where the service is.
#[derive(Debug)]
struct Target {
    /// The `Host` the service gets: the URI's authority.
    authority: HeaderValue,
    path_and_query: Uri,
    /// The name to resolve, when the host is not an address.
    name: Option<Box<str>>,
    port: u16,
    /// The addresses, when the host is one.
    fixed: Option<Arc<[SocketAddr]>>,
}

/// What the service answered.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// Why the service could not decide.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("cannot resolve the service's name: {0}")]
    Resolve(std::io::Error),
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("HTTP exchange failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("unusable status {0}")]
    Status(StatusCode),
}

/// `forwardAuth`.
#[derive(Debug)]
pub struct ForwardAuthPlugin {
    config: ForwardAuth,
    target: Target,
    request_headers: Vec<HeaderName>,
    upstream_headers: Vec<HeaderName>,
    /// `clientHeaders` with `WWW-Authenticate` and `Location`, each once.
    client_headers: Vec<HeaderName>,
    timeout: Duration,
    /// Keep-alive connections not in use. Only ever locked briefly, never
    /// across an await.
    idle: Mutex<Vec<Sender>>,
    /// The service name's addresses and when they were looked up.
    resolved: Mutex<Option<(Instant, Arc<[SocketAddr]>)>>,
}

impl ForwardAuthPlugin {
    pub fn build(c: &ForwardAuth, _env: &BuildEnv<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
        let target = parse_uri(&c.uri)?;
        let request_headers = header_names(&c.request_headers, "requestHeaders", true)?;
        let upstream_headers = header_names(&c.upstream_headers, "upstreamHeaders", true)?;
        let mut client_headers = vec![header::WWW_AUTHENTICATE, header::LOCATION];
        for name in header_names(&c.client_headers, "clientHeaders", false)? {
            if !client_headers.contains(&name) {
                client_headers.push(name);
            }
        }
        let timeout = c.timeout.map_or(DEFAULT_TIMEOUT, |t| t.0);
        if timeout.is_zero() {
            return Err(ConfigError::new(
                format!("{FIELD}.timeout"),
                "must be greater than zero",
            ));
        }
        Ok(Arc::new(ForwardAuthPlugin {
            config: c.clone(),
            target,
            request_headers,
            upstream_headers,
            client_headers,
            timeout,
            idle: Mutex::default(),
            resolved: Mutex::default(),
        }))
    }

    /// The headers of the call describing `ctx`'s request. Every value
    /// comes from a request that was already parsed, so a failure here
    /// means a client sent something no header can carry: its fault.
    fn call_headers(&self, ctx: &RequestCtx<'_>) -> Option<HeaderMap> {
        let mut h = HeaderMap::new();
        for name in &self.request_headers {
            for value in ctx.headers.get_all(name) {
                h.append(name.clone(), value.clone());
            }
        }
        let uri = match ctx.query {
            Some(q) => format!("{}?{q}", ctx.path),
            None => ctx.path.to_owned(),
        };
        let forwarded = [
            ("x-forwarded-method", ctx.method.as_str().as_bytes()),
            (
                "x-forwarded-proto",
                if ctx.tls {
                    b"https".as_slice()
                } else {
                    b"http".as_slice()
                },
            ),
            ("x-forwarded-host", ctx.host.as_bytes()),
            ("x-forwarded-uri", uri.as_bytes()),
            ("x-forwarded-for", ctx.client_ip),
        ];
        for (name, value) in forwarded {
            let value = HeaderValue::from_bytes(value).ok()?;
            h.insert(HeaderName::from_static(name), value);
        }
        h.insert(header::HOST, self.target.authority.clone());
        Some(h)
    }

    /// The upstream request's headers an allowing answer sets: those named
    /// in `upstreamHeaders` that it carries, several values joined as one
    /// list (setting replaces, so separate values would overwrite each
    /// other).
    fn upstream_changes(&self, answer: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::new();
        for name in &self.upstream_headers {
            let mut values = answer.get_all(name).iter();
            let Some(first) = values.next() else {
                continue;
            };
            let mut joined = first.as_bytes().to_vec();
            for v in values {
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(v.as_bytes());
            }
            if let Ok(v) = HeaderValue::from_bytes(&joined) {
                out.push((name.clone(), v));
            }
        }
        out
    }

    /// The client's answer for a refusing `answer`.
    fn refusal(&self, answer: Answer) -> Rejection {
        let mut headers = HeaderMap::new();
        for name in &self.client_headers {
            for value in answer.headers.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        Rejection {
            status: answer.status,
            headers,
            body: answer.body,
        }
    }

    /// One call to the service, all of it within the timeout.
    async fn ask(&self, headers: HeaderMap) -> Result<Answer, Failure> {
        let deadline = Instant::now() + self.timeout;
        tokio::time::timeout_at(deadline, self.exchange(headers))
            .await
            .unwrap_or(Err(Failure::Timeout(self.timeout)))
    }

    async fn exchange(&self, headers: HeaderMap) -> Result<Answer, Failure> {
        let (response, sender) = match self.take_idle() {
            Some(mut sender) => match sender.send_request(self.call(&headers)).await {
                Ok(r) => (r, sender),
                // The service may close an idle connection just as it is
                // reused; the call has no side effects, so it is simply
                // made again on a new one.
                Err(e) => {
                    debug!(error = %e, "forwardAuth: reused connection failed, reconnecting");
                    self.send_new(&headers).await?
                }
            },
            None => self.send_new(&headers).await?,
        };
        let (parts, body) = response.into_parts();
        if parts.status.is_informational() {
            return Err(Failure::Status(parts.status));
        }
        let (body, complete) = read_limited(body, MAX_BODY).await?;
        if complete {
            self.keep(sender);
        }
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    fn call(&self, headers: &HeaderMap) -> Request<Empty<Bytes>> {
        let mut req = Request::new(Empty::new());
        *req.uri_mut() = self.target.path_and_query.clone();
        *req.headers_mut() = headers.clone();
        req
    }

    async fn send_new(
        &self,
        headers: &HeaderMap,
    ) -> Result<(http::Response<Incoming>, Sender), Failure> {
        let mut sender = self.connect().await?;
        let response = sender.send_request(self.call(headers)).await?;
        Ok((response, sender))
    }

    async fn connect(&self) -> Result<Sender, Failure> {
        let addrs = self.addresses().await?;
        let mut failure = None;
        let mut stream = None;
        for addr in addrs.iter() {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => failure = Some(e),
            }
        }
        let Some(stream) = stream else {
            return Err(Failure::Connect(failure.unwrap_or_else(|| {
                std::io::Error::other("no address to connect to")
            })));
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "forwardAuth: connection to the service ended");
            }
        });
        Ok(sender)
    }

    /// The service's addresses: fixed, or its name's, looked up again
    /// once [`DNS_TTL`] has passed.
    async fn addresses(&self) -> Result<Arc<[SocketAddr]>, Failure> {
        if let Some(fixed) = &self.target.fixed {
            return Ok(fixed.clone());
        }
        let name = self.target.name.as_deref().unwrap_or_default();
        {
            let cached = self.resolved.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((at, addrs)) = cached.as_ref()
                && at.elapsed() < DNS_TTL
            {
                return Ok(addrs.clone());
            }
        }
        let addrs: Arc<[SocketAddr]> = tokio::net::lookup_host((name, self.target.port))
            .await
            .map_err(Failure::Resolve)?
            .collect();
        if addrs.is_empty() {
            return Err(Failure::Resolve(std::io::Error::other(format!(
                "{name} has no addresses"
            ))));
        }
        *self.resolved.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Instant::now(), addrs.clone()));
        Ok(addrs)
    }

    /// An idle connection ready for a request. Closed ones are dropped;
    /// ones the connection task has not yet marked ready (their previous
    /// answer just ended) stay for a later call.
    fn take_idle(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|s| !s.is_closed());
        let i = idle.iter().rposition(SendRequest::is_ready)?;
        Some(idle.swap_remove(i))
    }

    fn keep(&self, sender: Sender) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE && !sender.is_closed() {
            idle.push(sender);
        }
    }
}

impl Plugin for ForwardAuthPlugin {
    fn name(&self) -> &'static str {
        "forwardAuth"
    }

    fn priority(&self) -> i32 {
        2002
    }

    fn request<'s>(&'s self, ctx: &mut RequestCtx<'_>) -> Outcome<'s> {
        let Some(headers) = self.call_headers(ctx) else {
            return Outcome::Reject(bad_request());
        };
        // Removed now, whatever the service says: only its answer may
        // supply these to the upstream.
        for name in &self.upstream_headers {
            ctx.upstream_headers.push((name.clone(), None));
        }
        Outcome::Wait(Box::pin(async move {
            match self.ask(headers).await {
                Ok(answer) if answer.status.is_success() => {
                    // Not applied yet: the pipeline does not take upstream
                    // headers from a waiting plugin.
                    Ok(crate::plugins::Waited {
                        upstream_headers: self
                            .upstream_changes(&answer.headers)
                            .into_iter()
                            .map(|(n, v)| (n, Some(v)))
                            .collect(),
                        ..Default::default()
                    })
                }
                Ok(answer) => Err(Box::new(self.refusal(answer))),
                Err(e) => {
                    warn!(
                        uri = %self.config.uri,
                        reason = %e,
                        "forwardAuth: authorization service unavailable"
                    );
                    Err(Box::new(unavailable()))
                }
            }
        }))
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
}

/// Reads at most `limit` bytes of `body`; whether it ended within them.
async fn read_limited(mut body: Incoming, limit: usize) -> Result<(Bytes, bool), Failure> {
    let mut out = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        if out.len() + data.len() > limit {
            let room = limit - out.len();
            out.extend_from_slice(&data[..room]);
            return Ok((out.freeze(), false));
        }
        out.extend_from_slice(&data);
    }
    Ok((out.freeze(), true))
}

fn text_response(status: StatusCode, body: &'static str) -> Rejection {
    Rejection::plain(status, Bytes::from_static(body.as_bytes()))
}

fn unavailable() -> Rejection {
    text_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "authorization service unavailable\n",
    )
}

fn bad_request() -> Rejection {
    text_response(
        StatusCode::BAD_REQUEST,
        "400 Bad Request: the request cannot be described to the authorization service\n",
    )
}

/// Checks `uri` is `http://host[:port]/path` and takes it apart.
fn parse_uri(text: &str) -> Result<Target, ConfigError> {
    let field = format!("{FIELD}.uri");
    let err = |m: String| ConfigError::new(field.clone(), m);
    // The URI parser drops a fragment silently; refusing it says that it
    // would never reach the service.
    if text.contains('#') {
        return Err(err("a fragment (#...) is never sent; remove it".into()));
    }
    let uri: Uri = text
        .parse()
        .map_err(|e| err(format!("{text:?} is not a valid URI: {e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(s) if s.eq_ignore_ascii_case("https") => {
            return Err(err(
                "https is not supported yet; give the service an http:// URI".into(),
            ));
        }
        Some(s) => return Err(err(format!("scheme {s:?} is not supported; use http://"))),
        None => return Err(err(format!("{text:?} must start with http://"))),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| err(format!("{text:?} has no host")))?;
    if authority.as_str().contains('@') {
        return Err(err("user information is not allowed in the URI".into()));
    }
    let host = authority.host();
    if host.is_empty() {
        return Err(err(format!("{text:?} has no host")));
    }
    let port = match authority.port() {
        None => 80,
        Some(p) => match p.as_u16() {
            0 => return Err(err("port 0 is not a port to connect to".into())),
            n => n,
        },
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let (name, fixed) = match bare.parse::<IpAddr>() {
        Ok(ip) => (None, Some(Arc::from([SocketAddr::new(ip, port)]))),
        Err(_) if host.starts_with('[') => {
            return Err(err(format!("{host} is not an IPv6 address")));
        }
        Err(_) => (Some(Box::from(host)), None),
    };
    let path_and_query: Uri = uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .map_err(|e| err(format!("invalid path: {e}")))?;
    let authority = HeaderValue::from_str(authority.as_str())
        .map_err(|_| err(format!("{text:?} has no valid host")))?;
    Ok(Target {
        authority,
        path_and_query,
        name,
        port,
        fixed,
    })
}

/// Parses a list of header names, refusing framing headers (and `Host`
/// for requests: the service and the upstream each get their own).
fn header_names(
    names: &[String],
    list: &str,
    request: bool,
) -> Result<Vec<HeaderName>, ConfigError> {
    let mut out: Vec<HeaderName> = Vec::with_capacity(names.len());
    for (i, text) in names.iter().enumerate() {
        let field = || format!("{FIELD}.{list}[{i}]");
        let name = HeaderName::from_bytes(text.as_bytes()).map_err(|_| {
            ConfigError::new(field(), format!("{text:?} is not a valid header name"))
        })?;
        if FRAMING.contains(&name.as_str()) || (request && name == header::HOST) {
            return Err(ConfigError::new(
                field(),
                format!("{name} describes the connection, not the request; it cannot be copied"),
            ));
        }
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(uri: &str) -> ForwardAuth {
        ForwardAuth {
            uri: uri.into(),
            ..Default::default()
        }
    }

    fn plugin(c: &ForwardAuth) -> Result<Arc<dyn Plugin>, ConfigError> {
        let consumers = |_: &std::collections::BTreeMap<String, String>| Vec::new();
        let env = BuildEnv {
            namespace: "default",
            redis: None,
            secret: &|_, _| None,
            consumers: &consumers,
        };
        ForwardAuthPlugin::build(c, &env)
    }

    /// The concrete plugin, for its helpers.
    fn concrete(c: &ForwardAuth) -> ForwardAuthPlugin {
        let target = parse_uri(&c.uri).unwrap();
        let mut client_headers = vec![header::WWW_AUTHENTICATE, header::LOCATION];
        for n in header_names(&c.client_headers, "clientHeaders", false).unwrap() {
            if !client_headers.contains(&n) {
                client_headers.push(n);
            }
        }
        ForwardAuthPlugin {
            config: c.clone(),
            target,
            request_headers: header_names(&c.request_headers, "requestHeaders", true).unwrap(),
            upstream_headers: header_names(&c.upstream_headers, "upstreamHeaders", true).unwrap(),
            client_headers,
            timeout: DEFAULT_TIMEOUT,
            idle: Mutex::default(),
            resolved: Mutex::default(),
        }
    }

    fn ctx<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> RequestCtx<'a> {
        RequestCtx {
            client_ip: b"10.0.0.7",
            tls: false,
            port: 80,
            host: "shop.test",
            path: "/cart/items",
            query,
            headers,
            route: "r",
            consumer: None,
            response_headers: HeaderMap::new(),
            guards: Vec::new(),
            upstream_headers: Vec::new(),
            remove_query: Vec::new(),
            rewrite_path: None,
            rewrite_host: None,
            body_limit: None,
            method: &http::Method::DELETE,
        }
    }

    #[test]
    fn accepted_uris() {
        let t = parse_uri("http://auth.default.svc:8080/verify?x=1").unwrap();
        assert_eq!(t.authority, "auth.default.svc:8080");
        assert_eq!(t.path_and_query, "/verify?x=1");
        assert_eq!(t.name.as_deref(), Some("auth.default.svc"));
        assert_eq!(t.port, 8080);
        assert!(t.fixed.is_none());

        let t = parse_uri("http://10.1.2.3").unwrap();
        assert_eq!(t.path_and_query, "/");
        assert_eq!(t.port, 80);
        assert_eq!(&*t.fixed.unwrap(), &["10.1.2.3:80".parse().unwrap()]);

        let t = parse_uri("http://[::1]:9000/auth").unwrap();
        assert_eq!(t.authority, "[::1]:9000");
        assert_eq!(&*t.fixed.unwrap(), &["[::1]:9000".parse().unwrap()]);
    }

    #[test]
    fn refused_uris_say_why() {
        let cases = [
            ("https://auth/verify", "https is not supported yet"),
            ("HTTPS://auth/verify", "https is not supported yet"),
            ("ftp://auth/verify", "not supported"),
            ("/verify", "must start with http://"),
            ("auth:8080", "must start with http://"),
            ("http://user:pw@auth/verify", "user information"),
            ("http://auth:0/", "port 0"),
            ("http://[nope]/", "not an IPv6 address"),
            ("http://auth/verify#frag", "fragment"),
            ("http://a b/", "not a valid URI"),
            ("", "not a valid URI"),
        ];
        for (uri, why) in cases {
            let e = plugin(&settings(uri)).unwrap_err();
            assert_eq!(e.field, "forwardAuth.uri", "{uri}");
            assert!(e.message.contains(why), "{uri}: {}", e.message);
        }
    }

    #[test]
    fn header_lists_are_checked() {
        let mut c = settings("http://auth/");
        c.request_headers = vec!["Authorization".into(), "bad name".into()];
        assert_eq!(
            plugin(&c).unwrap_err().field,
            "forwardAuth.requestHeaders[1]"
        );
        c.request_headers = vec!["Host".into()];
        assert_eq!(
            plugin(&c).unwrap_err().field,
            "forwardAuth.requestHeaders[0]"
        );
        c.request_headers = vec![];
        c.upstream_headers = vec!["X-User".into(), "Transfer-Encoding".into()];
        assert_eq!(
            plugin(&c).unwrap_err().field,
            "forwardAuth.upstreamHeaders[1]"
        );
        c.upstream_headers = vec![];
        c.client_headers = vec!["Content-Length".into()];
        assert_eq!(
            plugin(&c).unwrap_err().field,
            "forwardAuth.clientHeaders[0]"
        );
        c.client_headers = vec!["Set-Cookie".into()];
        c.timeout = Some(crate::api::Duration(Duration::ZERO));
        assert_eq!(plugin(&c).unwrap_err().field, "forwardAuth.timeout");
        c.timeout = None;
        let p = plugin(&c).unwrap();
        assert_eq!((p.name(), p.priority()), ("forwardAuth", 2002));
    }

    #[test]
    fn the_call_describes_the_request_and_copies_named_headers() {
        let mut c = settings("http://auth.test:8080/verify");
        c.request_headers = vec![
            "authorization".into(),
            "X-Tenant".into(),
            "X-Forwarded-For".into(),
        ];
        let p = concrete(&c);
        let mut h = HeaderMap::new();
        h.insert("Authorization", HeaderValue::from_static("Bearer good"));
        h.append("x-tenant", HeaderValue::from_static("a"));
        h.append("x-tenant", HeaderValue::from_static("b"));
        h.insert("cookie", HeaderValue::from_static("secret=1"));
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert("x-forwarded-host", HeaderValue::from_static("evil.test"));
        let call = p.call_headers(&ctx(&h, Some("a=1&b=2"))).unwrap();
        assert_eq!(call["authorization"], "Bearer good");
        let tenants: Vec<_> = call.get_all("x-tenant").iter().collect();
        assert_eq!(tenants, ["a", "b"]);
        assert!(call.get("cookie").is_none());
        assert_eq!(call["x-forwarded-method"], "DELETE");
        assert_eq!(call["x-forwarded-proto"], "http");
        assert_eq!(call["x-forwarded-host"], "shop.test");
        assert_eq!(call["x-forwarded-uri"], "/cart/items?a=1&b=2");
        // The client's own claims never reach the service.
        assert_eq!(call.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(call["x-forwarded-for"], "10.0.0.7");
        assert_eq!(call["host"], "auth.test:8080");

        let call = p.call_headers(&ctx(&h, None)).unwrap();
        assert_eq!(call["x-forwarded-uri"], "/cart/items");

        // What no header can carry is the client's problem, not a panic.
        let mut odd = ctx(&h, None);
        odd.client_ip = b"10.0.0.7\n";
        match p.request(&mut odd) {
            Outcome::Reject(r) => assert_eq!(r.status, StatusCode::BAD_REQUEST),
            _ => panic!("expected a 400"),
        }
    }

    #[test]
    fn upstream_headers_are_taken_from_the_answer_and_removed_beforehand() {
        let mut c = settings("http://auth/");
        c.upstream_headers = vec!["X-User".into(), "x-groups".into(), "X-Missing".into()];
        let p = concrete(&c);
        let mut answer = HeaderMap::new();
        answer.insert("x-user", HeaderValue::from_static("alice"));
        answer.append("x-groups", HeaderValue::from_static("dev"));
        answer.append("x-groups", HeaderValue::from_static("ops"));
        answer.insert("x-other", HeaderValue::from_static("no"));
        let set = p.upstream_changes(&answer);
        assert_eq!(
            set,
            [
                (
                    HeaderName::from_static("x-user"),
                    HeaderValue::from_static("alice")
                ),
                (
                    HeaderName::from_static("x-groups"),
                    HeaderValue::from_static("dev, ops")
                ),
            ]
        );

        let h = HeaderMap::new();
        let mut cx = ctx(&h, None);
        assert!(matches!(p.request(&mut cx), Outcome::Wait(_)));
        let removed: Vec<_> = cx
            .upstream_headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.is_none()))
            .collect();
        assert_eq!(
            removed,
            [("x-user", true), ("x-groups", true), ("x-missing", true)]
        );
    }

    #[test]
    fn refusals_keep_status_body_and_selected_headers() {
        let mut c = settings("http://auth/");
        c.client_headers = vec!["Set-Cookie".into(), "www-authenticate".into()];
        let p = concrete(&c);
        assert_eq!(p.client_headers.len(), 3);
        let mut headers = HeaderMap::new();
        headers.append("www-authenticate", HeaderValue::from_static("Bearer"));
        headers.append(
            "www-authenticate",
            HeaderValue::from_static("Basic realm=\"x\""),
        );
        headers.insert("location", HeaderValue::from_static("/login"));
        headers.insert("set-cookie", HeaderValue::from_static("s=1"));
        headers.insert("x-internal", HeaderValue::from_static("no"));
        headers.insert("content-length", HeaderValue::from_static("6"));
        let r = p.refusal(Answer {
            status: StatusCode::FOUND,
            headers,
            body: Bytes::from_static(b"go on!"),
        });
        assert_eq!(r.status, StatusCode::FOUND);
        assert_eq!(r.body, "go on!");
        assert_eq!(r.headers.get_all("www-authenticate").iter().count(), 2);
        assert_eq!(r.headers["location"], "/login");
        assert_eq!(r.headers["set-cookie"], "s=1");
        assert!(r.headers.get("x-internal").is_none());
        assert!(r.headers.get("content-length").is_none());
    }
}
