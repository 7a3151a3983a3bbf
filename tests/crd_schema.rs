//! The generated CRDs as a Kubernetes API server and `kubectl explain` see
//! them. Walks every schema node of every CRD that `src/api` generates and
//! fails on:
//!
//! - a field (object property) without a description, so that `kubectl
//!   explain` is useful everywhere;
//! - a list without `maxItems`, a map without `maxProperties`, a string
//!   without `maxLength` (bounded strings are what the API server's CEL
//!   cost estimates and etcd's object size need; enums and timestamps are
//!   bounded by their values and are exempt);
//! - a `format` the API server does not know for the node's type (it
//!   prints `Warning: unrecognized format` on apply);
//! - `x-kubernetes-preserve-unknown-fields`, which would let a misspelt
//!   plugin option through;
//! - a short name that a built-in resource (or a well-known project's CRD)
//!   already uses, which would make `kubectl get NAME` ambiguous;
//!
//! and checks the printer columns and the bounded status conditions.

use std::collections::BTreeSet;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

/// Short names of the built-in resources of Kubernetes 1.36 (`kubectl
/// api-resources`), plus `psp` (removed, still in old kubectl muscle
/// memory) and the short names of CRDs that users of an API gateway are
/// likely to have installed too: Apache APISIX's ApisixRoute (`ar`) and
/// ApisixPluginConfig (`apc`), Argo Rollouts' AnalysisRun (`ar`),
/// AnalysisTemplate (`at`) and Rollout (`ro`), cert-manager's Certificate
/// (`cert`, `certs`), Gateway API's none.
const TAKEN_SHORT_NAMES: &[&str] = &[
    "cj", "cm", "crd", "crds", "cs", "csr", "deploy", "ds", "ep", "ev", "hpa", "ing", "ip",
    "limits", "netpol", "no", "ns", "pc", "pdb", "po", "pv", "pvc", "quota", "rc", "rs", "sa",
    "sc", "sts", "svc", "vac", "psp", "ar", "apc", "at", "ro", "cert", "certs",
];

/// Formats kube-apiserver recognizes, by type (apiextensions-apiserver
/// `validation/formats.go`; `k8s-short-name` and `k8s-long-name` only since
/// 1.34, so they are not used here).
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

/// Strings that may go without `maxLength`, with the reason. Empty today:
/// every unbounded string is a finding.
const UNBOUNDED_STRINGS: &[(&str, &str)] = &[];

struct Walk {
    crd: String,
    findings: Vec<String>,
    strings: usize,
    lists: usize,
    fields: usize,
}

impl Walk {
    fn finding(&mut self, path: &str, what: &str) {
        self.findings.push(format!("{} {path}: {what}", self.crd));
    }

    fn node(&mut self, path: &str, node: &Value) {
        let Some(obj) = node.as_object() else {
            self.finding(path, "schema node is not an object");
            return;
        };
        let ty = obj.get("type").and_then(Value::as_str).unwrap_or("");
        let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
        if let Some(format) = obj.get("format").and_then(Value::as_str)
            && !known_format(ty, format)
        {
            self.finding(path, &format!("format {format:?} is unknown to Kubernetes"));
        }
        if obj.contains_key("x-kubernetes-preserve-unknown-fields") {
            self.finding(
                path,
                "x-kubernetes-preserve-unknown-fields lets typos through",
            );
        }
        let exempt = UNBOUNDED_STRINGS.iter().any(|(p, _)| *p == path);
        if (ty == "string" || int_or_string) && !exempt {
            self.strings += 1;
            let bounded = obj.contains_key("maxLength")
                || obj.contains_key("enum")
                || obj.get("format").and_then(Value::as_str) == Some("date-time");
            if !bounded {
                self.finding(path, "string without maxLength");
            }
        }
        if ty == "array" {
            self.lists += 1;
            if !obj.contains_key("maxItems") {
                self.finding(path, "list without maxItems");
            }
            match obj.get("items") {
                Some(items) => self.node(&format!("{path}[]"), items),
                None => self.finding(path, "list without items"),
            }
        }
        if ty == "object" {
            if let Some(props) = obj.get("properties").and_then(Value::as_object) {
                for (name, prop) in props {
                    let child = format!("{path}.{name}");
                    self.fields += 1;
                    let described = prop
                        .get("description")
                        .and_then(Value::as_str)
                        .is_some_and(|d| !d.trim().is_empty());
                    if !described {
                        self.finding(&child, "field without description");
                    }
                    self.node(&child, prop);
                }
            }
            if let Some(values) = obj.get("additionalProperties") {
                if !obj.contains_key("maxProperties") {
                    self.finding(path, "map without maxProperties");
                }
                if values.is_object() {
                    self.node(&format!("{path}.*"), values);
                }
            }
        }
        for combinator in ["allOf", "anyOf", "oneOf"] {
            if let Some(list) = obj.get(combinator).and_then(Value::as_array) {
                for (i, sub) in list.iter().enumerate() {
                    self.node(&format!("{path}<{combinator}{i}>"), sub);
                }
            }
        }
    }
}

