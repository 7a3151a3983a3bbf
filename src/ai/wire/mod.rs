//! The providers' wire formats, both ways: each provider's request body
//! for a chat request in OpenAI's format, and how each provider's
//! answer, whole or streamed, becomes OpenAI's again.
//!
//! - [`openai`]: OpenAI, Azure OpenAI, Mistral, OpenAI-compatible servers;
//! - [`anthropic`]: Anthropic Messages;
//! - [`gemini`]: Google Gemini;
//! - [`chat`]: the typed request the translators read;
//! - [`emit`]: the OpenAI chunks every streamed answer is written as;
//! - [`messages`] and [`messages_stream`]: the Anthropic Messages front
//!   door, which clients of Anthropic's API call.

pub mod anthropic;
pub mod chat;
pub mod emit;
pub mod gemini;
pub mod messages;
pub mod messages_stream;
pub mod openai;

use bytes::Bytes;

use super::error::AiError;
use super::sse;
use crate::api::AiProvider;
use crate::plugins::TokenUsage;
use emit::Emitter;
pub use openai::Flavor;

/// A provider's wire format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    OpenAi(Flavor),
    Anthropic,
    Gemini,
}

impl Wire {
    pub fn of(p: AiProvider) -> Wire {
        match p {
            AiProvider::OpenAI => Wire::OpenAi(Flavor::OpenAi),
            AiProvider::AzureOpenAI => Wire::OpenAi(Flavor::Azure),
            AiProvider::Mistral => Wire::OpenAi(Flavor::Mistral),
            AiProvider::OpenAICompatible => Wire::OpenAi(Flavor::Compatible),
            AiProvider::Anthropic => Wire::Anthropic,
            AiProvider::Gemini => Wire::Gemini,
        }
    }
}

/// The provider's base URL when the instance names none.
pub fn default_endpoint(p: AiProvider) -> Option<&'static str> {
    match p {
        AiProvider::OpenAI => Some("https://api.openai.com/v1"),
        AiProvider::Anthropic => Some("https://api.anthropic.com/v1"),
        AiProvider::Gemini => Some("https://generativelanguage.googleapis.com/v1beta"),
        AiProvider::Mistral => Some("https://api.mistral.ai/v1"),
        AiProvider::AzureOpenAI | AiProvider::OpenAICompatible => None,
    }
}

/// The `gen_ai.provider.name` of OpenTelemetry's conventions.
pub fn provider_name(p: AiProvider) -> &'static str {
    match p {
        AiProvider::OpenAI | AiProvider::OpenAICompatible => "openai",
        AiProvider::Anthropic => "anthropic",
        AiProvider::Gemini => "gcp.gemini",
        AiProvider::Mistral => "mistral_ai",
        AiProvider::AzureOpenAI => "azure.ai.openai",
    }
}

/// Percent-encodes all but RFC 3986's unreserved characters, so that a
/// model name cannot add path segments or a query.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads a streamed answer, writing OpenAI chunks.
#[derive(Debug)]
pub enum Decoder {
    OpenAi(openai::Chunks),
    Anthropic(anthropic::Events),
    Gemini(gemini::Events),
}

impl Decoder {
    pub fn new(wire: Wire, client_usage: bool) -> Decoder {
        match wire {
            Wire::OpenAi(_) => Decoder::OpenAi(openai::Chunks::new(client_usage)),
            Wire::Anthropic => Decoder::Anthropic(anthropic::Events::new()),
            Wire::Gemini => Decoder::Gemini(gemini::Events::new()),
        }
    }

    /// One event; an event that cannot be read ends the stream.
    pub fn event(&mut self, ev: &sse::Event, em: &mut Emitter) -> Result<(), String> {
        match self {
            Decoder::OpenAi(d) => d.event(&ev.data, em),
            Decoder::Anthropic(d) => d.event(&ev.data, em),
            Decoder::Gemini(d) => d.event(&ev.data, em),
        }
    }

    /// The provider's stream ended: whether it ended as its format says
    /// a complete answer ends.
    pub fn end(&mut self, em: &mut Emitter) -> bool {
        match self {
            Decoder::OpenAi(d) => d.end(em),
            Decoder::Anthropic(d) => d.end(em),
            Decoder::Gemini(d) => d.end(em),
        }
    }
}

/// A whole answer in OpenAI's format, and its usage.
pub fn complete(wire: Wire, body: &[u8]) -> Result<(Bytes, Option<TokenUsage>), AiError> {
    match wire {
        Wire::OpenAi(_) => openai::complete(body),
        Wire::Anthropic => anthropic::complete(body).map(|(v, u)| (Bytes::from(v.to_string()), u)),
        Wire::Gemini => gemini::complete(body).map(|(v, u)| (Bytes::from(v.to_string()), u)),
    }
}

/// The provider's complaint in an error body, if it can be read.
pub fn error_message(wire: Wire, body: &[u8]) -> Option<String> {
    match wire {
        Wire::OpenAi(_) => openai::error_message(body),
        Wire::Anthropic => anthropic::error_message(body),
        Wire::Gemini => gemini::error_message(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_paths_are_encoded() {
        assert_eq!(encode("gemini-2.5-flash"), "gemini-2.5-flash");
        assert_eq!(encode("../x?y=1"), "..%2Fx%3Fy%3D1");
    }
}
