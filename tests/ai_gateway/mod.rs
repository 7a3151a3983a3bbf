//! The AI gateway end to end: a real gateway on loopback in front of fake
//! providers ([`fakes`]) that speak OpenAI, Azure OpenAI, Mistral,
//! Anthropic and Gemini. Each test asserts what the provider received
//! (path, key, translated body) and what the client got back.

use crate::common;

mod fakes;
mod fallback;
mod limits;
mod messages;
mod translation;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use fakes::{Api, Fake};
use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// A Secret `name` holding `key` as `api-key`.
pub fn secret(name: &str, key: &str) -> String {
    format!(
        r#"---
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: default}}
type: Opaque
stringData: {{api-key: "{key}"}}
"#
    )
}

/// An ApiRoute for `NAME.test` whose only route has `plugins` (a YAML
/// flow map holding `aiProxy`) and no backends.
pub fn ai_route(name: &str, plugins: &str) -> String {
    format!(
        r#"---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: ["{name}.test"]
  routes:
  - name: chat
    plugins: {plugins}
"#
    )
}

/// One instance entry of `aiProxy.instances`.
pub fn instance(name: &str, provider: &str, fake: &Fake, secret: &str, extra: &str) -> String {
    format!(
        "{{name: {name}, provider: {provider}, endpoint: \"{}\", apiKeySecretRef: {{name: {secret}}}{extra}}}",
        fake.endpoint()
    )
}

/// `POST path` with a JSON body and extra headers.
pub async fn post(
    gw: &TestGateway,
    host: &str,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> Reply {
    let mut b = Request::builder()
        .method("POST")
        .uri(path)
        .header("host", host)
        .header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(gw.http(), b.body(full(body.to_string())).unwrap())
        .await
        .unwrap()
}

/// `POST /v1/chat/completions` without extra headers.
pub async fn chat(gw: &TestGateway, host: &str, body: &Value) -> Reply {
    post(gw, host, "/v1/chat/completions", body, &[]).await
}

/// The JSON of a reply's body.
pub fn json_of(r: &Reply) -> Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?} {}", r.status, r.text()))
}

/// The `data:` payloads of an event stream, in order (`[DONE]` kept as a
/// string).
pub fn sse_data(text: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for event in text.split("\n\n") {
        for line in event.lines() {
            if let Some(d) = line.strip_prefix("data: ") {
                out.push(serde_json::from_str(d).unwrap_or_else(|_| Value::String(d.to_owned())));
            }
        }
    }
    out
}

/// What a streamed OpenAI answer says, assembled from its chunks.
#[derive(Debug, Default)]
pub struct Assembled {
    pub content: String,
    pub tool_name: Option<String>,
    pub tool_args: String,
    pub finish: Option<String>,
    pub usage: Option<Value>,
    pub done: bool,
    /// An error event (a stream cut after it began).
    pub error: Option<Value>,
    /// Chunks with an empty `choices` (the usage chunk).
    pub usage_chunks: usize,
}

pub fn assemble(chunks: &[Value]) -> Assembled {
    let mut a = Assembled::default();
    for c in chunks {
        if c == "[DONE]" {
            a.done = true;
            continue;
        }
        if c.get("error").is_some() {
            a.error = Some(c["error"].clone());
            continue;
        }
        assert_eq!(c["object"], "chat.completion.chunk", "{c}");
        if c.get("usage").is_some_and(|u| !u.is_null()) {
            a.usage = Some(c["usage"].clone());
        }
        let choices = c["choices"].as_array().expect("choices");
        if choices.is_empty() {
            a.usage_chunks += 1;
        }
        for ch in choices {
            let d = &ch["delta"];
            if let Some(t) = d["content"].as_str() {
                a.content.push_str(t);
            }
            for tc in d["tool_calls"].as_array().into_iter().flatten() {
                if let Some(n) = tc["function"]["name"].as_str() {
                    a.tool_name = Some(n.to_owned());
                }
                if let Some(x) = tc["function"]["arguments"].as_str() {
                    a.tool_args.push_str(x);
                }
            }
            if let Some(f) = ch["finish_reason"].as_str() {
                a.finish = Some(f.to_owned());
            }
        }
    }
    a
}

/// A streamed exchange read frame by frame.
pub struct Stream {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    body: hyper::body::Incoming,
    pub text: String,
}

