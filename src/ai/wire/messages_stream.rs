//! A streamed answer re-framed for the Messages front door: the OpenAI
//! chunks the gateway writes for every provider become Anthropic's
//! events, as they come (each piece handed in yields the events it
//! completes, never more held than one unfinished event):
//!
//! - the first chunk opens the message (`message_start`);
//! - content opens a `text` block, each tool call a `tool_use` block
//!   (one block open at a time, closed by `content_block_stop` when
//!   another kind begins), deltas become `text_delta` and
//!   `input_json_delta`;
//! - the finish reason and the usage chunk are kept, and `[DONE]` ends
//!   the message with `message_delta` (stop reason, usage) and
//!   `message_stop`;
//! - an error event becomes Anthropic's `error` event.

use bytes::{Bytes, BytesMut};
use serde_json::{Value, json};

use super::messages::{stop_reason, usage};
use crate::ai::sse;

/// The block being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    /// A tool call, by its index among the OpenAI tool calls.
    Tool(u64),
}

/// Turns OpenAI chunks into Messages events.
#[derive(Debug, Default)]
pub struct Reframer {
    sse: sse::Decoder,
    started: bool,
    /// The open block and its index.
    open: Option<(Block, u64)>,
    next_index: u64,
    stop: Option<&'static str>,
    usage: Option<Value>,
    ended: bool,
    out: BytesMut,
}

impl Reframer {
    pub fn new() -> Reframer {
        Reframer::default()
    }

    /// Re-frames a piece of the OpenAI stream; `None` when it completes
    /// no event.
    pub fn feed(&mut self, piece: &[u8]) -> Option<Bytes> {
        self.sse.push(piece);
        loop {
            match self.sse.next_event() {
                Ok(Some(ev)) => self.event(&ev.data),
                Ok(None) => break,
                Err(e) => {
                    self.error(&e.to_string());
                    break;
                }
            }
        }
        (!self.out.is_empty()).then(|| self.out.split().freeze())
    }

    fn put(&mut self, name: &str, data: &Value) {
        sse::put_event(&mut self.out, name, data.to_string().as_bytes());
    }

    fn event(&mut self, data: &str) {
        if self.ended {
            return;
        }
        if data == "[DONE]" {
            self.finish();
            return;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            self.error("the answer's stream could not be read");
            return;
        };
        if let Some(e) = chunk.get("error") {
            let message = e["message"].as_str().unwrap_or("the answer failed");
            self.error(message);
            return;
        }
        self.start(&chunk);
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(u.clone());
        }
        let Some(choice) = chunk["choices"].get(0) else {
            return;
        };
        let delta = &choice["delta"];
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            let index = self.open_block(Block::Text, || json!({"type": "text", "text": ""}));
            self.put(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
            );
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let n = call["index"].as_u64().unwrap_or(0);
            let index = if call.get("id").is_some_and(|id| !id.is_null()) {
                Some(self.open_block(Block::Tool(n), || {
                    json!({"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": {}})
                }))
            } else {
                // Arguments continue the call already open; a call that
                // never opened has nowhere to go.
                self.open
                    .filter(|(b, _)| *b == Block::Tool(n))
                    .map(|(_, i)| i)
            };
            if let Some(index) = index
                && let Some(args) = call["function"]["arguments"]
                    .as_str()
                    .filter(|a| !a.is_empty())
            {
                self.put(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": args}}),
                );
            }
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            self.stop = Some(stop_reason(f));
        }
    }

    /// `message_start`, once, from the first chunk.
    fn start(&mut self, chunk: &Value) {
        if self.started {
            return;
        }
        self.started = true;
        let message = json!({
            "id": chunk["id"],
            "type": "message",
            "role": "assistant",
            "model": chunk["model"],
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        });
        self.put(
            "message_start",
            &json!({"type": "message_start", "message": message}),
        );
    }

    /// The index of the open block of `kind`, opening it (and closing
    /// another) when needed.
    fn open_block(&mut self, kind: Block, content: impl FnOnce() -> Value) -> u64 {
        if let Some((open, index)) = self.open {
            if open == kind {
                return index;
            }
            self.close_block();
        }
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((kind, index));
        self.put(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": content()}),
        );
        index
    }

    fn close_block(&mut self) {
        if let Some((_, index)) = self.open.take() {
            self.put(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
    }

    fn finish(&mut self) {
        self.start(&Value::Null);
        self.close_block();
        let usage = self
            .usage
            .as_ref()
            .map_or_else(|| json!({"input_tokens": 0, "output_tokens": 0}), usage);
        self.put(
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": self.stop.unwrap_or("end_turn"), "stop_sequence": null}, "usage": usage}),
        );
        self.put("message_stop", &json!({"type": "message_stop"}));
        self.ended = true;
    }

    fn error(&mut self, message: &str) {
        if self.ended {
            return;
        }
        self.put(
            "error",
            &json!({"type": "error", "error": {"type": "api_error", "message": message}}),
        );
        self.ended = true;
    }
}
