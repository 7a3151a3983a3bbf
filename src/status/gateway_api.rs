//! The status Gateway API objects should carry, from translation's
//! conclusions ([`GatewayApiStatus`]) and what only the running gateway
//! knows: the addresses it is published at, and the ports it could not
//! open.
//!
//! Pure, like [`super::conditions`]: a condition keeps its
//! `lastTransitionTime` while its status stays the same, every condition
//! carries the generation it describes, and a route's status keeps the
//! entries other controllers wrote for their own parents.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::conditions::{MAX_MESSAGE, keep_transition_time, truncate};
use crate::api::gateway_api::{
    CONTROLLER_NAME, GatewayClassStatus, GatewayStatus, GatewayStatusAddress, ListenerStatus,
    RouteGroupKind, RouteParentStatus, RouteStatus,
};
use crate::translate::condition_names::*;
use crate::translate::{ClassState, Cond, GatewayState, ParentState};

/// Conditions as Kubernetes writes them.
fn conditions(
    list: &[Cond],
    generation: Option<i64>,
    previous: &[Condition],
    now: &Time,
) -> Vec<Condition> {
    list.iter()
        .map(|c| {
            let k = Condition {
                type_: c.kind.to_owned(),
                status: c.status_text().to_owned(),
                reason: c.reason.to_owned(),
                message: truncate(c.message.clone(), MAX_MESSAGE),
                observed_generation: generation,
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            };
            keep_transition_time(k, previous, now)
        })
        .collect()
}

/// The status of a GatewayClass of Sluicegate's.
pub fn gateway_class(
    state: &ClassState,
    generation: Option<i64>,
    current: Option<&GatewayClassStatus>,
    now: &Time,
) -> GatewayClassStatus {
    let previous = current.map_or(&[][..], |s| &s.conditions[..]);
    GatewayClassStatus {
        conditions: conditions(&state.conditions, generation, previous, now),
    }
}

/// The status of a Gateway: translation's conclusions, the addresses the
/// gateway is published at, and listeners whose port could not be opened
/// (by this replica) turned `PortUnavailable`.
pub fn gateway(
    state: &GatewayState,
    generation: Option<i64>,
    current: Option<&GatewayStatus>,
    addresses: &[GatewayStatusAddress],
    port_errors: &BTreeMap<u16, String>,
    now: &Time,
) -> GatewayStatus {
    let mut listeners = Vec::with_capacity(state.listeners.len());
    let mut served = 0;
    for l in &state.listeners {
        let previous = current
            .and_then(|s| s.listeners.iter().find(|p| p.name == l.name))
            .map_or(&[][..], |p| &p.conditions[..]);
        let mut conds = l.conditions.clone();
        let failed = l.programmed.then(|| port_errors.get(&l.port)).flatten();
        if let Some(why) = failed {
            for c in &mut conds {
                match c.kind {
                    ACCEPTED => *c = Cond::new(ACCEPTED, false, PORT_UNAVAILABLE, why.clone()),
                    PROGRAMMED => {
                        *c = Cond::new(
                            PROGRAMMED,
                            false,
                            INVALID,
                            format!("port {} could not be opened", l.port),
                        )
                    }
                    _ => {}
                }
            }
        } else if l.programmed {
            served += 1;
        }
        listeners.push(ListenerStatus {
            name: l.name.clone(),
            supported_kinds: l
                .supported_kinds
                .iter()
                .map(|k| RouteGroupKind::gateway_api(k))
                .collect(),
            attached_routes: l.attached_routes,
            conditions: conditions(&conds, generation, previous, now),
        });
    }
    let mut gateway_conds = state.conditions.clone();
    let total = state.listeners.len();
    let before = state.listeners.iter().filter(|l| l.programmed).count();
    if served != before {
        for c in &mut gateway_conds {
            if c.kind == PROGRAMMED {
                *c = if served > 0 {
                    Cond::new(
                        PROGRAMMED,
                        true,
                        PROGRAMMED,
                        format!("{served} of {total} listeners are served."),
                    )
                } else {
                    Cond::new(
                        PROGRAMMED,
                        false,
                        INVALID,
                        "No listener is served: their ports could not be opened.",
                    )
                };
            }
            if c.kind == ACCEPTED && c.status && c.reason == ACCEPTED {
                *c = Cond::new(
                    ACCEPTED,
                    true,
                    LISTENERS_NOT_VALID,
                    format!(
                        "{} of {total} listeners cannot be served; see their conditions.",
                        total - served
                    ),
                );
            }
        }
    }
    let previous = current.map_or(&[][..], |s| &s.conditions[..]);
    GatewayStatus {
        addresses: addresses.to_vec(),
        conditions: conditions(&gateway_conds, generation, previous, now),
        listeners,
    }
}

