//! Fake LLM providers on loopback, one per wire format, written from the
//! providers' public API references: each checks the request the way the
//! real API does (path, authentication header, required fields), answers
//! whole or streamed in the provider's own format, and fails the way the
//! real one fails (its error bodies, 429 with `retry-after`). Every
//! request is recorded, so tests assert what the provider received.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// Which API a fake speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    OpenAi,
    Azure,
    Mistral,
    Anthropic,
    Gemini,
}

/// What a fake does with the next request.
#[derive(Clone, Debug)]
pub enum Act {
    /// Answers `text` (streamed word by word when asked to stream), with
    /// a tool call to `tool` (name, JSON arguments) when given.
    Answer {
        text: &'static str,
        tool: Option<(&'static str, &'static str)>,
    },
    /// Answers `status` with the provider's own error body.
    Fail(u16),
    /// Never answers.
    Hang,
    /// Sends a 200 stream head, then closes before any event.
    DieBeforeToken,
    /// Streams `n` words, then closes the connection without ending.
    DieAfter(usize),
    /// Streams `words` words, each event after the first only once the
    /// test releases it ([`Fake::release`]).
    Gated { words: usize },
}

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Debug)]
struct State {
    api: Api,
    key: Mutex<String>,
    script: Mutex<VecDeque<Act>>,
    default: Mutex<Act>,
    seen: Mutex<Vec<Seen>>,
    /// Streams whose client went away before the end.
    cancelled: AtomicUsize,
    /// Streams sent to the end.
    completed: AtomicUsize,
    /// Permits for [`Act::Gated`] events.
    gate: Arc<tokio::sync::Semaphore>,
}

/// A fake provider.
pub struct Fake {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The words of an answer's text.
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, w) in text.split(' ').enumerate() {
        out.push(if i == 0 {
            w.to_owned()
        } else {
            format!(" {w}")
        });
    }
    out
}

/// Prompt tokens as the fakes count them: the words of every text in
/// the request body.
fn prompt_tokens(body: &Value) -> u64 {
    fn walk(v: &Value, n: &mut u64) {
        match v {
            Value::String(s) => *n += s.split_whitespace().count() as u64,
            Value::Array(a) => a.iter().for_each(|x| walk(x, n)),
            Value::Object(o) => o
                .iter()
                .filter(|(k, _)| {
                    matches!(
                        k.as_str(),
                        "messages" | "contents" | "content" | "parts" | "text" | "system"
                    )
                })
                .for_each(|(_, x)| walk(x, n)),
            _ => {}
        }
    }
    let mut n = 0;
    walk(body, &mut n);
    n
}

impl Fake {
    pub async fn start(api: Api, key: &str) -> Fake {
        Fake::start_with(api, key, None).await
    }

    /// A fake serving over TLS with `tls`.
    pub async fn start_with(api: Api, key: &str, tls: Option<Arc<rustls::ServerConfig>>) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            api,
            key: Mutex::new(key.to_owned()),
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(Act::Answer {
                text: "Hello from the fake",
                tool: None,
            }),
            seen: Mutex::new(Vec::new()),
            cancelled: AtomicUsize::new(0),
            completed: AtomicUsize::new(0),
            gate: Arc::new(tokio::sync::Semaphore::new(0)),
        });
        let st = state.clone();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(handle(st, req).await) }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = match acceptor {
                        None => builder.serve_connection(TokioIo::new(stream), svc).await,
                        Some(a) => match a.accept(stream).await {
                            Ok(s) => builder.serve_connection(TokioIo::new(s), svc).await,
                            Err(_) => return,
                        },
                    };
                });
            }
        });
        Fake { addr, state, task }
    }

    /// The base URL an instance names.
    pub fn endpoint(&self) -> String {
        format!("http://{}{}", self.addr, self.base())
    }

    fn base(&self) -> &'static str {
        match self.state.api {
            Api::OpenAi | Api::Mistral | Api::Anthropic => "/v1",
            Api::Gemini => "/v1beta",
            Api::Azure => "",
        }
    }

    /// Queues what the next requests get, in order.
    pub fn then(&self, act: Act) -> &Fake {
        self.state.script.lock().unwrap().push_back(act);
        self
    }

    /// What requests get once the queue is empty.
    pub fn always(&self, act: Act) {
        *self.state.default.lock().unwrap() = act;
    }

    /// The key the fake accepts from now on.
    pub fn rotate(&self, key: &str) {
        *self.state.key.lock().unwrap() = key.to_owned();
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn requests(&self) -> usize {
        self.state.seen.lock().unwrap().len()
    }

    /// Lets one more event of a gated stream go.
    pub fn release(&self) {
        self.state.gate.add_permits(1);
    }

    pub fn cancelled(&self) -> usize {
        self.state.cancelled.load(Ordering::SeqCst)
    }

    pub fn completed(&self) -> usize {
        self.state.completed.load(Ordering::SeqCst)
    }
}

