//! Why a request gets the route it gets: every route whose host and path
//! match, which of them the router picks, and the precedence rule or
//! unmet condition that put each other one out.
//!
//! It walks the router's own index (see [`Router::candidates`]) and
//! compares the router's own sort keys, so it cannot disagree with
//! [`RouteTable::find`](super::RouteTable::find) short of a bug, which the
//! routing tests check on every case they route. It allocates and reads
//! every candidate, which matching never does: it serves the admin port
//! and the `explain` command, never the proxy.

use std::sync::Arc;

use serde::Serialize;

use super::matcher::RequestView;
use super::router::{Found, HostGroup, RankKey, Router};
use super::spec::PathSpec;
use super::table::Route;

/// The router's decision for one request.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// The index of the chosen route in the table.
    #[serde(skip)]
    pub winner: Option<usize>,
    /// The chosen route's name; none when the proxy answers 404.
    pub route: Option<Arc<str>>,
    /// The rule that made the chosen route win, or why none did.
    pub decided_by: String,
    /// Every route whose host and path match, in the order the router
    /// considers them.
    pub candidates: Vec<Candidate>,
}

/// A route whose host and path match the request.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    pub route: Arc<str>,
    /// The object it came from, e.g. `ApiRoute default/shop`.
    pub source: Arc<str>,
    /// The host it was found under: a name, `*.suffix`, or `*` for routes
    /// without hosts.
    pub host: String,
    pub path: PathSpec,
    /// The pair's place in the table's precedence order (0 first).
    pub rank: u32,
    pub priority: i64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fallback: bool,
    /// `chosen`, `lost` (to the chosen route's precedence) or `unmet`
    /// (its method, header, query or cookie conditions do not hold).
    pub outcome: Outcome,
    /// Why it was chosen or not, in one sentence.
    pub reason: String,
    /// The conditions of this route that the request does not meet.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unmet: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    Chosen,
    Lost,
    Unmet,
}

/// Explains the decision of `router` over `routes` for `req`.
pub(super) fn explain(
    router: &Router,
    routes: &[Arc<Route>],
    req: &RequestView<'_>,
    slot: Option<u32>,
) -> Explanation {
    let found = router.candidates(req);
    let unmet: Vec<Vec<String>> = found
        .iter()
        .map(|f| unmet_conditions(&routes[f.route], req, slot))
        .collect();
    let winner = unmet.iter().position(Vec::is_empty);
    let decided_by = decision(&found, &unmet, winner, routes);
    let candidates = found
        .iter()
        .zip(&unmet)
        .enumerate()
        .map(|(i, (f, unmet))| {
            let (outcome, reason) = match winner {
                Some(w) if w == i => (Outcome::Chosen, decided_by.clone()),
                Some(w) if unmet.is_empty() => (Outcome::Lost, beaten_by(&found[w], f)),
                Some(w) if i < w => (
                    Outcome::Unmet,
                    format!("tried first, but {}", unmet.join("; ")),
                ),
                Some(w) => (
                    Outcome::Unmet,
                    format!(
                        "{}; it also ranks lower: {}",
                        unmet.join("; "),
                        beaten_by(&found[w], f)
                    ),
                ),
                None => (Outcome::Unmet, unmet.join("; ")),
            };
            let route = &routes[f.route];
            Candidate {
                route: route.name.clone(),
                source: route.source.clone(),
                host: host_text(&f.group),
                path: f.path.clone(),
                rank: f.rank,
                priority: -f.key.neg_priority,
                fallback: f.key.fallback,
                outcome,
                reason,
                unmet: unmet.clone(),
            }
        })
        .collect();
    Explanation {
        winner: winner.map(|w| found[w].route),
        route: winner.map(|w| routes[found[w].route].name.clone()),
        decided_by,
        candidates,
    }
}

