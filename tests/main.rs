//! The integration tests, one binary: each module was its own test crate,
//! and linking one binary instead of forty keeps the build small and fast.
//! Run one group with `cargo test --test integration MODULE::`.

mod apiserver;
mod common;

mod ai_gateway;
mod apiserver_selftest;
mod auth;
mod binary;
mod cache;
mod canary;
mod check;
mod client_auth;
mod compression;
mod controller;
mod controller_gateway_api;
mod controller_secrets;
mod controller_tls;
mod crd_schema;
mod dashboard;
mod dns;
mod forward_auth;
mod gateway_api;
mod http3;
mod http_abuse;
mod jwks;
mod manifests;
mod nginx_annotations;
mod observability;
mod proxy_errors;
mod proxy_http1;
mod proxy_routing;
mod proxy_streaming;
mod proxy_upstream;
mod rate_limit;
mod rate_limit_redis;
mod security_plugins;
mod standalone;
mod tls;
mod tls_handshakes;
mod transform_plugins;
mod translate_snapshots;
mod upstream_protocols;
mod upstream_resilience;
