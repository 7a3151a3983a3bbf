//! Typed settings of the AI gateway plugins: `aiProxy` (a route that
//! answers from LLM providers instead of Services), the token budgets of
//! `aiRateLimit`, and the prompt plugins that shape or guard what reaches
//! a provider.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::common::{ByteSize, Duration};
use super::plugins_limit::{LimitCommon, RateLimitKey, WindowType};

/// Answer OpenAI-style chat requests from LLM providers, with fallback
/// between instances, keys from Secrets and token accounting. A route
/// with `aiProxy` needs no backends.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AiProxy {
    /// Provider instances, tried by descending priority; instances of
    /// equal priority share requests by weight. Names are unique.
    #[schemars(length(min = 1, max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub instances: Vec<AiInstance>,
    /// Models clients may ask for; a request naming another is refused
    /// with 400. Empty: any model. `GET .../models` lists these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 256)))]
    pub allowed_models: Vec<String>,
    /// Failures after which the next instance is tried, as long as
    /// nothing was sent to the client yet. Default: all four.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4))]
    pub fallback_on: Option<Vec<AiFallbackCondition>>,
    /// Most instances tried for one request (default: every instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16))]
    pub max_attempts: Option<u32>,
    /// Time limits of each provider call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<AiTimeouts>,
    /// Largest request body accepted (default 1Mi); larger ones get 413.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_body: Option<ByteSize>,
    /// `max_tokens` sent to providers that require one (Anthropic) when
    /// the client gave none (default 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub default_max_tokens: Option<u32>,
    /// Passive health: when an instance is set aside after failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<AiHealth>,
}

/// One provider account: a provider, where it is reached, its key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AiInstance {
    /// Name, unique within the route; used in metrics and logs.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The provider's API.
    pub provider: AiProvider,
    /// Base URL of the API, replacing the provider's (`https://api.openai.com/v1`,
    /// `https://api.anthropic.com/v1`, `https://api.mistral.ai/v1`,
    /// `https://generativelanguage.googleapis.com/v1beta`). Required for
    /// AzureOpenAI (`https://RESOURCE.openai.azure.com`) and
    /// OpenAICompatible (`http://ollama:11434/v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub endpoint: Option<String>,
    /// The Secret value holding the API key. Required except for
    /// OpenAICompatible servers without authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,
    /// The model every request to this instance uses, whatever the client
    /// asked for (for AzureOpenAI: the deployment). Without it the
    /// client's model is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub model: Option<String>,
    /// Higher priorities are tried first (default 0).
    #[serde(default)]
    pub priority: i32,
    /// Share of requests among instances of equal priority (default 1).
    #[serde(default = "default_weight")]
    #[schemars(range(min = 1, max = 1000))]
    pub weight: u32,
    /// AzureOpenAI's `api-version` (default 2024-10-21); Anthropic's
    /// `anthropic-version` (default 2023-06-01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub api_version: Option<String>,
    /// A Secret in this namespace whose `ca.crt` verifies an `https://`
    /// endpoint; without it the system's CA certificates do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<super::LocalObjectRef>,
}

fn default_weight() -> u32 {
    1
}

/// A value of a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key of the value in the Secret (default `api-key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,
}

/// LLM provider APIs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum AiProvider {
    /// OpenAI Chat Completions.
    OpenAI,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini `generateContent`.
    Gemini,
    /// Mistral's chat completions.
    Mistral,
    /// Azure OpenAI deployments.
    AzureOpenAI,
    /// Any server speaking OpenAI Chat Completions (Ollama, vLLM,
    /// llama.cpp, ...).
    OpenAICompatible,
}

/// Failures that move a request to the next instance.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum AiFallbackCondition {
    /// The provider answered 429.
    RateLimited,
    /// The provider answered 5xx, or its stream ended before a token.
    ServerError,
    /// No answer (or no first token) in time.
    Timeout,
    /// The provider could not be reached.
    ConnectFailure,
}

/// Time limits of a provider call.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AiTimeouts {
    /// To open a connection (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<Duration>,
    /// From sending the request to the first token of a stream, or to the
    /// whole answer of a request that does not stream (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_token: Option<Duration>,
    /// For the whole request, fallbacks and streaming included (default
    /// 300s); a stream still running then is ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<Duration>,
}

/// Passive health of instances.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AiHealth {
    /// Consecutive failures that set an instance aside (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub failures: Option<u32>,
    /// How long the first time (default 10s); doubled at each ejection
    /// in a row, up to 5 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ejection_time: Option<Duration>,
}

/// Token budgets per key (a consumer, an address...) per window, on
/// routes with `aiProxy`. A request is admitted while its key has budget
/// left, and charged with the tokens it actually used once answered.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AiRateLimit {
    /// Tokens allowed per window.
    #[schemars(range(min = 1))]
    pub limit: u64,
    /// Window length, e.g. `1m`, `1h`.
    pub time_window: Duration,
    /// `Fixed` windows (the default) or a `Sliding` estimate.
    #[serde(default)]
    pub window_type: WindowType,
    /// The tokens counted: `Total` (default), `Prompt` or `Completion`.
    #[serde(default)]
    pub tokens: AiTokenType,
    /// What has a budget of its own. Default: the client address; use
    /// `Consumer` with an authentication plugin.
    #[serde(default)]
    pub key: RateLimitKey,
    #[serde(flatten)]
    pub common: LimitCommon,
}

/// Which tokens a budget counts.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum AiTokenType {
    #[default]
    Total,
    Prompt,
    Completion,
}

/// Messages added around the client's before the request reaches a
/// provider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AiPromptDecorator {
    /// Put before the client's messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub prepend: Vec<AiMessage>,
    /// Put after the client's messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub append: Vec<AiMessage>,
}

/// A chat message set in configuration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AiMessage {
    /// `system`, `user` or `assistant`.
    pub role: AiRole,
    /// The text; in a template, `{{name}}` is replaced by the request's
    /// variable `name`.
    #[schemars(length(max = 65536))]
    pub content: String,
}

/// Roles of configured messages.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AiRole {
    System,
    User,
    Assistant,
}

/// Named prompts a request fills in: a request carrying `"template":
/// NAME` and `"variables": {...}` instead of `messages` gets the
/// template's messages with `{{variable}}` replaced.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AiPromptTemplate {
    /// The templates; names are unique.
    #[schemars(length(min = 1, max = 32))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub templates: Vec<AiTemplate>,
}

/// One prompt template.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AiTemplate {
    /// What requests name it by.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The messages, with `{{variable}}` placeholders.
    #[schemars(length(min = 1, max = 32))]
    pub messages: Vec<AiMessage>,
}

/// Refuse requests whose user messages match (or fail to match) regular
/// expressions, before any provider is called.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AiPromptGuard {
    /// When set, every user message must contain a match of one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 1024)))]
    pub allow: Vec<String>,
    /// A user message containing a match of any of these is refused
    /// (checked first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 1024)))]
    pub deny: Vec<String>,
    /// Check only the last user message rather than every one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub last_message_only: bool,
    /// Status of refused requests (default 400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 400, max = 499))]
    pub rejected_code: Option<u16>,
    /// The reason given to refused clients (default `the prompt is not
    /// allowed on this route`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub rejected_message: Option<String>,
}
