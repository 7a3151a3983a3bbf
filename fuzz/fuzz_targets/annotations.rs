//! ingress-nginx annotations with fuzzer-chosen values, on a main Ingress
//! and on a canary of it: translation never panics, whatever the values.
//! Values are either picked from a list of typical ones (so that
//! combinations of valid settings are reached) or arbitrary text.
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use http::{HeaderMap, Method};
use k8s_openapi::api::networking::v1::Ingress;
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use sluicegate::routing::{RequestView, RouteTable, UpstreamRegistry};
use sluicegate::source::manifest::state_from_str;
use sluicegate::translate::{ClusterState, ObjectKey, TranslateOptions, translate};

/// The annotations Sluicegate reads, as listed in
/// docs/ingress-nginx-migration.md, plus the canary switch and a snippet.
const NAMES: &[&str] = &[
    "ssl-redirect",
    "force-ssl-redirect",
    "backend-protocol",
    "proxy-ssl-secret",
    "proxy-ssl-verify",
    "proxy-ssl-name",
    "auth-tls-secret",
    "auth-tls-verify-client",
    "limit-rps",
    "limit-rpm",
    "limit-burst-multiplier",
    "limit-connections",
    "load-balance",
    "upstream-hash-by",
    "affinity",
    "session-cookie-name",
    "session-cookie-max-age",
    "session-cookie-expires",
    "session-cookie-path",
    "proxy-next-upstream",
    "proxy-next-upstream-tries",
    "proxy-connect-timeout",
    "proxy-read-timeout",
    "rewrite-target",
    "use-regex",
    "app-root",
    "x-forwarded-prefix",
    "auth-type",
    "auth-secret",
    "auth-realm",
    "auth-url",
    "auth-response-headers",
    "auth-signin",
    "whitelist-source-range",
    "allowlist-source-range",
    "denylist-source-range",
    "enable-cors",
    "cors-allow-origin",
    "cors-allow-methods",
    "cors-allow-headers",
    "cors-expose-headers",
    "cors-allow-credentials",
    "cors-max-age",
    "proxy-body-size",
    "canary",
    "canary-weight",
    "canary-weight-total",
    "canary-by-header",
    "canary-by-header-value",
    "canary-by-header-pattern",
    "canary-by-cookie",
    "configuration-snippet",
];

/// Typical values, valid for some annotation or close to valid.
const VALUES: &[&str] = &[
    "true",
    "false",
    "on",
    "off",
    "optional",
    "optional_no_ca",
    "0",
    "1",
    "3",
    "10",
    "30",
    "100",
    "1000",
    "-1",
    "99999999999999999999",
    "1.5",
    "8m",
    "512k",
    "1g",
    "lots",
    "$remote_addr",
    "$http_x_user",
    "$cookie_session",
    "$arg_id",
    "$request_uri",
    "cookie",
    "round_robin",
    "ewma",
    "least_conn",
    "HTTP",
    "HTTPS",
    "GRPC",
    "GRPCS",
    "H2C",
    "AUTO_HTTP",
    "FCGI",
    "/$2",
    "/$1/$3",
    "/",
    "/app",
    "/(.*)",
    "(",
    "10.0.0.0/8",
    "10.0.0.0/8, 192.168.1.1",
    "::1/128",
    "300.1.1.1/8",
    "*",
    "https://app.example.com",
    "https://a.example.com, https://b.example.com",
    "http://auth.shop.svc:8080/verify",
    "ftp://x",
    "basic",
    "digest",
    "basic-users",
    "other-ns/users",
    "ca-secret",
    "shop/ca-secret",
    "tls-secret",
    "X-User, X-Groups",
    "GET, POST",
    "error timeout http_502",
    "non_idempotent",
    "http_503 off",
    "always",
    "never",
    "^v[0-9]+$",
    "[",
    "canary",
    "Staff only",
    "a.example.com",
    "return 200;",
];

#[derive(Arbitrary, Debug)]
enum Value {
    Pick(u8),
    Raw(String),
}

