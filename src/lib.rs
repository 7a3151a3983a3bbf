//! Sluicegate: a Kubernetes ingress controller and API gateway.
//!
//! Data flows one way: sources collect objects into a [`translate::ClusterState`],
//! [`translate::translate`] compiles them into a table specification plus
//! per-object diagnostics, [`routing`] builds an immutable route table from it,
//! and the [`proxy`] serves each request from one snapshot of that table.

pub mod admin;
pub mod ai;
pub mod api;
pub mod boxed;
pub mod cache;
pub mod cgroup;
pub mod check;
pub mod cli;
pub mod controller;
pub mod crypto;
pub mod demo;
pub mod gateway;
pub mod http;
pub mod memory;
pub mod metrics;
pub mod plugins;
pub mod proxy;
pub mod publish;
pub mod routing;
pub mod source;
pub mod status;
pub mod telemetry;
pub mod translate;
pub(crate) mod x509;
