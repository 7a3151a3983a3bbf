//! Anthropic Messages (`POST /v1/messages`), both ways.
//!
//! Requests: system and developer messages become the `system` prompt;
//! tool results (role `tool`) become `tool_result` blocks of a user
//! message; assistant tool calls become `tool_use` blocks; consecutive
//! messages of one role are merged, as the API wants turns to alternate.
//! `max_tokens` is required there, so the route's default fills it in;
//! `temperature` is capped at 1 (Anthropic's range); a `response_format`
//! asking for JSON becomes an instruction in the system prompt, the API
//! having no such setting. `n` above 1 is refused.
//!
//! Answers: text blocks become the message content, `tool_use` blocks its
//! tool calls, `stop_reason` the finish reason; usage counts cached input
//! as prompt tokens. Streams map `message_start`, `content_block_*`,
//! `message_delta` and `message_stop` onto OpenAI chunks one by one.

use foldhash::{HashMap, HashMapExt};
use serde_json::{Map, Value, json};

use super::chat::{ChatRequest, Content, Part, Role, ToolChoice, finish};
use super::emit::{self, Emitter};
use crate::ai::error::{AiError, Failure};
use crate::plugins::TokenUsage;

/// The body sent to Anthropic.
pub fn request_body(
    req: &ChatRequest,
    model: &str,
    stream: bool,
    default_max_tokens: u32,
) -> Result<Value, AiError> {
    req.refuse_n("Anthropic")?;
    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let (role, blocks) = match m.role {
            Role::System | Role::Developer => {
                system.push(m.text());
                continue;
            }
            Role::User => ("user", user_blocks(m.content.as_ref())),
            Role::Assistant => {
                let mut blocks = text_blocks(m.content.as_ref());
                for call in m.tool_calls.iter().flatten() {
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call.id,
                        "name": call.function.name,
                        "input": call.function.arguments_object()?,
                    }));
                }
                ("assistant", blocks)
            }
            Role::Tool => {
                let id = m.tool_call_id.as_deref().ok_or_else(|| {
                    AiError::BadRequest(format!("messages[{i}]: a tool message needs tool_call_id"))
                })?;
                (
                    "user",
                    vec![json!({"type": "tool_result", "tool_use_id": id, "content": m.text()})],
                )
            }
        };
        match messages.last_mut() {
            Some((last, b)) if *last == role => b.extend(blocks),
            _ => messages.push((role, blocks)),
        }
    }
    if let Some(f) = &req.response_format {
        match f.kind.as_str() {
            "json_object" => system.push("Answer with one JSON object and nothing else.".into()),
            "json_schema" => {
                let schema = f
                    .json_schema
                    .as_ref()
                    .and_then(|s| s.schema.as_ref())
                    .map(Value::to_string)
                    .unwrap_or_default();
                system.push(format!(
                    "Answer with one JSON object and nothing else, matching this JSON schema: {schema}"
                ));
            }
            _ => {}
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert(
        "max_tokens".into(),
        json!(req.max_tokens().unwrap_or(default_max_tokens)),
    );
    out.insert(
        "messages".into(),
        Value::Array(
            messages
                .into_iter()
                .map(|(role, content)| json!({"role": role, "content": content}))
                .collect(),
        ),
    );
    if !system.is_empty() {
        out.insert("system".into(), json!(system.join("\n\n")));
    }
    let stop = req.stop_sequences();
    if !stop.is_empty() {
        out.insert("stop_sequences".into(), json!(stop));
    }
    if let Some(t) = req.temperature {
        out.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = req.top_p {
        out.insert("top_p".into(), json!(p));
    }
    if let Some(tools) = &req.tools {
        let list: Vec<Value> = tools
            .iter()
            .map(|t| {
                let mut tool = json!({
                    "name": t.function.name,
                    "input_schema": t.function.parameters.clone()
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                });
                if let Some(d) = &t.function.description {
                    tool["description"] = json!(d);
                }
                tool
            })
            .collect();
        out.insert("tools".into(), Value::Array(list));
    }
    let mut choice = match &req.tool_choice {
        None => None,
        Some(ToolChoice::Mode(m)) => Some(match m.as_str() {
            "none" => json!({"type": "none"}),
            "required" => json!({"type": "any"}),
            _ => json!({"type": "auto"}),
        }),
        Some(ToolChoice::Named { function }) => {
            Some(json!({"type": "tool", "name": function.name}))
        }
    };
    if req.parallel_tool_calls == Some(false) && req.tools.is_some() {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if c["type"] != "none" {
            c["disable_parallel_tool_use"] = json!(true);
        }
    }
    if let Some(c) = choice {
        out.insert("tool_choice".into(), c);
    }
    if let Some(u) = &req.user {
        out.insert("metadata".into(), json!({"user_id": u}));
    }
    if stream {
        out.insert("stream".into(), json!(true));
    }
    Ok(Value::Object(out))
}

fn text_blocks(content: Option<&Content>) -> Vec<Value> {
    let text = content.map(Content::text).unwrap_or_default();
    if text.is_empty() {
        return Vec::new();
    }
    vec![json!({"type": "text", "text": text})]
}

fn user_blocks(content: Option<&Content>) -> Vec<Value> {
    match content {
        None => Vec::new(),
        Some(Content::Text(t)) => vec![json!({"type": "text", "text": t})],
        Some(Content::Parts(parts)) => parts
            .iter()
            .map(|p| match p {
                Part::Text { text } => json!({"type": "text", "text": text}),
                Part::ImageUrl { image_url } => match image_url.inline() {
                    Some((media, data)) => json!({"type": "image", "source": {
                        "type": "base64", "media_type": media, "data": data}}),
                    None => {
                        json!({"type": "image", "source": {"type": "url", "url": image_url.url}})
                    }
                },
            })
            .collect(),
    }
}

/// OpenAI's finish reason for Anthropic's stop reason.
fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" => finish::LENGTH,
        "tool_use" => finish::TOOL_CALLS,
        "refusal" => finish::CONTENT_FILTER,
        _ => finish::STOP,
    }
}

