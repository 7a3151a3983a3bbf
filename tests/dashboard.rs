//! The admin port's dashboard and its API, on a real gateway with real
//! backends: what the views show, that no Secret value ever appears on any
//! admin path, the admin token, `/explain` agreeing with where the proxy
//! actually sends requests, the `explain` command, live traffic, and the
//! page itself in headless Chromium (skipped, with the reason printed,
//! where there is no Chromium).

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use common::browser::Browser;
use common::*;
use serde_json::Value;
use sluicegate::admin::{AdminToken, PATHS};

const TOKEN: &str = "admin-TOKEN-c0ffee-41";

/// Values that live only in Secrets; none may leave through the admin
/// port.
const SECRETS: &[&str] = &[
    "SECRET-KEY-alice-7f3a",
    "SECRET-KEY-bob-19c2",
    "SECRET-PASS-carol-55e1",
    "SECRET-BROKEN-CERT-9d1",
    "SECRET-REDIS-PASS-0b7",
    TOKEN,
];

fn secret(name: &str, labels: &str, kind: &str, data: &[(&str, &str)]) -> String {
    let mut out = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: default\n  labels: {{{labels}}}\ntype: {kind}\nstringData:\n"
    );
    for (k, v) in data {
        out.push_str(&format!("  {k}: |-\n"));
        for line in v.lines() {
            out.push_str(&format!("    {line}\n"));
        }
    }
    out
}

