//! What the status of an object should be, computed from translation.
//!
//! Pure: no client, no clock other than the one passed in. The writer
//! compares the result with what the object carries and writes only when
//! they differ, so the rules here decide how often the API server is
//! written to: a condition keeps its `lastTransitionTime` while its status
//! stays the same, and nothing in a status depends on the time of the
//! translation.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{ApiRouteStatus, PluginConfigStatus};
use crate::translate::{Diagnostic, Severity};

/// Condition types.
pub const ACCEPTED: &str = "Accepted";
pub const PROGRAMMED: &str = "Programmed";
pub const READY: &str = "Ready";

/// Kubernetes caps condition messages at 32 KiB; ours stay readable in
/// `kubectl describe` and in Argo CD's UI.
pub const MAX_MESSAGE: usize = 1024;

/// The status an ApiRoute should carry.
///
/// `diagnostics` are the findings about this object; `programmed` tells
/// whether at least one of its routes is in the live table.
pub fn api_route(
    generation: Option<i64>,
    current: Option<&ApiRouteStatus>,
    diagnostics: &[&Diagnostic],
    programmed: bool,
    now: &Time,
) -> ApiRouteStatus {
    let previous = current.map_or(&[][..], |s| &s.conditions[..]);
    let accepted = accepted(generation, diagnostics);
    let programmed = if programmed {
        cond(
            PROGRAMMED,
            true,
            "Programmed",
            "Its routes are in the live routing table.".into(),
            generation,
        )
    } else {
        cond(
            PROGRAMMED,
            false,
            "NoRoutes",
            "None of its routes could be installed; see the Accepted condition.".into(),
            generation,
        )
    };
    let ready = ready(&[&accepted, &programmed], generation);
    ApiRouteStatus {
        observed_generation: generation,
        conditions: [accepted, programmed, ready]
            .into_iter()
            .map(|c| keep_transition_time(c, previous, now))
            .collect(),
    }
}

/// The status a PluginConfig should carry.
pub fn plugin_config(
    generation: Option<i64>,
    current: Option<&PluginConfigStatus>,
    diagnostics: &[&Diagnostic],
    now: &Time,
) -> PluginConfigStatus {
    let previous = current.map_or(&[][..], |s| &s.conditions[..]);
    let accepted = accepted(generation, diagnostics);
    let ready = ready(&[&accepted], generation);
    PluginConfigStatus {
        observed_generation: generation,
        conditions: [accepted, ready]
            .into_iter()
            .map(|c| keep_transition_time(c, previous, now))
            .collect(),
    }
}

/// `Accepted`: false when anything of the object was not installed, with
/// the reason of the first such finding; true otherwise, with the reason
/// of the first warning (a missing Service: the route answers 503 until it
/// appears), so that `kubectl get` shows it without reading messages.
fn accepted(generation: Option<i64>, diagnostics: &[&Diagnostic]) -> Condition {
    let errors: Vec<&Diagnostic> = diagnostics
        .iter()
        .copied()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    if let Some(first) = errors.first() {
        return cond(
            ACCEPTED,
            false,
            reason_text(first),
            message(&errors),
            generation,
        );
    }
    match diagnostics.first() {
        Some(first) => cond(
            ACCEPTED,
            true,
            reason_text(first),
            message(diagnostics),
            generation,
        ),
        None => cond(ACCEPTED, true, "Accepted", "Accepted.".into(), generation),
    }
}

/// `Ready`: the conjunction of the others, for tools that only read
/// `Ready` (Flux's kstatus, many dashboards).
fn ready(parts: &[&Condition], generation: Option<i64>) -> Condition {
    match parts.iter().find(|c| c.status != "True") {
        Some(bad) => cond(
            READY,
            false,
            &bad.reason,
            format!("{} is False: {}", bad.type_, bad.message),
            generation,
        ),
        None => cond(
            READY,
            true,
            "Ready",
            "Accepted and live.".into(),
            generation,
        ),
    }
}

fn reason_text(d: &Diagnostic) -> &'static str {
    use crate::translate::Reason;
    match d.reason {
        Reason::InvalidSpec => "InvalidSpec",
        Reason::BackendNotFound => "BackendNotFound",
        Reason::PluginConfigNotFound => "PluginConfigNotFound",
        Reason::Unsupported => "Unsupported",
        Reason::Conflict => "Conflict",
        Reason::InvalidCertificate => "InvalidCertificate",
        Reason::MainIngressNotFound => "MainIngressNotFound",
    }
}

/// The findings as `field: message` sentences, capped at [`MAX_MESSAGE`]
/// bytes on a character boundary.
fn message(diagnostics: &[&Diagnostic]) -> String {
    let mut out = String::new();
    for d in diagnostics {
        if !out.is_empty() {
            out.push_str("; ");
        }
        if !d.field.is_empty() {
            out.push_str(&d.field);
            out.push_str(": ");
        }
        out.push_str(&d.message);
        if out.len() > MAX_MESSAGE {
            break;
        }
    }
    truncate(out, MAX_MESSAGE)
}

