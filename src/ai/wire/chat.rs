//! The OpenAI Chat Completions request as the translating providers
//! read it: the fields that have a counterpart elsewhere, typed, so that
//! a malformed one is refused with its path (`messages[2].content`) and
//! each translator matches on meanings rather than on JSON.
//!
//! Fields without a counterpart are not read here; each translator says
//! which ones it refuses rather than drop silently (`n` above 1, say).

use serde::Deserialize;
use serde_json::Value;

use crate::ai::error::AiError;

/// A chat request.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    #[serde(default)]
    pub messages: Vec<Message>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub tools: Option<Vec<Tool>>,
    #[serde(default)]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    #[serde(default)]
    pub user: Option<String>,
}

impl ChatRequest {
    /// Reads the typed view of a request body.
    pub fn from_value(body: &serde_json::Map<String, Value>) -> Result<ChatRequest, AiError> {
        use serde::de::IntoDeserializer;
        serde_path_to_error::deserialize(body.into_deserializer())
            .map_err(|e| AiError::BadRequest(format!("{}: {}", e.path(), e.inner())))
    }

    /// The completion limit, whichever name the client used.
    pub fn max_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// Stop sequences as a list.
    pub fn stop_sequences(&self) -> Vec<String> {
        match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        }
    }

    /// The request asks for several choices, which only OpenAI-format
    /// providers give.
    pub fn refuse_n(&self, provider: &str) -> Result<(), AiError> {
        match self.n {
            Some(n) if n > 1 => Err(AiError::BadRequest(format!(
                "n above 1 is not supported by {provider}"
            ))),
            _ => Ok(()),
        }
    }
}

/// `stop`: one sequence or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// Message roles.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    /// OpenAI's newer name for system instructions.
    Developer,
    User,
    Assistant,
    Tool,
}

/// One message.
#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: Role,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

impl Message {
    /// The text of the message, parts joined.
    pub fn text(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(c) => c.text(),
        }
    }
}

/// A message's content: text, or parts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

impl Content {
    /// The text parts, joined with a newline.
    pub fn text(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => {
                let texts: Vec<&str> = parts
                    .iter()
                    .filter_map(|p| match p {
                        Part::Text { text } => Some(text.as_str()),
                        _ => None,
                    })
                    .collect();
                texts.join("\n")
            }
        }
    }
}

/// A content part.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    Text { text: String },
    ImageUrl { image_url: ImageUrl },
}

/// An image given by URL, or inline as a `data:` URL.
#[derive(Debug, Deserialize)]
pub struct ImageUrl {
    pub url: String,
}

impl ImageUrl {
    /// `(media type, base64 data)` of a `data:` URL.
    pub fn inline(&self) -> Option<(&str, &str)> {
        let rest = self.url.strip_prefix("data:")?;
        let (meta, data) = rest.split_once(',')?;
        let media = meta.strip_suffix(";base64")?;
        Some((media, data))
    }
}

/// A tool call the assistant made.
#[derive(Debug, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub function: FunctionCall,
}

/// The function a tool call names, with its arguments as JSON text.
#[derive(Debug, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

impl FunctionCall {
    /// The arguments as a JSON object (providers that take objects); text
    /// that is not one is refused.
    pub fn arguments_object(&self) -> Result<Value, AiError> {
        if self.arguments.trim().is_empty() {
            return Ok(Value::Object(Default::default()));
        }
        match serde_json::from_str::<Value>(&self.arguments) {
            Ok(v @ Value::Object(_)) => Ok(v),
            _ => Err(AiError::BadRequest(format!(
                "the arguments of tool call to {:?} are not a JSON object",
                self.name
            ))),
        }
    }
}

/// A tool the model may call.
#[derive(Debug, Deserialize)]
pub struct Tool {
    #[serde(rename = "type", default = "function")]
    pub kind: String,
    pub function: FunctionDef,
}

fn function() -> String {
    "function".into()
}

/// A function tool's declaration.
#[derive(Debug, Deserialize)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Option<Value>,
}

/// `tool_choice`: a mode, or one named function.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    Mode(String),
    Named { function: NamedFunction },
}

/// The function a `tool_choice` names.
#[derive(Debug, Deserialize)]
pub struct NamedFunction {
    pub name: String,
}

/// What the answer must look like.
#[derive(Debug, Deserialize)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub json_schema: Option<JsonSchema>,
}

/// A `json_schema` response format.
#[derive(Debug, Deserialize)]
pub struct JsonSchema {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub schema: Option<Value>,
}

/// OpenAI's finish reasons, from the translating providers' own.
pub mod finish {
    pub const STOP: &str = "stop";
    pub const LENGTH: &str = "length";
    pub const TOOL_CALLS: &str = "tool_calls";
    pub const CONTENT_FILTER: &str = "content_filter";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<ChatRequest, AiError> {
        ChatRequest::from_value(v.as_object().unwrap())
    }

    #[test]
    fn requests_read_with_their_variants() {
        let r = parse(serde_json::json!({
            "model": "m",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}
                ]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"}
            ],
            "stop": "END",
            "max_completion_tokens": 50,
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "unknown_field": true
        }))
        .unwrap();
        assert_eq!(r.messages.len(), 4);
        assert_eq!(r.messages[0].role, Role::Developer);
        assert_eq!(r.messages[1].text(), "what is this");
        let Some(Content::Parts(parts)) = &r.messages[1].content else {
            panic!()
        };
        let Part::ImageUrl { image_url } = &parts[1] else {
            panic!()
        };
        assert_eq!(image_url.inline(), Some(("image/png", "AAAA")));
        let call = &r.messages[2].tool_calls.as_ref().unwrap()[0];
        assert_eq!(call.function.arguments_object().unwrap()["a"], 1);
        assert_eq!(r.stop_sequences(), ["END"]);
        assert_eq!(r.max_tokens(), Some(50));
        assert!(matches!(r.tool_choice, Some(ToolChoice::Named { .. })));
    }

    #[test]
    fn malformed_fields_are_named() {
        let e = parse(serde_json::json!({"messages": [{"role": "user"}, {"role": "robot"}]}))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("messages[1].role"), "{e}");
        let e = parse(serde_json::json!({"messages": [], "temperature": "hot"}))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("temperature"), "{e}");
    }
}
