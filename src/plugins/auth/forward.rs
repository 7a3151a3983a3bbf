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
//! Calls go through the gateway's own client ([`fetch`]): a name resolves
//! through the gateway's resolver, and connections to the service are
//! kept alive per worker (a call per request is the point of the plugin,
//! a handshake per request need not be); a call that finds its kept-alive
//! connection closed by the service is made again on a new one, which a
//! `GET` without side effects allows. An `https://` service is verified
//! against the system's CA certificates or the `ca.crt` of the Secret
//! named by `caSecretRef`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use tracing::warn;

use super::trust::{LazyTarget, Trust};
use crate::api::ForwardAuth;
use crate::http::client::fetch::{self, FetchError, Options, Request, Target};
use crate::http::wire::cookie_value;
use crate::plugins::{BuildEnv, ConfigError, Outcome, Plugin, Rejection, RequestCtx};

const FIELD: &str = "forwardAuth";
/// Time allowed for a call when `timeout` is not set.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// The most of a refusal's body passed on to the client; the rest is
/// dropped (and with it the connection, which cannot be reused mid-body).
pub const MAX_BODY: usize = 64 * 1024;

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
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("TLS: {0}")]
    Tls(String),
}

/// `forwardAuth`.
#[derive(Debug)]
pub struct ForwardAuthPlugin {
    config: ForwardAuth,
    target: LazyTarget,
    request_headers: Vec<HeaderName>,
    upstream_headers: Vec<HeaderName>,
    /// `clientHeaders` with `WWW-Authenticate` and `Location`, each once.
    client_headers: Vec<HeaderName>,
    timeout: Duration,
}

impl ForwardAuthPlugin {
    pub fn build(c: &ForwardAuth, env: &BuildEnv<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
        let target = target(c, env)?;
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
        }))
    }

    /// The headers of the call describing `ctx`'s request. Every value
    /// comes from a request that was already parsed, so a failure here
    /// means a client sent something no header can carry: its fault.
    fn call_headers(&self, ctx: &RequestCtx<'_>) -> Option<HeaderMap> {
        let mut h = HeaderMap::new();
        for name in &self.request_headers {
            // The call is HTTP/1.1: cookies go as one field.
            if *name == header::COOKIE {
                if let Some(v) = cookie_value(ctx.headers) {
                    h.insert(name.clone(), v);
                }
                continue;
            }
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
        h.insert(header::HOST, self.target.parsed().authority().clone());
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
        let target = self.target.get().map_err(Failure::Tls)?;
        let mut request = Request::get(target);
        request.headers = headers;
        let options = Options {
            timeout: self.timeout,
            max_body: MAX_BODY,
            reuse: true,
        };
        let r = fetch::fetch(target, request, &options).await?;
        Ok(Answer {
            status: r.status,
            headers: r.headers,
            body: r.body,
        })
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

/// The service's URI, checked, with whom to trust over `https://`.
fn target(c: &ForwardAuth, env: &BuildEnv<'_>) -> Result<LazyTarget, ConfigError> {
    let parsed = Target::parse(&c.uri)
        .map_err(|e| ConfigError::new(format!("{FIELD}.uri"), e.to_string()))?;
    const CA_FIELD: &str = "forwardAuth.caSecretRef";
    let (trust, _) = Trust::from_ref(c.ca_secret_ref.as_ref(), env, CA_FIELD)?;
    if c.ca_secret_ref.is_some() && !parsed.is_https() {
        return Err(ConfigError::new(
            CA_FIELD,
            "a CA only applies to an https:// uri",
        ));
    }
    Ok(LazyTarget::new(parsed, trust, CA_FIELD))
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
        plugin_with(c, None)
    }

    /// Built with `ca` as the `ca.crt` of every Secret.
    fn plugin_with(c: &ForwardAuth, ca: Option<&[u8]>) -> Result<Arc<dyn Plugin>, ConfigError> {
        let consumers = |_: &std::collections::BTreeMap<String, String>| Vec::new();
        let secret = |_: &str, _: &str| ca.map(<[u8]>::to_vec);
        let env = BuildEnv {
            namespace: "default",
            redis: None,
            secret: &secret,
            consumers: &consumers,
        };
        ForwardAuthPlugin::build(c, &env)
    }

    /// The concrete plugin, for its helpers.
    fn concrete(c: &ForwardAuth) -> ForwardAuthPlugin {
        let target = LazyTarget::new(Target::parse(&c.uri).unwrap(), Trust::System, "ca");
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
            token_meters: Vec::new(),
            method: &http::Method::DELETE,
        }
    }

    #[test]
    fn uris_are_checked() {
        for uri in [
            "http://auth.default.svc:8080/verify?x=1",
            "http://10.1.2.3",
            "http://[::1]:9000/auth",
            "https://auth.default.svc/verify",
            "HTTPS://auth/verify",
        ] {
            assert!(plugin(&settings(uri)).is_ok(), "{uri}");
        }
        // The URL rules themselves are `fetch`'s; errors name the field.
        for (uri, why) in [
            ("ftp://auth/verify", "not supported"),
            ("auth:8080", "must start with http://"),
            ("http://user:pw@auth/verify", "user information"),
            ("http://auth/verify#frag", "fragment"),
            ("", "not a valid URI"),
        ] {
            let e = plugin(&settings(uri)).unwrap_err();
            assert_eq!(e.field, "forwardAuth.uri", "{uri}");
            assert!(e.message.contains(why), "{uri}: {}", e.message);
        }
    }

    #[test]
    fn a_ca_secret_is_checked_and_only_for_https() {
        let mut c = settings("https://auth.test/verify");
        c.ca_secret_ref = Some(crate::api::LocalObjectRef { name: "ca".into() });
        let e = plugin(&c).unwrap_err();
        assert_eq!(e.field, "forwardAuth.caSecretRef");
        assert!(e.message.contains("no ca.crt"), "{}", e.message);
        let e = plugin_with(&c, Some(b"garbage")).unwrap_err();
        assert!(e.message.contains("no usable certificate"), "{}", e.message);
        let ca = rcgen::generate_simple_self_signed(vec!["auth.test".into()]).unwrap();
        let pem = ca.cert.pem();
        assert!(plugin_with(&c, Some(pem.as_bytes())).is_ok());
        c.uri = "http://auth.test/verify".into();
        let e = plugin_with(&c, Some(pem.as_bytes())).unwrap_err();
        assert_eq!(e.field, "forwardAuth.caSecretRef");
        assert!(
            e.message.contains("only applies to an https"),
            "{}",
            e.message
        );
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
        // Listed, an HTTP/2 client's separate cookies go as one field.
        let mut listed = c.clone();
        listed.request_headers = vec!["Cookie".into()];
        h.append("cookie", HeaderValue::from_static("theme=dark"));
        let with_cookies = concrete(&listed).call_headers(&ctx(&h, None)).unwrap(); // ok: test code
        let cookies: Vec<_> = with_cookies.get_all("cookie").iter().collect();
        assert_eq!(cookies, ["secret=1; theme=dark"]);
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
