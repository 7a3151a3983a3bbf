//! Building AI routes from their plugin blocks.

use serde_json::json;

use super::*;

const KEY: &str = "sk-test-0123456789abcdef";

fn build_with(plugins: serde_json::Value) -> Result<Option<Arc<AiRoute>>, Vec<ConfigError>> {
    let set: Plugins = serde_json::from_value(plugins).unwrap();
    let secret = |name: &str, key: &str| match (name, key) {
        ("openai", "api-key") => Some(format!("{KEY}\n").into_bytes()),
        ("anthropic", "token") => Some(b"ant-key".to_vec()),
        ("blank", "api-key") => Some(b"  \n".to_vec()),
        _ => None,
    };
    let consumers = |_: &std::collections::BTreeMap<String, String>| Vec::new();
    let env = BuildEnv {
        namespace: "team",
        redis: None,
        secret: &secret,
        consumers: &consumers,
    };
    build(&set, &Owner("apiroute/team/ai/chat".into()), &env)
}

fn errors(plugins: serde_json::Value) -> Vec<String> {
    build_with(plugins)
        .unwrap_err()
        .into_iter()
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn instances_take_their_keys_and_urls() {
    let r = build_with(json!({"aiProxy": {
        "instances": [
            {"name": "primary", "provider": "OpenAI", "apiKeySecretRef": {"name": "openai"}, "model": "gpt-4o-mini", "priority": 10},
            {"name": "backup", "provider": "Anthropic", "apiKeySecretRef": {"name": "anthropic", "key": "token"}},
            {"name": "local", "provider": "OpenAICompatible", "endpoint": "http://ollama.ai.svc:11434/v1/"}
        ],
        "allowedModels": ["gpt-4o-mini"],
        "timeouts": {"firstToken": "5s"},
        "maxRequestBody": "64Ki"
    }}))
    .unwrap()
    .unwrap();
    assert_eq!(r.route.as_ref(), "apiroute/team/ai/chat");
    assert_eq!(r.max_request_body(), 64 * 1024);
    assert_eq!(r.timeouts.first_token, Duration::from_secs(5));
    assert_eq!(r.timeouts.total, DEFAULT_TOTAL);
    assert_eq!(r.max_attempts, 3);
    assert_eq!(r.fallback, 15);
    let [p, b, l] = &r.instances[..] else {
        panic!()
    };
    assert_eq!(p.base, "/v1");
    assert_eq!(p.host.as_ref(), "api.openai.com");
    assert_eq!(b.base, "/v1");
    assert_eq!(b.api_version, "2023-06-01");
    assert_eq!(l.base, "/v1");
    assert!(l.key.is_none());
    let mut h = HeaderMap::new();
    p.key.as_ref().unwrap().apply(&mut h);
    assert_eq!(h["authorization"], format!("Bearer {KEY}").as_str());
    assert!(h["authorization"].is_sensitive());
    b.key.as_ref().unwrap().apply(&mut h);
    assert_eq!(h["x-api-key"], "ant-key");
    // The key never prints.
    let shown = format!("{r:?} {}", r.describe());
    assert!(!shown.contains(KEY), "{shown}");
    assert!(shown.contains("openai"), "Secret names do show");
    assert_eq!(
        p.key
            .as_ref()
            .unwrap()
            .scrub(&format!("Incorrect API key provided: {KEY}.")),
        "Incorrect API key provided: [redacted]."
    );
}

#[test]
fn unusable_settings_name_their_field() {
    let e = errors(json!({"aiProxy": {"instances": [
        {"name": "a", "provider": "OpenAI", "apiKeySecretRef": {"name": "missing"}},
        {"name": "b", "provider": "AzureOpenAI", "apiKeySecretRef": {"name": "openai"}},
        {"name": "c", "provider": "Mistral"},
        {"name": "d", "provider": "OpenAI", "apiKeySecretRef": {"name": "blank"}},
        {"name": "a", "provider": "OpenAI", "apiKeySecretRef": {"name": "openai"}},
        {"name": "e", "provider": "OpenAICompatible", "endpoint": "ftp://x/"}
    ], "timeouts": {"total": "0s"}}}));
    let expect = [
        "aiProxy.instances[0].apiKeySecretRef: Secret team/missing has no api-key value",
        "aiProxy.instances[1].endpoint: provider AzureOpenAI needs an endpoint",
        "aiProxy.instances[2].apiKeySecretRef: provider Mistral needs a key",
        "aiProxy.instances[3].apiKeySecretRef: Secret team/blank value api-key: the value is empty",
        "aiProxy.instances[4].name: duplicate instance name \"a\"",
        "aiProxy.instances[5].endpoint: scheme \"ftp\"",
        "aiProxy.timeouts.total: must be greater than zero",
    ];
    assert_eq!(e.len(), expect.len(), "{e:#?}");
    for (got, want) in e.iter().zip(expect) {
        assert!(got.starts_with(want), "{got} / {want}");
    }
}

#[test]
fn ai_plugins_need_ai_proxy() {
    let e = errors(json!({
        "aiRateLimit": {"limit": 10, "timeWindow": "1m"},
        "aiPromptGuard": {"deny": ["x"]}
    }));
    assert_eq!(e.len(), 2);
    assert!(e[0].starts_with("aiRateLimit: applies to routes with aiProxy"));
    assert!(e[1].starts_with("aiPromptGuard:"));
    assert!(build_with(json!({})).unwrap().is_none());
}

#[test]
fn health_survives_a_new_table_with_the_same_settings() {
    let p = json!({"aiProxy": {"instances": [
        {"name": "a", "provider": "OpenAI", "apiKeySecretRef": {"name": "openai"}}
    ]}});
    let one = build_with(p.clone()).unwrap().unwrap();
    let two = build_with(p).unwrap().unwrap();
    assert!(Arc::ptr_eq(&one.health, &two.health));
}
