//! HTTP/1.1 on the wire, and the one client every outbound call uses.
//!
//! This module knows nothing of routes, plugins or Kubernetes: it is the
//! layer under both the proxy (which serves clients and forwards to
//! endpoints) and the plugins that call out (forwardAuth, JWKS), so that
//! each of them speaks HTTP through the same code with the same rules.
//!
//! Layers, bottom up; each uses only those before it:
//! - [`io`] and [`timer`]: reading sockets into buffers without wasted
//!   system calls, and deadlines that cost no timer operation per request;
//! - [`wire`]: the codec, shared by the server and the client role: one
//!   head parser per direction, one chunked codec, one table of limits,
//!   one error type;
//! - [`dns`]: the one resolver for names, owned by one task and asked
//!   from any runtime;
//! - [`client`]: connections to upstreams, pooled per worker, the own
//!   HTTP/1.1 exchange, hyper for TLS and HTTP/2 backends, and
//!   [`client::fetch`] for the gateway's own requests.

pub mod client;
pub mod dns;
pub mod io;
pub mod timer;
pub mod wire;
