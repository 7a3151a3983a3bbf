//! Google Gemini `generateContent` and `streamGenerateContent?alt=sse`,
//! both ways.
//!
//! Requests: system and developer messages become `systemInstruction`;
//! assistant messages are role `model`, their tool calls `functionCall`
//! parts; tool results become `functionResponse` parts, named after the
//! call they answer (Gemini matches results by function name); sampling
//! settings go to `generationConfig`; a `response_format` asking for JSON
//! sets `responseMimeType` (and `responseJsonSchema`); tools are
//! `functionDeclarations` with their JSON schema as
//! `parametersJsonSchema`. `n` above 1 is refused.
//!
//! Answers: text parts (thoughts excepted) become content, `functionCall`
//! parts tool calls (whole, arguments included, in one chunk), and
//! `finishReason` the finish reason; `usageMetadata` counts thoughts as
//! completion tokens. A stream has no end marker: its end is the end.

use serde_json::{Map, Value, json};

use super::chat::{ChatRequest, Content, Part, Role, ToolChoice, finish};
use super::emit::{self, Emitter};
use crate::ai::error::{AiError, Failure};
use crate::plugins::TokenUsage;

/// The body sent to Gemini.
pub fn request_body(req: &ChatRequest) -> Result<Value, AiError> {
    req.refuse_n("Gemini")?;
    let mut system: Vec<String> = Vec::new();
    let mut contents: Vec<(&'static str, Vec<Value>)> = Vec::new();
    // Tool call ids to function names, for the results that follow.
    let mut names: Vec<(&str, &str)> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let (role, parts) = match m.role {
            Role::System | Role::Developer => {
                system.push(m.text());
                continue;
            }
            Role::User => ("user", user_parts(m.content.as_ref())),
            Role::Assistant => {
                let mut parts = Vec::new();
                let text = m.text();
                if !text.is_empty() {
                    parts.push(json!({"text": text}));
                }
                for call in m.tool_calls.iter().flatten() {
                    names.push((&call.id, &call.function.name));
                    parts.push(json!({"functionCall": {
                        "name": call.function.name,
                        "args": call.function.arguments_object()?,
                    }}));
                }
                ("model", parts)
            }
            Role::Tool => {
                let id = m.tool_call_id.as_deref().unwrap_or("");
                let name = names
                    .iter()
                    .find(|(call, _)| *call == id)
                    .map(|(_, n)| *n)
                    .ok_or_else(|| {
                        AiError::BadRequest(format!(
                            "messages[{i}]: tool_call_id {id:?} answers no earlier tool call"
                        ))
                    })?;
                let text = m.text();
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => json!({"content": text}),
                };
                (
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                )
            }
        };
        match contents.last_mut() {
            Some((last, p)) if *last == role => p.extend(parts),
            _ => contents.push((role, parts)),
        }
    }
    let mut out = Map::new();
    out.insert(
        "contents".into(),
        Value::Array(
            contents
                .into_iter()
                .map(|(role, parts)| json!({"role": role, "parts": parts}))
                .collect(),
        ),
    );
    if !system.is_empty() {
        out.insert(
            "systemInstruction".into(),
            json!({"parts": [{"text": system.join("\n\n")}]}),
        );
    }
    let mut config = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            config.insert(k.into(), v);
        }
    };
    put("temperature", req.temperature.map(|t| json!(t)));
    put("topP", req.top_p.map(|t| json!(t)));
    put("maxOutputTokens", req.max_tokens().map(|t| json!(t)));
    put("presencePenalty", req.presence_penalty.map(|t| json!(t)));
    put("frequencyPenalty", req.frequency_penalty.map(|t| json!(t)));
    put("seed", req.seed.map(|t| json!(t)));
    let stop = req.stop_sequences();
    put("stopSequences", (!stop.is_empty()).then(|| json!(stop)));
    if let Some(f) = &req.response_format
        && f.kind != "text"
    {
        put("responseMimeType", Some(json!("application/json")));
        put(
            "responseJsonSchema",
            f.json_schema.as_ref().and_then(|s| s.schema.clone()),
        );
    }
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    if let Some(tools) = &req.tools {
        let decls: Vec<Value> = tools
            .iter()
            .map(|t| {
                let mut d = json!({"name": t.function.name});
                if let Some(desc) = &t.function.description {
                    d["description"] = json!(desc);
                }
                if let Some(p) = &t.function.parameters {
                    d["parametersJsonSchema"] = p.clone();
                }
                d
            })
            .collect();
        out.insert("tools".into(), json!([{"functionDeclarations": decls}]));
    }
    if let Some(choice) = &req.tool_choice {
        let config = match choice {
            ToolChoice::Mode(m) => match m.as_str() {
                "none" => json!({"mode": "NONE"}),
                "required" => json!({"mode": "ANY"}),
                _ => json!({"mode": "AUTO"}),
            },
            ToolChoice::Named { function } => {
                json!({"mode": "ANY", "allowedFunctionNames": [function.name]})
            }
        };
        out.insert(
            "toolConfig".into(),
            json!({"functionCallingConfig": config}),
        );
    }
    Ok(Value::Object(out))
}

fn user_parts(content: Option<&Content>) -> Vec<Value> {
    match content {
        None => Vec::new(),
        Some(Content::Text(t)) => vec![json!({"text": t})],
        Some(Content::Parts(parts)) => parts
            .iter()
            .map(|p| match p {
                Part::Text { text } => json!({"text": text}),
                Part::ImageUrl { image_url } => match image_url.inline() {
                    Some((media, data)) => json!({"inlineData": {"mimeType": media, "data": data}}),
                    None => json!({"fileData": {"fileUri": image_url.url}}),
                },
            })
            .collect(),
    }
}

