//! Security plugins: who may call, and with what.

pub mod cors;
pub mod ip;
pub mod limits;
