//! The resources the double serves and how URLs map onto them.
//!
//! The table is the whole "schema" of the fake cluster: plural (URL),
//! kind, scope, group/version and whether `/status` is a subresource. The
//! latter matters for semantics, not only routing: for such kinds a write
//! to the main resource ignores `status` and a write to `/status` ignores
//! everything else, as on a real cluster.

use serde_json::{Value, json};

use super::status::ApiError;

/// One served resource type.
#[derive(Debug)]
pub(super) struct ResourceType {
    /// API group; `""` is the core group (served under `/api`).
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// Has a `/status` subresource.
    pub status: bool,
    /// Field-selector labels accepted besides `metadata.name` and
    /// `metadata.namespace` (the real server rejects any other label with
    /// 400, which catches selectors that would silently match nothing).
    pub fields: &'static [&'static str],
}

/// Index into [`RESOURCES`].
pub(super) type ResId = usize;

/// One row of [`RESOURCES`], positional to keep the table readable.
#[allow(clippy::too_many_arguments)]
const fn res(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    status: bool,
    fields: &'static [&'static str],
) -> ResourceType {
    ResourceType {
        group,
        version,
        plural,
        singular,
        kind,
        namespaced,
        status,
        fields,
    }
}

const CORE_EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

/// Every resource type the double knows.
#[rustfmt::skip]
pub(super) static RESOURCES: &[ResourceType] = &[
    res("", "v1", "services", "service", "Service", true, true, &[]),
    res("", "v1", "secrets", "secret", "Secret", true, false, &["type"]),
    res("", "v1", "configmaps", "configmap", "ConfigMap", true, false, &[]),
    res("", "v1", "events", "event", "Event", true, false, CORE_EVENT_FIELDS),
    res("", "v1", "namespaces", "namespace", "Namespace", false, true, &["status.phase"]),
    res("discovery.k8s.io", "v1", "endpointslices", "endpointslice", "EndpointSlice", true, false, &[]),
    res("networking.k8s.io", "v1", "ingresses", "ingress", "Ingress", true, true, &[]),
    res("networking.k8s.io", "v1", "ingressclasses", "ingressclass", "IngressClass", false, false, &[]),
    res("coordination.k8s.io", "v1", "leases", "lease", "Lease", true, false, &[]),
    res("events.k8s.io", "v1", "events", "event", "Event", true, false, &[]),
    res("sluicegate.io", "v1alpha1", "apiroutes", "apiroute", "ApiRoute", true, true, &[]),
    res("sluicegate.io", "v1alpha1", "pluginconfigs", "pluginconfig", "PluginConfig", true, true, &[]),
    res("gateway.networking.k8s.io", "v1", "gatewayclasses", "gatewayclass", "GatewayClass", false, true, &[]),
    res("gateway.networking.k8s.io", "v1", "gateways", "gateway", "Gateway", true, true, &[]),
    res("gateway.networking.k8s.io", "v1", "httproutes", "httproute", "HTTPRoute", true, true, &[]),
    res("gateway.networking.k8s.io", "v1", "grpcroutes", "grpcroute", "GRPCRoute", true, true, &[]),
    res("gateway.networking.k8s.io", "v1beta1", "referencegrants", "referencegrant", "ReferenceGrant", true, false, &[]),
];

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `leases.coordination.k8s.io`, or `services` for the core group: the
    /// form used in error messages.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Lease.coordination.k8s.io`, or `Service` for the core group.
    pub fn group_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// Whether `label` may be used in a field selector on this resource.
    pub fn supports_field(&self, label: &str) -> bool {
        label == "metadata.name" || label == "metadata.namespace" || self.fields.contains(&label)
    }
}

/// Finds a resource by `apiVersion` and `kind` (test-side helpers).
pub(super) fn by_kind(api_version: &str, kind: &str) -> Option<ResId> {
    RESOURCES
        .iter()
        .position(|r| r.kind == kind && r.api_version() == api_version)
}

