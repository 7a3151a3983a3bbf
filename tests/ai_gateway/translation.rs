//! Wire formats both ways, whole and streamed, tools included; keys sent
//! the provider's way and never shown; usage read and counted.

use serde_json::{Value, json};

use super::*;
use crate::ai_gateway::fakes::Act;

const WEATHER: (&str, &str) = ("get_weather", r#"{"city":"Paris"}"#);

fn tool_request(stream: bool) -> Value {
    json!({
        "model": "any",
        "stream": stream,
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Weather in Paris?"}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Current weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
        "temperature": 0.5,
        "stop": ["END"]
    })
}

/// A gateway whose route `NAME.test` has one instance of `provider`
/// forcing `model`, in front of a fake of `api`.
pub async fn single(name: &str, api: Api, provider: &str, model: &str) -> (TestGateway, Fake) {
    let f = Fake::start(api, "k-123").await;
    let m = secret("key", "k-123")
        + &ai_route(
            name,
            &format!(
                "{{aiProxy: {{instances: [{}]}}}}",
                instance("only", provider, &f, "key", &format!(", model: {model}"))
            ),
        );
    (TestGateway::start(&m).await, f)
}

/// Checks a whole OpenAI answer carrying the weather tool call.
fn assert_tool_answer(r: &Reply) {
    assert_eq!(r.status, 200, "{}", r.text());
    let v = json_of(r);
    assert_eq!(v["object"], "chat.completion");
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "Hello from the fake");
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    // The fake counts 5 prompt words and 4 answer words.
    assert_eq!(v["usage"]["prompt_tokens"], 5, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 4);
    assert_eq!(v["usage"]["total_tokens"], 9);
}

/// Checks a streamed OpenAI answer carrying the weather tool call.
fn assert_tool_stream(s: &Stream) {
    assert_eq!(s.status, 200, "{}", s.text);
    assert_eq!(s.headers.get("content-type").unwrap(), "text/event-stream");
    let a = assemble(&sse_data(&s.text));
    assert_eq!(a.content, "Hello from the fake", "{}", s.text);
    assert_eq!(a.tool_name.as_deref(), Some("get_weather"), "{}", s.text);
    let args: Value = serde_json::from_str(&a.tool_args).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    assert_eq!(a.finish.as_deref(), Some("tool_calls"));
    assert!(a.done, "ends with [DONE]: {}", s.text);
}

