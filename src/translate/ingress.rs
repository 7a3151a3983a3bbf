//! Ingress (`networking.k8s.io/v1`) to routes.
//!
//! Each path of each rule becomes one route for the rule's host. `Exact`
//! and `Prefix` follow the Ingress specification; `ImplementationSpecific`
//! is treated as `Prefix`, as ingress-nginx does without regex annotations.
//! `spec.defaultBackend` becomes a fallback route for any host and path,
//! tried only after every other route. WebSocket upgrades are allowed, as
//! users migrating from ingress-nginx expect.

use std::sync::Arc;

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

use super::diagnostics::{Kind, ObjectRef, Reason};
use super::state::ObjectKey;
use super::{BackendFields, Ctx, validate};
use crate::api::PortRef;
use crate::routing::{BackendSpec, PathSpec, RouteSpec, Timeouts};

pub(super) fn translate(ctx: &mut Ctx<'_>, key: &ObjectKey, ingress: &Ingress) {
    let obj = ObjectRef::new(Kind::Ingress, &key.namespace, &key.name);
    let name: Arc<str> = format!("ingress/{}/{}", key.namespace, key.name).into();
    let source: Arc<str> = obj.to_string().into();
    let Some(spec) = ingress.spec.as_ref() else {
        ctx.diags
            .push(&obj, "spec", Reason::InvalidSpec, "spec is missing");
        return;
    };
    let route = |hosts, paths, backends, fallback| RouteSpec {
        name: name.clone(),
        source: source.clone(),
        hosts,
        paths,
        methods: Vec::new(),
        headers: Vec::new(),
        query: Vec::new(),
        priority: 0,
        fallback,
        backends,
        timeouts: Timeouts::default(),
        websocket: true,
    };

    for (i, rule) in spec.rules.iter().flatten().enumerate() {
        let hosts = match rule.host.as_deref().filter(|h| !h.is_empty()) {
            None => Vec::new(),
            Some(h) => match validate::host(h) {
                Ok(m) => vec![m],
                Err(e) => {
                    ctx.diags.push(
                        &obj,
                        format!("spec.rules[{i}].host"),
                        Reason::InvalidSpec,
                        e,
                    );
                    continue;
                }
            },
        };
        let Some(http) = rule.http.as_ref() else {
            continue;
        };
        for (j, p) in http.paths.iter().enumerate() {
            let field = format!("spec.rules[{i}].http.paths[{j}]");
            let path = p.path.clone().unwrap_or_else(|| "/".to_owned());
            if let Err(e) = validate::literal_path(&path) {
                ctx.diags
                    .push(&obj, format!("{field}.path"), Reason::InvalidSpec, e);
                continue;
            }
            let path = match p.path_type.as_str() {
                "Exact" => PathSpec::Exact(path),
                "Prefix" | "ImplementationSpecific" => PathSpec::Prefix(path),
                other => {
                    ctx.diags.push(
                        &obj,
                        format!("{field}.pathType"),
                        Reason::InvalidSpec,
                        format!("unknown pathType {other:?}; expected Exact, Prefix or ImplementationSpecific"),
                    );
                    continue;
                }
            };
            let Some(backend) = backend(
                ctx,
                &obj,
                &format!("{field}.backend"),
                &key.namespace,
                &p.backend,
            ) else {
                continue;
            };
            let r = route(hosts.clone(), vec![path], vec![backend], false);
            ctx.claim(&obj, &field, &r);
            ctx.routes.push(r);
        }
    }

    if let Some(default) = spec.default_backend.as_ref() {
        if let Some(b) = backend(ctx, &obj, "spec.defaultBackend", &key.namespace, default) {
            match &ctx.default_backend_owner {
                Some(owner) => ctx.diags.push(
                    &obj,
                    "spec.defaultBackend",
                    Reason::Conflict,
                    format!("{owner} also has a defaultBackend and takes precedence"),
                ),
                None => ctx.default_backend_owner = Some(source.clone()),
            }
            ctx.routes.push(route(
                Vec::new(),
                vec![PathSpec::Prefix("/".into())],
                vec![b],
                true,
            ));
        }
    } else if spec.rules.as_ref().is_none_or(|r| r.is_empty()) {
        ctx.diags.push(
            &obj,
            "spec",
            Reason::InvalidSpec,
            "an Ingress needs rules or a defaultBackend",
        );
    }
}

fn backend(
    ctx: &mut Ctx<'_>,
    obj: &ObjectRef,
    field: &str,
    namespace: &str,
    backend: &IngressBackend,
) -> Option<BackendSpec> {
    let Some(svc) = backend.service.as_ref() else {
        if backend.resource.is_some() {
            ctx.diags.push(
                obj,
                format!("{field}.resource"),
                Reason::Unsupported,
                "resource backends are not supported; use a Service",
            );
        } else {
            ctx.diags.push(
                obj,
                field,
                Reason::Unsupported,
                "a service backend is required",
            );
        }
        return None;
    };
    let port = svc
        .port
        .as_ref()
        .and_then(|p| match (p.number, p.name.as_deref()) {
            (Some(n), _) => u16::try_from(n)
                .ok()
                .filter(|n| *n > 0)
                .map(PortRef::Number),
            (None, Some(name)) if !name.is_empty() => Some(PortRef::Name(name.to_owned())),
            _ => None,
        });
    let Some(port) = port else {
        ctx.diags.push(
            obj,
            format!("{field}.service.port"),
            Reason::InvalidSpec,
            "a port number (1-65535) or name is required",
        );
        return None;
    };
    let fields = BackendFields {
        name: format!("{field}.service.name"),
        port: format!("{field}.service.port"),
    };
    Some(ctx.backend(obj, &fields, namespace, &svc.name, &port, 1))
}
