//! What a limiter counts by: the text of a request's key.

use http::HeaderName;

use crate::api::{KeyType, RateLimitKey};
use crate::plugins::{ConfigError, RequestCtx};

/// A compiled key.
#[derive(Debug, Clone)]
pub enum KeySource {
    RemoteAddress,
    Header(HeaderName),
    /// The consumer, or the client address when no plugin set one.
    Consumer,
    Template(Vec<Part>),
    Constant,
}

/// A piece of a template key.
#[derive(Debug, Clone)]
pub enum Part {
    Text(String),
    RemoteAddress,
    Host,
    Path,
    Route,
    Consumer,
    Header(HeaderName),
    Query(String),
}

impl KeySource {
    pub fn new(key: &RateLimitKey, plugin: &str) -> Result<KeySource, ConfigError> {
        let field = format!("{plugin}.key");
        Ok(match key.kind {
            KeyType::RemoteAddress => KeySource::RemoteAddress,
            KeyType::Consumer => KeySource::Consumer,
            KeyType::Constant => KeySource::Constant,
            KeyType::Header => {
                let name = key.name.as_deref().ok_or_else(|| {
                    ConfigError::new(format!("{field}.name"), "a Header key needs name")
                })?;
                KeySource::Header(header_name(name, &format!("{field}.name"))?)
            }
            KeyType::Template => {
                let t = key.template.as_deref().ok_or_else(|| {
                    ConfigError::new(format!("{field}.template"), "a Template key needs template")
                })?;
                KeySource::Template(parse_template(t, &format!("{field}.template"))?)
            }
        })
    }

    /// The key text of a request; `buf` holds it when it has to be built.
    pub fn bytes<'b>(&self, ctx: &'b RequestCtx<'_>, buf: &'b mut Vec<u8>) -> &'b [u8] {
        match self {
            KeySource::RemoteAddress => ctx.client_ip,
            KeySource::Header(name) => ctx.headers.get(name).map_or(&[][..], |v| v.as_bytes()),
            KeySource::Consumer => match &ctx.consumer {
                Some(c) => c.as_bytes(),
                None => ctx.client_ip,
            },
            KeySource::Constant => b"",
            KeySource::Template(parts) => {
                buf.clear();
                for part in parts {
                    match part {
                        Part::Text(t) => buf.extend_from_slice(t.as_bytes()),
                        Part::RemoteAddress => buf.extend_from_slice(ctx.client_ip),
                        Part::Host => buf.extend_from_slice(ctx.host.as_bytes()),
                        Part::Path => buf.extend_from_slice(ctx.path.as_bytes()),
                        Part::Route => buf.extend_from_slice(ctx.route.as_bytes()),
                        Part::Consumer => {
                            if let Some(c) = &ctx.consumer {
                                buf.extend_from_slice(c.as_bytes());
                            }
                        }
                        Part::Header(name) => {
                            if let Some(v) = ctx.headers.get(name) {
                                buf.extend_from_slice(v.as_bytes());
                            }
                        }
                        Part::Query(name) => {
                            if let Some(v) = query_value(ctx.query, name) {
                                buf.extend_from_slice(v.as_bytes());
                            }
                        }
                    }
                    // A separator no header or path holds, so that `{a}{b}`
                    // with values "x","yz" and "xy","z" stay distinct.
                    buf.push(0);
                }
                buf
            }
        }
    }
}

fn header_name(name: &str, field: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| ConfigError::new(field, format!("{name:?} is not a valid header name")))
}

/// The raw value of query parameter `name`, if present.
fn query_value<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find_map(|(k, v)| (k == name).then_some(v))
}

/// Parses `text{var}text...`; `{{` and `}}` stand for braces.
fn parse_template(t: &str, field: &str) -> Result<Vec<Part>, ConfigError> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '{' => {
                let var: String = chars.by_ref().take_while(|&c| c != '}').collect();
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(variable(&var, field)?);
            }
            '}' => {
                return Err(ConfigError::new(
                    field,
                    "unmatched '}' (write '}}' for a brace)",
                ));
            }
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    Ok(parts)
}

fn variable(var: &str, field: &str) -> Result<Part, ConfigError> {
    Ok(match var {
        "remote_addr" => Part::RemoteAddress,
        "host" => Part::Host,
        "path" => Part::Path,
        "route" => Part::Route,
        "consumer" => Part::Consumer,
        _ => {
            if let Some(h) = var.strip_prefix("header.") {
                Part::Header(header_name(h, field)?)
            } else if let Some(q) = var.strip_prefix("query.").filter(|q| !q.is_empty()) {
                Part::Query(q.to_owned())
            } else {
                return Err(ConfigError::new(
                    field,
                    format!(
                        "unknown variable {{{var}}}; use remote_addr, host, path, route, consumer, header.NAME or query.NAME"
                    ),
                ));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn ctx<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> RequestCtx<'a> {
        RequestCtx {
            client_ip: b"10.0.0.1",
            tls: false,
            port: 80,
            host: "shop.test",
            path: "/cart",
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
            method: &http::Method::GET,
        }
    }

    fn key(
        kind: KeyType,
        name: Option<&str>,
        template: Option<&str>,
    ) -> Result<KeySource, ConfigError> {
        KeySource::new(
            &RateLimitKey {
                kind,
                name: name.map(str::to_owned),
                template: template.map(str::to_owned),
            },
            "limitCount",
        )
    }

    #[test]
    fn keys_read_the_request() {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "k1".parse().unwrap());
        let c = ctx(&h, Some("a=1&tenant=blue"));
        let mut buf = Vec::new();
        let k = key(KeyType::RemoteAddress, None, None).unwrap();
        assert_eq!(k.bytes(&c, &mut buf), b"10.0.0.1");
        let k = key(KeyType::Header, Some("X-Api-Key"), None).unwrap();
        assert_eq!(k.bytes(&c, &mut buf), b"k1");
        let k = key(KeyType::Consumer, None, None).unwrap();
        assert_eq!(
            k.bytes(&c, &mut buf),
            b"10.0.0.1",
            "no consumer: the address"
        );
        let k = key(
            KeyType::Template,
            None,
            Some("{host}{path}/{query.tenant}/{header.x-api-key}"),
        )
        .unwrap();
        assert_eq!(k.bytes(&c, &mut buf), b"shop.test\0/cart\0/\0blue\0/\0k1\0");
    }

    #[test]
    fn bad_templates_name_the_field() {
        let e = key(KeyType::Template, None, Some("{nope}")).unwrap_err();
        assert_eq!(e.field, "limitCount.key.template");
        assert!(e.message.contains("unknown variable {nope}"));
        assert!(key(KeyType::Template, None, Some("a}b")).is_err());
        assert!(key(KeyType::Header, Some("bad header"), None).is_err());
        assert!(key(KeyType::Header, None, None).is_err());
        let k = key(KeyType::Template, None, Some("{{literal}}")).unwrap();
        assert!(
            matches!(&k, KeySource::Template(p) if matches!(&p[..], [Part::Text(t)] if t == "{literal}"))
        );
    }
}