impl Stream {
    pub async fn open(gw: &TestGateway, host: &str, body: &Value) -> Stream {
        let tcp = tokio::net::TcpStream::connect(gw.http()).await.unwrap();
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::builder()
            .method("POST")
            .uri("/v1/chat/completions")
            .header("host", host)
            .header("content-type", "application/json")
            .body(full(body.to_string()))
            .unwrap();
        let resp = tx.send_request(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        Stream {
            status: parts.status,
            headers: parts.headers,
            body,
            text: String::new(),
        }
    }

    /// Reads until `done` holds for the text so far.
    pub async fn read_until(&mut self, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(&self.text) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.body.frame()).await {
                Ok(Some(Ok(f))) => {
                    if let Ok(d) = f.into_data() {
                        self.text.push_str(&String::from_utf8_lossy(&d));
                    }
                }
                Ok(_) => panic!("the stream ended early: {}", self.text),
                Err(_) => panic!("no event in time; so far: {}", self.text),
            }
        }
    }

    /// Reads whatever arrives within `d`.
    pub async fn read_for(&mut self, d: Duration) {
        let until = tokio::time::Instant::now() + d;
        while let Ok(Some(Ok(f))) = tokio::time::timeout_at(until, self.body.frame()).await {
            if let Ok(d) = f.into_data() {
                self.text.push_str(&String::from_utf8_lossy(&d));
            }
        }
    }

    /// Reads to the end; `Err` when the body failed.
    pub async fn read_all(&mut self) -> Result<(), String> {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.body.frame()).await {
                Ok(Some(Ok(f))) => {
                    if let Ok(d) = f.into_data() {
                        self.text.push_str(&String::from_utf8_lossy(&d));
                    }
                }
                Ok(Some(Err(e))) => return Err(e.to_string()),
                Ok(None) => return Ok(()),
                Err(_) => panic!("stream did not end; so far: {}", self.text),
            }
        }
    }
}

/// One value of the admin endpoint's `/metrics` exposition: the sum of
/// the series of `name` whose labels include every one of `labels`.
/// Tests share the process's metrics, so assertions name their route
/// (by its ApiRoute's name).
pub async fn metric(gw: &TestGateway, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = admin_get(gw, "/metrics").await.text();
    let mut sum = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !rest.starts_with('{') && !rest.starts_with(' ') {
            continue;
        }
        let value_of = |k: &str| {
            let start = rest.find(&format!("{k}=\""))? + k.len() + 2;
            rest[start..].split('"').next()
        };
        // A label matches its value, or (for `route`) one `/` part of it.
        if labels.iter().all(|(k, v)| {
            value_of(k).is_some_and(|x| x == *v || (*k == "route" && x.split('/').any(|p| p == *v)))
        }) {
            let value = rest.rsplit(' ').next().unwrap();
            sum += value.parse::<f64>().unwrap();
        }
    }
    sum
}

/// Waits until `f` holds, or fails after 5 s.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within 5s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A gateway in front of one OpenAI fake, route `NAME.test`.
pub async fn one_openai(name: &str, extra: &str) -> (TestGateway, Fake) {
    let f = Fake::start(Api::OpenAi, "sk-openai").await;
    let m = secret("openai", "sk-openai")
        + &ai_route(
            name,
            &format!(
                "{{aiProxy: {{instances: [{}]{extra}}}}}",
                instance("primary", "OpenAI", &f, "openai", "")
            ),
        );
    (TestGateway::start(&m).await, f)
}

pub fn hello() -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}]})
}

#[tokio::test]
async fn models_lists_what_the_route_allows() {
    let (gw, f) = one_openai("models", ", allowedModels: [gpt-4o-mini, gpt-4o]").await;
    let r = get(gw.http(), "models.test", "/v1/models").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = json_of(&r);
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["gpt-4o-mini", "gpt-4o"]);
    // A model outside the list never reaches the provider.
    let r = chat(
        &gw,
        "models.test",
        &json!({"model": "o3", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        json_of(&r)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("o3")
    );
    assert_eq!(f.requests(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn bad_requests_are_4xx_and_never_reach_a_provider() {
    let (gw, f) = one_openai("bad", ", maxRequestBody: 1Ki").await;
    let r = post(
        &gw,
        "bad.test",
        "/v1/chat/completions",
        &json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(2000)}]}),
        &[],
    )
    .await;
    assert_eq!(r.status, 413);
    let mut b = Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header("host", "bad.test");
    b = b.header("content-type", "application/json");
    let r = send(
        gw.http(),
        b.body(full(Bytes::from_static(b"{not json"))).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(json_of(&r)["error"]["message"].is_string());
    let r = chat(&gw, "bad.test", &json!({"model": "m"})).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = get(gw.http(), "bad.test", "/v1/chat/completions").await;
    assert_eq!(r.status, 405);
    let r = chat(&gw, "bad.test", &hello()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(f.requests(), 1);
    gw.shutdown().await;
}
