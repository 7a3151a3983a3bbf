//! Translation to and from Anthropic Messages.

use serde_json::{Value, json};

use super::*;

fn req(v: Value) -> ChatRequest {
    ChatRequest::from_value(v.as_object().unwrap()).unwrap() // ok: test code
}

#[test]
fn requests_translate_roles_tools_and_limits() {
    let r = req(json!({
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": "Use metric units."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "Let me look.", "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
            {"role": "user", "content": "And tomorrow?"}
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "description": "Current weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
        "tool_choice": "required",
        "parallel_tool_calls": false,
        "stop": ["\n\nHuman:"],
        "temperature": 1.7,
        "top_p": 0.9,
        "user": "u-42"
    }));
    let b = request_body(&r, "claude-sonnet-4-5", true, 1024).unwrap(); // ok: test code
    assert_eq!(b["model"], "claude-sonnet-4-5");
    assert_eq!(b["max_tokens"], 1024);
    assert_eq!(b["system"], "Be terse.\n\nUse metric units.");
    assert_eq!(b["stream"], true);
    assert_eq!(b["stop_sequences"], json!(["\n\nHuman:"]));
    assert_eq!(b["temperature"], 1.0);
    assert_eq!(b["top_p"], 0.9);
    assert_eq!(b["metadata"], json!({"user_id": "u-42"}));
    assert_eq!(
        b["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );
    assert_eq!(b["tools"][0]["name"], "weather");
    assert_eq!(b["tools"][0]["description"], "Current weather");
    assert_eq!(b["tools"][0]["input_schema"]["required"], json!(["city"]));
    let m = b["messages"].as_array().unwrap(); // ok: test code
    // The tool result and the next user turn merge into one user message.
    assert_eq!(m.len(), 3);
    assert_eq!(
        m[0],
        json!({"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]})
    );
    assert_eq!(
        m[1],
        json!({"role": "assistant", "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}
        ]})
    );
    assert_eq!(
        m[2],
        json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
            {"type": "text", "text": "And tomorrow?"}
        ]})
    );
}

#[test]
fn requests_translate_images_formats_and_named_tools() {
    let r = req(json!({
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Describe"},
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4A=="}},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
        ]}],
        "max_tokens": 77,
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    }));
    let b = request_body(&r, "claude", false, 4096).unwrap(); // ok: test code
    assert_eq!(b["max_tokens"], 77);
    assert!(b.get("stream").is_none());
    assert_eq!(b["tool_choice"], json!({"type": "tool", "name": "f"}));
    assert_eq!(
        b["tools"][0]["input_schema"],
        json!({"type": "object", "properties": {}})
    );
    let content = &b["messages"][0]["content"];
    assert_eq!(
        content[1],
        json!({"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4A=="}})
    );
    assert_eq!(
        content[2],
        json!({"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}})
    );
    let system = b["system"].as_str().unwrap(); // ok: test code
    assert!(
        system.contains("JSON schema: {\"type\":\"object\"}"),
        "{system}"
    );
}

#[test]
fn what_anthropic_cannot_do_is_refused() {
    let r = req(json!({"messages": [{"role": "user", "content": "hi"}], "n": 2}));
    assert!(
        request_body(&r, "c", false, 10)
            .unwrap_err()
            .to_string()
            .contains("n above 1")
    );
    let r = req(json!({"messages": [{"role": "tool", "content": "x"}]}));
    assert!(
        request_body(&r, "c", false, 10)
            .unwrap_err()
            .to_string()
            .contains("tool_call_id")
    );
}

#[test]
fn whole_answers_translate_back() {
    let body = json!({
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_9", "name": "weather", "input": {"city": "Oslo"}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 20, "cache_read_input_tokens": 5, "output_tokens": 11}
    });
    let (v, u) = complete(body.to_string().as_bytes()).unwrap(); // ok: test code (this file is the tests module of anthropic.rs)
    assert_eq!(
        u,
        Some(TokenUsage {
            prompt: 25,
            completion: 11
        })
    );
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["id"], "msg_01");
    let c = &v["choices"][0];
    assert_eq!(c["finish_reason"], "tool_calls");
    assert_eq!(c["message"]["content"], "Checking.");
    let call = &c["message"]["tool_calls"][0];
    assert_eq!(call["id"], "toolu_9");
    assert_eq!(call["function"]["name"], "weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap(); // ok: test code (this file is the tests module of anthropic.rs)
    assert_eq!(args, json!({"city": "Oslo"}));
    assert_eq!(v["usage"]["total_tokens"], 36);
}

/// Runs events through a decoder and returns the chunks' JSON.
fn stream(events: &[Value], include_usage: bool) -> (Vec<Value>, Emitter, bool) {
    let mut em = Emitter::new("claude", include_usage);
    let mut d = Events::new();
    for e in events {
        d.event(&e.to_string(), &mut em).unwrap(); // ok: test code (this file is the tests module of anthropic.rs)
    }
    let clean = d.end(&mut em);
    let out = em.take().unwrap_or_default();
    let chunks = std::str::from_utf8(&out)
        .unwrap() // ok: test code (this file is the tests module of anthropic.rs)
        .split("\n\n")
        .filter(|s| !s.is_empty())
        .map(|s| {
            let d = s.strip_prefix("data: ").unwrap(); // ok: test code (this file is the tests module of anthropic.rs)
            serde_json::from_str(d).unwrap_or(Value::String(d.into()))
        })
        .collect();
    (chunks, em, clean)
}

fn tool_stream() -> Vec<Value> {
    vec![
        json!({"type": "message_start", "message": {"id": "msg_7", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5", "content": [], "stop_reason": null,
            "usage": {"input_tokens": 42, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me check"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": "}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 30}}),
        json!({"type": "message_stop"}),
    ]
}

#[test]
fn streams_translate_event_by_event() {
    let (c, em, clean) = stream(&tool_stream(), true);
    assert!(clean);
    assert_eq!(c[0]["id"], "msg_7");
    assert_eq!(c[0]["model"], "claude-sonnet-4-5");
    assert_eq!(
        c[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert_eq!(c[1]["choices"][0]["delta"]["content"], "Let me check");
    assert_eq!(
        c[2]["choices"][0]["delta"]["tool_calls"][0],
        json!({"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": ""}})
    );
    let args: String = c[3..5]
        .iter()
        .map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap() // ok: test code (this file is the tests module of anthropic.rs)
                .to_owned()
        })
        .collect();
    assert_eq!(args, "{\"city\": \"Paris\"}");
    assert_eq!(c[5]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        c[6]["usage"],
        json!({"prompt_tokens": 42, "completion_tokens": 30, "total_tokens": 72})
    );
    assert_eq!(c[7], "[DONE]");
    assert_eq!(c.len(), 8);
    assert_eq!(em.usage.map(|u| u.completion), Some(30));
}

#[test]
fn a_stream_cut_short_keeps_its_usage_and_says_so() {
    let mut events = tool_stream();
    events.truncate(4);
    let (c, em, clean) = stream(&events, false);
    assert!(!clean);
    assert_eq!(c.len(), 2);
    assert_eq!(em.usage.map(|u| u.prompt), Some(42));
    let err =
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    let (c, _, clean) = stream(&[events[0].clone(), err], false);
    assert!(!clean);
    assert_eq!(c[1]["error"]["message"], "Overloaded");
}

#[test]
fn error_bodies_are_read() {
    let b = br#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#;
    assert!(
        error_message(b)
            .unwrap() // ok: test code (this file is the tests module of anthropic.rs)
            .starts_with("Number of request tokens")
    );
}
