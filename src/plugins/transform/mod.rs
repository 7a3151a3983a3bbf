//! Plugins that change requests and responses, or answer themselves.

pub mod compress;
pub mod respond;
pub mod rewrite;
