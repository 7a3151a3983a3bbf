//! ingress-nginx canary Ingresses.
//!
//! An Ingress with `canary: "true"` creates no routes of its own. Each of
//! its paths is attached to the route of the main (non-canary) Ingress of
//! the same class that declares the same host, path and `pathType`, as
//! ingress-nginx does; ingress-nginx allows one canary per path, and so
//! does Sluicegate (the oldest wins, later ones get a `Conflict`). As in
//! ingress-nginx, the other annotations of a canary Ingress are ignored
//! (snippets are still refused) and so is its `spec.tls`: its routes take
//! the main route's plugins, timeouts, redirects and backend protocol.
//!
//! The canary's rules are tried in ingress-nginx's order, header, then
//! cookie, then weight, and become routes next to the main route:
//!
//! - `canary-by-header: NAME`: a route for `NAME: always` to the canary
//!   alone (`~canary-header`), and one for `NAME: never` to the main
//!   backend alone (`~canary-header-never`); with `canary-by-header-value`
//!   (or `canary-by-header-pattern`, a regular expression searched in the
//!   value) only the one route, for that value, to the canary;
//! - `canary-by-cookie: NAME`: the same with the cookie's values `always`
//!   and `never` (`~canary-cookie`, `~canary-cookie-never`);
//! - `canary-weight: W` of `canary-weight-total: T` (default 100): the main
//!   route itself sends `W` of every `T` requests to the canary.
//!
//! The added routes copy the main route and add one condition, so they win
//! over it (more header conditions, then more cookie conditions, first)
//! but never over a route with a more specific path: precedence compares
//! paths before conditions. Any other header or cookie value falls through
//! to the next rule, as in ingress-nginx.

use std::sync::Arc;

use foldhash::HashMap;
use k8s_openapi::api::networking::v1::Ingress;

use super::annotations::{self, field, get};
use super::diagnostics::{Kind, Reason, Subject};
use super::protocol::ProtocolRequest;
use super::state::{ClusterState, ObjectKey};
use super::{Ctx, LEGACY_CLASS_ANNOTATION, ingress, validate};
use crate::routing::{BackendSpec, HostMatch, Pattern, RouteSpec, ValueMatcher, ValueSpec};

const CANARY: [&str; 2] = ["sluicegate.io/canary", "nginx.ingress.kubernetes.io/canary"];
const BY_HEADER: [&str; 2] = [
    "sluicegate.io/canary-by-header",
    "nginx.ingress.kubernetes.io/canary-by-header",
];
const BY_HEADER_VALUE: [&str; 2] = [
    "sluicegate.io/canary-by-header-value",
    "nginx.ingress.kubernetes.io/canary-by-header-value",
];
const BY_HEADER_PATTERN: [&str; 2] = [
    "sluicegate.io/canary-by-header-pattern",
    "nginx.ingress.kubernetes.io/canary-by-header-pattern",
];
const BY_COOKIE: [&str; 2] = [
    "sluicegate.io/canary-by-cookie",
    "nginx.ingress.kubernetes.io/canary-by-cookie",
];
const WEIGHT: [&str; 2] = [
    "sluicegate.io/canary-weight",
    "nginx.ingress.kubernetes.io/canary-weight",
];
const WEIGHT_TOTAL: [&str; 2] = [
    "sluicegate.io/canary-weight-total",
    "nginx.ingress.kubernetes.io/canary-weight-total",
];

/// The annotations that only a canary Ingress reads.
const SETTINGS: [[&str; 2]; 6] = [
    BY_HEADER,
    BY_HEADER_VALUE,
    BY_HEADER_PATTERN,
    BY_COOKIE,
    WEIGHT,
    WEIGHT_TOTAL,
];

/// The weight total when `canary-weight-total` is not set.
const DEFAULT_TOTAL: u32 = 100;

