//! The CRD schemas' bounds, applied to manifests read without an API server.
//!
//! In a cluster the API server validates an ApiRoute or PluginConfig
//! against the structural schema of its CRD before the controller ever sees
//! it. `sluicegate check` reads manifests without one; so that it refuses
//! what `kubectl apply` would refuse, this module checks a document against
//! the same schema (the one `crate::api::crds` generates, which is what
//! `crds/` holds): lengths, item and property counts, numeric ranges,
//! patterns, enumerations, and the uniqueness that
//! `x-kubernetes-list-type: set` and `map` demand. (Standalone mode does
//! not apply it: there the translator judges each value, so that one
//! object's bad value costs only that object.)
//!
//! Types and required fields are left to serde, which reports them with the
//! field's path when the document is deserialized into the Rust types;
//! the CEL rules (`x-kubernetes-validations`) are checked again by the
//! translator with the same meaning. No general JSON Schema crate is used
//! because only this structural subset is needed and its error messages
//! must name fields the way the rest of Sluicegate does.

use std::collections::HashMap;
use std::sync::OnceLock;

use regex::Regex;
use serde_json::Value;

/// The schemas of the two kinds, with their patterns compiled once.
struct Schemas {
    api_route: Value,
    plugin_config: Value,
    patterns: HashMap<String, Regex>,
}

fn schemas() -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let mut api_route = Value::Null;
        let mut plugin_config = Value::Null;
        for crd in crate::api::crds() {
            let schema = crd
                .spec
                .versions
                .first()
                .and_then(|v| v.schema.as_ref())
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .and_then(|s| serde_json::to_value(s).ok())
                .unwrap_or(Value::Null);
            match crd.spec.names.kind.as_str() {
                "ApiRoute" => api_route = schema,
                "PluginConfig" => plugin_config = schema,
                _ => {}
            }
        }
        let mut patterns = HashMap::new();
        collect_patterns(&api_route, &mut patterns);
        collect_patterns(&plugin_config, &mut patterns);
        Schemas {
            api_route,
            plugin_config,
            patterns,
        }
    })
}

