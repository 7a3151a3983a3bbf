//! The Anthropic Messages front door (`POST …/messages`): what a client
//! written for Anthropic's API sends, as the OpenAI chat request the rest
//! of the AI gateway speaks, and the answer back in Anthropic's shape.
//!
//! One pipeline serves both front doors: after this translation the
//! prompt plugins, instance order, fallback, token budgets and metrics run
//! unchanged, whichever provider answers. A stream is re-framed chunk by
//! chunk ([`super::messages_stream`]); a whole answer becomes a Messages
//! object; an error becomes Anthropic's error object.
//!
//! Requests: `system` (text or text blocks) becomes a system message;
//! `text` and `image` blocks become content parts; assistant `tool_use`
//! blocks become tool calls; `tool_result` blocks become `tool` messages,
//! placed before the rest of their user turn as OpenAI wants them right
//! after the call they answer. `max_tokens` is required, as Anthropic
//! requires it. Fields without an OpenAI counterpart (`top_k`,
//! `thinking`, server tools…) are refused by name rather than dropped.
//!
//! Answers: content becomes a `text` block, tool calls `tool_use`
//! blocks; finish reasons map back (`stop` → `end_turn`, `length` →
//! `max_tokens`, `tool_calls` → `tool_use`, `content_filter` →
//! `refusal`). OpenAI does not say which stop sequence ended an answer,
//! so `stop_sequence` is always null.

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Map, Value, json};

use super::chat::finish;
use crate::ai::error::AiError;

/// The request fields that are read; any other is refused by name.
const KNOWN: &[&str] = &[
    "model",
    "messages",
    "system",
    "max_tokens",
    "stop_sequences",
    "stream",
    "temperature",
    "top_p",
    "tools",
    "tool_choice",
    "metadata",
];

fn bad(message: String) -> AiError {
    AiError::BadRequest(message)
}

/// A Messages request as an OpenAI chat request body.
pub fn request(body: &[u8]) -> Result<Bytes, AiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the body is not valid JSON: {e}")))?;
    let Value::Object(map) = v else {
        return Err(bad("the body must be a JSON object".into()));
    };
    if let Some(k) = map.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(bad(format!(
            "{k}: is not supported by this gateway's Messages endpoint"
        )));
    }
    let mut out = Map::new();
    if let Some(m) = map.get("model") {
        out.insert("model".into(), m.clone());
    }
    match map.get("max_tokens") {
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n > 0) => {
            out.insert("max_tokens".into(), Value::Number(n.clone()));
        }
        Some(_) => return Err(bad("max_tokens: must be a positive integer".into())),
        None => return Err(bad("max_tokens: is required".into())),
    }
    let mut messages = Vec::new();
    if let Some(system) = map.get("system") {
        messages.push(json!({"role": "system", "content": system_text(system)?}));
    }
    let Some(Value::Array(list)) = map.get("messages") else {
        return Err(bad("messages: must be a list".into()));
    };
    for (i, m) in list.iter().enumerate() {
        turn(m, i, &mut messages)?;
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(stop) = map.get("stop_sequences") {
        out.insert("stop".into(), stop.clone());
    }
    for k in ["temperature", "top_p"] {
        if let Some(v) = map.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    if let Some(s) = map.get("stream") {
        out.insert("stream".into(), s.clone());
        if s == &Value::Bool(true) {
            // The usage chunk feeds `message_delta.usage`; the re-framer
            // never passes it on as such.
            out.insert("stream_options".into(), json!({"include_usage": true}));
        }
    }
    if let Some(tools) = map.get("tools") {
        out.insert("tools".into(), self::tools(tools)?);
    }
    if let Some(choice) = map.get("tool_choice") {
        let (choice, parallel) = tool_choice(choice)?;
        out.insert("tool_choice".into(), choice);
        if let Some(p) = parallel {
            out.insert("parallel_tool_calls".into(), Value::Bool(p));
        }
    }
    if let Some(user) = map.get("metadata").and_then(|m| m.get("user_id")) {
        out.insert("user".into(), user.clone());
    }
    Ok(Bytes::from(Value::Object(out).to_string()))
}

/// `system`: a string, or text blocks joined by blank lines.
fn system_text(system: &Value) -> Result<String, AiError> {
    match system {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut parts = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                match (b.get("type").and_then(Value::as_str), b.get("text")) {
                    (Some("text"), Some(Value::String(t))) => parts.push(t.as_str()),
                    _ => return Err(bad(format!("system[{j}]: must be a text block"))),
                }
            }
            Ok(parts.join("\n\n"))
        }
        _ => Err(bad(
            "system: must be a string or a list of text blocks".into()
        )),
    }
}