fn json_response(status: u16, v: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(
            Full::new(Bytes::from(v.to_string()))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap()
}

/// The provider's error body for `status`, as its API reference shows.
fn error(api: Api, status: u16, message: &str) -> Response<Body> {
    let (kind, code) = match status {
        400 => ("invalid_request_error", "invalid_request"),
        401 => ("authentication_error", "invalid_api_key"),
        404 => ("not_found_error", "model_not_found"),
        422 => ("invalid_request_error", "invalid_request"),
        429 => ("rate_limit_error", "rate_limit_exceeded"),
        529 => ("overloaded_error", "overloaded"),
        _ => ("api_error", "server_error"),
    };
    let mut resp = match api {
        Api::OpenAi | Api::Azure => json_response(
            status,
            json!({"error": {"message": message, "type": if status == 429 { "requests" } else { kind }, "param": null, "code": code}}),
        ),
        Api::Mistral => json_response(
            status,
            json!({"object": "error", "message": message, "type": kind, "param": null, "code": null}),
        ),
        Api::Anthropic => json_response(
            status,
            json!({"type": "error", "error": {"type": kind, "message": message}}),
        ),
        Api::Gemini => {
            let s = match status {
                400 => "INVALID_ARGUMENT",
                401 | 403 => "PERMISSION_DENIED",
                429 => "RESOURCE_EXHAUSTED",
                503 => "UNAVAILABLE",
                _ => "INTERNAL",
            };
            json_response(
                status,
                json!({"error": {"code": status, "message": message, "status": s}}),
            )
        }
    };
    if status == 429 {
        resp.headers_mut()
            .insert("retry-after", http::HeaderValue::from_static("7"));
    }
    resp
}

/// The request's problem, as the real API would see it, or what it asks
/// for: (model, streamed, stream usage asked).
fn check(
    api: Api,
    path: &str,
    headers: &HeaderMap,
    key: &str,
    body: &Value,
) -> Result<(String, bool, bool), (u16, String)> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let bad = |m: &str| Err((400, m.to_owned()));
    if header("content-type") != Some("application/json") {
        return bad("content-type must be application/json");
    }
    let authorized = match api {
        Api::OpenAi | Api::Mistral => header("authorization") == Some(&format!("Bearer {key}")),
        Api::Azure => header("api-key") == Some(key),
        Api::Anthropic => header("x-api-key") == Some(key),
        Api::Gemini => header("x-goog-api-key") == Some(key),
    };
    if !authorized {
        let shown = header("authorization")
            .or(header("api-key"))
            .or(header("x-api-key"))
            .or(header("x-goog-api-key"))
            .unwrap_or("");
        return Err((401, format!("Incorrect API key provided: {shown}.")));
    }
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    match api {
        Api::OpenAi | Api::Azure | Api::Mistral => {
            let want = match api {
                Api::Azure => "/chat/completions?api-version=2024-10-21",
                _ => "/v1/chat/completions",
            };
            if !path.ends_with(want) {
                return Err((404, format!("no route {path}")));
            }
            if api == Api::Azure && !path.starts_with("/openai/deployments/") {
                return Err((404, format!("no deployment in {path}")));
            }
            if api == Api::Mistral {
                for k in body.as_object().into_iter().flatten().map(|(k, _)| k) {
                    if ![
                        "model",
                        "messages",
                        "temperature",
                        "top_p",
                        "max_tokens",
                        "stream",
                        "stop",
                        "random_seed",
                        "response_format",
                        "tools",
                        "tool_choice",
                        "presence_penalty",
                        "frequency_penalty",
                        "n",
                        "parallel_tool_calls",
                        "prediction",
                        "safe_prompt",
                    ]
                    .contains(&k.as_str())
                    {
                        return Err((422, format!("Extra inputs are not permitted: {k}")));
                    }
                }
            }
            let model = body.get("model").and_then(Value::as_str);
            if api != Api::Azure && model.is_none() {
                return bad("you must provide a model parameter");
            }
            if body
                .get("messages")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
            {
                return bad("messages: must be a non-empty array");
            }
            let usage = body
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                == Some(true);
            if body.get("stream_options").is_some() && !stream {
                return bad("stream_options is only allowed when stream is true");
            }
            let model = match api {
                Api::Azure => path.split('/').nth(3).unwrap_or("").to_owned(),
                _ => model.unwrap_or("").to_owned(),
            };
            Ok((model, stream, usage))
        }
        Api::Anthropic => {
            if path != "/v1/messages" {
                return Err((404, format!("no route {path}")));
            }
            if header("anthropic-version") != Some("2023-06-01") {
                return bad("anthropic-version header is required");
            }
            if !body.get("max_tokens").is_some_and(Value::is_u64) {
                return bad("max_tokens: Field required");
            }
            let Some(messages) = body.get("messages").and_then(Value::as_array) else {
                return bad("messages: Field required");
            };
            for (i, m) in messages.iter().enumerate() {
                let role = m.get("role").and_then(Value::as_str).unwrap_or("");
                if role != "user" && role != "assistant" {
                    return bad(&format!(
                        "messages.{i}.role: Input should be 'user' or 'assistant'"
                    ));
                }
                if i > 0 && messages[i - 1]["role"] == m["role"] {
                    return bad("roles must alternate between \"user\" and \"assistant\"");
                }
            }
            if messages.first().is_none_or(|m| m["role"] != "user") {
                return bad("first message must use the \"user\" role");
            }
            if body
                .get("temperature")
                .and_then(Value::as_f64)
                .is_some_and(|t| t > 1.0)
            {
                return bad("temperature: range: 0 <= temperature <= 1");
            }
            Ok((
                body["model"].as_str().unwrap_or("").to_owned(),
                stream,
                true,
            ))
        }
        Api::Gemini => {
            let Some(rest) = path.strip_prefix("/v1beta/models/") else {
                return Err((404, format!("no route {path}")));
            };
            let (model, method) = rest.split_once(':').unwrap_or((rest, ""));
            let stream = match method {
                "generateContent" => false,
                "streamGenerateContent?alt=sse" => true,
                _ => return Err((404, format!("unknown method {method}"))),
            };
            let Some(contents) = body.get("contents").and_then(Value::as_array) else {
                return bad("contents is not specified");
            };
            for c in contents {
                if !matches!(c["role"].as_str(), Some("user" | "model")) {
                    return bad("Please use a valid role: user, model.");
                }
            }
            Ok((model.to_owned(), stream, true))
        }
    }
}