/// The rule that made candidate `winner` win, or why none did.
fn decision(
    found: &[Found<'_>],
    unmet: &[Vec<String>],
    winner: Option<usize>,
    routes: &[Arc<Route>],
) -> String {
    let Some(w) = winner else {
        return if found.is_empty() {
            "no route serves this host and path: the proxy answers 404".to_owned()
        } else {
            "every route for this host and path has unmet conditions: the proxy answers 404"
                .to_owned()
        };
    };
    let runner_up = found
        .iter()
        .enumerate()
        .skip(w + 1)
        .find(|(i, f)| unmet[*i].is_empty() && f.route != found[w].route);
    let mut text = match runner_up {
        Some((_, f)) => format!(
            "{} (over route {})",
            beaten_by(&found[w], f),
            routes[f.route].name
        ),
        None => "the only route whose host, path and conditions match".to_owned(),
    };
    if w > 0 {
        text.push_str(&format!(
            "; {w} candidate{} tried before it did not meet {} conditions",
            if w == 1 { "" } else { "s" },
            if w == 1 { "its" } else { "their" },
        ));
    }
    text
}

fn host_text(group: &HostGroup) -> String {
    match group {
        HostGroup::Exact(h) => h.clone(),
        HostGroup::Wildcard(s) => format!("*.{s}"),
        HostGroup::Any => "*".to_owned(),
    }
}

fn group_text(group: &HostGroup) -> &'static str {
    match group {
        HostGroup::Exact(_) => "the exact host",
        HostGroup::Wildcard(_) => "a wildcard host",
        HostGroup::Any => "any host",
    }
}

/// Why `winner` beats `other`: the first precedence rule on which their
/// sort keys differ, or the host group when they are in different ones.
fn beaten_by(winner: &Found<'_>, other: &Found<'_>) -> String {
    if winner.group != other.group {
        return format!(
            "a route for {} is chosen before routes for {}",
            group_text(&winner.group),
            group_text(&other.group)
        );
    }
    if winner.route == other.route {
        return "an earlier-ranked path of the same route matched".to_owned();
    }
    rule(winner.key, other.key)
}

fn rule(w: &RankKey, o: &RankKey) -> String {
    let count = |n: i64, what: &str| format!("{} {what}{}", -n, if n == -1 { "" } else { "s" });
    if w.fallback != o.fallback {
        "a fallback route (an Ingress defaultBackend) comes after every other route".to_owned()
    } else if w.neg_priority != o.neg_priority {
        format!(
            "higher priority: {} over {}",
            -w.neg_priority, -o.neg_priority
        )
    } else if w.kind != o.kind {
        format!(
            "an {} path beats a {} path",
            kind_text(w.kind),
            kind_text(o.kind)
        )
    } else if w.neg_segments != o.neg_segments {
        format!(
            "longer prefix: {} over {}",
            count(w.neg_segments, "path segment"),
            -o.neg_segments
        )
    } else if w.neg_len != o.neg_len {
        let what = if w.kind == 2 { "pattern" } else { "path" };
        format!(
            "longer {what}: {} over {}",
            count(w.neg_len, "character"),
            -o.neg_len
        )
    } else if w.neg_methods != o.neg_methods {
        "a method condition beats none".to_owned()
    } else if w.neg_headers != o.neg_headers {
        format!(
            "more header conditions: {} over {}",
            -w.neg_headers, -o.neg_headers
        )
    } else if w.neg_query != o.neg_query {
        format!(
            "more query conditions: {} over {}",
            -w.neg_query, -o.neg_query
        )
    } else if w.neg_cookies != o.neg_cookies {
        format!(
            "more cookie conditions: {} over {}",
            -w.neg_cookies, -o.neg_cookies
        )
    } else {
        "equal precedence: the route declared first wins (older object, then namespace/name)"
            .to_owned()
    }
}

fn kind_text(kind: u8) -> &'static str {
    match kind {
        0 => "Exact",
        1 => "Prefix",
        _ => "RegularExpression",
    }
}

/// The conditions of `route` other than host and path that `req` fails,
/// as text; empty when the route matches.
fn unmet_conditions(route: &Route, req: &RequestView<'_>, slot: Option<u32>) -> Vec<String> {
    let mut out = Vec::new();
    if !route.listeners.is_empty() && !slot.is_some_and(|s| route.listeners.contains(&s)) {
        out.push(format!(
            "not attached to a Gateway listener for this host on port {}",
            req.port
        ));
    }
    if !route.methods.is_empty() && !route.methods.contains(req.method) {
        let allowed: Vec<&str> = route.methods.iter().map(http::Method::as_str).collect();
        out.push(format!(
            "method {} is not {}",
            req.method,
            allowed.join(" or ")
        ));
    }
    for h in route.headers.iter().filter(|h| !h.matches(req.headers)) {
        out.push(format!("header {}", h.describe()));
    }
    for q in route.query.iter().filter(|q| !q.matches(req.query)) {
        out.push(format!("query parameter {}", q.describe()));
    }
    for c in route.cookies.iter().filter(|c| !c.matches(req.headers)) {
        out.push(format!("cookie {}", c.describe()));
    }
    debug_assert_eq!(out.is_empty(), route.conditions_match(req));
    out
}
