//! GatewayClasses, Gateways and their listeners.
//!
//! A listener is served when it is valid (a supported protocol, port and
//! hostname), conflicts with nothing, and, for HTTPS, has a usable
//! certificate. Listeners of any Gateway with the same port, protocol and
//! hostname share one slot of the table ([`ListenerSlot`]); their routes
//! are served together.
//!
//! Conflicts, as the Gateway API names them:
//! - `ProtocolConflict`: listeners on one port with different protocols,
//!   within a Gateway (all of them on that port are refused), or against
//!   an older Gateway or the proxy's own listeners (the newer listener is
//!   refused);
//! - `HostnameConflict`: two listeners of one Gateway with the same port,
//!   protocol and hostname, or an HTTPS listener whose port and hostname
//!   an older Gateway's HTTPS listener already serves (one certificate per
//!   hostname and port).
//!
//! HTTPS listeners on one port whose hostnames overlap (`*.example.com`
//! and `a.example.com`) are served, and marked `OverlappingTLSConfig`.

use std::collections::BTreeMap;
use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};

use super::refs::{self, RefEnd, Selector};
use super::status::names::*;
use super::status::{ClassState, Cond, GatewayState, ListenerState};
use super::{AllowedNamespaces, GRPC_ROUTE, GatewayInfo, Gw, HTTP_ROUTE, ListenerInfo};
use crate::api::gateway_api::{CONTROLLER_NAME, GROUP, Gateway, Listener};
use crate::routing::{HostMatch, ListenerSlot, TlsCertificate};
use crate::translate::diagnostics::{Kind, Reason, Subject};
use crate::translate::{Ctx, ObjectKey, TranslateOptions, tls};

/// The GatewayClasses of Sluicegate's controller, and whether each is
/// accepted (the reason when not).
pub(super) fn classes(ctx: &mut Ctx<'_>, gw: &mut Gw) -> HashMap<String, Option<String>> {
    let mut ours = HashMap::new();
    for (key, class) in &ctx.state.gateway_classes {
        if class.spec.controller_name != CONTROLLER_NAME {
            continue;
        }
        let problem = class.spec.parameters_ref.as_ref().map(|_| {
            "spec.parametersRef: Sluicegate's GatewayClasses take no parameters".to_owned()
        });
        let cond = match &problem {
            None => Cond::new(
                ACCEPTED,
                true,
                ACCEPTED,
                "Gateways of this class are served.",
            ),
            Some(why) => Cond::new(ACCEPTED, false, INVALID_PARAMETERS, why.clone()),
        };
        if let Some(why) = &problem {
            let obj = Subject {
                kind: Kind::GatewayClass,
                key,
            };
            ctx.diags
                .report(obj, "spec.parametersRef", Reason::Unsupported, why.clone());
        }
        gw.status.gateway_classes.push(ClassState {
            name: key.name.clone(),
            conditions: vec![cond],
        });
        ours.insert(key.name.clone(), problem);
    }
    ours
}

/// What the ports in use so far carry: the protocol (`true` for HTTPS)
/// and who set it.
struct Ports {
    protocol: HashMap<u16, (bool, Arc<str>)>,
    /// HTTPS (port, hostname) pairs and the Gateway that serves them.
    https_hosts: HashMap<(u16, Option<HostMatch>), Arc<str>>,
    /// Slots by (port, hostname), for listeners to share.
    slots: HashMap<(u16, Option<HostMatch>), u32>,
}

