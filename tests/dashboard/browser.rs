//! The dashboard page in headless Chromium: every view renders what the
//! gateway has, the live numbers move under load, the search box filters
//! and explains, nothing is logged as an error; and behind the token.
//! Skipped, saying why, where there is no Chromium.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::*;
use crate::dashboard::chromium::Browser;
use crate::dashboard::{Fixture, SECRETS, TOKEN};

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
    // The plugin cost rows come from the plugins the proxy ran.
    for plugin in ["keyAuth", "limitCount"] {
        browser
            .wait_for(
                &format!("document.querySelector('#plugin-rows tr[data-route=\"apiroute/default/web/orders\"][data-plugin=\"{plugin}\"] .calls')?.textContent"),
                wait,
            )
            .await;
    }
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