/// Route name suffixes of the routes a canary adds.
const HEADER_ROUTE: &str = "~canary-header";
const HEADER_NEVER_ROUTE: &str = "~canary-header-never";
const COOKIE_ROUTE: &str = "~canary-cookie";
const COOKIE_NEVER_ROUTE: &str = "~canary-cookie-never";

/// What an Ingress is to translation.
pub(super) enum Role {
    /// Served with routes of its own.
    Main,
    /// Attached to the routes of main Ingresses, after all of those.
    Canary,
    /// Not served at all.
    Refused,
}

/// Whether `ingress` is a canary. A `canary` value that is neither true
/// nor false refuses the Ingress: serving a canary as a main Ingress could
/// take its main Ingress's traffic. On a main Ingress, the other canary
/// annotations are reported, since they do nothing there.
pub(super) fn role(ctx: &mut Ctx<'_>, key: &ObjectKey, ingress: &Ingress) -> Role {
    let obj = Subject {
        kind: Kind::Ingress,
        key,
    };
    let canary = match get(ingress, CANARY).map(|(n, v)| (n, v.trim())) {
        None => false,
        // What Go's strconv.ParseBool accepts, as ingress-nginx reads it,
        // and the on/off of Sluicegate's other flags.
        Some((_, "true" | "True" | "TRUE" | "t" | "T" | "1" | "on")) => true,
        Some((_, "false" | "False" | "FALSE" | "f" | "F" | "0" | "off")) => false,
        Some((name, other)) => {
            ctx.diags.report(
                obj,
                field(name),
                Reason::InvalidSpec,
                format!("{other:?} is not \"true\" or \"false\"; the Ingress is not served, neither as a canary nor as a main Ingress"),
            );
            return Role::Refused;
        }
    };
    if canary {
        return Role::Canary;
    }
    for names in SETTINGS {
        if let Some((name, _)) = get(ingress, names) {
            ctx.diags.report(
                obj,
                field(name),
                Reason::InvalidSpec,
                format!(
                    "ignored: the Ingress is not a canary ({} is not \"true\")",
                    CANARY[1]
                ),
            );
        }
    }
    Role::Main
}

/// The class an Ingress names, as written: `spec.ingressClassName`, else
/// the legacy annotation, else none (empty). A canary attaches only to a
/// main Ingress that names the same class.
pub(super) fn class_of(ingress: &Ingress) -> &str {
    ingress
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref())
        .or_else(|| {
            ingress
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION))
                .map(String::as_str)
        })
        .unwrap_or_default()
}

/// A main Ingress path (or default backend) that a canary may attach to.
#[derive(Debug)]
struct MainPath {
    /// Index of its route in the table.
    route: usize,
    /// Index of the main Ingress's backend settings in
    /// [`Targets::protocols`].
    protocol: usize,
    /// The canary attached so far, by its `source` text.
    canary: Option<Arc<str>>,
}

/// The paths of main Ingresses, recorded while they are translated.
#[derive(Debug, Default)]
pub(super) struct Targets {
    /// Whether any Ingress is marked as a canary; without one nothing is
    /// recorded, so that canaries cost nothing to those who use none.
    enabled: bool,
    /// By [`key`] text; the first Ingress to declare a path keeps it,
    /// which is also the one whose route wins.
    paths: HashMap<Box<str>, MainPath>,
    /// The backend settings of main Ingresses, which their canaries
    /// inherit.
    protocols: Vec<ProtocolRequest>,
    /// Reused to build keys.
    key: String,
}

/// Where a canary attaches: a rule's path, or the default backend.
#[derive(Clone, Copy)]
pub(super) enum Place<'a> {
    Path {
        host: Option<&'a HostMatch>,
        path_type: &'a str,
        path: &'a str,
    },
    DefaultBackend,
}

impl Targets {
    pub(super) fn new(state: &ClusterState) -> Self {
        let enabled = state
            .ingresses
            .values()
            .any(|ing| get(ing, CANARY).is_some());
        Targets {
            enabled,
            ..Targets::default()
        }
    }