/// Translates every Gateway of Sluicegate's classes, oldest first, into
/// listener slots and states; route attachment follows.
pub(super) fn gateways(ctx: &mut Ctx<'_>, gw: &mut Gw, opts: &TranslateOptions) {
    let classes = classes(ctx, gw);
    let mut ports = Ports {
        protocol: HashMap::new(),
        https_hosts: HashMap::new(),
        slots: HashMap::new(),
    };
    let own = "the proxy's own listener";
    ports.protocol.insert(
        opts.own_ports.http,
        (false, Arc::from(format!("{own} (--http-addr)"))),
    );
    if let Some(p) = opts.own_ports.https {
        ports
            .protocol
            .insert(p, (true, Arc::from(format!("{own} (--https-addr)"))));
    }
    let mut list: Vec<(&ObjectKey, &Arc<Gateway>)> = ctx
        .state
        .gateways
        .iter()
        .filter(|(_, g)| classes.contains_key(&g.spec.gateway_class_name))
        .collect();
    list.sort_by_key(|(_, g)| g.metadata.creation_timestamp.as_ref().map(|t| t.0));
    for (key, g) in list {
        let class = classes.get(&g.spec.gateway_class_name).cloned().flatten();
        gateway(ctx, gw, opts, &mut ports, key, g, class);
    }
    overlapping_tls(gw);
}

/// Why a Gateway as a whole cannot be served, if it cannot.
fn rejection(
    ctx: &mut Ctx<'_>,
    obj: Subject<'_>,
    g: &Gateway,
    class: Option<String>,
) -> Option<(&'static str, String)> {
    let spec = &g.spec;
    if let Some(why) = class {
        return Some((
            INVALID,
            format!(
                "GatewayClass {} is not accepted: {why}",
                spec.gateway_class_name
            ),
        ));
    }
    if !spec.addresses.is_empty() {
        let why = "spec.addresses: Sluicegate cannot assign addresses to a Gateway; its addresses are those it is published at (status.addresses)";
        ctx.diags
            .report(obj, "spec.addresses", Reason::Unsupported, why);
        return Some((UNSUPPORTED_ADDRESS, why.to_owned()));
    }
    if spec.tls.is_some() {
        let why = "spec.tls: client certificate validation and backend client certificates are not supported";
        ctx.diags.report(obj, "spec.tls", Reason::Unsupported, why);
        return Some((INVALID, why.to_owned()));
    }
    if spec
        .allowed_listeners
        .as_ref()
        .and_then(|a| a.pointer("/namespaces/from"))
        .and_then(|f| f.as_str())
        .is_some_and(|f| f != "None")
    {
        ctx.diags.report(
            obj,
            "spec.allowedListeners",
            Reason::Unsupported,
            "ListenerSets are not supported; only the Gateway's own listeners are served",
        );
    }
    None
}

/// A listener as read, before conflicts are known.
struct Read {
    info: ListenerInfo,
    https: bool,
    /// `false` when the listener itself is invalid (Accepted False).
    accepted: bool,
    conds: Vec<Cond>,
    /// Certificate and its Secret, for HTTPS.
    cert: Option<(Arc<rustls::sign::CertifiedKey>, String)>,
    conflict: Option<(&'static str, String)>,
    resolved: bool,
}

fn gateway(
    ctx: &mut Ctx<'_>,
    gw: &mut Gw,
    opts: &TranslateOptions,
    ports: &mut Ports,
    key: &ObjectKey,
    g: &Gateway,
    class: Option<String>,
) {
    let obj = Subject {
        kind: Kind::Gateway,
        key,
    };
    let rejected = rejection(ctx, obj, g, class);
    let source: Arc<str> = Arc::from(format!("Gateway {}/{}", key.namespace, key.name));
    let mut read: Vec<Read> = g
        .spec
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| listener(ctx, obj, i, l))
        .collect();

