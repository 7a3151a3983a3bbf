//! Token budgets (one budget across two gateways sharing a real Redis)
//! and the prompt plugins: decorator, templates, guard.

use std::process::{Child, Command, Stdio};

use serde_json::json;

use super::*;

/// A `redis-server` on a free loopback port; killed when dropped.
struct Redis {
    port: u16,
    child: Child,
}

impl Redis {
    async fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install -y redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Redis { port, child }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn token_budgets_are_shared_by_two_gateways_through_redis() {
    let redis = Redis::start().await;
    let f = Fake::start(Api::OpenAi, "sk").await;
    let m = secret("k", "sk")
        + &ai_route(
            "budget",
            &format!(
                "{{aiProxy: {{instances: [{}]}}, aiRateLimit: {{limit: 10, timeWindow: 1h, policy: Redis, redis: {{url: \"redis://127.0.0.1:{}\"}}}}}}",
                instance("only", "OpenAI", &f, "k", ""),
                redis.port
            ),
        );
    let one = TestGateway::start(&m).await;
    let two = TestGateway::start(&m).await;
    // Each answer costs 2 prompt + 4 completion tokens: the first leaves
    // 4 of 10, the second is admitted (budget remains) and spends it.
    let r = chat(&one, "budget.test", &hello()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-ratelimit-limit-tokens"), Some("10"));
    eventually_budget(&two, 4).await;
    let r = chat(&two, "budget.test", &hello()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The second answer's charge lands once it ended; a request asked
    // before that is still admitted, so the test waits for it to show.
    eventually_budget(&one, 0).await;
    let r = chat(&one, "budget.test", &hello()).await;
    assert_eq!(
        r.status,
        429,
        "the budget spent on the other gateway refuses here: {}",
        r.text()
    );
    assert_eq!(r.header("x-ratelimit-remaining-tokens"), Some("0"));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");
    assert_eq!(json_of(&r)["error"]["code"], "rate_limit_exceeded");
    assert_eq!(
        f.requests(),
        2,
        "a refused request never reaches the provider"
    );
    one.shutdown().await;
    two.shutdown().await;
}

/// Waits until `gw`'s budget shows `remaining` tokens: the charge of an
/// answer lands once the answer ended. The probe is a request the route
/// refuses before any provider call (a disallowed method), which still
/// runs the budget and shows its headers.
async fn eventually_budget(gw: &TestGateway, remaining: u64) {
    let want = remaining.to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = get(gw.http(), "budget.test", "/v1/models").await;
        if r.header("x-ratelimit-remaining-tokens") == Some(want.as_str()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "budget not {remaining}: {:?}",
            r.header("x-ratelimit-remaining-tokens")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_guard_refuses_before_any_provider_call() {
    let (gw, f) = one_openai(
        "guard",
        r#"}, aiPromptGuard: {deny: ["(?i)password"], allow: ["(?i)weather|hi"]"#,
    )
    .await;
    let ask = |text: &str| json!({"model": "m", "messages": [{"role": "user", "content": text}]});
    let r = chat(&gw, "guard.test", &ask("tell me the admin PASSWORD")).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        json_of(&r)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not allowed")
    );
    let r = chat(&gw, "guard.test", &ask("write a poem")).await;
    assert_eq!(r.status, 400, "not in the allow list: {}", r.text());
    assert_eq!(f.requests(), 0);
    assert_eq!(
        chat(&gw, "guard.test", &ask("weather today?")).await.status,
        200
    );
    assert_eq!(f.requests(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn decorators_and_templates_shape_what_the_provider_gets() {
    let (gw, f) = one_openai(
        "prompts",
        r#"}, aiPromptDecorator: {prepend: [{role: system, content: "Answer in French."}], append: [{role: user, content: "Be brief."}]}, aiPromptTemplate: {templates: [{name: summarize, messages: [{role: user, content: "Summarize for {{audience}}: {{text}}"}]}]"#,
    )
    .await;
    let r = chat(&gw, "prompts.test", &hello()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        f.seen()[0].body["messages"],
        json!([
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "hi there"},
            {"role": "user", "content": "Be brief."}
        ])
    );
    let r = chat(
        &gw,
        "prompts.test",
        &json!({"model": "m", "template": "summarize", "variables": {"audience": "kids", "text": "the moon"}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = &f.seen()[1].body;
    assert_eq!(
        sent["messages"][1],
        json!({"role": "user", "content": "Summarize for kids: the moon"})
    );
    assert!(
        sent.get("template").is_none() && sent.get("variables").is_none(),
        "{sent}"
    );
    let r = chat(
        &gw,
        "prompts.test",
        &json!({"model": "m", "template": "nope", "variables": {}}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = chat(
        &gw,
        "prompts.test",
        &json!({"model": "m", "template": "summarize", "variables": {"text": "x"}}),
    )
    .await;
    assert_eq!(r.status, 400, "a missing variable: {}", r.text());
    assert_eq!(f.requests(), 2);
    gw.shutdown().await;
}
