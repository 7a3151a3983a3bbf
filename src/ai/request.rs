//! The client's chat request: its JSON body, kept as a JSON object so
//! that fields the gateway does not know still reach OpenAI-format
//! providers, with the few facts every step needs read once (streaming,
//! whether the client asked for usage, the model), and the typed view the
//! translating providers read, parsed on first use.

use std::sync::OnceLock;

use serde_json::{Map, Value};

use super::error::AiError;
use super::wire::chat::ChatRequest;

/// One chat request.
#[derive(Debug)]
pub struct ChatCall {
    body: Map<String, Value>,
    pub stream: bool,
    /// The client asked for the usage chunk (`stream_options.include_usage`).
    pub client_usage: bool,
    typed: OnceLock<Result<ChatRequest, String>>,
}

impl ChatCall {
    /// Reads a request body; anything but a JSON object with a
    /// `messages` list (or a template to make one from) is refused.
    pub fn parse(body: &[u8]) -> Result<ChatCall, AiError> {
        let body: Value = serde_json::from_slice(body)
            .map_err(|e| AiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
        let Value::Object(map) = body else {
            return Err(AiError::BadRequest("the body must be a JSON object".into()));
        };
        let stream = match map.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(AiError::BadRequest("stream: must be a boolean".into())),
        };
        let client_usage = stream
            && map
                .get("stream_options")
                .and_then(|o| o.get("include_usage"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
        if let Some(m) = map.get("model")
            && !m.is_string()
        {
            return Err(AiError::BadRequest("model: must be a string".into()));
        }
        Ok(ChatCall {
            body: map,
            stream,
            client_usage,
            typed: OnceLock::new(),
        })
    }

    /// The body.
    pub fn object(&self) -> &Map<String, Value> {
        &self.body
    }

    /// The body, for the prompt plugins to change; the typed view is
    /// read again afterwards.
    pub fn object_mut(&mut self) -> &mut Map<String, Value> {
        self.typed = OnceLock::new();
        &mut self.body
    }

    /// The model the client asked for.
    pub fn model(&self) -> Option<&str> {
        self.object().get("model").and_then(Value::as_str)
    }

    /// The messages, once the request is complete (templates filled in).
    pub fn messages(&self) -> Result<&Vec<Value>, AiError> {
        match self.object().get("messages") {
            Some(Value::Array(m)) if !m.is_empty() => Ok(m),
            Some(Value::Array(_)) => Err(AiError::BadRequest("messages: must not be empty".into())),
            Some(_) => Err(AiError::BadRequest("messages: must be a list".into())),
            None => Err(AiError::BadRequest("messages: is required".into())),
        }
    }

    /// The typed request, for providers that translate it.
    pub fn typed(&self) -> Result<&ChatRequest, AiError> {
        self.typed
            .get_or_init(|| ChatRequest::from_value(&self.body).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| AiError::BadRequest(e.clone()))
    }

    /// A rough count of the prompt's tokens (four characters a token),
    /// charged when a stream ends before its provider reported usage.
    pub fn prompt_estimate(&self) -> u64 {
        let chars: usize = self
            .object()
            .get("messages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|m| text_of(m).chars().count())
            .sum();
        (chars as u64).div_ceil(4)
    }
}

/// The text of a message as JSON: its content string, or its text parts
/// joined with a newline.
pub fn text_of(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// A model name usable in a provider's URL: not empty, not a path step.
pub fn check_model(model: &str) -> Result<(), AiError> {
    if model.is_empty() || model == "." || model == ".." || model.len() > 256 {
        return Err(AiError::BadRequest(format!(
            "model: {model:?} is not a model name"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_read_once() {
        let c = ChatCall::parse(
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"abcdefgh"}],"x":1}"#,
        )
        .unwrap();
        assert!(c.stream && c.client_usage);
        assert_eq!(c.model(), Some("m"));
        assert_eq!(c.prompt_estimate(), 2);
        assert_eq!(c.typed().unwrap().messages.len(), 1);
        assert_eq!(c.object()["x"], 1);
        let c = ChatCall::parse(br#"{"messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert!(!c.stream && !c.client_usage);
        assert_eq!(c.model(), None);
    }

    #[test]
    fn bad_bodies_say_why() {
        for (body, why) in [
            (&b"not json"[..], "not valid JSON"),
            (b"[1]", "must be a JSON object"),
            (br#"{"stream":"yes"}"#, "stream: must be a boolean"),
            (br#"{"model":7}"#, "model: must be a string"),
        ] {
            let e = ChatCall::parse(body).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
        let c = ChatCall::parse(br#"{"messages":[]}"#).unwrap();
        assert!(
            c.messages()
                .unwrap_err()
                .to_string()
                .contains("must not be empty")
        );
        let c = ChatCall::parse(br#"{"messages":[{"role":"wizard"}]}"#).unwrap();
        assert!(
            c.typed()
                .unwrap_err()
                .to_string()
                .contains("messages[0].role")
        );
        assert!(check_model("..").is_err());
        assert!(check_model("gpt-4o").is_ok());
    }
}