    // Conflicts inside the Gateway. On the proxy's own ports the protocol
    // is fixed, and only listeners that differ from it conflict (below).
    let own_port = |p: u16| p == opts.own_ports.http || Some(p) == opts.own_ports.https;
    for i in 0..read.len() {
        if !read[i].accepted {
            continue;
        }
        let (port, https) = (read[i].info.port, read[i].https);
        let protocol_clash = !own_port(port)
            && read
                .iter()
                .any(|o| o.accepted && o.info.port == port && o.https != https);
        let twin = read.iter().enumerate().any(|(j, o)| {
            j != i
                && o.accepted
                && o.info.port == port
                && o.https == https
                && o.info.hostname == read[i].info.hostname
        });
        if protocol_clash {
            read[i].conflict = Some((
                PROTOCOL_CONFLICT,
                format!("another listener of this Gateway uses port {port} with another protocol"),
            ));
        } else if twin {
            read[i].conflict = Some((
                HOSTNAME_CONFLICT,
                format!(
                    "another listener of this Gateway has the same port {port}, protocol and hostname"
                ),
            ));
        }
    }
    // Conflicts with older Gateways and the proxy's own listeners.
    for r in read
        .iter_mut()
        .filter(|r| r.accepted && r.conflict.is_none())
    {
        let port = r.info.port;
        if let Some((https, owner)) = ports.protocol.get(&port)
            && *https != r.https
        {
            r.conflict = Some((
                PROTOCOL_CONFLICT,
                format!("port {port} is already used with another protocol by {owner}"),
            ));
        } else if r.https
            && let Some(owner) = ports.https_hosts.get(&(port, r.info.hostname.clone()))
            && **owner != *source
        {
            r.conflict = Some((
                HOSTNAME_CONFLICT,
                format!(
                    "{owner}, which is older, already serves HTTPS for this hostname on port {port}"
                ),
            ));
        }
    }

    let mut listeners = Vec::with_capacity(read.len());
    let mut states = Vec::with_capacity(read.len());
    let (mut programmed, mut any_accepted) = (0, false);
    for (i, mut r) in read.into_iter().enumerate() {
        let l = &g.spec.listeners[i];
        any_accepted |= r.accepted;
        let conflicted = r.conflict.is_some();
        let serve = rejected.is_none()
            && r.accepted
            && !conflicted
            && r.resolved
            && !r.info.kinds.is_empty()
            && (!r.https || r.cert.is_some());
        if let Some((reason, msg)) = &r.conflict {
            r.conds
                .push(Cond::new(CONFLICTED, true, reason, msg.clone()));
            ctx.diags.report(
                obj,
                format!("spec.listeners[{i}]"),
                Reason::Conflict,
                msg.clone(),
            );
        } else {
            r.conds
                .push(Cond::new(CONFLICTED, false, NO_CONFLICTS, "No conflicts."));
        }
        let programmed_cond = if serve {
            Cond::new(PROGRAMMED, true, PROGRAMMED, "Served.")
        } else {
            let why = if let Some((_, why)) = &rejected {
                format!("the Gateway is not accepted: {why}")
            } else if !r.accepted {
                "the listener is not accepted".to_owned()
            } else if conflicted {
                "the listener is conflicted".to_owned()
            } else if r.info.kinds.is_empty() {
                "the listener allows no route kind Sluicegate serves".to_owned()
            } else {
                "the listener's references cannot be resolved".to_owned()
            };
            Cond::new(PROGRAMMED, false, INVALID, why)
        };
        r.conds.insert(1, programmed_cond);
        if serve {
            let slot_key = (r.info.port, r.info.hostname.clone());
            let shared =
                r.info.port == opts.own_ports.http || Some(r.info.port) == opts.own_ports.https;
            let source_text: Arc<str> = Arc::from(format!(
                "Gateway {}/{} listener {}",
                key.namespace, key.name, l.name
            ));
            let slot = match ports.slots.get(&slot_key) {
                Some(&s) => {
                    gw.slots[s as usize].sources.push(source_text);
                    s
                }
                None => {
                    let s = gw.slots.len() as u32;
                    gw.slots.push(ListenerSlot {
                        port: r.info.port,
                        hostname: r.info.hostname.clone(),
                        tls: r.https,
                        shared,
                        sources: vec![source_text],
                    });
                    ports.slots.insert(slot_key.clone(), s);
                    if let Some((cert, secret)) = r.cert.take() {
                        ctx.tls.push(TlsCertificate {
                            hosts: r.info.hostname.iter().map(ToString::to_string).collect(),
                            secret,
                            source: source.clone(),
                            port: (!shared).then_some(r.info.port),
                            not_after: tls::expiry(&cert),
                            key: cert,
                        });
                    }
                    s
                }
            };
            r.info.slot = Some(slot);
            programmed += 1;
            ports
                .protocol
                .entry(r.info.port)
                .or_insert_with(|| (r.https, source.clone()));
            if r.https {
                ports
                    .https_hosts
                    .entry(slot_key)
                    .or_insert_with(|| source.clone());
            }
        }
        states.push(ListenerState {
            name: l.name.clone(),
            port: r.info.port,
            supported_kinds: r.info.kinds.clone(),
            attached_routes: 0,
            conditions: r.conds,
            programmed: serve,
        });
        listeners.push(r.info);
    }