/// A self-signed certificate for `name` that expires in `days` days.
fn cert_expiring(name: &str, days: i64) -> tls::Cert {
    // Days since the epoch to a civil date (H. Hinnant's algorithm).
    let civil = |z: i64| {
        let z = z + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        (yoe + era * 400 + i64::from(m <= 2), m as u8, d as u8)
    };
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        / 86_400;
    let date = |z: i64| {
        let (y, m, d) = civil(z);
        rcgen::date_time_ymd(y as i32, m, d)
    };
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.not_before = date(today - 30);
    params.not_after = date(today + days);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    tls::Cert {
        pem: cert.pem(),
        key: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

/// A gateway with everything the dashboard shows: routes with plugins,
/// conditions and a canary, consumers, a TLS certificate, a broken
/// certificate and a route whose Service does not exist. `name` keeps
/// route names apart between tests (they share the live view).
struct Fixture {
    gw: TestGateway,
    cert: tls::Cert,
    _shop: Backend,
    _canary: Backend,
}

impl Fixture {
    async fn start(name: &str, token: bool, workers: usize) -> Fixture {
        let shop = Backend::named("shop").await;
        let canary = Backend::named("canary").await;
        let cert = cert_expiring(&format!("{name}.example.com"), 90);
        let soon = cert_expiring(&format!("legacy.{name}.example.com"), 10);
        let m = [
            service("shop", &[shop.addr]),
            service("canary", &[canary.addr]),
            secret(
                "alice",
                "sluicegate.io/consumer: alice",
                "Opaque",
                &[("key", SECRETS[0])],
            ),
            secret(
                "bob",
                "sluicegate.io/consumer: bob",
                "Opaque",
                &[("key", SECRETS[1])],
            ),
            secret(
                "carol",
                "sluicegate.io/consumer: carol",
                "Opaque",
                &[("username", "carol"), ("password", SECRETS[2])],
            ),
            secret(
                "site-tls",
                "",
                "kubernetes.io/tls",
                &[("tls.crt", &cert.pem), ("tls.key", &cert.key)],
            ),
            secret(
                "legacy-tls",
                "",
                "kubernetes.io/tls",
                &[("tls.crt", &soon.pem), ("tls.key", &soon.key)],
            ),
            secret(
                "bad-tls",
                "",
                "kubernetes.io/tls",
                &[("tls.crt", SECRETS[3]), ("tls.key", SECRETS[3])],
            ),
            secret("redis-auth", "", "Opaque", &[("password", SECRETS[4])]),
            format!(
                r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: site, namespace: default}}
spec:
  ingressClassName: sluicegate
  tls:
  - hosts: ["{name}.example.com"]
    secretName: site-tls
  - hosts: ["legacy.{name}.example.com"]
    secretName: legacy-tls
  - hosts: ["broken.example.com"]
    secretName: bad-tls
  rules:
  - host: {name}.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {{service: {{name: shop, port: {{number: 80}}}}}}
---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: ["api.{name}.test"]
  routes:
  - name: orders
    match:
      paths: [{{type: Prefix, value: /orders}}]
    plugins:
      keyAuth: {{}}
      limitCount: {{count: 1000000, timeWindow: 1m, key: {{type: Consumer}}}}
    backends: [{{serviceName: shop, servicePort: 80}}]
  - name: canary
    priority: 5
    match:
      paths: [{{type: Prefix, value: /orders}}]
      headers: [{{name: x-canary, type: Exact, value: "1"}}]
    backends: [{{serviceName: canary, servicePort: 80}}]
  - name: admin
    match:
      paths: [{{type: Exact, value: /admin}}]
      methods: [GET]
    plugins:
      basicAuth: {{}}
    backends: [{{serviceName: shop, servicePort: 80}}]
  - name: public
    match:
      paths: [{{type: Prefix, value: /}}]
    loadBalancer: {{type: PeakEWMA}}
    backends: [{{serviceName: shop, servicePort: 80}}]
---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {{name: {name}-broken, namespace: default}}
spec:
  hosts: ["broken.{name}.test"]
  routes:
  - name: gone
    backends: [{{serviceName: nope, servicePort: 80}}]
"#
            ),
        ]
        .concat();
        let mut config = test_config(workers);
        if token {
            config.admin.token = Some(AdminToken::new(TOKEN).unwrap());
        }
        let gw = TestGateway::start_with(&m, config).await;
        Fixture {
            gw,
            cert,
            _shop: shop,
            _canary: canary,
        }
    }

    async fn admin(&self, path: &str) -> Reply {
        let auth = format!("Bearer {TOKEN}");
        request(
            self.gw.admin(),
            "GET",
            "admin",
            path,
            &[("authorization", &auth)],
        )
        .await
    }

    async fn admin_json(&self, path: &str) -> Value {
        let r = self.admin(path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        serde_json::from_slice(&r.body).unwrap()
    }
}

/// A query string for `/explain`.
fn explain_query(host: &str, path: &str, method: &str, headers: &[&str]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    let mut q = format!(
        "/explain?host={}&path={}&method={method}",
        enc(host),
        enc(path)
    );
    for h in headers {
        q.push_str(&format!("&header={}", enc(h)));
    }
    q
}

#[tokio::test]
async fn no_secret_value_appears_on_any_admin_path() {
    let f = Fixture::start("leak", true, 1).await;
    let host = "api.leak.test";
    for key in [SECRETS[0], SECRETS[1], "wrong-key"] {
        request(f.gw.http(), "GET", host, "/orders/1", &[("apikey", key)]).await;
    }
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("carol:{}", SECRETS[2]));
    let r = request(
        f.gw.http(),
        "GET",
        host,
        "/admin",
        &[("authorization", &format!("Basic {basic}"))],
    )
    .await;
    assert_eq!(r.status, 200, "carol's credentials work");
    // Forms a value may take on the way out: as is, and base64 as in a
    // Secret's `data`.
    let mut needles: Vec<String> = Vec::new();
    for s in SECRETS {
        needles.push((*s).to_owned());
        needles.push(base64::engine::general_purpose::STANDARD.encode(s));
    }
    // The private key's body lines.
    needles.extend(
        f.cert
            .key
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() > 20)
            .map(str::to_owned),
    );
    let mut paths: Vec<String> = PATHS
        .iter()
        .map(|p| match *p {
            // With a credential in the request to explain: only its name
            // may come back.
            "/explain" => {
                explain_query(host, "/orders", "GET", &[&format!("apikey:{}", SECRETS[0])])
            }
            p => p.to_owned(),
        })
        .collect();
    paths.push("/no-such-path".to_owned());
    paths.push(explain_query("broken.example.com", "/", "GET", &[]));
    for path in &paths {
        let r = f.admin(path).await;
        let expect_ok = path != "/no-such-path";
        assert_eq!(r.status.is_success(), expect_ok, "{path}: {}", r.status);
        let mut text = r.text();
        for (name, value) in &r.headers {
            text.push_str(&format!(
                "\n{name}: {}",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        for n in &needles {
            assert!(
                !text.contains(n.as_str()),
                "{path} shows a Secret value ({n})"
            );
        }
    }
    // The views do describe what is there, by name.
    let certs = f.admin("/api/certificates").await.text();
    assert!(certs.contains("default/site-tls") && certs.contains("leak.example.com"));
    assert!(
        certs.contains("default/bad-tls"),
        "the broken Secret is a problem: {certs}"
    );
    let live = f.admin("/api/live").await.text();
    assert!(live.contains("\"alice\""), "consumers by name: {live}");
    f.gw.shutdown().await;
}

#[tokio::test]
async fn the_token_guards_everything_but_probes_and_metrics() {
    let f = Fixture::start("token", true, 1).await;
    let open = ["/healthz", "/readyz", "/metrics"];
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("anyone:{TOKEN}"));
    let wrong = base64::engine::general_purpose::STANDARD.encode("anyone:guess");
    for p in PATHS {
        let path = if *p == "/explain" {
            explain_query("api.token.test", "/", "GET", &[])
        } else {
            (*p).to_owned()
        };
        let bare = get(f.gw.admin(), "admin", &path).await;
        if open.contains(p) {
            assert_eq!(bare.status, 200, "{p} stays open");
            continue;
        }
        assert_eq!(bare.status, 401, "{p} without the token");
        let challenges: Vec<_> = bare.headers.get_all("www-authenticate").iter().collect();
        assert_eq!(challenges.len(), 2, "{p}: Bearer and Basic challenges");
        for (auth, want) in [
            (format!("Bearer {TOKEN}"), 200),
            (format!("Basic {basic}"), 200),
            (format!("Bearer {TOKEN}x"), 401),
            (format!("Basic {wrong}"), 401),
        ] {
            let r = request(
                f.gw.admin(),
                "GET",
                "admin",
                &path,
                &[("authorization", &auth)],
            )
            .await;
            assert_eq!(r.status, want, "{p} with {auth}");
        }
    }
    f.gw.shutdown().await;
}

#[tokio::test]
async fn explain_agrees_with_where_the_proxy_sends_requests() {
    let f = Fixture::start("agree", false, 1).await;
    let host = "api.agree.test";
    let alice = format!("apikey:{}", SECRETS[0]);
    // (method, host, path, headers): what the proxy does with each must be
    // what /explain says.
    let cases: Vec<(&str, &str, &str, Vec<&str>)> = vec![
        ("GET", host, "/orders/7", vec![alice.as_str()]),
        ("GET", host, "/orders/7", vec![alice.as_str(), "x-canary:1"]),
        ("GET", host, "/orders", vec![]),
        ("GET", host, "/catalog", vec![]),
        ("GET", host, "/admin", vec![]),
        ("POST", host, "/admin", vec![]),
        ("GET", "agree.example.com", "/x", vec![]),
        ("GET", "unknown.agree.test", "/", vec![]),
        ("GET", "broken.agree.test", "/", vec![]),
    ];
    for (method, h, path, headers) in cases {
        let pairs: Vec<(&str, &str)> = headers.iter().map(|x| x.split_once(':').unwrap()).collect();
        let proxied = request(f.gw.http(), method, h, path, &pairs).await;
        let e = f
            .admin_json(&explain_query(h, path, method, &headers))
            .await;
        let what = format!("{method} {h}{path} {headers:?}");
        match e["route"].as_str() {
            None => assert_eq!(proxied.status, 404, "{what}: explain says no route"),
            Some(route) => {
                let backends = e["backends"].as_array().unwrap();
                let answered_by = proxied.header("x-backend");
                let explained: Vec<&str> = backends
                    .iter()
                    .flat_map(|b| b["endpoints"].as_array().unwrap())
                    .map(|ep| ep["address"].as_str().unwrap())
                    .collect();
                match answered_by {
                    // The backend that answered is an endpoint of the
                    // explained route's upstream.
                    Some(name) => {
                        let want = if name == "canary" {
                            "canary:80"
                        } else {
                            "shop:80"
                        };
                        assert_eq!(
                            backends[0]["upstream"],
                            format!("default/{want}"),
                            "{what}: {route}"
                        );
                        assert_eq!(explained.len(), 1, "{what}");
                    }
                    // A plugin answered (401) or the upstream is missing
                    // (503): the explained route has that plugin or no
                    // endpoints.
                    None => match proxied.status.as_u16() {
                        308 => assert_eq!(e["httpsRedirect"], 308, "{what}: {e}"),
                        401 => assert!(
                            e["plugins"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .any(|p| p["name"].as_str().unwrap().ends_with("Auth")),
                            "{what}: {e}"
                        ),
                        503 => assert!(explained.is_empty(), "{what}: {e}"),
                        s => panic!("{what}: unexpected {s}"),
                    },
                }
            }
        }
    }
    // The chosen route's plugins come in execution order.
    let e = f
        .admin_json(&explain_query(host, "/orders", "GET", &[]))
        .await;
    let plugins: Vec<&str> = e["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(plugins, ["keyAuth", "limitCount"]);
    assert_eq!(e["candidates"].as_array().unwrap().len(), 3, "{e}");
    assert_eq!(e["candidates"][0]["outcome"], "unmet");
    // Bad input is a 400 that names the parameter.
    let r = f.admin("/explain?path=/").await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("missing parameter host"), "{}", r.text());
    let r = f.admin("/explain?host=a&path=/&header=bad").await;
    assert_eq!(r.status, 400);
    f.gw.shutdown().await;
}

#[tokio::test]
async fn the_explain_command_reads_manifests_or_asks_the_admin_port() {
    let f = Fixture::start("cmd", true, 1).await;
    let exe = env!("CARGO_BIN_EXE_sluicegate");
    let dir = f.gw.dir.path().to_path_buf();
    let admin = format!("http://{}", f.gw.admin());
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(exe)
                .args(args)
                .env_remove("SLUICEGATE_ADMIN_TOKEN")
                .output()
                .unwrap()
        })
    };
    let common = |target: Vec<String>| {
        let mut a: Vec<String> = [
            "explain",
            "--host",
            "api.cmd.test",
            "--path",
            "/orders/1",
            "--header",
            "x-canary=1",
        ]
        .map(String::from)
        .to_vec();
        a.extend(target);
        a
    };
    let offline = run(common(vec!["--config".into(), dir.display().to_string()]))
        .await
        .unwrap();
    let remote = run(common(vec![
        "--admin".into(),
        admin.clone(),
        "--admin-token".into(),
        TOKEN.into(),
    ]))
    .await
    .unwrap();
    for out in [&offline, &remote] {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("route:      apiroute/default/cmd/canary  (ApiRoute default/cmd)"),
            "{text}"
        );
        assert!(text.contains("higher priority: 5 over 0"), "{text}");
        assert!(text.contains("upstream default/canary:80"), "{text}");
    }
    let json = run(vec![
        "explain".into(),
        "--host".into(),
        "nowhere.test".into(),
        "--path".into(),
        "/".into(),
        "--json".into(),
        "--config".into(),
        dir.display().to_string(),
    ])
    .await
    .unwrap();
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["route"], Value::Null);
    // Without the token the admin port refuses, and the command says so.
    let refused = run(common(vec!["--admin".into(), admin])).await.unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("401"), "{err}");
    f.gw.shutdown().await;
}

