//! The compiled route table and the upstreams it forwards to.
//!
//! Nothing here knows about Kubernetes or the network: a [`TableSpec`] goes
//! in, a [`RouteTable`] comes out, and the proxy asks it for a route.

mod explain;
mod listeners;
mod matcher;
mod path;
mod pick;
mod protocol;
mod resilience;
mod router;
mod spec;
mod table;
#[cfg(test)]
mod tests;
mod tickets;
mod tls;
mod upstream;

pub use explain::{Candidate, Explanation, Outcome};
pub use matcher::{RequestView, form_decode, normalize_host};
pub use path::{EncodedSlashes, PathError, normalize_path};
pub use pick::{RequestKeys, cookie_value};
pub use protocol::{BackendProtocol, Protocol, UpstreamTls};
pub use resilience::*;
pub use spec::*;
pub use table::{Backend, Mirror, Route, RouteCache, RouteTable};
pub use tickets::{DATA_PREFIX as TICKET_KEY_PREFIX, KEY_LEN as TICKET_KEY_LEN};
pub use tickets::{TicketKeyMaterial, TicketKeySet, TicketKeySummary, plan as plan_ticket_keys};
pub use tls::{CertStore, ClientAuth, TlsCertificate};
pub use upstream::{
    EndpointSet, EndpointState, InFlight, PickInput, Upstream, UpstreamRegistry, clock_ns,
    hash_bytes,
};
