//! Parsing multi-document YAML manifests into typed objects.
//!
//! Errors name the document, the object (when its kind and name could be
//! read) and the field, e.g. `document 2 (ApiRoute default/shop) field
//! spec.routes[0].backends[0].servicePort: port 0 is outside 1-65535`.
//! Fields a type does not know are reported: as errors for Sluicegate's own
//! kinds (a typo there must not be silently ignored) and as warnings for
//! Kubernetes kinds (whose schemas evolve).

use std::fmt;

use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::gateway_api::{Gateway, GatewayClass, GrpcRoute, HttpRoute, ReferenceGrant};
use crate::api::{ApiRoute, PluginConfig};
use crate::translate::{ClusterState, Kind, ObjectKey};

const GATEWAY_API_V1: &str = "gateway.networking.k8s.io/v1";

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
    GatewayClass(GatewayClass),
    Gateway(Gateway),
    HttpRoute(HttpRoute),
    GrpcRoute(GrpcRoute),
    ReferenceGrant(ReferenceGrant),
    Namespace(Namespace),
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
            Object::GatewayClass(_) => Kind::GatewayClass,
            Object::Gateway(_) => Kind::Gateway,
            Object::HttpRoute(_) => Kind::HTTPRoute,
            Object::GrpcRoute(_) => Kind::GRPCRoute,
            Object::ReferenceGrant(_) => Kind::ReferenceGrant,
            Object::Namespace(_) => Kind::Namespace,
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
            Object::GatewayClass(o) => ObjectKey::of(o),
            Object::Gateway(o) => ObjectKey::of(o),
            Object::HttpRoute(o) => ObjectKey::of(o),
            Object::GrpcRoute(o) => ObjectKey::of(o),
            Object::ReferenceGrant(o) => ObjectKey::of(o),
            Object::Namespace(o) => ObjectKey::of(o),
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
            Object::GatewayClass(o) => put(&mut state.gateway_classes, key, o),
            Object::Gateway(o) => put(&mut state.gateways, key, o),
            Object::HttpRoute(o) => put(&mut state.http_routes, key, o),
            Object::GrpcRoute(o) => put(&mut state.grpc_routes, key, o),
            Object::ReferenceGrant(o) => put(&mut state.reference_grants, key, o),
            Object::Namespace(o) => put(&mut state.namespaces, key, o),
        }
    }
}

/// A problem with one document (or with the YAML as a whole).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocIssue {
    /// 1-based document number; `None` for a YAML syntax error.
    pub document: Option<usize>,
    /// `Kind namespace/name`, when it could be read.
    pub object: Option<String>,
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
}

/// Parses every document of `text`. Any invalid document fails the whole
/// text, so that a half-applied file never becomes live.
pub fn parse(text: &str) -> Result<Parsed, DocIssue> {
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
    let docs: Vec<Value> =
        serde_saphyr::from_multiple_with_options(text, options).map_err(|e| DocIssue {
            document: None,
            object: None,
            field: None,
            message: format!("invalid YAML: {e}"),
        })?;
    let mut out = Parsed::default();
    for (i, doc) in docs.into_iter().enumerate() {
        let n = i + 1;
        match doc {
            Value::Null => continue,
            Value::Object(_) => {}
            _ => {
                return Err(DocIssue {
                    document: Some(n),
                    object: None,
                    field: None,
                    message: "a manifest document must be a mapping".into(),
                });
            }
        }
        if doc.get("kind").and_then(Value::as_str) == Some("List") {
            let items = match doc.get("items") {
                Some(Value::Array(items)) => items.clone(),
                _ => Vec::new(),
            };
            for item in items {
                parse_object(item, n, &mut out)?;
            }
        } else {
            parse_object(doc, n, &mut out)?;
        }
    }
    Ok(out)
}

