//! Query strings, label selectors and field selectors.
//!
//! Selector parsing follows the apimachinery grammar closely enough that a
//! selector the real server would reject is rejected here too (400), rather
//! than silently matching nothing.

use serde_json::Value;

use super::resources::ResourceType;
use super::status::ApiError;

/// Decoded query parameters, in order.
#[derive(Debug, Default, Clone)]
pub(super) struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(raw: &str) -> Query {
        Query(
            raw.split('&')
                .filter(|kv| !kv.is_empty())
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (percent_decode(k), percent_decode(v)),
                    None => (percent_decode(kv), String::new()),
                })
                .collect(),
        )
    }

    /// The first value of `name`; an empty value counts as absent, as in
    /// the real server's option decoding.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// A boolean parameter (`true`/`1`; anything else is false).
    pub fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some("true" | "1"))
    }
}

/// `application/x-www-form-urlencoded` decoding, as the proxy does it.
pub(super) fn percent_decode(s: &str) -> String {
    sluicegate::routing::form_decode(s).into_owned()
}

/// Splits at commas outside parentheses (`a in (x,y),b` is two terms).
fn split_terms(s: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&s[start..]);
    terms
}

#[derive(Debug, Clone)]
enum LabelOp {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

/// A parsed `labelSelector`: every requirement must hold (comma is AND).
#[derive(Debug, Clone, Default)]
pub(super) struct LabelSelector(Vec<(String, LabelOp)>);

impl LabelSelector {
    pub fn parse(s: Option<&str>) -> Result<LabelSelector, ApiError> {
        let Some(s) = s.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(LabelSelector::default());
        };
        let bad = |why: &str| {
            ApiError::bad_request(format!("unable to parse requirement: {why} in {s:?}"))
        };
        let mut reqs = Vec::new();
        for term in split_terms(s).into_iter().map(str::trim) {
            let (key, op) = if term.is_empty() {
                return Err(bad("empty requirement"));
            } else if let Some(key) = term.strip_prefix('!') {
                (key.trim(), LabelOp::NotExists)
            } else if let Some(open) = term.find('(') {
                let inner = term[open + 1..]
                    .strip_suffix(')')
                    .ok_or_else(|| bad("missing ')'"))?;
                let values: Vec<String> = inner
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .collect();
                let mut words = term[..open].split_whitespace();
                let (Some(key), Some(op), None) = (words.next(), words.next(), words.next()) else {
                    return Err(bad("expected '<key> in (...)' or '<key> notin (...)'"));
                };
                match op {
                    "in" => (key, LabelOp::In(values)),
                    "notin" => (key, LabelOp::NotIn(values)),
                    _ => return Err(bad("unknown set operator")),
                }
            } else if let Some((k, v)) = term.split_once("!=") {
                (k.trim(), LabelOp::NotEq(v.trim().to_string()))
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k.trim(), LabelOp::Eq(v.trim().to_string()))
            } else {
                (term, LabelOp::Exists)
            };
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(bad("invalid label key"));
            }
            reqs.push((key.to_string(), op));
        }
        Ok(LabelSelector(reqs))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        self.0.iter().all(|(key, op)| {
            let value = labels.and_then(|l| l.get(key)).and_then(Value::as_str);
            match op {
                LabelOp::Eq(v) => value == Some(v.as_str()),
                // As in apimachinery, `!=` and `notin` match objects
                // without the label.
                LabelOp::NotEq(v) => value != Some(v.as_str()),
                LabelOp::In(vs) => value.is_some_and(|x| vs.iter().any(|v| v == x)),
                LabelOp::NotIn(vs) => value.is_none_or(|x| vs.iter().all(|v| v != x)),
                LabelOp::Exists => value.is_some(),
                LabelOp::NotExists => value.is_none(),
            }
        })
    }
}

/// A parsed `fieldSelector`: `label=value`, `label==value`, `label!=value`.
#[derive(Debug, Clone, Default)]
pub(super) struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Rejects labels the resource does not index, as the real server does.
    pub fn parse(s: Option<&str>, res: &ResourceType) -> Result<FieldSelector, ApiError> {
        let Some(s) = s.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(FieldSelector::default());
        };
        let mut reqs = Vec::new();
        for term in s.split(',').map(str::trim) {
            let (label, equal, value) = if let Some((k, v)) = term.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                )));
            };
            let label = label.trim();
            if !res.supports_field(label) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {label}"
                )));
            }
            reqs.push((label.to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(label, equal, value)| {
            let actual = field_value(obj, label);
            (actual == *value) == *equal
        })
    }
}

/// A field's value as the server's field index sees it: a string, `""`
/// when absent.
fn field_value(obj: &Value, label: &str) -> String {
    let mut cur = obj;
    for part in label.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}