    let total = listeners.len();
    let accepted = match &rejected {
        Some((reason, why)) => Cond::new(ACCEPTED, false, reason, why.clone()),
        None if total == 0 || !any_accepted => Cond::new(
            ACCEPTED,
            false,
            LISTENERS_NOT_VALID,
            "No listener is valid.",
        ),
        None if programmed < total => Cond::new(
            ACCEPTED,
            true,
            LISTENERS_NOT_VALID,
            format!(
                "{} of {total} listeners cannot be served; see their conditions.",
                total - programmed
            ),
        ),
        None => Cond::new(ACCEPTED, true, ACCEPTED, "Accepted."),
    };
    let programmed = if programmed > 0 {
        Cond::new(
            PROGRAMMED,
            true,
            PROGRAMMED,
            format!("{programmed} of {total} listeners are served."),
        )
    } else {
        Cond::new(PROGRAMMED, false, INVALID, "No listener is served.")
    };
    gw.status.gateways.push(GatewayState {
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        conditions: vec![accepted, programmed],
        listeners: states,
    });
    gw.gateways.insert(
        key.clone(),
        GatewayInfo {
            key: key.clone(),
            rejected: rejected.map(|(_, why)| why),
            state: gw.status.gateways.len() - 1,
            listeners,
        },
    );
}