/// Like [`by_kind`], but a test naming an unknown kind is a bug in the test.
pub(super) fn by_kind_or_panic(api_version: &str, kind: &str) -> ResId {
    by_kind(api_version, kind).unwrap_or_else(|| {
        panic!("the test API server does not serve {api_version} {kind}; add it to RESOURCES")
    })
}

fn by_plural(group: &str, version: &str, plural: &str) -> Option<ResId> {
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.version == version && r.plural == plural)
}

/// What a resource URL addresses.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub res: ResId,
    /// `None` for cluster-scoped kinds and for all-namespaces collections.
    pub namespace: Option<String>,
    /// `None` for a collection.
    pub name: Option<String>,
    /// The `/status` subresource.
    pub status: bool,
}

/// A parsed request path.
#[derive(Debug)]
pub(super) enum Route {
    Resource(Target),
    /// A discovery document (`/version`, `/api`, `/apis`, group versions).
    Discovery(Value),
}

/// Maps a URL path onto a resource or discovery document; anything else is
/// the real server's 404 "could not find the requested resource".
pub(super) fn route(path: &str) -> Result<Route, ApiError> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    match segments.as_slice() {
        ["version"] => Ok(Route::Discovery(version_info())),
        ["api"] => Ok(Route::Discovery(json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [],
        }))),
        ["apis"] => Ok(Route::Discovery(group_list())),
        ["api", "v1"] => Ok(Route::Discovery(resource_list("", "v1")?)),
        ["apis", group, version] => Ok(Route::Discovery(resource_list(group, version)?)),
        ["api", "v1", rest @ ..] => resource_route("", "v1", rest),
        ["apis", group, version, rest @ ..] => resource_route(group, version, rest),
        _ => Err(ApiError::unknown_path()),
    }
}

fn resource_route(group: &str, version: &str, rest: &[&str]) -> Result<Route, ApiError> {
    let find = |plural: &str| by_plural(group, version, plural).ok_or_else(ApiError::unknown_path);
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    // `namespaces/{ns}/{plural}...` is a namespaced path unless the third
    // segment is `status`, which makes it the Namespace object's status.
    let (res, namespace, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..] if *plural != "status" => {
            let res = find(plural)?;
            if !RESOURCES[res].namespaced {
                return Err(ApiError::unknown_path());
            }
            (
                res,
                Some(nonempty(ns).ok_or_else(ApiError::unknown_path)?),
                tail,
            )
        }
        [plural, tail @ ..] => (find(plural)?, None, tail),
        [] => return Err(ApiError::unknown_path()),
    };
    let (name, status) = match rest {
        [] => (None, false),
        [name] => (Some(*name), false),
        [name, "status"] => (Some(*name), true),
        _ => return Err(ApiError::unknown_path()),
    };
    // A namespaced object is only addressable under its namespace.
    if name.is_some() && RESOURCES[res].namespaced && namespace.is_none() {
        return Err(ApiError::unknown_path());
    }
    if status && !RESOURCES[res].status {
        return Err(ApiError::unknown_path());
    }
    Ok(Route::Resource(Target {
        res,
        namespace,
        name: match name {
            Some(n) => Some(nonempty(n).ok_or_else(ApiError::unknown_path)?),
            None => None,
        },
        status,
    }))
}

fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn group_list() -> Value {
    let mut groups: Vec<Value> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if groups.iter().any(|g| g["name"] == r.group) {
            continue;
        }
        let gv = json!({"groupVersion": r.api_version(), "version": r.version});
        groups.push(json!({
            "name": r.group,
            "versions": [gv.clone()],
            "preferredVersion": gv,
        }));
    }
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(group: &str, version: &str) -> Result<Value, ApiError> {
    let verbs = json!([
        "create", "delete", "get", "list", "patch", "update", "watch"
    ]);
    let mut resources = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        resources.push(json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": verbs,
        }));
        if r.status {
            resources.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    if resources.is_empty() {
        return Err(ApiError::unknown_path());
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Ok(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}
