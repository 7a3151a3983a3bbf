//! Providers that speak OpenAI Chat Completions: OpenAI itself, Azure
//! OpenAI, Mistral and OpenAI-compatible servers. The client's request
//! goes out as it came, with the instance's model, and with
//! `stream_options.include_usage` set on a stream whose client did not
//! ask for usage, so that every answer is counted; the extra usage chunk
//! (and the `usage: null` the provider then adds to every chunk) is taken
//! out again before the client sees it.
//!
//! Mistral refuses fields it does not know, so its request keeps only the
//! fields of its API, with `seed` sent as `random_seed` and
//! `max_completion_tokens` as `max_tokens`; it reports usage in its last
//! chunk on its own.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::emit::{self, Emitter};
use crate::ai::error::AiError;
use crate::plugins::TokenUsage;

/// Which OpenAI-format API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    OpenAi,
    Azure,
    Mistral,
    Compatible,
}

/// Fields of Mistral's chat completions request.
const MISTRAL_FIELDS: &[&str] = &[
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
];

/// The body sent to the provider.
pub fn request_body(
    flavor: Flavor,
    body: &Map<String, Value>,
    model: &str,
    stream: bool,
    client_usage: bool,
) -> Bytes {
    let mut out = body.clone();
    out.insert("model".into(), Value::String(model.to_owned()));
    match flavor {
        Flavor::Mistral => {
            if let Some(seed) = out.remove("seed") {
                out.entry("random_seed").or_insert(seed);
            }
            if let Some(max) = out.remove("max_completion_tokens") {
                out.entry("max_tokens").or_insert(max);
            }
            out.retain(|k, _| MISTRAL_FIELDS.contains(&k.as_str()));
        }
        _ if stream && !client_usage => {
            let options = out
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(o) = options {
                o.insert("include_usage".into(), Value::Bool(true));
            } else {
                *options = json!({"include_usage": true});
            }
        }
        _ => {}
    }
    Bytes::from(Value::Object(out).to_string())
}

/// Usage from an OpenAI `usage` object.
pub fn usage(v: &Value) -> Option<TokenUsage> {
    let u = v.as_object()?;
    let prompt = u.get("prompt_tokens").and_then(Value::as_u64)?;
    let completion = u
        .get("completion_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Some(TokenUsage { prompt, completion })
}

/// A whole answer: passed on as it is; its usage is read.
pub fn complete(body: &[u8]) -> Result<(Bytes, Option<TokenUsage>), AiError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| {
        AiError::failed(
            crate::ai::error::Failure::ServerError,
            "the provider's answer is not JSON",
        )
    })?;
    let u = v.get("usage").and_then(usage);
    Ok((Bytes::copy_from_slice(body), u))
}

/// A streamed answer's chunks, passed on.
#[derive(Debug)]
pub struct Chunks {
    /// The client asked for usage: the provider's usage chunk goes on.
    client_usage: bool,
    done: bool,
    /// The first chunk (which names the provider's id and model) was read.
    seen: bool,
}

impl Chunks {
    pub fn new(client_usage: bool) -> Chunks {
        Chunks {
            client_usage,
            done: false,
            seen: false,
        }
    }

    /// One event's data.
    pub fn event(&mut self, data: &str, em: &mut Emitter) -> Result<(), String> {
        if data.trim() == "[DONE]" {
            self.done = true;
            em.finish(false);
            return Ok(());
        }
        let mut v: Value =
            serde_json::from_str(data).map_err(|_| "the provider sent a chunk that is not JSON")?;
        if let Some(e) = v.get("error") {
            let message = e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("the provider failed");
            em.error(message, "provider_error");
            return Ok(());
        }
        if let Some(u) = v.get("usage").and_then(usage) {
            em.usage = Some(u);
        }
        if !self.seen {
            self.seen = true;
            em.set_meta(
                v.get("id").and_then(Value::as_str),
                v.get("model").and_then(Value::as_str),
            );
        }
        let choices = v.get("choices").and_then(Value::as_array);
        let empty = choices.is_none_or(|c| c.is_empty());
        let mut chars = 0;
        let mut token = false;
        for c in choices.into_iter().flatten() {
            if let Some(d) = c.get("delta") {
                chars += emit::text_chars(d);
                token |= d.get("tool_calls").is_some();
            }
            token |= c.get("finish_reason").is_some_and(|f| !f.is_null());
        }
        token |= chars > 0;
        if self.client_usage {
            em.raw(data.as_bytes(), chars, token);
            return Ok(());
        }
        // The client did not ask: the usage-only chunk goes, and the
        // usage field goes from the others.
        if empty && v.get("usage").is_some() {
            return Ok(());
        }
        match v.as_object_mut().and_then(|o| o.remove("usage")) {
            Some(_) => em.raw(v.to_string().as_bytes(), chars, token),
            None => em.raw(data.as_bytes(), chars, token),
        }
        Ok(())
    }