fn parse_object(doc: Value, n: usize, out: &mut Parsed) -> Result<(), DocIssue> {
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
        if namespace.is_empty() {
            format!("{kind} {name}")
        } else {
            format!("{kind} {namespace}/{name}")
        }
    });
    let issue = |field: Option<String>, message: String| DocIssue {
        document: Some(n),
        object: object.clone(),
        field,
        message,
    };
    if kind.is_empty() {
        return Err(issue(Some("kind".into()), "kind is required".into()));
    }
    let expected = match kind.as_str() {
        "Ingress" | "IngressClass" => "networking.k8s.io/v1",
        "Service" | "Secret" => "v1",
        "EndpointSlice" => "discovery.k8s.io/v1",
        "ApiRoute" | "PluginConfig" => "sluicegate.io/v1alpha1",
        "GatewayClass" | "Gateway" | "HTTPRoute" | "GRPCRoute" => GATEWAY_API_V1,
        // Served as v1beta1 by every release, and also as v1 by newer ones.
        "ReferenceGrant" if api_version == GATEWAY_API_V1 => GATEWAY_API_V1,
        "ReferenceGrant" => "gateway.networking.k8s.io/v1beta1",
        "Namespace" => "v1",
        _ => {
            out.warnings.push(issue(
                None,
                format!("kind {kind} is not used by Sluicegate; skipped"),
            ));
            return Ok(());
        }
    };
    if api_version != expected {
        return Err(issue(
            Some("apiVersion".into()),
            format!("{kind} must have apiVersion {expected}, not {api_version:?}"),
        ));
    }
    if name.is_empty() {
        return Err(issue(
            Some("metadata.name".into()),
            "metadata.name is required".into(),
        ));
    }
    let mut doc = doc;
    if kind == "ReferenceGrant" {
        // One schema under both versions; the type is the v1beta1 one.
        doc["apiVersion"] = Value::from("gateway.networking.k8s.io/v1beta1");
    }
    let mut ignored = Vec::new();
    let obj = match kind.as_str() {
        "Ingress" => typed(doc, &mut ignored).map(Object::Ingress),
        "IngressClass" => typed(doc, &mut ignored).map(Object::IngressClass),
        "Service" => typed(doc, &mut ignored).map(Object::Service),
        "EndpointSlice" => typed(doc, &mut ignored).map(Object::EndpointSlice),
        "Secret" => typed(doc, &mut ignored).map(Object::Secret),
        "ApiRoute" => typed(doc, &mut ignored).map(Object::ApiRoute),
        "GatewayClass" => typed(doc, &mut ignored).map(Object::GatewayClass),
        "Gateway" => typed(doc, &mut ignored).map(Object::Gateway),
        "HTTPRoute" => typed(doc, &mut ignored).map(Object::HttpRoute),
        "GRPCRoute" => typed(doc, &mut ignored).map(Object::GrpcRoute),
        "ReferenceGrant" => typed(doc, &mut ignored).map(Object::ReferenceGrant),
        "Namespace" => typed(doc, &mut ignored).map(Object::Namespace),
        _ => typed(doc, &mut ignored).map(Object::PluginConfig),
    }
    .map_err(|(field, message)| issue(field, message))?;
    // Sluicegate's own kinds refuse unknown spec fields outright (their
    // types deny them); anything else unknown is reported and ignored:
    // Gateway API fields Sluicegate does not read (and typos in them) come
    // back as warnings, as the API server's schema would only catch the
    // typos.
    for field in ignored
        .into_iter()
        .filter(|f| f != "apiVersion" && f != "kind")
    {
        out.warnings
            .push(issue(Some(field), "unknown field, ignored".into()));
    }
    out.objects.push(with_default_namespace(obj));
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
        let field = (path != ".").then_some(path);
        (field, e.into_inner().to_string())
    })
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
        Object::GatewayClass(o) => o.metadata.namespace = None,
        Object::Namespace(o) => o.metadata.namespace = None,
        Object::Gateway(o) => fix(&mut o.metadata),
        Object::HttpRoute(o) => fix(&mut o.metadata),
        Object::GrpcRoute(o) => fix(&mut o.metadata),
        Object::ReferenceGrant(o) => fix(&mut o.metadata),
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
        assert_eq!(parsed.warnings.len(), 1);
        assert!(parsed.warnings[0].message.contains("Deployment"));
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
        assert_eq!(err.object.as_deref(), Some("ApiRoute shop"));
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
