//! Per-object findings of translation.
//!
//! A diagnostic always names the object and the field at fault, so that the
//! same text works as a status condition message, a Kubernetes Event and a
//! log line.

use std::fmt;

use serde::Serialize;

use super::state::ObjectKey;

/// The kinds of object Sluicegate reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Kind {
    Ingress,
    IngressClass,
    Service,
    EndpointSlice,
    Secret,
    ApiRoute,
    PluginConfig,
    GatewayClass,
    Gateway,
    HTTPRoute,
    GRPCRoute,
    ReferenceGrant,
    Namespace,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ingress => "Ingress",
            Kind::IngressClass => "IngressClass",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Secret => "Secret",
            Kind::ApiRoute => "ApiRoute",
            Kind::PluginConfig => "PluginConfig",
            Kind::GatewayClass => "GatewayClass",
            Kind::Gateway => "Gateway",
            Kind::HTTPRoute => "HTTPRoute",
            Kind::GRPCRoute => "GRPCRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::Namespace => "Namespace",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One object, by kind, namespace and name. Cluster-scoped objects have an
/// empty namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ObjectRef {
    pub kind: Kind,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Self {
        ObjectRef {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// The object being translated. Unlike an [`ObjectRef`] it borrows its
/// names, so that an object without findings costs no copies of them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Subject<'a> {
    pub kind: Kind,
    pub key: &'a ObjectKey,
}

impl Subject<'_> {
    pub fn object_ref(self) -> ObjectRef {
        ObjectRef::new(self.kind, &self.key.namespace, &self.key.name)
    }
}

/// Why something was reported; these become condition reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Reason {
    /// A field's value is invalid; the rule it belongs to was skipped.
    InvalidSpec,
    /// A referenced Service or port does not exist; its routes answer 503.
    BackendNotFound,
    /// A referenced PluginConfig does not exist; the route was skipped so
    /// that it never serves without the plugins it asked for.
    PluginConfigNotFound,
    /// The object asks for something Sluicegate does not do.
    Unsupported,
    /// The same match is declared by an older object, which wins.
    Conflict,
    /// A TLS Secret is missing or unusable; its hosts get the default
    /// certificate, the routes keep serving.
    InvalidCertificate,
    /// A canary Ingress names a host and path that no main Ingress
    /// serves; that path of the canary is served once one does.
    MainIngressNotFound,
}

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Severity {
    /// Something was installed, perhaps not as the user hoped.
    Warning,
    /// Something was not installed.
    Error,
}

/// A finding about one field of one object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub object: ObjectRef,
    /// Dotted path of the field, e.g. `spec.routes[0].backends[1].servicePort`.
    pub field: String,
    pub reason: Reason,
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.object)?;
        if !self.field.is_empty() {
            write!(f, " field {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Collects diagnostics while translating.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(transparent)]
pub struct Diagnostics(Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(
        &mut self,
        object: &ObjectRef,
        field: impl Into<String>,
        reason: Reason,
        message: impl Into<String>,
    ) {
        self.push_owned(object.clone(), field.into(), reason, message.into());
    }

    /// Like [`Self::push`], for the object being translated.
    pub(crate) fn report(
        &mut self,
        object: Subject<'_>,
        field: impl Into<String>,
        reason: Reason,
        message: impl Into<String>,
    ) {
        self.push_owned(object.object_ref(), field.into(), reason, message.into());
    }

    fn push_owned(&mut self, object: ObjectRef, field: String, reason: Reason, message: String) {
        let severity = match reason {
            Reason::BackendNotFound
            | Reason::Conflict
            | Reason::InvalidCertificate
            | Reason::MainIngressNotFound => Severity::Warning,
            _ => Severity::Error,
        };
        self.0.push(Diagnostic {
            object,
            field,
            reason,
            severity,
            message,
        });
    }

    pub fn push_diagnostic(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Diagnostics about one object.
    pub fn for_object<'a>(
        &'a self,
        object: &'a ObjectRef,
    ) -> impl Iterator<Item = &'a Diagnostic> + 'a {
        self.0.iter().filter(move |d| &d.object == object)
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}