/// Input tokens, cached ones included.
fn input_tokens(u: &Value) -> u64 {
    [
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ]
    .iter()
    .filter_map(|k| u.get(*k).and_then(Value::as_u64))
    .sum()
}

/// A whole answer, in OpenAI's shape.
pub fn complete(body: &[u8]) -> Result<(Value, Option<TokenUsage>), AiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| AiError::failed(Failure::ServerError, "the provider's answer is not JSON"))?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in v
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => calls.push(json!({
                "id": b.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": b.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": b.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
                },
            })),
            _ => {}
        }
    }
    let usage = v.get("usage").map(|u| TokenUsage {
        prompt: input_tokens(u),
        completion: u.get("output_tokens").and_then(Value::as_u64).unwrap_or(0),
    });
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) },
    });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let stop = v
        .get("stop_reason")
        .and_then(Value::as_str)
        .unwrap_or("end_turn");
    let mut out = json!({
        "id": v.get("id").cloned().unwrap_or(Value::Null),
        "object": "chat.completion",
        "created": emit::now_secs(),
        "model": v.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason(stop)}],
    });
    if let Some(u) = usage {
        out["usage"] = emit::usage_json(u);
    }
    Ok((out, usage))
}

/// A streamed answer's events, re-framed as OpenAI chunks.
#[derive(Debug, Default)]
pub struct Events {
    input: u64,
    output: u64,
    /// Content block index to tool call index.
    tools: HashMap<u64, u64>,
    next_tool: u64,
    stopped: bool,
}

impl Events {
    pub fn new() -> Events {
        Events {
            tools: HashMap::new(),
            ..Events::default()
        }
    }

    /// One event (its `type` is in the data, as well as in its name).
    pub fn event(&mut self, data: &str, em: &mut Emitter) -> Result<(), String> {
        let v: Value = serde_json::from_str(data)
            .map_err(|_| "the provider sent an event that is not JSON")?;
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        match v.get("type").and_then(Value::as_str).unwrap_or("") {
            "message_start" => {
                let m = &v["message"];
                em.set_meta(
                    m.get("id").and_then(Value::as_str),
                    m.get("model").and_then(Value::as_str),
                );
                if let Some(u) = m.get("usage") {
                    self.input = input_tokens(u);
                    self.output = u.get("output_tokens").and_then(Value::as_u64).unwrap_or(0);
                }
                em.delta(json!({"role": "assistant", "content": ""}), None);
            }
            "content_block_start" => {
                let b = &v["content_block"];
                match b.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let n = self.next_tool;
                        self.next_tool += 1;
                        self.tools.insert(index, n);
                        em.delta(
                            json!({"tool_calls": [{"index": n, "id": b["id"], "type": "function",
                                "function": {"name": b["name"], "arguments": ""}}]}),
                            None,
                        );
                    }
                    Some("text") => {
                        if let Some(t) = b
                            .get("text")
                            .and_then(Value::as_str)
                            .filter(|t| !t.is_empty())
                        {
                            em.delta(json!({"content": t}), None);
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let d = &v["delta"];
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => em.delta(json!({"content": d["text"]}), None),
                    Some("input_json_delta") => {
                        let n = self.tools.get(&index).copied().unwrap_or(0);
                        em.delta(
                            json!({"tool_calls": [{"index": n, "function": {"arguments": d["partial_json"]}}]}),
                            None,
                        );
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(n) = v.pointer("/usage/output_tokens").and_then(Value::as_u64) {
                    self.output = n;
                }
                if let Some(u) = v.get("usage")
                    && input_tokens(u) > 0
                {
                    self.input = input_tokens(u);
                }
                if let Some(stop) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    em.delta(json!({}), Some(finish_reason(stop)));
                }
            }
            "message_stop" => {
                self.stopped = true;
                em.usage = Some(TokenUsage {
                    prompt: self.input,
                    completion: self.output,
                });
                em.finish(true);
            }
            "error" => {
                let message = v
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("the provider failed");
                em.error(message, "provider_error");
            }
            // `ping`, `content_block_stop`, and types added later.
            _ => {}
        }
        Ok(())
    }

    /// The stream ended: whether it ended properly (`message_stop`). The
    /// usage known so far is kept for accounting either way.
    pub fn end(&mut self, em: &mut Emitter) -> bool {
        if !self.stopped && (self.input > 0 || self.output > 0) {
            em.usage = Some(TokenUsage {
                prompt: self.input,
                completion: self.output,
            });
        }
        self.stopped
    }
}

/// The provider's complaint, from an error body
/// (`{"type": "error", "error": {"type": ..., "message": ...}}`).
pub fn error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.pointer("/error/message")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

#[cfg(test)]
#[path = "anthropic_tests.rs"]
mod tests;
