//! Matching and precedence cases of the conformance suite: methods, query
//! parameters and the order of path matches.

use crate::gateway_api::infra::{INFRA, Infra, expect_backend};

fn route(name: &str, rules: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {INFRA}}}\nspec:\n  parentRefs: [{{name: same-namespace}}]\n  rules:\n{rules}"
    )
}

fn rule(matches: &str, backend: &str) -> String {
    format!("  - matches: {matches}\n    backendRefs: [{{name: {backend}, port: 8080}}]\n")
}

const V1: &str = "infra-backend-v1";
const V2: &str = "infra-backend-v2";
const V3: &str = "infra-backend-v3";

/// Sends each case; `None` expects 404.
async fn check(infra: &Infra, cases: &[(&str, &str, &[(&str, &str)], Option<&str>)]) {
    for (method, path, headers, want) in cases {
        let r = infra.request(infra.same, method, "x", path, headers).await;
        match want {
            Some(b) => {
                expect_backend(&r, b);
            }
            None => assert_eq!(r.status, 404, "{method} {path} {headers:?}"),
        }
    }
}

#[tokio::test]
async fn http_route_method_matching() {
    let mut rules = String::new();
    rules += &rule("[{method: POST}]", V1);
    rules += &rule("[{method: GET}]", V2);
    rules += &rule(
        "[{path: {type: PathPrefix, value: /path1}, method: GET}]",
        V1,
    );
    rules += &rule(
        "[{headers: [{name: version, value: one}], method: PUT}]",
        V2,
    );
    rules += &rule(
        "[{path: {type: PathPrefix, value: /path2}, headers: [{name: version, value: two}], method: POST}]",
        V3,
    );
    rules += &rule(
        "[{path: {type: PathPrefix, value: /path3}, method: PATCH}, {path: {type: PathPrefix, value: /path4}, headers: [{name: version, value: three}], method: DELETE}]",
        V1,
    );
    rules += &rule("[{path: {type: PathPrefix, value: /path5}}]", V1);
    rules += &rule("[{method: PATCH}]", V2);
    rules += &rule("[{headers: [{name: version, value: four}]}]", V3);
    let infra = Infra::start(&route("method-matching", &rules)).await;
    check(
        &infra,
        &[
            ("POST", "/", &[], Some(V1)),
            ("GET", "/", &[], Some(V2)),
            ("HEAD", "/", &[], None),
            ("GET", "/path1", &[], Some(V1)),
            ("PUT", "/", &[("version", "one")], Some(V2)),
            ("POST", "/path2", &[("version", "two")], Some(V3)),
            ("PATCH", "/path3", &[], Some(V1)),
            ("DELETE", "/path4", &[("version", "three")], Some(V1)),
            ("PUT", "/", &[], None),
            ("DELETE", "/path4", &[], None),
            ("PATCH", "/path5", &[], Some(V1)),
            ("PATCH", "/", &[("version", "four")], Some(V2)),
        ],
    )
    .await;
    infra.shutdown().await;
}

#[tokio::test]
async fn http_route_query_param_matching() {
    let mut rules = String::new();
    rules += &rule("[{queryParams: [{name: animal, value: whale}]}]", V1);
    rules += &rule("[{queryParams: [{name: animal, value: dolphin}]}]", V2);
    rules += &rule(
        "[{queryParams: [{name: animal, value: dolphin}, {name: color, value: blue}]}, {queryParams: [{name: ANIMAL, value: Whale}]}]",
        V3,
    );
    rules += &rule(
        "[{path: {type: PathPrefix, value: /path1}, queryParams: [{name: animal, value: whale}]}]",
        V1,
    );
    rules += &rule(
        "[{headers: [{name: version, value: one}], queryParams: [{name: animal, value: whale}]}]",
        V2,
    );
    rules += &rule(
        "[{path: {type: PathPrefix, value: /path2}, headers: [{name: version, value: two}], queryParams: [{name: animal, value: whale}]}]",
        V3,
    );
    rules += &rule(
        "[{path: {type: PathPrefix, value: /path3}, queryParams: [{name: animal, value: shark}]}, {path: {type: PathPrefix, value: /path4}, headers: [{name: version, value: three}], queryParams: [{name: animal, value: kraken}]}]",
        V1,
    );
    rules += &rule("[{path: {type: PathPrefix, value: /path5}}]", V1);
    rules += &rule("[{queryParams: [{name: animal, value: hydra}]}]", V2);
    rules += &rule("[{headers: [{name: version, value: four}]}]", V3);
    let infra = Infra::start(&route("query-param-matching", &rules)).await;
    check(
        &infra,
        &[
            ("GET", "/?animal=whale", &[], Some(V1)),
            ("GET", "/?animal=dolphin", &[], Some(V2)),
            ("GET", "/?animal=dolphin&color=blue", &[], Some(V3)),
            ("GET", "/?ANIMAL=Whale", &[], Some(V3)),
            ("GET", "/?animal=whale&otherparam=irrelevant", &[], Some(V1)),
            ("GET", "/?animal=dolphin&color=yellow", &[], Some(V2)),
            ("GET", "/?color=blue", &[], None),
            ("GET", "/?animal=dog", &[], None),
            ("GET", "/?animal=whaledolphin", &[], None),
            ("GET", "/", &[], None),
            ("GET", "/path1?animal=whale", &[], Some(V1)),
            ("GET", "/?animal=whale", &[("version", "one")], Some(V2)),
            (
                "GET",
                "/path2?animal=whale",
                &[("version", "two")],
                Some(V3),
            ),
            ("GET", "/path3?animal=shark", &[], Some(V1)),
            (
                "GET",
                "/path4?animal=kraken",
                &[("version", "three")],
                Some(V1),
            ),
            ("GET", "/?animal=shark", &[], None),
            ("GET", "/path4?animal=kraken", &[], None),
            ("GET", "/path5?animal=hydra", &[], Some(V1)),
            ("GET", "/?animal=hydra", &[("version", "four")], Some(V3)),
        ],
    )
    .await;
    infra.shutdown().await;
}

#[tokio::test]
async fn http_route_path_match_order() {
    let mut rules = String::new();
    rules += &rule("[{path: {type: Exact, value: /match}}]", V1);
    rules += &rule("[{path: {type: Exact, value: /match/exact}}]", V2);
    rules += &rule("[{path: {type: Exact, value: /match/exact/one}}]", V3);
    rules += &rule("[{path: {type: PathPrefix, value: /match/}}]", V3);
    rules += &rule("[{path: {type: PathPrefix, value: /match/prefix/}}]", V1);
    rules += &rule("[{path: {type: PathPrefix, value: /match/prefix/one}}]", V2);
    let infra = Infra::start(&route("path-matching-order", &rules)).await;
    check(
        &infra,
        &[
            ("GET", "/match/exact/one", &[], Some(V3)),
            ("GET", "/match/exact", &[], Some(V2)),
            ("GET", "/match", &[], Some(V1)),
            ("GET", "/match/prefix/one/any", &[], Some(V2)),
            ("GET", "/match/prefix/any", &[], Some(V1)),
            ("GET", "/match/any", &[], Some(V3)),
        ],
    )
    .await;
    infra.shutdown().await;
}