async fn handle(st: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let path = req
        .uri()
        .path_and_query()
        .map_or("/".to_owned(), |p| p.as_str().to_owned());
    let headers = req.headers().clone();
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    st.seen.lock().unwrap().push(Seen {
        path: path.clone(),
        headers: headers.clone(),
        body: body.clone(),
    });
    let key = st.key.lock().unwrap().clone();
    let (model, stream, usage) = match check(st.api, &path, &headers, &key, &body) {
        Ok(x) => x,
        Err((status, message)) => return error(st.api, status, &message),
    };
    let act = st
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| st.default.lock().unwrap().clone());
    let prompt = prompt_tokens(&body);
    match act {
        Act::Fail(status) => {
            let message = match status {
                429 => "Rate limit reached for requests",
                529 => "Overloaded",
                _ => "The server had an error while processing your request.",
            };
            error(st.api, status, message)
        }
        Act::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            error(st.api, 500, "late")
        }
        Act::Answer { text, tool } if !stream => {
            json_response(200, whole(st.api, &model, prompt, text, tool))
        }
        act => streamed(st, model, prompt, usage, act),
    }
}

/// A whole answer in the provider's format.
fn whole(api: Api, model: &str, prompt: u64, text: &str, tool: Option<(&str, &str)>) -> Value {
    let completion = words(text).len() as u64;
    match api {
        Api::OpenAi | Api::Azure | Api::Mistral => {
            let mut message = json!({"role": "assistant", "content": text});
            if let Some((name, args)) = tool {
                message["tool_calls"] = json!([{"id": "call_abc", "type": "function", "function": {"name": name, "arguments": args}}]);
            }
            json!({
                "id": "chatcmpl-fake", "object": "chat.completion", "created": 1700000000, "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": null,
                    "finish_reason": if tool.is_some() { "tool_calls" } else { "stop" }}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
            })
        }
        Api::Anthropic => {
            let mut content = vec![json!({"type": "text", "text": text})];
            if let Some((name, args)) = tool {
                let input: Value = serde_json::from_str(args).unwrap();
                content.push(
                    json!({"type": "tool_use", "id": "toolu_01", "name": name, "input": input}),
                );
            }
            json!({
                "id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": content,
                "stop_reason": if tool.is_some() { "tool_use" } else { "end_turn" }, "stop_sequence": null,
                "usage": {"input_tokens": prompt, "output_tokens": completion}
            })
        }
        Api::Gemini => {
            let mut parts = vec![json!({"text": text})];
            if let Some((name, args)) = tool {
                let a: Value = serde_json::from_str(args).unwrap();
                parts.push(json!({"functionCall": {"name": name, "args": a}}));
            }
            json!({
                "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": prompt, "candidatesTokenCount": completion, "totalTokenCount": prompt + completion},
                "modelVersion": model, "responseId": "resp-fake"
            })
        }
    }
}

