//! An AI route as the gateway runs it, built once per route table from
//! the route's `aiProxy` and prompt plugins: each instance's URL, TLS
//! trust and key (read from its Secret now, so that a rotated key is a
//! new table and the next request uses it), and the compiled prompt
//! plugins. Every setting that cannot work is an error naming its field,
//! and the route is not served.
//!
//! Keys live in [`ApiKey`], which never prints its value: not in `Debug`,
//! not in `/routes` (which shows the configuration, Secret names only),
//! and the header carrying it is marked sensitive.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::error::Failure;
use super::outgoing;
use super::prompt::{Decorator, Guard, Templates};
use super::request::check_model;
use super::select::{Choice, Health};
use super::wire::{self, Wire};
use crate::api::{AiFallbackCondition, AiProvider, AiProxy, Plugins};
use crate::http::client::fetch::Target;
use crate::plugins::auth::trust::{LazyTarget, Trust};
use crate::plugins::{BuildEnv, ConfigError, Owner};

const DEFAULT_CONNECT: Duration = Duration::from_secs(5);
const DEFAULT_FIRST_TOKEN: Duration = Duration::from_secs(30);
const DEFAULT_TOTAL: Duration = Duration::from_secs(300);
const DEFAULT_BODY: u64 = 1 << 20;
const DEFAULT_MAX_TOKENS: u32 = 4096;
const DEFAULT_FAILURES: u32 = 3;
const DEFAULT_EJECTION: Duration = Duration::from_secs(10);
const AZURE_API_VERSION: &str = "2024-10-21";
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// A provider key, ready to be sent.
pub struct ApiKey {
    name: HeaderName,
    value: HeaderValue,
    /// The key itself, to take it out of any provider message passed on.
    raw: Box<str>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey({}: <redacted>)", self.name)
    }
}

impl ApiKey {
    /// The key of a Secret value, in the header `provider` reads it from.
    fn new(provider: AiProvider, bytes: &[u8]) -> Result<ApiKey, &'static str> {
        let key = std::str::from_utf8(bytes)
            .map_err(|_| "the value is not text")?
            .trim();
        if key.is_empty() {
            return Err("the value is empty");
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the value holds characters a key cannot have");
        }
        let (name, text) = match provider {
            AiProvider::AzureOpenAI => ("api-key", key.to_owned()),
            AiProvider::Anthropic => ("x-api-key", key.to_owned()),
            AiProvider::Gemini => ("x-goog-api-key", key.to_owned()),
            _ => ("authorization", format!("Bearer {key}")),
        };
        let mut value = HeaderValue::try_from(text).map_err(|_| "not a valid header value")?;
        value.set_sensitive(true);
        Ok(ApiKey {
            name: HeaderName::from_static(name),
            value,
            raw: key.into(),
        })
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(self.name.clone(), self.value.clone());
    }

    /// `text` without the key in it.
    pub fn scrub(&self, text: &str) -> String {
        text.replace(&*self.raw, "[redacted]")
    }
}

/// One provider instance.
#[derive(Debug)]
pub struct Instance {
    pub name: Arc<str>,
    pub provider: AiProvider,
    pub wire: Wire,
    pub target: LazyTarget,
    /// The base URL's path, without a trailing `/`.
    pub base: String,
    /// The host called, for spans.
    pub host: Arc<str>,
    pub model: Option<Arc<str>>,
    pub key: Option<ApiKey>,
    pub api_version: String,
}

impl Instance {
    pub fn settings(&self, default_max_tokens: u32) -> outgoing::Settings<'_> {
        outgoing::Settings {
            base: &self.base,
            api_version: &self.api_version,
            default_max_tokens,
        }
    }
}

/// Time limits of provider calls.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_token: Duration,
    pub total: Duration,
}

/// A route's AI gateway.
#[derive(Debug)]
pub struct AiRoute {
    pub(super) route: Arc<str>,
    config: AiProxy,
    pub(super) instances: Box<[Instance]>,
    pub(super) choices: Box<[Choice]>,
    pub(super) allowed_models: Box<[String]>,
    /// `fallbackOn`, as [`Failure::bit`]s.
    pub(super) fallback: u8,
    pub(super) max_attempts: usize,
    pub(super) timeouts: Timeouts,
    pub(super) max_request_body: u64,
    pub(super) default_max_tokens: u32,
    pub(super) health: Arc<Health>,
    pub(super) templates: Option<Templates>,
    pub(super) guard: Option<Guard>,
    pub(super) decorator: Option<Decorator>,
}