#[tokio::test]
async fn live_traffic_counts_requests_consumers_and_errors_per_route() {
    let f = Fixture::start("live", false, 2).await;
    let host = "api.live.test";
    for i in 0..30 {
        let key = if i < 20 { SECRETS[0] } else { SECRETS[1] };
        let r = request(f.gw.http(), "GET", host, "/orders/1", &[("apikey", key)]).await;
        assert_eq!(r.status, 200);
    }
    for _ in 0..4 {
        let r = get(f.gw.http(), "broken.live.test", "/").await;
        assert_eq!(r.status, 503);
    }
    let live = f.admin_json("/api/live").await;
    let route = |name: &str| {
        live["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {live}"))
    };
    let orders = route("apiroute/default/live/orders");
    assert_eq!(orders["requests"], 30);
    assert_eq!(orders["statuses"]["2xx"], 30);
    assert_eq!(orders["errorRate"], 0.0);
    assert!(orders["p50Ms"].as_f64().unwrap() > 0.0);
    assert!(orders["p99Ms"].as_f64().unwrap() >= orders["p50Ms"].as_f64().unwrap());
    let consumers: Vec<(String, u64)> = orders["topConsumers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        consumers,
        [("alice".to_owned(), 20), ("bob".to_owned(), 10)]
    );
    let gone = route("apiroute/default/live-broken/gone");
    assert_eq!(
        (gone["requests"].as_u64(), gone["errorRate"].as_f64()),
        (Some(4), Some(1.0))
    );
    f.gw.shutdown().await;
}

