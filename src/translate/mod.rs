//! Translation: `ClusterState` to a table specification and diagnostics.
//!
//! This is a pure function of its input. It performs no I/O, so every rule
//! is testable from YAML fixtures, and one object's errors can only ever
//! remove that object's own routes.
//!
//! # Precedence
//!
//! For a request, the router considers host groups from most to least
//! specific and stops at the first group with a matching route:
//!
//! 1. routes for the exact host (`shop.example.com`);
//! 2. routes for the wildcard covering it (`*.example.com`, one label);
//! 3. routes for any host (no host given).
//!
//! Within a group, the first matching route in this order wins:
//!
//! 1. higher `priority` first (Ingress paths have priority 0);
//! 2. fallback routes (an Ingress `defaultBackend`) last of all;
//! 3. `Exact` paths, then `Prefix` paths longest first (by path elements,
//!    then by length), then regular expressions, longest pattern first;
//! 4. more conditions first: methods, then header, then query conditions;
//! 5. older objects first (creation time, then namespace and name), then the
//!    order of routes inside the object.
//!
//! When two objects declare the same host and path with no other
//! conditions, the older one wins and the newer one gets a `Conflict`
//! warning.
//!
//! # Path semantics
//!
//! `Prefix` matches whole path elements: `/api` matches `/api`, `/api/` and
//! `/api/v1` but not `/apix`, and a trailing `/` in the prefix is ignored.
//! `Exact` compares the whole path. Regular expressions must match the whole
//! path. The query string never takes part in path matching.

mod apiroute;
mod backends;
mod class;
mod diagnostics;
mod ingress;
mod state;
mod validate;

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;

pub use backends::BackendError;
pub use class::{DEFAULT_CLASS_ANNOTATION, LEGACY_CLASS_ANNOTATION};
pub use diagnostics::{Diagnostic, Diagnostics, Kind, ObjectRef, Reason, Severity};
pub use state::{ClusterState, ObjectKey, Store};

use crate::api::PortRef;
use crate::routing::{BackendSpec, PathSpec, RouteSpec, TableSpec};
use backends::BackendResolver;
use class::ClassFilter;

/// Settings that change how objects are read.
#[derive(Clone, Debug)]
pub struct TranslateOptions {
    /// The IngressClass name this controller serves.
    pub ingress_class: String,
    /// Claim Ingresses that name no class at all.
    pub watch_ingress_without_class: bool,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        TranslateOptions {
            ingress_class: "sluicegate".to_owned(),
            watch_ingress_without_class: false,
        }
    }
}

/// The result of one translation.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Translation {
    pub table: TableSpec,
    pub diagnostics: Diagnostics,
}

/// Compiles every object of ours in `state` into one table specification.
pub fn translate(state: &ClusterState, opts: &TranslateOptions) -> Translation {
    let classes = ClassFilter::new(state, opts);
    let mut ctx = Ctx {
        state,
        resolver: BackendResolver::new(state),
        diags: Diagnostics::default(),
        routes: Vec::new(),
        claims: HashMap::new(),
        default_backend_owner: None,
    };

    // Oldest objects first: ties in precedence go to whoever came first.
    enum Obj<'a> {
        Ingress(&'a ObjectKey, &'a k8s_openapi::api::networking::v1::Ingress),
        ApiRoute(&'a ObjectKey, &'a crate::api::ApiRoute),
    }
    let mut objects: Vec<(Option<&Time>, Kind, &ObjectKey, Obj<'_>)> = Vec::new();
    for (k, ing) in &state.ingresses {
        if classes.ingress_is_ours(ing) {
            objects.push((
                ing.metadata.creation_timestamp.as_ref(),
                Kind::Ingress,
                k,
                Obj::Ingress(k, ing),
            ));
        }
    }
    for (k, ar) in &state.api_routes {
        if classes.class_is_ours(ar.spec.ingress_class_name.as_deref()) {
            objects.push((
                ar.metadata.creation_timestamp.as_ref(),
                Kind::ApiRoute,
                k,
                Obj::ApiRoute(k, ar),
            ));
        }
    }
    // Kind only separates an Ingress and an ApiRoute of the same name.
    objects.sort_by(|a, b| (a.0.map(|t| t.0), a.2, a.1).cmp(&(b.0.map(|t| t.0), b.2, b.1)));
    for (_, _, _, obj) in objects {
        match obj {
            Obj::Ingress(k, ing) => ingress::translate(&mut ctx, k, ing),
            Obj::ApiRoute(k, ar) => apiroute::translate(&mut ctx, k, ar),
        }
    }

    Translation {
        table: TableSpec {
            routes: ctx.routes,
            upstreams: ctx.resolver.finish(),
        },
        diagnostics: ctx.diags,
    }
}