#[tokio::test]
async fn openai_gets_the_gateway_key_never_the_clients() {
    let (gw, f) = one_openai("oai", "").await;
    let r = post(
        &gw,
        "oai.test",
        "/v1/chat/completions",
        &hello(),
        &[
            ("authorization", "Bearer client-secret"),
            ("x-api-key", "client-2"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = json_of(&r);
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from the fake");
    assert!(!r.text().contains("sk-openai"));
    let seen = &f.seen()[0];
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.headers["authorization"], "Bearer sk-openai");
    assert!(seen.headers.get("x-api-key").is_none());
    let all = format!("{:?}", seen.headers);
    assert!(
        !all.contains("client-secret") && !all.contains("client-2"),
        "{all}"
    );
    assert_eq!(seen.body["model"], "gpt-4o-mini");
    assert_eq!(seen.body["messages"], hello()["messages"]);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_refused_key_is_a_502_that_does_not_show_it() {
    let (gw, f) = one_openai("refused", "").await;
    f.rotate("sk-other");
    let r = chat(&gw, "refused.test", &hello()).await;
    assert_eq!(r.status, 502, "{}", r.text());
    // The fake's message quotes the key it got; the client never sees it.
    assert!(!r.text().contains("sk-openai"), "{}", r.text());
    assert!(!r.text().contains("Incorrect API key"), "{}", r.text());
    let m = admin_get(&gw, "/metrics").await.text();
    assert!(!m.contains("sk-openai"));
    let routes = admin_get(&gw, "/routes").await.text();
    assert!(!routes.contains("sk-openai"), "{routes}");
    gw.shutdown().await;
}

#[tokio::test]
async fn key_rotation_takes_effect_without_restart() {
    let (gw, f) = one_openai("rotate", "").await;
    assert_eq!(chat(&gw, "rotate.test", &hello()).await.status, 200);
    f.rotate("sk-new");
    gw.write("main.yaml", &{
        let old = std::fs::read_to_string(gw.dir.path().join("main.yaml")).unwrap();
        old.replace("\"sk-openai\"", "\"sk-new\"")
    })
    .await;
    let r = chat(&gw, "rotate.test", &hello()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        f.seen().last().unwrap().headers["authorization"],
        "Bearer sk-new"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn anthropic_translates_both_ways() {
    let (gw, f) = single("claude", Api::Anthropic, "Anthropic", "claude-sonnet-4-5").await;
    f.always(Act::Answer {
        text: "Hello from the fake",
        tool: Some(WEATHER),
    });
    let r = chat(&gw, "claude.test", &tool_request(false)).await;
    assert_tool_answer(&r);
    let seen = &f.seen()[0];
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.headers["x-api-key"], "k-123");
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
    assert!(seen.headers.get("authorization").is_none());
    let b = &seen.body;
    assert_eq!(b["model"], "claude-sonnet-4-5");
    assert_eq!(b["system"], "Be terse.");
    assert_eq!(b["max_tokens"], 4096, "Anthropic requires max_tokens");
    assert_eq!(b["stop_sequences"], json!(["END"]));
    assert_eq!(b["temperature"], 0.5);
    assert_eq!(b["tools"][0]["name"], "get_weather");
    assert_eq!(b["tools"][0]["input_schema"]["required"], json!(["city"]));
    assert_eq!(
        b["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]}])
    );

    let mut s = Stream::open(&gw, "claude.test", &tool_request(true)).await;
    s.read_all().await.unwrap();
    assert_tool_stream(&s);
    assert_eq!(f.seen()[1].body["stream"], true);
    gw.shutdown().await;
}

#[tokio::test]
async fn gemini_translates_both_ways() {
    let (gw, f) = single("gemini", Api::Gemini, "Gemini", "gemini-2.0-flash").await;
    f.always(Act::Answer {
        text: "Hello from the fake",
        tool: Some(WEATHER),
    });
    let r = chat(&gw, "gemini.test", &tool_request(false)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = json_of(&r);
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from the fake");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    assert_eq!(v["usage"]["completion_tokens"], 4);
    let seen = &f.seen()[0];
    assert_eq!(seen.path, "/v1beta/models/gemini-2.0-flash:generateContent");
    assert_eq!(seen.headers["x-goog-api-key"], "k-123");
    let b = &seen.body;
    assert_eq!(
        b["systemInstruction"]["parts"][0]["text"], "Be terse.",
        "{b}"
    );
    assert_eq!(b["contents"][0]["role"], "user");
    assert_eq!(b["contents"][0]["parts"][0]["text"], "Weather in Paris?");
    assert_eq!(b["generationConfig"]["temperature"], 0.5);
    assert_eq!(b["generationConfig"]["stopSequences"], json!(["END"]));
    assert_eq!(
        b["tools"][0]["functionDeclarations"][0]["name"],
        "get_weather"
    );

    let mut s = Stream::open(&gw, "gemini.test", &tool_request(true)).await;
    s.read_all().await.unwrap();
    assert_eq!(s.status, 200);
    let a = assemble(&sse_data(&s.text));
    assert_eq!(a.content, "Hello from the fake", "{}", s.text);
    assert_eq!(a.tool_name.as_deref(), Some("get_weather"));
    assert!(a.done);
    assert_eq!(
        f.seen()[1].path,
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn azure_and_mistral_take_the_openai_format_with_their_rules() {
    let azure = Fake::start(Api::Azure, "az-key").await;
    let mistral = Fake::start(Api::Mistral, "mi-key").await;
    let m = secret("az", "az-key")
        + &secret("mi", "mi-key")
        + &ai_route(
            "azure",
            &format!(
                "{{aiProxy: {{instances: [{}]}}}}",
                instance("az", "AzureOpenAI", &azure, "az", ", model: my-deployment")
            ),
        )
        + &ai_route(
            "mistral",
            &format!(
                "{{aiProxy: {{instances: [{}]}}}}",
                instance("mi", "Mistral", &mistral, "mi", "")
            ),
        );
    let gw = TestGateway::start(&m).await;
    azure.always(Act::Answer {
        text: "Hello from the fake",
        tool: Some(WEATHER),
    });
    let r = chat(&gw, "azure.test", &tool_request(false)).await;
    assert_tool_answer(&r);
    let seen = &azure.seen()[0];
    assert_eq!(
        seen.path,
        "/openai/deployments/my-deployment/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(seen.headers["api-key"], "az-key");
    assert!(seen.headers.get("authorization").is_none());

    // Mistral refuses fields it does not know (stream_options among
    // them) and reports usage in its last chunk by itself.
    let body = json!({"model": "mistral-small-latest", "stream": true,
        "messages": [{"role": "user", "content": "hi there"}]});
    let mut s = Stream::open(&gw, "mistral.test", &body).await;
    s.read_all().await.unwrap();
    assert_eq!(s.status, 200, "{}", s.text);
    let a = assemble(&sse_data(&s.text));
    assert_eq!(a.content, "Hello from the fake");
    assert!(a.done);
    assert_eq!(a.usage_chunks, 0, "the client did not ask for usage");
    let seen = &mistral.seen()[0];
    assert_eq!(seen.headers["authorization"], "Bearer mi-key");
    assert!(seen.body.get("stream_options").is_none(), "{}", seen.body);
    // Usage from Mistral's last chunk is counted.
    eventually_async(|| async {
        metric(
            &gw,
            "sluicegate_ai_tokens_total",
            &[
                ("route", "mistral"),
                ("instance", "mi"),
                ("type", "completion"),
            ],
        )
        .await
            == 4.0
    })
    .await;
    gw.shutdown().await;
}

#[tokio::test]
async fn usage_is_counted_for_whole_and_streamed_answers() {
    let (gw, f) = one_openai("usage", "").await;
    let r = chat(&gw, "usage.test", &hello()).await;
    assert_eq!(r.status, 200);
    // A stream whose client did not ask for usage: the gateway asks,
    // reads it, and keeps the extra chunk from the client.
    let mut body = hello();
    body["stream"] = json!(true);
    let mut s = Stream::open(&gw, "usage.test", &body).await;
    s.read_all().await.unwrap();
    let a = assemble(&sse_data(&s.text));
    assert_eq!(a.content, "Hello from the fake");
    assert_eq!(a.usage_chunks, 0, "{}", s.text);
    assert!(a.usage.is_none(), "{}", s.text);
    assert_eq!(
        f.seen()[1].body["stream_options"],
        json!({"include_usage": true})
    );
    // One that asked gets it.
    body["stream_options"] = json!({"include_usage": true});
    let mut s = Stream::open(&gw, "usage.test", &body).await;
    s.read_all().await.unwrap();
    let a = assemble(&sse_data(&s.text));
    assert_eq!(a.usage_chunks, 1, "{}", s.text);
    assert_eq!(a.usage.as_ref().unwrap()["completion_tokens"], 4);
    assert!(a.done);

    // Three answers of 2 prompt and 4 completion tokens each.
    let labels = [
        ("route", "usage"),
        ("instance", "primary"),
        ("model", "other"),
    ];
    eventually_async(|| async {
        metric(
            &gw,
            "sluicegate_ai_tokens_total",
            &[labels[0], labels[1], ("type", "completion")],
        )
        .await
            == 12.0
    })
    .await;
    assert_eq!(
        metric(
            &gw,
            "sluicegate_ai_tokens_total",
            &[labels[0], labels[1], ("type", "prompt")]
        )
        .await,
        6.0
    );
    assert_eq!(
        metric(
            &gw,
            "sluicegate_ai_time_to_first_token_seconds_count",
            &labels
        )
        .await,
        2.0
    );
    assert!(metric(&gw, "sluicegate_ai_request_duration_seconds_count", &labels).await == 3.0);
    gw.shutdown().await;
}

/// Waits until the async check holds, or fails after 5 s.
pub async fn eventually_async<F, Fut>(mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f().await {
        assert!(Instant::now() < deadline, "not within 5s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
