//! Sources collect objects into a `ClusterState`; they never interpret them.
//!
//! Kubernetes mode watches the API server ([`kube`]); standalone mode reads a directory of manifests ([`standalone`]); the
//! YAML parsing it uses ([`manifest`]) is also how tests build states.

pub mod kube;
pub mod manifest;
pub mod standalone;
