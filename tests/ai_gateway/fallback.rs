//! Fallback between instances before the first byte, never after;
//! passive health; a client leaving mid-stream cancels the provider call.

use serde_json::json;

use super::*;
use crate::ai_gateway::fakes::Act;

/// A gateway whose route `NAME.test` has an OpenAI `primary` (priority
/// 10) and an Anthropic `backup` (priority 0), with `extra` settings.
async fn pair(name: &str, extra: &str) -> (TestGateway, Fake, Fake) {
    let primary = Fake::start(Api::OpenAi, "sk-p").await;
    let backup = Fake::start(Api::Anthropic, "sk-b").await;
    let m = secret("p", "sk-p")
        + &secret("b", "sk-b")
        + &ai_route(
            name,
            &format!(
                "{{aiProxy: {{instances: [{}, {}]{extra}}}}}",
                instance("primary", "OpenAI", &primary, "p", ", priority: 10"),
                instance(
                    "backup",
                    "Anthropic",
                    &backup,
                    "b",
                    ", model: claude-haiku, priority: 0"
                ),
            ),
        );
    (TestGateway::start(&m).await, primary, backup)
}

fn streamed() -> serde_json::Value {
    let mut b = hello();
    b["stream"] = json!(true);
    b
}

#[tokio::test]
async fn rate_limits_and_server_errors_fall_back_before_the_first_byte() {
    let (gw, primary, backup) = pair("fb", "").await;
    primary.then(Act::Fail(429)).then(Act::Fail(503));
    for _ in 0..2 {
        let r = chat(&gw, "fb.test", &hello()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            json_of(&r)["choices"][0]["message"]["content"],
            "Hello from the fake"
        );
    }
    assert_eq!((primary.requests(), backup.requests()), (2, 2));
    // The backup got the same conversation in its own format.
    assert_eq!(backup.seen()[0].body["model"], "claude-haiku");
    assert_eq!(backup.seen()[0].body["messages"][0]["role"], "user");
    // A stream that dies before its first token falls back too.
    primary.then(Act::DieBeforeToken);
    let mut s = Stream::open(&gw, "fb.test", &streamed()).await;
    s.read_all().await.unwrap();
    assert_eq!(s.status, 200);
    let a = assemble(&sse_data(&s.text));
    assert_eq!(a.content, "Hello from the fake", "{}", s.text);
    assert!(a.done);
    assert_eq!((primary.requests(), backup.requests()), (3, 3));
    assert_eq!(
        metric(
            &gw,
            "sluicegate_ai_fallbacks_total",
            &[("route", "fb"), ("instance", "primary")]
        )
        .await,
        3.0
    );
    // Three failures in a row (the default) set the primary aside.
    let r = chat(&gw, "fb.test", &hello()).await;
    assert_eq!(r.status, 200);
    assert_eq!((primary.requests(), backup.requests()), (3, 4));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_slow_first_token_falls_back_on_timeout() {
    let (gw, primary, backup) = pair("slow", ", timeouts: {firstToken: 300ms}").await;
    primary.then(Act::Hang);
    let started = Instant::now();
    let r = chat(&gw, "slow.test", &hello()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!((primary.requests(), backup.requests()), (1, 1));
    gw.shutdown().await;
}

#[tokio::test]
async fn conditions_left_out_of_fallback_on_are_passed_to_the_client() {
    let (gw, primary, backup) = pair("nofb", ", fallbackOn: [ServerError]").await;
    primary.then(Act::Fail(429));
    let r = chat(&gw, "nofb.test", &hello()).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("7"));
    assert!(json_of(&r)["error"]["message"].is_string());
    assert_eq!(backup.requests(), 0);
    // A client error (the provider's 400) is never retried elsewhere.
    primary.then(Act::Fail(400));
    let r = chat(&gw, "nofb.test", &hello()).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(backup.requests(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_stream_that_broke_after_its_first_token_is_not_switched() {
    let (gw, primary, backup) = pair("noswitch", "").await;
    primary.then(Act::DieAfter(2));
    let mut s = Stream::open(&gw, "noswitch.test", &streamed()).await;
    assert_eq!(s.status, 200);
    s.read_all().await.unwrap();
    let a = assemble(&sse_data(&s.text));
    assert_eq!(a.content, "one two", "{}", s.text);
    // The client learns the stream broke: an error event, no [DONE].
    assert!(!a.done, "a cut stream must not look complete: {}", s.text);
    assert_eq!(a.error.unwrap()["code"], "stream_cut");
    assert_eq!(
        metric(
            &gw,
            "sluicegate_ai_streams_cut_total",
            &[("route", "noswitch")]
        )
        .await,
        1.0
    );
    assert_eq!(backup.requests(), 0, "no switch once streaming began");
    gw.shutdown().await;
}

#[tokio::test]
async fn failing_instances_are_set_aside_then_tried_again() {
    let (gw, primary, backup) =
        pair("health", ", health: {failures: 2, ejectionTime: 400ms}").await;
    primary.always(Act::Fail(500));
    for _ in 0..4 {
        assert_eq!(chat(&gw, "health.test", &hello()).await.status, 200);
    }
    assert_eq!(primary.requests(), 2, "set aside after two failures");
    assert_eq!(backup.requests(), 4);
    assert_eq!(
        metric(
            &gw,
            "sluicegate_ai_ejections_total",
            &[("route", "health"), ("instance", "primary")]
        )
        .await,
        1.0
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    primary.always(Act::Answer {
        text: "Hello from the fake",
        tool: None,
    });
    assert_eq!(chat(&gw, "health.test", &hello()).await.status, 200);
    assert_eq!(primary.requests(), 3, "tried again after its ejection");
    assert_eq!(backup.requests(), 4);
    gw.shutdown().await;
}

#[tokio::test]
async fn when_every_instance_fails_the_client_gets_the_last_error() {
    let (gw, primary, backup) = pair("allfail", "").await;
    primary.always(Act::Fail(503));
    backup.always(Act::Fail(529));
    let r = chat(&gw, "allfail.test", &hello()).await;
    assert!(r.status.is_server_error(), "{:?} {}", r.status, r.text());
    assert!(json_of(&r)["error"]["message"].is_string());
    assert_eq!((primary.requests(), backup.requests()), (1, 1));
    gw.shutdown().await;
}

#[tokio::test]
async fn streams_are_relayed_chunk_by_chunk_and_a_leaving_client_cancels_the_call() {
    let (gw, primary, _backup) = pair("gated", "").await;
    primary.then(Act::Gated { words: 50 });
    // The provider's first event (the role) goes at once; the first word
    // waits for a release, and so does each word after it.
    primary.release();
    let mut s = Stream::open(&gw, "gated.test", &streamed()).await;
    assert_eq!(s.status, 200);
    let words = |t: &str| assemble(&sse_data(t)).content.matches("tok").count();
    s.read_until(|t| words(t) == 1).await;
    for n in 2..5 {
        s.read_for(Duration::from_millis(50)).await;
        assert_eq!(words(&s.text), n - 1, "nothing more before a release");
        primary.release();
        s.read_until(|t| words(t) == n).await;
    }
    drop(s);
    for _ in 0..20 {
        primary.release();
    }
    eventually("the provider's stream is cancelled", || {
        primary.release();
        primary.cancelled() == 1
    })
    .await;
    assert_eq!(primary.completed(), 0);
    gw.shutdown().await;
}
