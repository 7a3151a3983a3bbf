//! Sources collect objects into a `ClusterState`; they never interpret them.
//!
//! Standalone mode reads a directory of manifests ([`standalone`]); the
//! YAML parsing it uses ([`manifest`]) is also how tests build states.

pub mod manifest;
pub mod standalone;
