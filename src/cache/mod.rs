//! The proxy cache: RFC 9111 caching of upstream responses for routes
//! with a `proxyCache` block, in memory, on disk, in Redis or in
//! Memcached.
//!
//! This module holds what does not depend on the proxy: the route's
//! compiled settings ([`rule`]), keys ([`key`], [`template`]), the stored
//! form of responses ([`entry`]), the RFC 9111 and RFC 5861 decisions
//! ([`freshness`], [`conditional`]), request coalescing ([`flight`]), the
//! storages ([`store`]), tag purges ([`purge`], [`bus`]) and the
//! `Cache-Status` field ([`status`]). The request pipeline's cache stage
//! (`proxy::forward::cache`) puts them together, and the proxy's body
//! wrappers stream stored and shared bodies.

pub mod bus;
pub mod conditional;
pub mod entry;
pub mod flight;
pub mod freshness;
pub mod key;
pub mod purge;
pub mod rule;
pub mod status;
pub mod store;
pub mod template;

pub use rule::{Available, CacheRule, Storage};
pub use store::{StoreSettings, Stores};