/// Where an object writes a backend's Service name and port, so that a
/// diagnostic names the one that is wrong.
struct BackendFields {
    name: String,
    port: String,
}

/// State shared by the per-kind translators.
struct Ctx<'a> {
    state: &'a ClusterState,
    resolver: BackendResolver<'a>,
    diags: Diagnostics,
    routes: Vec<RouteSpec>,
    /// Unconditional (host, path) pairs already declared, with their owner.
    claims: HashMap<(String, String), Arc<str>>,
    /// The Ingress whose `defaultBackend` serves unmatched requests.
    default_backend_owner: Option<Arc<str>>,
}

impl Ctx<'_> {
    /// Resolves a backend, reporting a missing Service or port as a warning
    /// on `obj`: the route is still installed and answers 503.
    fn backend(
        &mut self,
        obj: &ObjectRef,
        fields: &BackendFields,
        namespace: &str,
        service: &str,
        port: &PortRef,
        weight: u32,
    ) -> BackendSpec {
        let (upstream, err) = self.resolver.resolve(namespace, service, port);
        if let Some(e) = err {
            let field = match e {
                BackendError::PortNotFound { .. } => &fields.port,
                BackendError::ServiceNotFound { .. } | BackendError::ExternalName { .. } => {
                    &fields.name
                }
            };
            self.diags.push(
                obj,
                field.as_str(),
                Reason::BackendNotFound,
                format!("{e}; requests to this backend get 503"),
            );
        }
        BackendSpec { upstream, weight }
    }

    /// Records the unconditional host/path pairs of `route`, and warns when
    /// an older object already declared one of them.
    fn claim(&mut self, obj: &ObjectRef, field: &str, route: &RouteSpec) {
        if !route.methods.is_empty()
            || !route.headers.is_empty()
            || !route.query.is_empty()
            || route.priority != 0
        {
            return;
        }
        let hosts: Vec<String> = if route.hosts.is_empty() {
            vec!["*".to_owned()]
        } else {
            route.hosts.iter().map(ToString::to_string).collect()
        };
        for host in hosts {
            for path in &route.paths {
                let p = match path {
                    PathSpec::Exact(p) => format!("Exact {p}"),
                    PathSpec::Prefix(p) => format!("Prefix {}", normalize_prefix(p)),
                    PathSpec::RegularExpression(_) => continue,
                };
                let key = (host.clone(), p);
                match self.claims.get(&key) {
                    Some(owner) if **owner != *route.source => {
                        let msg = format!(
                            "host {} path {} is also declared by {owner}, which takes precedence (older, or first by namespace and name)",
                            key.0, key.1
                        );
                        self.diags.push(obj, field, Reason::Conflict, msg);
                    }
                    Some(_) => {}
                    None => {
                        self.claims.insert(key, route.source.clone());
                    }
                }
            }
        }
    }
}

fn normalize_prefix(p: &str) -> &str {
    match p.trim_end_matches('/') {
        "" => "/",
        trimmed => trimmed,
    }
}