    /// Records that route `route` of a main Ingress of `class` serves
    /// `place`. `protocol` holds the index of the Ingress's backend
    /// settings once they are stored; `proto` is stored on first use.
    pub(super) fn register(
        &mut self,
        class: &str,
        place: Place<'_>,
        route: usize,
        protocol: &mut Option<usize>,
        proto: &ProtocolRequest,
    ) {
        if !self.enabled {
            return;
        }
        key(&mut self.key, class, place);
        if self.paths.contains_key(self.key.as_str()) {
            return;
        }
        let protocol = *protocol.get_or_insert_with(|| {
            self.protocols.push(proto.clone());
            self.protocols.len() - 1
        });
        self.paths.insert(
            self.key.as_str().into(),
            MainPath {
                route,
                protocol,
                canary: None,
            },
        );
    }
}

/// Writes the key of `place` for Ingresses of `class` into `buf`: a tag
/// telling a path from the default backend, then the class, host,
/// `pathType` and path, separated by newlines. Only the path, which comes
/// last, can hold a newline (a regular expression may), so no two places
/// share a key.
fn key(buf: &mut String, class: &str, place: Place<'_>) {
    buf.clear();
    match place {
        Place::Path {
            host,
            path_type,
            path,
        } => {
            buf.push_str("path\n");
            buf.push_str(class);
            buf.push('\n');
            if let Some(h) = host {
                use std::fmt::Write as _;
                let _ = write!(buf, "{h}");
            }
            buf.push('\n');
            buf.push_str(path_type);
            buf.push('\n');
            buf.push_str(path);
        }
        Place::DefaultBackend => {
            buf.push_str("default\n");
            buf.push_str(class);
        }
    }
}

/// How the canary's header rule compares the header value.
enum HeaderValue {
    /// `always` to the canary, `never` to the main backend.
    AlwaysNever,
    /// This value to the canary.
    Exact(String),
    /// A value this pattern is found in, to the canary.
    Pattern(Pattern),
}

/// The rules of one canary Ingress.
struct Rules {
    header: Option<(String, HeaderValue)>,
    cookie: Option<String>,
    weight: u32,
    total: u32,
}

/// The value of the first of `names` that is set, trimmed, if not empty,
/// with the annotation's name.
fn text<'i>(ingress: &'i Ingress, names: [&'static str; 2]) -> Option<(&'static str, &'i str)> {
    get(ingress, names)
        .map(|(n, v)| (n, v.trim()))
        .filter(|(_, v)| !v.is_empty())
}

