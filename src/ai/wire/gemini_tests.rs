//! Tests of the translation to and from Gemini `generateContent` (the
//! `#[cfg(test)]` module of gemini.rs): unwrap is the assertion here.

use serde_json::{Value, json};

use super::*;

fn req(v: Value) -> ChatRequest {
    ChatRequest::from_value(v.as_object().unwrap()).unwrap() // ok: test code
}

#[test]
fn requests_translate_roles_tools_and_settings() {
    let r = req(json!({
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"cat\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"found\": true}"},
            {"role": "tool", "tool_call_id": "call_1", "content": "plain text"}
        ],
        "tools": [{"type": "function", "function": {"name": "lookup", "description": "Search",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "additionalProperties": false}}}],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "temperature": 0.2, "top_p": 0.8, "max_tokens": 300, "stop": "END", "seed": 3,
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}
    }));
    let b = request_body(&r).unwrap(); // ok: test code
    assert_eq!(
        b["systemInstruction"],
        json!({"parts": [{"text": "Be terse."}]})
    );
    let c = b["contents"].as_array().unwrap(); // ok: test code
    assert_eq!(c.len(), 3);
    assert_eq!(
        c[0],
        json!({"role": "user", "parts": [
            {"text": "What is in this picture?"},
            {"inlineData": {"mimeType": "image/png", "data": "iVBORw0K"}}
        ]})
    );
    assert_eq!(
        c[1],
        json!({"role": "model", "parts": [{"functionCall": {"name": "lookup", "args": {"q": "cat"}}}]})
    );
    assert_eq!(
        c[2],
        json!({"role": "user", "parts": [
            {"functionResponse": {"name": "lookup", "response": {"found": true}}},
            {"functionResponse": {"name": "lookup", "response": {"content": "plain text"}}}
        ]})
    );
    assert_eq!(
        b["generationConfig"],
        json!({"temperature": 0.2, "topP": 0.8, "maxOutputTokens": 300, "seed": 3,
            "stopSequences": ["END"], "responseMimeType": "application/json",
            "responseJsonSchema": {"type": "object"}})
    );
    let decl = &b["tools"][0]["functionDeclarations"][0];
    assert_eq!(decl["name"], "lookup");
    assert_eq!(decl["description"], "Search");
    assert_eq!(decl["parametersJsonSchema"]["additionalProperties"], false);
    assert_eq!(
        b["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["lookup"]}})
    );
}

#[test]
fn a_tool_result_must_answer_a_call() {
    let r = req(json!({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}));
    let e = request_body(&r).unwrap_err().to_string();
    assert!(e.contains("answers no earlier tool call"), "{e}");
}

#[test]
fn whole_answers_translate_back() {
    let body = json!({
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "thinking...", "thought": true},
            {"text": "Here"},
            {"functionCall": {"name": "lookup", "args": {"q": "dog"}}}
        ]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 8, "thoughtsTokenCount": 4, "totalTokenCount": 24},
        "modelVersion": "gemini-2.5-flash",
        "responseId": "resp-1"
    });
    let (v, u) = complete(body.to_string().as_bytes()).unwrap(); // ok: test code
    assert_eq!(
        u,
        Some(TokenUsage {
            prompt: 12,
            completion: 12
        })
    );
    assert_eq!(v["id"], "resp-1");
    assert_eq!(v["model"], "gemini-2.5-flash");
    let c = &v["choices"][0];
    assert_eq!(c["message"]["content"], "Here");
    assert_eq!(c["finish_reason"], "tool_calls");
    let call = &c["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "lookup");
    assert_eq!(call["function"]["arguments"], "{\"q\":\"dog\"}");
    assert!(call["id"].as_str().unwrap().starts_with("call_")); // ok: test code
    let blocked = json!({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 3}});
    let (v, _) = complete(blocked.to_string().as_bytes()).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
}

fn stream(events: &[Value]) -> (Vec<Value>, Emitter, bool) {
    let mut em = Emitter::new("gemini-2.5-flash", true);
    let mut d = Events::new();
    for e in events {
        d.event(&e.to_string(), &mut em).unwrap();
    }
    let clean = d.end(&mut em);
    let out = em.take().unwrap_or_default();
    let chunks = std::str::from_utf8(&out)
        .unwrap()
        .split("\n\n")
        .filter(|s| !s.is_empty())
        .map(|s| {
            let d = s.strip_prefix("data: ").unwrap();
            serde_json::from_str(d).unwrap_or(Value::String(d.into()))
        })
        .collect();
    (chunks, em, clean)
}

#[test]
fn streams_translate_response_by_response() {
    let events = [
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "The answer"}]}, "index": 0}],
            "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7}, "modelVersion": "gemini-2.5-flash", "responseId": "r9"}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": " is 42."}]}, "index": 0}]}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"x": 1}}}]},
            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 9, "totalTokenCount": 16}}),
    ];
    let (c, em, clean) = stream(&events);
    assert!(clean);
    assert_eq!(c[0]["id"], "r9");
    assert_eq!(c[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(c[1]["choices"][0]["delta"]["content"], "The answer");
    assert_eq!(c[2]["choices"][0]["delta"]["content"], " is 42.");
    let call = &c[3]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(call["index"], 0);
    assert_eq!(call["function"]["arguments"], "{\"x\":1}");
    assert_eq!(c[4]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(c[5]["usage"]["total_tokens"], 16);
    assert_eq!(c[6], "[DONE]");
    assert_eq!(
        em.usage,
        Some(TokenUsage {
            prompt: 7,
            completion: 9
        })
    );
}

#[test]
fn a_stream_without_a_finish_is_cut() {
    let events = [json!({"candidates": [{"content": {"parts": [{"text": "Hal"}]}}]})];
    let (c, _, clean) = stream(&events);
    assert!(!clean);
    assert_eq!(c.len(), 2, "no [DONE]");
}

#[test]
fn error_bodies_are_read() {
    let b = br#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}"#;
    assert_eq!(
        error_message(b).as_deref(),
        Some("Resource has been exhausted (e.g. check quota).")
    );
}
