//! Templates of cache keys and bypass conditions: text with nginx-style
//! variables (`$host$request_uri`, `$http_x_no_cache`), the spelling
//! users of nginx's `proxy_cache_key` and APISIX's `cache_key` already
//! write. Parsed once per table; rendering appends to a buffer without
//! allocating per part.

use http::{HeaderMap, HeaderName, header};

/// One parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Box<[Part]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(Box<str>),
    /// The request's host, lower case, without port.
    Host,
    /// Path and query.
    RequestUri,
    /// Path only.
    Uri,
    /// Query only (without `?`).
    Args,
    Scheme,
    Header(HeaderName),
    Arg(Box<str>),
    Cookie(Box<str>),
}

/// What a template can read of a request.
pub struct Vars<'a> {
    pub host: &'a str,
    /// The normalized path.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub tls: bool,
    pub headers: &'a HeaderMap,
}

impl Template {
    /// Parses `text`; unknown variables are refused, so that a typo is an
    /// error at configuration time rather than a key that never varies.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(i) = rest.find('$') {
            literal.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if len == 0 {
                literal.push('$');
                rest = after;
                continue;
            }
            let name = &after[..len];
            let part = variable(name)?;
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal).into()));
            }
            parts.push(part);
            rest = &after[len..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal.into()));
        }
        Ok(Template {
            parts: parts.into_boxed_slice(),
        })
    }

    /// Appends the template's value for a request to `out`.
    pub fn render(&self, vars: &Vars<'_>, out: &mut Vec<u8>) {
        for part in self.parts.iter() {
            match part {
                Part::Text(t) => out.extend_from_slice(t.as_bytes()),
                Part::Host => out.extend_from_slice(vars.host.as_bytes()),
                Part::RequestUri => {
                    out.extend_from_slice(vars.path.as_bytes());
                    if let Some(q) = vars.query {
                        out.push(b'?');
                        out.extend_from_slice(q.as_bytes());
                    }
                }
                Part::Uri => out.extend_from_slice(vars.path.as_bytes()),
                Part::Args => out.extend_from_slice(vars.query.unwrap_or("").as_bytes()),
                Part::Scheme => {
                    out.extend_from_slice(if vars.tls { b"https" } else { b"http" });
                }
                Part::Header(name) => {
                    let mut first = true;
                    for v in vars.headers.get_all(name) {
                        if !first {
                            out.extend_from_slice(b", ");
                        }
                        first = false;
                        out.extend_from_slice(v.as_bytes());
                    }
                }
                Part::Arg(name) => {
                    if let Some(v) = query_value(vars.query, name) {
                        out.extend_from_slice(v.as_bytes());
                    }
                }
                Part::Cookie(name) => {
                    if let Some(v) = cookie_value(vars.headers, name) {
                        out.extend_from_slice(v);
                    }
                }
            }
        }
    }

    /// Whether the template is set for a request: its value is neither
    /// empty nor `0` (nginx's rule for `proxy_cache_bypass`).
    pub fn is_set(&self, vars: &Vars<'_>, scratch: &mut Vec<u8>) -> bool {
        scratch.clear();
        self.render(vars, scratch);
        !(scratch.is_empty() || scratch.as_slice() == b"0")
    }
}

fn variable(name: &str) -> Result<Part, String> {
    Ok(match name {
        "host" => Part::Host,
        "request_uri" => Part::RequestUri,
        "uri" => Part::Uri,
        "args" | "query_string" => Part::Args,
        "scheme" => Part::Scheme,
        _ => {
            if let Some(h) = name.strip_prefix("http_").filter(|h| !h.is_empty()) {
                let h = h.replace('_', "-").to_ascii_lowercase();
                let name =
                    HeaderName::try_from(h).map_err(|_| format!("${name}: not a header name"))?;
                Part::Header(name)
            } else if let Some(a) = name.strip_prefix("arg_").filter(|a| !a.is_empty()) {
                Part::Arg(a.into())
            } else if let Some(c) = name.strip_prefix("cookie_").filter(|c| !c.is_empty()) {
                Part::Cookie(c.into())
            } else {
                return Err(format!(
                    "unknown variable ${name} (known: $host, $request_uri, $uri, $args, $scheme, $http_NAME, $arg_NAME, $cookie_NAME)"
                ));
            }
        }
    })
}

/// The raw value of query parameter `name`.
fn query_value<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// The value of cookie `name` in the request's `Cookie` fields.
fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &str, query: Option<&str>, headers: &[(&str, &str)]) -> String {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let vars = Vars {
            host: "shop.test",
            path: "/a/b",
            query,
            tls: true,
            headers: &h,
        };
        let mut out = Vec::new();
        Template::parse(t).unwrap().render(&vars, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn variables_and_text() {
        assert_eq!(
            render("$host$request_uri", Some("x=1"), &[]),
            "shop.test/a/b?x=1"
        );
        assert_eq!(
            render("$scheme://$host$uri", Some("x=1"), &[]),
            "https://shop.test/a/b"
        );
        assert_eq!(render("v2:$args", Some("x=1&y=2"), &[]), "v2:x=1&y=2");
        assert_eq!(render("$arg_y|$arg_z", Some("x=1&y=2"), &[]), "2|");
        assert_eq!(
            render("$http_accept_language", None, &[("accept-language", "de")]),
            "de"
        );
        assert_eq!(
            render(
                "$cookie_ab",
                None,
                &[("cookie", "a=1; ab=two"), ("cookie", "c=3")]
            ),
            "two"
        );
        assert_eq!(render("cost: 5$", None, &[]), "cost: 5$");
    }

    #[test]
    fn unknown_variables_are_refused() {
        let e = Template::parse("$host$requesturi").unwrap_err();
        assert!(e.contains("$requesturi"), "{e}");
        assert!(Template::parse("$http_").is_err());
    }

    #[test]
    fn set_means_neither_empty_nor_zero() {
        let t = Template::parse("$http_x_no_cache").unwrap();
        let mut scratch = Vec::new();
        for (value, set) in [
            (None, false),
            (Some("0"), false),
            (Some(""), false),
            (Some("1"), true),
        ] {
            let mut h = HeaderMap::new();
            if let Some(v) = value {
                h.insert("x-no-cache", v.parse().unwrap());
            }
            let vars = Vars {
                host: "h",
                path: "/",
                query: None,
                tls: false,
                headers: &h,
            };
            assert_eq!(t.is_set(&vars, &mut scratch), set, "{value:?}");
        }
    }
}
