//! The data plane: the reverse proxy that serves clients and forwards to
//! endpoints.
//!
//! Per request the proxy loads one snapshot of the route table, clones the
//! matched route out of it (so that a table swap never affects a request in
//! flight), picks an endpoint and forwards on a pooled keep-alive
//! connection, streaming bodies both ways without buffering them.
//!
//! Layers, each using only those below it (the wire codec and the
//! upstream client, shared with the plugins that call out, are in
//! [`crate::http`]):
//! - `listener`: sockets, worker threads, TLS handshakes, protocol
//!   choice, shutdown;
//! - `forward`: the request pipeline (host and path rules, route,
//!   plugins, attempts and retries; `forward::Worker::handle` is its map);
//! - `body`: the response and request body wrappers, one file each;
//! - `server`: the downstream side, the own HTTP/1.1 engine on every
//!   listener, hyper's HTTP/2 and h3's HTTP/3 under the proxy's timeouts;
//! - `quic`: the QUIC endpoint HTTP/3 runs on (`--http3`);
//! - `error` and `settings`: the one error type with its one mapping to a
//!   status, and the settings every layer reads.
//!
//! The rules enforced at the edge are written down in docs/security.md.

mod body;
mod error;
mod forward;
mod health;
mod listener;
mod quic;
mod server;
mod settings;
mod tls;

pub use body::ResponseBody;
pub use error::ProxyError;
pub use forward::{OwnAnswer, Shared};
pub use health::HealthChecks;
pub use listener::{Ports, ProxyServer};
pub use settings::{Http2Settings, Http3Settings, ProxySettings, TlsSettings};
pub use tls::{TlsSetupError, self_signed};
