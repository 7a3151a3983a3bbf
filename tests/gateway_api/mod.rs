//! The Gateway API through the real proxy, in standalone mode: the core
//! HTTPRoute and GRPCRoute cases of the Gateway API conformance suite
//! re-expressed as Rust tests (each named after the suite's test), and
//! what Sluicegate adds: ports opened while serving, plugins through
//! `ExtensionRef`, mirrors. Backends are real servers on loopback that
//! echo what they received.

// The case tables read best written out inline, types and all.
#![allow(clippy::type_complexity)]

mod ai;
mod filters;
mod grpcroute;
mod httproute;
mod infra;
mod listeners;
mod precedence;
