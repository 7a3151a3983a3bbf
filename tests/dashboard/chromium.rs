//! Headless Chromium for the dashboard tests, driven over the Chrome
//! DevTools Protocol on a WebSocket: one browser process, one page,
//! JavaScript evaluation, screenshots, and every console error, uncaught
//! exception and failed load the page reports.
//!
//! Only Debian's `chromium` package is needed (no driver, no Node). Tests
//! call [`Browser::launch`], which returns `None` after printing why when
//! there is no Chromium, unless `SLUICEGATE_BROWSER_TESTS=require` (CI),
//! which turns that into a failure.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::common::TempDir;

/// Flags for a quiet, self-contained headless browser.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
    "--window-size=1280,800",
];

/// Chromium: `$SLUICEGATE_CHROMIUM`, else the first of the usual names on
/// the PATH.
pub fn find() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SLUICEGATE_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for name in [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

pub struct Browser {
    child: Child,
    out: mpsc::UnboundedSender<Message>,
    pending: Pending,
    events: Arc<Mutex<Vec<Value>>>,
    next: AtomicU64,
    session: String,
    _profile: TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts Chromium with a fresh profile and opens a page; `None` when
    /// there is no Chromium (see the module documentation).
    pub async fn launch() -> Option<Browser> {
        let Some(exe) = find() else {
            let why =
                "no Chromium found (install Debian's chromium package or set SLUICEGATE_CHROMIUM)";
            if std::env::var("SLUICEGATE_BROWSER_TESTS").as_deref() == Ok("require") {
                panic!("SLUICEGATE_BROWSER_TESTS=require but {why}");
            }
            // Straight to stderr, past the test harness's capture, so that
            // the skip shows in a plain `cargo test`.
            let _ = writeln!(std::io::stderr(), "skipping the browser test: {why}");
            return None;
        };
        let profile = TempDir::new();
        let mut child = Command::new(&exe)
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        // Chromium prints the DevTools address on stderr; the rest of its
        // output is drained so that it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let url = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
            .await
            .unwrap()
            .expect("Chromium did not print its DevTools address within 60 s");
        let uri: http::Uri = url.parse().unwrap();
        let stream = TcpStream::connect(uri.authority().unwrap().as_str())
            .await
            .unwrap();
        let (ws, _) = tokio_tungstenite::client_async(url.as_str(), stream)
            .await
            .expect("DevTools WebSocket");
        let (mut sink, mut source) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
        });
        let pending: Pending = Arc::default();
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let (p, e) = (pending.clone(), events.clone());
        tokio::spawn(async move {
            while let Some(Ok(msg)) = source.next().await {
                let Message::Text(text) = msg else { continue };
                let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                match v["id"].as_u64() {
                    Some(id) => {
                        if let Some(tx) = p.lock().unwrap().remove(&id) {
                            let _ = tx.send(v);
                        }
                    }
                    None => e.lock().unwrap().push(v),
                }
            }
        });
        let mut b = Browser {
            child,
            out,
            pending,
            events,
            next: AtomicU64::new(1),
            session: String::new(),
            _profile: profile,
        };
        let target = b
            .send(false, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let attached = b
            .send(
                false,
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        b.session = attached["sessionId"].as_str().unwrap().to_owned();
        for method in [
            "Page.enable",
            "Runtime.enable",
            "Log.enable",
            "Network.enable",
        ] {
            b.call(method, json!({})).await;
        }
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
        Some(b)
    }

    async fn send(&self, on_page: bool, method: &str, params: Value) -> Value {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let mut msg = json!({"id": id, "method": method, "params": params});
        if on_page {
            msg["sessionId"] = self.session.clone().into();
        }
        self.out.send(Message::text(msg.to_string())).unwrap();
        let v = tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .unwrap_or_else(|_| panic!("{method}: no answer within 30 s"))
            .unwrap();
        if let Some(err) = v.get("error") {
            panic!("{method}: {err}");
        }
        v["result"].clone()
    }

    /// A DevTools command on the page.
    pub async fn call(&self, method: &str, params: Value) -> Value {
        self.send(true, method, params).await
    }

    /// Loads `url` and waits for its load event; returns the HTTP status.
    pub async fn navigate(&self, url: &str) -> u16 {
        match self.try_navigate(url).await {
            Ok(status) => status,
            Err(e) => panic!("navigating to {url}: {e}"),
        }
    }

    /// Like [`Self::navigate`], with the browser's error (such as
    /// `net::ERR_INVALID_AUTH_CREDENTIALS`) when the page cannot load.
    pub async fn try_navigate(&self, url: &str) -> Result<u16, String> {
        let mark = self.events.lock().unwrap().len();
        let r = self.call("Page.navigate", json!({"url": url})).await;
        if let Some(e) = r["errorText"].as_str() {
            return Err(e.to_owned());
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            {
                let events = self.events.lock().unwrap();
                let fresh = &events[mark..];
                if fresh.iter().any(|e| e["method"] == "Page.loadEventFired") {
                    return Ok(fresh
                        .iter()
                        .rev()
                        .filter(|e| {
                            e["method"] == "Network.responseReceived"
                                && e["params"]["type"] == "Document"
                        })
                        .find_map(|e| e["params"]["response"]["status"].as_u64())
                        .map_or(0, |s| s as u16));
                }
            }
            assert!(Instant::now() < deadline, "{url} did not load within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The value of a JavaScript expression (promises are awaited).
    pub async fn eval(&self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expr}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Waits until `expr` is truthy and returns its value.
    pub async fn wait_for(&self, expr: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.eval(expr).await;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "still false after {within:?}: {expr}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends these headers with every request of the page from now on.
    pub async fn set_headers(&self, headers: Value) {
        self.call("Network.setExtraHTTPHeaders", json!({"headers": headers}))
            .await;
    }

    /// Writes a PNG of the viewport.
    pub async fn screenshot(&self, path: &Path) {
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Console errors, uncaught exceptions and failed loads so far.
    pub fn errors(&self) -> Vec<String> {
        let events = self.events.lock().unwrap();
        let mut out = Vec::new();
        for e in events.iter() {
            let p = &e["params"];
            match e["method"].as_str() {
                Some("Runtime.exceptionThrown") => out.push(format!(
                    "exception: {}",
                    p["exceptionDetails"]["exception"]["description"]
                        .as_str()
                        .unwrap_or(p["exceptionDetails"]["text"].as_str().unwrap_or("?"))
                )),
                Some("Runtime.consoleAPICalled")
                    if matches!(p["type"].as_str(), Some("error" | "assert")) =>
                {
                    out.push(format!("console.{}: {}", p["type"], p["args"]));
                }
                Some("Log.entryAdded") if p["entry"]["level"] == "error" => {
                    out.push(format!("log: {} {}", p["entry"]["text"], p["entry"]["url"]))
                }
                _ => {}
            }
        }
        out
    }

    /// Forgets the events so far (after an expected failure).
    pub fn clear(&self) {
        self.events.lock().unwrap().clear();
    }
}