/// The status of a route: the entries of other controllers as they are,
/// then one per parent of Sluicegate's, in the order of `parents`.
pub fn route(
    parents: &[ParentState],
    generation: Option<i64>,
    current: Option<&RouteStatus>,
    now: &Time,
) -> RouteStatus {
    let entries = current.map_or(&[][..], |s| &s.parents[..]);
    let mut out: Vec<RouteParentStatus> = entries
        .iter()
        .filter(|p| p.controller_name != CONTROLLER_NAME)
        .cloned()
        .collect();
    for p in parents {
        let previous = entries
            .iter()
            .find(|e| e.controller_name == CONTROLLER_NAME && e.parent_ref == p.parent_ref)
            .map_or(&[][..], |e| &e.conditions[..]);
        out.push(RouteParentStatus {
            parent_ref: p.parent_ref.clone(),
            controller_name: CONTROLLER_NAME.to_owned(),
            conditions: conditions(&p.conditions, generation, previous, now),
        });
    }
    RouteStatus { parents: out }
}

/// A published address as a Gateway address.
pub fn address(ip: Option<&str>, hostname: Option<&str>) -> Option<GatewayStatusAddress> {
    match (ip, hostname) {
        (Some(ip), _) if !ip.is_empty() => Some(GatewayStatusAddress {
            kind: "IPAddress".into(),
            value: ip.to_owned(),
        }),
        (_, Some(h)) if !h.is_empty() => Some(GatewayStatusAddress {
            kind: "Hostname".into(),
            value: h.to_owned(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::gateway_api::ParentReference;
    use crate::translate::ListenerState;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    fn gateway_state() -> GatewayState {
        let ok = |kind| Cond::new(kind, true, kind, "ok");
        GatewayState {
            namespace: "ns".into(),
            name: "gw".into(),
            conditions: vec![ok(ACCEPTED), ok(PROGRAMMED)],
            listeners: vec![
                ListenerState {
                    name: "a".into(),
                    port: 9000,
                    supported_kinds: vec!["HTTPRoute"],
                    attached_routes: 2,
                    conditions: vec![ok(ACCEPTED), ok(PROGRAMMED), ok(RESOLVED_REFS)],
                    programmed: true,
                },
                ListenerState {
                    name: "b".into(),
                    port: 9001,
                    supported_kinds: vec!["HTTPRoute"],
                    attached_routes: 0,
                    conditions: vec![ok(ACCEPTED), ok(PROGRAMMED), ok(RESOLVED_REFS)],
                    programmed: true,
                },
            ],
        }
    }

    #[test]
    fn a_port_that_cannot_be_opened_makes_its_listener_unavailable() {
        let errors = BTreeMap::from([(9001, "permission denied".to_owned())]);
        let s = gateway(&gateway_state(), Some(3), None, &[], &errors, &at(5));
        let b = &s.listeners[1];
        let accepted = b.conditions.iter().find(|c| c.type_ == ACCEPTED).unwrap();
        assert_eq!(
            (accepted.status.as_str(), accepted.reason.as_str()),
            ("False", PORT_UNAVAILABLE)
        );
        assert_eq!(accepted.observed_generation, Some(3));
        let a = &s.listeners[0];
        assert!(a.conditions.iter().all(|c| c.status == "True"));
        assert_eq!(a.attached_routes, 2);
        assert_eq!(a.supported_kinds[0].group, "gateway.networking.k8s.io");
        let reason = |t: &str| {
            let c = s.conditions.iter().find(|c| c.type_ == t).unwrap();
            (c.status.clone(), c.reason.clone())
        };
        assert_eq!(
            reason(ACCEPTED),
            ("True".into(), LISTENERS_NOT_VALID.into())
        );
        assert_eq!(reason(PROGRAMMED), ("True".into(), PROGRAMMED.into()));
        // Both failing: the Gateway is not programmed.
        let errors = BTreeMap::from([(9000, "x".to_owned()), (9001, "y".to_owned())]);
        let s = gateway(&gateway_state(), Some(3), None, &[], &errors, &at(5));
        let p = s.conditions.iter().find(|c| c.type_ == PROGRAMMED).unwrap();
        assert_eq!(p.status, "False");
    }

    #[test]
    fn route_status_keeps_other_controllers_entries_and_transition_times() {
        let parent = |name: &str| ParentReference {
            group: "gateway.networking.k8s.io".into(),
            kind: "Gateway".into(),
            namespace: None,
            name: name.into(),
            section_name: None,
            port: None,
        };
        let theirs = RouteParentStatus {
            parent_ref: parent("theirs"),
            controller_name: "example.com/other".into(),
            conditions: Vec::new(),
        };
        let ours_stale = RouteParentStatus {
            parent_ref: parent("gone"),
            controller_name: CONTROLLER_NAME.into(),
            conditions: Vec::new(),
        };
        let current = RouteStatus {
            parents: vec![theirs.clone(), ours_stale],
        };
        let mine = ParentState {
            parent_ref: parent("mine"),
            conditions: vec![Cond::new(ACCEPTED, true, ACCEPTED, "ok")],
        };
        let first = route(std::slice::from_ref(&mine), Some(1), Some(&current), &at(1));
        assert_eq!(first.parents.len(), 2);
        assert_eq!(first.parents[0], theirs);
        assert_eq!(first.parents[1].parent_ref.name, "mine");
        let again = route(&[mine], Some(1), Some(&first), &at(9));
        assert_eq!(first, again);
    }
}
