//! The Anthropic Messages front door (`POST /v1/messages`): an
//! Anthropic-format client served by providers of either format, whole
//! and streamed, with errors in Anthropic's shape.

use serde_json::{Value, json};

use super::*;
use crate::ai_gateway::fakes::Act;

const WEATHER: (&str, &str) = ("get_weather", r#"{"city":"Paris"}"#);

/// A Messages request asking about the weather, with a tool.
fn weather(stream: bool) -> Value {
    json!({
        "model": "any",
        "max_tokens": 300,
        "stream": stream,
        "system": "Be terse.",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [{"name": "get_weather", "description": "Current weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
        "stop_sequences": ["END"]
    })
}

/// A route `NAME.test` with one `provider` instance forcing `model`,
/// answering with text and the weather tool call.
async fn single(name: &str, api: Api, provider: &str, model: &str) -> (TestGateway, Fake) {
    let (gw, f) = crate::ai_gateway::translation::single(name, api, provider, model).await;
    f.always(Act::Answer {
        text: "Hello from the fake",
        tool: Some(WEATHER),
    });
    (gw, f)
}

/// `(event name, data)` of an Anthropic event stream.
fn events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = String::new();
            let mut data = Value::Null;
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).unwrap();
                }
            }
            (name, data)
        })
        .collect()
}

/// Checks a whole Messages answer carrying the weather tool call.
fn assert_message(r: &Reply) {
    assert_eq!(r.status, 200, "{}", r.text());
    let v = json_of(r);
    assert_eq!(v["type"], "message", "{v}");
    assert_eq!(v["role"], "assistant");
    assert_eq!(
        v["content"][0],
        json!({"type": "text", "text": "Hello from the fake"})
    );
    assert_eq!(v["content"][1]["type"], "tool_use");
    assert_eq!(v["content"][1]["name"], "get_weather");
    assert_eq!(v["content"][1]["input"], json!({"city": "Paris"}));
    assert_eq!(v["stop_reason"], "tool_use");
    // The fake counts 5 prompt words and 4 answer words.
    assert_eq!(v["usage"], json!({"input_tokens": 5, "output_tokens": 4}));
}

/// Checks a streamed Messages answer carrying the weather tool call.
fn assert_message_stream(r: &Reply) {
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let ev = events(&r.text());
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
    let (mut text, mut args, mut tool) = (String::new(), String::new(), None);
    for (name, d) in &ev {
        assert_eq!(d["type"], name.as_str(), "{d}");
        if name == "content_block_start" && d["content_block"]["type"] == "tool_use" {
            tool = d["content_block"]["name"].as_str().map(str::to_owned);
        }
        if name == "content_block_delta" {
            text += d["delta"]["text"].as_str().unwrap_or_default();
            args += d["delta"]["partial_json"].as_str().unwrap_or_default();
        }
    }
    assert_eq!(text, "Hello from the fake", "{}", r.text());
    assert_eq!(tool.as_deref(), Some("get_weather"));
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"city": "Paris"})
    );
    let delta = &ev[ev.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["output_tokens"], 4, "{delta}");
    let starts = names
        .iter()
        .filter(|n| **n == "content_block_start")
        .count();
    let stops = names.iter().filter(|n| **n == "content_block_stop").count();
    assert_eq!((starts, stops), (2, 2), "{names:?}");
}

#[tokio::test]
async fn messages_front_door_over_an_openai_provider() {
    let (gw, f) = single("msgoai", Api::OpenAi, "OpenAI", "gpt-4o-mini").await;
    let r = post(&gw, "msgoai.test", "/v1/messages", &weather(false), &[]).await;
    assert_message(&r);
    let seen = &f.seen()[0];
    assert_eq!(seen.path, "/v1/chat/completions");
    let b = &seen.body;
    assert_eq!(b["model"], "gpt-4o-mini");
    assert_eq!(b["max_tokens"], 300);
    assert_eq!(b["stop"], json!(["END"]));
    assert_eq!(
        b["messages"],
        json!([{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Weather in Paris?"}])
    );
    assert_eq!(b["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(
        b["tools"][0]["function"]["parameters"]["required"],
        json!(["city"])
    );

    let r = post(&gw, "msgoai.test", "/v1/messages", &weather(true), &[]).await;
    assert_message_stream(&r);
    // Usage is asked for, to fill in `message_delta.usage`.
    assert_eq!(f.seen()[1].body["stream_options"]["include_usage"], true);
    gw.shutdown().await;
}

#[tokio::test]
async fn messages_front_door_over_an_anthropic_provider() {
    let (gw, f) = single("msgant", Api::Anthropic, "Anthropic", "claude-sonnet-4-5").await;
    let r = post(&gw, "msgant.test", "/v1/messages", &weather(false), &[]).await;
    assert_message(&r);
    let seen = &f.seen()[0];
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.headers["x-api-key"], "k-123");
    let b = &seen.body;
    assert_eq!(b["model"], "claude-sonnet-4-5");
    assert_eq!(b["system"], "Be terse.");
    assert_eq!(b["max_tokens"], 300);
    assert_eq!(b["tools"][0]["input_schema"]["required"], json!(["city"]));

    let r = post(&gw, "msgant.test", "/v1/messages", &weather(true), &[]).await;
    assert_message_stream(&r);
    gw.shutdown().await;
}

#[tokio::test]
async fn messages_errors_take_anthropics_shape() {
    let (gw, f) = single("msgerr", Api::OpenAi, "OpenAI", "gpt-4o-mini").await;
    let mut body = weather(false);
    body.as_object_mut().unwrap().remove("max_tokens");
    let r = post(&gw, "msgerr.test", "/v1/messages", &body, &[]).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        json_of(&r),
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: is required"}})
    );
    assert_eq!(f.requests(), 0, "refused before any provider call");

    f.then(Act::Fail(429));
    let r = post(&gw, "msgerr.test", "/v1/messages", &weather(false), &[]).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(json_of(&r)["error"]["type"], "rate_limit_error");

    let r = get(gw.http(), "msgerr.test", "/v1/messages").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    assert_eq!(json_of(&r)["type"], "error");
    gw.shutdown().await;
}