/// One turn of `messages`, appended to `out` as OpenAI messages.
fn turn(m: &Value, i: usize, out: &mut Vec<Value>) -> Result<(), AiError> {
    let role = match m.get("role").and_then(Value::as_str) {
        Some(r @ ("user" | "assistant")) => r,
        _ => {
            return Err(bad(format!(
                "messages[{i}].role: must be user or assistant"
            )));
        }
    };
    let blocks = match m.get("content") {
        Some(Value::String(s)) => {
            out.push(json!({"role": role, "content": s}));
            return Ok(());
        }
        Some(Value::Array(b)) => b,
        _ => {
            return Err(bad(format!(
                "messages[{i}].content: must be a string or a list of blocks"
            )));
        }
    };
    let mut parts = Vec::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let field = format!("messages[{i}].content[{j}]");
        let kind = b.get("type").and_then(Value::as_str).unwrap_or_default();
        match (role, kind) {
            (_, "text") => {
                let text = b.get("text").and_then(Value::as_str);
                let text = text.ok_or_else(|| bad(format!("{field}.text: is required")))?;
                parts.push(json!({"type": "text", "text": text}));
            }
            ("user", "image") => parts.push(image(b, &field)?),
            ("user", "tool_result") => out.push(tool_result(b, &field)?),
            ("assistant", "tool_use") => calls.push(tool_use(b, &field)?),
            _ => {
                return Err(bad(format!(
                    "{field}.type: {kind:?} blocks in a {role} turn are not supported"
                )));
            }
        }
    }
    if role == "assistant" {
        let text: Vec<&str> = parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect();
        let mut msg = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { Value::String(text.concat()) }});
        if !calls.is_empty() {
            msg["tool_calls"] = Value::Array(calls);
        }
        out.push(msg);
    } else if !parts.is_empty() {
        out.push(json!({"role": "user", "content": parts}));
    }
    Ok(())
}

fn image(b: &Value, field: &str) -> Result<Value, AiError> {
    let source = b.get("source").unwrap_or(&Value::Null);
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media = source.get("media_type").and_then(Value::as_str);
            let data = source.get("data").and_then(Value::as_str);
            match (media, data) {
                (Some(m), Some(d)) => format!("data:{m};base64,{d}"),
                _ => {
                    return Err(bad(format!("{field}.source: needs media_type and data")));
                }
            }
        }
        Some("url") => match source.get("url").and_then(Value::as_str) {
            Some(u) => u.to_owned(),
            None => return Err(bad(format!("{field}.source.url: is required"))),
        },
        _ => return Err(bad(format!("{field}.source.type: must be base64 or url"))),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn tool_result(b: &Value, field: &str) -> Result<Value, AiError> {
    let id = b.get("tool_use_id").and_then(Value::as_str);
    let id = id.ok_or_else(|| bad(format!("{field}.tool_use_id: is required")))?;
    let content = match b.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        Some(_) => return Err(bad(format!("{field}.content: must be text or blocks"))),
    };
    let content = if b.get("is_error") == Some(&Value::Bool(true)) {
        format!("Error: {content}")
    } else {
        content
    };
    Ok(json!({"role": "tool", "tool_call_id": id, "content": content}))
}

