//! The admin port's API on a real gateway: Secret values kept out of
//! every path, the token, `/explain` against the proxy's real choices, the
//! `explain` command, live traffic counts.

use base64::Engine as _;
use serde_json::Value;
use sluicegate::admin::PATHS;

use crate::common::*;
use crate::dashboard::{Fixture, SECRETS, TOKEN, explain_query};

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
        // Answered by the gateway whatever the route.
        ("TRACE", host, "/catalog", vec![]),
        ("OPTIONS", host, "/catalog", vec!["max-forwards:0"]),
    ];
    for (method, h, path, headers) in cases {
        let pairs: Vec<(&str, &str)> = headers.iter().map(|x| x.split_once(':').unwrap()).collect();
        let proxied = request(f.gw.http(), method, h, path, &pairs).await;
        let e = f
            .admin_json(&explain_query(h, path, method, &headers))
            .await;
        let what = format!("{method} {h}{path} {headers:?}");
        if let Some(status) = e["answeredByGateway"]["status"].as_u64() {
            assert_eq!(u64::from(proxied.status.as_u16()), status, "{what}: {e}");
            continue;
        }
        assert!(e["answeredByGateway"].is_null(), "{what}: {e}");
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
async fn live_traffic_counts_requests_consumers_errors_and_plugin_runs_per_route() {
    let f = Fixture::start("live", false, 2).await;
    let host = "api.live.test";
    for i in 0..30 {
        let key = if i < 20 { SECRETS[0] } else { SECRETS[1] };
        let r = request(f.gw.http(), "GET", host, "/orders/1", &[("apikey", key)]).await;
        assert_eq!(r.status, 200);
    }
    for _ in 0..5 {
        let r = request(
            f.gw.http(),
            "GET",
            host,
            "/orders/1",
            &[("apikey", "wrong")],
        )
        .await;
        assert_eq!(r.status, 401);
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
    assert_eq!(orders["requests"], 35);
    assert_eq!(orders["statuses"]["2xx"], 30);
    assert_eq!(orders["statuses"]["4xx"], 5);
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
    // Every plugin run of the pipeline, as the proxy recorded it: keyAuth
    // ran on all 35 and answered the 5 with a wrong key itself; limitCount
    // ran only after it let a request go on.
    let plugin = |name: &str| {
        orders["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["plugin"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {orders}"))
    };
    let key_auth = plugin("keyAuth");
    assert_eq!(
        (key_auth["calls"].as_u64(), key_auth["continued"].as_u64()),
        (Some(35), Some(30))
    );
    assert_eq!(
        key_auth["answered"],
        serde_json::json!([{"status": 401, "count": 5}])
    );
    assert!(key_auth["meanMs"].as_f64().unwrap() > 0.0, "{key_auth}");
    let limit = plugin("limitCount");
    assert_eq!(
        (limit["calls"].as_u64(), limit["continued"].as_u64()),
        (Some(30), Some(30))
    );
    assert_eq!(limit["answered"], serde_json::json!([]));
    let gone = route("apiroute/default/live-broken/gone");
    assert_eq!(
        (gone["requests"].as_u64(), gone["errorRate"].as_f64()),
        (Some(4), Some(1.0))
    );
    f.gw.shutdown().await;
}
