//! Parsing multi-document YAML manifests into typed objects.
//!
//! Errors name the document, the object (when its kind and name could be
//! read) and the field, e.g. `document 2 (ApiRoute default/shop) field
//! spec.routes[0].backends[0].servicePort: port 0 is outside 1-65535`.
//! Fields a type does not know are reported: as errors for Sluicegate's own
//! kinds (a typo there must not be silently ignored) and as warnings for
//! Kubernetes kinds (whose schemas evolve).

use std::fmt;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::{ApiRoute, PluginConfig};
use crate::translate::{ClusterState, Kind, ObjectKey};

/// One object read from a manifest. Objects are parsed once per file
/// change, so variant sizes do not matter.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Object {
    Ingress(Ingress),
    IngressClass(IngressClass),
    Service(Service),
    EndpointSlice(EndpointSlice),
    Secret(Secret),
    ApiRoute(ApiRoute),
    PluginConfig(PluginConfig),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Ingress(_) => Kind::Ingress,
            Object::IngressClass(_) => Kind::IngressClass,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Secret(_) => Kind::Secret,
            Object::ApiRoute(_) => Kind::ApiRoute,
            Object::PluginConfig(_) => Kind::PluginConfig,
        }
    }

    pub fn key(&self) -> ObjectKey {
        match self {
            Object::Ingress(o) => ObjectKey::of(o),
            Object::IngressClass(o) => ObjectKey::of(o),
            Object::Service(o) => ObjectKey::of(o),
            Object::EndpointSlice(o) => ObjectKey::of(o),
            Object::Secret(o) => ObjectKey::of(o),
            Object::ApiRoute(o) => ObjectKey::of(o),
            Object::PluginConfig(o) => ObjectKey::of(o),
        }
    }

    /// Adds the object to `state`; returns false when one of the same kind
    /// and key was already there (the existing one is kept).
    pub fn insert_into(self, state: &mut ClusterState) -> bool {
        use std::collections::btree_map::Entry;
        use std::sync::Arc;
        fn put<K>(store: &mut crate::translate::Store<K>, key: ObjectKey, obj: K) -> bool {
            match store.entry(key) {
                Entry::Occupied(_) => false,
                Entry::Vacant(v) => {
                    v.insert(Arc::new(obj));
                    true
                }
            }
        }
        let key = self.key();
        match self {
            Object::Ingress(o) => put(&mut state.ingresses, key, o),
            Object::IngressClass(o) => put(&mut state.ingress_classes, key, o),
            Object::Service(o) => put(&mut state.services, key, o),
            Object::EndpointSlice(o) => put(&mut state.endpoint_slices, key, o),
            Object::Secret(o) => put(&mut state.secrets, key, o),
            Object::ApiRoute(o) => put(&mut state.api_routes, key, o),
            Object::PluginConfig(o) => put(&mut state.plugin_configs, key, o),
        }
    }
}

/// The object a finding is about, as far as its document names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocObject {
    pub kind: String,
    /// As written; empty when the document gives none.
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for DocObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// A problem with one document (or with the YAML as a whole).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocIssue {
    /// 1-based document number; `None` for a YAML syntax error.
    pub document: Option<usize>,
    /// The object, when its kind could be read (boxed: results carrying a
    /// `DocIssue` stay small).
    pub object: Option<Box<DocObject>>,
    /// Dotted field path, when known.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for DocIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if let Some(d) = self.document {
            write!(f, "document {d}")?;
            sep = " ";
        }
        if let Some(o) = &self.object {
            write!(f, "{sep}({o})")?;
            sep = " ";
        }
        if let Some(field) = &self.field {
            write!(f, "{sep}field {field}")?;
            sep = " ";
        }
        if !sep.is_empty() {
            f.write_str(": ")?;
        }
        f.write_str(&self.message)
    }
}

/// The objects of a manifest text, or the first error that makes it
/// unusable, plus warnings that do not.
#[derive(Debug, Default)]
pub struct Parsed {
    pub objects: Vec<Object>,
    pub warnings: Vec<DocIssue>,
    /// Objects of kinds Sluicegate does not read, which were skipped.
    pub skipped: Vec<DocIssue>,
}

/// Every document of a manifest text, each judged on its own.
#[derive(Debug, Default)]
pub struct Documents {
    /// The valid objects, each with its 1-based document number (the items
    /// of a `kind: List` share their list's).
    pub objects: Vec<(usize, Object)>,
    /// One entry per invalid document or List item; a YAML syntax error
    /// (which leaves no document to read) is the only entry.
    pub errors: Vec<DocIssue>,
    /// Findings that do not make an object invalid: unknown fields of
    /// Kubernetes kinds, whose schemas evolve.
    pub warnings: Vec<DocIssue>,
    /// Objects of kinds Sluicegate does not read, which were skipped.
    pub skipped: Vec<DocIssue>,
}