impl AiRoute {
    /// The largest request body accepted.
    pub fn max_request_body(&self) -> u64 {
        self.max_request_body
    }

    /// The settings as configured (Secret names, never keys), for the
    /// `/routes` view.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
}

/// The AI gateway of a plugin block: `None` without `aiProxy`. The other
/// AI plugins need `aiProxy` on the same route.
pub fn build(
    set: &Plugins,
    owner: &Owner,
    env: &BuildEnv<'_>,
) -> Result<Option<Arc<AiRoute>>, Vec<ConfigError>> {
    let Some(c) = &set.ai_proxy else {
        let errors: Vec<ConfigError> = [
            (set.ai_rate_limit.is_some(), "aiRateLimit"),
            (set.ai_prompt_decorator.is_some(), "aiPromptDecorator"),
            (set.ai_prompt_template.is_some(), "aiPromptTemplate"),
            (set.ai_prompt_guard.is_some(), "aiPromptGuard"),
        ]
        .into_iter()
        .filter(|(set, _)| *set)
        .map(|(_, field)| {
            ConfigError::new(
                field,
                "applies to routes with aiProxy; add aiProxy to the same route",
            )
        })
        .collect();
        return if errors.is_empty() {
            Ok(None)
        } else {
            Err(errors)
        };
    };
    let mut errors = Vec::new();
    let mut instances = Vec::with_capacity(c.instances.len());
    if c.instances.is_empty() {
        errors.push(ConfigError::new(
            "aiProxy.instances",
            "at least one instance is required",
        ));
    }
    for (i, inst) in c.instances.iter().enumerate() {
        let field = format!("aiProxy.instances[{i}]");
        if c.instances[..i].iter().any(|o| o.name == inst.name) {
            errors.push(ConfigError::new(
                format!("{field}.name"),
                format!("duplicate instance name {:?}", inst.name),
            ));
            continue;
        }
        match instance(inst, &field, env) {
            Ok(x) => instances.push(x),
            Err(e) => errors.push(e),
        }
    }
    for (i, m) in c.allowed_models.iter().enumerate() {
        if let Err(e) = check_model(m) {
            errors.push(ConfigError::new(
                format!("aiProxy.allowedModels[{i}]"),
                e.to_string(),
            ));
        }
    }
    let t = c.timeouts.unwrap_or_default();
    let timeouts = Timeouts {
        connect: t.connect.map_or(DEFAULT_CONNECT, |d| d.0),
        first_token: t.first_token.map_or(DEFAULT_FIRST_TOKEN, |d| d.0),
        total: t.total.map_or(DEFAULT_TOTAL, |d| d.0),
    };
    for (name, d) in [
        ("connect", timeouts.connect),
        ("firstToken", timeouts.first_token),
        ("total", timeouts.total),
    ] {
        if d.is_zero() {
            errors.push(ConfigError::new(
                format!("aiProxy.timeouts.{name}"),
                "must be greater than zero",
            ));
        }
    }
    let max_request_body = c.max_request_body.map_or(DEFAULT_BODY, |b| b.0);
    if max_request_body == 0 {
        errors.push(ConfigError::new(
            "aiProxy.maxRequestBody",
            "must be greater than zero",
        ));
    }
    let health = c.health.unwrap_or_default();
    let ejection = health.ejection_time.map_or(DEFAULT_EJECTION, |d| d.0);
    if ejection.is_zero() {
        errors.push(ConfigError::new(
            "aiProxy.health.ejectionTime",
            "must be greater than zero",
        ));
    }
    let templates = set
        .ai_prompt_template
        .as_ref()
        .map(Templates::build)
        .transpose()
        .map_err(|e| errors.push(e))
        .ok()
        .flatten();
    let guard = set
        .ai_prompt_guard
        .as_ref()
        .map(Guard::build)
        .transpose()
        .map_err(|e| errors.push(e))
        .ok()
        .flatten();
    if !errors.is_empty() {
        return Err(errors);
    }
    let fallback = c
        .fallback_on
        .as_deref()
        .unwrap_or(&[
            AiFallbackCondition::RateLimited,
            AiFallbackCondition::ServerError,
            AiFallbackCondition::Timeout,
            AiFallbackCondition::ConnectFailure,
        ])
        .iter()
        .map(|f| match f {
            AiFallbackCondition::RateLimited => Failure::RateLimited.bit(),
            AiFallbackCondition::ServerError => Failure::ServerError.bit(),
            AiFallbackCondition::Timeout => Failure::Timeout.bit(),
            AiFallbackCondition::ConnectFailure => Failure::ConnectFailure.bit(),
        })
        .fold(0, |a, b| a | b);
    let n = instances.len();
    let failures = health.failures.unwrap_or(DEFAULT_FAILURES);
    let health = crate::plugins::shared_state(owner, crate::plugins::fingerprint(c), || {
        Health::new(n, failures, ejection)
    });
    Ok(Some(Arc::new(AiRoute {
        route: owner.0.clone(),
        choices: c
            .instances
            .iter()
            .map(|i| Choice {
                priority: i.priority,
                weight: i.weight.max(1),
            })
            .collect(),
        instances: instances.into_boxed_slice(),
        allowed_models: c.allowed_models.clone().into_boxed_slice(),
        fallback,
        max_attempts: c.max_attempts.map_or(n, |m| m as usize).clamp(1, n.max(1)),
        timeouts,
        max_request_body,
        default_max_tokens: c.default_max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        health,
        templates,
        guard,
        decorator: set.ai_prompt_decorator.as_ref().map(Decorator::build),
        config: c.clone(),
    })))
}

