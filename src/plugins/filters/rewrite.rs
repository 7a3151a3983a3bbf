//! `URLRewrite`: a new `Host` and path for the upstream request, and the
//! path arithmetic it shares with `RequestRedirect`.

use std::sync::Arc;

use http::HeaderValue;

use super::MODIFY;
use crate::api::gateway_api::{HttpPathModifier, HttpUrlRewriteFilter};
use crate::plugins::transform::respond::header_value;
use crate::plugins::{ConfigError, Outcome, Plugin, RequestCtx};

/// How a filter changes the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathChange {
    /// `ReplaceFullPath`.
    Full(String),
    /// `ReplacePrefixMatch`: the prefix the route's match used, and what
    /// replaces it.
    Prefix {
        matched: String,
        replacement: String,
    },
}

impl PathChange {
    /// Reads a path modifier for a route whose path match is the prefix
    /// `prefix` (`None` for any other kind of match, with which
    /// `ReplacePrefixMatch` cannot be used).
    pub fn parse(
        m: &HttpPathModifier,
        prefix: Option<&str>,
        field: &str,
    ) -> Result<PathChange, ConfigError> {
        let absolute = |p: &str, f: &str| {
            if p.starts_with('/') {
                header_value(p, f).map(|_| p.to_owned())
            } else {
                Err(ConfigError::new(f, format!("{p:?} must start with '/'")))
            }
        };
        match m.kind.as_str() {
            "ReplaceFullPath" => {
                let f = format!("{field}.replaceFullPath");
                let p = m
                    .replace_full_path
                    .as_deref()
                    .ok_or_else(|| ConfigError::new(&f, "is required with ReplaceFullPath"))?;
                absolute(p, &f).map(PathChange::Full)
            }
            "ReplacePrefixMatch" => {
                let f = format!("{field}.replacePrefixMatch");
                let p = m
                    .replace_prefix_match
                    .as_deref()
                    .ok_or_else(|| ConfigError::new(&f, "is required with ReplacePrefixMatch"))?;
                let replacement = absolute(p, &f)?;
                let matched = prefix.ok_or_else(|| {
                    ConfigError::new(
                        &f,
                        "ReplacePrefixMatch needs every match of the rule to be a PathPrefix match",
                    )
                })?;
                Ok(PathChange::Prefix {
                    matched: matched.to_owned(),
                    replacement,
                })
            }
            other => Err(ConfigError::new(
                format!("{field}.type"),
                format!(
                    "unsupported path modifier {other:?}: use ReplaceFullPath or ReplacePrefixMatch"
                ),
            )),
        }
    }

    /// The new path for `path`.
    pub fn apply(&self, path: &str) -> String {
        match self {
            PathChange::Full(p) => p.clone(),
            PathChange::Prefix {
                matched,
                replacement,
            } => replace_prefix(path, matched, replacement),
        }
    }
}

/// Replaces the element-wise prefix `matched` of `path` with
/// `replacement`. Trailing slashes of both are ignored, as in matching; the
/// rest of the path keeps its own, and an empty result is `/`:
/// `/foo` + `/foo/bar` + `/xyz` gives `/xyz/bar`, `/foo/` + `/foo` + `/`
/// gives `/`.
pub fn replace_prefix(path: &str, matched: &str, replacement: &str) -> String {
    let matched = matched.trim_end_matches('/');
    // The router matched element-wise, so the path starts with the prefix
    // followed by `/` or nothing; anything else is left as it is.
    let rest = match path.strip_prefix(matched) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        _ => return path.to_owned(),
    };
    let mut out = replacement.trim_end_matches('/').to_owned();
    out.push_str(rest);
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// `URLRewrite`.
#[derive(Debug)]
pub struct UrlRewrite {
    config: HttpUrlRewriteFilter,
    hostname: Option<HeaderValue>,
    path: Option<PathChange>,
}

impl UrlRewrite {
    /// `prefix` is the route's path prefix, when its match is one.
    pub fn build(
        c: &HttpUrlRewriteFilter,
        prefix: Option<&str>,
        field: &str,
    ) -> Result<Arc<dyn Plugin>, ConfigError> {
        let hostname = c
            .hostname
            .as_deref()
            .map(|h| header_value(h, &format!("{field}.hostname")))
            .transpose()?;
        let path = c
            .path
            .as_ref()
            .map(|p| PathChange::parse(p, prefix, &format!("{field}.path")))
            .transpose()?;
        Ok(Arc::new(UrlRewrite {
            config: c.clone(),
            hostname,
            path,
        }))
    }
}

impl Plugin for UrlRewrite {
    fn name(&self) -> &'static str {
        "urlRewrite"
    }

    fn priority(&self) -> i32 {
        MODIFY
    }

    fn request<'s>(&'s self, ctx: &mut RequestCtx<'_>) -> Outcome<'s> {
        if let Some(h) = &self.hostname {
            ctx.rewrite_host = Some(h.clone());
        }
        if let Some(change) = &self.path {
            let mut target = change.apply(ctx.path);
            if let Some(q) = ctx.query {
                target.push('?');
                target.push_str(q);
            }
            ctx.rewrite_path = Some(target);
        }
        Outcome::Continue
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_replacement_follows_the_specification_table() {
        for (matched, path, replacement, want) in [
            ("/foo", "/foo/bar", "/xyz", "/xyz/bar"),
            ("/foo", "/foo/bar", "/xyz/", "/xyz/bar"),
            ("/foo/", "/foo/bar", "/xyz", "/xyz/bar"),
            ("/foo/", "/foo/bar", "/xyz/", "/xyz/bar"),
            ("/foo", "/foo", "/xyz", "/xyz"),
            ("/foo", "/foo/", "/xyz", "/xyz/"),
            ("/foo/", "/foo/", "/xyz/", "/xyz/"),
            ("/foo", "/foo/bar", "/", "/bar"),
            ("/foo", "/foo", "/", "/"),
            ("/", "/foo", "/xyz", "/xyz/foo"),
            ("/", "/", "/xyz", "/xyz/"),
        ] {
            assert_eq!(
                replace_prefix(path, matched, replacement),
                want,
                "{matched} {path} {replacement}"
            );
        }
    }

    #[test]
    fn prefix_replacement_needs_a_prefix_match() {
        let m = HttpPathModifier {
            kind: "ReplacePrefixMatch".into(),
            replace_full_path: None,
            replace_prefix_match: Some("/x".into()),
        };
        let e = PathChange::parse(&m, None, "f").unwrap_err();
        assert_eq!(e.field, "f.replacePrefixMatch");
        assert!(PathChange::parse(&m, Some("/a"), "f").is_ok());
        let m = HttpPathModifier {
            kind: "Other".into(),
            ..m
        };
        assert_eq!(
            PathChange::parse(&m, Some("/a"), "f").unwrap_err().field,
            "f.type"
        );
    }
}
