//! The AI gateway on an HTTPRoute: a PluginConfig with `aiProxy`, attached
//! through an `ExtensionRef`, makes the rule answer from its LLM provider
//! (a fake OpenAI-compatible server here) with no backendRefs, exactly as
//! an ApiRoute route with `aiProxy` does.

use std::sync::{Arc, Mutex};

use http::{Request, Response};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sluicegate::translate::Kind;

use crate::common::{Backend, full, send};
use crate::gateway_api::infra::{INFRA, Infra};

/// What the fake provider received: path, `authorization`, JSON body.
type Seen = Arc<Mutex<Vec<(String, String, Value)>>>;

/// An OpenAI-compatible provider answering every chat completion with
/// "Hello from the fake" and its usage.
async fn provider() -> (Backend, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let b = Backend::start(move |req: Request<hyper::body::Incoming>| {
        let log = log.clone();
        async move {
            let path = req.uri().path().to_owned();
            let auth = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let model = body["model"].clone();
            log.lock().unwrap().push((path, auth, body));
            let answer = json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "Hello from the fake"}}],
                "usage": {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}
            });
            Response::builder()
                .header("content-type", "application/json")
                .body(full(answer.to_string()))
                .unwrap()
        }
    })
    .await;
    (b, seen)
}

fn manifests(provider: &Backend) -> String {
    let ext =
        "{type: ExtensionRef, extensionRef: {group: sluicegate.io, kind: PluginConfig, name: llm}}";
    format!(
        r#"---
apiVersion: v1
kind: Secret
metadata: {{name: llm-key, namespace: {INFRA}}}
stringData: {{api-key: sk-gateway}}
---
apiVersion: sluicegate.io/v1alpha1
kind: PluginConfig
metadata: {{name: llm, namespace: {INFRA}}}
spec:
  plugins:
    aiProxy:
      instances:
      - {{name: local, provider: OpenAICompatible, endpoint: "http://{addr}/v1", model: small-model, apiKeySecretRef: {{name: llm-key}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: llm, namespace: {INFRA}}}
spec:
  parentRefs: [{{name: same-namespace}}]
  hostnames: [ai.example.com]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /v1}}}}]
    filters: [{ext}]
  - matches: [{{path: {{type: PathPrefix, value: /with-backend}}}}]
    filters: [{ext}]
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
"#,
        addr = provider.addr,
    )
}

#[tokio::test]
async fn extension_ref_attaches_ai_proxy_to_an_http_route() {
    let (p, seen) = provider().await;
    let infra = Infra::start(&manifests(&p)).await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], infra.same));
    let req = Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header("host", "ai.example.com")
        .header("content-type", "application/json")
        .header("authorization", "Bearer client-token")
        .body(full(
            json!({"model": "whatever", "messages": [{"role": "user", "content": "hi there"}]})
                .to_string(),
        ))
        .unwrap();
    let r = send(addr, req).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from the fake");
    assert_eq!(v["usage"]["total_tokens"], 6);
    {
        let seen = seen.lock().unwrap();
        let (path, auth, body) = &seen[0];
        assert_eq!(path, "/v1/chat/completions");
        // The gateway's key from the Secret, never the client's token.
        assert_eq!(auth, "Bearer sk-gateway");
        assert_eq!(body["model"], "small-model");
        assert_eq!(body["messages"][0]["content"], "hi there");
    }

    // `/v1/models` lists what the route allows, from the gateway itself.
    let models = infra.get(infra.same, "ai.example.com", "/v1/models").await;
    assert_eq!(models.status, 200, "{}", models.text());
    assert!(models.text().contains("small-model"), "{}", models.text());

    // A rule with aiProxy and backendRefs is dropped with a reason that
    // names the field; the route's other rule keeps serving.
    let dropped = infra
        .get(infra.same, "ai.example.com", "/with-backend")
        .await;
    assert_eq!(dropped.status, 404, "{}", dropped.text());
    let status = infra.status();
    let route = status
        .routes
        .iter()
        .find(|r| r.kind == Kind::HTTPRoute && r.name == "llm")
        .unwrap();
    let text = format!("{:?}", route.parents);
    assert!(
        text.contains("spec.rules[1].backendRefs") && text.contains("aiProxy"),
        "{text}"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
    infra.shutdown().await;
}
