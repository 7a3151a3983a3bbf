//! The admin port's dashboard and its API, on a real gateway with real
//! backends: what the views show, that no Secret value ever appears on any
//! admin path, the admin token, `/explain` agreeing with where the proxy
//! actually sends requests, the `explain` command, live traffic, and the
//! page itself in headless Chromium (skipped, with the reason printed,
//! where there is no Chromium).

use crate::common;

mod api;
mod browser;
mod chromium;

use common::*;
use serde_json::Value;
use sluicegate::admin::AdminToken;

pub const TOKEN: &str = "admin-TOKEN-c0ffee-41";

/// Values that live only in Secrets; none may leave through the admin
/// port.
pub const SECRETS: &[&str] = &[
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
pub struct Fixture {
    pub gw: TestGateway,
    pub cert: tls::Cert,
    _shop: Backend,
    _canary: Backend,
}

impl Fixture {
    pub async fn start(name: &str, token: bool, workers: usize) -> Fixture {
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

    pub async fn admin(&self, path: &str) -> Reply {
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

    pub async fn admin_json(&self, path: &str) -> Value {
        let r = self.admin(path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        serde_json::from_slice(&r.body).unwrap()
    }
}

/// A query string for `/explain`.
pub fn explain_query(host: &str, path: &str, method: &str, headers: &[&str]) -> String {
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
