//! `RequestHeaderModifier` and `ResponseHeaderModifier`.
//!
//! `set` replaces every value of a header, `add` appends to the values the
//! header already has (all of them joined with `,` into one field, as the
//! Gateway API's conformance tests expect), `remove` drops the header.
//! Names compare case-insensitively. Headers the gateway writes itself
//! (framing, hop-by-hop, `X-Forwarded-*`) cannot be configured: an edit
//! would be silently undone or corrupt the message.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::MODIFY;
use crate::api::gateway_api::HttpHeaderFilter;
use crate::plugins::transform::respond::{
    GATEWAY_REQUEST_HEADERS, GATEWAY_RESPONSE_HEADERS, header_name, header_value,
};
use crate::plugins::{ConfigError, Outcome, Plugin, RequestCtx, ResponseCtx, ResponseParts};

/// The parsed edits of one modifier.
#[derive(Debug)]
struct Edits {
    config: HttpHeaderFilter,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl Edits {
    fn parse(c: &HttpHeaderFilter, field: &str, reserved: &[&str]) -> Result<Self, ConfigError> {
        let pairs = |list: &[crate::api::gateway_api::HttpHeader], what: &str| {
            list.iter()
                .enumerate()
                .map(|(i, h)| {
                    let f = format!("{field}.{what}[{i}]");
                    Ok((
                        header_name(&h.name, &format!("{f}.name"), reserved)?,
                        header_value(&h.value, &format!("{f}.value"))?,
                    ))
                })
                .collect::<Result<Vec<_>, ConfigError>>()
        };
        let remove = c
            .remove
            .iter()
            .enumerate()
            .map(|(i, n)| header_name(n, &format!("{field}.remove[{i}]"), reserved))
            .collect::<Result<_, _>>()?;
        Ok(Edits {
            config: c.clone(),
            set: pairs(&c.set, "set")?,
            add: pairs(&c.add, "add")?,
            remove,
        })
    }

    /// The value `name` gets when `value` is added to those in `headers`.
    fn appended(headers: &HeaderMap, name: &HeaderName, value: &HeaderValue) -> HeaderValue {
        let mut existing = headers.get_all(name).iter().peekable();
        if existing.peek().is_none() {
            return value.clone();
        }
        let mut joined = Vec::new();
        for v in existing {
            joined.extend_from_slice(v.as_bytes());
            joined.push(b',');
        }
        joined.extend_from_slice(value.as_bytes());
        // Valid values joined by a comma are a valid value.
        HeaderValue::from_bytes(&joined).unwrap_or_else(|_| value.clone())
    }
}

/// `RequestHeaderModifier`: edits the request the upstream gets.
#[derive(Debug)]
pub struct RequestHeaders(Edits);

impl RequestHeaders {
    /// `field` names the filter, e.g. `spec.rules[0].filters[1].requestHeaderModifier`.
    pub fn build(c: &HttpHeaderFilter, field: &str) -> Result<Arc<dyn Plugin>, ConfigError> {
        Ok(Arc::new(RequestHeaders(Edits::parse(
            c,
            field,
            &GATEWAY_REQUEST_HEADERS,
        )?)))
    }
}

impl Plugin for RequestHeaders {
    fn name(&self) -> &'static str {
        "requestHeaderModifier"
    }

    fn priority(&self) -> i32 {
        MODIFY
    }

    fn request<'s>(&'s self, ctx: &mut RequestCtx<'_>) -> Outcome<'s> {
        let e = &self.0;
        for (name, value) in &e.set {
            ctx.upstream_headers
                .push((name.clone(), Some(value.clone())));
        }
        for (name, value) in &e.add {
            let v = Edits::appended(ctx.headers, name, value);
            ctx.upstream_headers.push((name.clone(), Some(v)));
        }
        for name in &e.remove {
            ctx.upstream_headers.push((name.clone(), None));
        }
        Outcome::Continue
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.0.config).unwrap_or_default()
    }
}

/// `ResponseHeaderModifier`: edits the response the client gets.
#[derive(Debug)]
pub struct ResponseHeaders(Edits);

impl ResponseHeaders {
    pub fn build(c: &HttpHeaderFilter, field: &str) -> Result<Arc<dyn Plugin>, ConfigError> {
        Ok(Arc::new(ResponseHeaders(Edits::parse(
            c,
            field,
            &GATEWAY_RESPONSE_HEADERS,
        )?)))
    }
}

impl Plugin for ResponseHeaders {
    fn name(&self) -> &'static str {
        "responseHeaderModifier"
    }

    fn priority(&self) -> i32 {
        MODIFY
    }

    fn request<'s>(&'s self, _ctx: &mut RequestCtx<'_>) -> Outcome<'s> {
        Outcome::Continue
    }

    fn has_response_phase(&self) -> bool {
        true
    }

    fn response(&self, _ctx: &ResponseCtx<'_>, response: &mut ResponseParts) {
        let e = &self.0;
        for (name, value) in &e.set {
            response.headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &e.add {
            let v = Edits::appended(&response.headers, name, value);
            response.headers.insert(name.clone(), v);
        }
        for name in &e.remove {
            response.headers.remove(name);
        }
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.0.config).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::gateway_api::HttpHeader;

    fn header(name: &str, value: &str) -> HttpHeader {
        HttpHeader {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn add_joins_existing_values() {
        let mut h = HeaderMap::new();
        let name = HeaderName::from_static("x-a");
        let v = HeaderValue::from_static("new");
        assert_eq!(Edits::appended(&h, &name, &v), "new");
        h.append("x-a", HeaderValue::from_static("one"));
        h.append("x-a", HeaderValue::from_static("two"));
        assert_eq!(Edits::appended(&h, &name, &v), "one,two,new");
    }

    #[test]
    fn reserved_and_invalid_headers_are_refused_with_their_field() {
        let c = HttpHeaderFilter {
            set: vec![header("Content-Length", "1")],
            ..HttpHeaderFilter::default()
        };
        let e = RequestHeaders::build(&c, "f").unwrap_err();
        assert_eq!(e.field, "f.set[0].name");
        let c = HttpHeaderFilter {
            add: vec![header("x-ok", "bad\nvalue")],
            ..HttpHeaderFilter::default()
        };
        assert_eq!(
            ResponseHeaders::build(&c, "f").unwrap_err().field,
            "f.add[0].value"
        );
        let c = HttpHeaderFilter {
            remove: vec!["bad name".into()],
            ..HttpHeaderFilter::default()
        };
        assert_eq!(
            RequestHeaders::build(&c, "f").unwrap_err().field,
            "f.remove[0]"
        );
    }
}
