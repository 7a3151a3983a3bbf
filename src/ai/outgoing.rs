//! What one attempt on an instance sends: the path below the instance's
//! base URL (model and API version in it where the provider wants them)
//! and the body in the provider's format.

use bytes::Bytes;

use super::error::AiError;
use super::request::ChatCall;
use super::wire::{Flavor, Wire, anthropic, encode, gemini, openai};

/// Where an attempt goes below the instance's base URL, and what it
/// sends.
#[derive(Debug)]
pub struct Outgoing {
    pub path: String,
    pub body: Bytes,
}

/// What the instance's settings add to a request.
#[derive(Clone, Copy, Debug)]
pub struct Settings<'a> {
    /// The base URL's path, without a trailing `/`.
    pub base: &'a str,
    pub api_version: &'a str,
    pub default_max_tokens: u32,
}

/// The request of one attempt on an instance speaking `wire`.
pub fn request(
    wire: Wire,
    call: &ChatCall,
    model: &str,
    s: Settings<'_>,
) -> Result<Outgoing, AiError> {
    let base = s.base;
    Ok(match wire {
        Wire::OpenAi(flavor) => {
            let path = match flavor {
                Flavor::Azure => format!(
                    "{base}/openai/deployments/{}/chat/completions?api-version={}",
                    encode(model),
                    encode(s.api_version)
                ),
                _ => format!("{base}/chat/completions"),
            };
            let body =
                openai::request_body(flavor, call.object(), model, call.stream, call.client_usage);
            Outgoing { path, body }
        }
        Wire::Anthropic => {
            let body =
                anthropic::request_body(call.typed()?, model, call.stream, s.default_max_tokens)?;
            Outgoing {
                path: format!("{base}/messages"),
                body: Bytes::from(body.to_string()),
            }
        }
        Wire::Gemini => {
            let model = model.strip_prefix("models/").unwrap_or(model);
            let method = if call.stream {
                "streamGenerateContent?alt=sse"
            } else {
                "generateContent"
            };
            let body = gemini::request_body(call.typed()?)?;
            Outgoing {
                path: format!("{base}/models/{}:{method}", encode(model)),
                body: Bytes::from(body.to_string()),
            }
        }
    })
}