/// Reads one listener: its own validity, route kinds and certificate.
fn listener(ctx: &mut Ctx<'_>, obj: Subject<'_>, i: usize, l: &Listener) -> Read {
    let field = format!("spec.listeners[{i}]");
    let mut conds = Vec::with_capacity(5);
    let mut accepted: Result<(), (&'static str, String)> = Ok(());
    let https = match l.protocol.as_str() {
        "HTTP" => false,
        "HTTPS" => true,
        other => {
            accepted = Err((
                UNSUPPORTED_PROTOCOL,
                format!("protocol {other:?} is not supported: use HTTP or HTTPS"),
            ));
            false
        }
    };
    let port = u16::try_from(l.port).ok().filter(|p| *p > 0);
    if port.is_none() && accepted.is_ok() {
        accepted = Err((
            UNSUPPORTED_VALUE,
            format!("port {} is outside 1-65535", l.port),
        ));
    }
    let hostname = match l.hostname.as_deref().filter(|h| !h.is_empty()) {
        None => None,
        Some(h) => match super::hostname(h) {
            Ok(m) => Some(m),
            Err(e) => {
                if accepted.is_ok() {
                    accepted = Err((UNSUPPORTED_VALUE, format!("hostname: {e}")));
                }
                None
            }
        },
    };
    let namespaces = match l.allowed_routes.namespaces.from.as_str() {
        "Same" => AllowedNamespaces::Same,
        "All" => AllowedNamespaces::All,
        "Selector" => match l
            .allowed_routes
            .namespaces
            .selector
            .as_ref()
            .map(Selector::parse)
        {
            Some(Ok(s)) => AllowedNamespaces::Selector(s),
            Some(Err(e)) => {
                if accepted.is_ok() {
                    accepted = Err((
                        UNSUPPORTED_VALUE,
                        format!("allowedRoutes.namespaces.selector: {e}"),
                    ));
                }
                AllowedNamespaces::Same
            }
            None => {
                if accepted.is_ok() {
                    accepted = Err((
                        UNSUPPORTED_VALUE,
                        "allowedRoutes.namespaces: from Selector needs a selector".to_owned(),
                    ));
                }
                AllowedNamespaces::Same
            }
        },
        other => {
            if accepted.is_ok() {
                accepted = Err((
                    UNSUPPORTED_VALUE,
                    format!("allowedRoutes.namespaces.from {other:?} is not Same, All or Selector"),
                ));
            }
            AllowedNamespaces::Same
        }
    };

    // Route kinds, then certificates: the first problem is the reason.
    let mut kinds_problem: Option<(&'static str, String)> = None;
    let mut cert_problem: Option<(&'static str, String)> = None;
    let mut kinds: Vec<&'static str> = Vec::new();
    if !matches!(l.protocol.as_str(), "HTTP" | "HTTPS") {
        // No route kind Sluicegate serves fits another protocol.
    } else if l.allowed_routes.kinds.is_empty() {
        kinds = vec![HTTP_ROUTE, GRPC_ROUTE];
    } else {
        for k in &l.allowed_routes.kinds {
            let known = [HTTP_ROUTE, GRPC_ROUTE].into_iter().find(|n| *n == k.kind);
            match known {
                Some(n) if k.group == GROUP => {
                    if !kinds.contains(&n) {
                        kinds.push(n);
                    }
                }
                _ => {
                    kinds_problem.get_or_insert((
                        INVALID_ROUTE_KINDS,
                        format!(
                            "route kind {} is not supported on {} listeners",
                            super::rules::group_kind(&k.group, &k.kind),
                            l.protocol
                        ),
                    ));
                }
            }
        }
    }

    let mut cert = None;
    if https && accepted.is_ok() {
        match l.tls.as_ref() {
            None => {
                accepted = Err((UNSUPPORTED_VALUE, "an HTTPS listener needs tls".to_owned()));
            }
            Some(t) if t.mode.as_deref().is_some_and(|m| m != "Terminate") => {
                accepted = Err((
                    UNSUPPORTED_VALUE,
                    format!(
                        "tls.mode {:?} is not supported on HTTPS listeners: use Terminate",
                        t.mode.as_deref().unwrap_or("")
                    ),
                ));
            }
            Some(t) => {
                if !t.options.is_empty() {
                    ctx.diags.report(
                        obj,
                        format!("{field}.tls.options"),
                        Reason::Unsupported,
                        "TLS options are not supported and are ignored",
                    );
                }
                if t.certificate_refs.is_empty() {
                    cert_problem.get_or_insert((
                        INVALID_CERTIFICATE_REF,
                        "tls.certificateRefs is empty".to_owned(),
                    ));
                }
                for (j, r) in t.certificate_refs.iter().enumerate() {
                    let f = format!("{field}.tls.certificateRefs[{j}]");
                    match certificate(ctx, obj, &f, r) {
                        Ok(k) if cert.is_none() => cert = Some(k),
                        Ok(_) => ctx.diags.report(
                            obj,
                            f,
                            Reason::Unsupported,
                            "only the first usable certificate of a listener is used",
                        ),
                        Err((reason, msg)) => {
                            ctx.diags
                                .report(obj, f, Reason::InvalidCertificate, msg.clone());
                            cert_problem.get_or_insert((reason, msg));
                        }
                    }
                }
            }
        }
    }
    match &accepted {
        Ok(()) => conds.push(Cond::new(ACCEPTED, true, ACCEPTED, "Accepted.")),
        Err((reason, msg)) => {
            ctx.diags
                .report(obj, field.clone(), Reason::Unsupported, msg.clone());
            conds.push(Cond::new(ACCEPTED, false, reason, msg.clone()));
        }
    }
    match kinds_problem.as_ref().or(cert_problem.as_ref()) {
        None => conds.push(Cond::new(RESOLVED_REFS, true, RESOLVED_REFS, "Resolved.")),
        Some((reason, msg)) => conds.push(Cond::new(RESOLVED_REFS, false, reason, msg.clone())),
    }
    // Unknown route kinds do not keep the listener from serving the kinds
    // it does allow; an HTTPS listener needs one usable certificate.
    let resolved = !https || cert.is_some();
    Read {
        info: ListenerInfo {
            name: l.name.clone(),
            port: port.unwrap_or(0),
            hostname,
            kinds,
            namespaces,
            slot: None,
        },
        https,
        accepted: accepted.is_ok(),
        conds,
        cert,
        conflict: None,
        resolved,
    }
}

/// The certificate a `certificateRefs` entry names, and its Secret; or
/// the reason and message of why it cannot be used.
fn certificate(
    ctx: &mut Ctx<'_>,
    obj: Subject<'_>,
    field: &str,
    r: &crate::api::gateway_api::SecretObjectReference,
) -> Result<(Arc<rustls::sign::CertifiedKey>, String), (&'static str, String)> {
    let ns = r.namespace.as_deref().unwrap_or(&obj.key.namespace);
    if !r.group.is_empty() || r.kind != "Secret" {
        return Err((
            INVALID_CERTIFICATE_REF,
            format!(
                "{field}: kind {} is not supported; use a Secret",
                super::rules::group_kind(&r.group, &r.kind)
            ),
        ));
    }
    let from = RefEnd {
        group: GROUP,
        kind: "Gateway",
        namespace: &obj.key.namespace,
    };
    let to = RefEnd {
        group: "",
        kind: "Secret",
        namespace: ns,
    };
    if !refs::granted(ctx.state, from, to, &r.name) {
        return Err((
            REF_NOT_PERMITTED,
            format!(
                "{field}: Secret {ns}/{} is in another namespace and no ReferenceGrant there allows it",
                r.name
            ),
        ));
    }
    tls::lookup(ctx, &ObjectKey::new(ns, r.name.as_str()))
        .map(|k| (k, format!("{ns}/{}", r.name)))
        .map_err(|e| (INVALID_CERTIFICATE_REF, format!("{field}: {e}")))
}

/// Marks HTTPS listeners on one port whose hostnames overlap.
fn overlapping_tls(gw: &mut Gw) {
    let https: Vec<(usize, usize, u16, Option<HostMatch>)> = gw
        .gateways
        .values()
        .flat_map(|g| {
            g.listeners.iter().enumerate().filter_map(move |(i, l)| {
                let slot = l.slot?;
                Some((g.state, i, l.port, l.hostname.clone(), slot))
            })
        })
        .filter(|(_, _, _, _, slot)| gw.slots[*slot as usize].tls)
        .map(|(s, i, port, h, _)| (s, i, port, h))
        .collect();
    let mut marked: BTreeMap<(usize, usize), String> = BTreeMap::new();
    for (a, x) in https.iter().enumerate() {
        for y in &https[a + 1..] {
            if x.2 != y.2 || x.3 == y.3 {
                continue;
            }
            if overlap(x.3.as_ref(), y.3.as_ref()) {
                let name = |h: &Option<HostMatch>| {
                    h.as_ref().map_or("any host".to_owned(), |h| {
                        h.to_string().replacen("**.", "*.", 1)
                    })
                };
                marked
                    .entry((x.0, x.1))
                    .or_insert_with(|| format!("hostname overlaps {} on port {}", name(&y.3), x.2));
                marked
                    .entry((y.0, y.1))
                    .or_insert_with(|| format!("hostname overlaps {} on port {}", name(&x.3), y.2));
            }
        }
    }
    for ((s, i), msg) in marked {
        gw.status.gateways[s].listeners[i]
            .conditions
            .push(Cond::new(
                OVERLAPPING_TLS_CONFIG,
                true,
                OVERLAPPING_HOSTNAMES,
                msg,
            ));
    }
}

/// Whether two listener hostnames (none: any) cover a common host.
fn overlap(a: Option<&HostMatch>, b: Option<&HostMatch>) -> bool {
    match (a, b) {
        (None, _) | (_, None) => true,
        (Some(HostMatch::Exact(x)), Some(h)) | (Some(h), Some(HostMatch::Exact(x))) => h.covers(x),
        (Some(HostMatch::Suffix(x)), Some(HostMatch::Suffix(y))) => {
            x == y || x.ends_with(&format!(".{y}")) || y.ends_with(&format!(".{x}"))
        }
        _ => false,
    }
}
