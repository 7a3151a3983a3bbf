//! Manifests from arbitrary text: parsing, translation, compiling the
//! table and describing it never panic. Errors are fine; they must come
//! back as errors and diagnostics.
#![no_main]

use http::{HeaderMap, Method};
use libfuzzer_sys::fuzz_target;
use sluicegate::routing::{RequestView, RouteTable, UpstreamRegistry};
use sluicegate::source::manifest;
use sluicegate::translate::{ClusterState, ObjectKey, TranslateOptions, translate};

fuzz_target!(|raw: &[u8]| {
    let text = String::from_utf8_lossy(raw);
    let Ok(parsed) = manifest::parse(&text) else {
        return;
    };
    let mut state = ClusterState::default();
    for o in parsed.objects {
        o.insert_into(&mut state);
    }
    // As deployed by default, or (for odd lengths) claiming every Ingress,
    // with global plugins and a default certificate, so that both class
    // paths and the global plugin merge are reached.
    let opts = if raw.len() % 2 == 0 {
        TranslateOptions::default()
    } else {
        TranslateOptions {
            watch_ingress_without_class: true,
            global_plugins: Some(ObjectKey::new("default", "global")),
            default_certificate: Some(ObjectKey::new("default", "tls")),
            ..TranslateOptions::default()
        }
    };
    let t = translate(&state, &opts);
    // What `/routes` shows.
    let _ = serde_json::to_string(&t);
    for d in t.diagnostics.iter() {
        let _ = d.to_string();
    }
    let table = RouteTable::build(&t.table, &UpstreamRegistry::new());
    let headers = HeaderMap::new();
    for (host, path) in [
        ("shop.example.com", "/"),
        ("a.example.com", "/api/v1"),
        ("", "/x"),
    ] {
        let view = RequestView {
            host,
            path,
            query: Some("a=1"),
            method: &Method::GET,
            headers: &headers,
            port: 0,
        };
        if let Some(route) = table.find(&view) {
            let _ = route.pick();
        }
    }
});