/// Reads the canary annotations, reporting each invalid one. An invalid
/// rule is left out; the others still apply.
fn rules(ctx: &mut Ctx<'_>, obj: Subject<'_>, ingress: &Ingress) -> Rules {
    let mut report = |name: &str, msg: String| {
        ctx.diags.report(obj, field(name), Reason::InvalidSpec, msg);
    };

    let total = match text(ingress, WEIGHT_TOTAL) {
        None => DEFAULT_TOTAL,
        Some((name, v)) => match v.parse::<i64>() {
            Ok(n) if n > 0 => u32::try_from(n).unwrap_or(u32::MAX),
            Ok(_) => {
                report(
                    name,
                    format!("{v:?} must be greater than 0; using {DEFAULT_TOTAL}"),
                );
                DEFAULT_TOTAL
            }
            Err(_) => {
                report(
                    name,
                    format!("{v:?} is not a whole number; using {DEFAULT_TOTAL}"),
                );
                DEFAULT_TOTAL
            }
        },
    };
    let weight = match text(ingress, WEIGHT) {
        None => 0,
        Some((name, v)) => {
            let why = match v.parse::<i64>() {
                Ok(n) if n < 0 => Err("must not be negative".to_owned()),
                Ok(n) if n > i64::from(total) => Err(format!(
                    "is more than the weight total {total} (canary-weight-total)"
                )),
                Ok(n) => Ok(n),
                Err(_) => Err("is not a whole number".to_owned()),
            };
            match why {
                // Not above `total`, so it fits.
                Ok(n) => u32::try_from(n).unwrap_or(0),
                Err(why) => {
                    report(
                        name,
                        format!("{v:?} {why}; the canary gets no share of the other requests"),
                    );
                    0
                }
            }
        }
    };

    let value = text(ingress, BY_HEADER_VALUE);
    let pattern = text(ingress, BY_HEADER_PATTERN);
    let header = match text(ingress, BY_HEADER) {
        None => {
            for (name, _) in [value, pattern].into_iter().flatten() {
                report(
                    name,
                    "ignored: it needs canary-by-header, which is not set".to_owned(),
                );
            }
            None
        }
        Some((name, h)) => match validate::header_name(h) {
            Err(e) => {
                report(name, format!("{e}; the canary's header rule is ignored"));
                None
            }
            Ok(h) => {
                let rule = match (value, pattern) {
                    (Some((_, v)), p) => {
                        if let Some((name, _)) = p {
                            report(
                                name,
                                "ignored: canary-by-header-value is set and takes precedence"
                                    .to_owned(),
                            );
                        }
                        Some(HeaderValue::Exact(v.to_owned()))
                    }
                    (None, Some((name, p))) => match search_pattern(p) {
                        Ok(p) => Some(HeaderValue::Pattern(p)),
                        Err(e) => {
                            report(name, format!("{e}; the canary's header rule is ignored"));
                            None
                        }
                    },
                    (None, None) => Some(HeaderValue::AlwaysNever),
                };
                rule.map(|r| (h, r))
            }
        },
    };
    let cookie = match text(ingress, BY_COOKIE) {
        None => None,
        Some((name, c)) => match validate::cookie_name(c) {
            Ok(()) => Some(c.to_owned()),
            Err(e) => {
                report(name, format!("{e}; the canary's cookie rule is ignored"));
                None
            }
        },
    };
    Rules {
        header,
        cookie,
        weight,
        total,
    }
}

/// A pattern found anywhere in a value, as nginx's `ngx.re.match` finds
/// `canary-by-header-pattern` (route patterns must match whole values).
/// The source is checked on its own first, so that it cannot close the
/// group around it.
fn search_pattern(source: &str) -> Result<Pattern, String> {
    validate::pattern(source)?;
    validate::pattern(&format!("(?s:.*)(?:{source})(?s:.*)"))
}

/// Attaches the paths of canary Ingress `key` to their main routes.
pub(super) fn translate(ctx: &mut Ctx<'_>, key: &ObjectKey, ingress: &Ingress) {
    let obj = Subject {
        kind: Kind::Ingress,
        key,
    };
    let Some(spec) = ingress.spec.as_ref() else {
        ctx.diags
            .report(obj, "spec", Reason::InvalidSpec, "spec is missing");
        return;
    };
    if annotations::refuse_snippets(ctx, obj, ingress) {
        return;
    }
    let canary = Canary {
        obj,
        rules: rules(ctx, obj, ingress),
        class: class_of(ingress),
        source: ctx.source(obj),
    };

    for (i, rule) in spec.rules.iter().flatten().enumerate() {
        let host = match rule.host.as_deref().filter(|h| !h.is_empty()) {
            None => None,
            Some(h) => match validate::host(h) {
                Ok(m) => Some(m),
                Err(e) => {
                    ctx.diags
                        .report(obj, format!("spec.rules[{i}].host"), Reason::InvalidSpec, e);
                    continue;
                }
            },
        };
        let Some(http) = rule.http.as_ref() else {
            continue;
        };
        for (j, p) in http.paths.iter().enumerate() {
            let field = || format!("spec.rules[{i}].http.paths[{j}]");
            let path = p.path.as_deref().unwrap_or("/");
            let place = Place::Path {
                host: host.as_ref(),
                path_type: &p.path_type,
                path,
            };
            let backend = |ctx: &mut Ctx<'_>, proto: &ProtocolRequest| {
                let backend_field = || format!("{}.backend", field());
                ingress::backend(ctx, obj, backend_field, &p.backend, proto)
            };
            attach(ctx, &canary, place, field, backend);
        }
    }
    if let Some(default) = spec.default_backend.as_ref() {
        let field = || "spec.defaultBackend".to_owned();
        let backend = |ctx: &mut Ctx<'_>, proto: &ProtocolRequest| {
            ingress::backend(ctx, obj, field, default, proto)
        };
        attach(ctx, &canary, Place::DefaultBackend, field, backend);
    } else if spec.rules.as_ref().is_none_or(|r| r.is_empty()) {
        ctx.diags.report(
            obj,
            "spec",
            Reason::InvalidSpec,
            "an Ingress needs rules or a defaultBackend",
        );
    }
}