/// Where screenshots go: `SLUICEGATE_SCREENSHOTS=docs/images` writes the
/// README's; otherwise none are written.
fn screenshot_dir() -> Option<PathBuf> {
    std::env::var_os("SLUICEGATE_SCREENSHOTS").map(PathBuf::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_chromium() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let f = Fixture::start("web", false, 1).await;
    let (http, host) = (f.gw.http(), "api.web.test");
    // Steady load on three routes until the test ends (bounded).
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        tokio::spawn(async move {
            for i in 0..40_000u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let key = if i % 3 == 0 { SECRETS[1] } else { SECRETS[0] };
                request(http, "GET", host, "/orders/1", &[("apikey", key)]).await;
                if i % 4 == 0 {
                    request(http, "GET", host, "/orders/1", &[("apikey", "wrong")]).await;
                    get(http, host, "/catalog").await;
                }
                if i % 10 == 0 {
                    get(http, "broken.web.test", "/").await;
                }
                // What the request pipeline records for each plugin run,
                // so that the plugin cost view has rows to show.
                sluicegate::metrics::live::record_plugin(
                    "apiroute/default/web/orders",
                    "keyAuth",
                    Duration::from_micros(3),
                    (i % 4 == 0).then_some(401),
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let base = format!("http://{}", f.gw.admin());
    let shots = screenshot_dir();
    let shot = |name: &'static str| {
        let shots = shots.clone();
        let browser = &browser;
        async move {
            if let Some(dir) = shots {
                browser.screenshot(&dir.join(name)).await;
            }
        }
    };
    let wait = Duration::from_secs(20);
    assert_eq!(browser.navigate(&format!("{base}/#routes")).await, 200);
    browser
        .wait_for(
            "document.querySelector('#routes-rows tr[data-route=\"apiroute/default/web/orders\"]') !== null",
            wait,
        )
        .await;
    let orders_row = browser
        .eval("document.querySelector('#routes-rows tr[data-route=\"apiroute/default/web/orders\"]').textContent")
        .await;
    let orders_row = orders_row.as_str().unwrap();
    for want in [
        "ApiRoute default/web",
        "keyAuth",
        "limitCount",
        "default/shop:80",
    ] {
        assert!(orders_row.contains(want), "{want} in {orders_row}");
    }
    // The route whose Service is missing shows its diagnostic.
    let broken = browser
        .eval("document.querySelector('#routes-rows tr[data-route=\"apiroute/default/web-broken/gone\"]').textContent")
        .await;
    assert!(broken.as_str().unwrap().contains("nope"), "{broken}");
    shot("dashboard-routes.png").await;

    browser.eval("location.hash = '#certificates'").await;
    let cert_row = browser
        .wait_for(
            "document.querySelector('#certs-rows tr[data-secret=\"default/site-tls\"]')?.textContent",
            wait,
        )
        .await;
    let cert_row = cert_row.as_str().unwrap();
    assert!(
        cert_row.contains("web.example.com") && cert_row.contains("CN=web.example.com"),
        "{cert_row}"
    );
    // Expiry in days, red under 14.
    let expiry = |secret: &str| {
        format!(
            "[...document.querySelectorAll('#certs-rows tr[data-secret=\"{secret}\"] .badge')].map(b => b.className + ' ' + b.textContent).join()"
        )
    };
    let fine = browser.eval(&expiry("default/site-tls")).await;
    assert!(
        matches!(fine.as_str(), Some("badge ok 89 days" | "badge ok 90 days")),
        "{fine}"
    );
    let soon = browser.eval(&expiry("default/legacy-tls")).await;
    assert!(
        matches!(
            soon.as_str(),
            Some("badge bad 9 days" | "badge bad 10 days")
        ),
        "{soon}"
    );
    let problems = browser
        .wait_for(
            "document.querySelector('#cert-problems-rows')?.textContent",
            wait,
        )
        .await;
    assert!(problems.as_str().unwrap().contains("bad-tls"), "{problems}");
    shot("dashboard-certificates.png").await;

    browser.eval("location.hash = '#upstreams'").await;
    let shop = browser
        .wait_for(
            "document.querySelector('[data-upstream=\"default/shop:80\"]')?.textContent",
            wait,
        )
        .await;
    assert!(shop.as_str().unwrap().contains("1/1 healthy"), "{shop}");
    // The latency estimate of a Peak EWMA route's endpoint.
    browser
        .wait_for(
            "/[0-9] (ms|µs)$/.test(document.querySelector('[data-upstream=\"default/shop:80\"] tbody td:last-child')?.textContent)",
            wait,
        )
        .await;
    shot("dashboard-upstreams.png").await;

    browser.eval("location.hash = '#live'").await;
    let cell = |route: &str, class: &str| {
        format!(
            "document.querySelector('#live-rows tr[data-route=\"{route}\"] .{class}')?.textContent"
        )
    };
    let rps = cell("apiroute/default/web/orders", "rps");
    browser
        .wait_for(&format!("parseFloat({rps}) > 0"), wait)
        .await;
    // The numbers move under load: the request counts of the window change
    // from one refresh to the next.
    let counts = "[...document.querySelectorAll('#live-rows tr[data-route=\"apiroute/default/web/orders\"] td.num')].map(td => td.textContent).join('|')";
    let first = browser.eval(counts).await;
    browser
        .wait_for(&format!("{counts} !== {first}"), wait)
        .await;
    let consumers = browser
        .eval(&cell("apiroute/default/web/orders", "consumers"))
        .await;
    assert!(consumers.as_str().unwrap().contains("alice"), "{consumers}");
    let errors = browser
        .eval(&cell("apiroute/default/web-broken/gone", "errors"))
        .await;
    assert_eq!(errors.as_str(), Some("100.0 %"));
    browser
        .wait_for(
            "document.querySelector('#plugin-rows tr[data-plugin=\"keyAuth\"] .calls')?.textContent",
            wait,
        )
        .await;
    // Let the trend lines fill a little for the picture.
    tokio::time::sleep(Duration::from_secs(if shots.is_some() { 8 } else { 1 })).await;
    shot("dashboard-live.png").await;

    // The search box explains a request.
    browser
        .eval("document.getElementById('q').value = 'GET api.web.test/orders/1 x-canary:1'; document.getElementById('search').requestSubmit(); true")
        .await;
    let route = browser
        .wait_for(
            "document.getElementById('explain-route')?.textContent",
            wait,
        )
        .await;
    assert_eq!(route, "apiroute/default/web/canary");
    let decided = browser
        .eval("document.getElementById('explain-decided').textContent")
        .await;
    assert!(
        decided
            .as_str()
            .unwrap()
            .contains("higher priority: 5 over 0"),
        "{decided}"
    );
    shot("dashboard-explain.png").await;

    // Typing filters the rows of a view.
    browser.eval("location.hash = '#routes'").await;
    browser
        .eval("const q = document.getElementById('q'); q.value = 'canary'; q.dispatchEvent(new Event('input')); true")
        .await;
    let visible = browser
        .wait_for(
            "(() => { const rows = [...document.querySelectorAll('#routes-rows tr')].filter(r => !r.classList.contains('hidden-row')); return rows.length === 1 && rows[0].dataset.route; })()",
            wait,
        )
        .await;
    assert_eq!(visible, "apiroute/default/web/canary");

    assert_eq!(
        browser.errors(),
        Vec::<String>::new(),
        "the page logged errors"
    );
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    f.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_behind_the_admin_token_in_chromium() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let f = Fixture::start("guarded", true, 1).await;
    let base = format!("http://{}", f.gw.admin());
    // Headless Chromium cannot show the sign-in prompt of the Basic
    // challenge, so it gives up on the page.
    let refused = browser.try_navigate(&format!("{base}/")).await;
    assert_eq!(refused, Err("net::ERR_INVALID_AUTH_CREDENTIALS".to_owned()));
    browser.clear();
    browser
        .set_headers(serde_json::json!({"Authorization": format!("Bearer {TOKEN}")}))
        .await;
    assert_eq!(browser.navigate(&format!("{base}/#routes")).await, 200);
    browser
        .wait_for(
            "document.querySelector('#routes-rows tr[data-route=\"apiroute/default/guarded/orders\"]') !== null",
            Duration::from_secs(20),
        )
        .await;
    let status = browser
        .eval("document.getElementById('status').textContent")
        .await;
    assert!(status.as_str().unwrap().contains("ready"), "{status}");
    // Only the refused page's own load error, which may arrive late.
    let errors: Vec<String> = browser
        .errors()
        .into_iter()
        .filter(|e| !e.contains("chrome-error://"))
        .collect();
    assert_eq!(errors, Vec::<String>::new());
    f.gw.shutdown().await;
}
