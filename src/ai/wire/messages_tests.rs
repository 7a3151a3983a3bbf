use serde_json::{Value, json};

use super::super::messages_stream::Reframer;
use super::*;

fn convert(v: Value) -> Value {
    serde_json::from_slice(&request(v.to_string().as_bytes()).unwrap()).unwrap() // ok: test code (a #[cfg(test)] module of messages.rs)
}

fn refused(v: Value) -> String {
    request(v.to_string().as_bytes()).unwrap_err().to_string()
}

#[test]
fn a_tool_conversation_becomes_openai_messages() {
    let got = convert(json!({
        "model": "claude-x",
        "max_tokens": 256,
        "system": [{"type": "text", "text": "Be terse."}, {"type": "text", "text": "Use tools."}],
        "stop_sequences": ["END"],
        "temperature": 0.2,
        "metadata": {"user_id": "u-1"},
        "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}]},
                {"type": "text", "text": "And tomorrow?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
            ]}
        ]
    }));
    assert_eq!(
        got,
        json!({
            "model": "claude-x",
            "max_tokens": 256,
            "stop": ["END"],
            "temperature": 0.2,
            "user": "u-1",
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": "required",
            "parallel_tool_calls": false,
            "messages": [
                {"role": "system", "content": "Be terse.\n\nUse tools."},
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
                {"role": "user", "content": [
                    {"type": "text", "text": "And tomorrow?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
                ]}
            ]
        })
    );
}

#[test]
fn streams_ask_for_usage_and_choices_map() {
    let got = convert(
        json!({"max_tokens": 5, "stream": true, "tool_choice": {"type": "tool", "name": "f"},
        "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(got["stream"], true);
    assert_eq!(got["stream_options"]["include_usage"], true);
    assert_eq!(
        got["tool_choice"],
        json!({"type": "function", "function": {"name": "f"}})
    );
    let got = convert(json!({"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}));
    assert!(got.get("stream_options").is_none());
}

#[test]
fn what_has_no_counterpart_is_refused_by_name() {
    let msg = |m: Value| json!({"max_tokens": 5, "messages": [m]});
    for (body, why) in [
        (
            json!({"messages": [{"role": "user", "content": "hi"}]}),
            "max_tokens: is required",
        ),
        (
            json!({"max_tokens": 0, "messages": []}),
            "max_tokens: must be a positive integer",
        ),
        (
            json!({"max_tokens": 5, "top_k": 3, "messages": []}),
            "top_k: is not supported",
        ),
        (json!({"max_tokens": 5}), "messages: must be a list"),
        (
            msg(json!({"role": "system", "content": "x"})),
            "messages[0].role",
        ),
        (
            msg(json!({"role": "user", "content": [{"type": "document"}]})),
            "messages[0].content[0].type",
        ),
        (
            msg(
                json!({"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "t"}]}),
            ),
            "messages[0].content[0].type",
        ),
        (
            json!({"max_tokens": 5, "messages": [], "tools": [{"type": "web_search_20250305", "name": "web"}]}),
            "tools[0].type",
        ),
        (
            json!({"max_tokens": 5, "messages": [], "tool_choice": {"type": "maybe"}}),
            "tool_choice.type",
        ),
        (json!("not an object"), "must be a JSON object"),
    ] {
        let e = refused(body);
        assert!(e.contains(why), "{e} should say {why}");
    }
}

#[test]
fn whole_answers_become_messages() {
    let openai = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-x",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": "Sure.",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    });
    let got: Value = serde_json::from_slice(&whole(openai.to_string().as_bytes())).unwrap(); // ok: test code (a #[cfg(test)] module of messages.rs)
    assert_eq!(
        got,
        json!({
            "id": "chatcmpl-1", "type": "message", "role": "assistant", "model": "gpt-x",
            "content": [{"type": "text", "text": "Sure."}, {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 7, "output_tokens": 3}
        })
    );
    assert_eq!(stop_reason("length"), "max_tokens");
    assert_eq!(stop_reason("stop"), "end_turn");
    let e: Value =
        serde_json::from_slice(&error_body(StatusCode::TOO_MANY_REQUESTS, "slow")).unwrap(); // ok: test code (a #[cfg(test)] module of messages.rs)
    assert_eq!(
        e,
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}})
    );
}

/// `(event name, data)` of a re-framed stream.
fn events(out: &[u8]) -> Vec<(String, Value)> {
    std::str::from_utf8(out)
        .unwrap() // ok: test code (a #[cfg(test)] module of messages.rs)
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, data) = e.split_once('\n').unwrap(); // ok: test code (a #[cfg(test)] module of messages.rs)
            (
                name.strip_prefix("event: ").unwrap().to_owned(),
                serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap(),
            )
        })
        .collect()
}

fn chunk(delta: Value, finish: Option<&str>) -> String {
    let c = json!({"id": "c1", "object": "chat.completion.chunk", "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    format!("data: {c}\n\n")
}

#[test]
fn streams_are_reframed_event_by_event() {
    let mut r = Reframer::new();
    let mut out = Vec::new();
    let text = chunk(json!({"role": "assistant", "content": "Hel"}), None);
    // A chunk split in two pieces yields its events once whole.
    let (a, b) = text.split_at(20);
    assert!(r.feed(a.as_bytes()).is_none());
    out.extend_from_slice(&r.feed(b.as_bytes()).unwrap());
    for piece in [
        chunk(json!({"content": "lo"}), None),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":"}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
            None,
        ),
        chunk(json!({}), Some("tool_calls")),
        format!(
            "data: {}\n\n",
            json!({"id": "c1", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 6}})
        ),
        "data: [DONE]\n\n".to_owned(),
    ] {
        if let Some(b) = r.feed(piece.as_bytes()) {
            out.extend_from_slice(&b);
        }
    }
    let got = events(&out);
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(got[0].1["message"]["id"], "c1");
    assert_eq!(
        got[1].1["content_block"],
        json!({"type": "text", "text": ""})
    );
    assert_eq!(
        got[2].1["delta"],
        json!({"type": "text_delta", "text": "Hel"})
    );
    assert_eq!(got[5].1["index"], 1);
    assert_eq!(
        got[5].1["content_block"],
        json!({"type": "tool_use", "id": "call_1", "name": "f", "input": {}})
    );
    assert_eq!(got[7].1["delta"]["partial_json"], "1}");
    assert_eq!(got[9].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(
        got[9].1["usage"],
        json!({"input_tokens": 4, "output_tokens": 6})
    );
    // Nothing after the end.
    assert!(
        r.feed(chunk(json!({"content": "x"}), None).as_bytes())
            .is_none()
    );
}

#[test]
fn a_cut_stream_ends_with_an_error_event() {
    let mut r = Reframer::new();
    let mut out = r
        .feed(chunk(json!({"content": "a"}), None).as_bytes())
        .unwrap()
        .to_vec();
    let cut = format!(
        "data: {}\n\n",
        json!({"error": {"message": "the provider's stream failed", "code": "stream_cut"}})
    );
    out.extend_from_slice(&r.feed(cut.as_bytes()).unwrap());
    let got = events(&out);
    let last = got.last().unwrap();
    assert_eq!(last.0, "error");
    assert_eq!(
        last.1,
        json!({"type": "error", "error": {"type": "api_error", "message": "the provider's stream failed"}})
    );
    assert!(!got.iter().any(|(n, _)| n == "message_stop"));
}