/// How strictly Sluicegate's own kinds (ApiRoute, PluginConfig) are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strictness {
    /// Their Rust types: unknown fields, types, required fields. What
    /// standalone mode applies; the translator checks the meaning of every
    /// value again, so one object's bad value only ever costs that object.
    Types,
    /// Also the bounds, patterns, enumerations and list keys of their CRD
    /// schemas ([`super::schema`]), which the API server enforces at
    /// `kubectl apply`: what `sluicegate check` applies, so that it refuses
    /// what a cluster would refuse.
    ApiServer,
}

/// Parses every document of `text`. Any invalid document fails the whole
/// text, so that a half-applied file never becomes live.
pub fn parse(text: &str) -> Result<Parsed, DocIssue> {
    let docs = parse_documents(text, Strictness::Types);
    if let Some(first) = docs.errors.into_iter().next() {
        return Err(first);
    }
    Ok(Parsed {
        objects: docs.objects.into_iter().map(|(_, o)| o).collect(),
        warnings: docs.warnings,
        skipped: docs.skipped,
    })
}

/// Parses every document of `text` and reports every invalid one, for
/// tools that list all problems (`sluicegate check`) rather than stop at
/// the first.
pub fn parse_documents(text: &str, strictness: Strictness) -> Documents {
    // The parser's default budget (1,024 documents, 250,000 nodes) is
    // meant for single config files; manifest files of a few thousand
    // objects are normal. The limits stay finite so that a pathological
    // file cannot exhaust memory.
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_documents: 1_000_000,
            max_nodes: 50_000_000,
            max_events: 200_000_000,
        },
    };
    let mut out = Documents::default();
    let docs: Vec<Value> = match serde_saphyr::from_multiple_with_options(text, options) {
        Ok(docs) => docs,
        Err(e) => {
            out.errors.push(DocIssue {
                document: None,
                object: None,
                field: None,
                message: format!("invalid YAML: {e}"),
            });
            return out;
        }
    };
    for (i, doc) in docs.into_iter().enumerate() {
        let n = i + 1;
        match doc {
            Value::Null => continue,
            Value::Object(_) => {}
            _ => {
                out.errors.push(DocIssue {
                    document: Some(n),
                    object: None,
                    field: None,
                    message: "a manifest document must be a mapping".into(),
                });
                continue;
            }
        }
        if doc.get("kind").and_then(Value::as_str) == Some("List") {
            let items = match doc {
                Value::Object(mut map) => match map.remove("items") {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            };
            for (j, item) in items.into_iter().enumerate() {
                if let Err(issues) = parse_object(item, n, strictness, &mut out) {
                    out.errors.extend(issues.into_iter().map(|mut issue| {
                        issue.field = Some(match issue.field.take() {
                            Some(f) => format!("items[{j}].{f}"),
                            None => format!("items[{j}]"),
                        });
                        issue
                    }));
                }
            }
        } else if let Err(issues) = parse_object(doc, n, strictness, &mut out) {
            out.errors.extend(issues);
        }
    }
    out
}