fn instance(
    c: &crate::api::AiInstance,
    field: &str,
    env: &BuildEnv<'_>,
) -> Result<Instance, ConfigError> {
    let endpoint = match (&c.endpoint, wire::default_endpoint(c.provider)) {
        (Some(e), _) => e.as_str(),
        (None, Some(d)) => d,
        (None, None) => {
            return Err(ConfigError::new(
                format!("{field}.endpoint"),
                format!("provider {:?} needs an endpoint", c.provider),
            ));
        }
    };
    let target = Target::parse(endpoint)
        .map_err(|e| ConfigError::new(format!("{field}.endpoint"), e.to_string()))?;
    if target.path_and_query().query().is_some() {
        return Err(ConfigError::new(
            format!("{field}.endpoint"),
            "the base URL must not have a query",
        ));
    }
    let base = target
        .path_and_query()
        .path()
        .trim_end_matches('/')
        .to_owned();
    let host: Arc<str> = target.host().into();
    let (trust, _) = Trust::from_ref(
        c.ca_secret_ref.as_ref(),
        env,
        &format!("{field}.caSecretRef"),
    )?;
    let key = match &c.api_key_secret_ref {
        Some(r) => {
            let name = r.key.as_deref().unwrap_or("api-key");
            let f = format!("{field}.apiKeySecretRef");
            let bytes = (env.secret)(&r.name, name).ok_or_else(|| {
                ConfigError::new(
                    &f,
                    format!(
                        "Secret {}/{} has no {name} value (or does not exist)",
                        env.namespace, r.name
                    ),
                )
            })?;
            Some(ApiKey::new(c.provider, &bytes).map_err(|why| {
                ConfigError::new(
                    &f,
                    format!("Secret {}/{} value {name}: {why}", env.namespace, r.name),
                )
            })?)
        }
        None if c.provider == AiProvider::OpenAICompatible => None,
        None => {
            return Err(ConfigError::new(
                format!("{field}.apiKeySecretRef"),
                format!("provider {:?} needs a key", c.provider),
            ));
        }
    };
    if let Some(m) = &c.model {
        check_model(m).map_err(|e| ConfigError::new(format!("{field}.model"), e.to_string()))?;
    }
    let api_version = c.api_version.clone().unwrap_or_else(|| {
        match c.provider {
            AiProvider::AzureOpenAI => AZURE_API_VERSION,
            AiProvider::Anthropic => ANTHROPIC_VERSION,
            _ => "",
        }
        .to_owned()
    });
    if HeaderValue::try_from(api_version.as_str()).is_err() {
        return Err(ConfigError::new(
            format!("{field}.apiVersion"),
            "not a valid header value",
        ));
    }
    Ok(Instance {
        name: c.name.as_str().into(),
        provider: c.provider,
        wire: Wire::of(c.provider),
        target: LazyTarget::new(target, trust, "aiProxy.instances[].caSecretRef"),
        base,
        host,
        model: c.model.as_deref().map(Into::into),
        key,
        api_version,
    })
}

#[cfg(test)]
mod tests;