fn collect_patterns(schema: &Value, out: &mut HashMap<String, Regex>) {
    match schema {
        Value::Object(map) => {
            if let Some(p) = map.get("pattern").and_then(Value::as_str) {
                // A pattern that does not compile is not checked; the
                // crate's tests compile every one of them.
                if let Ok(re) = Regex::new(p) {
                    out.insert(p.to_owned(), re);
                }
            }
            map.values().for_each(|v| collect_patterns(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_patterns(v, out)),
        _ => {}
    }
}

/// A value outside its schema's bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Dotted path, e.g. `spec.routes[0].backends`.
    pub field: String,
    pub message: String,
}

/// Checks a document of kind `kind` (ApiRoute or PluginConfig) against its
/// CRD's schema; other kinds have nothing to check. Every violation is
/// returned, in document order.
pub fn validate(kind: &str, doc: &Value) -> Vec<Violation> {
    let s = schemas();
    let schema = match kind {
        "ApiRoute" => &s.api_route,
        "PluginConfig" => &s.plugin_config,
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    let mut path = String::new();
    // metadata is the API server's own business (and not in the schema).
    if let (Some(props), Some(obj)) = (
        schema.get("properties").and_then(Value::as_object),
        doc.as_object(),
    ) {
        for (key, value) in obj {
            if let Some(sub) = props.get(key) {
                path.clear();
                path.push_str(key);
                check(s, sub, value, &mut path, &mut out);
            }
        }
    }
    out
}

fn check(s: &Schemas, schema: &Value, value: &Value, path: &mut String, out: &mut Vec<Violation>) {
    let mut report = |message: String| {
        out.push(Violation {
            field: path.clone(),
            message,
        })
    };
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !value.is_null()
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        report(format!("{value} is not one of {}", list.join(", ")));
    }
    match value {
        Value::String(text) => {
            let chars = text.chars().count();
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && chars as u64 > max
            {
                report(format!(
                    "must be at most {max} characters long (is {chars})"
                ));
            }
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && (chars as u64) < min
            {
                report(format!("must be at least {min} characters long"));
            }
            if let Some(p) = schema.get("pattern").and_then(Value::as_str)
                && let Some(re) = s.patterns.get(p)
                && !re.is_match(text)
            {
                report(format!("{text:?} does not match {p}"));
            }
        }
        Value::Number(n) => {
            if let (Some(v), Some(max)) =
                (n.as_f64(), schema.get("maximum").and_then(Value::as_f64))
                && v > max
            {
                report(format!("must be at most {max} (is {n})"));
            }
            if let (Some(v), Some(min)) =
                (n.as_f64(), schema.get("minimum").and_then(Value::as_f64))
                && v < min
            {
                report(format!("must be at least {min} (is {n})"));
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                report(format!(
                    "must have at most {max} items (has {})",
                    items.len()
                ));
            }
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                report(format!("must have at least {min} item(s)"));
            }
            match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
                Some("set") => {
                    for (i, item) in items.iter().enumerate() {
                        if items[..i].contains(item) {
                            report(format!("[{i}]: duplicate value {item}"));
                        }
                    }
                }
                Some("map") => {
                    let keys: Vec<&str> = schema
                        .get("x-kubernetes-list-map-keys")
                        .and_then(Value::as_array)
                        .map(|k| k.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    let key_of = |item: &Value| -> Vec<Value> {
                        keys.iter()
                            .map(|k| item.get(*k).cloned().unwrap_or(Value::Null))
                            .collect()
                    };
                    for (i, item) in items.iter().enumerate() {
                        let key = key_of(item);
                        if items[..i].iter().any(|earlier| key_of(earlier) == key) {
                            let shown: Vec<String> = keys
                                .iter()
                                .zip(&key)
                                .map(|(k, v)| format!("{k} {v}"))
                                .collect();
                            report(format!(
                                "[{i}]: duplicate entry: {} is used by an earlier one",
                                shown.join(", ")
                            ));
                        }
                    }
                }
                _ => {}
            }
            if let Some(item_schema) = schema.get("items") {
                let len = path.len();
                for (i, item) in items.iter().enumerate() {
                    use std::fmt::Write as _;
                    let _ = write!(path, "[{i}]");
                    check(s, item_schema, item, path, out);
                    path.truncate(len);
                }
            }
        }
        Value::Object(map) => {
            if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
                && map.len() as u64 > max
            {
                report(format!(
                    "must have at most {max} entries (has {})",
                    map.len()
                ));
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties").filter(|v| v.is_object());
            let len = path.len();
            for (key, sub_value) in map {
                let Some(sub) = props.and_then(|p| p.get(key)).or(extra) else {
                    continue;
                };
                path.push('.');
                path.push_str(key);
                check(s, sub, sub_value, path, out);
                path.truncate(len);
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(spec: Value) -> Value {
        serde_json::json!({
            "apiVersion": "sluicegate.io/v1alpha1",
            "kind": "ApiRoute",
            "metadata": {"name": "x"},
            "spec": spec,
        })
    }

    #[test]
    fn every_pattern_of_the_schemas_compiles() {
        let mut all = HashMap::new();
        let mut count = 0;
        fn walk(v: &Value, n: &mut usize, all: &mut HashMap<String, Regex>) {
            match v {
                Value::Object(m) => {
                    if let Some(p) = m.get("pattern").and_then(Value::as_str) {
                        *n += 1;
                        Regex::new(p).unwrap_or_else(|e| panic!("{p}: {e}"));
                        all.insert(p.to_owned(), Regex::new(p).unwrap());
                    }
                    m.values().for_each(|x| walk(x, n, all));
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, n, all)),
                _ => {}
            }
        }
        walk(&schemas().api_route, &mut count, &mut all);
        assert!(count > 3, "{count} patterns");
        assert_eq!(all.len(), schemas().patterns.len());
    }

    #[test]
    fn a_valid_route_has_no_violation() {
        let doc = route(serde_json::json!({
            "hosts": ["shop.example.com"],
            "routes": [{"name": "a", "backends": [{"serviceName": "s", "servicePort": 80}]}],
        }));
        assert_eq!(validate("ApiRoute", &doc), []);
    }

    #[test]
    fn bounds_patterns_and_uniqueness_are_reported_with_their_field() {
        let long = "a".repeat(64);
        let doc = route(serde_json::json!({
            "hosts": ["shop.example.com", "bad host", "shop.example.com"],
            "routes": [
                {"name": long, "backends": [{"serviceName": "s", "servicePort": 80, "weight": 2_000_000}]},
                {"name": "b", "backends": [], "redirect": {"scheme": "https", "code": 303}},
                {"name": "b", "backends": [{"serviceName": "s", "servicePort": "a-very-long-port-name"}]},
            ],
        }));
        let found: Vec<String> = validate("ApiRoute", &doc)
            .into_iter()
            .map(|v| format!("{}: {}", v.field, v.message))
            .collect();
        let text = found.join("\n");
        for expected in [
            "spec.hosts: [2]: duplicate value \"shop.example.com\"",
            "spec.hosts[1]: \"bad host\" does not match",
            "spec.routes: [2]: duplicate entry: name \"b\"",
            "spec.routes[0].name: must be at most 63 characters long (is 64)",
            "spec.routes[0].backends[0].weight: must be at most 1000000 (is 2000000)",
            "spec.routes[1].redirect.code: 303 is not one of 301, 302, 307, 308",
            "spec.routes[2].backends[0].servicePort: must be at most 15 characters long (is 21)",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        // Empty backends are a translation error, not a schema one: a
        // route with aiProxy has none (the CRD's rule says so in CEL).
        assert!(!text.contains("spec.routes[1].backends"), "{text}");
        assert_eq!(found.len(), 7, "{text}");
    }

    #[test]
    fn maps_count_their_entries_and_bound_their_values() {
        let headers: serde_json::Map<String, Value> = (0..65)
            .map(|i| (format!("h{i}"), Value::String("v".into())))
            .collect();
        let doc = serde_json::json!({
            "spec": {"plugins": {
                "mocking": {"headers": headers},
                "proxyRewrite": {"headers": {"set": {"x": "y".repeat(4097)}}},
            }}
        });
        let found: Vec<String> = validate("PluginConfig", &doc)
            .into_iter()
            .map(|v| format!("{}: {}", v.field, v.message))
            .collect();
        assert_eq!(
            found,
            [
                "spec.plugins.mocking.headers: must have at most 64 entries (has 65)",
                "spec.plugins.proxyRewrite.headers.set.x: must be at most 4096 characters long (is 4097)",
            ],
        );
    }

    #[test]
    fn other_kinds_and_wrong_types_are_left_alone() {
        assert_eq!(
            validate("Service", &serde_json::json!({"spec": {"x": 1}})),
            []
        );
        // A string where a number belongs is serde's to report.
        let doc = route(serde_json::json!({"routes": "nope"}));
        assert_eq!(validate("ApiRoute", &doc), []);
    }
}