/// Reads one object into `out`, or returns why it is invalid: the bounds
/// of its CRD's schema it breaks, and the first field serde refuses.
fn parse_object(
    doc: Value,
    n: usize,
    strictness: Strictness,
    out: &mut Documents,
) -> Result<(), Vec<DocIssue>> {
    let s = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let kind = s("kind");
    let api_version = s("apiVersion");
    let meta = |k: &str| {
        doc.get("metadata")
            .and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let name = meta("name");
    let namespace = meta("namespace");
    let object = (!kind.is_empty()).then(|| {
        Box::new(DocObject {
            kind: kind.clone(),
            namespace: namespace.clone(),
            name: name.clone(),
        })
    });
    let issue = |field: Option<String>, message: String| DocIssue {
        document: Some(n),
        object: object.clone(),
        field,
        message,
    };
    if kind.is_empty() {
        return Err(vec![issue(Some("kind".into()), "kind is required".into())]);
    }
    let expected = match kind.as_str() {
        "Ingress" | "IngressClass" => "networking.k8s.io/v1",
        "Service" | "Secret" => "v1",
        "EndpointSlice" => "discovery.k8s.io/v1",
        "ApiRoute" | "PluginConfig" => "sluicegate.io/v1alpha1",
        _ => {
            out.skipped.push(issue(
                None,
                format!("kind {kind} is not used by Sluicegate; skipped"),
            ));
            return Ok(());
        }
    };
    if api_version != expected {
        return Err(vec![issue(
            Some("apiVersion".into()),
            format!("{kind} must have apiVersion {expected}, not {api_version:?}"),
        )]);
    }
    if name.is_empty() {
        return Err(vec![issue(
            Some("metadata.name".into()),
            "metadata.name is required".into(),
        )]);
    }
    let mut issues: Vec<DocIssue> = match strictness {
        Strictness::Types => Vec::new(),
        Strictness::ApiServer => super::schema::validate(&kind, &doc)
            .into_iter()
            .map(|v| issue(Some(v.field), v.message))
            .collect(),
    };
    let mut ignored = Vec::new();
    let obj = match kind.as_str() {
        "Ingress" => typed(doc, &mut ignored).map(Object::Ingress),
        "IngressClass" => typed(doc, &mut ignored).map(Object::IngressClass),
        "Service" => typed(doc, &mut ignored).map(Object::Service),
        "EndpointSlice" => typed(doc, &mut ignored).map(Object::EndpointSlice),
        "Secret" => typed(doc, &mut ignored).map(Object::Secret),
        "ApiRoute" => typed(doc, &mut ignored).map(Object::ApiRoute),
        _ => typed(doc, &mut ignored).map(Object::PluginConfig),
    };
    let obj = match obj {
        Ok(obj) if issues.is_empty() => obj,
        Ok(_) => return Err(issues),
        Err((field, message)) => {
            // serde's word on a field replaces the schema's (a negative
            // weight is both below the minimum and not a u32).
            issues.retain(|i| i.field != field);
            issues.push(issue(field, message));
            return Err(issues);
        }
    };
    // Sluicegate's own kinds refuse unknown spec fields outright (their
    // types deny them); anything else unknown is reported and ignored.
    for field in ignored
        .into_iter()
        .filter(|f| f != "apiVersion" && f != "kind")
    {
        out.warnings
            .push(issue(Some(field), "unknown field, ignored".into()));
    }
    out.objects.push((n, with_default_namespace(obj)));
    Ok(())
}

fn typed<T: DeserializeOwned>(
    doc: Value,
    ignored: &mut Vec<String>,
) -> Result<T, (Option<String>, String)> {
    let mut record = |path: serde_ignored::Path<'_>| ignored.push(field_path(&path));
    let de = serde_ignored::Deserializer::new(doc, &mut record);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        let mut field = (path != ".").then_some(path);
        // A struct with a flattened part (the plugins' shared settings)
        // reports an unknown field at the struct, not at the field itself:
        // name the field, as for every other struct.
        if let Some(name) = unknown_field(&message) {
            match &mut field {
                Some(f) if !f.ends_with(&format!(".{name}")) && *f != name => {
                    f.push('.');
                    f.push_str(name);
                }
                Some(_) => {}
                None => field = Some(name.to_owned()),
            }
        }
        (field, message)
    })
}

/// The field serde's "unknown field `NAME`" message names.
fn unknown_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name)
}

