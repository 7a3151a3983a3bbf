//! What the generated schemas need before a Kubernetes API server sees them.
//!
//! schemars writes JSON Schema for Rust types; a CRD's structural schema is
//! a dialect of it. Two things are rewritten after generation, for every
//! node of the schema:
//!
//! - `additionalProperties: false` (from `deny_unknown_fields`) is dropped:
//!   the API server refuses it in a structural schema, and prunes or (with
//!   `fieldValidation=Strict`, kubectl's default for server-side apply)
//!   rejects unknown fields anyway;
//! - `format`s the API server does not know are dropped. schemars names the
//!   width of Rust integers (`uint16`, `uint32`, `uint64`, `uint8`), which
//!   kube-apiserver answers with `Warning: unrecognized format` on every
//!   apply. The `minimum`/`maximum` that schemars writes beside them stay,
//!   so the bounds are still enforced.
//!
//! The status conditions get their schema here too ([`conditions`]): the
//! bounds Gateway API and `metav1.Condition` put on them, which the schema
//! of k8s-openapi's `Condition` does not carry.

use schemars::{Schema, SchemaGenerator, json_schema};
use serde_json::Value;

/// Formats kube-apiserver recognizes, by type: `int32`/`int64` for
/// integers, `float`/`double` for numbers, and for strings the list of
/// apiextensions-apiserver's `validation/formats.go` that every supported
/// Kubernetes version knows (compared without dashes, as it does).
fn known_format(ty: &str, format: &str) -> bool {
    match ty {
        "integer" => matches!(format, "int32" | "int64"),
        "number" => matches!(format, "float" | "double"),
        "string" | "" => matches!(
            format.replace('-', "").as_str(),
            "bsonobjectid"
                | "uri"
                | "email"
                | "hostname"
                | "ipv4"
                | "ipv6"
                | "cidr"
                | "mac"
                | "uuid"
                | "uuid3"
                | "uuid4"
                | "uuid5"
                | "isbn"
                | "isbn10"
                | "isbn13"
                | "creditcard"
                | "ssn"
                | "hexcolor"
                | "rgbcolor"
                | "byte"
                | "password"
                | "date"
                | "duration"
                | "datetime"
        ),
        _ => false,
    }
}

/// Rewrites a generated CRD (as JSON) for the API server; see the module
/// documentation.
pub fn for_kubernetes(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.get("additionalProperties") == Some(&Value::Bool(false)) {
                map.remove("additionalProperties");
            }
            let ty = map.get("type").and_then(Value::as_str).unwrap_or("");
            if let Some(format) = map.get("format").and_then(Value::as_str)
                && !known_format(ty, format)
            {
                map.remove("format");
            }
            map.values_mut().for_each(for_kubernetes);
        }
        Value::Array(items) => items.iter_mut().for_each(for_kubernetes),
        _ => {}
    }
}

/// Most conditions a status carries; Gateway API's limit. Sluicegate writes
/// three.
pub const MAX_CONDITIONS: u32 = 8;

/// Schema of `status.conditions`: a list of `metav1.Condition` keyed by
/// `type`, with the bounds Kubernetes documents for each field.
pub fn conditions(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "description": "The latest observations of the object's state, one per type: `Accepted`, `Programmed` (ApiRoute) and `Ready`, each with the generation it describes.",
        "maxItems": MAX_CONDITIONS,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "description": "One aspect of the object's state.",
            "required": ["type", "status", "lastTransitionTime", "reason", "message"],
            "properties": {
                "type": {
                    "type": "string",
                    "description": "The aspect: Accepted, Programmed or Ready.",
                    "maxLength": 316,
                    "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
                },
                "status": {
                    "type": "string",
                    "description": "True, False or Unknown.",
                    "enum": ["True", "False", "Unknown"]
                },
                "observedGeneration": {
                    "type": "integer",
                    "format": "int64",
                    "minimum": 0,
                    "description": "The metadata.generation the condition describes; older than the object's generation means the condition is stale."
                },
                "lastTransitionTime": {
                    "type": "string",
                    "format": "date-time",
                    "description": "When the status last changed."
                },
                "reason": {
                    "type": "string",
                    "description": "Why, in CamelCase: e.g. InvalidSpec, BackendNotFound, PluginConfigNotFound, Conflict.",
                    "minLength": 1,
                    "maxLength": 1024,
                    "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
                },
                "message": {
                    "type": "string",
                    "description": "What is wrong or what happened, naming the field at fault.",
                    "maxLength": 32768
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_formats_are_dropped_and_bounds_kept() {
        let mut v = serde_json::json!({
            "properties": {
                "a": {"type": "integer", "format": "uint32", "minimum": 0, "maximum": 10},
                "b": {"type": "integer", "format": "int64"},
                "c": {"type": "number", "format": "double"},
                "d": {"type": "string", "format": "date-time"},
                "e": {"type": "number", "format": "uint8"},
                "f": {"type": "object", "additionalProperties": false},
            }
        });
        for_kubernetes(&mut v);
        let p = &v["properties"];
        assert_eq!(
            p["a"],
            serde_json::json!({"type": "integer", "minimum": 0, "maximum": 10})
        );
        assert_eq!(p["b"]["format"], "int64");
        assert_eq!(p["c"]["format"], "double");
        assert_eq!(p["d"]["format"], "date-time");
        assert!(p["e"].get("format").is_none());
        assert!(p["f"].get("additionalProperties").is_none());
    }
}