/// A canary Ingress being attached.
struct Canary<'a> {
    obj: Subject<'a>,
    rules: Rules,
    /// See [`class_of`].
    class: &'a str,
    /// The `source` of the routes it adds.
    source: Arc<str>,
}

/// Attaches one place of a canary to its main route, or reports why not.
/// `backend` resolves the canary's backend with the main Ingress's
/// backend settings.
fn attach(
    ctx: &mut Ctx<'_>,
    canary: &Canary<'_>,
    place: Place<'_>,
    field: impl Fn() -> String,
    backend: impl FnOnce(&mut Ctx<'_>, &ProtocolRequest) -> Option<BackendSpec>,
) {
    let Canary {
        obj,
        ref rules,
        class,
        ref source,
    } = *canary;
    let mut key_text = String::new();
    key(&mut key_text, class, place);
    let found = ctx
        .canaries
        .paths
        .get(key_text.as_str())
        .map(|m| (m.route, m.protocol, m.canary.clone()));
    let (route, protocol) = match found {
        None => {
            let what = match place {
                Place::Path {
                    host,
                    path_type,
                    path,
                } => {
                    let host = host.map_or_else(|| "any host".to_owned(), |h| format!("host {h}"));
                    format!("{host} path {path} (pathType {path_type})")
                }
                Place::DefaultBackend => "the default backend".to_owned(),
            };
            let class = match class {
                "" => "without an ingress class".to_owned(),
                c => format!("of class {c}"),
            };
            ctx.diags.report(
                obj,
                field(),
                Reason::MainIngressNotFound,
                format!("no main (non-canary) Ingress {class} serves {what}; a canary only adds to one, so this is not served"),
            );
            return;
        }
        Some((_, _, Some(owner))) => {
            ctx.diags.report(
                obj,
                field(),
                Reason::Conflict,
                format!("{owner} is already the canary of this path, and a path has one canary at most (older first, then by namespace and name); this one is not served"),
            );
            return;
        }
        Some((route, protocol, None)) => (route, protocol),
    };
    let proto = ctx.canaries.protocols[protocol].clone();
    let Some(alt) = backend(ctx, &proto) else {
        return;
    };
    let main = &ctx.routes[route];
    if main.backends.iter().any(|b| b.upstream == alt.upstream) {
        let msg = format!(
            "the canary's backend {} is already the backend of {}, so there is nothing to split; not served",
            alt.upstream, main.source
        );
        ctx.diags.report(
            obj,
            format!("{}.backend", field()),
            Reason::InvalidSpec,
            msg,
        );
        return;
    }
    if let Some(m) = ctx.canaries.paths.get_mut(key_text.as_str()) {
        m.canary = Some(source.clone());
    }
    let added = routes(ctx, route, alt, rules, source);
    ctx.routes.extend(added);
}

/// Re-weights main route `main` between its backend and `canary`, and
/// returns the routes of the canary's header and cookie rules.
fn routes(
    ctx: &mut Ctx<'_>,
    main: usize,
    canary: BackendSpec,
    rules: &Rules,
    source: &Arc<str>,
) -> Vec<RouteSpec> {
    let base = &ctx.routes[main];
    let only_main = base.backends.clone();
    let only_canary = vec![BackendSpec {
        weight: 1,
        ..canary.clone()
    }];
    let mut added = Vec::new();
    let mut variant =
        |suffix: &str, header: Option<ValueSpec>, cookie: Option<ValueSpec>, backends| {
            let mut r = base.clone();
            r.name = Arc::from(format!("{}{suffix}", base.name));
            r.source = source.clone();
            r.headers.extend(header);
            r.cookies.extend(cookie);
            r.backends = backends;
            added.push(r);
        };
    let value = |name: &str, m: ValueMatcher| ValueSpec {
        name: name.to_owned(),
        matcher: m,
    };
    let exact = |s: &str| ValueMatcher::Exact(s.to_owned());
    if let Some((name, how)) = &rules.header {
        match how {
            HeaderValue::AlwaysNever => {
                let always = value(name, exact("always"));
                variant(HEADER_ROUTE, Some(always), None, only_canary.clone());
                let never = value(name, exact("never"));
                variant(HEADER_NEVER_ROUTE, Some(never), None, only_main.clone());
            }
            HeaderValue::Exact(v) => {
                let cond = value(name, exact(v));
                variant(HEADER_ROUTE, Some(cond), None, only_canary.clone());
            }
            HeaderValue::Pattern(p) => {
                let cond = value(name, ValueMatcher::RegularExpression(p.clone()));
                variant(HEADER_ROUTE, Some(cond), None, only_canary.clone());
            }
        }
    }
    if let Some(name) = &rules.cookie {
        let always = value(name, exact("always"));
        variant(COOKIE_ROUTE, None, Some(always), only_canary);
        let never = value(name, exact("never"));
        variant(COOKIE_NEVER_ROUTE, None, Some(never), only_main);
    }
    // An Ingress path has one backend; it keeps what the canary does not
    // take.
    let main_route = &mut ctx.routes[main];
    for b in &mut main_route.backends {
        b.weight = rules.total - rules.weight;
    }
    main_route.backends.push(BackendSpec {
        weight: rules.weight,
        ..canary
    });
    added
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_patterns_are_searched_for_in_the_value() {
        let p = search_pattern("beta|staff").unwrap();
        assert!(p.is_match("beta"));
        assert!(p.is_match("group=staff;x"));
        assert!(p.is_match("multi\nline beta"));
        assert!(!p.is_match("alpha"));
        let anchored = search_pattern("^v2$").unwrap();
        assert!(anchored.is_match("v2"));
        assert!(!anchored.is_match("v21"));
    }

    #[test]
    fn header_patterns_cannot_escape_their_group() {
        assert!(search_pattern("a)|(b").is_err());
        assert!(search_pattern("(unclosed").is_err());
    }

    #[test]
    fn keys_tell_places_apart() {
        let host = HostMatch::Exact("shop.example.com".into());
        let path = |path_type, path| Place::Path {
            host: Some(&host),
            path_type,
            path,
        };
        let mut keys = Vec::new();
        for (class, place) in [
            ("sluicegate", path("Prefix", "/")),
            ("sluicegate", path("Exact", "/")),
            ("sluicegate", path("Prefix", "/api")),
            ("other", path("Prefix", "/")),
            ("sluicegate", Place::DefaultBackend),
            ("", Place::DefaultBackend),
            (
                "",
                Place::Path {
                    host: None,
                    path_type: "",
                    path: "",
                },
            ),
            (
                "sluicegate",
                Place::Path {
                    host: None,
                    path_type: "Prefix",
                    path: "/",
                },
            ),
        ] {
            let mut buf = String::new();
            key(&mut buf, class, place);
            keys.push(buf);
        }
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "{keys:?}");
    }
}