/// Cuts `text` to at most `max` bytes, marking the cut.
pub fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    const MORE: &str = " …";
    let mut end = max - MORE.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(MORE);
    text
}

fn cond(
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: truncate(message, MAX_MESSAGE),
        observed_generation: generation,
        // Filled by keep_transition_time.
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    }
}

/// A condition whose status did not change keeps its transition time, as
/// the API conventions require (and so that an unchanged status compares
/// equal and is not written again).
pub(crate) fn keep_transition_time(
    mut c: Condition,
    previous: &[Condition],
    now: &Time,
) -> Condition {
    c.last_transition_time = previous
        .iter()
        .find(|p| p.type_ == c.type_ && p.status == c.status)
        .map_or_else(|| now.clone(), |p| p.last_transition_time.clone());
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::{Kind, ObjectRef, Reason};

    fn diag(reason: Reason, severity: Severity, field: &str, message: &str) -> Diagnostic {
        Diagnostic {
            object: ObjectRef::new(Kind::ApiRoute, "ns", "r"),
            field: field.into(),
            reason,
            severity,
            message: message.into(),
        }
    }

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    fn get<'a>(s: &'a ApiRouteStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn valid_programmed_route_is_ready() {
        let s = api_route(Some(3), None, &[], true, &at(10));
        assert_eq!(s.observed_generation, Some(3));
        for t in [ACCEPTED, PROGRAMMED, READY] {
            let c = get(&s, t);
            assert_eq!(c.status, "True", "{t}");
            assert_eq!(c.observed_generation, Some(3));
            assert_eq!(c.last_transition_time, at(10));
        }
    }

    #[test]
    fn error_rejects_with_its_reason_and_field() {
        let d = diag(
            Reason::InvalidSpec,
            Severity::Error,
            "spec.routes[0].match.paths[0].value",
            "must start with /",
        );
        let s = api_route(Some(1), None, &[&d], false, &at(1));
        let a = get(&s, ACCEPTED);
        assert_eq!(
            (a.status.as_str(), a.reason.as_str()),
            ("False", "InvalidSpec")
        );
        assert_eq!(
            a.message,
            "spec.routes[0].match.paths[0].value: must start with /"
        );
        assert_eq!(get(&s, PROGRAMMED).status, "False");
        let r = get(&s, READY);
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("False", "InvalidSpec")
        );
    }

    #[test]
    fn warning_keeps_accepted_true_and_names_the_reason() {
        let d = diag(
            Reason::BackendNotFound,
            Severity::Warning,
            "spec.routes[0].backends[0].serviceName",
            "Service ns/x not found",
        );
        let s = api_route(Some(1), None, &[&d], true, &at(1));
        let a = get(&s, ACCEPTED);
        assert_eq!(
            (a.status.as_str(), a.reason.as_str()),
            ("True", "BackendNotFound")
        );
        assert_eq!(get(&s, READY).status, "True");
    }

    #[test]
    fn unchanged_status_keeps_transition_times_and_compares_equal() {
        let first = api_route(Some(1), None, &[], true, &at(1));
        let again = api_route(Some(1), Some(&first), &[], true, &at(99));
        assert_eq!(first, again);
        // A new generation changes observedGeneration but not the times.
        let next = api_route(Some(2), Some(&first), &[], true, &at(99));
        assert_ne!(first, next);
        assert_eq!(get(&next, ACCEPTED).last_transition_time, at(1));
        // A flip takes the new time.
        let d = diag(Reason::InvalidSpec, Severity::Error, "spec", "bad");
        let flipped = api_route(Some(3), Some(&next), &[&d], true, &at(50));
        assert_eq!(get(&flipped, ACCEPTED).last_transition_time, at(50));
        assert_eq!(get(&flipped, PROGRAMMED).last_transition_time, at(1));
    }

    #[test]
    fn messages_are_capped_on_a_character_boundary() {
        let long: Vec<Diagnostic> = (0..100)
            .map(|i| {
                diag(
                    Reason::InvalidSpec,
                    Severity::Error,
                    &format!("spec.routes[{i}].name"),
                    "é is not allowed here",
                )
            })
            .collect();
        let refs: Vec<&Diagnostic> = long.iter().collect();
        let s = api_route(Some(1), None, &refs, false, &at(1));
        for c in &s.conditions {
            assert!(c.message.len() <= MAX_MESSAGE, "{}", c.message.len());
        }
        assert!(get(&s, ACCEPTED).message.ends_with(" …"));
    }

    #[test]
    fn plugin_config_has_accepted_and_ready() {
        let s = plugin_config(Some(4), None, &[], &at(1));
        let types: Vec<&str> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [ACCEPTED, READY]);
        assert!(s.conditions.iter().all(|c| c.status == "True"));
    }
}
