//! Which listeners a route attaches to, and with which hostnames.
//!
//! A parent reference names a Gateway, optionally narrowed to listeners by
//! `sectionName` and `port`. Of those, a route attaches to the ones whose
//! `allowedRoutes` admit its kind and namespace, and whose hostname
//! intersects its own. Each step that leaves nothing gives the Gateway
//! API's reason: `NoMatchingParent`, `NotAllowedByListeners`,
//! `NoMatchingListenerHostname`.

use super::refs;
use super::status::names::*;
use super::{GatewayInfo, Gw, Namespaces};
use crate::api::gateway_api::{GROUP, ParentReference};
use crate::routing::HostMatch;
use crate::translate::{ClusterState, ObjectKey};

/// A route's attachment to one parent.
pub(super) struct Parent {
    pub parent_ref: ParentReference,
    /// `Err((reason, message))` when the route attached to no listener.
    pub accepted: Result<(), (&'static str, String)>,
    /// Slots the route is served on, with its hostnames there.
    pub targets: Vec<(u32, Vec<HostMatch>)>,
}

/// The parents of a route that are Gateways of Sluicegate's, in the
/// order of `parent_refs`; references to anything else are not ours to
/// answer and are left out.
pub(super) fn parents(
    gw: &mut Gw,
    state: &ClusterState,
    namespaces: &mut Namespaces,
    kind: &'static str,
    route: &ObjectKey,
    hostnames: &[HostMatch],
    parent_refs: &[ParentReference],
) -> Vec<Parent> {
    let mut out = Vec::with_capacity(parent_refs.len());
    // Listeners already counted for this route, by (Gateway, listener).
    let mut counted: Vec<(usize, usize)> = Vec::new();
    for p in parent_refs {
        if p.group != GROUP || p.kind != "Gateway" {
            continue;
        }
        let ns = p.namespace.as_deref().unwrap_or(&route.namespace);
        let key = ObjectKey::new(ns, p.name.as_str());
        let Some(g) = gw.gateways.get(&key) else {
            continue;
        };
        let result = attach(g, state, namespaces, kind, route, hostnames, p);
        let accepted = match result {
            Ok(listeners) => {
                let mut targets = Vec::new();
                for (l, hosts) in listeners {
                    if !counted.contains(&(g.state, l)) {
                        counted.push((g.state, l));
                        gw.status.gateways[g.state].listeners[l].attached_routes += 1;
                    }
                    if let Some(slot) = g.listeners[l].slot {
                        targets.push((slot, hosts));
                    }
                }
                out.push(Parent {
                    parent_ref: p.clone(),
                    accepted: Ok(()),
                    targets,
                });
                continue;
            }
            Err(e) => Err(e),
        };
        out.push(Parent {
            parent_ref: p.clone(),
            accepted,
            targets: Vec::new(),
        });
    }
    out
}

/// The listeners of `g` that the route attaches to through `p`, with the
/// route's hostnames on each.
#[allow(clippy::type_complexity)]
fn attach(
    g: &GatewayInfo,
    state: &ClusterState,
    namespaces: &mut Namespaces,
    kind: &'static str,
    route: &ObjectKey,
    hostnames: &[HostMatch],
    p: &ParentReference,
) -> Result<Vec<(usize, Vec<HostMatch>)>, (&'static str, String)> {
    if let Some(why) = &g.rejected {
        return Err((
            NO_MATCHING_PARENT,
            format!(
                "Gateway {}/{} is not accepted: {why}",
                g.key.namespace, g.key.name
            ),
        ));
    }
    let named: Vec<usize> = (0..g.listeners.len())
        .filter(|&i| {
            let l = &g.listeners[i];
            p.section_name.as_deref().is_none_or(|s| s == l.name)
                && p.port.is_none_or(|port| i32::from(l.port) == port)
        })
        .collect();
    if named.is_empty() {
        let which = match (&p.section_name, p.port) {
            (Some(s), Some(port)) => format!("named {s:?} on port {port}"),
            (Some(s), None) => format!("named {s:?}"),
            (None, Some(port)) => format!("on port {port}"),
            (None, None) => "at all".to_owned(),
        };
        return Err((
            NO_MATCHING_PARENT,
            format!(
                "Gateway {}/{} has no listener {which}",
                g.key.namespace, g.key.name
            ),
        ));
    }
    let allowed: Vec<usize> = named
        .into_iter()
        .filter(|&i| {
            let l = &g.listeners[i];
            l.kinds.contains(&kind)
                && l.admits(state, namespaces, &g.key.namespace, &route.namespace)
        })
        .collect();
    if allowed.is_empty() {
        return Err((
            NOT_ALLOWED_BY_LISTENERS,
            format!(
                "no listener of Gateway {}/{} this reference selects allows {kind}s from namespace {}",
                g.key.namespace, g.key.name, route.namespace
            ),
        ));
    }
    let attached: Vec<(usize, Vec<HostMatch>)> = allowed
        .into_iter()
        .filter_map(|i| intersect(g.listeners[i].hostname.as_ref(), hostnames).map(|h| (i, h)))
        .collect();
    if attached.is_empty() {
        return Err((
            NO_MATCHING_LISTENER_HOSTNAME,
            format!(
                "the route's hostnames match the hostname of no listener of Gateway {}/{} it may attach to",
                g.key.namespace, g.key.name
            ),
        ));
    }
    Ok(attached)
}

/// The hostnames a route serves on a listener: the intersection of the
/// listener's hostname (none: any) and the route's (none: any). `None`
/// when they have nothing in common; an empty list means any host.
pub(super) fn intersect(
    listener: Option<&HostMatch>,
    route: &[HostMatch],
) -> Option<Vec<HostMatch>> {
    let Some(l) = listener else {
        return Some(route.to_vec());
    };
    if route.is_empty() {
        return Some(vec![l.clone()]);
    }
    let mut out: Vec<HostMatch> = Vec::new();
    for r in route {
        let common = match (l, r) {
            (HostMatch::Exact(a), HostMatch::Exact(b)) => (a == b).then(|| l.clone()),
            (HostMatch::Exact(a), _) => r.covers(a).then(|| l.clone()),
            (_, HostMatch::Exact(b)) => l.covers(b).then(|| r.clone()),
            (HostMatch::Suffix(a), HostMatch::Suffix(b)) => {
                if a == b || is_under(b, a) {
                    Some(r.clone())
                } else if is_under(a, b) {
                    Some(l.clone())
                } else {
                    None
                }
            }
            // Listeners and routes only hold exact names and Gateway
            // wildcards.
            _ => None,
        };
        if let Some(h) = common
            && !out.contains(&h)
        {
            out.push(h);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Whether domain `inner` is strictly below domain `outer`.
fn is_under(inner: &str, outer: &str) -> bool {
    inner
        .strip_suffix(outer)
        .is_some_and(|front| front.len() > 1 && front.ends_with('.'))
}

impl super::ListenerInfo {
    /// Whether routes from namespace `route_ns` may attach, for a Gateway
    /// in `gateway_ns`.
    fn admits(
        &self,
        state: &ClusterState,
        namespaces: &mut Namespaces,
        gateway_ns: &str,
        route_ns: &str,
    ) -> bool {
        match &self.namespaces {
            super::AllowedNamespaces::Same => gateway_ns == route_ns,
            super::AllowedNamespaces::All => true,
            super::AllowedNamespaces::Selector(s) => {
                let labels = namespaces
                    .entry(route_ns.to_owned())
                    .or_insert_with(|| refs::namespace_labels(state, route_ns));
                s.matches(labels)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(h: &str) -> HostMatch {
        HostMatch::Exact(h.into())
    }

    fn wild(h: &str) -> HostMatch {
        HostMatch::Suffix(h.into())
    }

    #[test]
    fn hostnames_intersect_as_the_specification_says() {
        // No listener hostname: the route's own, any host when none.
        assert_eq!(intersect(None, &[]), Some(vec![]));
        assert_eq!(
            intersect(None, &[exact("a.com")]),
            Some(vec![exact("a.com")])
        );
        // No route hostname: the listener's.
        assert_eq!(
            intersect(Some(&wild("a.com")), &[]),
            Some(vec![wild("a.com")])
        );
        let l = exact("test.example.com");
        assert_eq!(
            intersect(Some(&l), &[exact("test.example.com"), wild("example.com")]),
            Some(vec![l.clone()])
        );
        assert_eq!(intersect(Some(&l), &[exact("other.example.com")]), None);
        assert_eq!(intersect(Some(&l), &[wild("test.example.com")]), None);
        let l = wild("example.com");
        assert_eq!(
            intersect(
                Some(&l),
                &[
                    wild("example.com"),
                    exact("test.example.com"),
                    exact("foo.test.example.com"),
                    exact("example.com"),
                    exact("test.example.net"),
                ]
            ),
            Some(vec![
                wild("example.com"),
                exact("test.example.com"),
                exact("foo.test.example.com"),
            ])
        );
        // The more specific wildcard of the two.
        assert_eq!(
            intersect(Some(&l), &[wild("foo.example.com")]),
            Some(vec![wild("foo.example.com")])
        );
        assert_eq!(
            intersect(Some(&wild("foo.example.com")), &[wild("example.com")]),
            Some(vec![wild("foo.example.com")])
        );
        assert_eq!(intersect(Some(&wild("a.com")), &[wild("b.com")]), None);
        assert_eq!(intersect(Some(&wild("xa.com")), &[wild("a.com")]), None);
    }
}
