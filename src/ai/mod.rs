//! The AI gateway: routes whose `aiProxy` plugin answers OpenAI-style
//! chat requests from LLM providers instead of forwarding to Services.
//!
//! A route with `aiProxy` is compiled into an [`AiRoute`] by
//! translation (its instances, keys from Secrets, prompt plugins); the
//! proxy runs the route's ordinary plugins (authentication, `aiRateLimit`
//! and the other limits, CORS), reads the request body within
//! `maxRequestBody`, and hands the request to [`AiRoute::serve`], whose
//! answer body streams back through the proxy like an upstream's. This
//! module knows nothing of the proxy: it speaks HTTP to providers through
//! [`crate::http::client::fetch`].
//!
//! Layers, each using only those before it:
//! - [`error`] and [`sse`]: the one error type with its mapping to the
//!   client's answer, and the event-stream codec;
//! - [`wire`]: each provider's format, both ways, streams included;
//! - [`request`] and [`prompt`]: the client's request and the prompt
//!   plugins that change or refuse it;
//! - [`outgoing`]: what one attempt on an instance sends;
//! - [`select`]: instance order and passive health;
//! - [`config`]: the route as built from its plugin block;
//! - [`answer`] and [`facts`]: answer bodies with their accounting, and
//!   what a request's log line and spans learn;
//! - [`serve`]: the front door, fallback between instances.

pub mod answer;
pub mod config;
pub mod error;
pub mod facts;
pub mod outgoing;
pub mod prompt;
pub mod request;
pub mod select;
pub mod serve;
pub mod sse;
pub mod wire;

pub use answer::AiBody;
pub use config::{AiRoute, build};
pub use facts::Facts;
pub use serve::Call;