/// Formats a path the way the rest of Sluicegate names fields:
/// `spec.rules[0].host`.
fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => {
            let p = field_path(parent);
            if p.is_empty() {
                key.clone()
            } else {
                format!("{p}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

/// Namespaced objects without a namespace land in `default`, as with
/// `kubectl apply`; cluster-scoped ones have none.
fn with_default_namespace(mut obj: Object) -> Object {
    fn fix(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
        if meta.namespace.as_deref().is_none_or(str::is_empty) {
            meta.namespace = Some("default".into());
        }
    }
    match &mut obj {
        Object::IngressClass(o) => o.metadata.namespace = None,
        Object::Ingress(o) => fix(&mut o.metadata),
        Object::Service(o) => fix(&mut o.metadata),
        Object::EndpointSlice(o) => fix(&mut o.metadata),
        Object::Secret(o) => fix(&mut o.metadata),
        Object::ApiRoute(o) => fix(&mut o.metadata),
        Object::PluginConfig(o) => fix(&mut o.metadata),
    }
    obj
}

/// Parses manifests straight into a state, for tests and tools; later
/// duplicates of an object are ignored.
pub fn state_from_str(text: &str) -> Result<ClusterState, DocIssue> {
    let parsed = parse(text)?;
    let mut state = ClusterState::default();
    for o in parsed.objects {
        o.insert_into(&mut state);
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_several_kinds_and_defaults_namespaces() {
        let text = r#"
apiVersion: v1
kind: Service
metadata: {name: shop}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {name: shop, namespace: prod}
spec:
  routes:
  - name: all
    backends: [{serviceName: shop, servicePort: http}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ignored}
"#;
        let parsed = parse(text).unwrap();
        assert_eq!(parsed.objects.len(), 2);
        assert_eq!(parsed.objects[0].key(), ObjectKey::new("default", "shop"));
        assert_eq!(parsed.objects[1].key(), ObjectKey::new("prod", "shop"));
        assert!(parsed.warnings.is_empty());
        assert_eq!(parsed.skipped.len(), 1);
        assert!(parsed.skipped[0].message.contains("Deployment"));
    }

    #[test]
    fn errors_name_document_object_and_field() {
        let text = r#"
apiVersion: v1
kind: Service
metadata: {name: ok}
---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {name: shop}
spec:
  routes:
  - name: all
    backends: [{serviceName: shop, servicePort: 0}]
"#;
        let err = parse(text).unwrap_err();
        assert_eq!(err.document, Some(2));
        assert_eq!(
            err.object.as_ref().map(ToString::to_string).as_deref(),
            Some("ApiRoute shop")
        );
        assert_eq!(
            err.field.as_deref(),
            Some("spec.routes[0].backends[0].servicePort")
        );
        assert!(err.to_string().contains("outside 1-65535"), "{err}");
    }

    #[test]
    fn typos_in_own_kinds_are_errors() {
        // The CRD types deny unknown fields, so the typo fails the document.
        let text = r#"
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {name: shop}
spec:
  hostz: [a.example.com]
  routes:
  - name: all
    backends: [{serviceName: shop, servicePort: 80}]
"#;
        let err = parse(text).unwrap_err();
        assert!(err.message.contains("hostz"), "{err}");
    }

    #[test]
    fn typos_name_the_misspelt_field_also_beside_flattened_settings() {
        let text = r#"
apiVersion: sluicegate.io/v1alpha1
kind: PluginConfig
metadata: {name: p}
spec:
  plugins:
    limitReq: {rate: 5, burts: 20}
"#;
        let err = parse(text).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("spec.plugins.limitReq.burts"));
        assert!(err.message.starts_with("unknown field `burts`"), "{err}");
    }

    #[test]
    fn typos_in_kubernetes_kinds_are_warnings() {
        let text = r#"
apiVersion: v1
kind: Service
metadata: {name: shop}
spec:
  portz: []
"#;
        let parsed = parse(text).unwrap();
        assert_eq!(parsed.objects.len(), 1);
        assert_eq!(parsed.warnings[0].field.as_deref(), Some("spec.portz"));
    }

    #[test]
    fn yaml_syntax_errors_are_reported() {
        let err = parse("kind: [unclosed").unwrap_err();
        assert_eq!(err.document, None);
        assert!(err.message.starts_with("invalid YAML"));
    }

    #[test]
    fn wrong_api_version_is_an_error() {
        let err = parse("apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: x}\n")
            .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("apiVersion"));
    }

    #[test]
    fn large_files_are_accepted() {
        let doc = "apiVersion: v1\nkind: Service\nmetadata: {name: s%}\nspec:\n  ports: [{name: http, port: 80}]\n---\n";
        let text: String = (0..5000)
            .map(|i| doc.replace('%', &i.to_string()))
            .collect();
        assert_eq!(parse(&text).unwrap().objects.len(), 5000);
    }

    #[test]
    fn every_invalid_document_is_reported_and_the_rest_read() {
        let text = r#"
apiVersion: v1
kind: Service
metadata: {name: a}
spec: {ports: [{port: 0x}]}
---
apiVersion: v1
kind: Service
metadata: {name: b}
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Service, metadata: {name: c}}
- {apiVersion: v1, kind: Secret, metadata: {name: d}, type: 7}
"#;
        let docs = parse_documents(text, Strictness::Types);
        let names: Vec<(usize, String)> = docs
            .objects
            .iter()
            .map(|(n, o)| (*n, o.key().name))
            .collect();
        assert_eq!(names, [(2, "b".into()), (3, "c".into())]);
        assert_eq!(docs.errors.len(), 2, "{:?}", docs.errors);
        assert_eq!(docs.errors[0].document, Some(1));
        assert_eq!(docs.errors[1].document, Some(3));
        assert_eq!(docs.errors[1].field.as_deref(), Some("items[1].type"));
    }

    #[test]
    fn crd_bounds_apply_only_as_the_api_server_would() {
        let long = "x".repeat(64);
        let text = format!(
            "apiVersion: sluicegate.io/v1alpha1\nkind: ApiRoute\nmetadata: {{name: r}}\n\
             spec:\n  routes:\n  - name: {long}\n    backends: [{{serviceName: s, servicePort: 80}}]\n"
        );
        let types = parse_documents(&text, Strictness::Types);
        assert!(types.errors.is_empty(), "{:?}", types.errors);
        assert_eq!(types.objects.len(), 1);
        let strict = parse_documents(&text, Strictness::ApiServer);
        assert!(strict.objects.is_empty());
        assert_eq!(
            strict.errors[0].to_string(),
            "document 1 (ApiRoute r) field spec.routes[0].name: must be at most 63 characters long (is 64)"
        );
    }

    #[test]
    fn lists_are_flattened() {
        let text = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: a}
- apiVersion: v1
  kind: Service
  metadata: {name: b}
"#;
        assert_eq!(parse(text).unwrap().objects.len(), 2);
    }
}