fn schema_of(crd: &CustomResourceDefinition) -> Value {
    assert_eq!(crd.spec.versions.len(), 1, "one version per CRD");
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("a schema");
    serde_json::to_value(schema).expect("schema as JSON")
}

#[test]
fn every_field_is_described_bounded_and_known_to_kubernetes() {
    let mut all = Vec::new();
    for crd in sluicegate::api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let mut walk = Walk {
            crd: name.clone(),
            findings: Vec::new(),
            strings: 0,
            lists: 0,
            fields: 0,
        };
        walk.node("", &schema_of(&crd));
        // The walk must have seen the schema, or it proves nothing.
        assert!(
            walk.fields > 20 && walk.strings > 5 && walk.lists > 3,
            "{name}: walked only {} fields, {} strings, {} lists",
            walk.fields,
            walk.strings,
            walk.lists
        );
        all.extend(walk.findings);
    }
    assert!(
        all.is_empty(),
        "{} findings:\n{}",
        all.len(),
        all.join("\n")
    );
}

#[test]
fn the_walk_finds_what_it_looks_for() {
    // A schema with one of each fault: the checker must report all five.
    let bad = serde_json::json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "description": "d",
                "properties": {
                    "a": {"type": "string"},
                    "b": {"type": "array", "description": "d", "items": {"type": "string", "maxLength": 1}},
                    "c": {"type": "integer", "format": "uint32", "description": "d"},
                    "d": {"type": "object", "description": "d", "x-kubernetes-preserve-unknown-fields": true},
                    "e": {"type": "object", "description": "d", "additionalProperties": {"type": "string", "maxLength": 3}}
                }
            }
        }
    });
    let mut walk = Walk {
        crd: "test".into(),
        findings: Vec::new(),
        strings: 0,
        lists: 0,
        fields: 0,
    };
    walk.node("", &bad);
    let text = walk.findings.join("\n");
    for expected in [
        ".spec.a: field without description",
        ".spec.a: string without maxLength",
        ".spec.b: list without maxItems",
        ".spec.c: format \"uint32\"",
        ".spec.d: x-kubernetes-preserve-unknown-fields",
        ".spec.e: map without maxProperties",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}

#[test]
fn short_names_are_not_taken() {
    let mut seen = BTreeSet::new();
    for crd in sluicegate::api::crds() {
        let names = &crd.spec.names;
        let short = names.short_names.clone().unwrap_or_default();
        assert!(!short.is_empty(), "{}: no short name", names.kind);
        for s in short {
            assert!(
                !TAKEN_SHORT_NAMES.contains(&s.as_str()),
                "{}: short name {s} is already used by another resource",
                names.kind
            );
            assert!(seen.insert(s.clone()), "short name {s} used twice");
        }
        assert_eq!(
            names.categories.as_deref(),
            Some(&["sluicegate".to_owned()][..]),
            "{}: `kubectl get sluicegate` lists every kind",
            names.kind
        );
    }
}

#[test]
fn printer_columns_show_the_conditions() {
    for crd in sluicegate::api::crds() {
        let kind = crd.spec.names.kind.clone();
        let columns: Vec<(String, String)> = crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| (c.name.clone(), c.json_path.clone()))
            .collect();
        let mut want = vec!["Accepted", "Ready"];
        if kind == "ApiRoute" {
            want.push("Programmed");
        }
        for condition in want {
            let path = format!(".status.conditions[?(@.type==\"{condition}\")].status");
            assert!(
                columns.iter().any(|(n, p)| n == condition && *p == path),
                "{kind}: no {condition} column in {columns:?}"
            );
        }
        assert_eq!(
            columns.last().map(|(n, _)| n.as_str()),
            Some("Age"),
            "{kind}: Age comes last, as in built-in kinds"
        );
    }
}

#[test]
fn status_conditions_are_bounded_like_gateway_api() {
    for crd in sluicegate::api::crds() {
        let schema = schema_of(&crd);
        let conditions = &schema["properties"]["status"]["properties"]["conditions"];
        assert_eq!(conditions["maxItems"], 8, "{conditions}");
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
        assert_eq!(conditions["x-kubernetes-list-map-keys"][0], "type");
        let item = &conditions["items"]["properties"];
        assert_eq!(
            item["status"]["enum"],
            serde_json::json!(["True", "False", "Unknown"])
        );
        assert_eq!(item["type"]["maxLength"], 316);
        assert_eq!(item["reason"]["maxLength"], 1024);
        assert_eq!(item["message"]["maxLength"], 32768);
        assert_eq!(item["observedGeneration"]["minimum"].as_f64(), Some(0.0));
    }
}