/// The events of a streamed answer, each whole, in the provider's format.
fn events(
    api: Api,
    model: &str,
    prompt: u64,
    usage: bool,
    text: &str,
    tool: Option<(&str, &str)>,
) -> Vec<String> {
    let ws = words(text);
    let completion = ws.len() as u64;
    let data = |v: Value| format!("data: {v}\n\n");
    let named = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
    let mut out = Vec::new();
    match api {
        Api::OpenAi | Api::Azure | Api::Mistral => {
            let null_usage = usage && api != Api::Mistral;
            let chunk = |delta: Value, finish: Value| {
                let mut c = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000,
                    "model": model, "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
                if null_usage {
                    c["usage"] = Value::Null;
                }
                c
            };
            out.push(data(chunk(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
            )));
            for w in &ws {
                out.push(data(chunk(json!({"content": w}), Value::Null)));
            }
            if let Some((name, args)) = tool {
                out.push(data(chunk(json!({"tool_calls": [{"index": 0, "id": "call_abc", "type": "function", "function": {"name": name, "arguments": ""}}]}), Value::Null)));
                let (a, b) = args.split_at(args.len() / 2);
                for part in [a, b] {
                    out.push(data(chunk(
                        json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}),
                        Value::Null,
                    )));
                }
            }
            let finish = if tool.is_some() { "tool_calls" } else { "stop" };
            let u = json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion});
            let mut last = chunk(json!({}), json!(finish));
            if api == Api::Mistral {
                // Mistral reports usage in its last chunk, always.
                last["usage"] = u.clone();
            }
            out.push(data(last));
            if usage && api != Api::Mistral {
                out.push(data(json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000,
                    "model": model, "choices": [], "usage": u})));
            }
            out.push("data: [DONE]\n\n".into());
        }
        Api::Anthropic => {
            out.push(named("message_start", json!({"type": "message_start", "message": {"id": "msg_fake", "type": "message",
                "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": prompt, "output_tokens": 1}}})));
            out.push(named("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
            out.push(named("ping", json!({"type": "ping"})));
            for w in &ws {
                out.push(named("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}})));
            }
            out.push(named(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ));
            if let Some((name, args)) = tool {
                out.push(named("content_block_start", json!({"type": "content_block_start", "index": 1,
                    "content_block": {"type": "tool_use", "id": "toolu_01", "name": name, "input": {}}})));
                let (a, b) = args.split_at(args.len() / 2);
                for part in [a, b] {
                    out.push(named(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": 1,
                        "delta": {"type": "input_json_delta", "partial_json": part}}),
                    ));
                }
                out.push(named(
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": 1}),
                ));
            }
            out.push(named("message_delta", json!({"type": "message_delta",
                "delta": {"stop_reason": if tool.is_some() { "tool_use" } else { "end_turn" }, "stop_sequence": null},
                "usage": {"output_tokens": completion}})));
            out.push(named("message_stop", json!({"type": "message_stop"})));
        }
        Api::Gemini => {
            let n = ws.len();
            for (i, w) in ws.iter().enumerate() {
                let mut r = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": w}]}, "index": 0}],
                    "usageMetadata": {"promptTokenCount": prompt, "totalTokenCount": prompt},
                    "modelVersion": model, "responseId": "resp-fake"});
                if i + 1 == n && tool.is_none() {
                    r["candidates"][0]["finishReason"] = json!("STOP");
                    r["usageMetadata"] = json!({"promptTokenCount": prompt, "candidatesTokenCount": completion, "totalTokenCount": prompt + completion});
                }
                out.push(data(r));
            }
            if let Some((name, args)) = tool {
                let a: Value = serde_json::from_str(args).unwrap();
                out.push(data(json!({"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": name, "args": a}}]},
                    "finishReason": "STOP", "index": 0}],
                    "usageMetadata": {"promptTokenCount": prompt, "candidatesTokenCount": completion, "totalTokenCount": prompt + completion},
                    "modelVersion": model, "responseId": "resp-fake"})));
            }
        }
    }
    out
}