impl Value {
    fn text(&self) -> String {
        match self {
            Value::Pick(i) => VALUES[usize::from(*i) % VALUES.len()].to_owned(),
            Value::Raw(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Annotation {
    /// Low bits: which name; high bit: the `sluicegate.io/` spelling.
    name: u8,
    value: Value,
}

#[derive(Arbitrary, Debug)]
struct Input {
    main: Vec<Annotation>,
    canary: Option<Vec<Annotation>>,
    path: Value,
    path_type: u8,
    tls: bool,
    default_backend: bool,
}

fn annotations(list: &[Annotation]) -> BTreeMap<String, String> {
    list.iter()
        .take(24)
        .map(|a| {
            let name = NAMES[usize::from(a.name & 0x7f) % NAMES.len()];
            let prefix = if a.name & 0x80 != 0 {
                "sluicegate.io"
            } else {
                "nginx.ingress.kubernetes.io"
            };
            (format!("{prefix}/{name}"), a.value.text())
        })
        .collect()
}

/// Services, endpoints and Secrets the annotations can name.
const BASE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-canary, namespace: shop}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.0.0.1], conditions: {ready: true}}]
---
apiVersion: v1
kind: Secret
metadata: {name: basic-users, namespace: shop}
stringData:
  auth: "alice:$2y$05$8c1d0qJQ9Jw8KmC4j6mYle6i8l0a3s5hK0m8yHk8rYyq2m7w9mZ5u"
"#;

fn base() -> &'static ClusterState {
    static BASE_STATE: OnceLock<ClusterState> = OnceLock::new();
    BASE_STATE.get_or_init(|| {
        let cert = include_str!("../../tests/fixtures/tls/rsa.test.crt");
        let key = include_str!("../../tests/fixtures/tls/rsa.test.key");
        let secrets = json!([
            {"apiVersion": "v1", "kind": "Secret",
             "metadata": {"name": "ca-secret", "namespace": "shop"},
             "stringData": {"ca.crt": cert}},
            {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
             "metadata": {"name": "tls-secret", "namespace": "shop"},
             "stringData": {"tls.crt": cert, "tls.key": key}},
        ]);
        let mut text = BASE.to_owned();
        for s in secrets.as_array().into_iter().flatten() {
            text.push_str("\n---\n");
            text.push_str(&s.to_string());
        }
        state_from_str(&text).expect("base state parses")
    })
}

fn ingress(
    name: &str,
    created: &str,
    annotations: BTreeMap<String, String>,
    input: &Input,
    service: &str,
) -> Option<Ingress> {
    let path_type =
        ["Prefix", "Exact", "ImplementationSpecific", "Regex"][usize::from(input.path_type) % 4];
    let backend = json!({"service": {"name": service, "port": {"number": 80}}});
    let mut spec = json!({
        "ingressClassName": "sluicegate",
        "rules": [{"host": "shop.example.com", "http": {"paths": [
            {"path": input.path.text(), "pathType": path_type, "backend": backend},
        ]}}],
    });
    if input.tls {
        spec["tls"] = json!([{"hosts": ["shop.example.com"], "secretName": "tls-secret"}]);
    }
    if input.default_backend {
        spec["defaultBackend"] = backend;
    }
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": "shop", "creationTimestamp": created, "annotations": annotations},
        "spec": spec,
    }))
    .ok()
}

fuzz_target!(|input: Input| {
    let mut state = base().clone();
    let Some(main) = ingress(
        "main",
        "2025-01-01T00:00:00Z",
        annotations(&input.main),
        &input,
        "web",
    ) else {
        return;
    };
    state
        .ingresses
        .insert(ObjectKey::new("shop", "main"), Arc::new(main));
    if let Some(list) = &input.canary {
        let mut a = annotations(list);
        a.entry("nginx.ingress.kubernetes.io/canary".into())
            .or_insert_with(|| "true".into());
        if let Some(canary) = ingress("canary", "2025-01-02T00:00:00Z", a, &input, "web-canary") {
            state
                .ingresses
                .insert(ObjectKey::new("shop", "canary"), Arc::new(canary));
        }
    }
    let t = translate(&state, &TranslateOptions::default());
    let _ = serde_json::to_string(&t);
    let table = RouteTable::build(&t.table, &UpstreamRegistry::new());
    let mut headers = HeaderMap::new();
    headers.insert("x-user", "always".parse().expect("static value"));
    headers.insert(
        "cookie",
        "session=1; canary=always".parse().expect("static value"),
    );
    for path in ["/", "/app", "/something/x"] {
        let view = RequestView {
            host: "shop.example.com",
            path,
            query: Some("id=1"),
            method: &Method::GET,
            headers: &headers,
            port: 0,
        };
        if let Some(route) = table.find(&view) {
            let _ = route.pick();
        }
    }
});
