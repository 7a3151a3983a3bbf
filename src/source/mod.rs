//! Sources collect objects into a `ClusterState`; they never interpret them.
//!
//! Kubernetes mode watches the API server ([`kube`]); standalone mode reads a directory of manifests ([`standalone`]); the
//! YAML parsing it uses ([`manifest`]) is also how tests build states.
//! Both modes also run [`dns`], the source of the endpoints of upstreams
//! outside the cluster, which the published tables name. [`health`] paces
//! retries against the API server and reports how the watches are doing.

pub mod dns;
pub mod health;
pub mod kube;
pub mod manifest;
pub mod schema;
pub mod standalone;