fn streamed(st: Arc<State>, model: String, prompt: u64, usage: bool, act: Act) -> Response<Body> {
    let gated = matches!(act, Act::Gated { .. });
    let (text, tool, gap, cut) = match act {
        Act::Answer { text, tool } => (text, tool, Duration::ZERO, None),
        Act::Gated { words: n } => {
            let text: &'static str = Box::leak(vec!["tok"; n].join(" ").into_boxed_str());
            (text, None, Duration::ZERO, None)
        }
        Act::DieBeforeToken => ("", None, Duration::ZERO, Some(0)),
        Act::DieAfter(n) => (
            "one two three four five six seven eight",
            None,
            Duration::from_millis(20),
            Some(n),
        ),
        Act::Fail(_) | Act::Hang => unreachable!(),
    };
    let mut all = events(st.api, &model, prompt, usage, text, tool);
    if let Some(n) = cut {
        // Keep the events before the n-th word (Anthropic has three
        // events before its first word, the others one or none).
        let lead = match st.api {
            Api::Anthropic => 3,
            Api::Gemini => 0,
            _ => 1,
        };
        all.truncate(if n == 0 { 0 } else { lead + n });
    }
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
    let gate = st.gate.clone();
    tokio::spawn(async move {
        for (i, e) in all.into_iter().enumerate() {
            if !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            if gated && i > 0 {
                match gate.acquire().await {
                    Ok(p) => p.forget(),
                    Err(_) => return,
                }
            }
            // Fails once the server dropped the body: its connection
            // closed under it.
            if tx.send(Ok(Frame::data(Bytes::from(e)))).await.is_err() {
                st.cancelled.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
        if cut.is_some() {
            // Let the events leave, then fail the body: the server
            // breaks the connection without ending the response.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = tx.send(Err(std::io::Error::other("cut"))).await;
            return;
        }
        st.completed.fetch_add(1, Ordering::SeqCst);
    });
    let body = StreamBody::new(tokio_stream_from(rx));
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(BodyExt::boxed(body))
        .unwrap()
}

/// A receiver as a stream of frames.
fn tokio_stream_from(
    rx: mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) })
}

#[allow(dead_code)]
pub fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap()
}