/// OpenAI's finish reason for Gemini's.
fn finish_reason(reason: &str, tool_calls: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => finish::LENGTH,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            finish::CONTENT_FILTER
        }
        _ if tool_calls => finish::TOOL_CALLS,
        _ => finish::STOP,
    }
}

fn usage(v: &Value) -> Option<TokenUsage> {
    let u = v.get("usageMetadata")?;
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Some(TokenUsage {
        prompt: n("promptTokenCount"),
        completion: n("candidatesTokenCount") + n("thoughtsTokenCount"),
    })
}

/// A tool call id: Gemini's own when it gives one.
fn call_id(call: &Value) -> String {
    match call.get("id").and_then(Value::as_str) {
        Some(id) => id.to_owned(),
        None => format!("call_{:016x}", fastrand::u64(..)),
    }
}

fn tool_call(index: usize, call: &Value) -> Value {
    json!({
        "index": index,
        "id": call_id(call),
        "type": "function",
        "function": {
            "name": call.get("name").cloned().unwrap_or(Value::Null),
            "arguments": call.get("args").map_or_else(|| "{}".to_owned(), Value::to_string),
        },
    })
}

/// The parts of candidate 0: text (thoughts left out) and function calls.
fn parts(v: &Value) -> impl Iterator<Item = &Value> {
    v.pointer("/candidates/0/content/parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| p.get("thought").and_then(Value::as_bool) != Some(true))
}

/// A whole answer, in OpenAI's shape.
pub fn complete(body: &[u8]) -> Result<(Value, Option<TokenUsage>), AiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| AiError::failed(Failure::ServerError, "the provider's answer is not JSON"))?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for p in parts(&v) {
        if let Some(t) = p.get("text").and_then(Value::as_str) {
            text.push_str(t);
        }
        if let Some(c) = p.get("functionCall") {
            let mut call = tool_call(calls.len(), c);
            if let Some(o) = call.as_object_mut() {
                o.remove("index");
            }
            calls.push(call);
        }
    }
    let reason = v
        .pointer("/candidates/0/finishReason")
        .and_then(Value::as_str);
    let finish = match reason {
        Some(r) => finish_reason(r, !calls.is_empty()),
        // No candidate: the prompt itself was blocked.
        None if v.pointer("/promptFeedback/blockReason").is_some() => finish::CONTENT_FILTER,
        None => finish_reason("STOP", !calls.is_empty()),
    };
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) },
    });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let u = usage(&v);
    let mut out = json!({
        "id": v.get("responseId").cloned().unwrap_or_else(|| json!(format!("chatcmpl-{:016x}", fastrand::u64(..)))),
        "object": "chat.completion",
        "created": emit::now_secs(),
        "model": v.get("modelVersion").cloned().unwrap_or(Value::Null),
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
    });
    if let Some(u) = u {
        out["usage"] = emit::usage_json(u);
    }
    Ok((out, u))
}

/// A streamed answer's responses, re-framed as OpenAI chunks.
#[derive(Debug, Default)]
pub struct Events {
    started: bool,
    tool_calls: usize,
    finished: bool,
}

impl Events {
    pub fn new() -> Events {
        Events::default()
    }

    /// One event: a whole `GenerateContentResponse`.
    pub fn event(&mut self, data: &str, em: &mut Emitter) -> Result<(), String> {
        let v: Value = serde_json::from_str(data)
            .map_err(|_| "the provider sent an event that is not JSON")?;
        if let Some(e) = v.get("error") {
            let message = e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("the provider failed");
            em.error(message, "provider_error");
            return Ok(());
        }
        if !self.started {
            self.started = true;
            em.set_meta(
                v.get("responseId").and_then(Value::as_str),
                v.get("modelVersion").and_then(Value::as_str),
            );
            em.delta(json!({"role": "assistant", "content": ""}), None);
        }
        for p in parts(&v) {
            if let Some(t) = p
                .get("text")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
            {
                em.delta(json!({"content": t}), None);
            }
            if let Some(c) = p.get("functionCall") {
                em.delta(json!({"tool_calls": [tool_call(self.tool_calls, c)]}), None);
                self.tool_calls += 1;
            }
        }
        if let Some(u) = usage(&v) {
            em.usage = Some(u);
        }
        let reason = v
            .pointer("/candidates/0/finishReason")
            .and_then(Value::as_str)
            .or_else(|| {
                v.pointer("/promptFeedback/blockReason")
                    .map(|_| "PROHIBITED_CONTENT")
            });
        if let Some(r) = reason.filter(|r| *r != "FINISH_REASON_UNSPECIFIED")
            && !self.finished
        {
            self.finished = true;
            em.delta(json!({}), Some(finish_reason(r, self.tool_calls > 0)));
        }
        Ok(())
    }

    /// The stream ended, which is how Gemini ends one: the usage chunk
    /// and `[DONE]` follow when it had finished.
    pub fn end(&mut self, em: &mut Emitter) -> bool {
        if self.finished {
            em.finish(true);
        }
        self.finished
    }
}

/// The provider's complaint, from an error body
/// (`{"error": {"code": 429, "message": ..., "status": ...}}`).
pub fn error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.pointer("/error/message")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

#[cfg(test)]
#[path = "gemini_tests.rs"]
mod tests;