fn tool_use(b: &Value, field: &str) -> Result<Value, AiError> {
    let id = b.get("id").and_then(Value::as_str);
    let name = b.get("name").and_then(Value::as_str);
    let (Some(id), Some(name)) = (id, name) else {
        return Err(bad(format!("{field}: a tool_use block needs id and name")));
    };
    let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
    Ok(
        json!({"id": id, "type": "function", "function": {"name": name, "arguments": input.to_string()}}),
    )
}

fn tools(tools: &Value) -> Result<Value, AiError> {
    let Value::Array(list) = tools else {
        return Err(bad("tools: must be a list".into()));
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        if let Some(kind) = t.get("type").and_then(Value::as_str)
            && kind != "custom"
        {
            return Err(bad(format!(
                "tools[{i}].type: {kind:?} (a server tool) is not supported"
            )));
        }
        let name = t.get("name").and_then(Value::as_str);
        let name = name.ok_or_else(|| bad(format!("tools[{i}].name: is required")))?;
        let mut f = json!({"name": name, "parameters": t.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"}))});
        if let Some(d) = t.get("description") {
            f["description"] = d.clone();
        }
        out.push(json!({"type": "function", "function": f}));
    }
    Ok(Value::Array(out))
}

/// `tool_choice`, and `parallel_tool_calls` from its
/// `disable_parallel_tool_use`.
fn tool_choice(c: &Value) -> Result<(Value, Option<bool>), AiError> {
    let parallel = c
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        .map(|d| !d);
    let choice = match c.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => match c.get("name").and_then(Value::as_str) {
            Some(n) => json!({"type": "function", "function": {"name": n}}),
            None => return Err(bad("tool_choice.name: is required".into())),
        },
        _ => {
            return Err(bad(
                "tool_choice.type: must be auto, any, tool or none".into()
            ));
        }
    };
    Ok((choice, parallel))
}

/// Anthropic's `stop_reason` for an OpenAI finish reason.
pub fn stop_reason(finish: &str) -> &'static str {
    match finish {
        finish::LENGTH => "max_tokens",
        finish::TOOL_CALLS => "tool_use",
        finish::CONTENT_FILTER => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic's `usage` from OpenAI's.
pub fn usage(u: &Value) -> Value {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    json!({"input_tokens": n("prompt_tokens"), "output_tokens": n("completion_tokens")})
}

/// A whole OpenAI answer as a Messages object.
pub fn whole(openai: &[u8]) -> Bytes {
    let v: Value = serde_json::from_slice(openai).unwrap_or(Value::Null);
    let choice = &v["choices"][0];
    let message = &choice["message"];
    let mut content = Vec::new();
    if let Some(t) = message["content"].as_str().filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": t}));
    }
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        content.push(tool_block(call));
    }
    let body = json!({
        "id": v["id"],
        "type": "message",
        "role": "assistant",
        "model": v["model"],
        "content": content,
        "stop_reason": stop_reason(choice["finish_reason"].as_str().unwrap_or_default()),
        "stop_sequence": null,
        "usage": usage(&v["usage"]),
    });
    Bytes::from(body.to_string())
}

/// A `tool_use` block from an OpenAI tool call; arguments that are not a
/// JSON object are kept as a string under `input`'s `arguments`.
pub fn tool_block(call: &Value) -> Value {
    let args = call["function"]["arguments"].as_str().unwrap_or("{}");
    let input = match serde_json::from_str::<Value>(args) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({"arguments": args}),
    };
    json!({"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": input})
}

/// Anthropic's error `type` for a status.
pub fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 405 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// Anthropic's error object.
pub fn error_body(status: StatusCode, message: &str) -> Bytes {
    let body = json!({"type": "error", "error": {"type": error_type(status), "message": message}});
    Bytes::from(body.to_string())
}

#[cfg(test)]
#[path = "messages_tests.rs"]
mod tests;
