//! A streamed answer as the client gets it, in OpenAI's format: one
//! `data: {chat.completion.chunk}` event per delta, the usage chunk
//! (empty `choices`) when the client asked for one, then `data: [DONE]`.
//! Every provider's stream decoder writes through an [`Emitter`], which
//! also keeps what the gateway learns from the stream: the usage the
//! provider reported, how much text went out (for an estimate when the
//! provider never reports), and when the first token went out.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use serde_json::{Value, json};

use crate::ai::sse;
use crate::plugins::TokenUsage;

/// Writes OpenAI chunks.
#[derive(Debug)]
pub struct Emitter {
    id: String,
    model: String,
    created: u64,
    out: BytesMut,
    /// The client asked for the usage chunk.
    include_usage: bool,
    /// What the provider reported.
    pub usage: Option<TokenUsage>,
    /// Characters of content and tool arguments sent.
    pub completion_chars: u64,
    /// When the first token (content, a tool call) or the end went out.
    pub first_token: Option<Instant>,
    /// `[DONE]` was written: the answer is complete.
    pub finished: bool,
    /// An error event was written: the answer is cut.
    pub failed: bool,
}

impl Emitter {
    pub fn new(model: &str, include_usage: bool) -> Emitter {
        Emitter {
            id: format!(
                "chatcmpl-{:016x}{:08x}",
                fastrand::u64(..),
                fastrand::u32(..)
            ),
            model: model.to_owned(),
            created: now_secs(),
            out: BytesMut::new(),
            include_usage,
            usage: None,
            completion_chars: 0,
            first_token: None,
            finished: false,
            failed: false,
        }
    }

    /// The provider's own id and model name, once it tells them.
    pub fn set_meta(&mut self, id: Option<&str>, model: Option<&str>) {
        if let Some(id) = id.filter(|s| !s.is_empty()) {
            self.id = id.to_owned();
        }
        if let Some(m) = model.filter(|s| !s.is_empty()) {
            self.model = m.to_owned();
        }
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    fn token(&mut self) {
        if self.first_token.is_none() {
            self.first_token = Some(Instant::now());
        }
    }

    /// One chunk of choice 0 with `delta`, and its finish reason.
    pub fn delta(&mut self, delta: Value, finish: Option<&str>) {
        let chars = text_chars(&delta);
        if chars > 0 || finish.is_some() || delta.get("tool_calls").is_some() {
            self.token();
        }
        self.completion_chars += chars;
        let chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        sse::put_data(&mut self.out, chunk.to_string().as_bytes());
    }

    /// A chunk passed on as the provider wrote it (OpenAI-format
    /// providers); `chars` of text it carries, and whether it is a token.
    pub fn raw(&mut self, json: &[u8], chars: u64, token: bool) {
        if token {
            self.token();
        }
        self.completion_chars += chars;
        sse::put_data(&mut self.out, json);
    }

    /// Ends the answer: the usage chunk when the client asked for one and
    /// `usage_chunk` says the provider's own was not passed on, then
    /// `[DONE]`.
    pub fn finish(&mut self, usage_chunk: bool) {
        if self.finished || self.failed {
            return;
        }
        if usage_chunk
            && self.include_usage
            && let Some(u) = self.usage
        {
            let chunk = json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage_json(u),
            });
            sse::put_data(&mut self.out, chunk.to_string().as_bytes());
        }
        self.token();
        sse::put_data(&mut self.out, b"[DONE]");
        self.finished = true;
    }

    /// Ends the answer with an error event (OpenAI streams its errors as
    /// `data: {"error": ...}`), without `[DONE]`.
    pub fn error(&mut self, message: &str, code: &str) {
        if self.finished || self.failed {
            return;
        }
        let e = json!({"error": {"message": message, "type": "server_error", "param": null, "code": code}});
        sse::put_data(&mut self.out, e.to_string().as_bytes());
        self.failed = true;
    }

    /// Whether the answer has ended, either way.
    pub fn ended(&self) -> bool {
        self.finished || self.failed
    }

    /// What was written since the last call.
    pub fn take(&mut self) -> Option<Bytes> {
        (!self.out.is_empty()).then(|| self.out.split().freeze())
    }
}

/// OpenAI's `usage` object.
pub fn usage_json(u: TokenUsage) -> Value {
    json!({
        "prompt_tokens": u.prompt,
        "completion_tokens": u.completion,
        "total_tokens": u.prompt + u.completion,
    })
}

/// Seconds since the Unix epoch, for `created`.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Characters of text in a delta: its content and tool arguments.
pub fn text_chars(delta: &Value) -> u64 {
    let mut n = delta
        .get("content")
        .and_then(Value::as_str)
        .map_or(0, |s| s.chars().count() as u64);
    if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
        for c in calls {
            n += c
                .pointer("/function/arguments")
                .and_then(Value::as_str)
                .map_or(0, |s| s.chars().count() as u64);
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(b: &[u8]) -> Vec<Value> {
        let text = std::str::from_utf8(b).unwrap();
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let d = e.strip_prefix("data: ").unwrap();
                if d == "[DONE]" {
                    Value::String("[DONE]".into())
                } else {
                    serde_json::from_str(d).unwrap()
                }
            })
            .collect()
    }

    #[test]
    fn chunks_then_usage_then_done() {
        let mut e = Emitter::new("m", true);
        e.set_meta(Some("msg_1"), Some("claude-x"));
        e.delta(json!({"role": "assistant", "content": ""}), None);
        assert!(e.first_token.is_none(), "a role is not a token");
        e.delta(json!({"content": "Hé"}), None);
        assert!(e.first_token.is_some());
        e.delta(json!({}), Some("stop"));
        e.usage = Some(TokenUsage {
            prompt: 5,
            completion: 2,
        });
        e.finish(true);
        let got = events(&e.take().unwrap());
        assert_eq!(got.len(), 5);
        assert_eq!(got[1]["id"], "msg_1");
        assert_eq!(got[1]["model"], "claude-x");
        assert_eq!(got[1]["object"], "chat.completion.chunk");
        assert_eq!(got[1]["choices"][0]["delta"]["content"], "Hé");
        assert_eq!(got[2]["choices"][0]["finish_reason"], "stop");
        assert_eq!(got[3]["choices"], json!([]));
        assert_eq!(got[3]["usage"]["total_tokens"], 7);
        assert_eq!(got[4], "[DONE]");
        assert_eq!(e.completion_chars, 2);
        assert!(e.take().is_none());
    }

    #[test]
    fn no_usage_chunk_unless_asked_and_nothing_after_an_error() {
        let mut e = Emitter::new("m", false);
        e.usage = Some(TokenUsage::default());
        e.finish(true);
        assert_eq!(events(&e.take().unwrap()), vec![json!("[DONE]")]);
        let mut e = Emitter::new("m", true);
        e.error("provider failed", "stream_cut");
        e.finish(true);
        let got = events(&e.take().unwrap());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["error"]["code"], "stream_cut");
    }
}