    /// The stream ended: whether it ended properly (`[DONE]`).
    pub fn end(&mut self, _em: &mut Emitter) -> bool {
        self.done
    }
}

/// The provider's complaint, from an error body.
pub fn error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let m = v
        .pointer("/error/message")
        .or_else(|| v.get("message"))
        .or_else(|| v.get("detail"))?;
    Some(match m {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!(),
        }
    }

    fn sent(b: Bytes) -> Value {
        serde_json::from_slice(&b).unwrap()
    }

    #[test]
    fn usage_is_asked_for_when_the_client_did_not() {
        let body = obj(json!({"model": "x", "messages": [], "stream": true}));
        let v = sent(request_body(
            Flavor::OpenAi,
            &body,
            "gpt-4o-mini",
            true,
            false,
        ));
        assert_eq!(v["model"], "gpt-4o-mini");
        assert_eq!(v["stream_options"], json!({"include_usage": true}));
        let body =
            obj(json!({"messages": [], "stream": true, "stream_options": {"include_usage": true}}));
        let v = sent(request_body(Flavor::Azure, &body, "dep", true, true));
        assert_eq!(v["stream_options"], json!({"include_usage": true}));
        let body = obj(json!({"messages": []}));
        let v = sent(request_body(Flavor::OpenAi, &body, "m", false, false));
        assert!(v.get("stream_options").is_none());
    }

    #[test]
    fn mistral_gets_its_own_fields_only() {
        let body = obj(json!({
            "messages": [], "stream": true, "seed": 7, "max_completion_tokens": 9,
            "stream_options": {"include_usage": true}, "user": "u", "store": true
        }));
        let v = sent(request_body(
            Flavor::Mistral,
            &body,
            "mistral-small",
            true,
            false,
        ));
        assert_eq!(
            v,
            json!({"model": "mistral-small", "messages": [], "stream": true, "random_seed": 7, "max_tokens": 9})
        );
    }

    fn run(client_usage: bool, events: &[&str]) -> (String, Emitter) {
        let mut em = Emitter::new("", client_usage);
        let mut c = Chunks::new(client_usage);
        for e in events {
            c.event(e, &mut em).unwrap();
        }
        let out = em.take().map(|b| String::from_utf8(b.to_vec()).unwrap());
        (out.unwrap_or_default(), em)
    }

    const STREAM: &[&str] = &[
        r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"usage":null}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}"#,
        "[DONE]",
    ];

    #[test]
    fn the_usage_chunk_reaches_only_clients_that_asked() {
        let (out, em) = run(true, STREAM);
        assert_eq!(out.matches("data: ").count(), 5);
        assert!(out.contains("\"total_tokens\":10"));
        assert_eq!(
            em.usage,
            Some(TokenUsage {
                prompt: 9,
                completion: 1
            })
        );
        let (out, em) = run(false, STREAM);
        assert_eq!(out.matches("data: ").count(), 4);
        assert!(!out.contains("usage"), "{out}");
        assert!(out.ends_with("data: [DONE]\n\n"));
        assert_eq!(em.usage.map(|u| u.prompt), Some(9));
        assert_eq!(em.completion_chars, 2);
    }

    #[test]
    fn provider_errors_are_read() {
        let b = br#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        assert_eq!(error_message(b).as_deref(), Some("Rate limit reached"));
        assert_eq!(
            error_message(br#"{"object":"error","message":"bad model"}"#).as_deref(),
            Some("bad model")
        );
        assert_eq!(error_message(b"<html>"), None);
    }
}
